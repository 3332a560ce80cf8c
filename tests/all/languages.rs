//! The same rules in Rust, JavaScript and Python: the example plugins, built from source by
//! `tests/build.rs`, give the same answers on every example payload and on the cases each
//! rule refuses, through the same HTTP path.

use crate::support::{Answer, Server, example, example_json, with};
use followup_host::config::{Config, Limits, PluginManifest, RouteConfig};
use followup_tests::guests;
use serde_json::{Value, json};
use std::time::Instant;

/// The examples in other languages: (route prefix, component).
const PORTS: &[(&str, &str)] = &[
    ("py", guests::CAPACITY_BOOKER_PY),
    ("js", guests::CAPACITY_BOOKER_JS),
];

/// The example's rules in the component at `path`, at the tests' clock. Interpreted rules
/// need more time and memory than compiled ones.
fn booker(path: &str) -> PluginManifest {
    PluginManifest::new(path)
        .with_kv()
        .with_limits(Limits {
            timeout_ms: 5000,
            max_memory_bytes: 128 << 20,
            ..Limits::default()
        })
        .with_value("now", "2024-06-17T12:00:00Z")
        .with_value("utc_offset_minutes", "-240")
}

fn config() -> Config {
    let mut config = Config::default();
    for (prefix, path) in [("rust", guests::CAPACITY_BOOKER)].iter().chain(PORTS) {
        let booker = || booker(path);
        let (booker_name, keyed_name) = (format!("booker-{prefix}"), format!("keyed-{prefix}"));
        config = config
            .with_plugin(
                &booker_name,
                booker()
                    .with_value("daily_capacity", "2")
                    .with_value("closed_dates", "2024-06-19"),
            )
            .with_route(
                RouteConfig::book_job(format!("/{prefix}/book/{{0}}"), &booker_name).named("book"),
            )
            .with_route(
                RouteConfig::appointment_search(format!("/{prefix}/search"), &booker_name)
                    .named("search"),
            )
            .with_plugin(&keyed_name, booker().with_value("order_numbers", " key "))
            .with_route(
                RouteConfig::book_job(format!("/{prefix}/keyed/{{0}}"), &keyed_name).named("keyed"),
            );
    }
    config
}

/// What must be equal across languages: the status and the body, with the error's
/// `detail` cut before the plugin's name (which names the component) and request id.
fn comparable(answer: &Answer) -> Value {
    let mut body = answer.json.clone();
    if let Some(detail) = body.get("detail").and_then(Value::as_str) {
        let detail = detail
            .split(" (request ")
            .next()
            .unwrap_or("")
            .split("plugin booker-")
            .next()
            .unwrap_or("")
            .to_string();
        body["detail"] = Value::String(detail);
    }
    json!({ "status": answer.status, "body": body })
}

/// (name, path after the language prefix, body): every example payload, then the cases the
/// rules refuse.
fn cases() -> Vec<(&'static str, String, String)> {
    let full = example_json("book-job.full.json");
    let minimal = example_json("book-job.minimal.json");
    let slot = |start: &str, end: &str| {
        with(
            minimal.clone(),
            "/TimeConstraints",
            json!([{ "Period": { "Start": start, "End": end } }]),
        )
    };
    vec![
        ("full example", "/book/WO-1".into(), example("book-job.full.json")),
        ("minimal example", "/book/WO-2".into(), example("book-job.minimal.json")),
        ("search example", "/search".into(), example("appointment-search.request.json")),
        ("Book Job as a search", "/search".into(), example("book-job.full.json")),
        // The day's capacity of 2 is taken by the two bookings above.
        ("full day", "/book/WO-3".into(), slot("2024-06-18T14:00:00Z", "2024-06-18T16:00:00Z")),
        ("past slot", "/book/WO-4".into(), slot("2024-06-17T08:00:00Z", "2024-06-17T10:00:00Z")),
        ("closed date", "/book/WO-5".into(), slot("2024-06-19T13:00:00Z", "2024-06-19T17:00:00Z")),
        ("Saturday", "/book/WO-6".into(), slot("2024-06-22T13:00:00Z", "2024-06-22T17:00:00Z")),
        ("out of hours", "/book/WO-7".into(), slot("2024-06-20T01:00:00Z", "2024-06-20T03:00:00Z")),
        ("short slot", "/book/WO-8".into(), slot("2024-06-20T13:00:00Z", "2024-06-20T13:30:00Z")),
        (
            "profile failures",
            "/book/WO-9".into(),
            json!({ "TimeConstraints": [{ "Period": { "Start": "2024-06-20T17:00:00Z", "End": "2024-06-20T13:00:00Z" } }] }).to_string(),
        ),
        (
            "another service area",
            "/book/WO-10".into(),
            with(full.clone(), "/Location/ServiceAreaID", json!("NORTH")),
        ),
        // order_numbers = "key": the number comes from the idempotency key, not the store.
        ("order number from the key", "/keyed/WO-11".into(), example("book-job.full.json")),
    ]
}

#[tokio::test]
async fn the_examples_in_every_language_give_the_same_answers() {
    let server = Server::of(config()).await;
    let mut timings = Vec::new();
    for (name, path, body) in cases() {
        let started = Instant::now();
        let rust = server.post(&format!("/rust{path}"), &body).await;
        timings.push(("rust", started.elapsed()));
        for (prefix, _) in PORTS {
            let started = Instant::now();
            let port = server.post(&format!("/{prefix}{path}"), &body).await;
            timings.push((*prefix, started.elapsed()));
            assert_eq!(
                comparable(&port),
                comparable(&rust),
                "{name}: {prefix} answered\n{}\nRust answered\n{}",
                port.text,
                rust.text
            );
        }
        assert!(
            rust.status == 200 || rust.error_type() != "",
            "{name}: {}",
            rust.text
        );
    }
    // Per-request time through the server, for the record (not a target).
    for prefix in ["rust", "py", "js"] {
        let mut times: Vec<_> = timings
            .iter()
            .filter(|(p, _)| *p == prefix)
            .map(|(_, t)| *t)
            .collect();
        times.sort();
        println!(
            "{prefix}: median {:?} over {} requests",
            times[times.len() / 2],
            times.len()
        );
    }
}

/// The Python rules built for the world with outbound HTTP (`booker-scheduler-http`):
/// refused without an HTTP grant (and without the store's), loaded with both, and then
/// booking as the build without HTTP does. The build without it needs no HTTP grant.
#[tokio::test]
async fn python_picks_its_outbound_http_by_its_world() {
    use followup_host::config::HttpGrant;
    use followup_host::plugin::loader::{self, LoadError};
    use std::sync::Arc;

    let runtime = crate::support::runtime();
    let load = |path: &str, manifest: PluginManifest| {
        let bytes: Arc<[u8]> = std::fs::read(path).unwrap().into();
        loader::load_bytes(&runtime, "py", &manifest, bytes)
    };
    let kv_only = || PluginManifest::new("unused.wasm").with_kv();
    let err = load(guests::CAPACITY_BOOKER_PY_HTTP, kv_only()).unwrap_err();
    assert!(matches!(err, LoadError::NotGranted(..)), "{err}");
    assert!(err.to_string().contains("imports wasi:http/"), "{err}");
    let granted = || kv_only().with_http(HttpGrant::allowing(["http://127.0.0.1:9"]));
    assert!(load(guests::CAPACITY_BOOKER_PY_HTTP, granted()).is_ok());
    assert!(load(guests::CAPACITY_BOOKER_PY, kv_only()).is_ok());

    let config = Config::default()
        .with_plugin(
            "py-http",
            booker(guests::CAPACITY_BOOKER_PY_HTTP)
                .with_http(HttpGrant::allowing(["http://127.0.0.1:9"])),
        )
        .with_route(RouteConfig::book_job("/py-http/{0}", "py-http").named("book"))
        .with_plugin("py", booker(guests::CAPACITY_BOOKER_PY))
        .with_route(RouteConfig::book_job("/py/{0}", "py").named("book"));
    let server = Server::of(config).await;
    let mut answers = Vec::new();
    for prefix in ["py-http", "py"] {
        let answer = server
            .post(&format!("/{prefix}/WO-1"), &example("book-job.full.json"))
            .await;
        assert_eq!(answer.status, 200, "{prefix}: {}", answer.text);
        answers.push(answer.json);
    }
    // Each plugin numbers its orders from its own sequence, and the parts order number
    // comes from the idempotency key, which is the same for the same route name.
    assert_eq!(answers[0], answers[1]);
}
