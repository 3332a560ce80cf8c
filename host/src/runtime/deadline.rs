//! A call's deadline and the runaway throttle: the epoch callback that traps a guest past
//! its deadline, makes it yield at every tick, and slows calls that compute for longer than
//! `runaway_after_ms` while others wait.

use super::sandbox::{self, RuntimeConfig};
use super::state::PluginState;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use wasmtime::{Store, Trap, UpdateDeadline};

/// A guest stuck outside Wasm code (in a WASI poll, or in a `kv` read waiting on the disk)
/// is still bounded: the whole call is abandoned this long after its deadline.
pub const DEADLINE_GRACE: Duration = Duration::from_millis(20);

/// The throttle every call of one runtime shares.
#[derive(Debug)]
pub struct Throttle {
    /// Runaway calls take turns on this one permit (see [`RuntimeConfig::runaway_after_ms`]).
    slow_lane: Arc<Semaphore>,
    /// Calls started so far: a runaway is throttled only if another call started after it.
    starts: Arc<AtomicU64>,
    /// Epoch ticks of guest execution after which a call is a runaway.
    runaway_ticks: u64,
    /// How long a runaway pauses, holding the slow lane, between slices of one tick.
    runaway_pause: Duration,
}

impl Throttle {
    pub fn new(rt: &RuntimeConfig, tick: Duration) -> Self {
        Throttle {
            slow_lane: Arc::new(Semaphore::new(1)),
            starts: Arc::default(),
            runaway_ticks: (rt.runaway_after_ms / tick.as_millis().max(1) as u64).max(1),
            runaway_pause: tick * (100 / u32::from(rt.runaway_share_percent.clamp(1, 100))),
        }
    }

    /// Grants the call its fuel and sets the epoch callback that enforces `deadline` and
    /// throttles runaways.
    pub fn arm(
        &self,
        store: &mut Store<PluginState>,
        limits: &sandbox::Limits,
        deadline: Instant,
        fuel: bool,
    ) {
        if fuel {
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
