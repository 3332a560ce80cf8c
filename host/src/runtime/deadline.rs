//! A call's deadline and the runaway throttle: the epoch callback that traps a guest past
//! its deadline, makes it yield at every tick, and slows calls that compute for longer than
//! `runaway_after_ms` while other requests are being served. A plugin whose calls keep
//! running away loses that grace ([`Conduct`]).

use super::sandbox::{self, RuntimeConfig};
use super::state::PluginState;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use wasmtime::{Store, Trap, UpdateDeadline};

/// A guest stuck outside Wasm code (in a WASI poll, or in a `kv` read waiting on the disk)
/// is still bounded: the whole call is abandoned this long after its deadline.
pub const DEADLINE_GRACE: Duration = Duration::from_millis(20);

/// How long after the last answer the host counts as having nobody else to serve: long
/// enough to cover a client's turn between an answer and its next request on a busy
/// machine (a load generator on the same cores took more than one 2 ms tick).
const QUIET_TICKS: u32 = 5;

/// `Load::last_end` before any request has ended.
const NEVER: u64 = u64::MAX;

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

/// Requests being served now (see [`Throttle::arrive`]), calls running away now, and when
/// a request last ended. Nobody else waits for the CPU when every request in flight is a
/// runaway and none has ended for [`QUIET_TICKS`] ticks.
///
/// Why not "has anything arrived since this call began": that is false at a call's first
/// ticks however busy the host is, and it missed requests answered without a plugin call
/// (journal replays), which then waited behind runaways at full speed. Why the quiet ticks
/// after an answer: a client that sends its next request as soon as it has the last answer
/// leaves the host with nothing in flight for a moment between the two, and runaways must
/// not take that moment.
#[derive(Debug)]
struct Load {
    in_flight: AtomicU64,
    runaways: AtomicU64,
    /// Microseconds after `since` at which a request last ended ([`NEVER`] before the first).
    last_end: AtomicU64,
    since: Instant,
    quiet: Duration,
}

impl Load {
    fn now(&self) -> u64 {
        self.since.elapsed().as_micros() as u64
    }

    fn others_waiting(&self) -> bool {
        let last_end = self.last_end.load(Ordering::Relaxed);
        self.in_flight.load(Ordering::Relaxed) > self.runaways.load(Ordering::Relaxed)
            || (last_end != NEVER
                && self.now().saturating_sub(last_end) < self.quiet.as_micros() as u64)
    }
}

/// One request in flight, counted by the throttle until dropped.
#[derive(Debug)]
pub struct Arrival(Arc<Load>);

impl Arrival {
    fn new(load: &Arc<Load>) -> Self {
        load.in_flight.fetch_add(1, Ordering::Relaxed);
        Arrival(load.clone())
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.last_end.store(self.0.now(), Ordering::Relaxed);
    }
}

/// One call counted among the runaways until dropped.
#[derive(Debug)]
pub struct Runaway(Arc<Load>);

impl Runaway {
    fn new(load: &Arc<Load>) -> Self {
        load.runaways.fetch_add(1, Ordering::Relaxed);
        Runaway(load.clone())
    }
}

impl Drop for Runaway {
    fn drop(&mut self) {
        self.0.runaways.fetch_sub(1, Ordering::Relaxed);
    }
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

    /// Records how a call ended: one that stayed within its grace takes a strike away.
    pub fn settle(&self, ran_away: bool) {
        if !ran_away {
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
            load: Arc::new(Load {
                in_flight: AtomicU64::new(0),
                runaways: AtomicU64::new(0),
                last_end: AtomicU64::new(NEVER),
                since: Instant::now(),
                quiet: tick * QUIET_TICKS,
            }),
            runaway_ticks: (rt.runaway_after_ms / tick.as_millis().max(1) as u64).max(1),
            runaway_pause: tick * (100 / u32::from(rt.runaway_share_percent.clamp(1, 100))),
        }
    }

    /// Counts a request as being served until the returned guard is dropped, whether or
    /// not it calls a plugin: while it is, runaways take turns on the slow lane. Whoever
    /// calls a plugin for a request holds one for the length of the call: a runaway is
    /// discounted from the requests in flight as its own.
    pub fn arrive(&self) -> Arrival {
        Arrival::new(&self.load)
    }

    /// Grants the call its fuel and sets the epoch callback that enforces `deadline` and
    /// throttles runaways. A call that runs past its grace is a strike in `conduct` and
    /// sets the store's `past_grace`; a runaway is counted as one (the store's `runaway`)
    /// until that is taken.
    pub fn arm(
        &self,
        store: &mut Store<PluginState>,
        limits: &sandbox::Limits,
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
        let grace = if struck { 0 } else { self.runaway_ticks };
        // Ticks of guest execution so far; a struck call's entry callback is not one.
        let mut ticks = 0u64;
        let mut at_entry = struck;
        let state = store.data_mut();
        state.runaway = struck.then(|| Runaway::new(&self.load));
        state.past_grace = false;
        store.set_epoch_deadline(if struck { 0 } else { 1 });
        store.epoch_deadline_callback(move |mut store| {
            if Instant::now() >= deadline {
                return Err(Trap::Interrupt.into());
            }
            if !std::mem::take(&mut at_entry) {
                ticks += 1;
            }
            if ticks > grace && !store.data().past_grace {
                let state = store.data_mut();
                state.past_grace = true;
                state.runaway.get_or_insert_with(|| Runaway::new(&load));
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
