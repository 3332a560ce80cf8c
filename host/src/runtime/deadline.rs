//! A call's deadline and the runaway throttle: the epoch callback that traps a guest past
//! its deadline, makes it yield at every tick, and slows calls that compute for longer than
//! `runaway_after_ms` while other requests are being served. A plugin whose calls keep
//! running away loses that grace ([`Conduct`]).

use super::load::{Arrival, Load};
use super::state::PluginState;
use crate::config::{Limits, RuntimeConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
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
    /// What the host is serving: runaways run at full speed only when nobody else waits.
    load: Arc<Load>,
    /// Epoch ticks of guest execution after which a call is a runaway.
    runaway_ticks: u64,
    /// How long a runaway pauses, holding the slow lane, between slices of one tick.
    runaway_pause: Duration,
}

/// How a plugin version's recent calls used their CPU: each call that runs away is a
/// strike, each call that ends within its grace takes one away. While a plugin has
/// strikes its calls have no grace: each waits its turn on the slow lane before its first
/// instruction and after every tick, as long as other requests are being served.
///
/// Why: a tenant whose every call loops would otherwise run each new call's grace, and
/// its first slice, at full speed: with many short calls that is most of its CPU.
#[derive(Debug, Default)]
pub struct Conduct {
    strikes: AtomicU32,
}

impl Conduct {
    /// Strikes are capped so that a plugin that behaves again regains its grace after at
    /// most this many calls that stay within it.
    const MAX_STRIKES: u32 = 16;

    fn struck(&self) -> bool {
        self.strikes.load(Ordering::Relaxed) > 0
    }

    fn strike(&self) {
        let _ = self
            .strikes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some((n + 1).min(Self::MAX_STRIKES))
            });
    }

    /// Records how a call ended, and stops counting it as a runaway. A call that ended
    /// within its grace takes a strike away; one that ran past it, or timed out (even
    /// waiting for its turn rather than running), takes none.
    pub fn settle(&self, state: &mut PluginState, timed_out: bool) {
        state.runaway = None;
        self.record(!state.past_grace && !timed_out);
    }

    /// Records a call that kept to its grace, or did not.
    pub fn record(&self, kept_grace: bool) {
        if kept_grace {
            let _ = self
                .strikes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// Strikes the plugin has now.
    pub fn strikes(&self) -> u32 {
        self.strikes.load(Ordering::Relaxed)
    }
}

impl Throttle {
    pub fn new(rt: &RuntimeConfig, tick: Duration) -> Self {
        Throttle {
            slow_lane: Arc::new(Semaphore::new(1)),
            load: Load::new(tick),
            runaway_ticks: (rt.runaway_after_ms / tick.as_millis().max(1) as u64).max(1),
            runaway_pause: tick * (100 / u32::from(rt.runaway_share_percent.clamp(1, 100))),
        }
    }

    /// Counts a request as being served until the returned guard is dropped, whether or
    /// not it calls a plugin: while it is, runaways take turns on the slow lane. Whoever
    /// calls a plugin for a request holds one for the length of the call: a runaway is
    /// discounted from the requests in flight as its own.
    pub fn arrive(&self) -> Arrival<'_> {
        self.load.arrive()
    }

    /// Grants the call its fuel and sets the epoch callback that enforces `deadline` and
    /// throttles runaways. A call that runs past its grace is a strike in `conduct` and
    /// sets the store's `past_grace`; a runaway is counted as one (the store's `runaway`)
    /// until that is taken.
    pub fn arm(
        &self,
        store: &mut Store<PluginState>,
        limits: &Limits,
        deadline: Instant,
        fuel: bool,
        conduct: &Arc<Conduct>,
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
        // - after `runaway_ticks` ticks it is a runaway: while others wait (see [`Load`]),
        //   each further tick first waits its turn on the slow lane and pauses there, so
        //   that all runaways together use at most `runaway_share_percent` of one core;
        //   with nobody else to serve, runaways run at full speed;
        // - a call of a plugin with strikes has no grace, and its first callback comes
        //   before its first instruction (an epoch deadline of 0 ticks): it is counted as a
        //   runaway from the start, and is one more strike only if it computes past that.
        let (slow_lane, pause, load, conduct) = (
            self.slow_lane.clone(),
            self.runaway_pause,
            self.load.clone(),
            conduct.clone(),
        );
        let struck = conduct.struck();
        // Callbacks after which the call has run past its grace: a struck call's first
        // callback comes before its first instruction, so its grace is that one.
        let grace = if struck { 1 } else { self.runaway_ticks };
        let mut ticks = 0u64;
        let state = store.data_mut();
        state.runaway = struck.then(|| self.load.runaway());
        state.past_grace = false;
        store.set_epoch_deadline(if struck { 0 } else { 1 });
        store.epoch_deadline_callback(move |mut store| {
            if Instant::now() >= deadline {
                return Err(Trap::Interrupt.into());
            }
            ticks += 1;
            if ticks > grace && !store.data().past_grace {
                let state = store.data_mut();
                state.past_grace = true;
                state.runaway.get_or_insert_with(|| load.runaway());
                conduct.strike();
            }
            if (ticks <= grace && !struck) || !load.others_waiting() {
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
