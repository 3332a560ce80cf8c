//! Running plugins: the shared runtime (engine, linker, instance slots) and one call of a
//! plugin export in a limited `Store`.
//!
//! By default every call is instantiated from the plugin's `InstancePre` into a new
//! `Store` and dropped afterwards: a booking never sees another's state, and a trap costs
//! only the request that caused it. A plugin may opt into warm reuse
//! (`reuse_instances = N`): an instance then serves up to N calls of one route, and is
//! dropped at once after any failure (see [`WarmPool`]).
//!
//! # Layout
//! - [`engine`]: the engine and the epoch ticker; [`sandbox`]: limits and the pool;
//! - [`deadline`]: deadlines and the runaway throttle, [`load`]: what it sees the host
//!   serving; [`cache`]: compiled components;
//! - [`state`]: the per-call state; [`imports`], [`outbound`], [`output`]: host services;
//! - [`failure`]: why a call produced no answer; [`stats`]: what a call used;
//! - [`warm`]: warm instances.

pub mod cache;
pub mod deadline;
pub mod engine;
pub mod failure;
pub mod imports;
pub mod load;
pub mod outbound;
pub mod output;
pub mod prepared;
pub mod sandbox;
pub mod state;
pub mod stats;
pub mod warm;

use crate::config::RuntimeConfig;
use crate::contract::{PluginIdent, bindings};
use bindings::authentication::{AuthError, Credentials, Identity};
use bindings::types::{
    AppointmentSearch, AppointmentSearchResponse, BookJob, BookJobResponse, BookingError,
    RequestContext,
};
pub use failure::{FailureKind, PluginFailure};
use failure::{classify, failure};
use output::GuestOutput;
pub use prepared::{Export, Prepared};
use sandbox::Limiter;
use state::PluginState;
pub use state::Services;
pub use stats::CallStats;
use stats::Observer;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tracing::Instrument;
use warm::Warm;
pub use warm::WarmPool;
use wasmtime::component::{
    Component, ComponentNamedList, HasSelf, Instance, Lift, Linker, Lower, ResourceTable,
};
use wasmtime::{Engine, Store};
use wasmtime_wasi::WasiCtx;

/// Shared by every request: the engine, the linker holding the host services, and the
/// instance slots.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<PluginState>,
    /// Compiled components, in memory and on disk.
    cache: cache::CompileCache,
    slots: Semaphore,
    queue_timeout: Duration,
    /// The settings the runtime was built with.
    config: RuntimeConfig,
    /// Whether the engine meters fuel.
    fuel: bool,
    /// Deadlines and the runaway throttle shared by every call.
    throttle: deadline::Throttle,
    /// Told about every call (`followup plugin run` reports from it).
    observer: std::sync::OnceLock<Observer>,
}

impl PluginRuntime {
    /// Builds the engine and linker and starts the epoch ticker.
    pub fn new(rt: &RuntimeConfig) -> anyhow::Result<Arc<Self>> {
        let engine = engine::build(rt)?;
        let tick = Duration::from_millis(rt.epoch_tick_ms.max(1));
        engine::start_ticker(&engine, tick)?;
        let mut linker = Linker::new(&engine);
        // WASI with an empty context: no files, env, args or sockets. Guests built by
        // standard toolchains import it for stdio, clocks and randomness.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // Outbound HTTP is linked for every plugin; the loader refuses a component that
        // imports it without a grant, and each request is checked against the grant.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        bindings::BookerSchedulerAuthenticator::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        Ok(Arc::new(PluginRuntime {
            engine,
            linker,
            cache: cache::CompileCache::new(None),
            slots: Semaphore::new(rt.max_instances.max(1) as usize),
            queue_timeout: Duration::from_millis(rt.queue_timeout_ms),
            fuel: rt.fuel,
            config: *rt,
            throttle: deadline::Throttle::new(rt, tick),
            observer: std::sync::OnceLock::new(),
        }))
    }

    /// Like [`PluginRuntime::new`], with precompiled artefacts kept in `dir` (created when
    /// missing).
    pub fn with_cache(rt: &RuntimeConfig, dir: std::path::PathBuf) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create the cache {}: {e}", dir.display()))?;
        let mut runtime = Arc::into_inner(PluginRuntime::new(rt)?)
            .ok_or_else(|| anyhow::anyhow!("a new runtime has one owner"))?;
        runtime.cache = cache::CompileCache::new(Some(dir));
        Ok(Arc::new(runtime))
    }

    /// Components compiled since start, and components loaded from the disk cache.
    pub fn compile_stats(&self) -> (u64, u64) {
        self.cache.stats()
    }

    /// Appends the compile counters in the Prometheus text format to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        self.cache.render_metrics(out);
    }

    /// Compiles `bytes` (known by `hash`), or returns the component compiled earlier, in
    /// this process or (with a cache directory) by an earlier run.
    pub fn compile(&self, hash: &str, bytes: &[u8]) -> wasmtime::Result<Component> {
        self.cache.compile(&self.engine, hash, bytes)
    }

    /// Has `observer` told about every plugin call from now on (once per runtime).
    pub fn observe(&self, observer: impl Fn(&CallStats) + Send + Sync + 'static) -> bool {
        self.observer.set(Box::new(observer)).is_ok()
    }

    /// The settings the runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Counts a request as served until the guard drops (see [`deadline::Throttle::arrive`]).
    pub fn arrive(&self) -> load::Arrival<'_> {
        self.throttle.arrive()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn linker(&self) -> &Linker<PluginState> {
        &self.linker
    }

    /// Calls the plugin's `book` export.
    pub async fn book(
        &self,
        plugin: &Prepared,
        ctx: &RequestContext,
        job: &BookJob,
        services: Services,
    ) -> Result<(Result<BookJobResponse, BookingError>, Services), PluginFailure> {
        self.call(
            plugin,
            plugin.book.as_ref(),
            "book",
            ctx,
            services,
            (ctx, job),
        )
        .await
    }

    /// Calls the plugin's `search` export.
    pub async fn search(
        &self,
        plugin: &Prepared,
        ctx: &RequestContext,
        query: &AppointmentSearch,
        services: Services,
    ) -> Result<(Result<AppointmentSearchResponse, BookingError>, Services), PluginFailure> {
        let export = plugin.search.as_ref();
        self.call(plugin, export, "search", ctx, services, (ctx, query))
            .await
    }

    /// Calls the plugin's `authenticate` export.
    pub async fn authenticate(
        &self,
        plugin: &Prepared,
        ctx: &RequestContext,
        credentials: &Credentials,
        services: Services,
    ) -> Result<(Result<Identity, AuthError>, Services), PluginFailure> {
        let export = plugin.login.as_ref();
        self.call(
            plugin,
            export,
            "authenticate",
            ctx,
            services,
            (ctx, credentials),
        )
        .await
    }

    /// Calls `export` (the plugin's `function`) with `params`, in [`Self::run`].
    async fn call<P, R: 'static>(
        &self,
        plugin: &Prepared,
        export: Option<&Export>,
        function: &str,
        ctx: &RequestContext,
        services: Services,
        params: P,
    ) -> Result<(R, Services), PluginFailure>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        (R,): ComponentNamedList + Lift + Send + Sync,
    {
        let Some(export) = export else {
            return Err(failure(
                plugin,
                FailureKind::Unavailable,
                format!("does not export {function}"),
            ));
        };
        self.run(plugin, ctx, services, async |store, instance| {
            let func = export.typed::<_, P, (R,)>(store, instance)?;
            Ok(func.call_async(&mut *store, params).await?.0)
        })
        .await
    }

    /// Runs `call` against an instance of `plugin` (fresh, or warm from the route's pool
    /// when the plugin reuses instances), within the plugin's deadline, and turns a failure
    /// into a [`PluginFailure`].
    ///
    /// Strategy:
    /// - wait (bounded) for an instance slot, so that overload queues instead of failing;
    /// - take a warm instance and re-arm its `Store` for this call, or build a new `Store`
    ///   (empty WASI context with captured stdio, memory/table limiter, epoch deadline)
    ///   and instantiate inside the deadline;
    /// - await the call, abandoning it shortly after the deadline in any case;
    /// - log what the guest wrote, classify any failure; keep the instance for the route
    ///   only if the call succeeded, hit no limit and has uses left, else drop it.
    async fn run<R>(
        &self,
        plugin: &Prepared,
        ctx: &RequestContext,
        services: Services,
        call: impl AsyncFnOnce(&mut Store<PluginState>, &Instance) -> wasmtime::Result<R>,
    ) -> Result<(R, Services), PluginFailure> {
        let request_id = ctx.request_id.as_str();
        // The plugin's own bound first, so that one busy tenant queues on its own slots and
        // never takes the whole pool.
        let queued = Instant::now();
        let busy = |what: &str| {
            failure(
                plugin,
                FailureKind::Busy,
                format!(
                    "no {what} became free within {} ms",
                    self.queue_timeout.as_millis()
                ),
            )
        };
        let _plugin_permit = tokio::time::timeout(self.queue_timeout, plugin.slots.acquire())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| busy("slot of this plugin"))?;
        let left = self.queue_timeout.saturating_sub(queued.elapsed());
        let _permit = tokio::time::timeout(left, self.slots.acquire())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| busy("instance slot"))?;
        let limits = plugin.limits;
        let deadline = Instant::now() + limits.timeout();
        let reuse = plugin.reuse_instances > 1;
        let (mut store, warm, served) = match reuse.then(|| plugin.warm.take(&ctx.route)) {
            Some(Some(warm)) => {
                let mut store = warm.store;
                self.rearm(&mut store, plugin, request_id, deadline);
                (store, Some(warm.instance), warm.served)
            }
            _ => {
                // A replayed call reads the recorded config and clock.
                let (config, clock) = match &services.replay {
                    Some(replayed) => (replayed.config.clone(), Some(replayed.clock())),
                    None => (plugin.config.clone(), None),
                };
                let store = self.store_with_clock(
                    plugin.ident.clone(),
                    config,
                    &limits,
                    &plugin.conduct,
                    request_id,
                    deadline,
                    clock,
                );
                (store, None, 0)
            }
        };
        let span = otel_span!(
            "followup.plugin_call",
            followup.plugin = plugin.ident.name.as_str(),
            followup.plugin_version = plugin.ident.version.as_str(),
            followup.warm = warm.is_some(),
            followup.fuel_used = tracing::field::Empty,
            followup.peak_memory_bytes = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let tape = match (&services.replay, &services.recorder) {
            (Some(replayed), _) => outbound::Tape::Replay(replayed.clone()),
            (None, Some(recorder)) => outbound::Tape::Record(recorder.clone()),
            (None, None) => outbound::Tape::Off,
        };
        if let Some(recorder) = &services.recorder {
            recorder.reached();
        }
        store.data_mut().services = services;
        store.data_mut().span = span.clone();
        store.data_mut().outbound = outbound::OutboundPolicy::new(
            plugin.http.clone(),
            plugin.ident.clone(),
            Arc::from(request_id),
            span.clone(),
        )
        .with_tape(tape);

        let started = Instant::now();
        let outcome = tokio::time::timeout_at(
            (deadline + deadline::DEADLINE_GRACE).into(),
            async {
                let instance = match warm {
                    Some(instance) => instance,
                    None => plugin.pre.instantiate_async(&mut store).await?,
                };
                let answer = call(&mut store, &instance).await?;
                Ok((answer, instance))
            }
            .instrument(span.clone()),
        )
        .await;
        let fuel_used = store
            .data()
            .fuel_granted
            .and_then(|granted| Some(granted - store.get_fuel().ok()?));
        // Counting the live resources walks the table: only for an observer.
        let host_resources = match self.observer.get() {
            Some(_) => store.data_mut().table.iter_mut().count(),
            None => 0,
        };
        let state = store.data();
        let (log_lines, log_bytes, dropped) = flush_output(state);
        tracing::debug!(
            plugin = %plugin.ident,
            request_id,
            micros = started.elapsed().as_micros() as u64,
            fuel_used,
            "plugin call finished"
        );
        let result = match outcome {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(err)) => Err(classify(&plugin.ident, &limits, state, &err)),
            Err(_elapsed) => Err(failure(
                plugin,
                FailureKind::Timeout,
                format!("timed out after {} ms", limits.timeout_ms),
            )),
        };
        if !span.is_none() {
            if let Some(fuel) = fuel_used {
                span.record("followup.fuel_used", fuel);
            }
            span.record(
                "followup.peak_memory_bytes",
                store.data().limiter.peak_memory as u64,
            );
            if let Err(f) = &result {
                span.record("error.type", f.kind.code());
                span.record("otel.status_code", "ERROR");
            }
        }
        if let Some(recorder) = &store.data().services.recorder {
            recorder.finished(crate::tape::RunStats {
                wall_us: started.elapsed().as_micros() as u64,
                fuel: fuel_used,
                peak_memory_bytes: store.data().limiter.peak_memory as u64,
            });
        }
        let timed_out = matches!(&result, Err(f) if f.kind == FailureKind::Timeout);
        plugin.conduct.settle(store.data_mut(), timed_out);
        let state = store.data();
        if let Some(observer) = self.observer.get() {
            let mut host_calls = state.host_calls;
            host_calls.http = state.outbound.calls();
            observer(&CallStats {
                plugin: plugin.ident.clone(),
                request_id: request_id.to_string(),
                wall: started.elapsed(),
                fuel_used,
                peak_memory_bytes: state.limiter.peak_memory,
                log_lines,
                log_bytes,
                log_dropped_bytes: dropped.bytes,
                log_dropped_entries: dropped.entries,
                host_calls,
                host_resources,
                kv_read_bytes: state.services.kv.as_ref().map_or(0, |kv| kv.read_bytes()),
                kv_written_bytes: state
                    .services
                    .kv
                    .as_ref()
                    .map_or(0, |kv| kv.written_bytes()),
                http_body_buffer_bytes: state.outbound.body_buffer_bytes(),
                limits,
                failure: result.as_ref().err().map(|f| f.cause.clone()),
            });
        }
        let (answer, instance) = result?;
        let services = std::mem::take(&mut store.data_mut().services);
        // A memory or table limit the guest survived still retires the instance: its
        // state is whatever the refused allocation left behind.
        if reuse && served + 1 < plugin.reuse_instances && store.data().limiter.hit.is_none() {
            store.data_mut().outbound = outbound::OutboundPolicy::default();
            store.data_mut().span = tracing::Span::none();
            plugin.warm.put(
                &ctx.route,
                Warm {
                    store,
                    instance,
                    served: served + 1,
                },
                limits.max_concurrency as usize,
            );
        }
        Ok((answer, services))
    }

    /// A `Store` for one call, with everything the sandbox enforces: an empty WASI context
    /// with captured output, the memory/table limiter, the fuel budget, and the epoch
    /// callback that enforces `deadline` and throttles runaways.
    pub fn new_store(
        &self,
        ident: Arc<PluginIdent>,
        config: Arc<HashMap<String, String>>,
        limits: &crate::config::Limits,
        conduct: &Arc<deadline::Conduct>,
        request_id: &str,
        deadline: Instant,
    ) -> Store<PluginState> {
        self.store_with_clock(ident, config, limits, conduct, request_id, deadline, None)
    }

    /// [`PluginRuntime::new_store`] whose WASI wall clock is `clock` (a replayed call's,
    /// see [`crate::tape::world::RecordedClock`]) instead of the host's.
    #[allow(
        clippy::too_many_arguments,
        reason = "new_store's arguments and the clock; a struct would only rename them"
    )]
    fn store_with_clock(
        &self,
        ident: Arc<PluginIdent>,
        config: Arc<HashMap<String, String>>,
        limits: &crate::config::Limits,
        conduct: &Arc<deadline::Conduct>,
        request_id: &str,
        deadline: Instant,
        clock: Option<crate::tape::world::RecordedClock>,
    ) -> Store<PluginState> {
        let output = GuestOutput::new(limits.max_log_bytes, limits.max_log_entries);
        let mut wasi = WasiCtx::builder();
        wasi.stdout(output.stream(0))
            .stderr(output.stream(1))
            .allow_tcp(false)
            .allow_udp(false);
        if let Some(clock) = clock {
            wasi.wall_clock(clock);
        }
        let wasi = wasi.build();
        // Every host resource the guest creates through WASI or `wasi:http` lives in this
        // table: its size, and each header map's, bound what the call makes the host hold.
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.max_host_resources);
        let mut http = wasmtime_wasi_http::WasiHttpCtx::new();
        http.set_field_size_limit(sandbox::HTTP_FIELDS_BYTES);
        let state = PluginState {
            wasi,
            table,
            limiter: Limiter::new(limits),
            ident,
            request_id: Arc::from(request_id),
            config,
            output,
            fuel_granted: None,
            services: Services::default(),
            http,
            outbound: outbound::OutboundPolicy::default(),
            host_calls: state::HostCalls::default(),
            runaway: None,
            past_grace: false,
            span: tracing::Span::none(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // What the host copies out of the guest in one go — its answer, or one host
        // call's arguments — is counted as it is lifted, and lifting stops at the budget.
        store.set_hostcall_fuel(limits.lift_budget());
        store.set_max_component_handles(sandbox::COMPONENT_HANDLES);
        self.throttle
            .arm(&mut store, limits, deadline, self.fuel, conduct);
        store
    }

    /// Prepares a warm instance's `Store` for another call: its request id, a new log
    /// budget, fuel and deadline. Its memory is what the previous call left.
    fn rearm(
        &self,
        store: &mut Store<PluginState>,
        plugin: &Prepared,
        request_id: &str,
        deadline: Instant,
    ) {
        let limits = &plugin.limits;
        let state = store.data_mut();
        state.request_id = Arc::from(request_id);
        state
            .output
            .renew(limits.max_log_bytes, limits.max_log_entries);
        state.host_calls = state::HostCalls::default();
        self.throttle
            .arm(store, limits, deadline, self.fuel, &plugin.conduct);
    }
}

/// Logs what the guest wrote, one log event per entry, tagged with plugin, version and
/// request id; how many lines and bytes, and what was dropped over the budget.
fn flush_output(state: &PluginState) -> (usize, usize, output::Dropped) {
    output::log_output(&state.ident, &state.request_id, &state.output)
}

#[cfg(test)]
mod tests {
    //! The engine's limits on inline WAT: no build step, the same `Store` setup as a
    //! plugin call.
    use super::*;
    use crate::config::Limits;

    fn runtime(fuel: bool) -> Arc<PluginRuntime> {
        PluginRuntime::new(&RuntimeConfig {
            max_instances: 4,
            fuel,
            ..RuntimeConfig::default()
        })
        .unwrap()
    }

    /// Runs the module's exported `run` in a plugin store; the failure as classified.
    async fn run(rt: &PluginRuntime, wat: &str, limits: Limits) -> Result<(), PluginFailure> {
        let (result, _) = run_as(rt, wat, limits, &Arc::default()).await;
        result.expect("the call ended before it was abandoned")
    }

    /// Runs the module's exported `run` as a call of a plugin with `conduct`, abandoned
    /// [`deadline::DEADLINE_GRACE`] after its deadline as a plugin call is (then `None`);
    /// and the value of its exported global `n` afterwards (0 without one).
    async fn run_as(
        rt: &PluginRuntime,
        wat: &str,
        limits: Limits,
        conduct: &Arc<deadline::Conduct>,
    ) -> (Option<Result<(), PluginFailure>>, i64) {
        let ident = Arc::new(PluginIdent {
            name: "wat".into(),
            version: "sha256:0".into(),
        });
        let module = wasmtime::Module::new(rt.engine(), wat::parse_str(wat).unwrap()).unwrap();
        let deadline = Instant::now() + limits.timeout();
        let mut store = rt.new_store(
            ident.clone(),
            Arc::default(),
            &limits,
            conduct,
            "t",
            deadline,
        );
        // The request this call serves, as the HTTP handler counts it.
        let _own = rt.arrive();
        let linker = wasmtime::Linker::new(rt.engine());
        let mut instance = None;
        let call = async {
            let made = linker.instantiate_async(&mut store, &module).await?;
            instance = Some(made);
            let run = made.get_typed_func::<(), ()>(&mut store, "run")?;
            run.call_async(&mut store, ()).await
        };
        let abandon = (deadline + deadline::DEADLINE_GRACE).into();
        let result = tokio::time::timeout_at(abandon, call).await.ok();
        let n = instance
            .and_then(|i| i.get_global(&mut store, "n"))
            .and_then(|n| n.get(&mut store).i64())
            .unwrap_or(0);
        let result = result.map(|r| r.map_err(|e| classify(&ident, &limits, store.data(), &e)));
        (result, n)
    }

    fn limits(timeout_ms: u64) -> Limits {
        Limits {
            timeout_ms,
            ..Limits::default()
        }
    }

    #[tokio::test]
    async fn an_infinite_loop_is_interrupted_at_the_deadline() {
        let rt = runtime(false);
        let err = run(
            &rt,
            r#"(module (func (export "run") (loop (br 0))))"#,
            limits(50),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind, FailureKind::Timeout);
        assert_eq!(err.cause, "timed out after 50 ms");
    }

    #[tokio::test]
    async fn a_memory_bomb_is_refused_and_reported_as_the_memory_limit() {
        let rt = runtime(false);
        let wat = r#"(module (memory 1)
            (func (export "run")
              (loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
              unreachable))"#;
        let capped = Limits {
            max_memory_bytes: 4 << 20,
            ..limits(1000)
        };
        let err = run(&rt, wat, capped).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::MemoryLimit);
        assert!(err.cause.contains("limit 4194304"), "{}", err.cause);
    }

    #[tokio::test]
    async fn unbounded_recursion_overflows_the_stack() {
        let rt = runtime(false);
        let wat = r#"(module (func $f (export "run") (call $f)))"#;
        let err = run(&rt, wat, limits(1000)).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::StackOverflow);
    }

    #[tokio::test]
    async fn unreachable_is_a_trap() {
        let rt = runtime(false);
        let wat = r#"(module (func (export "run") unreachable))"#;
        let err = run(&rt, wat, limits(1000)).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::Trap);
        assert!(err.cause.contains("unreachable"), "{}", err.cause);
    }

    #[tokio::test]
    async fn fuel_stops_a_loop_before_the_deadline() {
        let rt = runtime(true);
        let budget = Limits {
            max_fuel: Some(10_000),
            ..limits(10_000)
        };
        let wat = r#"(module (func (export "run") (loop (br 0))))"#;
        let err = run(&rt, wat, budget).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::OutOfFuel);
        assert!(err.cause.contains("budget 10000"), "{}", err.cause);
    }

    #[tokio::test]
    async fn a_well_behaved_module_finishes() {
        let rt = runtime(true);
        let wat = r#"(module (func (export "run")))"#;
        assert!(run(&rt, wat, limits(1000)).await.is_ok());
    }

    /// Counts its iterations in `n`.
    const LOOP: &str = r#"(module
        (global $n (export "n") (mut i64) (i64.const 0))
        (func (export "run")
          (loop (global.set $n (i64.add (global.get $n) (i64.const 1))) (br 0))))"#;

    /// A runtime whose runaways pause 200 ms between slices (a 1 % share of a 2 ms tick):
    /// longer than the deadlines below plus their grace, so a call that reaches the slow
    /// lane is abandoned there, however slow the machine.
    fn slow_lane_runtime() -> Arc<PluginRuntime> {
        PluginRuntime::new(&RuntimeConfig {
            max_instances: 4,
            runaway_share_percent: 1,
            ..RuntimeConfig::default()
        })
        .unwrap()
    }

    /// A short call on a busy host is not a runaway: it computes about 2.5 ms (past one
    /// tick, within the 4 ms grace), and at every yield the worker is taken for 10 ms by
    /// other work. Counted in wall time, or in ticks seen, it would pass for a runaway and
    /// its plugin would get a strike; in CPU time it is well within its grace.
    #[tokio::test]
    async fn waiting_on_a_busy_worker_is_not_running_away() {
        let rt = runtime(false);
        let conduct: Arc<deadline::Conduct> = Arc::default();
        let bounded = |count: i64| {
            format!(
                r#"(module
                    (global $n (export "n") (mut i64) (i64.const 0))
                    (func (export "run")
                      (loop (global.set $n (i64.add (global.get $n) (i64.const 1)))
                            (br_if 0 (i64.lt_u (global.get $n) (i64.const {count}))))))"#
            )
        };
        // How many iterations of it this machine runs in a millisecond of CPU, alone (its
        // compilation counted too, so the estimate errs low).
        tokio::time::sleep(Duration::from_millis(30)).await;
        let cpu = cpu_time::ThreadTime::now();
        let (_, n) = run_as(&rt, &bounded(i64::MAX), limits(30), &Arc::default()).await;
        let per_ms = n as f64 / cpu.elapsed().as_secs_f64() / 1000.0;
        let count = (per_ms * 2.5) as i64;
        let bounded = bounded(count);
        // Other work that holds the (single) worker for 10 ms whenever the guest yields.
        let busy = tokio::spawn(async {
            loop {
                std::thread::sleep(Duration::from_millis(10));
                tokio::task::yield_now().await;
            }
        });
        // A run counts when the guest met a tick and waited behind the other work at least
        // twice; on a loaded machine (the suite's other tests on both cores) the epoch
        // thread may not tick within a short call for a while, so many runs of a few
        // milliseconds each are allowed to find one that did.
        let mut waited = None;
        for _ in 0..100 {
            let started = Instant::now();
            let (done, ran) = run_as(&rt, &bounded, limits(2000), &conduct).await;
            let took = started.elapsed();
            assert!(matches!(done, Some(Ok(()))), "{done:?}");
            assert_eq!(ran, count);
            assert_eq!(
                conduct.strikes(),
                0,
                "a {took:?} call of ~2.5 ms CPU was struck"
            );
            if took >= Duration::from_millis(20) {
                waited = Some(took);
                break;
            }
        }
        busy.abort();
        assert!(
            waited.is_some(),
            "no run yielded and waited behind the other work"
        );
    }

    #[tokio::test]
    async fn a_plugin_whose_calls_run_away_waits_its_turn_before_its_first_instruction() {
        let rt = slow_lane_runtime();
        let conduct = Arc::default();
        // Alone on the host, a loop runs at full speed past its grace: one strike.
        let (first, _) = run_as(&rt, LOOP, limits(50), &conduct).await;
        assert_eq!(first.unwrap().unwrap_err().kind, FailureKind::Timeout);
        assert_eq!(conduct.strikes(), 1);
        // Still nobody else to serve, and no answer for a while: even a plugin with strikes
        // runs.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let (_, ran_alone) = run_as(&rt, LOOP, limits(50), &conduct).await;
        assert!(ran_alone > 10_000, "{ran_alone} iterations");
        // While a request is being served, its next call waits on the slow lane before
        // running at all, and is abandoned there.
        let other = rt.arrive();
        let (abandoned, ran) = run_as(&rt, LOOP, limits(50), &conduct).await;
        assert!(abandoned.is_none());
        assert_eq!(ran, 0, "it ran before its turn");
        drop(other);
    }

    #[tokio::test]
    async fn strikes_go_with_calls_that_keep_to_their_grace() {
        let rt = runtime(false);
        let conduct = Arc::default();
        for _ in 0..2 {
            // Nothing else served for a while: each loop runs until its deadline.
            tokio::time::sleep(Duration::from_millis(30)).await;
            let (looped, _) = run_as(&rt, LOOP, limits(100), &conduct).await;
            assert!(looped.unwrap().is_err());
        }
        assert_eq!(conduct.strikes(), 2);
        conduct.record(true);
        assert_eq!(conduct.strikes(), 1);
        // A call that ran away, or timed out waiting, takes nothing away.
        conduct.record(false);
        assert_eq!(conduct.strikes(), 1);
        conduct.record(true);
        conduct.record(true);
        assert_eq!(conduct.strikes(), 0);
    }

    #[tokio::test]
    async fn a_request_in_flight_is_counted_until_it_is_answered() {
        let rt = slow_lane_runtime();
        let conduct: Arc<deadline::Conduct> = Arc::default();
        // A loop with a request in flight: its grace at full speed, then the slow lane,
        // where it is abandoned.
        let other = rt.arrive();
        let (abandoned, _) = run_as(&rt, LOOP, limits(100), &conduct).await;
        assert!(
            abandoned.is_none(),
            "a runaway beside a request was not slowed"
        );
        drop(other);
        // Answered, a while ago: the same loop now runs to its deadline and traps there.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let (ended, _) = run_as(&rt, LOOP, limits(100), &conduct).await;
        assert_eq!(ended.unwrap().unwrap_err().kind, FailureKind::Timeout);
    }
}
