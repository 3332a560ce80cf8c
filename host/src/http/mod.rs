//! The HTTP surface: every request goes through [`handle`], which finds the route, checks
//! the token, reads and decodes the body, calls the plugin and encodes its answer.
//!
//! Strategy, cheapest refusal first, and nothing parsed before it is needed:
//! 1. header count and size (431);
//! 2. route (404) and method (405);
//! 3. `x-access-token` (401);
//! 4. `Content-Type` (415), then the body within its size limit (413) and time (408);
//! 5. JSON with each key at most once per object, nesting and strings within their limits,
//!    then the contract's types, with the path of every problem (400);
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
pub mod drain;
pub mod hs256;
pub mod json;
pub mod limits;
pub mod login;
pub mod routes;

use crate::app::App;
use crate::contract::types::RequestContext;
use crate::contract::{self, Problem};
use crate::error::{ApiError, ErrorKind};
use crate::journal::Booked;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use routes::{Matched, RouteKind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::Instrument;

/// The header carrying the request id on every answer.
pub const REQUEST_ID: &str = "x-request-id";

/// The header set on an answer replayed from the idempotency journal.
pub const REPLAYED: &str = "x-followup-replayed";

/// The header naming the plugin version (`name@sha256:…`) that answered.
pub const PLUGIN_VERSION: &str = "x-followup-plugin";

/// Serves one request; never fails: every error becomes the Standard Response Object.
pub async fn handle(State(app): State<Arc<App>>, request: Request) -> Response {
    let started = std::time::Instant::now();
    let _serving = app.runtime.arrive();
    let request_id = request_id(request.headers());
    let mut seen = Seen::default();
    let span = otel_span!(
        "followup.request",
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %request.method(),
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        followup.request_id = %request_id,
        followup.route = tracing::field::Empty,
        followup.work_order_id = tracing::field::Empty,
        followup.plugin = tracing::field::Empty,
        followup.plugin_version = tracing::field::Empty,
        followup.outcome = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    crate::telemetry::continue_from(&span, request.headers());
    let served = serve(&app, request, &request_id, &mut seen)
        .instrument(span.clone())
        .await;
    let (mut response, outcome) = match served {
        Ok(response) if seen.replayed => (response, "replayed"),
        Ok(response) => (response, "ok"),
        Err(err) => {
            if !span.is_none() {
                span.record("error.type", err.kind.code());
                if err
                    .kind
                    .status(crate::config::StatusMode::Http)
                    .is_server_error()
                {
                    span.record("otel.status_code", "ERROR");
                }
            }
            if let Some(plugin) = &err.plugin {
                app.metrics.count_failure(plugin, err.kind.code());
            }
            if !matches!(
                err.kind,
                ErrorKind::InvalidRequest | ErrorKind::RequestRefused | ErrorKind::NotFound
            ) {
                let _in = span.enter();
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
    if !span.is_none() {
        span.record("followup.outcome", outcome);
        span.record("http.response.status_code", response.status().as_u16());
        if let Some(plugin) = &seen.plugin {
            span.record("followup.plugin", plugin.name.as_str());
            span.record("followup.plugin_version", plugin.version.as_str());
        }
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
            seen.close = !drain::drain(body, &parts.headers, &app.limits).await;
            return Err(err);
        }
    };
    // A logon body is two short strings: anything larger is refused before it is parsed.
    let max_body_bytes = match route.kind {
        RouteKind::Authentication => login::MAX_BODY_BYTES.min(app.max_body_bytes),
        _ => app.max_body_bytes,
    };
    let read = tokio::time::timeout(
        app.limits.body_timeout(),
        read_body(&mut body, &parts.headers, max_body_bytes),
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
            drain::linger(body, &parts.headers, &app.limits);
            return Err(err);
        }
    };
    if let Some(logon) = &route.logon {
        return log_on(app, &parts, route, logon, &body, request_id, seen).await;
    }
    let json = {
        let span = otel_span!(
            "followup.parse",
            followup.body_bytes = body.len(),
            error.type = tracing::field::Empty,
        );
        let _in = span.enter();
        json::parse_body(&body, &app.limits).inspect_err(|e| {
            span.record("error.type", e.kind.code());
        })?
    };

    let plugin = serving(app, route)?;
    seen.plugin = Some(plugin.ident.clone());
    let ctx = RequestContext {
        idempotency_key: crate::journal::idempotency_key(
            &route.name,
            work_order_id.as_deref(),
            &json,
        ),
        work_order_id,
        route: route.name.clone(),
        request_id: request_id.to_string(),
        claims,
    };
    match route.kind {
        RouteKind::BookJob => {
            // A canary may book this work order instead of the version serving.
            let (ran, booked) = app.book(route, plugin, &ctx, &json).await;
            seen.plugin = Some(ran);
            booked_response(booked?, seen)
        }
        // Answered by `log_on` above: every authentication route has its logon settings.
        RouteKind::Authentication => Err(ApiError::new(
            ErrorKind::Internal,
            format!("route {} has no logon settings", route.name),
        )),
        RouteKind::AppointmentSearch => {
            // Searches read the store but never change it.
            let services = read_only(app, &plugin);
            let (bytes, _) =
                crate::dispatch::answer(&app.runtime, &plugin, route.kind, &ctx, &json, services)
                    .await?;
            Ok(json_response(bytes))
        }
    }
}

/// A booking's answer: run now, or replayed from the journal (and marked so, with the
/// version that first answered).
fn booked_response(booked: Booked, seen: &mut Seen<'_>) -> Result<Response, ApiError> {
    match booked {
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
    }
}

/// The host services of a call that may read the store but never change it (a search, a
/// logon): a read-only key-value session when the plugin is granted the store.
fn read_only(app: &App, plugin: &crate::plugin::LoadedPlugin) -> crate::runtime::Services {
    crate::runtime::Services {
        kv: plugin.kv.then(|| {
            crate::storage::kv::KvSession::new(app.storage.clone(), &plugin.ident.name, false)
        }),
        ..Default::default()
    }
}

/// The plugin version serving `route` now.
fn serving(app: &App, route: &routes::Route) -> Result<Arc<crate::plugin::LoadedPlugin>, ApiError> {
    app.plugin(&route.plugin).ok_or_else(|| {
        ApiError::new(
            ErrorKind::PluginUnavailable,
            format!("plugin {} is not loaded", route.plugin),
        )
    })
}

/// An authentication route's request, once its body is read: the credentials, the
/// throttle, the plugin's verdict and the token (see [`login`]).
async fn log_on<'a>(
    app: &'a App,
    parts: &Parts,
    route: &'a routes::Route,
    logon: &login::Logon,
    body: &[u8],
    request_id: &str,
    seen: &mut Seen<'a>,
) -> Result<Response, ApiError> {
    let credentials = login::credentials(body)?;
    let client = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    if let Err(wait) =
        logon
            .throttle
            .admit(&credentials.username, client, std::time::Instant::now())
    {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        return Err(ApiError {
            retry_after: Some(seconds),
            ..ApiError::new(
                ErrorKind::LogonThrottled,
                format!("too many failed logons; try again in {seconds} s"),
            )
        });
    }
    let plugin = serving(app, route)?;
    seen.plugin = Some(plugin.ident.clone());
    let ctx = RequestContext {
        // A logon books nothing: there is nothing a retry could double.
        idempotency_key: String::new(),
        work_order_id: None,
        route: route.name.clone(),
        request_id: request_id.to_string(),
        claims: None,
    };
    let services = read_only(app, &plugin);
    let identity =
        crate::dispatch::authenticate(&app.runtime, &plugin, &ctx, &credentials, services).await;
    match identity {
        Ok(identity) => {
            logon.throttle.succeeded(&credentials.username);
            let token = logon.mint(&identity, crate::clock::unix_seconds(), &plugin.ident)?;
            Ok(json_response(token))
        }
        Err(err) => {
            if err.kind == ErrorKind::InvalidLogon {
                logon
                    .throttle
                    .failed(&credentials.username, client, std::time::Instant::now());
            }
            Err(err)
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
    if crate::telemetry::on() {
        let span = tracing::Span::current();
        span.record("http.route", route.path.as_str());
        span.record("followup.route", route.name.as_str());
        if let Some(id) = &work_order_id {
            span.record("followup.work_order_id", id.as_str());
        }
    }
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
    let claims = {
        let span = otel_span!("followup.token", error.type = tracing::field::Empty);
        let _in = span.enter();
        auth::check(&route.token, token, unix_now()).inspect_err(|e| {
            span.record("error.type", e.kind.code());
        })?
    };
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
/// is borrowed so that what is left of it on a refusal can still be [`drain::linger`]ed over.
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
    // `{boot:08x}-{n:08x}`, written by hand: the formatter is a measurable part of a
    // request this small.
    let mut id = String::with_capacity(17);
    push_hex(&mut id, u64::from(*boot));
    id.push('-');
    push_hex(&mut id, NEXT.fetch_add(1, Ordering::Relaxed));
    id
}

/// Appends `value` in lowercase hexadecimal, at least eight digits (as `{value:08x}`).
fn push_hex(out: &mut String, value: u64) {
    let digits = ((64 - value.leading_zeros() as usize).div_ceil(4)).max(8);
    for at in (0..digits).rev() {
        let nibble = (value >> (at * 4)) & 0xf;
        out.push(char::from(b"0123456789abcdef"[nibble as usize]));
    }
}

fn unix_now() -> i64 {
    i64::try_from(crate::clock::unix_seconds()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn caller_request_ids_are_kept_when_sane() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
    }

    #[test]
    fn request_ids_are_padded_hex_as_formatted() {
        for value in [0, 1, 0xabc, 0xffff_ffff, 0x1_0000_0000, u64::MAX] {
            let mut id = String::new();
            push_hex(&mut id, value);
            assert_eq!(id, format!("{value:08x}"));
        }
        let id = request_id(&HeaderMap::new());
        let (boot, n) = id.split_once('-').unwrap();
        assert_eq!((boot.len(), n.len()), (8, 8), "{id}");
        assert!(
            id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()),
            "{id}"
        );
    }
}
