//! The HTTP surface: every request goes through [`handle`], which finds the route, checks
//! the token, reads and decodes the body, calls the plugin and encodes its answer.
//!
//! Strategy, cheapest refusal first, and nothing parsed before it is needed:
//! 1. header count and size (431);
//! 2. route (404) and method (405);
//! 3. `x-access-token` (401);
//! 4. `Content-Type` (415), then the body within its size limit (413) and time (408);
//! 5. JSON shape (depth, string length), JSON with each key at most once per object, then
//!    the contract's types with the path of every problem (400);
//! 6. the plugin, in a fresh sandboxed instance;
//! 7. the plugin's answer, checked against the contract before it leaves (500/502).
//!
//! Header reading itself is bounded by hyper (see [`crate::run`]): a client that does not
//! send its headers within `header_timeout_ms` is disconnected.
//!
//! Connections are kept alive, so every answer leaves the connection able to carry the
//! next request or says `Connection: close`; hyper would otherwise close a connection whose
//! body was left unread right after the answer, without a word, and a pooling client would
//! lose the next request it sends on it. A request refused before its body was read (steps
//! 1–3 and a wrong `Content-Type`) gets its small body read and discarded first (see
//! [`drain`]); a body too large for that, a late one, or one announced with
//! `Expect: 100-continue` is not read, and the answer closes the connection, as does every
//! refusal of the body itself (413, 408).

pub mod auth;
pub mod limits;
pub mod routes;

use crate::App;
use crate::contract::types::RequestContext;
use crate::contract::{self, Problem};
use crate::error::{ApiError, ErrorKind};
use crate::journal::Booked;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body::Body as _;
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
    if seen.close {
        // The body was not read to its end, so the connection cannot carry another
        // request: the client must know before it sends one.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
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
    /// The body was left unread: the answer closes the connection.
    close: bool,
}

async fn serve<'a>(
    app: &'a App,
    request: Request,
    request_id: &str,
    seen: &mut Seen<'a>,
) -> Result<Response, ApiError> {
    let (parts, mut body) = request.into_parts();
    let Admitted {
        route,
        work_order_id,
        claims,
    } = match admit(app, &parts, seen) {
        Ok(admitted) => admitted,
        Err(err) => {
            seen.close = !drain(body, &parts.headers, &app.limits).await;
            return Err(err);
        }
    };
    let read = tokio::time::timeout(
        app.limits.body_timeout(),
        read_body(&mut body, &parts.headers, app.max_body_bytes),
    )
    .await
    .unwrap_or_else(|_elapsed| {
        Err(ApiError::new(
            ErrorKind::RequestTimeout,
            format!(
                "the body did not arrive within {} ms",
                app.limits.body_timeout_ms
            ),
        ))
    });
    let body = match read {
        Ok(bytes) => bytes,
        Err(err) => {
            // Over the limit, late or broken: the rest of the body stays unread.
            seen.close = true;
            linger(body, &parts.headers, &app.limits);
            return Err(err);
        }
    };
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
        RouteKind::BookJob => match app.journal.book(&app.runtime, &plugin, &ctx, &json).await? {
            Booked::Ran(bytes) => Ok(json_response(bytes)),
            Booked::Replayed(done) => {
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
                crate::dispatch::answer(&app.runtime, &plugin, route.kind, &ctx, &json, services)
                    .await?;
            Ok(json_response(bytes))
        }
    }
}

/// A request that passed every check made before its body is read.
struct Admitted<'a> {
    route: &'a routes::Route,
    work_order_id: Option<String>,
    claims: Option<contract::types::TokenClaims>,
}

/// The checks made before the body is read, cheapest first: header count and size, route,
/// method, token, `Content-Type`.
fn admit<'a>(app: &'a App, parts: &Parts, seen: &mut Seen<'a>) -> Result<Admitted<'a>, ApiError> {
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
    Ok(Admitted {
        route,
        work_order_id,
        claims,
    })
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
/// `Content-Length` is trusted for an early refusal, never for the read itself). The body
/// is borrowed so that what is left of it on a refusal can still be [`linger`]ed over.
async fn read_body(body: &mut Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
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

/// Reads and discards the body of a request refused before its body was read, so that the
/// connection can carry the client's next request; `true` when the body ended within
/// [`limits::DRAIN_MAX_BYTES`] and [`limits::InputLimits::drain_timeout`]. `false` (the
/// answer must close the connection) when it is announced or turns out larger, is late,
/// fails, or is held back by a client that sent `Expect: 100-continue`: hyper answers that
/// expectation as soon as the body is read, which would invite the very body the host is
/// refusing, so such a client gets its answer at once instead, with `Connection: close`
/// (RFC 9110, section 10.1.1).
async fn drain(mut body: Body, headers: &HeaderMap, limits: &limits::InputLimits) -> bool {
    if body.is_end_stream() {
        return true;
    }
    if expects_continue(headers) {
        return false;
    }
    let drained = body.size_hint().lower() <= limits::DRAIN_MAX_BYTES
        && tokio::time::timeout(
            limits.drain_timeout(),
            discard(&mut body, limits::DRAIN_MAX_BYTES),
        )
        .await
        .unwrap_or(false);
    if !drained {
        linger(body, headers, limits);
    }
    drained
}

/// Goes on reading and discarding what is left of a body the host will not read to its end,
/// for at most [`limits::InputLimits::drain_timeout`] and [`limits::LINGER_MAX_BYTES`],
/// while the answer that closes the connection goes out; hyper closes the connection once
/// the body ends or is let go. Not for a client waiting for `100 Continue` (see [`drain`]).
fn linger(body: Body, headers: &HeaderMap, limits: &limits::InputLimits) {
    if body.is_end_stream() || expects_continue(headers) {
        return;
    }
    let timeout = limits.drain_timeout();
    tokio::spawn(async move {
        let mut body = body;
        let _ = tokio::time::timeout(timeout, discard(&mut body, limits::LINGER_MAX_BYTES)).await;
    });
}

/// Reads `body` to its end, keeping nothing; `false` when it is longer than `max` bytes or
/// fails.
async fn discard(body: &mut Body, max: u64) -> bool {
    let mut left = max;
    while let Some(frame) = http_body_util::BodyExt::frame(body).await {
        let Ok(frame) = frame else {
            return false;
        };
        if let Some(data) = frame.data_ref() {
            let Some(rest) = left.checked_sub(data.len() as u64) else {
                return false;
            };
            left = rest;
        }
    }
    true
}

/// Whether the client waits for `100 Continue` before it sends its body.
fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Checks the body's shape against `limits`, then parses it as a JSON object. This and
/// [`contract::decode`] are everything that touches untrusted bytes before a plugin runs
/// (and what the fuzz target drives).
pub fn parse_body(body: &[u8], limits: &limits::InputLimits) -> Result<Value, ApiError> {
    limits.check_json_shape(body)?;
    parse_json(body)
}

/// Parses the body as a JSON object, with the position of a syntax error and the path of a
/// key given twice in one object.
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
    let value = unique_keys::from_slice(body).map_err(|e| match e {
        unique_keys::Refused::Duplicate(duplicate) => ApiError::invalid(vec![Problem {
            path: duplicate.path(),
            reason: "is given more than once in the same object; send each key once".into(),
            value: contract::codec::value_text(&duplicate.value),
            name: duplicate.key,
        }]),
        unique_keys::Refused::Syntax(e) => problem(
            format!(
                "is not valid JSON: {e} (line {}, column {})",
                e.line(),
                e.column()
            ),
            "",
        ),
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

/// JSON parsing that refuses an object with the same key twice.
///
/// `serde_json` keeps the last of a repeated key; ServiceMobility, a customer's system or a
/// plugin's own parser may keep the first, and then the host would check, key and book one
/// request while the others act on another. The check rides on the one parse: a visitor
/// builds the same [`Value`] `serde_json` would and notices the map entry that is already
/// taken. The path to the duplicate is built only when there is one, a segment per level
/// as the error travels out of the nesting, so a body without duplicates costs what
/// `serde_json::from_slice` costs.
mod unique_keys {
    use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
    use serde_json::map::Entry;
    use serde_json::{Map, Number, Value};
    use std::fmt::{self, Write as _};

    /// Why a body did not parse.
    #[derive(Debug)]
    pub enum Refused {
        /// Not JSON, or more than one JSON value.
        Syntax(serde_json::Error),
        Duplicate(Box<Duplicate>),
    }

    /// A key given twice in one object.
    #[derive(Debug)]
    pub struct Duplicate {
        pub key: String,
        /// The value given the second time.
        pub value: Value,
        /// From the duplicate out to the body.
        segments: Vec<Segment>,
    }

    #[derive(Debug)]
    enum Segment {
        Key(String),
        Index(usize),
    }

    impl Duplicate {
        /// The JSON path of the duplicate, as the contract's decoder writes paths
        /// (`$.RequiredParts[1].Qty`).
        pub fn path(&self) -> String {
            let mut path = String::from("$");
            for segment in self.segments.iter().rev() {
                match segment {
                    Segment::Key(key) => {
                        path.push('.');
                        path.push_str(key);
                    }
                    // Writing into a String cannot fail.
                    Segment::Index(i) => {
                        let _ = write!(path, "[{i}]");
                    }
                }
            }
            path
        }
    }

    /// Parses one JSON text, as `serde_json::from_slice::<Value>` does, refusing duplicate
    /// keys.
    pub fn from_slice(bytes: &[u8]) -> Result<Value, Refused> {
        let mut duplicate = None;
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let parsed = Seed(&mut duplicate)
            .deserialize(&mut de)
            .and_then(|value| de.end().map(|()| value));
        parsed.map_err(|e| match duplicate {
            Some(duplicate) => Refused::Duplicate(duplicate),
            None => Refused::Syntax(e),
        })
    }

    /// Deserialises one value; on finding a duplicate it records it here and fails.
    struct Seed<'a>(&'a mut Option<Box<Duplicate>>);

    impl Seed<'_> {
        /// Adds `segment` to the path of a duplicate found inside the current value.
        fn on_the_way_out(&mut self, segment: impl FnOnce() -> Segment) {
            if let Some(duplicate) = self.0.as_deref_mut() {
                duplicate.segments.push(segment());
            }
        }
    }

    impl<'de> DeserializeSeed<'de> for Seed<'_> {
        type Value = Value;

        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Seed<'_> {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }

        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }

        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::Number(v.into()))
        }

        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::Number(v.into()))
        }

        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            // As serde_json's own `Value`; JSON text has no NaN or infinity.
            Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
        }

        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }

        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }

        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }

        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Value, A::Error> {
            let mut items = Vec::new();
            loop {
                match seq.next_element_seed(Seed(&mut *self.0)) {
                    Ok(Some(item)) => items.push(item),
                    Ok(None) => return Ok(Value::Array(items)),
                    Err(e) => {
                        self.on_the_way_out(|| Segment::Index(items.len()));
                        return Err(e);
                    }
                }
            }
        }

        fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Value, A::Error> {
            let mut object = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = match map.next_value_seed(Seed(&mut *self.0)) {
                    Ok(value) => value,
                    Err(e) => {
                        self.on_the_way_out(|| Segment::Key(key));
                        return Err(e);
                    }
                };
                match object.entry(key) {
                    Entry::Vacant(slot) => {
                        slot.insert(value);
                    }
                    Entry::Occupied(slot) => {
                        let key = slot.key().clone();
                        *self.0 = Some(Box::new(Duplicate {
                            segments: vec![Segment::Key(key.clone())],
                            key,
                            value,
                        }));
                        return Err(de::Error::custom("duplicate key"));
                    }
                }
            }
            Ok(Value::Object(object))
        }
    }
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
    crate::text::hex(&hasher.finalize())
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

    fn duplicate(body: &str) -> (String, String, String) {
        let err = parse_json(body.as_bytes()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidRequest);
        assert_eq!(err.invalid_params.len(), 1, "{err:?}");
        let p = &err.invalid_params[0];
        assert!(p.reason.contains("more than once"), "{err:?}");
        (p.name.clone(), p.path.clone(), p.value.clone())
    }

    #[test]
    fn a_key_given_twice_is_refused_with_its_path() {
        assert_eq!(
            duplicate(r#"{"A":1,"B":2,"A":3}"#),
            ("A".into(), "$.A".into(), "3".into())
        );
        assert_eq!(
            duplicate(r#"{"Account":{"Name":"x","Id":1,"Name":"y"}}"#).1,
            "$.Account.Name"
        );
        assert_eq!(
            duplicate(r#"{"RequiredParts":[{"Qty":1},{"Qty":1,"Part":"p","Qty":9}]}"#),
            ("Qty".into(), "$.RequiredParts[1].Qty".into(), "9".into())
        );
        assert_eq!(
            duplicate(r#"{"a":[[1],[2,{"b":{"c":0,"c":{}}}]]}"#).1,
            "$.a[1][1].b.c"
        );
        // Keys are compared as decoded: an escape does not hide a duplicate.
        assert_eq!(duplicate(r#"{"Qty":1,"\u0051ty":2}"#).1, "$.Qty");
        // The first duplicate is reported, even before a syntax error further on.
        assert_eq!(duplicate(r#"{"a":1,"a":2,"#).1, "$.a");
    }

    #[test]
    fn the_same_key_in_different_objects_is_no_duplicate() {
        let value =
            parse_json(br#"{"A":{"Name":1},"B":{"Name":2},"C":[{"Name":3},{"Name":4}]}"#).unwrap();
        assert_eq!(value["C"][1]["Name"], 4);
        // Keys differing only in case are different keys.
        assert!(parse_json(br#"{"qty":1,"Qty":2}"#).is_ok());
    }

    #[test]
    fn the_strict_parser_builds_what_serde_json_builds() {
        // (The contract's examples go through it in every booking of the integration tests.)
        let bodies: [&[u8]; 4] = [
            br#"{"Account":{"Name":"R Morales","Lat":"40.7","Lon":-73.9},"RequiredParts":[{"Part":"W1","Qty":2},{"Part":"W2","Qty:":1}],"TimeConstraints":[{"Period":{"Start":"2024-06-17T16:00:00.000Z","End":"2024-06-17T20:00:00Z"}}]}"#,
            br#"{"n":[0,-0,1.5,-2.25e-3,18446744073709551615,-9223372036854775808,1e308,0.1]}"#,
            br#"{"s":"a\"b\\c\u00e9\ud83d\ude00\n","t":true,"f":false,"z":null,"e":{},"a":[]}"#,
            b" {\"padded\" : [ 1 , 2 ] } \n",
        ];
        for body in bodies {
            let ours = parse_json(body).unwrap();
            let theirs: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(body));
            assert_eq!(ours.to_string(), theirs.to_string());
        }
        // Whatever serde_json refuses is refused, with its position.
        for body in [
            &b"{\"a\":1} {}"[..],
            b"{\"a\":1e400}",
            b"{\"a\":tru}",
            b"{\"a\"",
        ] {
            let err = parse_json(body).unwrap_err();
            assert!(serde_json::from_slice::<Value>(body).is_err());
            assert!(err.invalid_params[0].reason.contains("line 1"), "{err:?}");
        }
    }

    #[test]
    fn only_an_expectation_of_100_continue_holds_the_body_back() {
        let mut h = HeaderMap::new();
        assert!(!expects_continue(&h));
        h.insert(header::EXPECT, HeaderValue::from_static("100-Continue"));
        assert!(expects_continue(&h));
        h.insert(header::EXPECT, HeaderValue::from_static("something-else"));
        assert!(!expects_continue(&h));
    }

    #[tokio::test]
    async fn discarding_stops_past_its_bound() {
        assert!(discard(&mut Body::from("12345"), 5).await);
        assert!(!discard(&mut Body::from("123456"), 5).await);
        assert!(discard(&mut Body::empty(), 0).await);
    }

    #[tokio::test]
    async fn an_empty_or_small_body_is_drained_and_a_large_one_is_not() {
        let limits = limits::InputLimits::default();
        let h = HeaderMap::new();
        assert!(drain(Body::empty(), &h, &limits).await);
        assert!(drain(Body::from("x".repeat(64 << 10)), &h, &limits).await);
        assert!(!drain(Body::from("x".repeat((64 << 10) + 1)), &h, &limits).await);
        let mut expecting = HeaderMap::new();
        expecting.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        assert!(!drain(Body::from("{}"), &expecting, &limits).await);
        // An empty body needs no 100 Continue.
        assert!(drain(Body::empty(), &expecting, &limits).await);
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
