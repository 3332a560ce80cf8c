//! What the host is serving, as the runaway throttle sees it: requests in flight, calls
//! running away, and when a request was last answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long after the last answer the host counts as having nobody else to serve: long
/// enough to cover a client's turn between an answer and its next request on a busy
/// machine (a load generator on the same cores took more than one 2 ms tick).
const QUIET_TICKS: u32 = 5;

/// `Load::last_end` before any request has ended.
const NEVER: u64 = u64::MAX;

/// Requests being served now (see [`Load::arrive`]), calls running away now, and when
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
pub struct Load {
    in_flight: AtomicU64,
    runaways: AtomicU64,
    /// Microseconds after `since` at which a request last ended ([`NEVER`] before the first).
    last_end: AtomicU64,
    since: Instant,
    quiet: Duration,
}

impl Load {
    pub fn new(tick: Duration) -> Arc<Load> {
        Arc::new(Load {
            in_flight: AtomicU64::new(0),
            runaways: AtomicU64::new(0),
            last_end: AtomicU64::new(NEVER),
            since: Instant::now(),
            quiet: tick * QUIET_TICKS,
        })
    }

    /// Counts a request as being served until the guard is dropped.
    pub fn arrive(&self) -> Arrival<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Arrival(self)
    }

    /// Counts a call among the runaways until the guard is dropped.
    pub fn runaway(self: &Arc<Self>) -> Runaway {
        self.runaways.fetch_add(1, Ordering::Relaxed);
        Runaway(self.clone())
    }

    fn now(&self) -> u64 {
        self.since.elapsed().as_micros() as u64
    }

    /// Whether a request other than a runaway is waiting for the CPU, or was answered
    /// within the quiet ticks.
    pub fn others_waiting(&self) -> bool {
        let last_end = self.last_end.load(Ordering::Relaxed);
        self.in_flight.load(Ordering::Relaxed) > self.runaways.load(Ordering::Relaxed)
            || (last_end != NEVER
                && self.now().saturating_sub(last_end) < self.quiet.as_micros() as u64)
    }
}

/// One request in flight, counted by the throttle until dropped. It borrows the count (no
/// reference count to touch per request); a runaway mark, kept in the call's `Store`, owns
/// one.
#[derive(Debug)]
pub struct Arrival<'a>(&'a Load);

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.last_end.store(self.0.now(), Ordering::Relaxed);
    }
}

/// One call counted among the runaways until dropped.
#[derive(Debug)]
pub struct Runaway(Arc<Load>);

impl Drop for Runaway {
    fn drop(&mut self) {
        self.0.runaways.fetch_sub(1, Ordering::Relaxed);
    }
}
