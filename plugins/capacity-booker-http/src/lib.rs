//! The capacity-booker rules as a standard `wasi:http/proxy` component.
//!
//! This crate exists only as the peer in a load comparison: `wasmtime serve` runs it, and it
//! does per request what the followup host and the `capacity-booker` plugin do together for
//! a booking, and answers the same bodies:
//! 1. reads the whole request body (`POST /anything/{WorkOrderID}`, the last path segment);
//! 2. parses it as JSON and decodes it as a Book Job with the SDK's mapping (400 on failure);
//! 3. computes the idempotency key with the host's own function (route `followup`);
//! 4. runs [`rules::Rules::book_with`] with a fixed configuration (see [`CONFIG`]):
//!    order numbers derived from the key, so no key-value store is needed;
//! 5. answers 200 with the encoded Book Job Response, or 500 naming the error.
//!
//! Steps 1–5 are [`answer`], plain Rust that also builds natively (unit tests); the
//! `wasi:http` glue is compiled for `wasm32` only.

// The plugin's own rules file, compiled into this component: depending on the plugin crate
// would also link its component exports, and with them imports `wasmtime serve` lacks.
#[path = "../../capacity-booker/src/rules.rs"]
#[allow(dead_code, reason = "the peer uses only `book_with` of the rules")]
mod rules;

use followup_sdk::idempotency::key as idempotency_key;
use followup_sdk::time::Timestamp;
use followup_sdk::{BookJob, BookJobResponse, RequestContext};
use rules::Rules;
use serde_json::{Value, json};

/// The route name the idempotency key and the request context carry.
pub const ROUTE: &str = "followup";

/// The rules' configuration: the values the host's config service would answer.
pub const CONFIG: [(&str, &str); 3] = [
    ("now", "2024-06-17T12:00:00Z"),
    ("utc_offset_minutes", "-240"),
    ("order_numbers", "key"),
];

fn config(key: &str) -> Option<String> {
    CONFIG
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| (*v).to_string())
}

/// The work order id: the last segment of the path (any query string dropped).
fn work_order_id(path: &str) -> &str {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    path.rsplit('/').next().unwrap_or_default()
}

fn error(status: u16, kind: &str, detail: impl Into<Value>) -> (u16, Vec<u8>) {
    let body = json!({ "error": kind, "detail": detail.into() });
    (status, body.to_string().into_bytes())
}

/// Answers one booking request: the status and the JSON body.
pub fn answer(path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let value: Value = match serde_json::from_slice(body) {
        Ok(value @ Value::Object(_)) => value,
        Ok(_) => return error(400, "invalid-request", "the body must be a JSON object"),
        Err(e) => return error(400, "invalid-request", format!("invalid JSON: {e}")),
    };
    let job = match followup_sdk::json::decode::<BookJob>(&value) {
        Ok(job) => job,
        Err(problems) => {
            let problems: Vec<Value> = problems
                .iter()
                .map(|p| json!({ "path": p.path, "reason": p.reason }))
                .collect();
            return error(400, "invalid-request", problems);
        }
    };
    let id = work_order_id(path);
    let ctx = RequestContext {
        idempotency_key: idempotency_key(ROUTE, Some(id), &value),
        work_order_id: Some(id.to_string()),
        route: ROUTE.into(),
        request_id: "peer".into(),
        claims: None,
    };
    let rules = Rules::from_config(config, Timestamp(0));
    // Order numbers come from the key (see CONFIG), so the rules never count anything.
    let mut no_store = |key: &str, _delta: i64| {
        Err(followup_sdk::kv::KvError::Unavailable(format!(
            "no key-value store in the peer ({key})"
        )))
    };
    match rules.book_with(&ctx, &job, &mut no_store) {
        Ok(booked) => match followup_sdk::json::encode::<BookJobResponse>(&booked) {
            Ok(encoded) => match serde_json::to_vec(&encoded) {
                Ok(bytes) => (200, bytes),
                Err(e) => error(500, "internal", e.to_string()),
            },
            Err(e) => error(500, "internal", e.to_string()),
        },
        Err(e) => error(500, "booking-error", format!("{e:?}")),
    }
}

/// The `wasi:http/incoming-handler` export: reads the request, calls [`answer`], writes the
/// response.
#[cfg(target_arch = "wasm32")]
mod component {
    use std::io::{Read as _, Write as _};
    use wasi::http::types::{
        Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse,
        ResponseOutparam,
    };

    pub struct Proxy;

    impl wasi::exports::http::incoming_handler::Guest for Proxy {
        fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
            let (status, body) = match request.method() {
                Method::Post => match read_body(&request) {
                    Ok(body) => {
                        let path = request.path_with_query().unwrap_or_default();
                        super::answer(&path, &body)
                    }
                    Err(e) => super::error(400, "invalid-request", e),
                },
                _ => super::error(405, "method-not-allowed", "POST only"),
            };
            respond(response_out, status, &body);
        }
    }

    fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, String> {
        let incoming = request
            .consume()
            .map_err(|()| "the body was already consumed".to_string())?;
        let mut body = Vec::new();
        {
            let mut stream = incoming
                .stream()
                .map_err(|()| "the body stream was already taken".to_string())?;
            stream
                .read_to_end(&mut body)
                .map_err(|e| format!("reading the body: {e}"))?;
        }
        drop(IncomingBody::finish(incoming));
        Ok(body)
    }

    fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
        let headers = Fields::new();
        // Neither header is forbidden, and both values are valid: these cannot fail.
        let _ = headers.append("content-type", b"application/json");
        let _ = headers.append("content-length", body.len().to_string().as_bytes());
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(status);
        let Ok(outgoing) = response.body() else {
            return;
        };
        ResponseOutparam::set(out, Ok(response));
        let Ok(mut stream) = outgoing.write() else {
            return;
        };
        // `blocking_flush` is the stream's own method (it shadows `io::Write::flush`).
        let written = stream.write_all(body).is_ok() && stream.blocking_flush().is_ok();
        drop(stream);
        if written {
            let _ = OutgoingBody::finish(outgoing, None);
        }
    }

    #[allow(
        unsafe_code,
        reason = "the export macro emits the component's `#[export_name]` entry points"
    )]
    mod export {
        use super::Proxy;
        wasi::http::proxy::export!(Proxy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/spec/examples/book-job.full.json"
    ));

    #[test]
    fn books_the_full_example() {
        let (status, body) = answer("/followup/WO-2024-118734", FULL);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 200, "{text}");
        let value: Value = serde_json::from_slice(&body).unwrap();
        let order = value["OrderNum"].as_str().unwrap();
        assert!(order.starts_with("FU-") && order.len() == 13, "{text}");
        // The same booking answers the same bytes; another work order another number.
        assert_eq!(
            answer("/followup/WO-2024-118734", FULL),
            (status, body.clone())
        );
        assert_ne!(answer("/followup/WO-1", FULL).1, body);
    }

    #[test]
    fn refuses_what_the_rules_or_the_mapping_refuse() {
        for bad in [
            &b"{}"[..],
            b"",
            b"[]",
            b"{",
            br#"{"RequiredParts":[{"Qty":"two"}]}"#,
        ] {
            let (status, body) = answer("/followup/WO-1", bad);
            assert_ne!(status, 200, "{}", String::from_utf8_lossy(bad));
            assert!(serde_json::from_slice::<Value>(&body).is_ok());
        }
    }

    #[test]
    fn the_key_is_the_hosts() {
        let body: Value = serde_json::from_str(r#"{"A":1}"#).unwrap();
        // SHA-256 of b"followup\0" + b"1\0" + br#"{"A":1}"# (sha256sum).
        assert_eq!(
            idempotency_key("followup", Some("1"), &body),
            "bd38f6802d9b9e3a3406ab6370317bcfc29c470cfa0689889c48d9c82f6e5ace"
        );
        let spaced: Value = serde_json::from_str(r#"{ "A" : 1 }"#).unwrap();
        assert_eq!(
            idempotency_key("followup", Some("1"), &spaced),
            idempotency_key("followup", Some("1"), &body)
        );
    }

    #[test]
    fn the_work_order_id_is_the_last_segment() {
        assert_eq!(work_order_id("/anything/WO-7"), "WO-7");
        assert_eq!(work_order_id("/followup/WO-7?x=1"), "WO-7");
    }
}
