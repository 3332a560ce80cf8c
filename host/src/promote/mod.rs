//! A candidate version beside the serving one: in **shadow** (it runs on live bookings'
//! tapes after they are answered, and has no effect at all) or as a **canary** (a share of
//! work orders, chosen by a hash of the WorkOrderID, is booked by it for real, and it is
//! rolled back by itself when it is worse than the serving version).
//!
//! This module owns the state: which candidate each plugin has, the shadow's counts and
//! latest differences, the canary's windows and its judgement. Deploying, promoting and
//! aborting candidates, and the request path's use of them, are the app's
//! (`app/promote.rs`, `http/mod.rs`).

pub mod window;

use crate::config::CanaryConfig;
use crate::plugin::LoadedPlugin;
use crate::replay::{Difference, Outcome};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use window::{Figures, Window};

/// Shadow runs at once per candidate; a booking that finds them all busy is skipped.
pub const SHADOW_AT_ONCE: usize = 1;
/// After a shadow run, its slot stays taken this many times as long as the run took: a
/// shadow uses at most about a tenth of one core, however busy the host is.
pub const SHADOW_REST: u32 = 9;
/// Differences and failures of a shadow kept for `GET /plugins/NAME/shadow`.
const LATEST: usize = 20;
/// Bookings each version needs in the window before their p99 latencies are compared.
pub const P99_MIN_REQUESTS: u64 = 100;
/// Largest answer body a kept difference holds.
const LATEST_BODY_BYTES: usize = 16 << 10;

/// How a candidate takes part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "mode")]
pub enum Mode {
    Shadow,
    Canary { percent: u8 },
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Shadow => "shadow",
            Mode::Canary { .. } => "canary",
        }
    }
}

/// A candidate version of one plugin.
pub struct Candidate {
    pub plugin: Arc<LoadedPlugin>,
    pub mode: Mode,
    /// Unix seconds when it was deployed.
    pub since: u64,
    pub shadow: Shadow,
    canary: Mutex<Canary>,
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidate")
            .field("plugin", &self.plugin.ident)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// What a shadow did.
#[derive(Debug)]
pub struct Shadow {
    /// Runs going on now.
    pub running: Arc<tokio::sync::Semaphore>,
    counts: [AtomicU64; 4],
    latest: Mutex<VecDeque<Latest>>,
}

/// A shadow run that did not answer the same.
#[derive(Debug, Clone, Serialize)]
pub struct Latest {
    /// Unix seconds.
    pub at: u64,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    #[serde(flatten)]
    pub difference: Option<Difference>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_order_id: Option<String>,
}

/// A shadow's counts by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ShadowCounts {
    pub same: u64,
    pub differs: u64,
    pub failed: u64,
    pub skipped: u64,
}

impl Shadow {
    fn new() -> Shadow {
        Shadow {
            running: Arc::new(tokio::sync::Semaphore::new(SHADOW_AT_ONCE)),
            counts: Default::default(),
            latest: Default::default(),
        }
    }

    /// A booking found every run slot busy.
    pub fn skipped(&self) {
        self.counts[3].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a run, and keeps it when it did not answer the same.
    pub fn ran(&self, outcome: Outcome, latest: Option<Latest>) {
        let i = match outcome {
            Outcome::Same => 0,
            Outcome::Differs => 1,
            Outcome::Failed => 2,
        };
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        if let Some(mut latest) = latest {
            // Answers are kept whole only while small: twenty runs of a plugin answering
            // megabytes must not hold forty of them.
            if let Some(d) = &mut latest.difference {
                for answer in [&mut d.recorded, &mut d.candidate] {
                    let size = serde_json::to_vec(&answer.body).map_or(0, |b| b.len());
                    if size > LATEST_BODY_BYTES {
                        answer.body = serde_json::json!(format!("({size} bytes, not kept)"));
                    }
                }
            }
            let mut kept = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
            if kept.len() == LATEST {
                kept.pop_front();
            }
            kept.push_back(latest);
        }
    }

    pub fn counts(&self) -> ShadowCounts {
        let n = |i: usize| self.counts[i].load(Ordering::Relaxed);
        ShadowCounts {
            same: n(0),
            differs: n(1),
            failed: n(2),
            skipped: n(3),
        }
    }

    /// The latest runs that did not answer the same, newest last.
    pub fn latest(&self) -> Vec<Latest> {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

/// A canary's judgement: both versions' windows.
#[derive(Debug)]
struct Canary {
    config: CanaryConfig,
    serving: Window,
    candidate: Window,
    started: Instant,
}

/// Both versions' figures over the canary's window.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CanaryFigures {
    pub serving: FiguresView,
    pub candidate: FiguresView,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct FiguresView {
    pub requests: u64,
    pub failures: u64,
    pub failure_rate: f64,
    pub p99_ms: f64,
}

impl From<Figures> for FiguresView {
    fn from(f: Figures) -> FiguresView {
        FiguresView {
            requests: f.requests,
            failures: f.failures,
            failure_rate: f.failure_rate,
            p99_ms: f.p99_us as f64 / 1000.0,
        }
    }
}

impl Canary {
    fn now(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Why the candidate must be rolled back, if it must.
    fn verdict(&mut self) -> Option<String> {
        let now = self.now();
        let c = self.candidate.figures(now);
        let s = self.serving.figures(now);
        let cfg = self.config;
        if c.requests < cfg.min_requests {
            return None;
        }
        if c.failure_rate > s.failure_rate + cfg.max_failure_rate_increase {
            return Some(format!(
                "{} of its {} bookings failed in the last {} s ({:.1} %), against {:.1} % of the serving version's {} (max_failure_rate_increase {})",
                c.failures,
                c.requests,
                cfg.window_seconds,
                c.failure_rate * 100.0,
                s.failure_rate * 100.0,
                s.requests,
                cfg.max_failure_rate_increase
            ));
        }
        // Over fewer bookings a p99 is just the slowest one (a first call, a busy moment).
        let judged = cfg.min_requests.max(P99_MIN_REQUESTS);
        if c.requests >= judged
            && s.requests >= judged
            && c.p99_us as f64 > s.p99_us as f64 * cfg.max_p99_ratio
        {
            return Some(format!(
                "its p99 latency over the last {} s is {:.1} ms, over {} times the serving version's {:.1} ms",
                cfg.window_seconds,
                c.p99_us as f64 / 1000.0,
                cfg.max_p99_ratio,
                s.p99_us as f64 / 1000.0
            ));
        }
        None
    }
}

impl Candidate {
    pub fn new(plugin: Arc<LoadedPlugin>, mode: Mode, canary: CanaryConfig) -> Candidate {
        Candidate {
            plugin,
            mode,
            since: crate::clock::unix_seconds(),
            shadow: Shadow::new(),
            canary: Mutex::new(Canary {
                serving: Window::new(canary.window_seconds),
                candidate: Window::new(canary.window_seconds),
                config: canary,
                started: Instant::now(),
            }),
        }
    }

    fn canary(&self) -> std::sync::MutexGuard<'_, Canary> {
        self.canary.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the canary books `work_order_id`: the same answer on every host and for
    /// every booking of the work order while the canary lasts.
    pub fn books(&self, work_order_id: Option<&str>) -> bool {
        let Mode::Canary { percent } = self.mode else {
            return false;
        };
        share(work_order_id.unwrap_or("")) < u32::from(percent) * 100
    }

    /// Counts a booking one of the two versions ran; for the canary's, the reason to roll
    /// it back when it is now worse than the serving version.
    pub fn observe(&self, by_candidate: bool, failed: bool, latency: Duration) -> Option<String> {
        let mut canary = self.canary();
        let now = canary.now();
        if by_candidate {
            canary.candidate.record(now, failed, latency);
            canary.verdict()
        } else {
            canary.serving.record(now, failed, latency);
            None
        }
    }

    /// Both versions' figures now.
    pub fn figures(&self) -> CanaryFigures {
        let mut canary = self.canary();
        let now = canary.now();
        CanaryFigures {
            serving: canary.serving.figures(now).into(),
            candidate: canary.candidate.figures(now).into(),
        }
    }
}

/// Where a work order falls in 0..10,000: the first bytes of the SHA-256 of its ID.
fn share(work_order_id: &str) -> u32 {
    let digest = Sha256::digest(work_order_id.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % 10_000
}

/// A canary the host rolled back.
#[derive(Debug, Clone, Serialize)]
pub struct RolledBack {
    pub version: String,
    /// Unix seconds.
    pub at: u64,
    pub reason: String,
}

/// The candidates of a host's plugins.
#[derive(Debug, Default)]
pub struct Candidates {
    staged: Mutex<BTreeMap<String, Arc<Candidate>>>,
    rollbacks: Mutex<BTreeMap<String, (u64, RolledBack)>>,
    /// With a shared store: the generation of each plugin's shared candidate this host
    /// followed.
    followed: Mutex<BTreeMap<String, u64>>,
}

impl Candidates {
    /// Whether `generation` of plugin `name`'s shared candidate is new to this host (then
    /// it is noted as followed).
    pub fn new_generation(&self, name: &str, generation: u64) -> bool {
        let mut followed = self.followed.lock().unwrap_or_else(PoisonError::into_inner);
        followed.insert(name.to_string(), generation) != Some(generation)
    }

    /// Plugin `name` has no shared candidate now.
    pub fn forget_generation(&self, name: &str) {
        self.followed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Candidate>>> {
        self.staged.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Plugin `name`'s candidate.
    pub fn get(&self, name: &str) -> Option<Arc<Candidate>> {
        let staged = self.staged();
        // Most plugins have none: no key built, no lookup.
        if staged.is_empty() {
            return None;
        }
        staged.get(name).cloned()
    }

    /// Makes `candidate` plugin `name`'s, in place of any before it.
    pub fn stage(&self, name: &str, candidate: Arc<Candidate>) {
        self.staged().insert(name.to_string(), candidate);
    }

    /// Drops plugin `name`'s candidate; the one dropped.
    pub fn remove(&self, name: &str) -> Option<Arc<Candidate>> {
        self.staged().remove(name)
    }

    /// Rolls back `candidate` if it is still plugin `name`'s: whether it was.
    pub fn roll_back(&self, name: &str, candidate: &Arc<Candidate>, reason: String) -> bool {
        {
            let mut staged = self.staged();
            if !staged.get(name).is_some_and(|c| Arc::ptr_eq(c, candidate)) {
                return false;
            }
            staged.remove(name);
        }
        let mut rollbacks = self
            .rollbacks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = rollbacks.entry(name.to_string()).or_insert((
            0,
            RolledBack {
                version: String::new(),
                at: 0,
                reason: String::new(),
            },
        ));
        entry.0 += 1;
        entry.1 = RolledBack {
            version: candidate.plugin.ident.version.clone(),
            at: crate::clock::unix_seconds(),
            reason,
        };
        true
    }

    /// Every candidate now.
    pub fn all(&self) -> Vec<(String, Arc<Candidate>)> {
        self.staged()
            .iter()
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect()
    }

    /// Canary rollbacks per plugin, and the last of each.
    pub fn rollbacks(&self) -> BTreeMap<String, (u64, RolledBack)> {
        self.rollbacks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canary_share_is_close_to_its_percent_and_stable_per_work_order() {
        let booked = (0..10_000)
            .filter(|i| share(&format!("WO-{i}")) < 1_000)
            .count();
        assert!((900..=1_100).contains(&booked), "{booked}");
        assert_eq!(share("WO-7"), share("WO-7"));
    }

    fn canary(config: CanaryConfig) -> Canary {
        Canary {
            serving: Window::new(config.window_seconds),
            candidate: Window::new(config.window_seconds),
            config,
            started: Instant::now(),
        }
    }

    #[test]
    fn a_canary_that_fails_more_is_judged_once_it_has_enough_bookings() {
        let mut c = canary(CanaryConfig::default());
        let ms = Duration::from_millis(2);
        for _ in 0..100 {
            c.serving.record(0, false, ms);
        }
        // Every fifth booking fails: not judged before ten, judged at ten.
        for i in 0..9 {
            c.candidate.record(0, i % 5 == 4, ms);
            assert_eq!(c.verdict(), None);
        }
        c.candidate.record(0, true, ms);
        let why = c.verdict().unwrap();
        assert!(why.contains("2 of its 10 bookings failed"), "{why}");
        // One failure in ten is within the default increase of 0.1.
        let mut c = canary(CanaryConfig::default());
        for i in 0..10 {
            c.candidate.record(0, i == 0, ms);
        }
        assert_eq!(c.verdict(), None);
    }

    #[test]
    fn a_canary_much_slower_than_the_serving_version_is_judged() {
        let mut c = canary(CanaryConfig::default());
        for i in 0..100 {
            c.serving.record(0, false, Duration::from_millis(2));
            c.candidate.record(0, false, Duration::from_millis(20));
            // Below a hundred bookings each, a p99 is not judged.
            if i < 99 {
                assert_eq!(c.verdict(), None);
            }
        }
        assert!(c.verdict().unwrap().contains("p99"));
    }
}
