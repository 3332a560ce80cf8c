//! `rest-forwarder` against a real HTTP back end on 127.0.0.1: bookings and searches
//! forwarded, the back end's answers and failures mapped to the contract, and calls
//! outside the allow-list refused by the host.

use crate::support::{Server, example};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use followup_host::config::{Config, HttpGrant, Limits, PluginManifest, RouteConfig};
use followup_tests::guests;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the back end received: work order, idempotency key, authorization, body.
pub(crate) type Seen = Arc<Mutex<Vec<(String, String, String, Value)>>>;

async fn book(
    State(seen): State<Seen>,
    Path(work_order): Path<String>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let n = {
        let mut seen = seen.lock().unwrap();
        seen.push((
            work_order.clone(),
            header("idempotency-key"),
            header("authorization"),
            serde_json::from_str(&body).unwrap_or(Value::Null),
        ));
        seen.len()
    };
    match work_order.as_str() {
        "WO-taken" => (StatusCode::CONFLICT, r#"{"message":"the slot was taken"}"#).into_response(),
        "WO-rejected" => (StatusCode::UNPROCESSABLE_ENTITY, r#"{"error":"unknown account"}"#).into_response(),
        "WO-down" => (StatusCode::SERVICE_UNAVAILABLE, "maintenance until 02:00").into_response(),
        "WO-garbage" => (StatusCode::OK, "<html>not json</html>").into_response(),
        "WO-huge" => (StatusCode::OK, "x".repeat(200_000)).into_response(),
        "WO-slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            (StatusCode::OK, "{}").into_response()
        }
        _ => (
            StatusCode::CREATED,
            json!({"orderNumber": format!("ACME-{n}"), "partsOrders": [{"number": "PO-1", "parts": ["W10276397"]}]})
                .to_string(),
        )
            .into_response(),
    }
}

async fn slots() -> impl IntoResponse {
    (StatusCode::OK, json!({"slots": [
        {"id": "S-1", "start": "2024-06-18T13:00:00Z", "end": "2024-06-18T17:00:00Z", "description": "Tue afternoon"},
        {"id": "S-2", "start": "2024-06-19T13:00:00Z", "end": "2024-06-19T17:00:00Z"}
    ]}).to_string())
}

/// A back end on 127.0.0.1:0; its origin and what it received.
pub(crate) async fn back_end() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/bookings/{wo}", post(book))
        .route("/slots", post(slots))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (origin, seen)
}

/// The REST forwarder as plugin `name` on `/NAME/{0}`, calling `origin` with `allowed`
/// on its allow-list.
pub(crate) fn forwarder(config: Config, name: &str, origin: &str, allowed: &str) -> Config {
    let manifest = PluginManifest::new(guests::REST_FORWARDER)
        .with_limits(Limits {
            timeout_ms: 3000,
            ..Limits::default()
        })
        .with_http(HttpGrant {
            timeout_ms: 500,
            max_response_bytes: 100_000,
            ..HttpGrant::allowing([allowed])
        })
        .with_value("base_url", origin)
        // CARGO_PKG_NAME is set for every test process: a secret by reference, no unsafe
        // set_var needed.
        .with_secret("api_key", "CARGO_PKG_NAME");
    config
        .with_plugin(name, manifest)
        .with_route(RouteConfig::book_job(format!("/{name}/{{0}}"), name).named(name))
}

#[tokio::test]
async fn bookings_are_forwarded_and_back_end_failures_map_to_the_contract() {
    let (origin, seen) = back_end().await;
    let config = forwarder(Config::default(), "acme", &origin, &origin)
        .with_route(RouteConfig::appointment_search("/acme-search", "acme").named("acme-search"));
    // Same back end, but its origin spelled differently: not on the allow-list.
    let config = forwarder(
        config,
        "elsewhere",
        &origin.replace("127.0.0.1", "localhost"),
        &origin,
    );
    let server = Server::of(config).await;
    let body = example("book-job.full.json");

    let ok = server.post("/acme/WO-ok", &body).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.json["OrderNum"], "ACME-1");
    assert_eq!(ok.json["OrderedParts"][0]["Parts"][0], "W10276397");
    {
        let seen = seen.lock().unwrap();
        let (work_order, key, authorization, sent) = &seen[0];
        assert_eq!(work_order, "WO-ok");
        assert_eq!(key.len(), 64, "the idempotency key travels: {key:?}");
        assert_eq!(
            authorization, "Bearer followup-tests",
            "the secret from the environment"
        );
        assert_eq!(sent["workOrderId"], "WO-ok");
        let job = crate::support::example_json("book-job.full.json");
        assert_eq!(sent["start"], job["TimeConstraints"][0]["Period"]["Start"]);
        assert_eq!(sent["job"]["Account"]["AccountNum"], "ACC-0048213");
    }
    // A retry is answered by the journal: the back end is not called again.
    let retry = server.post("/acme/WO-ok", &body).await;
    assert_eq!(retry.json["OrderNum"], "ACME-1");
    assert_eq!(seen.lock().unwrap().len(), 1);

    let cases = [
        ("WO-taken", "slot-unavailable", "the slot was taken"),
        ("WO-rejected", "invalid-request", "unknown account"),
        (
            "WO-down",
            "upstream-failure",
            "answered 503: maintenance until 02:00",
        ),
        ("WO-garbage", "upstream-failure", "not JSON"),
        ("WO-huge", "upstream-failure", "too large"),
        ("WO-slow", "upstream-failure", "did not answer in time"),
    ];
    for (work_order, kind, detail) in cases {
        let answer = server.post(&format!("/acme/{work_order}"), &body).await;
        answer.assert_error(500, kind);
        assert!(
            answer.text.contains(detail),
            "{work_order}: {}",
            answer.text
        );
    }

    // A call outside the allow-list never leaves the host.
    let before = seen.lock().unwrap().len();
    let denied = server.post("/elsewhere/WO-ok", &body).await;
    denied.assert_error(500, "upstream-failure");
    assert!(denied.text.contains("allow-list"), "{}", denied.text);
    assert_eq!(seen.lock().unwrap().len(), before);

    // Searches come from the back end's slots.
    let found = server
        .post("/acme-search", &example("appointment-search.request.json"))
        .await;
    assert_eq!(found.status, 200, "{}", found.text);
    assert_eq!(found.json["TimeConstraints"][0]["ID"], "S-1");
    assert_eq!(
        found.json["TimeConstraints"][1]["Period"]["Start"],
        "2024-06-19T13:00:00.000Z"
    );
}
