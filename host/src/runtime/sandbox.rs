//! Limits a plugin runs under, and how they are enforced: the pooling allocator bounds
//! every instance the host can create, a per-`Store` limiter bounds each request's memory
//! and tables, and an epoch deadline bounds its wall-clock time.

use crate::config::{Limits, RuntimeConfig};
use wasmtime::{InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter};

/// The least an entry of a plugin's log costs against `max_log_bytes`: the host keeps a
/// record per entry whatever its text.
pub const LOG_ENTRY_BYTES: usize = 64;

/// How much of the answer, in the host's own form (strings at their length, every list
/// element at its in-memory size), the host lifts out of a plugin per unit of
/// `max_response_bytes`; the same bound holds for the arguments of any one host call.
/// Four: JSON is more compact than the records it encodes only for lists of empty
/// values, and an answer that needs more could not be sent anyway.
pub const LIFT_FACTOR: usize = 4;

impl Limits {
    /// What the host lifts out of the plugin in one go at most: its answer, or the
    /// arguments of one host call (see [`LIFT_FACTOR`]).
    pub fn lift_budget(&self) -> usize {
        self.max_response_bytes.saturating_mul(LIFT_FACTOR)
    }
}

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
