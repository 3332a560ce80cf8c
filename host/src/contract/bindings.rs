//! The one `bindgen!` of the host: Rust types and call glue for the `servicemobility:booking`
//! WIT package. Import policy lives here: host services are plain synchronous functions,
//! and exports are called asynchronously so that a guest's epoch deadline can yield to the
//! tokio scheduler. Synchronous is not the same as instant: `kv` reads and listings query
//! the store on the calling worker (with SQLite, a read-only connection whose pages are
//! usually cached; a cold page is a disk read that holds the worker until it returns). Why
//! inline: a cached read takes 2.6 µs, a blocking-pool round trip 20 µs (`docs/host-services.md`).
//! Logging and config never wait.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "booker-scheduler-authenticator",
    exports: { default: async },
});

pub use exports::servicemobility::booking::{appointments, authentication, followup};
pub use servicemobility::booking::types;
pub use servicemobility::booking::{config, kv, log};

/// The exported interfaces as the component model names them (`wit/booking.wit`'s package
/// and version), with the one function each: what the runtime looks up in a plugin.
pub mod exported {
    pub const BOOK: (&str, &str) = ("servicemobility:booking/followup@0.1.0", "book");
    pub const SEARCH: (&str, &str) = ("servicemobility:booking/appointments@0.1.0", "search");
    pub const AUTHENTICATE: (&str, &str) = (
        "servicemobility:booking/authentication@0.1.0",
        "authenticate",
    );
}
