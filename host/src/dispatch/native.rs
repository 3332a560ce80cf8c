//! Booking rules called natively, in the host's process: the baseline the sandbox is
//! measured against.
//!
//! A plugin's rules written with the SDK compile for the host as well as for Wasm. Served
//! natively, a request takes exactly the plugin path — the same route, token, body, JSON
//! decoding (the SDK's copy of the one codec), journal, key-value session, config values,
//! log capture and encoding — except the sandbox: no `Store`, no instance, no copy across
//! the component boundary, no limits. Only an embedding program registers native rules
//! ([`crate::App::with_native`]); operators deploy components. The load script and the
//! benchmarks use it to measure what isolation costs.

use crate::contract::RouteKind;
use crate::contract::types as host;
use crate::contract::{self, Problem};
use crate::error::{ApiError, ErrorKind};
use crate::plugin::LoadedPlugin;
pub use crate::plugin::native::NativeRules;
use crate::runtime::output::GuestOutput;
use crate::runtime::state::{HostCalls, Services};
use crate::storage::kv::{KvError, KvSession};
use followup_sdk as sdk;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

/// What a natively called plugin may use: the same services a component's imports reach.
struct NativeHost {
    config: Arc<HashMap<String, String>>,
    kv: Option<KvSession>,
    output: GuestOutput,
    calls: HostCalls,
}

fn kv_error(e: KvError) -> sdk::kv::KvError {
    match e {
        KvError::Denied(m) => sdk::kv::KvError::Denied(m),
        KvError::TooLarge(m) => sdk::kv::KvError::TooLarge(m),
        KvError::NotANumber(m) => sdk::kv::KvError::NotANumber(m),
        KvError::Unavailable(m) => sdk::kv::KvError::Unavailable(m),
    }
}

impl NativeHost {
    fn kv<R>(
        &mut self,
        op: impl FnOnce(&mut KvSession) -> Result<R, KvError>,
    ) -> Result<R, sdk::kv::KvError> {
        self.calls.kv += 1;
        let session = self.kv.as_mut().ok_or_else(|| {
            sdk::kv::KvError::Denied("the key-value store is not available to this call".into())
        })?;
        op(session).map_err(kv_error)
    }
}

impl sdk::native::Host for NativeHost {
    fn config(&mut self, key: &str) -> Option<String> {
        self.calls.config += 1;
        self.config.get(key).cloned()
    }
    fn log(&mut self, level: &'static str, message: &str) {
        self.calls.log += 1;
        self.output.log(level, message);
    }
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, sdk::kv::KvError> {
        self.kv(|s| s.get(key))
    }
    fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), sdk::kv::KvError> {
        self.kv(|s| s.set(key, value.to_vec()))
    }
    fn kv_delete(&mut self, key: &str) -> Result<bool, sdk::kv::KvError> {
        self.kv(|s| s.delete(key))
    }
    fn kv_list_keys(&mut self, prefix: &str, limit: u32) -> Result<Vec<String>, sdk::kv::KvError> {
        self.kv(|s| s.list(prefix, limit))
    }
    fn kv_increment(&mut self, key: &str, delta: i64) -> Result<i64, sdk::kv::KvError> {
        self.kv(|s| s.increment(key, delta))
    }
    fn kv_compare_and_swap(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, sdk::kv::KvError> {
        self.kv(|s| s.compare_and_swap(key, expected.map(<[u8]>::to_vec), new.map(<[u8]>::to_vec)))
    }
}

fn context(ctx: &host::RequestContext) -> sdk::RequestContext {
    sdk::RequestContext {
        work_order_id: ctx.work_order_id.clone(),
        route: ctx.route.clone(),
        request_id: ctx.request_id.clone(),
        idempotency_key: ctx.idempotency_key.clone(),
        claims: ctx.claims.as_ref().map(|c| sdk::TokenClaims {
            name: c.name.clone(),
            email: c.email.clone(),
            exp: c.exp,
            iat: c.iat,
            raw: c.raw.clone(),
        }),
    }
}

fn problems(found: Vec<sdk::json::Problem>) -> ApiError {
    ApiError::invalid(
        found
            .into_iter()
            .map(|p| Problem {
                name: p.name,
                reason: p.reason,
                path: p.path,
                value: p.value,
            })
            .collect(),
    )
}

fn booking_error(e: sdk::BookingError) -> host::BookingError {
    match e {
        sdk::BookingError::InvalidRequest(e) => {
            host::BookingError::InvalidRequest(host::InvalidRequestError {
                message: e.message,
                params: e
                    .params
                    .into_iter()
                    .map(|p| host::InvalidParam {
                        name: p.name,
                        reason: p.reason,
                        path: p.path,
                        value: p.value,
                    })
                    .collect(),
            })
        }
        sdk::BookingError::SlotUnavailable(m) => host::BookingError::SlotUnavailable(m),
        sdk::BookingError::Conflict(m) => host::BookingError::Conflict(m),
        sdk::BookingError::Unauthorized(m) => host::BookingError::Unauthorized(m),
        sdk::BookingError::UpstreamFailure(m) => host::BookingError::UpstreamFailure(m),
        sdk::BookingError::Internal(m) => host::BookingError::Internal(m),
    }
}

/// Answers a parsed request with `rules`: decode, call, encode — the plugin path of
/// [`crate::http::answer`] without the sandbox. The answer is checked the same way.
pub fn answer(
    rules: &NativeRules,
    plugin: &LoadedPlugin,
    kind: RouteKind,
    ctx: &host::RequestContext,
    json: &Value,
    services: Services,
) -> Result<(Result<Vec<u8>, contract::codec::WriteError>, Services), ApiError> {
    let unavailable = |what: &str| {
        ApiError::new(
            ErrorKind::PluginUnavailable,
            format!("plugin {} does not export {what}", plugin.ident),
        )
        .for_plugin(&plugin.ident)
    };
    let native = Rc::new(RefCell::new(NativeHost {
        config: plugin.config.clone(),
        kv: services.kv,
        output: GuestOutput::new(plugin.limits.max_log_bytes, plugin.limits.max_log_entries),
        calls: HostCalls::default(),
    }));
    let call_ctx = context(ctx);
    let limit = plugin.limits.max_response_bytes;
    let refused = |e: host::BookingError| {
        ApiError::from_booking(e)
            .within(limit)
            .for_plugin(&plugin.ident)
    };
    let encoded = match kind {
        RouteKind::BookJob => {
            let book = rules.book.ok_or_else(|| unavailable("book"))?;
            let job = sdk::json::decode::<sdk::BookJob>(json).map_err(problems)?;
            let answer = sdk::native::call(&native, || book(call_ctx, job));
            let response = answer.map_err(|e| refused(booking_error(e)))?;
            sdk::json::to_vec::<sdk::BookJobResponse>(&response, limit)
        }
        RouteKind::AppointmentSearch => {
            let search = rules.search.ok_or_else(|| unavailable("search"))?;
            let query = sdk::json::decode::<sdk::BookJob>(json).map_err(problems)?;
            let answer = sdk::native::call(&native, || search(call_ctx, query));
            let response = answer.map_err(|e| refused(booking_error(e)))?;
            sdk::json::to_vec::<sdk::AppointmentSearchResponse>(&response, limit)
        }
        RouteKind::Authentication => return Err(unavailable("authenticate")),
    };
    // The SDK let go of its handle when the call returned.
    let native = Rc::into_inner(native)
        .map(RefCell::into_inner)
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::Internal,
                "the native rules' services were still in use after the call",
            )
        })?;
    crate::runtime::output::log_output(&plugin.ident, &ctx.request_id, &native.output);
    // The SDK's copy of the codec has its own error type.
    let encoded = encoded.map_err(|e| match e {
        sdk::json::WriteError::Invalid(e) => {
            contract::codec::WriteError::Invalid(contract::codec::EncodeError(e.0))
        }
        sdk::json::WriteError::TooLarge => contract::codec::WriteError::TooLarge,
    });
    Ok((
        encoded,
        Services {
            kv: native.kv,
            ..Default::default()
        },
    ))
}
