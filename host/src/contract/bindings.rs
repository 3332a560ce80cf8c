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

/// The version of the `servicemobility:booking` package in `wit/booking.wit`, as a literal
/// (for `concat!`): the one place the host spells it.
macro_rules! wit_version {
    () => {
        "0.1.0"
    };
}

/// The version of the `servicemobility:booking` WIT package this host implements.
pub const WIT_VERSION: &str = wit_version!();

/// The exported interfaces as the component model names them, with the one function each:
/// what the runtime looks up in a plugin.
pub mod exported {
    pub const BOOK: (&str, &str) = (
        concat!("servicemobility:booking/followup@", wit_version!()),
        "book",
    );
    pub const SEARCH: (&str, &str) = (
        concat!("servicemobility:booking/appointments@", wit_version!()),
        "search",
    );
    pub const AUTHENTICATE: (&str, &str) = (
        concat!("servicemobility:booking/authentication@", wit_version!()),
        "authenticate",
    );
}
