//! The host's log: one line per event on stderr, filtered by `RUST_LOG`, as text or as
//! JSON (`log_format`, `--log-format`).
//!
//! Plugins put text into the log (their log entries, refusals, trap messages, the names of
//! their functions in backtraces), and clients do too (paths, ids). Every field is written
//! with its control characters escaped (see [`crate::text::write_escaped`]), so a newline
//! in such text never starts a line of its own: a plugin cannot forge a host log record.
//! JSON lines get the same guarantee from JSON's own string escaping.

use crate::config::LogFormat;
use std::fmt;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// Installs the host's log on stderr; `default_filter` applies when `RUST_LOG` is unset.
pub fn init(default_filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    if format == LogFormat::Json {
        // Keys: timestamp, level, target, message, then the event's own fields at the top
        // level (documented in docs/operations.md; stable).
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
