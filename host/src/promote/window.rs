//! A sliding window of bookings answered by one version: how many, how many failed, and
//! their latency, kept in one bucket per second so that its size never depends on the
//! traffic.

use std::collections::VecDeque;
use std::time::Duration;

/// Latency buckets per doubling: a p99 is read to within about 19 %.
const PER_OCTAVE: f64 = 4.0;
/// Buckets from 1 µs to about 70 minutes.
const BUCKETS: usize = 128;

#[derive(Debug, Clone)]
struct Second {
    at: u64,
    requests: u64,
    failures: u64,
    latency: Box<[u32; BUCKETS]>,
}

/// Bookings of the last `seconds` seconds.
#[derive(Debug, Clone)]
pub struct Window {
    seconds: u64,
    buckets: VecDeque<Second>,
}

/// What a window holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    pub requests: u64,
    pub failures: u64,
    /// Failures / requests (0 without requests).
    pub failure_rate: f64,
    /// The 99th percentile latency (the upper bound of its bucket), in microseconds.
    pub p99_us: u64,
}

fn bucket(latency: Duration) -> usize {
    let us = latency.as_micros().max(1) as f64;
    ((us.log2() * PER_OCTAVE) as usize).min(BUCKETS - 1)
}

fn upper_bound_us(bucket: usize) -> u64 {
    2f64.powf((bucket + 1) as f64 / PER_OCTAVE) as u64
}

impl Window {
    pub fn new(seconds: u64) -> Window {
        Window {
            seconds: seconds.max(1),
            buckets: VecDeque::new(),
        }
    }

    /// Drops the seconds that left the window at `now` (seconds on any steady clock).
    fn slide(&mut self, now: u64) {
        while self
            .buckets
            .front()
            .is_some_and(|b| b.at + self.seconds <= now)
        {
            self.buckets.pop_front();
        }
    }

    /// Counts one booking answered at `now`.
    pub fn record(&mut self, now: u64, failed: bool, latency: Duration) {
        self.slide(now);
        let second = match self.buckets.back_mut() {
            Some(b) if b.at == now => b,
            _ => {
                self.buckets.push_back(Second {
                    at: now,
                    requests: 0,
                    failures: 0,
                    latency: Box::new([0; BUCKETS]),
                });
                let Some(b) = self.buckets.back_mut() else {
                    return;
                };
                b
            }
        };
        second.requests += 1;
        second.failures += u64::from(failed);
        second.latency[bucket(latency)] += 1;
    }

    /// The figures of the window at `now`.
    pub fn figures(&mut self, now: u64) -> Figures {
        self.slide(now);
        let requests: u64 = self.buckets.iter().map(|b| b.requests).sum();
        let failures: u64 = self.buckets.iter().map(|b| b.failures).sum();
        let mut p99_us = 0;
        if requests > 0 {
            // The smallest latency at least 99 % of the requests did not exceed.
            let wanted = (requests as f64 * 0.99).ceil() as u64;
            let mut seen = 0;
            for i in 0..BUCKETS {
                seen += self
                    .buckets
                    .iter()
                    .map(|b| u64::from(b.latency[i]))
                    .sum::<u64>();
                if seen >= wanted {
                    p99_us = upper_bound_us(i);
                    break;
                }
            }
        }
        Figures {
            requests,
            failures,
            failure_rate: if requests == 0 {
                0.0
            } else {
                failures as f64 / requests as f64
            },
            p99_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_forgets_what_left_it() {
        let mut w = Window::new(10);
        for s in 0..10 {
            w.record(s, s % 5 == 0, Duration::from_millis(2));
        }
        let f = w.figures(9);
        assert_eq!((f.requests, f.failures), (10, 2));
        assert!((f.failure_rate - 0.2).abs() < 1e-9);
        // Seconds 0–4 have left at second 14.
        let f = w.figures(14);
        assert_eq!((f.requests, f.failures), (5, 1));
        assert_eq!(w.figures(100).requests, 0);
    }

    #[test]
    fn p99_is_within_a_bucket_of_the_truth() {
        let mut w = Window::new(60);
        for i in 0..1000 {
            let ms = if i < 990 { 2 } else { 40 };
            w.record(1, false, Duration::from_millis(ms));
        }
        let p99 = w.figures(1).p99_us;
        assert!((2_000..=2_400).contains(&p99), "{p99}");
        for _ in 0..20 {
            w.record(1, false, Duration::from_millis(40));
        }
        let p99 = w.figures(1).p99_us;
        assert!((40_000..=48_000).contains(&p99), "{p99}");
    }
}
