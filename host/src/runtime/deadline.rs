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
    /// Time computing after which a call is a runaway.
    runaway_after: Duration,
    /// A struck call's grace: one tick of computing.
    tick: Duration,
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
            runaway_after: Duration::from_millis(rt.runaway_after_ms.max(1)),
            tick,
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
        // - after computing for `runaway_after_ms` it is a runaway (the time it waited to
        //   be resumed after a yield does not count, see [`Computing`]): while others wait
        //   (see [`Load`]),
        //   each further tick first waits its turn on the slow lane and pauses there, so
        //   that all runaways together use at most `runaway_share_percent` of one core;
        //   with nobody else to serve, runaways run at full speed;
        // - a call of a plugin with strikes has no grace, and its first callback comes
        //   before its first instruction (an epoch deadline of 0 ticks): it is counted as a
        //   runaway from the start, and is one more strike only if it computes for more
        //   than a tick.
        let (slow_lane, pause, load, conduct) = (
            self.slow_lane.clone(),
            self.runaway_pause,
            self.load.clone(),
            conduct.clone(),
        );
        let struck = conduct.struck();
        // A struck call's first callback comes before its first instruction, so its grace
        // is one tick of computing.
        let grace = if struck {
            self.tick
        } else {
            self.runaway_after
        };
        let mut computing = Computing::new(Mark::start(), self.tick);
        let resumed = computing.resumed.clone();
        let state = store.data_mut();
        state.runaway = struck.then(|| self.load.runaway());
        state.past_grace = false;
        store.set_epoch_deadline(if struck { 0 } else { 1 });
        store.epoch_deadline_callback(move |mut store| {
            let now = Instant::now();
            if now >= deadline {
                return Err(Trap::Interrupt.into());
            }
            if computing.until(Mark::at(now)) > grace && !store.data().past_grace {
                let state = store.data_mut();
                state.past_grace = true;
                state.runaway.get_or_insert_with(|| load.runaway());
                conduct.strike();
            }
            if (!store.data().past_grace && !struck) || !load.others_waiting() {
                // tokio's own yield lets the worker poll its I/O and timers before resuming
                // the guest; wasmtime's plain `Yield` reschedules at once, so a worker busy
                // with yielding guests would look at the network only every 61 polls.
                let resumed = resumed.clone();
                return Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(async move {
                        tokio::task::yield_now().await;
                        resumed.now();
                    }),
                ));
            }
            let (lane, resumed) = (slow_lane.clone(), resumed.clone());
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(async move {
                    if let Ok(_turn) = lane.acquire_owned().await {
                        tokio::time::sleep(pause).await;
                    }
                    resumed.now();
                }),
            ))
        });
    }
}

/// How long a call has been computing: from each resume of the guest to its next epoch
/// callback, the CPU time its thread spent, summed. Time the call did not run is not
/// counted: waiting to be resumed after a yield (behind other requests on a busy worker,
/// or for its turn on the slow lane), and the thread being preempted by the OS for another
/// (on a loaded host, a slice of several milliseconds). Counting those, a short booking on
/// a busy host could pass for a runaway, and a plugin with strikes has its calls queue on
/// the slow lane until they time out. Host calls made inline (a `kv` read) count as the
/// CPU they take. Between a resume and the next callback the guest runs at most one tick
/// unless it was suspended in an async host call (outbound HTTP), while its worker ran
/// other requests or it moved to another worker; so no interval counts for more than one
/// tick, as a callback counted before.
struct Computing {
    /// The last callback (at first, the call's start).
    last: Mark,
    resumed: Resumed,
    total: Duration,
    /// The most one interval counts for: a tick.
    cap: Duration,
}

/// A moment in a call: the thread, its CPU time then (when the OS says), the wall clock.
#[derive(Debug, Clone, Copy)]
struct Mark {
    thread: std::thread::ThreadId,
    cpu: Option<Duration>,
    wall: Instant,
}

/// How old this thread's last CPU clock reading may be for a call's start to be marked
/// from it (see [`Mark::start`]): under a tick, so that a runaway is recognised after at
/// most this much more computing than from an exact reading.
const RECENT: Duration = Duration::from_millis(1);

thread_local! {
    /// This thread's CPU time as last read, and the wall clock then.
    static LAST_READ: std::cell::Cell<Option<(Duration, Instant)>> =
        const { std::cell::Cell::new(None) };
}

impl Mark {
    fn now() -> Mark {
        Mark::at(Instant::now())
    }

    /// This thread at `wall`, a moment just read: its CPU clock is read (a system call:
    /// `CLOCK_THREAD_CPUTIME_ID` has no vDSO path).
    fn at(wall: Instant) -> Mark {
        let cpu = cpu_time::ThreadTime::try_now()
            .ok()
            .map(|t| t.as_duration());
        if let Some(cpu) = cpu {
            LAST_READ.set(Some((cpu, wall)));
        }
        Mark {
            thread: std::thread::current().id(),
            cpu,
            wall,
        }
    }

    /// This thread now, as a call's start. Most calls end before their first epoch
    /// callback and never use it, so when this thread's clock was read within [`RECENT`]
    /// the start's CPU time is estimated from that reading instead of read again (on a
    /// busy worker, one system call for many calls instead of one each).
    fn start() -> Mark {
        let wall = Instant::now();
        match LAST_READ.get().and_then(|last| estimate(last, wall)) {
            Some(cpu) => Mark {
                thread: std::thread::current().id(),
                cpu: Some(cpu),
                wall,
            },
            None => Mark::at(wall),
        }
    }

    /// What ran on this thread from `from` to `self`.
    fn ran_since(&self, from: &Mark) -> Duration {
        match (self.cpu, from.cpu) {
            (Some(now), Some(then)) if self.thread == from.thread => now.saturating_sub(then),
            _ => self.wall.saturating_duration_since(from.wall),
        }
    }
}

/// The CPU time at `wall` of a thread whose clock read `last`, when that reading is
/// recent: the reading plus the wall time since. A thread computes no faster than the
/// wall clock runs, so this is never less than the true time, and what a call is counted
/// as computing from it is never more than it computed (at most [`RECENT`] less): a
/// well-behaved call is never made a runaway by the estimate.
fn estimate((cpu, at): (Duration, Instant), wall: Instant) -> Option<Duration> {
    let since = wall.checked_duration_since(at)?;
    (since <= RECENT).then(|| cpu + since)
}

/// When the guest last resumed after a yield; set by the future it yields to, as that
/// future completes.
#[derive(Clone, Default)]
struct Resumed(Arc<std::sync::Mutex<Option<Mark>>>);

impl Resumed {
    fn now(&self) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Mark::now());
    }
}

impl Computing {
    fn new(started: Mark, tick: Duration) -> Computing {
        Computing {
            last: started,
            resumed: Resumed::default(),
            total: Duration::ZERO,
            cap: tick,
        }
    }

    /// The time computed up to `now`, a callback: what ran since the guest last resumed
    /// (or since the last callback, when it has not yielded since) is added.
    fn until(&mut self, now: Mark) -> Duration {
        let resumed = self
            .resumed
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        self.total += now.ran_since(&resumed.unwrap_or(self.last)).min(self.cap);
        self.last = now;
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Time the call did not run is not computing: a short call that yielded at a tick
    /// and waited behind other requests, or was preempted, is not a runaway however long
    /// it waited; one that computes through several ticks is.
    #[test]
    fn only_the_cpu_time_between_a_resume_and_the_next_callback_counts() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let here = std::thread::current().id();
        let mark = |cpu: u64, wall: u64| Mark {
            thread: here,
            cpu: Some(ms(cpu)),
            wall: t0 + ms(wall),
        };
        let resume = |c: &Computing, m: Mark| *c.resumed.0.lock().unwrap() = Some(m);
        let mut c = Computing::new(mark(0, 0), ms(5));
        // Runs 1 ms, yields at a tick, waits 30 ms on a busy worker, runs 1 ms more.
        assert_eq!(c.until(mark(1, 1)), ms(1));
        resume(&c, mark(1, 31));
        assert_eq!(c.until(mark(2, 32)), ms(2));
        // Preempted by the OS for 10 ms in the middle of a slice: 2 ms of CPU in 12 ms.
        resume(&c, mark(2, 32));
        assert_eq!(c.until(mark(4, 44)), ms(4));
        // A callback with no resume since the last one counts from that callback.
        assert_eq!(c.until(mark(5, 45)), ms(5));
        // Resumed on another thread (an async host call moved it): wall time counts.
        let elsewhere = std::thread::spawn(|| std::thread::current().id())
            .join()
            .unwrap();
        resume(
            &c,
            Mark {
                thread: elsewhere,
                cpu: Some(ms(100)),
                wall: t0 + ms(50),
            },
        );
        assert_eq!(c.until(mark(6, 53)), ms(8));
        // A guest that computes from tick to tick accumulates every one.
        let mut busy = Computing::new(mark(0, 0), ms(5));
        for tick in 1..=5u64 {
            assert_eq!(busy.until(mark(2 * tick, 2 * tick)), ms(2 * tick));
            resume(&busy, mark(2 * tick, 2 * tick));
        }
    }

    /// A start marked from a recent reading is the reading plus the wall time since; an
    /// older reading, or one from the future of `wall`, is not used.
    #[test]
    fn a_start_is_estimated_only_from_a_recent_reading() {
        let t0 = Instant::now();
        let us = Duration::from_micros;
        let read = (us(5_000), t0);
        assert_eq!(estimate(read, t0), Some(us(5_000)));
        assert_eq!(estimate(read, t0 + us(300)), Some(us(5_300)));
        assert_eq!(estimate(read, t0 + RECENT), Some(us(5_000) + RECENT));
        assert_eq!(estimate(read, t0 + RECENT + us(1)), None);
        assert_eq!(estimate((us(5_000), t0 + us(10)), t0), None);
    }

    /// The estimated start is never before the thread's true CPU time, whether the thread
    /// computed or slept since its clock was read: what the call is counted as computing
    /// is never more than it computed.
    #[test]
    fn an_estimated_start_never_counts_more_than_was_computed() {
        for sleep in [false, true] {
            let _ = Mark::now();
            if sleep {
                std::thread::sleep(Duration::from_micros(200));
            } else {
                let mut x = 0u64;
                for i in 0..50_000u64 {
                    x = x.wrapping_mul(31).wrapping_add(i);
                }
                std::hint::black_box(x);
            }
            let truth = cpu_time::ThreadTime::now().as_duration();
            let start = Mark::start();
            assert!(start.cpu.unwrap() >= truth, "sleep: {sleep}");
        }
    }

    #[test]
    fn a_thread_s_cpu_time_is_read() {
        let start = Mark::now();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(
            start.cpu.is_some(),
            "CLOCK_THREAD_CPUTIME_ID is available here"
        );
        assert!(Mark::now().ran_since(&start) > Duration::ZERO);
    }
}
