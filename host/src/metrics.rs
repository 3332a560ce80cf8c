//! What the host counts, and its Prometheus text rendering: requests by route, plugin
//! version and outcome with a latency histogram, plugin failures by error type, swaps and
//! rejected candidates by trigger.
//!
//! One mutex per family: a request takes one uncontended lock and one lookup by borrowed
//! strings (no allocation once its series exists), which is noise beside a plugin call.

use crate::plugin::PluginIdent;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Upper bounds of the latency histogram's buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The route label of requests that matched no route.
pub const NO_ROUTE: &str = "(none)";

#[derive(Debug, Default)]
pub struct Metrics {
    failures: Mutex<BTreeMap<(String, String, &'static str), u64>>,
    /// route → plugin version ("" when no plugin was reached) → series.
    requests: Mutex<HashMap<String, HashMap<String, Series>>>,
    swaps: Mutex<BTreeMap<(String, &'static str), u64>>,
    rejected: Mutex<BTreeMap<(String, &'static str), u64>>,
}

/// Requests of one route answered by one plugin version.
#[derive(Debug, Default, Clone)]
struct Series {
    plugin: String,
    outcomes: BTreeMap<&'static str, u64>,
    /// Counts per bucket of [`LATENCY_BUCKETS`] (not cumulative), then one for `+Inf`.
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    count: u64,
    seconds: f64,
}

/// One counter: plugin name, version, error type, count.
pub type FailureCount = (String, String, &'static str, u64);

pub use crate::plugin::history::Trigger;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Metrics {
    /// Counts one failure of `plugin` with error type `kind`.
    pub fn count_failure(&self, plugin: &PluginIdent, kind: &'static str) {
        *lock(&self.failures)
            .entry((plugin.name.clone(), plugin.version.clone(), kind))
            .or_default() += 1;
    }

    /// Records one answered request: its route ([`NO_ROUTE`] if none matched), the plugin
    /// version that served it, its outcome (`ok` or the error type) and how long it took.
    pub fn observe(
        &self,
        route: &str,
        plugin: Option<&PluginIdent>,
        outcome: &'static str,
        took: Duration,
    ) {
        let version = plugin.map_or("", |p| p.version.as_str());
        let mut requests = lock(&self.requests);
        let by_version = match requests.get_mut(route) {
            Some(v) => v,
            None => requests.entry(route.to_string()).or_default(),
        };
        let series = match by_version.get_mut(version) {
            Some(s) => s,
            None => by_version
                .entry(version.to_string())
                .or_insert_with(|| Series {
                    plugin: plugin.map(|p| p.name.clone()).unwrap_or_default(),
                    ..Series::default()
                }),
        };
        let seconds = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(LATENCY_BUCKETS.len());
        series.buckets[bucket] += 1;
        series.count += 1;
        series.seconds += seconds;
        *series.outcomes.entry(outcome).or_default() += 1;
    }

    /// Counts a new version of `plugin` set serving by `trigger`.
    pub fn count_swap(&self, plugin: &str, trigger: Trigger) {
        *lock(&self.swaps)
            .entry((plugin.to_string(), trigger.label()))
            .or_default() += 1;
    }

    /// Counts a candidate version of `plugin` refused by the admission gate.
    pub fn count_rejected(&self, plugin: &str, trigger: Trigger) {
        *lock(&self.rejected)
            .entry((plugin.to_string(), trigger.label()))
            .or_default() += 1;
    }

    /// Every failure counter, ordered by plugin, version and type.
    pub fn failures(&self) -> Vec<FailureCount> {
        lock(&self.failures)
            .iter()
            .map(|((name, version, kind), n)| (name.clone(), version.clone(), *kind, *n))
            .collect()
    }

    /// The count for one plugin name and error type, over all its versions.
    pub fn failure_count(&self, plugin: &str, kind: &str) -> u64 {
        self.failures()
            .iter()
            .filter(|(name, _, k, _)| name == plugin && *k == kind)
            .map(|(.., n)| n)
            .sum()
    }

    /// Swaps of `plugin` by `trigger`.
    pub fn swap_count(&self, plugin: &str, trigger: Trigger) -> u64 {
        lock(&self.swaps)
            .get(&(plugin.to_string(), trigger.label()))
            .copied()
            .unwrap_or(0)
    }

    /// Refused candidates of `plugin` by `trigger`.
    pub fn rejected_count(&self, plugin: &str, trigger: Trigger) -> u64 {
        lock(&self.rejected)
            .get(&(plugin.to_string(), trigger.label()))
            .copied()
            .unwrap_or(0)
    }

    /// Appends every family in the Prometheus text format (0.0.4) to `out`.
    pub fn render(&self, out: &mut String) {
        family(
            out,
            "followup_requests_total",
            "counter",
            "Answered requests by route, plugin version and outcome (ok or the error type).",
        );
        let requests = lock(&self.requests).clone();
        let mut series: Vec<(&String, &String, &Series)> = requests
            .iter()
            .flat_map(|(route, by_version)| by_version.iter().map(move |(v, s)| (route, v, s)))
            .collect();
        series.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for (route, version, s) in &series {
            for (outcome, n) in &s.outcomes {
                let _ = writeln!(
                    out,
                    "followup_requests_total{{route=\"{}\",plugin=\"{}\",version=\"{}\",outcome=\"{outcome}\"}} {n}",
                    escape(route),
                    escape(&s.plugin),
                    escape(version)
                );
            }
        }
        family(
            out,
            "followup_request_duration_seconds",
            "histogram",
            "Time from the request's arrival to its answer, by route and plugin version.",
        );
        for (route, version, s) in &series {
            let labels = format!(
                "route=\"{}\",plugin=\"{}\",version=\"{}\"",
                escape(route),
                escape(&s.plugin),
                escape(version)
            );
            let mut cumulative = 0;
            for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
                cumulative += s.buckets[i];
                let _ = writeln!(
                    out,
                    "followup_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "followup_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}\n\
                 followup_request_duration_seconds_sum{{{labels}}} {}\n\
                 followup_request_duration_seconds_count{{{labels}}} {}",
                s.count, s.seconds, s.count
            );
        }
        family(
            out,
            "followup_plugin_failures_total",
            "counter",
            "Failed plugin calls by plugin version and error type.",
        );
        for (name, version, kind, n) in self.failures() {
            let _ = writeln!(
                out,
                "followup_plugin_failures_total{{plugin=\"{}\",version=\"{}\",type=\"{kind}\"}} {n}",
                escape(&name),
                escape(&version)
            );
        }
        for (name, help, map) in [
            (
                "followup_swaps_total",
                "New plugin versions set serving, by trigger (api, rollback, file).",
                &self.swaps,
            ),
            (
                "followup_rejected_candidates_total",
                "Candidate plugin versions refused by the admission gate, by trigger.",
                &self.rejected,
            ),
        ] {
            family(out, name, "counter", help);
            for ((plugin, trigger), n) in lock(map).iter() {
                let _ = writeln!(
                    out,
                    "{name}{{plugin=\"{}\",trigger=\"{trigger}\"}} {n}",
                    escape(plugin)
                );
            }
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, quote, newline), as the text format requires.
pub fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains(['\\', '"', '\n']) {
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        value.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(version: &str) -> PluginIdent {
        PluginIdent {
            name: "booker".into(),
            version: version.into(),
        }
    }

    #[test]
    fn requests_render_as_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        let v1 = ident("sha256:aaa");
        m.observe("followup", Some(&v1), "ok", Duration::from_micros(300));
        m.observe("followup", Some(&v1), "ok", Duration::from_millis(3));
        m.observe(
            "followup",
            Some(&v1),
            "plugin-timeout",
            Duration::from_secs(9),
        );
        m.observe(NO_ROUTE, None, "not-found", Duration::from_micros(10));
        let mut text = String::new();
        m.render(&mut text);
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
                .to_string()
        };
        let labels = "route=\"followup\",plugin=\"booker\",version=\"sha256:aaa\"";
        assert!(
            line(&format!(
                "followup_requests_total{{{labels},outcome=\"ok\"}}"
            ))
            .ends_with(" 2")
        );
        assert!(
            line(&format!(
                "followup_requests_total{{{labels},outcome=\"plugin-timeout\"}}"
            ))
            .ends_with(" 1")
        );
        assert!(
            line("followup_requests_total{route=\"(none)\",plugin=\"\",version=\"\",outcome=\"not-found\"}")
                .ends_with(" 1")
        );
        let bucket = |le: &str| {
            line(&format!(
                "followup_request_duration_seconds_bucket{{{labels},le=\"{le}\"}}"
            ))
        };
        assert!(bucket("0.0005").ends_with(" 1"));
        assert!(bucket("0.005").ends_with(" 2"));
        assert!(bucket("5").ends_with(" 2"));
        assert!(bucket("+Inf").ends_with(" 3"));
        assert!(
            line(&format!(
                "followup_request_duration_seconds_count{{{labels}}}"
            ))
            .ends_with(" 3")
        );
    }

    #[test]
    fn swaps_and_rejections_are_counted_by_trigger() {
        let m = Metrics::default();
        m.count_swap("booker", Trigger::File);
        m.count_swap("booker", Trigger::File);
        m.count_rejected("booker", Trigger::Api);
        assert_eq!(m.swap_count("booker", Trigger::File), 2);
        assert_eq!(m.rejected_count("booker", Trigger::Api), 1);
        let mut text = String::new();
        m.render(&mut text);
        assert!(text.contains("followup_swaps_total{plugin=\"booker\",trigger=\"file\"} 2\n"));
        assert!(
            text.contains(
                "followup_rejected_candidates_total{plugin=\"booker\",trigger=\"api\"} 1\n"
            )
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape("plain"), "plain");
    }
}
