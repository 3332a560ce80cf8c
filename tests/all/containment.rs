//! What a plugin makes the *host* hold, write or spend is charged to its own call and
//! bounded: its answer, its refusals, its log, the resources it creates through WASI and
//! `wasi:http`, its key-value listings and its refused outbound URLs.
//!
//! The behaviour tests run in this process; the memory tests run the host as a process of
//! its own (`followup-bench-host`, which serves a config exactly as `followup serve` does)
//! and measure its peak resident memory during one call (`VmHWM`, reset before the call
//! through `/proc/PID/clear_refs`), held under the plugin's own memory plus the host's
//! documented ceiling per call ([`HOST_CEILING_BYTES`], `docs/sandbox.md`).

use crate::support::Answer;
use crate::support::{Server, example, temp_dir, token};
use followup_host::config::{Config, HttpGrant, Limits, PluginManifest, RouteConfig, StatusMode};
use followup_tests::guests;
use std::process::Child;
use std::time::{Duration, Instant};

/// What one call may make the host hold beyond the plugin's own linear memory, with the
/// default limits (`docs/sandbox.md`, "What a call costs the host").
const HOST_CEILING_BYTES: u64 = 24 << 20;

/// Every amplifying behaviour of the amplifier guest, with the kind of route it is called on.
const BOOK: &[&str] = &[
    "many-parts",
    "long-refusal",
    "many-params",
    "forge-log",
    "empty-logs",
    "header-maps",
    "many-fields",
    "body-buffers",
    "kv-lists",
    "refused-urls",
];
const SEARCH: &[&str] = &["huge-extensions", "huge-start"];

/// Memory of each amplifier plugin (the default), and the deadline of those that run into it.
const AMP_MEMORY: u64 = 64 << 20;
const AMP_TIMEOUT_MS: u64 = 500;
/// The deadline of plugins that build a huge answer or refusal: tens of milliseconds of CPU,
/// longer when other tests share the cores; their deadline is not what is under test.
const HEAVY_TIMEOUT_MS: u64 = 5_000;

/// The amplifier guest as plugin `name`, granted the store and outbound HTTP to a port
/// nothing listens on (the guest imports both), doing `behaviour`.
fn amplifier(behaviour: &str, limits: Limits) -> PluginManifest {
    PluginManifest::new(guests::AMPLIFIER)
        .with_kv()
        .with_http(HttpGrant::allowing(["http://127.0.0.1:9"]))
        .with_limits(limits)
        .with_value("behaviour", behaviour)
}

/// A plugin `amp-NAME` per behaviour, on `/amp/NAME/{0}` or `/amp-search/NAME`, after what
/// `config` has.
fn amplifiers(mut config: Config) -> Config {
    for behaviour in BOOK.iter().chain(SEARCH) {
        // Building 1.2 million parts takes the guest tens of milliseconds of CPU, and longer
        // when other tests share the cores; its deadline is not what is under test.
        let timeout_ms = if *behaviour == "many-parts" {
            HEAVY_TIMEOUT_MS
        } else {
            AMP_TIMEOUT_MS
        };
        let limits = Limits {
            timeout_ms,
            max_memory_bytes: AMP_MEMORY,
            ..Limits::default()
        };
        let name = format!("amp-{behaviour}");
        let route = if SEARCH.contains(behaviour) {
            RouteConfig::appointment_search(format!("/amp-search/{behaviour}"), &name)
        } else {
            RouteConfig::book_job(format!("/amp/{behaviour}/{{0}}"), &name)
        };
        config = config
            .with_plugin(&name, amplifier(behaviour, limits))
            .with_route(route);
    }
    config
}

fn path_of(behaviour: &str) -> String {
    if SEARCH.contains(&behaviour) {
        format!("/amp-search/{behaviour}")
    } else {
        format!("/amp/{behaviour}/WO-1")
    }
}

fn body_of(behaviour: &str) -> String {
    if SEARCH.contains(&behaviour) {
        example("appointment-search.request.json")
    } else {
        example("book-job.minimal.json")
    }
}

/// Asserts the error body's status and type, and that its `detail` says `says`.
fn assert_refused(answer: &Answer, status: u16, kind: &str, says: &str) {
    answer.assert_error(status, kind);
    let detail = answer.json["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(says), "{}", answer.text);
}

/// A config answering with precise HTTP statuses.
fn http_statuses() -> Config {
    Config {
        status_mode: StatusMode::Http,
        ..Config::default()
    }
}

async fn in_process() -> Server {
    Server::of(amplifiers(http_statuses())).await
}

#[tokio::test]
async fn a_huge_answer_is_refused_while_it_is_lifted_not_after_it_was_built() {
    let server = in_process().await;
    let started = Instant::now();
    let answer = server
        .post(&path_of("many-parts"), &body_of("many-parts"))
        .await;
    answer.assert_error(502, "plugin-response-too-large");
    let detail = answer.json["detail"].as_str().unwrap();
    assert!(detail.contains("over its max_response_bytes"), "{detail}");
    assert!(detail.contains("lifting stopped"), "{detail}");
    assert!(
        started.elapsed() < Duration::from_millis(HEAVY_TIMEOUT_MS),
        "answered after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn refusals_are_cut_to_their_bounds_and_to_max_response_bytes() {
    let server = in_process().await;
    let long = server
        .post(&path_of("long-refusal"), &body_of("long-refusal"))
        .await;
    long.assert_error(500, "booking-failed");
    assert!(long.text.len() < 2 << 10, "{} bytes", long.text.len());
    assert!(
        long.json["detail"]
            .as_str()
            .unwrap()
            .contains("(cut from 2000000 bytes)"),
        "{}",
        long.text
    );

    let many = server
        .post(&path_of("many-params"), &body_of("many-params"))
        .await;
    many.assert_error(422, "invalid-request");
    let params = many.json["invalidParams"].as_array().unwrap();
    assert_eq!(params.len(), 100, "{}", &many.text[..200]);
    assert!(many.text.len() < 64 << 10, "{} bytes", many.text.len());
    assert!(
        many.json["detail"]
            .as_str()
            .unwrap()
            .contains("10000 invalid parameters, the first 100 shown"),
        "{}",
        many.json["detail"]
    );
}

#[tokio::test]
async fn a_refusal_too_large_to_lift_is_refused_as_too_large() {
    let limits = Limits {
        timeout_ms: HEAVY_TIMEOUT_MS,
        ..Limits::default()
    };
    let flood = amplifier("many-params", limits).with_value("count", "100000");
    let config = http_statuses()
        .with_plugin("flood", flood)
        .with_route(RouteConfig::book_job("/flood/{0}", "flood"));
    let server = Server::of(config).await;
    let answer = server
        .post("/flood/WO-1", &example("book-job.minimal.json"))
        .await;
    answer.assert_error(502, "plugin-response-too-large");
    assert!(answer.text.len() < 1 << 10, "{} bytes", answer.text.len());
}

#[tokio::test]
async fn a_refusal_is_held_to_a_small_max_response_bytes() {
    let limits = Limits {
        max_response_bytes: 4096,
        ..Limits::default()
    };
    let small = amplifier("many-params", limits).with_value("count", "60");
    let config = http_statuses()
        .with_plugin("small", small)
        .with_route(RouteConfig::book_job("/small/{0}", "small"));
    let server = Server::of(config).await;
    let answer = server
        .post("/small/WO-1", &example("book-job.minimal.json"))
        .await;
    answer.assert_error(422, "invalid-request");
    assert!(answer.text.len() <= 4096, "{} bytes", answer.text.len());
    assert!(
        answer.json["detail"]
            .as_str()
            .unwrap()
            .contains("more invalid parameters left out"),
        "{}",
        answer.text
    );
}

#[tokio::test]
async fn an_invalid_search_answer_is_not_echoed_whole() {
    let server = in_process().await;
    for behaviour in SEARCH {
        let answer = server.post(&path_of(behaviour), &body_of(behaviour)).await;
        answer.assert_error(502, "plugin-bad-result");
        assert!(
            answer.text.len() < 2 << 10,
            "{behaviour}: {} bytes",
            answer.text.len()
        );
        assert!(
            answer.json["detail"]
                .as_str()
                .unwrap()
                .contains("(2000000 bytes)"),
            "{behaviour}: {}",
            answer.text
        );
    }
}

#[tokio::test]
async fn resources_created_through_wasi_http_are_capped_per_call() {
    let server = in_process().await;
    // A header map over its 16 KiB...
    let answer = server
        .post(&path_of("header-maps"), &body_of("header-maps"))
        .await;
    assert_refused(
        &answer,
        502,
        "plugin-memory-limit",
        "header map over 16384 bytes",
    );
    // ...and thousands of small ones kept alive.
    let answer = server
        .post(&path_of("many-fields"), &body_of("many-fields"))
        .await;
    assert_refused(
        &answer,
        502,
        "plugin-memory-limit",
        "max_host_resources of 256",
    );
    // Bodies written ahead of a request that never leaves share one budget per call: at
    // most 1 MiB in all, never 1 MiB per body.
    let answer = server
        .post(&path_of("body-buffers"), &body_of("body-buffers"))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let order = answer.json["OrderNum"].as_str().unwrap();
    let buffered: usize = order.rsplit('-').next().unwrap().parse().unwrap();
    assert!(buffered <= 1 << 20, "{order}");
    assert!(buffered > 0, "{order}");
}

#[tokio::test]
async fn repeated_key_value_listings_are_held_once_and_bounded() {
    let server = in_process().await;
    let seed = server
        .post("/amp/kv-lists/SEED", &body_of("kv-lists"))
        .await;
    assert_eq!(seed.status, 200, "{}", seed.text);
    let answer = server
        .post(&path_of("kv-lists"), &body_of("kv-lists"))
        .await;
    // The guest reports what stopped it: the read budget, well inside its deadline.
    answer.assert_error(500, "booking-failed");
    let detail = answer.json["detail"].as_str().unwrap();
    assert!(detail.contains("TooLarge"), "{detail}");
    assert!(detail.contains("bytes of keys and values read"), "{detail}");
}

#[tokio::test]
async fn refused_outbound_urls_are_logged_cut() {
    let host = Host::start("containment-urls");
    let status = host
        .post(&path_of("refused-urls"), &body_of("refused-urls"))
        .await;
    assert_eq!(status, 500);
    let refusals = host.wait_for_log(|log| {
        log.lines()
            .filter(|l| l.contains("outbound request refused"))
            .count()
            == 8
    });
    for line in refusals
        .lines()
        .filter(|l| l.contains("outbound request refused"))
    {
        // Eight refusals of 60 KB URLs used to log 471 KiB.
        assert!(
            line.len() < 2 << 10,
            "{} bytes: {}",
            line.len(),
            &line[..300]
        );
        assert!(line.contains("cut from 60"), "{line}");
    }
}

/// The host as a process of its own, serving the amplifier plugins.
struct Host {
    child: Child,
    base: String,
    log: std::path::PathBuf,
    client: reqwest::Client,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Host {
    fn start(label: &str) -> Host {
        let dir = temp_dir(label);
        let mut config = amplifiers(Config::default())
            .with_plugin("echo", PluginManifest::new(guests::ECHO))
            .with_route(RouteConfig::book_job("/echo/{0}", "echo"));
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.cache_dir = std::env::temp_dir().join("followup-tests-cache");
        config.versions_dir = dir.join("versions");
        config.store.path = dir.join("followup.db");
        let text = config.checked().unwrap().to_toml().unwrap();
        let config = dir.join("followup.toml");
        std::fs::write(&config, text).unwrap();
        let log = dir.join("host.log");
        let (child, base) = followup_tests::process::start(
            env!("CARGO_BIN_EXE_followup-bench-host"),
            &config,
            std::fs::File::create(&log).unwrap().into(),
            "info,wasmtime=warn,cranelift=warn",
        );
        Host {
            child,
            base,
            log,
            client: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: &str) -> u16 {
        self.client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("x-access-token", token(3600))
            .body(body.to_string())
            .send()
            .await
            .expect("request")
            .status()
            .as_u16()
    }

    fn status(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key}"));
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap();
        kib << 10
    }

    /// How far the host's resident memory rose above what it was while `path` was served.
    async fn peak_growth(&self, path: &str, body: &str) -> (u64, u16) {
        // Resets VmHWM to the current resident size (Linux 4.0 and later).
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5").unwrap();
        let before = self.status("VmRSS:");
        let status = self.post(path, body).await;
        (self.status("VmHWM:").saturating_sub(before), status)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// The log once `done` says it holds what a call writes as it ends (at most a second).
    fn wait_for_log(&self, done: impl Fn(&str) -> bool) -> String {
        let mut log = self.log();
        for _ in 0..50 {
            if done(&log) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            log = self.log();
        }
        log
    }
}

/// Each behaviour in a host of its own, warmed up by an ordinary booking: memory an earlier
/// call left with the allocator cannot hide what this one takes.
#[tokio::test]
async fn no_call_makes_the_host_hold_more_than_its_ceiling() {
    let booking = example("book-job.minimal.json");
    let mut report = Vec::new();
    for behaviour in BOOK.iter().chain(SEARCH) {
        let host = Host::start("containment-rss");
        if *behaviour == "kv-lists" {
            assert_eq!(host.post("/amp/kv-lists/SEED", &booking).await, 200);
        }
        assert_eq!(host.post("/echo/WO-1", &booking).await, 200);
        let (growth, status) = host
            .peak_growth(&path_of(behaviour), &body_of(behaviour))
            .await;
        report.push(format!("{behaviour}: {status} +{} KiB", growth >> 10));
        assert!(
            growth <= AMP_MEMORY + HOST_CEILING_BYTES,
            "{behaviour} made the host grow by {} MiB: {report:?}",
            growth >> 20
        );
    }
    eprintln!("peak growth per call: {report:?}");
}

#[tokio::test]
async fn a_plugin_cannot_forge_a_host_log_line() {
    let host = Host::start("containment-log");
    let status = host
        .post(&path_of("forge-log"), &body_of("forge-log"))
        .await;
    assert_eq!(status, 500);
    let log = host.wait_for_log(|log| log.contains("FORGED-REFUSAL") && log.contains("FORGED-LOG"));
    assert!(log.contains("FORGED-LOG"), "{log}");
    assert!(log.contains("FORGED-REFUSAL"), "{log}");
    for line in log.lines() {
        assert!(
            !line.starts_with("1999-01-01"),
            "a plugin's text started a record of its own: {line:?}"
        );
        if line.contains("FORGED") {
            assert!(line.contains("\\n1999-01-01"), "{line:?}");
        }
        assert!(!line.contains('\u{1b}'), "{line:?}");
    }
}
