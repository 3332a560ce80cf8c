//! Limits a plugin runs under, and how they are enforced: the pooling allocator bounds
//! every instance the host can create, a per-`Store` limiter bounds each request's memory
//! and tables, and an epoch deadline bounds its wall-clock time.

use serde::Deserialize;
use std::time::Duration;
use wasmtime::{InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter};

/// Per-plugin limits (`[plugins.NAME]` in the config). Every field has a default.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Wall-clock budget of one call, instantiation included. Default 500 ms: a booking
    /// rule decides in microseconds, and ServiceMobility waits on us.
    pub timeout_ms: u64,
    /// Maximum linear memory of one instance. Default 64 MiB: a std Rust guest needs about
    /// 2 MiB to book; the rest is headroom for large requests.
    pub max_memory_bytes: u64,
    /// Maximum elements of one table. Default 20,000 (funcref tables of large guests).
    pub max_table_elements: usize,
    /// Bytes a call may write to stdout, stderr and the log service together; the rest
    /// is dropped (and counted), never an error. Default 64 KiB.
    pub max_log_bytes: usize,
    /// Largest answer (encoded JSON) a call may return; larger is `plugin-response-too-large`.
    /// Default 1 MiB: a Book Job Response is a few hundred bytes.
    pub max_response_bytes: usize,
    /// Instruction budget of one call, in wasmtime fuel units (about one per Wasm
    /// instruction); exhausting it is `plugin-out-of-fuel`. Deterministic, unlike the
    /// deadline. Needs `[runtime] fuel = true`. Default: none (the deadline alone bounds
    /// CPU).
    pub max_fuel: Option<u64>,
    /// Calls of this plugin that may run at once; more wait up to `queue_timeout_ms`, then
    /// get `plugin-busy`. Default 32: enough to keep two cores busy with a plugin that
    /// waits on I/O, few enough that one tenant cannot take every instance slot.
    pub max_concurrency: u32,
    /// Log entries (log service calls and output lines) a call may leave; the rest are
    /// dropped and counted. Each entry also costs at least [`LOG_ENTRY_BYTES`] of
    /// `max_log_bytes`, so empty entries are not free. Default 1,000.
    pub max_log_entries: usize,
    /// Host resources (WASI streams and pollables, `wasi:http` header maps, requests,
    /// bodies, …) a call may hold at once; one more traps (`plugin-memory-limit`).
    /// Default 256: a booking that makes its eight outbound calls holds a few dozen.
    pub max_host_resources: usize,
}

/// The least an entry of a plugin's log costs against `max_log_bytes`: the host keeps a
/// record per entry whatever its text.
pub const LOG_ENTRY_BYTES: usize = 64;

/// How much of the answer, in the host's own form (strings at their length, every list
/// element at its in-memory size), the host lifts out of a plugin per unit of
/// `max_response_bytes`; the same bound holds for the arguments of any one host call.
/// Four: JSON is more compact than the records it encodes only for lists of empty
/// values, and an answer that needs more could not be sent anyway.
pub const LIFT_FACTOR: usize = 4;

/// Bytes of one `wasi:http` header map (wasmtime's estimate of its in-memory size).
/// 16 KiB: a request to a customer system carries a few hundred bytes of headers.
pub const HTTP_FIELDS_BYTES: usize = 16 << 10;

/// Bytes of outgoing request bodies a call may have buffered in the host at once, over
/// all its requests, and the most one write may add. A body streams out as the customer
/// system reads it; only what is written ahead waits here.
pub const HTTP_BODY_BUFFER_BYTES: usize = 1 << 20;
pub const HTTP_BODY_CHUNK_BYTES: usize = 64 << 10;

/// Component handles (resources a guest defines itself, and its handles to host ones) a
/// call may hold at once. Each is a small host table entry; wasmtime's own default is
/// 100,000.
pub const COMPONENT_HANDLES: usize = 10_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_ms: 500,
            max_memory_bytes: 64 << 20,
            max_table_elements: 20_000,
            max_log_bytes: 64 << 10,
            max_response_bytes: 1 << 20,
            max_fuel: None,
            max_concurrency: 32,
            max_log_entries: 1_000,
            max_host_resources: 256,
        }
    }
}

impl Limits {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// What the host lifts out of the plugin in one go at most: its answer, or the
    /// arguments of one host call (see [`LIFT_FACTOR`]).
    pub fn lift_budget(&self) -> usize {
        self.max_response_bytes.saturating_mul(LIFT_FACTOR)
    }
}

/// Host-wide runtime settings (`[runtime]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Instances that may exist at once across all plugins; further requests wait for a
    /// free slot. Default 256: 2 cores saturate well below that, and each slot reserves
    /// virtual address space (not memory) for its linear memories.
    pub max_instances: u32,
    /// How long a request may wait for a free instance slot before it is refused with
    /// `plugin-busy`. Default 1000 ms.
    pub queue_timeout_ms: u64,
    /// Epoch tick. Deadlines are checked, and running guests yield to other requests, at
    /// this period. Default 2 ms: the ticker costs nothing measurable, and a finer tick
    /// bounds how long a looping plugin runs before it is throttled.
    pub epoch_tick_ms: u64,
    /// Upper bound for any plugin's `max_memory_bytes` (the pool's slot size).
    /// Default 256 MiB.
    pub max_memory_bytes: u64,
    /// Wasm stack of one call, for every plugin (wasmtime sets it per engine); deeper
    /// recursion is `plugin-stack-overflow`. Default 512 KiB, wasmtime's own default.
    pub max_wasm_stack_bytes: usize,
    /// Guest CPU time after which a call counts as a runaway, throttled while other requests
    /// are served. A booking rule decides in microseconds; past this it would only take CPU
    /// from well-behaved calls. Default 4 ms (two ticks). Raise it on hosts serving plugins
    /// that legitimately compute longer (interpreted JavaScript or Python rules).
    pub runaway_after_ms: u64,
    /// CPU share of one core that all runaway calls together may use while other requests
    /// are in flight (percent, 1–100). Default 5: looping plugins cannot slow the others by
    /// more than that, plus the grace of a plugin's first runaway calls.
    pub runaway_share_percent: u8,
    /// Meter fuel, so that plugins may have a `max_fuel` budget. Costs every plugin about a
    /// third more CPU (measured), so it is off by default.
    pub fuel: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_instances: 256,
            queue_timeout_ms: 1000,
            epoch_tick_ms: 2,
            max_memory_bytes: 256 << 20,
            max_wasm_stack_bytes: 512 << 10,
            runaway_after_ms: 4,
            runaway_share_percent: 5,
            fuel: false,
        }
    }
}

/// The pooling allocator: every instance's memory, tables and stacks come from slots
/// reserved once at start-up, so instantiating costs microseconds and a plugin can never
/// allocate more than its slot.
pub fn pooling(rt: &RuntimeConfig) -> InstanceAllocationStrategy {
    let slots = rt.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        // A std wasip2 component instantiates a handful of core modules (its code plus
        // wasi-libc shims); 8 per component leaves room for larger toolchains' output.
        .total_core_instances(slots * 8)
        .max_core_instances_per_component(16)
        .total_memories(slots * 2)
        .max_memories_per_component(4)
        .total_tables(slots * 4)
        .max_tables_per_component(8)
        .total_stacks(slots)
        .max_memory_size(usize::try_from(rt.max_memory_bytes).unwrap_or(usize::MAX))
        // Measured on this kind of machine: resetting memory with pagemap_scan and keeping
        // the first pages resident instead of decommitting them quadruples throughput
        // (10.5k → 45k req/s) for a fresh instance per request. 2 MiB covers what a booking
        // guest touches (~1.2 MiB); more would keep every slot a memory bomb ever used
        // resident (256 slots × 16 MiB = 4 GiB).
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(64 << 10);
    InstanceAllocationStrategy::Pooling(pool)
}

/// Enforces [`Limits`] on one `Store`, and remembers whether a limit was hit so that the
/// resulting trap can be reported as a memory limit rather than a bug.
#[derive(Debug)]
pub struct Limiter {
    max_memory_bytes: usize,
    max_table_elements: usize,
    /// Set when the guest asked for more memory or table than allowed.
    pub hit: Option<String>,
    /// The largest linear memory the call was allowed, in bytes.
    pub peak_memory: usize,
}

impl Limiter {
    pub fn new(limits: &Limits) -> Self {
        Limiter {
            max_memory_bytes: usize::try_from(limits.max_memory_bytes).unwrap_or(usize::MAX),
            max_table_elements: limits.max_table_elements,
            hit: None,
            peak_memory: 0,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            self.hit = Some(format!(
                "memory limit: asked to grow from {current} to {desired} bytes, limit {}",
                self.max_memory_bytes
            ));
            return Ok(false);
        }
        self.peak_memory = self.peak_memory.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_table_elements {
            self.hit = Some(format!(
                "table limit: asked to grow from {current} to {desired} elements, limit {}",
                self.max_table_elements
            ));
            return Ok(false);
        }
        Ok(true)
    }
}
