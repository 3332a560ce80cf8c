//! The host's log: one line per event on stderr, filtered by `RUST_LOG`, as text or as
//! JSON (`log_format`, `--log-format`).
//!
//! Plugins put text into the log (their log entries, refusals, trap messages, the names of
//! their functions in backtraces), and clients do too (paths, ids). Every field is written
//! with its control characters escaped (see [`crate::text::write_escaped`]), so a newline
//! in such text never starts a line of its own: a plugin cannot forge a host log record.
//! JSON lines get the same guarantee from JSON's own string escaping.

use crate::config::LogFormat;
use crate::telemetry::{self, Settings, Telemetry};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the host's log on stderr; `default_filter` applies when `RUST_LOG` is unset.
/// When the `OTEL_*` variables ask for traces (see [`telemetry`]), also installs the
/// OpenTelemetry layer, whose exporter sends from `runtime`; the returned [`Telemetry`]
/// flushes it at shutdown.
pub fn init(
    default_filter: &str,
    format: LogFormat,
    runtime: &tokio::runtime::Handle,
) -> Option<Telemetry> {
    // Spans for the exporter are never the log's business, whatever RUST_LOG says.
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    // The target is a constant name, so the directive parses; were it ever not to, the
    // log would only show those spans' events, never stop the host.
    if let Ok(off) = format!("{}=off", telemetry::TARGET).parse() {
        filter = filter.add_directive(off);
    }
    let settings = telemetry::settings(|name| std::env::var(name).ok());
    if settings == Ok(Settings::Off) {
        // No traces: the log alone, its filter global, so that the request path costs
        // what it did before traces existed (per-layer filtering has its own bookkeeping).
        plain(filter, format);
        return None;
    }
    let log = if format == LogFormat::Json {
        // Keys: timestamp, level, target, message, then the event's own fields at the top
        // level, then trace_id and span_id inside a traced span (documented in
        // docs/operations.md; stable).
        let json = tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false);
        tracing_subscriber::fmt::layer()
            .event_format(WithTraceIds(json))
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .fmt_fields(EscapedFields)
            // Colour codes only for a person at a terminal, never into a file or a pipe.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    };
    let registry = tracing_subscriber::registry().with(log);
    let traces = match settings {
        Ok(Settings::On { protocol }) => Some(telemetry::provider(protocol, runtime.clone())),
        Ok(Settings::Off) => None,
        Err(why) => {
            registry.init();
            tracing::warn!("traces are off: {why}");
            return None;
        }
    };
    let Some(Ok((telemetry, tracer))) = traces else {
        registry.init();
        if let Some(Err(e)) = traces {
            tracing::warn!("traces are off: the exporter could not be built: {e:#}");
        }
        return None;
    };
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // No code locations, thread names or levels on spans: names and attributes say it.
        .with_location(false)
        .with_threads(false)
        .with_level(false)
        .with_target(false)
        .with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target(telemetry::TARGET, tracing::Level::TRACE),
        );
    let dispatch = tracing::Dispatch::new(registry.with(otel));
    dispatch.clone().init();
    telemetry::start(&dispatch);
    tracing::info!("traces are on: spans go to the OTLP endpoint of OTEL_EXPORTER_OTLP_*");
    Some(telemetry)
}

/// The log without traces: the filter global, the formats as with traces.
fn plain(filter: tracing_subscriber::EnvFilter, format: LogFormat) {
    if format == LogFormat::Json {
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .fmt_fields(EscapedFields)
        // Colour codes only for a person at a terminal, never into a file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// The JSON line of `F` with the `trace_id` and `span_id` of the span the event happened
/// in, when traces are on and it happened in one.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some((trace_id, span_id)) = telemetry::ids(event) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        // One JSON object and a newline: the ids go in before its closing brace.
        match line.trim_end().strip_suffix('}') {
            Some(object) => writeln!(
                writer,
                r#"{object},"trace_id":"{trace_id}","span_id":"{span_id}"}}"#
            ),
            None => writer.write_str(&line),
        }
    }
}

/// Formats an event's or span's fields as `message key=value …`, every value escaped.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = Escaping {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Escaping<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Escaping<'_> {
    fn write(&mut self, field: &Field, text: &str, quoted: bool) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        let w = &mut self.writer;
        self.result = (|| {
            w.write_str(separator)?;
            if field.name() != "message" {
                write!(w, "{}=", field.name())?;
            }
            if quoted {
                // `Debug` of a string quotes it and escapes its control characters.
                write!(w, "{text:?}")
            } else {
                crate::text::write_escaped(w, text)
            }
        })();
    }
}

impl Visit for Escaping<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let quoted = field.name() != "message";
        self.write(field, value, quoted);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        self.write(field, &text, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Captures what a subscriber writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_newline_in_any_field_stays_inside_its_record() {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(EscapedFields)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let forged = "ok\n2026-01-01T00:00:00Z  INFO FORGED";
            tracing::info!(plugin = %forged, id = forged, "said {forged}");
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("said ok\\n2026"), "{text}");
        assert!(text.contains("plugin=ok\\n2026"), "{text}");
        assert!(text.contains(r#"id="ok\n2026"#), "{text}");
    }
}
