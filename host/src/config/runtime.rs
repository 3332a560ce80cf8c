//! `[runtime]`: the host-wide settings of the plugin runtime (instance pool, epoch tick,
//! stack, runaway throttle, fuel). `runtime/` enforces them.

use serde::{Deserialize, Serialize};

/// Host-wide runtime settings (`[runtime]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
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
