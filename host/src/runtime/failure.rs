//! Why a plugin call produced no answer: the failure kinds (each a stable error `type` once
//! the HTTP layer maps it) and the sorting of a failed call's error into one of them.

use super::prepared::Prepared;
use super::sandbox;
use super::state::PluginState;
use crate::contract::PluginIdent;
use std::sync::Arc;
use wasmtime::Trap;

/// What went wrong running a plugin; each maps to a stable error `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The wall-clock deadline passed (`plugin-timeout`).
    Timeout,
    /// The plugin asked for more memory or table than allowed (`plugin-memory-limit`).
    MemoryLimit,
    /// The guest's stack overflowed (`plugin-stack-overflow`).
    StackOverflow,
    /// The instruction budget ran out (`plugin-out-of-fuel`).
    OutOfFuel,
    /// Any other trap: a panic, `unreachable`, a bad memory access (`plugin-trap`).
    Trap,
    /// The answer is larger than `max_response_bytes` (`plugin-response-too-large`).
    ResponseTooLarge,
    /// The plugin answered something that is not a valid response (`plugin-bad-result`).
    BadResult,
    /// No instance slot became free in time (`plugin-busy`).
    Busy,
    /// The plugin could not be instantiated or does not serve this kind of route
    /// (`plugin-unavailable`).
    Unavailable,
}

impl FailureKind {
    /// The error `type` the failure is answered with (the same as `ErrorKind::code` of
    /// the error it becomes; a test in `error.rs` holds the two together).
    pub fn code(self) -> &'static str {
        match self {
            FailureKind::Timeout => "plugin-timeout",
            FailureKind::MemoryLimit => "plugin-memory-limit",
            FailureKind::StackOverflow => "plugin-stack-overflow",
            FailureKind::OutOfFuel => "plugin-out-of-fuel",
            FailureKind::Trap => "plugin-trap",
            FailureKind::ResponseTooLarge => "plugin-response-too-large",
            FailureKind::BadResult => "plugin-bad-result",
            FailureKind::Busy => "plugin-busy",
            FailureKind::Unavailable => "plugin-unavailable",
        }
    }
}

/// A plugin call that did not produce an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFailure {
    pub kind: FailureKind,
    pub plugin: Arc<PluginIdent>,
    /// What happened, for the error body's `detail` and the log.
    pub cause: String,
}

impl std::fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "plugin {}: {}", self.plugin, self.cause)
    }
}

pub fn failure(plugin: &Prepared, kind: FailureKind, cause: impl Into<String>) -> PluginFailure {
    PluginFailure {
        kind,
        plugin: plugin.ident.clone(),
        cause: cause.into(),
    }
}

/// Sorts a failed call into a [`FailureKind`] and logs the guest's backtrace.
pub fn classify(
    ident: &Arc<PluginIdent>,
    limits: &crate::config::Limits,
    state: &PluginState,
    err: &wasmtime::Error,
) -> PluginFailure {
    // The chain and the guest's backtrace, bounded: a guest names its own functions, and a
    // stack overflow has thousands of frames.
    tracing::warn!(
        plugin = %ident,
        request_id = &*state.request_id,
        "plugin call failed: {}",
        crate::text::cut(&format!("{err:?}"), 8 << 10)
    );
    let trap = err.downcast_ref::<Trap>().copied();
    let full_table = err.chain().any(|e| {
        matches!(
            e.downcast_ref::<wasmtime::component::ResourceTableError>(),
            Some(wasmtime::component::ResourceTableError::Full)
        )
    });
    let (kind, cause) = match (&state.limiter.hit, trap) {
        (Some(hit), _) => (FailureKind::MemoryLimit, hit.clone()),
        (None, _) if full_table => (
            FailureKind::MemoryLimit,
            format!(
                "held more than its max_host_resources of {} host resources",
                limits.max_host_resources
            ),
        ),
        (None, _) if fields_too_large(err) => (
            FailureKind::MemoryLimit,
            format!(
                "built a wasi:http header map over {} bytes",
                sandbox::HTTP_FIELDS_BYTES
            ),
        ),
        (None, _) if lift_exhausted(err) => match err.downcast_ref::<wasmtime::WasmBacktrace>() {
            // Lifting the answer happens after the guest returned, with no guest frames.
            None => (
                FailureKind::ResponseTooLarge,
                format!(
                    "answered over its max_response_bytes of {}: more than {} bytes in the \
                     host's form of the answer, lifting stopped there",
                    limits.max_response_bytes,
                    limits.lift_budget()
                ),
            ),
            Some(_) => (
                FailureKind::MemoryLimit,
                format!(
                    "handed the host more than {} bytes in one host call",
                    limits.lift_budget()
                ),
            ),
        },
        (None, Some(Trap::Interrupt)) => (
            FailureKind::Timeout,
            format!("timed out after {} ms", limits.timeout_ms),
        ),
        (None, Some(Trap::StackOverflow)) => (
            FailureKind::StackOverflow,
            "overflowed its Wasm stack".to_string(),
        ),
        (None, Some(Trap::OutOfFuel)) => (
            FailureKind::OutOfFuel,
            format!(
                "ran out of fuel (budget {})",
                state.fuel_granted.unwrap_or_default()
            ),
        ),
        (None, Some(trap)) => (FailureKind::Trap, format!("trapped: {trap}")),
        (None, None) => (
            FailureKind::Trap,
            format!("failed: {}", crate::text::cut(&root_cause(err), 1024)),
        ),
    };
    PluginFailure {
        kind,
        plugin: ident.clone(),
        cause,
    }
}

/// Whether wasmtime stopped lifting because the store's hostcall fuel ran out (its error
/// type is private; its message is stable across 48.x).
fn lift_exhausted(err: &wasmtime::Error) -> bool {
    err.chain().any(|e| {
        e.to_string()
            .contains("fuel allocated for hostcalls has been exhausted")
    })
}

/// Whether `wasi:http` refused to grow a header map past its size limit (it traps).
fn fields_too_large(err: &wasmtime::Error) -> bool {
    err.chain()
        .any(|e| e.to_string().contains("total size of fields exceeds limit"))
}

fn root_cause(err: &wasmtime::Error) -> String {
    err.chain()
        .last()
        .map(ToString::to_string)
        .unwrap_or_else(|| err.to_string())
}
