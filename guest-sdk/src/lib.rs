//! Write ServiceMobility booking rules as WebAssembly components for the followup host.
//!
//! A plugin is a `cdylib` crate that implements [`BookingPlugin`] (and, if it answers
//! appointment searches, [`SearchPlugin`]; if it checks logons, [`AuthPlugin`]) and names
//! itself with [`export_plugin!`]:
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
//! - [`log`] and [`config`]: the host services every plugin may call;
//! - [`kv`]: the key-value store, when the operator grants it;
//! - [`http`]: outbound HTTP to the origins the operator allows;
//! - [`password`] (feature `password`): credential checks against Argon2id hashes.
//!
//! The SDK is also the component's memory allocator (feature `heap`, on by default): blocks
//! of up to 4 KiB come from a fixed arena in the memory every instance starts with, so a
//! fresh instance per request never grows its memory for them; larger ones come from the
//! standard allocator. A plugin with its own `#[global_allocator]` depends on the SDK with
//! `default-features = false`.
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

pub mod http;
#[cfg(feature = "idempotency")]
pub mod idempotency;
#[cfg(feature = "password")]
pub mod password;
pub mod time;
pub mod validate;

mod errors;
#[cfg(feature = "heap")]
mod heap;

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

/// Logon checks: the Authentication interface. The host reads the caller's
/// `{"username","password"}`, throttles repeated failures, and signs the token (HS256,
/// with `exp` and `iat`) from the [`Identity`] this returns; [`AuthError::InvalidLogon`]
/// answers 401 Invalid Logon, whatever its message says (which goes to the log only).
pub trait AuthPlugin {
    /// Checks `credentials`: who they belong to, or why not.
    fn authenticate(ctx: RequestContext, credentials: Credentials) -> Result<Identity, AuthError>;
}

/// Logging into the host's log; each line is tagged with plugin, version and request id.
/// Built natively (unit tests), lines go to stderr.
pub mod log {
    #[cfg(target_arch = "wasm32")]
    use crate::__bindings::servicemobility::booking::log::{Level, log};

    #[cfg(not(target_arch = "wasm32"))]
    #[derive(Debug)]
    enum Level {
        Trace,
        Debug,
        Info,
        Warn,
        Error,
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn log(level: Level, message: &str) {
        let name = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        if crate::native::with(|host| host.log(name, message)).is_none() {
            eprintln!("[{level:?}] {message}");
        }
    }

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

    /// Logs a booking's outcome: `booked ORDER` at info, or the refusal at warn.
    pub fn outcome(answer: &Result<crate::BookJobResponse, crate::BookingError>) {
        match answer {
            Ok(r) => info(&format!("booked {}", r.order_num)),
            Err(e) => warn(&format!("refused: {e:?}")),
        }
    }
}

/// Values the operator configured for this plugin (`[plugins.NAME.config]` and
/// `[plugins.NAME.secrets]` in the host config). Built natively (unit tests), values come
/// from [`set`] on the current thread.
pub mod config {
    /// The value of `key`, or `None` when it is not configured.
    pub fn get(key: &str) -> Option<String> {
        #[cfg(target_arch = "wasm32")]
        return ALL.with(|all| {
            // One host call for every value, on first use: the values do not change while
            // an instance lives, and a call across the sandbox costs far more than a lookup.
            all.get_or_init(|| {
                crate::__bindings::servicemobility::booking::config::get_all()
                    .into_iter()
                    .collect()
            })
            .get(key)
            .cloned()
        });
        #[cfg(not(target_arch = "wasm32"))]
        return crate::native::with(|host| host.config(key))
            .unwrap_or_else(|| VALUES.with(|v| v.borrow().get(key).cloned()));
    }

    /// The value of `key` parsed as `T`, or `default` when absent or unparsable.
    pub fn get_or<T: std::str::FromStr>(key: &str, default: T) -> T {
        get(key)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(default)
    }

    #[cfg(target_arch = "wasm32")]
    thread_local! {
        static ALL: std::cell::OnceCell<std::collections::HashMap<String, String>> =
            const { std::cell::OnceCell::new() };
    }

    #[cfg(not(target_arch = "wasm32"))]
    thread_local! {
        static VALUES: std::cell::RefCell<std::collections::HashMap<String, String>> =
            std::cell::RefCell::new(std::collections::HashMap::new());
    }

    /// Natively only: sets a value as the operator would (for unit tests).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn set(key: &str, value: &str) {
        VALUES.with(|v| v.borrow_mut().insert(key.to_string(), value.to_string()));
    }
}

/// The key-value store, namespaced to the plugin; the operator grants it with `kv = true`
/// under `[plugins.NAME]` (a plugin that uses it without the grant is refused at load).
///
/// A booking's writes take effect together with the record of its answer, only if the
/// booking succeeds and nothing it read changed meanwhile (else the host runs it again), so
/// [`increment`] and [`compare_and_swap`] are race-free and a retried booking never writes
/// twice. During an appointment search the store is read-only.
///
/// Built natively, the same functions use the services of a [`native::Host`] when one is
/// installed (a host calling the rules directly), else an in-memory store of the current
/// thread, emptied by [`reset`] (unit tests).
pub mod kv {
    pub use crate::__bindings::servicemobility::booking::kv::KvError;

    #[cfg(target_arch = "wasm32")]
    use crate::__bindings::servicemobility::booking::kv as host;

    /// The value at `key`, if any.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        host::get(key)
    }

    /// The value at `key` as UTF-8 text, if any (lossy).
    pub fn get_string(key: &str) -> Result<Option<String>, KvError> {
        Ok(get(key)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Sets `key` to `value`.
    pub fn set(key: &str, value: &[u8]) -> Result<(), KvError> {
        host::set(key, value)
    }

    /// Deletes `key`; whether it existed.
    pub fn delete(key: &str) -> Result<bool, KvError> {
        host::delete(key)
    }

    /// The keys starting with `prefix`, in byte order, at most `limit` (and 1,000).
    pub fn list_keys(prefix: &str, limit: u32) -> Result<Vec<String>, KvError> {
        host::list_keys(prefix, limit)
    }

    /// Adds `delta` to the decimal integer at `key` (absent counts as 0); the new value.
    pub fn increment(key: &str, delta: i64) -> Result<i64, KvError> {
        host::increment(key, delta)
    }

    /// Sets `key` to `new` (deletes it when `None`) if its value is `expected` (`None`:
    /// absent); whether it did.
    pub fn compare_and_swap(
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, KvError> {
        host::compare_and_swap(key, expected, new)
    }

    /// Empties the native in-memory store of the current thread.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn reset() {
        host::STORE.with(|s| s.borrow_mut().clear());
    }

    /// The native stand-in: the host's semantics on a map of the current thread.
    #[cfg(not(target_arch = "wasm32"))]
    mod host {
        use super::KvError;
        use std::cell::RefCell;
        use std::collections::BTreeMap;

        thread_local! {
            pub(super) static STORE: RefCell<BTreeMap<String, Vec<u8>>> = const { RefCell::new(BTreeMap::new()) };
        }

        pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
            if let Some(answer) = crate::native::with(|h| h.kv_get(key)) {
                return answer;
            }
            Ok(STORE.with(|s| s.borrow().get(key).cloned()))
        }

        pub fn set(key: &str, value: &[u8]) -> Result<(), KvError> {
            if let Some(answer) = crate::native::with(|h| h.kv_set(key, value)) {
                return answer;
            }
            STORE.with(|s| s.borrow_mut().insert(key.to_string(), value.to_vec()));
            Ok(())
        }

        pub fn delete(key: &str) -> Result<bool, KvError> {
            if let Some(answer) = crate::native::with(|h| h.kv_delete(key)) {
                return answer;
            }
            Ok(STORE.with(|s| s.borrow_mut().remove(key).is_some()))
        }

        pub fn list_keys(prefix: &str, limit: u32) -> Result<Vec<String>, KvError> {
            if let Some(answer) = crate::native::with(|h| h.kv_list_keys(prefix, limit)) {
                return answer;
            }
            Ok(STORE.with(|s| {
                s.borrow()
                    .range(prefix.to_string()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .take(limit.min(1000) as usize)
                    .map(|(k, _)| k.clone())
                    .collect()
            }))
        }

        pub fn increment(key: &str, delta: i64) -> Result<i64, KvError> {
            if let Some(answer) = crate::native::with(|h| h.kv_increment(key, delta)) {
                return answer;
            }
            let current = match get(key)? {
                None => 0,
                Some(v) => std::str::from_utf8(&v)
                    .ok()
                    .and_then(|t| t.trim().parse::<i64>().ok())
                    .ok_or_else(|| KvError::NotANumber(format!("{key:?} is not a number")))?,
            };
            let next = current
                .checked_add(delta)
                .ok_or_else(|| KvError::NotANumber(format!("{key:?} overflows")))?;
            set(key, next.to_string().as_bytes())?;
            Ok(next)
        }

        pub fn compare_and_swap(
            key: &str,
            expected: Option<&[u8]>,
            new: Option<&[u8]>,
        ) -> Result<bool, KvError> {
            if let Some(answer) = crate::native::with(|h| h.kv_compare_and_swap(key, expected, new))
            {
                return answer;
            }
            if get(key)?.as_deref() != expected {
                return Ok(false);
            }
            match new {
                Some(v) => set(key, v)?,
                None => {
                    delete(key)?;
                }
            }
            Ok(true)
        }
    }
}

/// Calling a plugin's rules natively, in the host's process: the host installs a [`Host`]
/// for the duration of a call, and the SDK's `log`, `config` and `kv` functions use it
/// instead of the component's imports. This is how the host measures its native baseline
/// (the same rules, the same services, no sandbox); plugin authors never need it.
///
/// [`Host`]: native::Host
#[cfg(not(target_arch = "wasm32"))]
#[doc(hidden)]
pub mod native {
    use crate::kv::KvError;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// The services a host gives rules it calls natively: the same as a component's imports.
    pub trait Host {
        /// `config::get`.
        fn config(&mut self, key: &str) -> Option<String>;
        /// A log line at `level` (`trace`, `debug`, `info`, `warn` or `error`).
        fn log(&mut self, level: &'static str, message: &str);
        fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
        fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), KvError>;
        fn kv_delete(&mut self, key: &str) -> Result<bool, KvError>;
        fn kv_list_keys(&mut self, prefix: &str, limit: u32) -> Result<Vec<String>, KvError>;
        fn kv_increment(&mut self, key: &str, delta: i64) -> Result<i64, KvError>;
        fn kv_compare_and_swap(
            &mut self,
            key: &str,
            expected: Option<&[u8]>,
            new: Option<&[u8]>,
        ) -> Result<bool, KvError>;
    }

    /// The services installed on this thread; shared with the caller of [`call`], which
    /// reads what the call did once it returns.
    type Shared = Rc<RefCell<dyn Host>>;

    thread_local! {
        static CURRENT: RefCell<Option<Shared>> = const { RefCell::new(None) };
    }

    /// Runs `f` (a call of the rules) with `host` as the services of the current thread.
    /// Whatever the call did to `host` is there when it returns; the services the thread
    /// had before are back in place, on return and on unwind alike.
    pub fn call<H: Host + 'static, R>(host: &Rc<RefCell<H>>, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<Shared>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let previous = self.0.take();
                CURRENT.with(|c| *c.borrow_mut() = previous);
            }
        }
        let ours: Shared = host.clone();
        let _restore = Restore(CURRENT.with(|c| c.borrow_mut().replace(ours)));
        f()
    }

    /// Applies `f` to the installed host, if any. A host whose own services call back into
    /// the SDK gets the stand-ins there, not itself again.
    pub(crate) fn with<R>(f: impl FnOnce(&mut dyn Host) -> R) -> Option<R> {
        let host = CURRENT.with(|c| c.borrow().clone())?;
        let mut host = host.try_borrow_mut().ok()?;
        Some(f(&mut *host))
    }
}

/// Exports a plugin type as the component's booking and/or search interface.
///
/// - `export_plugin!(T: book)`: `T: BookingPlugin`, serves book-job routes;
/// - `export_plugin!(T: search)`: `T: SearchPlugin`, serves appointment-search routes;
/// - `export_plugin!(T: book, search)`: both;
/// - `export_plugin!(T: authenticate)`: `T: AuthPlugin`, serves authentication routes;
/// - `export_plugin!(T: book, authenticate)` and `export_plugin!(T: book, search,
///   authenticate)`: those together.
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
    ($plugin:ident : authenticate) => {
        $crate::__export_plugin!("authenticator", $plugin, [authenticate]);
    };
    ($plugin:ident : book, authenticate) => {
        $crate::__export_plugin!("booker-authenticator", $plugin, [book authenticate]);
    };
    ($plugin:ident : book, search, authenticate) => {
        $crate::__export_plugin!(
            "booker-scheduler-authenticator",
            $plugin,
            [book search authenticate]
        );
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
    (@impl authenticate $plugin:ident) => {
        impl exports::servicemobility::booking::authentication::Guest for Adapter {
            fn authenticate(
                ctx: $crate::RequestContext,
                credentials: $crate::Credentials,
            ) -> ::core::result::Result<$crate::Identity, $crate::AuthError> {
                <$plugin as $crate::AuthPlugin>::authenticate(ctx, credentials)
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
