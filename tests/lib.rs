//! Test support shared by the integration tests and the benchmarks: the paths of the
//! guests that `tests/build.rs` builds from source, components rewritten, the host as a
//! process, requests over HTTP, and the configurations they share (built with the host's
//! `config::build`).

/// A number from environment variable `name` (a benchmark's or a long test's knob), else
/// `default`.
pub fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Components built from `plugins/*` and `tests/guests/*` for `wasm32-wasip2`.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));

    /// Every guest the host loads; `HTTP_CALLER` is the one it must refuse.
    pub const ALL: &[&str] = &[CAPACITY_BOOKER, REST_FORWARDER, TRAP, LOOPER, ECHO, HOSTILE];
}

/// Rewrites components the way a test needs them, without a toolchain.
pub mod component {
    /// The name of the section in which the SDK stamps the WIT version.
    const VERSION_SECTION: &str = "servicemobility:booking-api-version";

    /// `bytes` with a custom section appended at the top level: the same code under
    /// another hash, i.e. another version.
    pub fn with_custom_section(bytes: &[u8], name: &str, data: &[u8]) -> Vec<u8> {
        let mut payload = leb128(name.len());
        payload.extend_from_slice(name.as_bytes());
        payload.extend_from_slice(data);
        let mut out = bytes.to_vec();
        out.push(0);
        out.extend(leb128(payload.len()));
        out.extend(payload);
        out
    }

    /// `bytes` with the SDK's WIT version stamp replaced by `version` (same length).
    pub fn restamp(bytes: &[u8], from: &str, version: &str) -> Vec<u8> {
        assert_eq!(from.len(), version.len(), "the stamp is patched in place");
        // A custom section's name is followed directly by its data.
        let stamp = format!("{VERSION_SECTION}{from}");
        let at = bytes
            .windows(stamp.len())
            .position(|w| w == stamp.as_bytes())
            .expect("the SDK stamps the WIT version");
        let mut patched = bytes.to_vec();
        let version_at = at + VERSION_SECTION.len();
        patched[version_at..version_at + version.len()].copy_from_slice(version.as_bytes());
        patched
    }

    fn leb128(mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }
}

/// The host as a process of its own, for what only a process shows: its resident memory,
/// its log.
pub mod process {
    use std::io::{BufRead, BufReader};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};

    /// Starts the host binary `exe` (`followup-bench-host`, which serves a config as
    /// `followup serve` does) on `config`, which listens on `127.0.0.1:0`; the child and the
    /// base URL it announced on its first line.
    pub fn start(exe: &str, config: &Path, stderr: Stdio, rust_log: &str) -> (Child, String) {
        let mut child = Command::new(exe)
            .arg(config)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start the host");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("the host's first line");
        let base = line
            .trim()
            .strip_prefix("followup listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        (child, base)
    }
}

/// Talking to a host over HTTP: requests with a valid token, answers read whole, the
/// contract's example payloads.
pub mod http {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::Value;
    use std::path::{Path, PathBuf};

    /// Sends a request and reads the whole answer.
    pub async fn send(request: reqwest::RequestBuilder) -> Answer {
        try_send(request).await.expect("request")
    }

    /// Sends a request and reads the whole answer, or the error when there is none (the
    /// host is gone, the connection was cut).
    pub async fn try_send(request: reqwest::RequestBuilder) -> reqwest::Result<Answer> {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let content_type = header("content-type");
        let plugin = header("x-followup-plugin");
        let replayed = header("x-followup-replayed") == "true";
        let retry_after = header("retry-after").parse().ok();
        let text = response.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            content_type,
            plugin,
            replayed,
            retry_after,
            text,
            json,
        })
    }

    /// A response, read whole.
    #[derive(Debug)]
    pub struct Answer {
        pub status: u16,
        pub content_type: String,
        /// The plugin version that answered (`x-followup-plugin`), if one did.
        pub plugin: String,
        /// Answered from the idempotency journal (`x-followup-replayed: true`).
        pub replayed: bool,
        /// Seconds to wait before trying again (`Retry-After`), when given.
        pub retry_after: Option<u64>,
        pub text: String,
        pub json: Value,
    }

    impl Answer {
        /// The error body's `type`.
        pub fn error_type(&self) -> &str {
            self.json["type"].as_str().unwrap_or("")
        }

        /// The `path` of every `invalidParams` entry.
        pub fn invalid_paths(&self) -> Vec<String> {
            self.json["invalidParams"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| p["path"].as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default()
        }

        /// Asserts a Standard Response Object with this status and type.
        pub fn assert_error(&self, status: u16, kind: &str) {
            assert_eq!(self.status, status, "{}", self.text);
            assert_eq!(self.error_type(), kind, "{}", self.text);
            assert_eq!(self.content_type, "application/json");
            assert_eq!(self.json["status"], status, "{}", self.text);
            assert!(self.json["title"].as_str().is_some_and(|t| !t.is_empty()));
            assert!(self.json["detail"].as_str().is_some_and(|t| !t.is_empty()));
            let keys: Vec<&str> = self
                .json
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            for key in keys {
                assert!(
                    ["type", "title", "status", "detail", "invalidParams"].contains(&key),
                    "unexpected key {key} in {}",
                    self.text
                );
            }
        }
    }

    /// An HS256-shaped JWT expiring `ttl` seconds from now (negative: already expired).
    pub fn token(ttl: i64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"exp":{},"iat":{now},"name":"R Morales","email":"r.morales@example.com"}}"#,
            now + ttl
        ));
        format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode("signature"))
    }

    /// The contract's example payloads (`../shared/spec/examples`).
    pub fn example(name: &str) -> String {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/examples");
        let path: PathBuf = dir.join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    pub fn example_json(name: &str) -> Value {
        serde_json::from_str(&example(name)).unwrap()
    }

    /// Sets `pointer` (a JSON pointer) in `doc` to `value`.
    pub fn with(mut doc: Value, pointer: &str, value: Value) -> String {
        *doc.pointer_mut(pointer)
            .unwrap_or_else(|| panic!("no {pointer}")) = value;
        doc.to_string()
    }
}

/// Configurations the tests and benchmarks share, built with the host's builders.
pub mod configs {
    use super::guests;
    use followup_host::config::{Config, Limits, PluginManifest, RouteConfig};

    /// The example plugin at the clock every test books against: the store granted, now
    /// 2024-06-17 12:00 UTC, local time UTC−4.
    pub fn example_booker() -> PluginManifest {
        PluginManifest::new(guests::CAPACITY_BOOKER)
            .with_kv()
            .with_value("now", "2024-06-17T12:00:00Z")
            .with_value("utc_offset_minutes", "-240")
    }

    /// The hostile guest doing `behaviour` under `limits`.
    pub fn hostile(behaviour: &str, limits: Limits) -> PluginManifest {
        PluginManifest::new(guests::HOSTILE)
            .with_value("behaviour", behaviour)
            .with_limits(limits)
    }

    /// `config` with plugin `name` on the book-job route `/NAME/{0}`.
    pub fn served(config: Config, name: &str, manifest: PluginManifest) -> Config {
        config
            .with_plugin(name, manifest)
            .with_route(RouteConfig::book_job(format!("/{name}/{{0}}"), name))
    }
}
