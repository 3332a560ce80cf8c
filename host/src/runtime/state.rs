//! The per-`Store` state: everything one request's instance can reach. A new one is made
//! for every call and dropped with the instance, so nothing leaks between bookings.

use super::outbound::OutboundPolicy;
use super::output::GuestOutput;
use super::sandbox::Limiter;
use crate::contract::PluginIdent;
use crate::storage::kv::KvSession;
use std::collections::HashMap;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// The `T` of `Store<T>` for plugin calls.
pub struct PluginState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limiter: Limiter,
    /// Which plugin version and request this instance serves; tags every log line.
    pub ident: Arc<PluginIdent>,
    pub request_id: Arc<str>,
    /// The operator's `[plugins.NAME.config]` values.
    pub config: Arc<HashMap<String, String>>,
    /// What the guest wrote (stdout, stderr, log service), logged after the call.
    pub output: GuestOutput,
    /// The fuel the call started with, when fuel metering is on.
    pub fuel_granted: Option<u64>,
    /// The host services granted to this call.
    pub services: Services,
    /// `wasi:http` state and the checks on every outbound request.
    pub http: WasiHttpCtx,
    pub outbound: OutboundPolicy,
    /// Calls of the host services so far.
    pub host_calls: HostCalls,
    /// Present while this call counts as a runaway (see `deadline::Throttle`): from its
    /// start for a plugin with strikes, else once it has run past its grace.
    pub runaway: Option<super::load::Runaway>,
    /// Whether this call has run past its CPU grace (see `deadline::Conduct`).
    pub past_grace: bool,
    /// The call's `followup.plugin_call` span (none when traces are off): the parent of
    /// the host calls' spans, named explicitly because a host function may run where
    /// the current span is not the call's.
    pub span: tracing::Span,
}

/// How often a call used each host service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCalls {
    pub log: u32,
    pub config: u32,
    pub kv: u32,
    pub http: u32,
}

/// Host services a call may use beyond logging and config; each is granted per plugin.
#[derive(Debug, Default)]
pub struct Services {
    /// The plugin's key-value namespace, when granted.
    pub kv: Option<KvSession>,
    /// Records the call's host calls on its tape (a plugin that records, a replay).
    pub recorder: Option<crate::tape::Recorder>,
    /// Answers the call's outbound requests, config reads and clock from a tape (a
    /// replay): nothing leaves the host.
    pub replay: Option<Arc<crate::tape::world::Replayed>>,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}
