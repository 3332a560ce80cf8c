//! Traces as an operator's collector sees them: the binary started with the standard
//! `OTEL_*` variables sends its spans over OTLP/HTTP (JSON) to a receiver in this test;
//! a booking's spans form the documented tree under the caller's `traceparent`, a
//! plugin's outbound request carries the trace on, and the JSON log lines of the request
//! name the same trace.

use crate::support::{Host, scratch, write_config};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use followup_host::config::{
    Config, HttpGrant, Limits, LogFormat, PluginManifest, RouteConfig, TokenConfig,
};
use followup_tests::configs::example_booker;
use followup_tests::guests;
use followup_tests::http::{example, send};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Collected = Arc<Mutex<Vec<Value>>>;

/// Starts `app` on 127.0.0.1:0; its `http://` origin.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    origin
}

/// An OTLP/HTTP receiver taking JSON export requests on `/v1/traces`.
async fn receiver() -> (String, Collected) {
    let collected = Collected::default();
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(c): State<Collected>, body: String| async move {
                let export: Value = serde_json::from_str(&body).expect("an OTLP JSON export");
                c.lock().unwrap().push(export);
                (StatusCode::OK, "{}")
            }),
        )
        .with_state(collected.clone());
    (serve(app).await, collected)
}

/// The rest forwarder's back end: answers every booking, recording its `traceparent`.
async fn back_end() -> (String, Collected) {
    let seen = Collected::default();
    let app = Router::new()
        .route(
            "/bookings/{wo}",
            post(
                |State(seen): State<Collected>, headers: HeaderMap| async move {
                    let traceparent = headers
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    seen.lock().unwrap().push(json!(traceparent));
                    (
                        StatusCode::CREATED,
                        json!({"orderNumber": "ACME-1", "partsOrders": []}).to_string(),
                    )
                },
            ),
        )
        .with_state(seen.clone());
    (serve(app).await, seen)
}

/// One received span: ids and attributes as strings.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: HashMap<String, String>,
}

fn spans(exports: &[Value]) -> Vec<Span> {
    let mut all = Vec::new();
    for export in exports {
        for resource in export["resourceSpans"].as_array().into_iter().flatten() {
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    let attributes = span["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| {
                            let value = a["value"]
                                .as_object()
                                .and_then(|v| v.values().next())
                                .map(|v| match v {
                                    Value::String(s) => s.clone(),
                                    other => other.to_string(),
                                })
                                .unwrap_or_default();
                            (a["key"].as_str().unwrap().to_string(), value)
                        })
                        .collect();
                    let text = |k: &str| span[k].as_str().unwrap_or("").to_string();
                    all.push(Span {
                        name: text("name"),
                        trace_id: text("traceId"),
                        span_id: text("spanId"),
                        parent: text("parentSpanId"),
                        attributes,
                    });
                }
            }
        }
    }
    all
}

/// The spans of `trace_id` received so far.
fn of_trace(collected: &Collected, trace_id: &str) -> Vec<Span> {
    spans(&collected.lock().unwrap())
        .into_iter()
        .filter(|s| s.trace_id == trace_id)
        .collect()
}

/// Waits (bounded) until the spans of `trace_id` include every name of `names`.
async fn wait_for(collected: &Collected, trace_id: &str, names: &[&str]) -> Vec<Span> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let spans = of_trace(collected, trace_id);
        if names.iter().all(|n| spans.iter().any(|s| s.name == *n)) {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "spans {names:?} of trace {trace_id} did not arrive; got {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name}: {spans:#?}");
    found[0]
}

#[tokio::test]
async fn a_booking_sends_its_span_tree_and_its_log_lines_name_the_trace() {
    let (collector, collected) = receiver().await;
    let (back_end, received) = back_end().await;
    let forwarder = PluginManifest::new(guests::REST_FORWARDER)
        .with_limits(Limits {
            timeout_ms: 3000,
            ..Limits::default()
        })
        .with_http(HttpGrant {
            timeout_ms: 1000,
            ..HttpGrant::allowing([back_end.as_str()])
        })
        .with_value("base_url", &back_end)
        .with_secret("api_key", "CARGO_PKG_NAME");
    let config = Config {
        log_format: LogFormat::Json,
        ..Config::default()
    }
    .with_token(TokenConfig::off())
    .with_plugin("booker", example_booker())
    .with_route(RouteConfig::book_job("/workorders/{0}/followup", "booker"))
    .with_plugin("acme", forwarder)
    .with_route(RouteConfig::book_job("/acme/{0}", "acme").named("acme"));

    let dir = scratch("traces");
    let config = write_config(&dir, &config.checked().unwrap());
    let log = dir.join("stderr.log");
    let host = Host::serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
        ],
        false,
        |command| {
            for var in [
                "OTEL_SDK_DISABLED",
                "OTEL_TRACES_EXPORTER",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                "OTEL_SERVICE_NAME",
            ] {
                command.env_remove(var);
            }
            command
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector)
                .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
                .env("OTEL_BSP_SCHEDULE_DELAY", "100")
                // The plugin call's debug line is one the request certainly logs.
                .env("RUST_LOG", "info,followup_host=debug")
                .stderr(std::fs::File::create(&log).unwrap());
        },
    );

    let client = reqwest::Client::new();
    let (kv_trace, kv_parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let (http_trace, http_parent) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    for (path, request_id, trace, parent) in [
        (
            "/workorders/WO-TRACE-1/followup",
            "req-trace-kv",
            kv_trace,
            kv_parent,
        ),
        (
            "/acme/WO-TRACE-2",
            "req-trace-http",
            http_trace,
            http_parent,
        ),
    ] {
        let request = client
            .post(format!("{}{path}", host.base))
            .header("content-type", "application/json")
            .header("x-request-id", request_id)
            .header("traceparent", format!("00-{trace}-{parent}-01"))
            .body(example("book-job.full.json"));
        let answer = send(request).await;
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
    }

    // The kv booking: the request span under the caller's span, the steps under it, the
    // key-value calls under the plugin call.
    let spans = wait_for(
        &collected,
        kv_trace,
        &[
            "followup.request",
            "followup.token",
            "followup.parse",
            "followup.decode",
            "followup.plugin_call",
            "followup.kv",
            "followup.store_commit",
        ],
    )
    .await;
    let request = one(&spans, "followup.request");
    assert_eq!(request.parent, kv_parent, "{request:#?}");
    let attr = |s: &Span, k: &str| s.attributes.get(k).cloned().unwrap_or_default();
    for (key, value) in [
        ("http.route", "/workorders/{0}/followup"),
        ("followup.work_order_id", "WO-TRACE-1"),
        ("followup.plugin", "booker"),
        ("followup.outcome", "ok"),
        ("followup.request_id", "req-trace-kv"),
        ("http.request.method", "POST"),
        ("http.response.status_code", "200"),
    ] {
        assert_eq!(attr(request, key), value, "{key}: {request:#?}");
    }
    assert!(
        attr(request, "followup.plugin_version").starts_with("sha256:"),
        "{request:#?}"
    );
    assert!(!request.attributes.contains_key("error.type"));
    for name in [
        "followup.token",
        "followup.parse",
        "followup.decode",
        "followup.plugin_call",
        "followup.store_commit",
    ] {
        assert_eq!(
            one(&spans, name).parent,
            request.span_id,
            "{name}: {spans:#?}"
        );
    }
    let call = one(&spans, "followup.plugin_call");
    assert!(
        attr(call, "followup.peak_memory_bytes")
            .parse::<u64>()
            .unwrap()
            > 0,
        "{call:#?}"
    );
    let kv: Vec<&Span> = spans.iter().filter(|s| s.name == "followup.kv").collect();
    assert!(
        kv.iter().all(|s| s.parent == call.span_id),
        "{kv:#?} under {call:#?}"
    );
    assert!(
        kv.iter().all(|s| !attr(s, "db.operation.name").is_empty()),
        "{kv:#?}"
    );
    assert_eq!(
        attr(one(&spans, "followup.store_commit"), "followup.commit"),
        "done"
    );

    // The forwarded booking: the outbound request under the plugin call, naming the back
    // end's origin only, and the back end saw the same trace.
    let spans = wait_for(
        &collected,
        http_trace,
        &["followup.request", "followup.plugin_call", "followup.http"],
    )
    .await;
    let request = one(&spans, "followup.request");
    assert_eq!(request.parent, http_parent);
    let call = one(&spans, "followup.plugin_call");
    assert_eq!(call.parent, request.span_id);
    let outbound = one(&spans, "followup.http");
    assert_eq!(outbound.parent, call.span_id, "{spans:#?}");
    assert_eq!(attr(outbound, "url.origin"), back_end, "{outbound:#?}");
    assert_eq!(attr(outbound, "http.response.status_code"), "201");
    let traceparents = received.lock().unwrap().clone();
    assert_eq!(
        traceparents,
        [json!(format!("00-{http_trace}-{}-01", outbound.span_id))],
        "the back end's traceparent names the host's span"
    );
    // Nothing of a body, a path or a secret in any attribute.
    for span in spans.iter().chain(of_trace(&collected, kv_trace).iter()) {
        for value in span.attributes.values() {
            assert!(
                !value.contains("/bookings/") && !value.contains(env!("CARGO_PKG_NAME")),
                "{span:#?}"
            );
        }
    }

    drop(host);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["message"] == "plugin loaded"),
        "start-up lines are JSON too: {text}"
    );
    for (request_id, trace) in [("req-trace-kv", kv_trace), ("req-trace-http", http_trace)] {
        let of_request: Vec<&Value> = lines
            .iter()
            .filter(|l| l["request_id"] == request_id)
            .collect();
        assert!(!of_request.is_empty(), "{request_id}: {text}");
        for line in of_request {
            assert_eq!(line["trace_id"], trace, "{line}");
            assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
