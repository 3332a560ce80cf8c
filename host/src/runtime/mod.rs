//! Running plugins: the shared runtime (engine, linker, instance slots) and one call of a
//! plugin export in a limited `Store`.
//!
//! By default every call is instantiated from the plugin's `InstancePre` into a new
//! `Store` and dropped afterwards: a booking never sees another's state, and a trap costs
//! only the request that caused it. A plugin may opt into warm reuse
//! (`reuse_instances = N`): an instance then serves up to N calls of one route, and is
//! dropped at once after any failure (see [`WarmPool`]).

pub mod bindings;
pub mod engine;
pub mod imports;
pub mod native;
pub mod outbound;
pub mod output;
pub mod sandbox;
pub mod state;

use crate::plugin::{LoadedPlugin, PluginIdent};
use bindings::types::{
    AppointmentSearch, AppointmentSearchResponse, BookJob, BookJobResponse, BookingError,
    RequestContext,
};
use output::GuestOutput;
use sandbox::{Limiter, RuntimeConfig};
use state::PluginState;
pub use state::Services;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, HasSelf, Instance, Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtx;

/// What went wrong running a plugin; each maps to a stable error `type`.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Shared by every request: the engine, the linker holding the host services, and the
/// instance slots.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<PluginState>,
    /// Components compiled so far, by content hash: loading the same bytes twice (a
    /// rollback, a redeploy, a second host in tests) skips compilation.
    compiled: Mutex<HashMap<String, Component>>,
    /// Precompiled artefacts on disk, so that a restart skips compilation too.
    cache_dir: Option<std::path::PathBuf>,
    /// Components compiled, and components loaded from the disk cache instead.
    compiles: AtomicU64,
    cache_hits: AtomicU64,
    memory_hits: AtomicU64,
    slots: Semaphore,
    queue_timeout: Duration,
    /// The settings the runtime was built with.
    config: RuntimeConfig,
    /// Whether the engine meters fuel.
    fuel: bool,
    /// Runaway calls take turns on this one permit (see [`RuntimeConfig::runaway_after_ms`]).
    slow_lane: Arc<Semaphore>,
    /// Calls started so far: a runaway is throttled only if another call started after it.
    starts: Arc<AtomicU64>,
    /// Epoch ticks of guest execution after which a call is a runaway.
    runaway_ticks: u64,
    /// How long a runaway pauses, holding the slow lane, between slices of one tick.
    runaway_pause: Duration,
    /// Told about every call (`followup plugin run` reports from it).
    observer: std::sync::OnceLock<Observer>,
}

/// Told about every plugin call.
type Observer = Box<dyn Fn(&CallStats) + Send + Sync>;

/// What one plugin call used, against its limits.
#[derive(Debug, Clone)]
pub struct CallStats {
    pub plugin: Arc<PluginIdent>,
    pub request_id: String,
    pub wall: Duration,
    /// With fuel metering on.
    pub fuel_used: Option<u64>,
    pub peak_memory_bytes: usize,
    pub log_lines: usize,
    /// Bytes kept of what the guest logged or printed, and bytes and entries dropped over
    /// the budget.
    pub log_bytes: usize,
    pub log_dropped_bytes: u64,
    pub log_dropped_entries: u64,
    pub host_calls: state::HostCalls,
    /// Host resources the instance still held when the call ended.
    pub host_resources: usize,
    /// Bytes of key-value reads and listings the call's session held, and bytes written.
    pub kv_read_bytes: usize,
    pub kv_written_bytes: usize,
    /// Bytes of outgoing request bodies the call had the host buffer at most.
    pub http_body_buffer_bytes: usize,
    pub limits: sandbox::Limits,
    /// The failure's detail, when the call failed.
    pub failure: Option<String>,
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
        bindings::BookerScheduler::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        Ok(Arc::new(PluginRuntime {
            engine,
            linker,
            compiled: Mutex::default(),
            cache_dir: None,
            compiles: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            memory_hits: AtomicU64::new(0),
            slots: Semaphore::new(rt.max_instances.max(1) as usize),
            queue_timeout: Duration::from_millis(rt.queue_timeout_ms),
            fuel: rt.fuel,
            config: *rt,
            slow_lane: Arc::new(Semaphore::new(1)),
            starts: Arc::default(),
            runaway_ticks: (rt.runaway_after_ms / tick.as_millis().max(1) as u64).max(1),
            runaway_pause: tick * (100 / u32::from(rt.runaway_share_percent.clamp(1, 100))),
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
        runtime.cache_dir = Some(dir);
        Ok(Arc::new(runtime))
    }

    /// Components compiled since start, and components loaded from the disk cache.
    pub fn compile_stats(&self) -> (u64, u64) {
        (
            self.compiles.load(Ordering::Relaxed),
            self.cache_hits.load(Ordering::Relaxed),
        )
    }

    /// Appends the compile counters in the Prometheus text format to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP followup_component_loads_total Components made ready, by source: compiled, \
             the disk cache, or already in memory.\n\
             # TYPE followup_component_loads_total counter"
        );
        for (source, counter) in [
            ("compiled", &self.compiles),
            ("disk-cache", &self.cache_hits),
            ("memory", &self.memory_hits),
        ] {
            let _ = writeln!(
                out,
                "followup_component_loads_total{{source=\"{source}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
    }

    /// Has `observer` told about every plugin call from now on (once per runtime).
    pub fn observe(&self, observer: impl Fn(&CallStats) + Send + Sync + 'static) -> bool {
        self.observer.set(Box::new(observer)).is_ok()
    }

    /// The settings the runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn linker(&self) -> &Linker<PluginState> {
        &self.linker
    }

    /// Compiles `bytes` (known by `hash`), or returns the component compiled earlier, in
    /// this process or (with a cache directory) by an earlier run.
    pub fn compile(&self, hash: &str, bytes: &[u8]) -> wasmtime::Result<Component> {
        if let Some(c) = lock(&self.compiled).get(hash) {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(c.clone());
        }
        let cached = self
            .cache_dir
            .as_deref()
            .and_then(|dir| self.load_cached(dir, hash));
        let component = match cached {
            Some(component) => {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                component
            }
            None => {
                // Compile outside the lock: it takes ~100 ms per 250 KB on 2 cores.
                let artefact = self.engine.precompile_component(bytes)?;
                self.compiles.fetch_add(1, Ordering::Relaxed);
                if let Some(dir) = &self.cache_dir {
                    self.store_cached(dir, hash, &artefact);
                }
                deserialize(&self.engine, &artefact)?
            }
        };
        let mut cache = lock(&self.compiled);
        if cache.len() >= MAX_CACHED_COMPONENTS {
            cache.clear();
        }
        cache.insert(hash.to_string(), component.clone());
        Ok(component)
    }

    /// Where the artefact of component `hash` for this engine lives: the engine's
    /// compatibility hash is part of the name, so a wasmtime or config change misses.
    fn cache_path(&self, dir: &std::path::Path, hash: &str) -> std::path::PathBuf {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        dir.join(format!("{hash}-{:016x}.cwasm", h.finish()))
    }

    /// A cached artefact, if present and intact; a damaged one is removed (and then
    /// recompiled), never loaded.
    ///
    /// The artefact is checked against the CRC-32 written beside it, then mapped from the
    /// file rather than read and copied: with 100 plugins, start-up is mostly this. The
    /// checksum guards against damage (a disk error, a stray write); artefacts are only
    /// ever replaced whole, by rename, so the file mapped is the file checked. It is no
    /// defence against someone who can write the cache, who could rewrite any digest too.
    fn load_cached(&self, dir: &std::path::Path, hash: &str) -> Option<Component> {
        let path = self.cache_path(dir, hash);
        let file = std::fs::File::open(&path).ok()?;
        let recorded = std::fs::read_to_string(path.with_extension("crc32")).ok();
        let intact = recorded.as_deref().map(str::trim) == checksum(file).ok().as_deref();
        let component = if intact {
            deserialize_file(&self.engine, &path).ok()
        } else {
            None
        };
        if component.is_none() {
            tracing::warn!(path = %path.display(), "cached artefact is damaged or stale; recompiling");
            let _ = std::fs::remove_file(&path);
        }
        component
    }

    /// Writes an artefact and its checksum, each whole or not at all. Failing to cache
    /// only costs the next start a compile.
    fn store_cached(&self, dir: &std::path::Path, hash: &str, artefact: &[u8]) {
        let path = self.cache_path(dir, hash);
        let write = crate::files::write_atomically;
        let sum = format!("{:08x}", crc32fast::hash(artefact));
        let written = write(&path, artefact)
            .and_then(|()| write(&path.with_extension("crc32"), sum.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), "cannot cache the compiled plugin: {e}");
        }
    }

    /// Calls the plugin's `book` export.
    pub async fn book(
        &self,
        plugin: &LoadedPlugin,
        ctx: &RequestContext,
        job: &BookJob,
        services: Services,
    ) -> Result<(Result<BookJobResponse, BookingError>, Services), PluginFailure> {
        let Some(indices) = &plugin.book else {
            return Err(failure(
                plugin,
                FailureKind::Unavailable,
                "does not export book",
            ));
        };
        self.run(plugin, ctx, services, async |store, loaded| {
            // A warm instance keeps its typed export: typechecking the Book Job record
            // again on every call is measurable.
            let guest = match loaded.book.take() {
                Some(guest) => guest,
                None => indices.load(&mut *store, &loaded.instance)?,
            };
            let answer = guest.call_book(&mut *store, ctx, job).await;
            loaded.book = Some(guest);
            answer
        })
        .await
    }

    /// Calls the plugin's `search` export.
    pub async fn search(
        &self,
        plugin: &LoadedPlugin,
        ctx: &RequestContext,
        query: &AppointmentSearch,
        services: Services,
    ) -> Result<(Result<AppointmentSearchResponse, BookingError>, Services), PluginFailure> {
        let Some(indices) = &plugin.search else {
            return Err(failure(
                plugin,
                FailureKind::Unavailable,
                "does not export search",
            ));
        };
        self.run(plugin, ctx, services, async |store, loaded| {
            let guest = match loaded.search.take() {
                Some(guest) => guest,
                None => indices.load(&mut *store, &loaded.instance)?,
            };
            let answer = guest.call_search(&mut *store, ctx, query).await;
            loaded.search = Some(guest);
            answer
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
        plugin: &LoadedPlugin,
        ctx: &RequestContext,
        services: Services,
        call: impl AsyncFnOnce(&mut Store<PluginState>, &mut Loaded) -> wasmtime::Result<R>,
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
                self.rearm(&mut store, &limits, request_id, deadline);
                (store, Some(warm.loaded), warm.served)
            }
            _ => {
                let store = self.new_store(
                    plugin.ident.clone(),
                    plugin.config.clone(),
                    &limits,
                    request_id,
                    deadline,
                );
                (store, None, 0)
            }
        };
        store.data_mut().services = services;
        store.data_mut().outbound = outbound::OutboundPolicy::new(
            plugin.http.clone(),
            plugin.ident.clone(),
            Arc::from(request_id),
        );

        let started = Instant::now();
        let outcome = tokio::time::timeout_at((deadline + DEADLINE_GRACE).into(), async {
            let mut loaded = match warm {
                Some(loaded) => loaded,
                None => Loaded {
                    instance: plugin.pre.instantiate_async(&mut store).await?,
                    book: None,
                    search: None,
                },
            };
            let answer = call(&mut store, &mut loaded).await?;
            Ok((answer, loaded))
        })
        .await;
        let fuel_used = store
            .data()
            .fuel_granted
            .and_then(|granted| Some(granted - store.get_fuel().ok()?));
        let host_resources = store.data_mut().table.iter_mut().count();
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
        let (answer, loaded) = result?;
        let services = std::mem::take(&mut store.data_mut().services);
        // A memory or table limit the guest survived still retires the instance: its
        // state is whatever the refused allocation left behind.
        if reuse && served + 1 < plugin.reuse_instances && store.data().limiter.hit.is_none() {
            store.data_mut().outbound = outbound::OutboundPolicy::default();
            plugin.warm.put(
                &ctx.route,
                Warm {
                    store,
                    loaded,
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
        limits: &sandbox::Limits,
        request_id: &str,
        deadline: Instant,
    ) -> Store<PluginState> {
        let output = GuestOutput::new(limits.max_log_bytes, limits.max_log_entries);
        let wasi = WasiCtx::builder()
            .stdout(output.stream(0))
            .stderr(output.stream(1))
            .allow_tcp(false)
            .allow_udp(false)
            .build();
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
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // What the host copies out of the guest in one go — its answer, or one host
        // call's arguments — is counted as it is lifted, and lifting stops at the budget.
        store.set_hostcall_fuel(limits.lift_budget());
        store.set_max_component_handles(sandbox::COMPONENT_HANDLES);
        self.arm(&mut store, limits, deadline);
        store
    }

    /// Prepares a warm instance's `Store` for another call: its request id, a new log
    /// budget, fuel and deadline. Its memory is what the previous call left.
    fn rearm(
        &self,
        store: &mut Store<PluginState>,
        limits: &sandbox::Limits,
        request_id: &str,
        deadline: Instant,
    ) {
        let state = store.data_mut();
        state.request_id = Arc::from(request_id);
        state
            .output
            .renew(limits.max_log_bytes, limits.max_log_entries);
        state.host_calls = state::HostCalls::default();
        self.arm(store, limits, deadline);
    }

    /// Grants the call its fuel and sets the epoch callback that enforces `deadline` and
    /// throttles runaways.
    fn arm(&self, store: &mut Store<PluginState>, limits: &sandbox::Limits, deadline: Instant) {
        if self.fuel {
            let granted = limits.max_fuel.unwrap_or(u64::MAX);
            // Only fails when the engine does not meter fuel, checked just above.
            if store.set_fuel(granted).is_ok() {
                store.data_mut().fuel_granted = Some(granted);
            }
        }
        // Called at every epoch tick the guest spends executing Wasm:
        // - past the deadline the guest traps with `Trap::Interrupt`;
        // - before it, the guest yields, so it never holds a tokio worker for more than one
        //   tick;
        // - after `runaway_ticks` ticks it is a runaway: once another call has started
        //   since it began, each further tick first waits its turn on the slow lane and
        //   pauses there, so that all runaways together use at most
        //   `runaway_share_percent` of one core. A runaway nobody waits behind runs at full
        //   speed.
        let (slow_lane, runaway_ticks, pause, starts) = (
            self.slow_lane.clone(),
            self.runaway_ticks,
            self.runaway_pause,
            self.starts.clone(),
        );
        let me = starts.fetch_add(1, Ordering::Relaxed) + 1;
        let mut ticks = 0u64;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                return Err(Trap::Interrupt.into());
            }
            ticks += 1;
            if ticks <= runaway_ticks || starts.load(Ordering::Relaxed) == me {
                // tokio's own yield lets the worker poll its I/O and timers before resuming
                // the guest; wasmtime's plain `Yield` reschedules at once, so a worker busy
                // with yielding guests would look at the network only every 61 polls.
                return Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ));
            }
            let lane = slow_lane.clone();
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(async move {
                    if let Ok(_turn) = lane.acquire_owned().await {
                        tokio::time::sleep(pause).await;
                    }
                }),
            ))
        });
    }
}

/// An instance with the typed exports looked up so far.
struct Loaded {
    instance: Instance,
    book: Option<bindings::followup::Guest>,
    search: Option<bindings::appointments::Guest>,
}

/// An instance kept for reuse with its `Store`.
struct Warm {
    store: Store<PluginState>,
    loaded: Loaded,
    /// Calls it has served.
    served: u32,
}

/// Idle warm instances of one plugin version, per route: an instance only ever serves the
/// route it was created for (tenants never share one), and goes with its version when the
/// plugin is swapped.
#[derive(Default)]
pub struct WarmPool {
    idle: Mutex<HashMap<String, Vec<Warm>>>,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl WarmPool {
    fn take(&self, route: &str) -> Option<Warm> {
        lock(&self.idle).get_mut(route)?.pop()
    }

    /// Keeps `warm` for `route`, unless `max` instances of the route already wait (each
    /// idle instance holds a slot of the pooling allocator).
    fn put(&self, route: &str, warm: Warm, max: usize) {
        let mut idle = lock(&self.idle);
        let list = match idle.get_mut(route) {
            Some(list) => list,
            None => idle.entry(route.to_string()).or_default(),
        };
        if list.len() < max {
            list.push(warm);
        }
    }

    /// Idle instances, all routes together.
    pub fn idle_count(&self) -> usize {
        lock(&self.idle).values().map(Vec::len).sum()
    }
}

/// Loads an artefact this host's engine produced.
#[allow(
    unsafe_code,
    reason = "wasmtime cannot check compiled code: only artefacts this engine wrote get here"
)]
fn deserialize(engine: &Engine, artefact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `artefact` comes from `Engine::precompile_component` of this very engine.
    unsafe { Component::deserialize(engine, artefact) }
}

/// Maps an artefact this host's engine wrote to the cache.
#[allow(
    unsafe_code,
    reason = "wasmtime cannot check compiled code: only artefacts this engine wrote, checked against their checksum, get here"
)]
fn deserialize_file(engine: &Engine, path: &std::path::Path) -> wasmtime::Result<Component> {
    // SAFETY: the file was written (whole, by rename) from `Engine::precompile_component`
    // of an engine with the same compatibility hash (part of its name), and its CRC-32
    // matched just now. Cache files are never modified in place while mapped.
    unsafe { Component::deserialize_file(engine, path) }
}

/// The CRC-32 of a file in hex, read in pieces (never held whole).
fn checksum(mut file: std::fs::File) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut hasher = crc32fast::Hasher::new();
    let mut piece = vec![0u8; 64 << 10];
    loop {
        match file.read(&mut piece)? {
            0 => return Ok(format!("{:08x}", hasher.finalize())),
            n => hasher.update(&piece[..n]),
        }
    }
}

/// Bound on compiled components kept in memory; past it the cache starts over.
const MAX_CACHED_COMPONENTS: usize = 64;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The cache holds no invariant a panicking holder could break.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A guest stuck outside Wasm code (none of today's host services can block) is still
/// bounded: the whole call is abandoned this long after its deadline.
const DEADLINE_GRACE: Duration = Duration::from_millis(20);

fn failure(plugin: &LoadedPlugin, kind: FailureKind, cause: impl Into<String>) -> PluginFailure {
    PluginFailure {
        kind,
        plugin: plugin.ident.clone(),
        cause: cause.into(),
    }
}

/// Sorts a failed call into a [`FailureKind`] and logs the guest's backtrace.
fn classify(
    ident: &Arc<PluginIdent>,
    limits: &sandbox::Limits,
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

/// Logs what the guest wrote, one log event per entry, tagged with plugin, version and
/// request id; how many lines and bytes, and what was dropped over the budget.
fn flush_output(state: &PluginState) -> (usize, usize, output::Dropped) {
    log_output(&state.ident, &state.request_id, &state.output)
}

fn log_output(
    plugin: &PluginIdent,
    request_id: &str,
    output: &GuestOutput,
) -> (usize, usize, output::Dropped) {
    let (lines, dropped) = output.take();
    let counted = (
        lines.len(),
        lines.iter().map(|l| l.text.len()).sum(),
        dropped,
    );
    for line in lines.into_iter().filter(|l| !l.text.trim().is_empty()) {
        let text = line.text;
        match line.source {
            "error" => tracing::error!(plugin = %plugin, request_id, "{text}"),
            "warn" => tracing::warn!(plugin = %plugin, request_id, "{text}"),
            "debug" => tracing::debug!(plugin = %plugin, request_id, "{text}"),
            "trace" => tracing::trace!(plugin = %plugin, request_id, "{text}"),
            source => tracing::info!(plugin = %plugin, request_id, source, "{text}"),
        }
    }
    if dropped != output::Dropped::default() {
        tracing::warn!(
            plugin = %plugin,
            request_id,
            dropped_bytes = dropped.bytes,
            dropped_entries = dropped.entries,
            "plugin output over its max_log_bytes or max_log_entries was dropped"
        );
    }
    counted
}

#[cfg(test)]
mod tests {
    //! The engine's limits on inline WAT: no build step, the same `Store` setup as a
    //! plugin call.
    use super::*;
    use sandbox::Limits;

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
        let ident = Arc::new(PluginIdent {
            name: "wat".into(),
            version: "sha256:0".into(),
        });
        let module = wasmtime::Module::new(rt.engine(), wat::parse_str(wat).unwrap()).unwrap();
        let deadline = Instant::now() + limits.timeout();
        let mut store = rt.new_store(ident.clone(), Arc::default(), &limits, "t", deadline);
        let linker = wasmtime::Linker::new(rt.engine());
        let result = async {
            let instance = linker.instantiate_async(&mut store, &module).await?;
            let run = instance.get_typed_func::<(), ()>(&mut store, "run")?;
            run.call_async(&mut store, ()).await
        }
        .await;
        result.map_err(|e| classify(&ident, &limits, store.data(), &e))
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
}
