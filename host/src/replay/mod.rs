//! Recorded bookings and their replay through a candidate version.
//!
//! With `record = true` for a plugin, every booking call that reaches it leaves a
//! [`Tape`] in the store beside the journal (see [`crate::tape`]: what a tape holds, and
//! the world a replayed call is answered from). [`replay`] runs recorded bookings through
//! a candidate in its sandbox, under the plugin's limits, with its host services answered
//! from the tape: the store as the booking saw it, the recorded response to the same
//! outbound request, the recorded config and clock. Nothing is committed and no request
//! leaves the host. Each booking's answer is compared with the recorded one
//! ([`crate::jsonpath::differences`]).

use crate::config::StatusMode;
use crate::contract::RouteKind;
use crate::contract::types::RequestContext;
use crate::error::{ApiError, ErrorKind};
use crate::jsonpath::{self, JsonPath};
use crate::plugin::LoadedPlugin;
use crate::runtime::{PluginRuntime, Services};
use crate::storage::kv::KvSession;
use crate::storage::{SharedStorage, TapeRow};
use crate::tape::{self, Answer, Recorder, Recording, RunStats, Tape, world};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

/// The answer a booking gave, as a tape keeps it.
pub fn answered(outcome: Result<&[u8], &ApiError>) -> Answer {
    match outcome {
        Ok(bytes) => Answer {
            status: 200,
            error_type: None,
            body: serde_json::from_slice(bytes).unwrap_or(Value::Null),
        },
        Err(e) => Answer {
            // The `http` mode's status: it tells the kinds of failure apart.
            status: e.kind.status(StatusMode::Http).as_u16(),
            error_type: Some(e.kind.code().to_string()),
            body: json!({"error_type": e.kind.code(), "detail": e.detail}),
        },
    }
}

/// Host calls one tape keeps when the plugin does not record (a shadow's tape).
pub const DEFAULT_MAX_BYTES: usize = 256 << 10;

/// The tape of a booking call that reached the plugin, without the paths `redact` names.
pub fn tape(
    redact: &[JsonPath],
    plugin: &LoadedPlugin,
    ctx: &RequestContext,
    request: &Value,
    recording: Recording,
    answer: Answer,
) -> Tape {
    let mut request = request.clone();
    for path in redact {
        path.redact(&mut request);
    }
    let at_ms = crate::clock::unix_millis().saturating_sub(recording.stats.wall_us / 1000);
    Tape {
        format: tape::FORMAT,
        route: ctx.route.clone(),
        work_order_id: ctx.work_order_id.clone(),
        key: ctx.idempotency_key.clone(),
        request_id: ctx.request_id.clone(),
        version: plugin.ident.version.clone(),
        at_ms,
        claims: ctx.claims.as_ref().map(tape::Claims::from),
        request,
        answer,
        calls: recording.calls,
        stats: recording.stats,
        incomplete: recording.incomplete,
    }
}

/// A tape of plugin `plugin` as the store keeps it.
pub fn row(plugin: &str, tape: &Tape) -> TapeRow {
    TapeRow {
        plugin: plugin.to_string(),
        at: tape.at_ms / 1000,
        route: tape.route.clone(),
        work_order_id: tape.work_order_id.clone(),
        version: tape.version.clone(),
        outcome: tape
            .answer
            .error_type
            .clone()
            .unwrap_or_else(|| "ok".into()),
        tape: serde_json::to_vec(tape).unwrap_or_default(),
    }
}

/// What a replay compares and allows.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Answer paths left out of the comparison.
    pub ignore: Vec<JsonPath>,
    /// Bookings that may differ or fail before the replay fails.
    pub max_diff: u64,
}

/// The replay's selection and options from a query string (`last`, `since` as seconds or
/// with a unit, `ignore` repeatable, `max_diff`), as the admin API takes them.
pub fn parse_query(query: &str) -> Result<(crate::storage::TapeQuery, Options), String> {
    let mut selection = crate::storage::TapeQuery::default();
    let mut options = Options::default();
    for (key, value) in crate::text::query_pairs(query)? {
        let number = |what: &str| {
            value
                .parse::<u64>()
                .map_err(|_| format!("{what} must be a whole number, not {value:?}"))
        };
        match key {
            "last" => selection.last = Some(number("last")?.min(u64::from(u32::MAX)) as u32),
            "since" => {
                let seconds =
                    crate::clock::parse_seconds(&value).map_err(|e| format!("since {e}"))?;
                selection.since = Some(crate::clock::unix_seconds().saturating_sub(seconds));
            }
            "ignore" => options.ignore.push(value.parse()?),
            "max_diff" => options.max_diff = number("max_diff")?,
            other => return Err(format!("unknown query parameter {other:?}")),
        }
    }
    Ok((selection, options))
}

/// How one booking replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The candidate answered exactly as recorded.
    Same,
    /// It answered otherwise.
    Differs,
    /// It failed: a trap, a timeout, a limit, a bad result.
    Failed,
}

/// One booking's replay.
#[derive(Debug, Clone, Serialize)]
pub struct Booking {
    pub work_order_id: Option<String>,
    pub route: String,
    pub outcome: Outcome,
    /// Where the answers differ: `status`, `error_type`, `detail`, or JSON paths of the
    /// response.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// The candidate's error type, when it answered with an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// The version that answered when it was recorded.
    pub recorded_version: String,
    /// The tape lacks host calls past its budget.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
}

/// A booking whose answers differ, in full.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub work_order_id: Option<String>,
    pub route: String,
    pub recorded: Answer,
    pub candidate: Answer,
    pub paths: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub total: u64,
    pub same: u64,
    pub differs: u64,
    pub failed: u64,
}

/// Percentiles of one measure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Spread {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Spread {
    fn of(mut values: Vec<u64>) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let at = |p: f64| values[((values.len() - 1) as f64 * p).round() as usize];
        Some(Spread {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

/// Time, fuel and peak memory over a set of runs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Costs {
    pub wall_us: Option<Spread>,
    pub fuel: Option<Spread>,
    pub peak_memory_bytes: Option<Spread>,
}

impl Costs {
    fn of(runs: &[RunStats]) -> Costs {
        Costs {
            wall_us: Spread::of(runs.iter().map(|r| r.wall_us).collect()),
            fuel: Spread::of(runs.iter().filter_map(|r| r.fuel).collect()),
            peak_memory_bytes: Spread::of(runs.iter().map(|r| r.peak_memory_bytes).collect()),
        }
    }
}

/// What a replay found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub plugin: String,
    /// The candidate's version.
    pub candidate: String,
    pub summary: Summary,
    /// Whether the bookings that differ or failed are within `max_diff`.
    pub passed: bool,
    pub max_diff: u64,
    pub bookings: Vec<Booking>,
    /// The first bookings that differ, with both answers.
    pub first_differences: Vec<Difference>,
    pub recorded: Costs,
    pub replayed: Costs,
    pub seconds: f64,
}

/// How many differences a report shows in full.
const SHOWN: usize = 5;
/// Most paths named per booking.
const MAX_PATHS: usize = 50;
/// Bookings replayed at once.
const AT_ONCE: usize = 4;

/// Runs each recorded booking of `rows` through `candidate` (see the module doc), reading
/// what the tapes do not hold from `current` without changing it.
pub async fn replay(
    runtime: &PluginRuntime,
    candidate: &LoadedPlugin,
    current: &SharedStorage,
    rows: Vec<TapeRow>,
    options: &Options,
) -> Report {
    let started = Instant::now();
    let at_once = AT_ONCE.min(candidate.limits.max_concurrency.max(1) as usize);
    let results: Vec<(Booking, Option<Difference>, RunStats, Option<RunStats>)> =
        futures_util::stream::iter(rows)
            .map(|row| one(runtime, candidate, current, row, options))
            .buffered(at_once)
            .collect()
            .await;
    let mut summary = Summary::default();
    let (mut bookings, mut first, mut recorded, mut replayed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (booking, difference, was, now) in results {
        summary.total += 1;
        match booking.outcome {
            Outcome::Same => summary.same += 1,
            Outcome::Differs => summary.differs += 1,
            Outcome::Failed => summary.failed += 1,
        }
        if let Some(d) = difference.filter(|_| first.len() < SHOWN) {
            first.push(d);
        }
        recorded.push(was);
        replayed.extend(now);
        bookings.push(booking);
    }
    Report {
        plugin: candidate.ident.name.clone(),
        candidate: candidate.ident.version.clone(),
        passed: summary.differs + summary.failed <= options.max_diff,
        max_diff: options.max_diff,
        summary,
        bookings,
        first_differences: first,
        recorded: Costs::of(&recorded),
        replayed: Costs::of(&replayed),
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Replays one stored tape.
async fn one(
    runtime: &PluginRuntime,
    candidate: &LoadedPlugin,
    current: &SharedStorage,
    row: TapeRow,
    options: &Options,
) -> (Booking, Option<Difference>, RunStats, Option<RunStats>) {
    match serde_json::from_slice::<Tape>(&row.tape) {
        Ok(tape) => replay_tape(runtime, candidate, current, tape, options).await,
        Err(_) => {
            let booking = Booking {
                work_order_id: row.work_order_id,
                route: row.route,
                outcome: Outcome::Failed,
                paths: Vec::new(),
                error_type: Some("unreadable-tape".into()),
                recorded_version: row.version,
                incomplete: false,
            };
            (booking, None, RunStats::default(), None)
        }
    }
}

/// Runs the booking `tape` recorded through `candidate` (see the module doc): how it
/// compares, the difference in full, and the recorded and replayed runs' costs.
pub async fn replay_tape(
    runtime: &PluginRuntime,
    candidate: &LoadedPlugin,
    current: &SharedStorage,
    tape: Tape,
    options: &Options,
) -> (Booking, Option<Difference>, RunStats, Option<RunStats>) {
    let mut booking = Booking {
        work_order_id: tape.work_order_id.clone(),
        route: tape.route.clone(),
        outcome: Outcome::Failed,
        paths: Vec::new(),
        error_type: None,
        recorded_version: tape.version.clone(),
        incomplete: tape.incomplete,
    };
    let ctx = RequestContext {
        work_order_id: tape.work_order_id.clone(),
        route: tape.route.clone(),
        // The recorded request id: a plugin that passes it on sends the same request.
        request_id: tape.request_id.clone(),
        idempotency_key: tape.key.clone(),
        claims: tape.claims.as_ref().map(Into::into),
    };
    let recorder = Recorder::new(0);
    let store: SharedStorage = Arc::new(world::Remembered::new(&tape, current.clone()));
    let services = Services {
        kv: candidate
            .kv
            .then(|| KvSession::new(store, &candidate.ident.name, true)),
        recorder: Some(recorder.clone()),
        replay: Some(Arc::new(world::Replayed::new(&tape, &candidate.config))),
    };
    let answer = {
        // Served like a request: runaways make way for it.
        let _serving = runtime.arrive();
        crate::dispatch::answer(
            runtime,
            candidate,
            RouteKind::BookJob,
            &ctx,
            &tape.request,
            services,
        )
        .await
    };
    let used = recorder.take();
    let ran = used.reached.then_some(used.stats);
    let now = answered(answer.as_ref().map(|(bytes, _)| bytes.as_slice()));
    if let Err(e) = &answer
        && failure(e.kind)
    {
        booking.error_type = Some(e.kind.code().to_string());
        return (booking, None, tape.stats, ran);
    }
    booking.error_type = now.error_type.clone();
    booking.paths = compare(&tape.answer, &now, &options.ignore);
    if booking.paths.is_empty() {
        booking.outcome = Outcome::Same;
        return (booking, None, tape.stats, ran);
    }
    booking.outcome = Outcome::Differs;
    let difference = Difference {
        work_order_id: tape.work_order_id,
        route: tape.route,
        recorded: tape.answer,
        candidate: now,
        paths: booking.paths.clone(),
    };
    (booking, Some(difference), tape.stats, ran)
}

/// Whether an error means the candidate itself failed rather than answered.
pub fn failure(kind: ErrorKind) -> bool {
    use ErrorKind::*;
    matches!(
        kind,
        PluginTimeout
            | PluginMemoryLimit
            | PluginStackOverflow
            | PluginOutOfFuel
            | PluginTrap
            | PluginBadResult
            | PluginResponseTooLarge
            | PluginBusy
            | PluginUnavailable
            | StoreUnavailable
            | Internal
    )
}

/// Where two answers differ: `status` and `error_type` when one booked and the other
/// refused; `error_type` and `detail` between two refusals; the response's JSON paths
/// between two bookings.
fn compare(was: &Answer, now: &Answer, ignore: &[JsonPath]) -> Vec<String> {
    match (&was.error_type, &now.error_type) {
        (None, None) => jsonpath::differences(&was.body, &now.body, ignore, MAX_PATHS),
        (Some(a), Some(b)) => {
            let mut out = Vec::new();
            if a != b {
                out.push("error_type".to_string());
            }
            if was.body.get("detail") != now.body.get("detail") {
                out.push("detail".to_string());
            }
            out
        }
        _ => vec!["status".to_string(), "error_type".to_string()],
    }
}

impl Report {
    /// The report for a person: the totals, the first differences in full, and the costs.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let s = &self.summary;
        let _ = writeln!(
            out,
            "replayed {} recorded bookings of {} through {} in {:.2} s: {} same, {} differ, {} failed",
            s.total, self.plugin, self.candidate, self.seconds, s.same, s.differs, s.failed
        );
        for b in self.bookings.iter().filter(|b| b.outcome != Outcome::Same) {
            let _ = writeln!(
                out,
                "  {:<7} {} {}{}{}",
                format!("{:?}", b.outcome).to_lowercase(),
                b.route,
                b.work_order_id.as_deref().unwrap_or("-"),
                if b.paths.is_empty() {
                    String::new()
                } else {
                    format!(" at {}", b.paths.join(", "))
                },
                b.error_type
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default(),
            );
        }
        for d in &self.first_differences {
            let _ = writeln!(
                out,
                "\n{} {}:\n  recorded:  {}\n  candidate: {}",
                d.route,
                d.work_order_id.as_deref().unwrap_or("-"),
                serde_json::to_string(&d.recorded).unwrap_or_default(),
                serde_json::to_string(&d.candidate).unwrap_or_default(),
            );
        }
        let _ = writeln!(out, "\n{:<20} {:>28} {:>28}", "", "recorded", "candidate");
        let row = |name: &str, a: &Option<Spread>, b: &Option<Spread>| {
            let show = |s: &Option<Spread>| {
                s.map_or("-".to_string(), |s| {
                    format!("p50 {} p99 {} max {}", s.p50, s.p99, s.max)
                })
            };
            format!("{name:<20} {:>28} {:>28}\n", show(a), show(b))
        };
        out.push_str(&row(
            "wall (µs)",
            &self.recorded.wall_us,
            &self.replayed.wall_us,
        ));
        out.push_str(&row("fuel", &self.recorded.fuel, &self.replayed.fuel));
        out.push_str(&row(
            "peak memory (bytes)",
            &self.recorded.peak_memory_bytes,
            &self.replayed.peak_memory_bytes,
        ));
        let _ = writeln!(
            out,
            "\n{} ({} differ or failed; at most {} allowed)",
            if self.passed { "PASSED" } else { "FAILED" },
            s.differs + s.failed,
            self.max_diff
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: Value) -> Answer {
        Answer {
            status: 200,
            error_type: None,
            body,
        }
    }

    fn refused(kind: &str, detail: &str) -> Answer {
        Answer {
            status: 409,
            error_type: Some(kind.into()),
            body: json!({"error_type": kind, "detail": detail}),
        }
    }

    #[test]
    fn answers_compare_by_what_changed() {
        let a = ok(json!({"OrderNum": "FU-1", "Parts": []}));
        assert!(compare(&a, &a, &[]).is_empty());
        let b = ok(json!({"OrderNum": "FU-2", "Parts": []}));
        assert_eq!(compare(&a, &b, &[]), ["$.OrderNum"]);
        assert!(compare(&a, &b, &["$.OrderNum".parse().unwrap()]).is_empty());
        let no = refused("slot-unavailable", "Saturday mornings are closed");
        assert_eq!(compare(&a, &no, &[]), ["status", "error_type"]);
        assert_eq!(
            compare(&no, &refused("slot-unavailable", "full"), &[]),
            ["detail"]
        );
    }

    #[test]
    fn the_admin_query_says_what_to_replay() {
        let (q, o) = parse_query("last=200&ignore=%24.OrderNum&ignore=$.Parts&max_diff=3").unwrap();
        assert_eq!(q.last, Some(200));
        assert_eq!(o.max_diff, 3);
        assert_eq!(o.ignore.len(), 2);
        assert_eq!(o.ignore[0].to_string(), "$.OrderNum");
        let (q, _) = parse_query("since=24h").unwrap();
        let since = q.since.unwrap();
        assert!(crate::clock::unix_seconds() - since >= 86_400);
        assert!(parse_query("last=x").unwrap_err().contains("last"));
        assert!(parse_query("ignore=Parts").is_err());
        assert!(parse_query("lst=1").unwrap_err().contains("lst"));
    }

    #[test]
    fn spreads_are_nearest_rank_percentiles() {
        let s = Spread::of((1..=100).collect()).unwrap();
        assert_eq!((s.p50, s.p90, s.p99, s.max), (51, 90, 99, 100));
        assert_eq!(Spread::of(Vec::new()), None);
    }
}
