//! Write ServiceMobility booking rules as WebAssembly components for the followup host.
//!
//! A plugin is a `cdylib` crate that implements [`BookingPlugin`] (and, if it answers
//! appointment searches, [`SearchPlugin`]) and names itself with [`export_plugin!`]:
//!
//! ```
//! use followup_sdk::*;
//!
//! struct Rules;
//!
//! impl BookingPlugin for Rules {
//!     fn book(ctx: RequestContext, job: BookJob) -> Result<BookJobResponse, BookingError> {
//!         validate::profile(&job)?;
//!         Ok(BookJobResponse { order_num: format!("FU-{}", &ctx.idempotency_key[..8]), ordered_parts: vec![] })
//!     }
//! }
//!
//! followup_sdk::export_plugin!(Rules: book);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the `.wasm` in
//! `target/wasm32-wasip2/release/` is the component the host loads.
//!
//! # Layout
//! - [`types`]: the contract's records, generated from the WIT package (re-exported at the root);
//! - [`json`]: the same JSON mapping the host uses, for plugins that forward or store JSON;
//! - [`time`]: contract date-times as [`time::Timestamp`];
//! - [`validate`]: the recommended Book Job validation profile;
//! - [`log`] and [`config`]: the host services every plugin may call.
//!
//! The SDK stamps the WIT version it implements ([`WIT_VERSION`]) into every component, and
//! the host refuses a component built for an incompatible version before running it.

#[doc(hidden)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "host-services",
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// The JSON library the contract mapping uses, for plugins that build or parse JSON.
pub use serde_json;

/// The contract's records, generated from the WIT package.
pub mod types {
    pub use crate::__bindings::servicemobility::booking::types::*;
}

pub use types::*;

#[path = "codec.rs"]
pub mod json;

pub mod time;
pub mod validate;

mod errors;

include!(concat!(env!("OUT_DIR"), "/world.rs"));

/// Follow-up booking rules: the Followup WorkOrder interface.
pub trait BookingPlugin {
    /// Books the follow-up described by `job`, or says why not.
    fn book(ctx: RequestContext, job: BookJob) -> Result<BookJobResponse, BookingError>;
}

/// Open-slot search: the Appointment Search interface.
pub trait SearchPlugin {
    /// Answers the open slots for `query`.
    fn search(
        ctx: RequestContext,
        query: AppointmentSearch,
    ) -> Result<AppointmentSearchResponse, BookingError>;
}

/// Logging into the host's log; each line is tagged with plugin, version and request id.
pub mod log {
    use crate::__bindings::servicemobility::booking::log::{Level, log};

    pub fn trace(message: &str) {
        log(Level::Trace, message);
    }
    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }
    pub fn info(message: &str) {
        log(Level::Info, message);
    }
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }
    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

/// Values the operator configured for this plugin (`[plugins.NAME.config]` in the host
/// config).
pub mod config {
    /// The value of `key`, or `None` when it is not configured.
    pub fn get(key: &str) -> Option<String> {
        crate::__bindings::servicemobility::booking::config::get(key)
    }

    /// The value of `key` parsed as `T`, or `default` when absent or unparsable.
    pub fn get_or<T: std::str::FromStr>(key: &str, default: T) -> T {
        get(key)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(default)
    }
}

/// Exports a plugin type as the component's booking and/or search interface.
///
/// - `export_plugin!(T: book)`: `T: BookingPlugin`, serves book-job routes;
/// - `export_plugin!(T: search)`: `T: SearchPlugin`, serves appointment-search routes;
/// - `export_plugin!(T: book, search)`: both.
///
/// Use it once per crate, at the crate root.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ident : book) => {
        $crate::__export_plugin!("booker", $plugin, [book]);
    };
    ($plugin:ident : search) => {
        $crate::__export_plugin!("scheduler", $plugin, [search]);
    };
    ($plugin:ident : book, search) => {
        $crate::__export_plugin!("booker-scheduler", $plugin, [book search]);
    };
    ($plugin:ident : search, book) => {
        $crate::__export_plugin!("booker-scheduler", $plugin, [book search]);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_plugin {
    ($world:tt, $plugin:ident, [$($cap:ident)+]) => {
        // Only a Wasm build is a component. Built natively (unit tests, benchmarks against
        // native code), the plugin is plain Rust with no exports.
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        #[allow(unsafe_code, reason = "the component's exports and version stamp")]
        mod __followup_plugin {
            use super::*;

            $crate::__followup_world!($world);

            // The host reads this custom section to refuse components built against an
            // incompatible WIT version before instantiating them.
            #[used]
            #[unsafe(link_section = "servicemobility:booking-api-version")]
            static API_VERSION: [u8; $crate::__WIT_VERSION_BYTES.len()] =
                $crate::__WIT_VERSION_BYTES;

            pub struct Adapter;

            $($crate::__export_plugin!(@impl $cap $plugin);)+

            export!(Adapter);
        }
    };
    (@impl book $plugin:ident) => {
        impl exports::servicemobility::booking::followup::Guest for Adapter {
            fn book(
                ctx: $crate::RequestContext,
                job: $crate::BookJob,
            ) -> ::core::result::Result<$crate::BookJobResponse, $crate::BookingError> {
                <$plugin as $crate::BookingPlugin>::book(ctx, job)
            }
        }
    };
    (@impl search $plugin:ident) => {
        impl exports::servicemobility::booking::appointments::Guest for Adapter {
            fn search(
                ctx: $crate::RequestContext,
                query: $crate::AppointmentSearch,
            ) -> ::core::result::Result<$crate::AppointmentSearchResponse, $crate::BookingError> {
                <$plugin as $crate::SearchPlugin>::search(ctx, query)
            }
        }
    };
}
