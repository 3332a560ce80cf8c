//! The HTTP surface end to end: the contract's examples, the context a plugin sees, and
//! every kind of bad input in both status modes.

use crate::support::{Server, example, example_json, token, with};
use serde_json::{Value, json};

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

#[tokio::test]
async fn books_every_example_with_exactly_the_contract_keys() {
    let server = Server::start().await;
    for name in ["book-job.full.json", "book-job.minimal.json"] {
        let answer = server
            .post("/workorders/WO-2024-118734/followup", &example(name))
            .await;
        assert_eq!(answer.status, 200, "{name}: {}", answer.text);
        assert_eq!(answer.content_type, "application/json");
        let body = &answer.json;
        assert!(
            body["OrderNum"]
                .as_str()
                .is_some_and(|n| n.starts_with("FU-"))
        );
        for key in keys(body) {
            assert!(["OrderNum", "OrderedParts"].contains(&key), "{name}: {key}");
        }
        for part in body["OrderedParts"].as_array().into_iter().flatten() {
            assert_eq!(keys(part), ["PartOrderNum", "Parts"]);
        }
    }
    // The full example orders its one required part, as its superseding replacement.
    let full = server
        .post(
            "/workorders/WO-2024-118734/followup",
            &example("book-job.full.json"),
        )
        .await;
    assert_eq!(full.json["OrderedParts"][0]["Parts"], json!(["W10276397"]));
}

#[tokio::test]
async fn answers_the_search_example_with_open_slots_in_the_window() {
    let server = Server::start().await;
    let answer = server
        .post(
            "/appointments/search",
            &example("appointment-search.request.json"),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let body = &answer.json;
    for key in keys(body) {
        assert!(["StatusMsg", "TimeConstraints"].contains(&key), "{key}");
    }
    let slots = body["TimeConstraints"].as_array().unwrap();
    assert!(!slots.is_empty());
    for slot in slots {
        for key in keys(slot) {
            assert!(
                ["ID", "Desc", "Type", "Period", "Delete"].contains(&key),
                "{key}"
            );
        }
        assert_eq!(keys(&slot["Period"]), ["End", "Start"]);
        let start = slot["Period"]["Start"].as_str().unwrap();
        let end = slot["Period"]["End"].as_str().unwrap();
        // Inside the requested window 2024-06-17T16:00Z .. 2024-06-21T22:00Z.
        assert!(start >= "2024-06-17T16:00:00.000Z" && end <= "2024-06-21T22:00:00.000Z");
        assert!(start < end);
    }
}

#[tokio::test]
async fn the_same_booking_gets_the_same_order_number() {
    let server = Server::start().await;
    let body = example("book-job.full.json");
    let first = server.post("/workorders/WO-1/followup", &body).await;
    let again = server.post("/workorders/WO-1/followup", &body).await;
    let other = server.post("/workorders/WO-2/followup", &body).await;
    assert_eq!(first.json["OrderNum"], again.json["OrderNum"]);
    assert_ne!(first.json["OrderNum"], other.json["OrderNum"]);
}

#[tokio::test]
async fn the_plugin_sees_the_request_context() {
    let server = Server::start().await;
    let answer = server
        .send(
            server
                .client
                .post(format!("{}/echo/WO%2F2024%20118", server.base))
                .header("content-type", "application/json; charset=utf-8")
                .header("x-access-token", token(600))
                .header("x-request-id", "req-42")
                .body(example("book-job.minimal.json")),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let context: Vec<&str> = answer.json["OrderedParts"][0]["Parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(context[0], "work-order-id=WO/2024 118");
    assert_eq!(context[1], "route=echo");
    assert_eq!(context[2], "request-id=req-42");
    assert_eq!(context[3].len(), "idempotency-key=".len() + 64);
    let claims: Value = serde_json::from_str(context[4].strip_prefix("claims=").unwrap()).unwrap();
    assert_eq!(claims["name"], "R Morales");
    assert_eq!(claims["email"], "r.morales@example.com");
}

/// Case name, request path, body, expected (documented, http) status, type, and the
/// `invalidParams` paths.
struct BadInput {
    name: &'static str,
    path: &'static str,
    body: String,
    http_status: u16,
    kind: &'static str,
    paths: &'static [&'static str],
}

/// `doc` with its first slot moved to `start`..`end`.
fn with_slot(doc: &Value, start: &str, end: &str) -> String {
    let mut doc = doc.clone();
    doc["TimeConstraints"][0]["Period"] = json!({ "Start": start, "End": end });
    doc.to_string()
}

fn bad_inputs() -> Vec<BadInput> {
    let full = example_json("book-job.full.json");
    let minimal = example_json("book-job.minimal.json");
    let followup = "/workorders/WO-1/followup";
    let case = |name, body: String, http_status, kind, paths| BadInput {
        name,
        path: followup,
        body,
        http_status,
        kind,
        paths,
    };
    let mut no_order = minimal.clone();
    no_order.as_object_mut().unwrap().remove("OriginalOrderNum");
    vec![
        case(
            "Qty not a number",
            with(full.clone(), "/RequiredParts/0/Qty", json!("two")),
            400,
            "invalid-request",
            &["$.RequiredParts[0].Qty"],
        ),
        case(
            "IsPrimary not a boolean",
            with(full.clone(), "/Location/Contacts/0/IsPrimary", json!("yes")),
            400,
            "invalid-request",
            &["$.Location.Contacts[0].IsPrimary"],
        ),
        case(
            "Account not an object, FlexForms not an array",
            with(
                serde_json::from_str(&with(full.clone(), "/Account", json!([]))).unwrap(),
                "/FlexForms",
                json!("FF-FOLLOWUP"),
            ),
            400,
            "invalid-request",
            &["$.Account", "$.FlexForms"],
        ),
        case(
            "FlexAttrs value not a list of strings",
            with(full.clone(), "/FlexAttrs/FF-FOLLOWUP/100002", json!([1])),
            400,
            "invalid-request",
            &["$.FlexAttrs.FF-FOLLOWUP.100002[0]"],
        ),
        case(
            "Lat not numeric",
            with(full.clone(), "/Location/Address/Lat", json!("north")),
            400,
            "invalid-request",
            &["$.Location.Address.Lat"],
        ),
        case(
            "slot start not a date-time",
            with(
                minimal.clone(),
                "/TimeConstraints/0/Period/Start",
                json!("tomorrow"),
            ),
            400,
            "invalid-request",
            &["$.TimeConstraints[0].Period.Start"],
        ),
        case(
            "slot ends before it starts",
            with(
                minimal.clone(),
                "/TimeConstraints/0/Period/End",
                json!("2024-06-18T12:00:00Z"),
            ),
            422,
            "invalid-request",
            &["$.TimeConstraints[0].Period.End"],
        ),
        case(
            "no OriginalOrderNum",
            no_order.to_string(),
            422,
            "invalid-request",
            &["$.OriginalOrderNum"],
        ),
        case(
            "malformed JSON",
            "{\"Account\": {".into(),
            400,
            "invalid-request",
            &["$"],
        ),
        case("empty body", String::new(), 400, "invalid-request", &["$"]),
        case(
            "top-level array",
            "[{}]".into(),
            400,
            "invalid-request",
            &["$"],
        ),
        case(
            "slot in the past",
            with_slot(
                &minimal,
                "2024-06-10T13:00:00.000Z",
                "2024-06-10T17:00:00.000Z",
            ),
            409,
            "slot-unavailable",
            &[],
        ),
        case(
            "slot on a Saturday",
            with_slot(
                &minimal,
                "2024-06-22T13:00:00.000Z",
                "2024-06-22T17:00:00.000Z",
            ),
            409,
            "slot-unavailable",
            &[],
        ),
        case(
            "oversize body",
            format!("{{\"Notes\": \"{}\"}}", "x".repeat(1 << 20)),
            413,
            "payload-too-large",
            &[],
        ),
        BadInput {
            name: "WorkOrderID not UTF-8",
            path: "/workorders/%FF/followup",
            body: example("book-job.minimal.json"),
            http_status: 400,
            kind: "invalid-request",
            paths: &["$path.WorkOrderID"],
        },
    ]
}

async fn check_bad_inputs(mode: &str) {
    let server = Server::with_config(&format!("status_mode = {mode:?}")).await;
    for case in bad_inputs() {
        let answer = server.post(case.path, &case.body).await;
        let status = if mode == "http" {
            case.http_status
        } else {
            500
        };
        answer.assert_error(status, case.kind);
        assert_eq!(
            answer.invalid_paths(),
            case.paths,
            "{}: {}",
            case.name,
            answer.text
        );
        if case.kind == "invalid-request" {
            for param in answer.json["invalidParams"].as_array().unwrap() {
                assert!(
                    param["name"].as_str().is_some_and(|n| !n.is_empty()),
                    "{}",
                    case.name
                );
                assert!(
                    param["reason"].as_str().is_some_and(|r| !r.is_empty()),
                    "{}",
                    case.name
                );
                assert!(param["value"].is_string(), "{}", case.name);
            }
        }
    }
}

#[tokio::test]
async fn bad_input_is_answered_in_documented_mode() {
    check_bad_inputs("documented").await;
}

#[tokio::test]
async fn bad_input_is_answered_in_http_mode() {
    check_bad_inputs("http").await;
}

async fn check_protocol_errors(mode: &str) {
    let server = Server::with_config(&format!("status_mode = {mode:?}")).await;
    let http = mode == "http";
    let url = format!("{}/workorders/WO-1/followup", server.base);
    let body = example("book-job.minimal.json");
    let post = || {
        server
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
    };

    for (name, t) in [
        ("missing", None),
        ("malformed", Some("not-a-jwt".to_string())),
        ("expired", Some(token(-3600))),
    ] {
        let request = match t {
            Some(t) => post().header("x-access-token", t),
            None => post(),
        };
        let answer = server.send(request).await;
        answer.assert_error(401, "invalid-logon");
        assert_eq!(answer.json["title"], "Invalid Logon", "{name}");
    }

    let wrong_type = server
        .send(
            server
                .client
                .post(&url)
                .header("content-type", "text/plain")
                .header("x-access-token", token(60))
                .body(body.clone()),
        )
        .await;
    wrong_type.assert_error(if http { 415 } else { 500 }, "unsupported-media-type");

    let no_type = server
        .send(
            server
                .client
                .post(&url)
                .header("x-access-token", token(60))
                .body(body.clone()),
        )
        .await;
    no_type.assert_error(if http { 415 } else { 500 }, "unsupported-media-type");

    let get = server
        .send(server.client.get(&url).header("x-access-token", token(60)))
        .await;
    get.assert_error(if http { 405 } else { 500 }, "method-not-allowed");

    let unknown = server
        .send(
            server
                .client
                .post(format!("{}/nowhere", server.base))
                .header("content-type", "application/json")
                .body("{}"),
        )
        .await;
    unknown.assert_error(if http { 404 } else { 500 }, "not-found");
}

#[tokio::test]
async fn protocol_errors_are_answered_in_documented_mode() {
    check_protocol_errors("documented").await;
}

#[tokio::test]
async fn protocol_errors_are_answered_in_http_mode() {
    check_protocol_errors("http").await;
}

#[tokio::test]
async fn tokens_are_not_checked_when_the_mode_is_off() {
    let server = Server::with_config("[token]\nmode = \"off\"").await;
    let answer = server
        .send(
            server
                .client
                .post(format!("{}/workorders/WO-1/followup", server.base))
                .header("content-type", "application/json")
                .body(example("book-job.minimal.json")),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}
