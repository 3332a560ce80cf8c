//! Outbound HTTP for plugins: standard `wasi:http/outgoing-handler`, with every request
//! checked against the plugin's grant before it leaves.
//!
//! A request goes out only to an origin (scheme, host, port) on the plugin's allow-list,
//! at most `max_calls` times per call of the plugin, within `timeout_ms` (connect, first
//! byte and between bytes, whatever the guest asks for), and its response body is cut at
//! `max_response_bytes`. Anything else fails inside the guest with a `wasi:http` error code
//! (`HTTP-request-denied`, `connection-timeout`, `HTTP-response-body-size`, …), and the host
//! logs why, tagged with plugin, version and request id (the URL cut to
//! [`LOGGED_URL_BYTES`]). Request bodies a guest writes ahead of the customer system wait
//! in host buffers charged to the call (see [`HTTP_BODY_BUFFER_BYTES`]).

use super::sandbox::{HTTP_BODY_BUFFER_BYTES, HTTP_BODY_CHUNK_BYTES};
use crate::config::{HttpGrant, Origin};
use crate::contract::PluginIdent;
use crate::tape::world::Replayed;
use crate::tape::{Blob, Exchange, Recorder};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tracing::Instrument;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

impl HttpGrant {
    fn allows(&self, origin: &Origin) -> bool {
        self.allow
            .iter()
            .filter_map(|o| Origin::parse(o).ok())
            .any(|o| o == *origin)
    }
}

/// The `wasi:http` hooks of one plugin call: what it was granted and what it has used.
#[derive(Debug, Clone)]
pub struct OutboundPolicy {
    grant: Option<Arc<HttpGrant>>,
    ident: Option<Arc<PluginIdent>>,
    request_id: Option<Arc<str>>,
    calls: u32,
    /// Bytes of body buffers handed out to the call's outgoing bodies so far.
    body_buffers: usize,
    /// The call's `followup.plugin_call` span, parent of each request's `followup.http`.
    span: tracing::Span,
    /// Whether requests go out and are recorded, or are answered from a tape.
    tape: Tape,
}

/// What happens to a call's requests besides the checks.
#[derive(Debug, Clone, Default)]
pub enum Tape {
    /// They go out.
    #[default]
    Off,
    /// They go out, and each exchange is recorded (bodies buffered whole).
    Record(Recorder),
    /// Nothing goes out: each is answered by the recorded exchange of the same request.
    Replay(Arc<Replayed>),
}

impl Default for OutboundPolicy {
    /// Nothing granted, nothing used.
    fn default() -> Self {
        OutboundPolicy {
            grant: None,
            ident: None,
            request_id: None,
            calls: 0,
            body_buffers: 0,
            span: tracing::Span::none(),
            tape: Tape::Off,
        }
    }
}

/// How much of a refused URL the log shows: enough to recognise it, never a plugin's
/// megabytes.
pub const LOGGED_URL_BYTES: usize = 256;

impl OutboundPolicy {
    pub fn new(
        grant: Option<Arc<HttpGrant>>,
        ident: Arc<PluginIdent>,
        request_id: Arc<str>,
        span: tracing::Span,
    ) -> OutboundPolicy {
        OutboundPolicy {
            grant,
            ident: Some(ident),
            request_id: Some(request_id),
            calls: 0,
            body_buffers: 0,
            span,
            tape: Tape::Off,
        }
    }

    /// Records the call's exchanges, or answers its requests from a tape.
    pub fn with_tape(mut self, tape: Tape) -> OutboundPolicy {
        self.tape = tape;
        self
    }

    /// Bytes of outgoing body buffers the call was handed.
    pub fn body_buffer_bytes(&self) -> usize {
        self.body_buffers
    }

    /// Requests the call has made (refused ones included).
    pub fn calls(&self) -> u32 {
        self.calls
    }

    /// Why `uri` may not be called now, if it may not.
    fn refusal(&mut self, uri: &http::Uri) -> Option<String> {
        let Some(grant) = &self.grant else {
            return Some("outbound HTTP is not granted".into());
        };
        self.calls += 1;
        if self.calls > grant.max_calls {
            return Some(format!(
                "more than {} outbound requests in one call",
                grant.max_calls
            ));
        }
        let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
        let origin = Origin {
            port: uri
                .port_u16()
                .unwrap_or(if scheme == "https" { 443 } else { 80 }),
            scheme,
            host: uri.host().unwrap_or("").to_ascii_lowercase(),
        };
        (!grant.allows(&origin)).then(|| {
            format!(
                "{}://{}:{} is not on the plugin's allow-list",
                origin.scheme, origin.host, origin.port
            )
        })
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;
type Sent = Box<
    dyn Future<Output = wasmtime_wasi_http::Result<(http::Response<WasiBody>, IoFuture)>> + Send,
>;

impl WasiHttpHooks for OutboundPolicy {
    /// Each outgoing body may hold one chunk queued and one in flight; a call's bodies
    /// together get at most [`HTTP_BODY_BUFFER_BYTES`]. A body created past that gets no
    /// buffer at all: writing to it never succeeds, and the call runs into its deadline.
    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        let left = HTTP_BODY_BUFFER_BYTES.saturating_sub(self.body_buffers);
        let chunk = HTTP_BODY_CHUNK_BYTES.min(left / 2);
        self.body_buffers += 2 * chunk;
        chunk
    }

    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        1
    }

    /// With traces on, each request gets a `followup.http` span (origin, method, status;
    /// never the path, query or headers) and a `traceparent` naming it, in place of any
    /// the guest set: the host's span is the request's true parent.
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _io: IoFuture,
    ) -> Sent {
        let refusal = self.refusal(request.uri());
        let span = otel_span!(
            parent: &self.span,
            "followup.http",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = %request.method(),
            url.origin = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        if !span.is_none() {
            span.record(
                "url.origin",
                crate::telemetry::origin(request.uri()).as_str(),
            );
            if refusal.is_none() {
                crate::telemetry::inject(&span, request.headers_mut());
            }
        }
        let (traced, status) = (span.clone(), span.clone());
        let failed = move |e: &str| {
            traced.record("error.type", e);
            traced.record("otel.status_code", "ERROR");
        };
        let ident = self.ident.clone();
        let request_id = self.request_id.clone();
        let uri = crate::text::cut(&request.uri().to_string(), LOGGED_URL_BYTES);
        let (timeout, max_body) = self.grant.as_ref().map_or((Duration::ZERO, 0), |g| {
            (Duration::from_millis(g.timeout_ms), g.max_response_bytes)
        });
        let log = move |why: &str| {
            tracing::warn!(
                plugin = ident.as_ref().map(|i| i.to_string()),
                request_id = request_id.as_deref(),
                %uri,
                "outbound request refused: {}",
                crate::text::cut(why, LOGGED_URL_BYTES * 2)
            );
        };
        let tape = self.tape.clone();
        Box::new(
            async move {
                if let Some(why) = refusal {
                    failed("refused");
                    log(&why);
                    return Err(if why.starts_with("more than") {
                        Error::InternalError(Some(why))
                    } else {
                        Error::HttpRequestDenied
                    });
                }
                let (request, recorder) = match tape {
                    Tape::Off => (request, None),
                    Tape::Replay(replayed) => {
                        let answer = from_tape(&replayed, request).await;
                        if let Err(Error::InternalError(Some(why))) = &answer {
                            failed("not-recorded");
                            log(why);
                        }
                        return answer;
                    }
                    Tape::Record(recorder) => {
                        let (request, exchange) = buffered(request, &recorder).await?;
                        (request, exchange.map(|e| (recorder, e)))
                    }
                };
                // The guest's own timeouts apply only when shorter than the grant's.
                let mut o = options.unwrap_or_default();
                let clamp = |t: Option<Duration>| Some(t.map_or(timeout, |t| t.min(timeout)));
                o.connect_timeout = clamp(o.connect_timeout);
                o.first_byte_timeout = clamp(o.first_byte_timeout);
                o.between_bytes_timeout = clamp(o.between_bytes_timeout);
                let sent = tokio::time::timeout(
                    timeout,
                    wasmtime_wasi_http::default_send_request(request, Some(o)),
                )
                .await;
                let (response, io) = match sent {
                    Ok(Ok(answer)) => answer,
                    Ok(Err(e)) => {
                        if let Some((recorder, mut exchange)) = recorder {
                            exchange.error = Some(format!("{e:?}"));
                            recorder.http(exchange);
                        }
                        failed(
                            format!("{e:?}")
                                .split(['(', ' ', '{'])
                                .next()
                                .unwrap_or("error"),
                        );
                        return Err(e);
                    }
                    Err(_) => {
                        failed("timeout");
                        log(&format!("no answer within {} ms", timeout.as_millis()));
                        if let Some((recorder, mut exchange)) = recorder {
                            exchange.error = Some(format!("{:?}", Error::ConnectionReadTimeout));
                            recorder.http(exchange);
                        }
                        return Err(Error::ConnectionReadTimeout);
                    }
                };
                status.record("http.response.status_code", response.status().as_u16());
                let declared = response
                    .headers()
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if let Some(len) = declared.filter(|len| *len > max_body) {
                    failed("response-too-large");
                    log(&format!("response of {len} bytes, over {max_body}"));
                    if let Some((recorder, mut exchange)) = recorder {
                        exchange.error =
                            Some(format!("{:?}", Error::HttpResponseBodySize(Some(len))));
                        recorder.http(exchange);
                    }
                    return Err(Error::HttpResponseBodySize(Some(len)));
                }
                let response = response.map(|body| {
                    Capped {
                        inner: body.boxed_unsync(),
                        left: max_body,
                        limit: max_body,
                    }
                    .boxed_unsync()
                });
                match recorder {
                    None => Ok((response, Box::new(io) as IoFuture)),
                    Some((recorder, exchange)) => {
                        recorded(response, io, timeout, recorder, exchange).await
                    }
                }
            }
            .instrument(span),
        )
    }
}

/// Most bytes of an outgoing body buffered for a tape; a larger one still goes out, and
/// the tape is marked incomplete.
const MAX_RECORDED_BODY: usize = 1 << 20;

/// The request with its body read whole (so that the tape holds it), and the exchange to
/// complete once answered; no exchange when the body is over the tape's room.
async fn buffered(
    request: http::Request<WasiBody>,
    recorder: &Recorder,
) -> Result<(http::Request<WasiBody>, Option<Exchange>), Error> {
    let room = recorder.room().min(MAX_RECORDED_BODY);
    let (parts, mut body) = request.into_parts();
    let mut kept = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Some(data) = frame.data_ref() {
            kept.extend_from_slice(data);
        }
        if kept.len() > room {
            // Too large for the tape: it goes out as it comes, unrecorded.
            recorder.overflowed();
            let joined = Chained {
                first: Some(whole(kept.freeze())),
                then: body,
            };
            return Ok((
                http::Request::from_parts(parts, joined.boxed_unsync()),
                None,
            ));
        }
    }
    let kept = kept.freeze();
    let exchange = Exchange {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        body: Blob::of(&kept),
        status: None,
        headers: Vec::new(),
        response: None,
        error: None,
    };
    Ok((
        http::Request::from_parts(parts, whole(kept)),
        Some(exchange),
    ))
}

/// The response read whole into the tape, then handed to the guest. The connection is
/// driven beside the reading, as the guest's own reads would drive it.
async fn recorded(
    response: http::Response<WasiBody>,
    io: impl Future<Output = Result<(), Error>> + Send + 'static,
    timeout: Duration,
    recorder: Recorder,
    mut exchange: Exchange,
) -> wasmtime_wasi_http::Result<(http::Response<WasiBody>, IoFuture)> {
    let driver = tokio::spawn(tokio::time::timeout(timeout, io));
    let (parts, body) = response.into_parts();
    exchange.status = Some(parts.status.as_u16());
    exchange.headers = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let read = tokio::time::timeout(timeout, body.collect()).await;
    let bytes = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) => {
            exchange.error = Some(format!("{e:?}"));
            recorder.http(exchange);
            driver.abort();
            return Err(e);
        }
        Err(_) => {
            exchange.error = Some(format!("{:?}", Error::ConnectionReadTimeout));
            recorder.http(exchange);
            driver.abort();
            return Err(Error::ConnectionReadTimeout);
        }
    };
    exchange.response = Some(Blob::of(&bytes));
    recorder.http(exchange);
    let io = async move { driver.await.ok().and_then(Result::ok).unwrap_or(Ok(())) };
    Ok((
        http::Response::from_parts(parts, whole(bytes)),
        Box::new(io) as IoFuture,
    ))
}

/// The recorded answer to a request of a replayed call: nothing leaves the host. A request
/// the recorded call did not make fails with `internal-error("not-recorded: …")`.
async fn from_tape(
    replayed: &Replayed,
    request: http::Request<WasiBody>,
) -> wasmtime_wasi_http::Result<(http::Response<WasiBody>, IoFuture)> {
    let (parts, body) = request.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_RECORDED_BODY);
    let body = limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let (method, uri) = (parts.method.to_string(), parts.uri.to_string());
    let Some(exchange) = replayed.answer(&method, &uri, &body) else {
        return Err(Error::InternalError(Some(format!(
            "not-recorded: the recorded booking made no {method} {} with this body",
            crate::text::cut(&uri, LOGGED_URL_BYTES)
        ))));
    };
    if let Some(error) = &exchange.error {
        return Err(recorded_error(error));
    }
    let mut response = http::Response::builder().status(exchange.status.unwrap_or(200));
    for (name, value) in &exchange.headers {
        response = response.header(name, value);
    }
    let bytes = exchange.response.map(|b| b.bytes()).unwrap_or_default();
    let response = response
        .body(whole(Bytes::from(bytes)))
        .map_err(|e| Error::InternalError(Some(format!("a recorded response is invalid: {e}"))))?;
    Ok((response, Box::new(async { Ok(()) }) as IoFuture))
}

/// The error a recorded request failed with, as the guest saw it (by its name; one the
/// host does not name again comes back as an internal error with the recorded text).
fn recorded_error(text: &str) -> Error {
    let name = text.split(['(', ' ', '{']).next().unwrap_or("");
    match name {
        "ConnectionRefused" => Error::ConnectionRefused,
        "ConnectionTerminated" => Error::ConnectionTerminated,
        "ConnectionTimeout" => Error::ConnectionTimeout,
        "ConnectionReadTimeout" => Error::ConnectionReadTimeout,
        "DestinationNotFound" => Error::DestinationNotFound,
        "DestinationUnavailable" => Error::DestinationUnavailable,
        "HttpRequestDenied" => Error::HttpRequestDenied,
        "HttpResponseTimeout" => Error::HttpResponseTimeout,
        "HttpResponseIncomplete" => Error::HttpResponseIncomplete,
        "HttpProtocolError" => Error::HttpProtocolError,
        "HttpResponseBodySize" => Error::HttpResponseBodySize(None),
        _ => Error::InternalError(Some(text.to_string())),
    }
}

/// A body of bytes held whole.
fn whole(bytes: Bytes) -> WasiBody {
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body whose first part was read ahead: that part, then the rest as it comes.
struct Chained {
    first: Option<WasiBody>,
    then: WasiBody,
}

impl Body for Chained {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if let Some(first) = &mut this.first {
            match Pin::new(first).poll_frame(cx) {
                Poll::Ready(None) => this.first = None,
                other => return other,
            }
        }
        Pin::new(&mut this.then).poll_frame(cx)
    }
}

/// A response body cut at `limit` bytes (for answers without a `Content-Length`).
struct Capped {
    inner: WasiBody,
    left: u64,
    limit: u64,
}

impl Body for Capped {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                if n > this.left {
                    this.left = 0;
                    return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(this.limit)))));
                }
                this.left -= n;
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], max_calls: u32) -> OutboundPolicy {
        OutboundPolicy::new(
            Some(Arc::new(HttpGrant {
                allow: allow.iter().map(|s| s.to_string()).collect(),
                timeout_ms: 100,
                max_response_bytes: 10,
                max_calls,
            })),
            Arc::new(PluginIdent {
                name: "p".into(),
                version: "sha256:0".into(),
            }),
            Arc::from("r"),
            tracing::Span::none(),
        )
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let mut p = policy(&["https://api.acme.example", "http://127.0.0.1:9000/"], 10);
        let uri = |u: &str| u.parse::<http::Uri>().unwrap();
        assert_eq!(p.refusal(&uri("https://api.acme.example/book")), None);
        assert_eq!(p.refusal(&uri("https://API.acme.example:443/x")), None);
        assert_eq!(p.refusal(&uri("http://127.0.0.1:9000/x?y=1")), None);
        assert!(
            p.refusal(&uri("http://api.acme.example/book")).is_some(),
            "scheme"
        );
        assert!(
            p.refusal(&uri("https://api.acme.example:8443/")).is_some(),
            "port"
        );
        assert!(p.refusal(&uri("http://127.0.0.1:9001/")).is_some());
        assert!(p.refusal(&uri("https://evil.example/")).is_some());
        let mut none = OutboundPolicy::default();
        assert!(none.refusal(&uri("https://api.acme.example/")).is_some());
    }

    #[test]
    fn calls_per_booking_are_capped() {
        let mut p = policy(&["http://h"], 2);
        let uri: http::Uri = "http://h/".parse().unwrap();
        assert_eq!(p.refusal(&uri), None);
        assert_eq!(p.refusal(&uri), None);
        assert!(p.refusal(&uri).unwrap().contains("more than 2"));
    }
}
