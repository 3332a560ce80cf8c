//! The HTTP surface: every request goes through [`handle`], which finds the route, checks
//! the token, reads and decodes the body, calls the plugin and encodes its answer.
//!
//! Strategy, cheapest refusal first, and nothing parsed before it is needed:
//! 1. header count and size (431);
//! 2. route (404) and method (405);
//! 3. `x-access-token` (401);
//! 4. `Content-Type` (415), then the body within its size limit (413) and time (408);
//! 5. JSON shape (depth, string length), JSON, then the contract's types with the path of
//!    every problem (400);
//! 6. the plugin, in a fresh sandboxed instance;
//! 7. the plugin's answer, checked against the contract before it leaves (500/502).
//!
//! Header reading itself is bounded by hyper (see [`crate::run`]): a client that does not
//! send its headers within `header_timeout_ms` is disconnected.

pub mod auth;
pub mod journal;
pub mod limits;
pub mod routes;

use crate::App;
use crate::contract::types::{AppointmentSearchResponse, BookJob, BookJobResponse, RequestContext};
use crate::contract::{self, Problem};
use crate::error::{ApiError, ErrorKind};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use routes::{Matched, RouteKind};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The header carrying the request id on every answer.
pub const REQUEST_ID: &str = "x-request-id";

/// The header set on an answer replayed from the idempotency journal.
pub const REPLAYED: &str = "x-followup-replayed";

/// The header naming the plugin version (`name@sha256:…`) that answered.
pub const PLUGIN_VERSION: &str = "x-followup-plugin";

/// Serves one request; never fails: every error becomes the Standard Response Object.
pub async fn handle(State(app): State<Arc<App>>, request: Request) -> Response {
    let started = std::time::Instant::now();
    let request_id = request_id(request.headers());
    let mut seen = Seen::default();
    let (mut response, outcome) = match serve(&app, request, &request_id, &mut seen).await {
        Ok(response) if seen.replayed => (response, "replayed"),
        Ok(response) => (response, "ok"),
        Err(err) => {
            if let Some(plugin) = &err.plugin {
                app.metrics.count_failure(plugin, err.kind.code());
            }
            if err.kind != ErrorKind::InvalidRequest && err.kind != ErrorKind::NotFound {
                tracing::info!(request_id, kind = err.kind.code(), "{}", err.detail);
            }
            let outcome = err.kind.code();
            let response = err
                .with_mode(app.status_mode)
                .with_request_id(&request_id)
                .into_response();
            (response, outcome)
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    if let Some(plugin) = &seen.plugin
        && !seen.replayed
        && let Ok(value) = HeaderValue::from_str(&plugin.to_string())
    {
        response.headers_mut().insert(PLUGIN_VERSION, value);
    }
    app.metrics.observe(
        seen.route.unwrap_or(crate::metrics::NO_ROUTE),
        seen.plugin.as_deref(),
        outcome,
        started.elapsed(),
    );
    response
}

/// What a request reached, for its metrics and headers.
#[derive(Default)]
struct Seen<'a> {
    route: Option<&'a str>,
    plugin: Option<Arc<crate::plugin::PluginIdent>>,
    /// Answered from the journal.
    replayed: bool,
}

async fn serve<'a>(
    app: &'a App,
    request: Request,
    request_id: &str,
    seen: &mut Seen<'a>,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    app.limits.check_headers(&parts.headers)?;
    let (route, work_order_id) = match app.routes.find(parts.uri.path()) {
        Matched::Route(route, id) => (route, id),
        Matched::BadId(_, reason) => {
            return Err(ApiError::invalid(vec![Problem {
                name: "WorkOrderID".into(),
                reason,
                path: "$path.WorkOrderID".into(),
                value: String::new(),
            }]));
        }
        Matched::NotFound => {
            return Err(ApiError::new(
                ErrorKind::NotFound,
                format!("no route serves {}", parts.uri.path()),
            ));
        }
    };
    seen.route = Some(&route.name);
    if parts.method != Method::POST {
        return Err(ApiError::new(
            ErrorKind::MethodNotAllowed,
            format!("{} takes POST, not {}", route.name, parts.method),
        ));
    }

    let token = parts
        .headers
        .get("x-access-token")
        .map(HeaderValue::as_bytes);
    let claims = auth::check(&route.token, token, unix_now())?;
    check_content_type(&parts.headers)?;
    let body = tokio::time::timeout(
        app.limits.body_timeout(),
        read_body(body, &parts.headers, app.max_body_bytes),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            ErrorKind::RequestTimeout,
            format!(
                "the body did not arrive within {} ms",
                app.limits.body_timeout_ms
            ),
        )
    })??;
    let json = parse_body(&body, &app.limits)?;

    let plugin = app.plugin(&route.plugin).ok_or_else(|| {
        ApiError::new(
            ErrorKind::PluginUnavailable,
            format!("plugin {} is not loaded", route.plugin),
        )
    })?;
    seen.plugin = Some(plugin.ident.clone());
    let ctx = RequestContext {
        idempotency_key: idempotency_key(&route.name, work_order_id.as_deref(), &json),
        work_order_id,
        route: route.name.clone(),
        request_id: request_id.to_string(),
        claims,
    };
    match route.kind {
        RouteKind::BookJob => match journal::book(app, &plugin, &ctx, &json).await? {
            journal::Booked::Ran(bytes) => Ok(json_response(bytes)),
            journal::Booked::Replayed(done) => {
                seen.replayed = true;
                let mut response = json_response(done.response);
                let headers = response.headers_mut();
                headers.insert(REPLAYED, HeaderValue::from_static("true"));
                if let Ok(v) = HeaderValue::from_str(&done.plugin) {
                    headers.insert(PLUGIN_VERSION, v);
                }
                Ok(response)
            }
        },
        RouteKind::AppointmentSearch => {
            // Searches read the store but never change it.
            let services = crate::runtime::Services {
                kv: plugin.kv.then(|| {
                    crate::store::kv::KvSession::new(app.store.clone(), &plugin.ident.name, false)
                }),
            };
            let (bytes, _) =
                answer(&app.runtime, &plugin, route.kind, &ctx, &json, services).await?;
            Ok(json_response(bytes))
        }
    }
}

/// Runs `plugin` on a parsed request (a route's or an admission sample's): decodes it into
/// the contract's types, calls the plugin in a fresh sandboxed instance, checks its answer
/// against the contract and its size limit, and encodes it.
pub async fn answer(
    runtime: &crate::runtime::PluginRuntime,
    plugin: &crate::plugin::LoadedPlugin,
    kind: RouteKind,
    ctx: &RequestContext,
    json: &Value,
    services: crate::runtime::Services,
) -> Result<(Vec<u8>, crate::runtime::Services), ApiError> {
    let (answer, used) = match (&plugin.native, kind) {
        (Some(rules), _) => {
            crate::runtime::native::answer(rules, plugin, kind, ctx, json, services)?
        }
        (None, RouteKind::BookJob) => {
            let job = contract::decode::<BookJob>(json).map_err(ApiError::invalid)?;
            let (answer, used) = runtime.book(plugin, ctx, &job, services).await?;
            let response =
                answer.map_err(|e| ApiError::from_booking(e).for_plugin(&plugin.ident))?;
            (contract::encode::<BookJobResponse>(&response), used)
        }
        (None, RouteKind::AppointmentSearch) => {
            let query = contract::decode::<BookJob>(json).map_err(ApiError::invalid)?;
            let (answer, used) = runtime.search(plugin, ctx, &query, services).await?;
            let response =
                answer.map_err(|e| ApiError::from_booking(e).for_plugin(&plugin.ident))?;
            (
                contract::encode::<AppointmentSearchResponse>(&response),
                used,
            )
        }
    };
    let answer = answer.map_err(|e| {
        ApiError::new(
            ErrorKind::PluginBadResult,
            format!("plugin {} returned an invalid answer: {e}", plugin.ident),
        )
        .for_plugin(&plugin.ident)
    })?;
    // A `Value` always serialises.
    let bytes = serde_json::to_vec(&answer).unwrap_or_default();
    let limit = plugin.limits.max_response_bytes;
    if bytes.len() > limit {
        return Err(ApiError::new(
            ErrorKind::PluginResponseTooLarge,
            format!(
                "plugin {} answered {} bytes, over its max_response_bytes of {limit}",
                plugin.ident,
                bytes.len()
            ),
        )
        .for_plugin(&plugin.ident));
    }
    Ok((bytes, used))
}

fn json_response(bytes: Vec<u8>) -> Response {
    let mut response = (StatusCode::OK, Body::from(bytes)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `application/json`, with or without parameters such as `charset=utf-8`.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = value.split(';').next().unwrap_or("").trim();
    if media_type.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else if value.is_empty() {
        Err(ApiError::new(
            ErrorKind::UnsupportedMediaType,
            "Content-Type is missing; send application/json",
        ))
    } else {
        Err(ApiError::new(
            ErrorKind::UnsupportedMediaType,
            format!("Content-Type {value:?} is not application/json"),
        ))
    }
}

/// Reads the body, refusing it as soon as it is known to exceed `limit` (a declared
/// `Content-Length` is trusted for an early refusal, never for the read itself).
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("the body exceeds the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(body, limit);
    match http_body_util::BodyExt::collect(limited).await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::new(
            ErrorKind::InvalidRequest,
            format!("the body could not be read: {e}"),
        )),
    }
}

/// Checks the body's shape against `limits`, then parses it as a JSON object. This and
/// [`contract::decode`] are everything that touches untrusted bytes before a plugin runs
/// (and what the fuzz target drives).
pub fn parse_body(body: &[u8], limits: &limits::InputLimits) -> Result<Value, ApiError> {
    limits.check_json_shape(body)?;
    parse_json(body)
}

/// Parses the body as a JSON object, with the position of a syntax error.
fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    let problem = |reason: String, value: &str| {
        ApiError::invalid(vec![Problem {
            name: "$".into(),
            reason,
            path: "$".into(),
            value: value.into(),
        }])
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(problem("the body is empty; send a JSON object".into(), ""));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        problem(
            format!(
                "is not valid JSON: {e} (line {}, column {})",
                e.line(),
                e.column()
            ),
            "",
        )
    })?;
    if !value.is_object() {
        let kind = match value {
            Value::Array(_) => "an array",
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            _ => "null",
        };
        return Err(problem(
            format!("must be a JSON object, not {kind}"),
            &contract::codec::value_text(&value),
        ));
    }
    Ok(value)
}

/// Equal for retries of the same booking: SHA-256 over the route, the WorkOrderID and the
/// canonical body (object keys sorted, no insignificant white space).
pub fn idempotency_key(route: &str, work_order_id: Option<&str>, body: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update([0]);
    hasher.update(work_order_id.unwrap_or("").as_bytes());
    hasher.update([0]);
    // serde_json's map is ordered by key, so this serialisation is canonical. It is
    // written straight into the hash, never held as a string.
    let mut into_hash = HashWriter(&mut hasher);
    // Writing a `Value` into a sink that cannot fail cannot fail.
    let _ = serde_json::to_writer(&mut into_hash, body);
    hex(&hasher.finalize())
}

/// An `io::Write` that feeds a SHA-256.
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Lowercase hex of `bytes`, without a formatter call per byte (this runs per request).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The caller's `x-request-id` when it is short printable ASCII, else a new one.
fn request_id(headers: &HeaderMap) -> String {
    if let Some(given) = headers.get(REQUEST_ID).and_then(|v| v.to_str().ok())
        && !given.is_empty()
        && given.len() <= 128
        && given.bytes().all(|b| b.is_ascii_graphic())
    {
        return given.to_string();
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static BOOT: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let boot = BOOT.get_or_init(|| (unix_now() as u32) ^ std::process::id().rotate_left(16));
    format!("{boot:08x}-{:08x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_key_ignores_key_order_and_white_space() {
        let a: Value = serde_json::from_str(r#"{"A":1,"B":{"x":[1,2]}}"#).unwrap();
        let b: Value = serde_json::from_str("{ \"B\": {\"x\": [1, 2]},\n \"A\": 1 }").unwrap();
        assert_eq!(
            idempotency_key("r", Some("1"), &a),
            idempotency_key("r", Some("1"), &b)
        );
        assert_ne!(
            idempotency_key("r", Some("1"), &a),
            idempotency_key("r", Some("2"), &a)
        );
        assert_ne!(
            idempotency_key("r", Some("1"), &a),
            idempotency_key("q", Some("1"), &a)
        );
        assert_eq!(idempotency_key("r", None, &a).len(), 64);
        // Keys already in journals stay valid: SHA-256 of route, 0, id, 0, compact JSON.
        let mut plain = Sha256::new();
        plain.update(b"r\x001\x00");
        plain.update(a.to_string().as_bytes());
        let expected: String = plain
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(idempotency_key("r", Some("1"), &a), expected);
    }

    #[test]
    fn content_type_must_be_json() {
        let mut h = HeaderMap::new();
        assert!(check_content_type(&h).is_err());
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(check_content_type(&h).is_err());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert!(check_content_type(&h).is_ok());
    }

    #[test]
    fn json_errors_name_the_position() {
        let err = parse_json(b"{\"a\": }").unwrap_err();
        assert!(err.invalid_params[0].reason.contains("line 1"), "{err:?}");
        let err = parse_json(b"[1,2]").unwrap_err();
        assert!(err.invalid_params[0].reason.contains("an array"));
        let err = parse_json(b"  \n").unwrap_err();
        assert!(err.invalid_params[0].reason.contains("empty"));
    }

    #[test]
    fn caller_request_ids_are_kept_when_sane() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
    }
}
