//! What the operator says about one plugin (`[plugins.NAME]` in the config): where its
//! component is, the limits it runs under, the configuration values it may read and the
//! origins it may call. Everything not granted here is denied. The runtime enforces these
//! (`runtime/sandbox.rs`, `runtime/outbound.rs`); this file only says what they are.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PluginManifest {
    /// Path of the component (`.wasm`); relative paths are resolved against the config
    /// file's directory.
    pub path: PathBuf,
    /// Resource limits; see [`Limits`] for each default.
    #[serde(flatten)]
    pub limits: Limits,
    /// Values the plugin reads through the `config` host service. Default: none.
    #[serde(
        default,
        skip_serializing_if = "HashMap::is_empty",
        serialize_with = "sorted"
    )]
    pub config: HashMap<String, String>,
    /// Configuration values taken from the environment: key → the name of the environment
    /// variable holding the value (API keys, passwords). Read through the `config` service
    /// like the values above; never logged. An unset variable refuses the plugin. Default:
    /// none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// Grants outbound HTTP (`wasi:http/outgoing-handler`) to the origins listed. Default:
    /// none (a plugin that imports it is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpGrant>,
    /// Grants the key-value store (namespaced to this plugin). Default: false.
    #[serde(default)]
    pub kv: bool,
    /// Warm instance reuse, opt-in: an instance serves up to this many requests of one
    /// route before it is dropped (and is dropped at once after any trap or limit hit).
    /// Faster, but a request can see what an earlier request of the same route left in
    /// the instance's memory; see docs/sandbox.md. Default 0 or 1: a fresh instance for
    /// every request.
    #[serde(default)]
    pub reuse_instances: u32,
    /// Requests (Book Job JSON files, relative to the config file) every new version must
    /// answer without error before it serves: the admission gate runs each through every
    /// kind of route the plugin serves. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<PathBuf>,
    /// Keeps a tape of every booking call that reaches the plugin (request, answer, and
    /// each host call with its result) in the store beside the journal, for as long as
    /// the journal keeps records, so that a candidate version can replay them (see
    /// docs/operations.md, "Promoting safely"). Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub record: bool,
    /// JSON paths of the request left out of tapes (e.g. `$.Account.Contacts`); a replay
    /// sees them absent. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redact: Vec<String>,
    /// Most bytes of host calls one tape keeps; past it the tape is kept incomplete.
    /// Default 256 KiB.
    #[serde(
        default = "default_record_max_bytes",
        skip_serializing_if = "is_default_record_max_bytes"
    )]
    pub record_max_bytes: usize,
    /// Every new version replays this many of the newest recorded bookings before it may
    /// serve (needs `record = true`). Default 0: no replay.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replay_last: u32,
    /// How many of those bookings may differ or fail before the version is refused.
    /// Default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_replay_diff: u64,
    /// When a canary rolls itself back (`[plugins.NAME.canary]`); see [`CanaryConfig`].
    #[serde(default, skip_serializing_if = "CanaryConfig::is_default")]
    pub canary: CanaryConfig,
    /// Keys that are neither the above nor a limit: refused by the config check (serde
    /// cannot deny unknown fields through a flattened struct).
    #[serde(flatten)]
    pub unknown: BTreeMap<String, toml::Value>,
}

/// Values in key order, so that a written configuration reads the same every time.
fn sorted<S: serde::Serializer>(
    values: &HashMap<String, String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(values.iter().collect::<BTreeMap<_, _>>())
}

/// How a plugin's bookings are recorded (`record`, `redact`, `record_max_bytes`), checked.
#[derive(Debug, Clone)]
pub struct RecordPolicy {
    /// Paths of the request left out of its tape.
    pub redact: Vec<crate::jsonpath::JsonPath>,
    /// Most bytes of host calls one tape keeps.
    pub max_bytes: usize,
}

fn default_record_max_bytes() -> usize {
    256 << 10
}

fn is_default_record_max_bytes(n: &usize) -> bool {
    *n == default_record_max_bytes()
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

impl PluginManifest {
    /// How the plugin's bookings are recorded; `None` when they are not.
    pub fn recording(&self) -> Result<Option<RecordPolicy>, String> {
        let redact = self
            .redact
            .iter()
            .map(|p| p.parse())
            .collect::<Result<Vec<_>, String>>()?;
        if self.replay_last > 0 && !self.record {
            return Err("replay_last needs record = true: it replays recorded bookings".into());
        }
        Ok(self.record.then_some(RecordPolicy {
            redact,
            max_bytes: self.record_max_bytes,
        }))
    }

    /// The values the plugin reads through the `config` service: `config`, then `secrets`
    /// resolved from the environment (a secret wins over a plain value of the same key).
    pub fn values(&self, name: &str) -> Result<HashMap<String, String>, String> {
        let mut values = self.config.clone();
        for (key, var) in &self.secrets {
            let value = std::env::var(var).map_err(|_| {
                format!(
                    "plugin {name}: secret {key:?} names environment variable {var}, which is unset or not UTF-8"
                )
            })?;
            values.insert(key.clone(), value);
        }
        Ok(values)
    }
}

/// Per-plugin limits (`[plugins.NAME]` in the config). Every field has a default.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Limits {
    /// Wall-clock budget of one call, instantiation included. Default 500 ms: a booking
    /// rule decides in microseconds, and ServiceMobility waits on us.
    pub timeout_ms: u64,
    /// Maximum linear memory of one instance. Default 64 MiB: a std Rust guest needs about
    /// 2 MiB to book; the rest is headroom for large requests.
    pub max_memory_bytes: u64,
    /// Maximum elements of one table. Default 20,000 (funcref tables of large guests).
    pub max_table_elements: usize,
    /// Bytes a call may write to stdout, stderr and the log service together; the rest
    /// is dropped (and counted), never an error. Default 64 KiB.
    pub max_log_bytes: usize,
    /// Largest answer (encoded JSON) a call may return; larger is `plugin-response-too-large`.
    /// Default 1 MiB: a Book Job Response is a few hundred bytes.
    pub max_response_bytes: usize,
    /// Instruction budget of one call, in wasmtime fuel units (about one per Wasm
    /// instruction); exhausting it is `plugin-out-of-fuel`. Deterministic, unlike the
    /// deadline. Needs `[runtime] fuel = true`. Default: none (the deadline alone bounds
    /// CPU).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_fuel: Option<u64>,
    /// Calls of this plugin that may run at once; more wait up to `queue_timeout_ms`, then
    /// get `plugin-busy`. Default 32: enough to keep two cores busy with a plugin that
    /// waits on I/O, few enough that one tenant cannot take every instance slot.
    pub max_concurrency: u32,
    /// Log entries (log service calls and output lines) a call may leave; the rest are
    /// dropped and counted. Each entry also costs at least `runtime::sandbox::LOG_ENTRY_BYTES` of
    /// `max_log_bytes`, so empty entries are not free. Default 1,000.
    pub max_log_entries: usize,
    /// Host resources (WASI streams and pollables, `wasi:http` header maps, requests,
    /// bodies, …) a call may hold at once; one more traps (`plugin-memory-limit`).
    /// Default 256: a booking that makes its eight outbound calls holds a few dozen.
    pub max_host_resources: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_ms: 500,
            max_memory_bytes: 64 << 20,
            max_table_elements: 20_000,
            max_log_bytes: 64 << 10,
            max_response_bytes: 1 << 20,
            max_fuel: None,
            max_concurrency: 32,
            max_log_entries: 1_000,
            max_host_resources: 256,
        }
    }
}

impl Limits {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// `[plugins.NAME.canary]`: when a canary is worse than the version serving beside it,
/// over a sliding window, and is rolled back by the host.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CanaryConfig {
    /// The window both versions are judged over. Default 60.
    pub window_seconds: u64,
    /// Bookings the canary must have answered in the window before it is judged. Default
    /// 10: a canary failing 20 % of its bookings at a few bookings a second is caught
    /// within the minute.
    pub min_requests: u64,
    /// Rolled back when its share of failed bookings (trap, timeout, limit, bad result,
    /// back end or store failure) exceeds the serving version's by more than this.
    /// Default 0.1.
    pub max_failure_rate_increase: f64,
    /// Rolled back when its p99 latency exceeds the serving version's times this (both with
    /// `min_requests`, and at least 100, bookings in the window: over fewer a p99 is just
    /// the slowest one). Default 3.
    pub max_p99_ratio: f64,
}

impl Default for CanaryConfig {
    fn default() -> Self {
        CanaryConfig {
            window_seconds: 60,
            min_requests: 10,
            max_failure_rate_increase: 0.1,
            max_p99_ratio: 3.0,
        }
    }
}

impl CanaryConfig {
    fn is_default(&self) -> bool {
        *self == CanaryConfig::default()
    }

    /// Refuses thresholds that cannot judge.
    pub fn check(&self) -> Result<(), String> {
        if self.window_seconds == 0 || self.min_requests == 0 {
            return Err("window_seconds and min_requests must be at least 1".into());
        }
        if !(self.max_failure_rate_increase >= 0.0 && self.max_p99_ratio >= 1.0) {
            return Err(
                "max_failure_rate_increase must be at least 0 and max_p99_ratio at least 1".into(),
            );
        }
        Ok(())
    }
}

/// `[plugins.NAME.http]`: the origins a plugin may call and the limits of those calls.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGrant {
    /// Origins, e.g. `https://api.acme.example` or `http://127.0.0.1:9000` (the port
    /// defaults to the scheme's). Paths are not part of an origin.
    pub allow: Vec<String>,
    /// Longest wait to connect, for the first byte, and between bytes. Default 5000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest response body. Default 1 MiB.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// Most requests in one call of the plugin (one booking). Default 8.
    #[serde(default = "default_max_calls")]
    pub max_calls: u32,
}

/// No origin allowed, every limit at its default.
impl Default for HttpGrant {
    fn default() -> Self {
        HttpGrant {
            allow: Vec::new(),
            timeout_ms: default_timeout_ms(),
            max_response_bytes: default_max_response_bytes(),
            max_calls: default_max_calls(),
        }
    }
}

fn default_timeout_ms() -> u64 {
    5000
}
fn default_max_response_bytes() -> u64 {
    1 << 20
}
fn default_max_calls() -> u32 {
    8
}

/// An origin: lower-case scheme and host, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// Parses `scheme://host[:port]` (a trailing `/` is allowed, nothing else after it).
    pub fn parse(text: &str) -> Result<Origin, String> {
        let bad =
            |why: &str| format!("origin {text:?} {why}; write e.g. https://api.example.com:8443");
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("has no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(bad("must be http or https")),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(bad("must be a scheme, a host and an optional port only"));
        }
        let port = |p: &str| p.parse::<u16>().map_err(|_| bad("has an invalid port"));
        let (host, port) = match authority.strip_prefix('[') {
            // An IPv6 literal: `[::1]` or `[::1]:8080`.
            Some(v6) => {
                let (address, after) = v6.split_once(']').ok_or_else(|| bad("is malformed"))?;
                let port = match after.strip_prefix(':') {
                    Some(p) => port(p)?,
                    None if after.is_empty() => default_port,
                    None => return Err(bad("is malformed")),
                };
                (format!("[{address}]"), port)
            }
            None => match authority.split_once(':') {
                Some((host, p)) => (host.to_string(), port(p)?),
                None => (authority.to_string(), default_port),
            },
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        Ok(Origin {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl HttpGrant {
    /// Refuses a grant whose origins do not parse or whose limits are zero.
    pub fn check(&self) -> Result<(), String> {
        for origin in &self.allow {
            Origin::parse(origin)?;
        }
        if self.timeout_ms == 0 || self.max_calls == 0 {
            return Err("timeout_ms and max_calls must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_the_environment_and_win_over_plain_values() {
        let m: PluginManifest = toml::from_str(
            "path = \"p.wasm\"\n[config]\nkey = \"plain\"\nother = \"kept\"\n\
             [secrets]\nkey = \"PATH\"\n",
        )
        .unwrap();
        let values = m.values("p").unwrap();
        assert_eq!(values["key"], std::env::var("PATH").unwrap());
        assert_eq!(values["other"], "kept");
        let missing: PluginManifest =
            toml::from_str("path = \"p.wasm\"\n[secrets]\nk = \"FOLLOWUP_UNSET_FOR_TEST\"\n")
                .unwrap();
        let err = missing.values("p").unwrap_err();
        assert!(err.contains("FOLLOWUP_UNSET_FOR_TEST"), "{err}");
    }

    #[test]
    fn origins_parse_strictly() {
        assert_eq!(
            Origin::parse("HTTPS://Api.Example:8443").unwrap(),
            Origin {
                scheme: "https".into(),
                host: "api.example".into(),
                port: 8443
            }
        );
        assert_eq!(Origin::parse("http://h").unwrap().port, 80);
        for bad in [
            "h:80",
            "ftp://h",
            "http://h/path",
            "http://",
            "http://u@h",
            "http://h:x",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }
}
