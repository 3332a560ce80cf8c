//! Running plugins: the shared runtime (engine, linker, instance slots) and one call of a
//! plugin export in a fresh, limited `Store`.
//!
//! Every call is instantiated from the plugin's `InstancePre` into a new `Store` and
//! dropped afterwards: a booking never sees another's state, and a trap costs only the
//! request that caused it.

pub mod bindings;
pub mod engine;
pub mod imports;
pub mod sandbox;
pub mod state;

use crate::plugin::{LoadedPlugin, PluginIdent};
use bindings::types::{
    AppointmentSearch, AppointmentSearchResponse, BookJob, BookJobResponse, BookingError,
    RequestContext,
};
use sandbox::{Limiter, RuntimeConfig};
use state::PluginState;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

/// What went wrong running a plugin; each maps to a stable error `type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// The wall-clock deadline passed (`plugin-timeout`).
    Timeout,
    /// The plugin asked for more memory or table than allowed (`plugin-memory-limit`).
    MemoryLimit,
    /// The guest's stack overflowed (`plugin-stack-overflow`).
    StackOverflow,
    /// Any other trap: a panic, `unreachable`, a bad memory access (`plugin-trap`).
    Trap,
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
    pub plugin: PluginIdent,
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
    /// restart of a route, a rollback, a second host in tests) skips compilation.
    compiled: Mutex<HashMap<String, Component>>,
    slots: Semaphore,
    queue_timeout: Duration,
}

impl PluginRuntime {
    /// Builds the engine and linker and starts the epoch ticker.
    pub fn new(rt: &RuntimeConfig) -> anyhow::Result<Arc<Self>> {
        let engine = engine::build(rt)?;
        engine::start_ticker(&engine, Duration::from_millis(rt.epoch_tick_ms.max(1)))?;
        let mut linker = Linker::new(&engine);
        // WASI with an empty context: no files, env, args or sockets. Guests built by
        // standard toolchains import it for stdio, clocks and randomness.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        bindings::BookerScheduler::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        Ok(Arc::new(PluginRuntime {
            engine,
            linker,
            compiled: Mutex::default(),
            slots: Semaphore::new(rt.max_instances.max(1) as usize),
            queue_timeout: Duration::from_millis(rt.queue_timeout_ms),
        }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn linker(&self) -> &Linker<PluginState> {
        &self.linker
    }

    /// Compiles `bytes` (known by `hash`), or returns the component compiled earlier.
    pub fn compile(&self, hash: &str, bytes: &[u8]) -> wasmtime::Result<Component> {
        if let Some(c) = lock(&self.compiled).get(hash) {
            return Ok(c.clone());
        }
        // Compile outside the lock: it takes ~100 ms per 250 KB on 2 cores.
        let component = Component::new(&self.engine, bytes)?;
        let mut cache = lock(&self.compiled);
        if cache.len() >= MAX_CACHED_COMPONENTS {
            cache.clear();
        }
        cache.insert(hash.to_string(), component.clone());
        Ok(component)
    }

    /// Calls the plugin's `book` export.
    pub async fn book(
        &self,
        plugin: &LoadedPlugin,
        ctx: &RequestContext,
        job: &BookJob,
    ) -> Result<Result<BookJobResponse, BookingError>, PluginFailure> {
        let Some(indices) = &plugin.book else {
            return Err(failure(
                plugin,
                FailureKind::Unavailable,
                "does not export book",
            ));
        };
        self.run(plugin, &ctx.request_id, async |store| {
            let instance = plugin.pre.instantiate_async(&mut *store).await?;
            let guest = indices.load(&mut *store, &instance)?;
            guest.call_book(&mut *store, ctx, job).await
        })
        .await
    }

    /// Calls the plugin's `search` export.
    pub async fn search(
        &self,
        plugin: &LoadedPlugin,
        ctx: &RequestContext,
        query: &AppointmentSearch,
    ) -> Result<Result<AppointmentSearchResponse, BookingError>, PluginFailure> {
        let Some(indices) = &plugin.search else {
            return Err(failure(
                plugin,
                FailureKind::Unavailable,
                "does not export search",
            ));
        };
        self.run(plugin, &ctx.request_id, async |store| {
            let instance = plugin.pre.instantiate_async(&mut *store).await?;
            let guest = indices.load(&mut *store, &instance)?;
            guest.call_search(&mut *store, ctx, query).await
        })
        .await
    }

    /// Runs `call` against a fresh `Store` of `plugin`, within the plugin's deadline, and
    /// turns a failure into a [`PluginFailure`].
    ///
    /// Strategy:
    /// - wait (bounded) for an instance slot, so that overload queues instead of failing;
    /// - build the `Store`: empty WASI context with captured stdio, memory/table limiter,
    ///   epoch deadline;
    /// - await the call, abandoning it shortly after the deadline in any case;
    /// - log what the guest wrote, classify any failure, drop the instance.
    async fn run<R>(
        &self,
        plugin: &LoadedPlugin,
        request_id: &str,
        call: impl AsyncFnOnce(&mut Store<PluginState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginFailure> {
        let _permit = tokio::time::timeout(self.queue_timeout, self.slots.acquire())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| {
                failure(
                    plugin,
                    FailureKind::Busy,
                    format!(
                        "no instance slot became free within {} ms",
                        self.queue_timeout.as_millis()
                    ),
                )
            })?;
        let limits = plugin.limits;
        let stdout = MemoryOutputPipe::new(limits.max_log_bytes);
        let stderr = MemoryOutputPipe::new(limits.max_log_bytes);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        let state = PluginState {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter::new(&limits),
            ident: plugin.ident.clone(),
            request_id: Arc::from(request_id),
            config: plugin.config.clone(),
            stdout,
            stderr,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let deadline = Instant::now() + limits.timeout();
        // Checked at every epoch tick: past the deadline the guest traps with
        // `Trap::Interrupt`; before it, the guest yields so that a CPU-bound plugin never
        // holds a tokio worker for more than one tick.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(Trap::Interrupt.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });

        let outcome =
            tokio::time::timeout_at((deadline + DEADLINE_GRACE).into(), call(&mut store)).await;
        let state = store.data();
        flush_output(state);
        match outcome {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(err)) => Err(classify(plugin, state, &err)),
            Err(_elapsed) => Err(failure(
                plugin,
                FailureKind::Timeout,
                format!("timed out after {} ms", limits.timeout_ms),
            )),
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
const DEADLINE_GRACE: Duration = Duration::from_millis(50);

fn failure(plugin: &LoadedPlugin, kind: FailureKind, cause: impl Into<String>) -> PluginFailure {
    PluginFailure {
        kind,
        plugin: (*plugin.ident).clone(),
        cause: cause.into(),
    }
}

/// Sorts a failed call into a [`FailureKind`] and logs the guest's backtrace.
fn classify(plugin: &LoadedPlugin, state: &PluginState, err: &wasmtime::Error) -> PluginFailure {
    tracing::warn!(
        plugin = %plugin.ident,
        request_id = &*state.request_id,
        "plugin call failed: {err:?}"
    );
    let trap = err.downcast_ref::<Trap>().copied();
    let (kind, cause) = match (&state.limiter.hit, trap) {
        (Some(hit), _) => (FailureKind::MemoryLimit, hit.clone()),
        (None, Some(Trap::Interrupt)) => (
            FailureKind::Timeout,
            format!("timed out after {} ms", plugin.limits.timeout_ms),
        ),
        (None, Some(Trap::StackOverflow)) => {
            (FailureKind::StackOverflow, "stack overflow".to_string())
        }
        (None, Some(trap)) => (FailureKind::Trap, format!("trapped: {trap}")),
        (None, None) => (FailureKind::Trap, format!("failed: {}", root_cause(err))),
    };
    failure(plugin, kind, cause)
}

fn root_cause(err: &wasmtime::Error) -> String {
    err.chain()
        .last()
        .map(ToString::to_string)
        .unwrap_or_else(|| err.to_string())
}

/// Logs what the guest wrote to stdout and stderr, one line per log event.
fn flush_output(state: &PluginState) {
    for (stream, pipe) in [("stdout", &state.stdout), ("stderr", &state.stderr)] {
        let bytes = pipe.contents();
        if bytes.is_empty() {
            continue;
        }
        for line in String::from_utf8_lossy(&bytes).lines() {
            tracing::info!(
                plugin = %state.ident,
                request_id = &*state.request_id,
                stream,
                "{line}"
            );
        }
    }
}
