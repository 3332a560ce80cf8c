//! Traces: OpenTelemetry spans of every request, exported over OTLP/HTTP when the standard
//! `OTEL_*` variables ask for it, and the W3C `traceparent` in and out.
//!
//! Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set
//! (and neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none`). Off, the request
//! path makes no span at all: every span is made through `otel_span!`, which asks [`on`] (one
//! relaxed load) first. On, spans have the target [`TARGET`]; only the OpenTelemetry layer
//! takes that target, so the log never formats them, and only spans reach the exporter,
//! never log events (a plugin's log text stays in the log).
//!
//! Span names and attributes are documented in docs/operations.md ("Traces"). What must
//! never be in one: a body, a password, a token, a header, a key-value key or value, an
//! outbound URL's path or query (only its origin).

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::Dispatch;
use tracing::dispatcher::WeakDispatch;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of every span meant for the exporter (and of nothing else).
pub const TARGET: &str = "followup::otel";

/// The service name when `OTEL_SERVICE_NAME` is not set.
pub const SERVICE_NAME: &str = "followup";

static ON: AtomicBool = AtomicBool::new(false);

/// The subscriber, once traces are on: JSON log lines look up their span's ids through it.
static DISPATCH: OnceLock<WeakDispatch> = OnceLock::new();

/// Whether traces are being recorded.
#[inline]
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// `otel_span!(name, fields…)`: an INFO span for the exporter when traces are on, else [`tracing::Span::none`] (nothing
/// made, nothing recorded). Takes what `tracing::info_span!` takes after its target.
macro_rules! otel_span {
    ($($arg:tt)*) => {
        if $crate::telemetry::on() {
            ::tracing::info_span!(target: $crate::telemetry::TARGET, $($arg)*)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// Why traces are off, or the exporter settings if they are on.
#[derive(Debug, PartialEq, Eq)]
pub enum Settings {
    Off,
    On {
        protocol: opentelemetry_otlp::Protocol,
    },
}

/// Reads the standard variables (`var` looks one up).
pub fn settings(var: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(Settings::Off);
    }
    if let Some(exporter) = set("OTEL_TRACES_EXPORTER") {
        match exporter.trim() {
            "none" => return Ok(Settings::Off),
            "otlp" => {}
            other => return Err(format!("OTEL_TRACES_EXPORTER={other:?}: only otlp or none")),
        }
    }
    if set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        && set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    {
        return Ok(Settings::Off);
    }
    let protocol = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "http/protobuf".into());
    let protocol = match protocol.trim() {
        "http/protobuf" => opentelemetry_otlp::Protocol::HttpBinary,
        "http/json" => opentelemetry_otlp::Protocol::HttpJson,
        other => {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other:?}: only http/protobuf or http/json"
            ));
        }
    };
    Ok(Settings::On { protocol })
}

/// The exporter's pipeline; [`Telemetry::shutdown`] sends what is still queued.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Sends the spans still queued and stops the exporter (bounded by
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!("traces: the last spans were not sent: {e}");
        }
    }
}

/// Builds the exporter and the tracer provider; its HTTP requests run on `runtime`.
pub fn provider(
    protocol: opentelemetry_otlp::Protocol,
    runtime: tokio::runtime::Handle,
) -> anyhow::Result<(Telemetry, opentelemetry_sdk::trace::Tracer)> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_http_client(Client { runtime })
        .build()?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("followup");
    Ok((Telemetry { provider }, tracer))
}

/// Marks traces on, after the subscriber holding the OpenTelemetry layer is installed.
pub fn start(dispatch: &Dispatch) {
    let _ = DISPATCH.set(dispatch.downgrade());
    ON.store(true, Ordering::Relaxed);
}

/// The trace and span ids of the span an event happens in, when traces are on.
pub fn ids(event: &tracing::Event<'_>) -> Option<(String, String)> {
    if !on() {
        return None;
    }
    let dispatch = DISPATCH.get()?.upgrade()?;
    let id = match event.parent() {
        Some(id) => id.clone(),
        None if event.is_contextual() => dispatch.current_span().id()?.clone(),
        None => return None,
    };
    let cx = tracing_opentelemetry::get_otel_context(&id, &dispatch)?;
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// Makes `span` a child of the caller's span named by a `traceparent` header, if any.
pub fn continue_from(span: &tracing::Span, headers: &http::HeaderMap) {
    if span.is_none() || !headers.contains_key("traceparent") {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&Headers(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Writes `span`'s `traceparent` (and `tracestate`) into `headers`, replacing any there.
pub fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    if span.is_none() {
        return;
    }
    let cx = span.context();
    TraceContextPropagator::new().inject_context(&cx, &mut HeadersMut(headers));
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut http::HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The `scheme://host:port` of `uri` (port made explicit), and nothing of its path, query
/// or user info.
pub fn origin(uri: &http::Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("http").to_ascii_lowercase();
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    format!(
        "{scheme}://{}:{port}",
        uri.host().unwrap_or("").to_ascii_lowercase()
    )
}

/// The exporter's HTTP client: the host's own (hyper, and rustls for `https://`, as for
/// plugins' requests), driven on the host's runtime. The batch processor calls it from its
/// own thread, outside any runtime, so each request is spawned onto `runtime` and awaited
/// through its join handle.
#[derive(Debug)]
struct Client {
    runtime: tokio::runtime::Handle,
}

/// How long an export may wait for the collector when `OTEL_EXPORTER_OTLP_TIMEOUT` does
/// not bound it first: a stalled collector must not hold spans (or shutdown) forever.
const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Client {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        use http_body_util::BodyExt;
        let request = request.map(|body| {
            http_body_util::Full::new(body)
                .map_err(|never| match never {})
                .boxed_unsync()
        });
        let options = wasmtime_wasi_http::RequestOptions {
            connect_timeout: Some(EXPORT_TIMEOUT),
            first_byte_timeout: Some(EXPORT_TIMEOUT),
            between_bytes_timeout: Some(EXPORT_TIMEOUT),
        };
        let exchange = async move {
            let (response, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            let io = tokio::spawn(io);
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            io.abort();
            Ok::<_, wasmtime_wasi_http::Error>(http::Response::from_parts(parts, body))
        };
        // Made on the runtime: a timer cannot be made on the processor's thread.
        let bounded = async move { tokio::time::timeout(EXPORT_TIMEOUT, exchange).await };
        match self.runtime.spawn(bounded).await? {
            Ok(answer) => Ok(answer?),
            Err(_elapsed) => Err("no answer from the collector in time".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<Settings, String> {
        settings(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn traces_are_off_unless_an_endpoint_is_set() {
        assert_eq!(read(&[]), Ok(Settings::Off));
        assert_eq!(read(&[("OTEL_SERVICE_NAME", "x")]), Ok(Settings::Off));
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert_eq!(
            read(&[endpoint]),
            Ok(Settings::On {
                protocol: opentelemetry_otlp::Protocol::HttpBinary
            })
        );
        assert_eq!(
            read(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://h/v1/traces")]),
            Ok(Settings::On {
                protocol: opentelemetry_otlp::Protocol::HttpBinary
            })
        );
        assert_eq!(
            read(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]),
            Ok(Settings::On {
                protocol: opentelemetry_otlp::Protocol::HttpJson
            })
        );
        assert_eq!(
            read(&[endpoint, ("OTEL_SDK_DISABLED", "true")]),
            Ok(Settings::Off)
        );
        assert_eq!(
            read(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]),
            Ok(Settings::Off)
        );
        assert!(read(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).is_err());
    }

    #[test]
    fn an_origin_is_scheme_host_and_port_only() {
        let uri: http::Uri = "https://User:pw@API.example/book?key=secret"
            .parse()
            .unwrap();
        assert_eq!(origin(&uri), "https://api.example:443");
        let uri: http::Uri = "http://127.0.0.1:9000/x".parse().unwrap();
        assert_eq!(origin(&uri), "http://127.0.0.1:9000");
    }
}
