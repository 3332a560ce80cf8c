//! What a guest writes — stdout, stderr and the `log` service — captured per call within
//! one byte budget (`max_log_bytes`) and an entry count (`max_log_entries`). Every entry
//! costs its text plus [`LOG_ENTRY_BYTES`], so a flood of empty entries runs out of budget
//! like any other. Writes past the budget are dropped and counted, never refused: a chatty
//! plugin keeps booking, and the host holds and logs a bounded amount for it.

use super::sandbox::LOG_ENTRY_BYTES;
use crate::contract::PluginIdent;
use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// One log line the guest produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// `stdout`, `stderr`, or the log service's level (`info`, `warn`, …).
    pub source: &'static str,
    pub text: String,
}

#[derive(Debug, Default)]
struct Capture {
    remaining: usize,
    /// Entries that may still be kept.
    entries_left: usize,
    /// Bytes written to stdout/stderr not yet ended by a newline, per stream.
    partial: [Vec<u8>; 2],
    lines: Vec<Line>,
    dropped_bytes: u64,
    dropped_entries: u64,
}

impl Capture {
    fn new(budget: usize, entries: usize) -> Self {
        Capture {
            remaining: budget,
            entries_left: entries,
            ..Capture::default()
        }
    }

    fn admit(&mut self, len: usize) -> usize {
        let take = len.min(self.remaining);
        self.remaining -= take;
        self.dropped_bytes += (len - take) as u64;
        take
    }

    /// Keeps a line whose text was already charged, if an entry and its fixed cost are
    /// still affordable; else drops it.
    fn keep(&mut self, source: &'static str, text: String) -> bool {
        if self.entries_left == 0 || self.remaining < LOG_ENTRY_BYTES {
            self.dropped_bytes += text.len() as u64;
            self.dropped_entries += 1;
            return false;
        }
        self.entries_left -= 1;
        self.remaining -= LOG_ENTRY_BYTES;
        self.lines.push(Line { source, text });
        true
    }

    fn write_stream(&mut self, index: usize, bytes: &[u8]) {
        let take = self.admit(bytes.len());
        let source = STREAMS[index];
        self.partial[index].extend_from_slice(&bytes[..take]);
        while let Some(end) = self.partial[index].iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial[index].drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            self.keep(source, text);
        }
    }
}

const STREAMS: [&str; 2] = ["stdout", "stderr"];

/// The capture of one call. Cloning shares it.
#[derive(Debug, Clone)]
pub struct GuestOutput(Arc<Mutex<Capture>>);

impl GuestOutput {
    /// A capture of at most `budget` bytes in at most `entries` entries.
    pub fn new(budget: usize, entries: usize) -> Self {
        GuestOutput(Arc::new(Mutex::new(Capture::new(budget, entries))))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Capture) -> R) -> R {
        // A capture has no invariant a panicking writer could break.
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Starts a new call's capture on the same streams (a warm instance's next call):
    /// a full budget, nothing dropped yet, no partial lines.
    pub fn renew(&self, budget: usize, entries: usize) {
        self.with(|c| *c = Capture::new(budget, entries));
    }

    /// The guest's stdout (`index` 0) or stderr (1) as a WASI output stream.
    pub fn stream(&self, index: usize) -> GuestStream {
        GuestStream {
            output: self.clone(),
            index: index.min(1),
        }
    }

    /// Records a line from the log service, if the budget allows; `false` when dropped.
    pub fn log(&self, source: &'static str, text: &str) -> bool {
        self.with(|c| {
            // A log line is kept whole or not at all, and is copied only when kept.
            if text.len().saturating_add(LOG_ENTRY_BYTES) > c.remaining || c.entries_left == 0 {
                c.dropped_bytes += text.len() as u64;
                c.dropped_entries += 1;
                return false;
            }
            c.remaining -= text.len();
            c.keep(source, text.to_string())
        })
    }

    /// Everything captured, with unterminated stream output as final lines, and what was
    /// dropped over the budget.
    pub fn take(&self) -> (Vec<Line>, Dropped) {
        self.with(|c| {
            for (index, source) in STREAMS.into_iter().enumerate() {
                let partial = std::mem::take(&mut c.partial[index]);
                if !partial.is_empty() {
                    c.keep(source, String::from_utf8_lossy(&partial).into_owned());
                }
            }
            let dropped = Dropped {
                bytes: c.dropped_bytes,
                entries: c.dropped_entries,
            };
            (std::mem::take(&mut c.lines), dropped)
        })
    }
}

/// Logs what the guest wrote, one log event per entry, tagged with plugin, version and
/// request id; how many lines and bytes were kept, and what was dropped over the budget.
pub fn log_output(
    plugin: &PluginIdent,
    request_id: &str,
    output: &GuestOutput,
) -> (usize, usize, Dropped) {
    let (lines, dropped) = output.take();
    let counted = (
        lines.len(),
        lines.iter().map(|l| l.text.len()).sum(),
        dropped,
    );
    for line in lines.into_iter().filter(|l| !l.text.trim().is_empty()) {
        let text = line.text;
        match line.source {
            "error" => tracing::error!(plugin = %plugin, request_id, "{text}"),
            "warn" => tracing::warn!(plugin = %plugin, request_id, "{text}"),
            "debug" => tracing::debug!(plugin = %plugin, request_id, "{text}"),
            "trace" => tracing::trace!(plugin = %plugin, request_id, "{text}"),
            source => tracing::info!(plugin = %plugin, request_id, source, "{text}"),
        }
    }
    if dropped != Dropped::default() {
        tracing::warn!(
            plugin = %plugin,
            request_id,
            dropped_bytes = dropped.bytes,
            dropped_entries = dropped.entries,
            "plugin output over its max_log_bytes or max_log_entries was dropped"
        );
    }
    counted
}

/// What a capture dropped over its budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    pub bytes: u64,
    pub entries: u64,
}

/// stdout or stderr of one call.
#[derive(Debug, Clone)]
pub struct GuestStream {
    output: GuestOutput,
    index: usize,
}

/// What a guest may write in one `write` call (WASI's `check-write`); the budget, not this,
/// bounds the total.
const WRITE_CHUNK: usize = 64 << 10;

#[async_trait::async_trait]
impl OutputStream for GuestStream {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.output.with(|c| c.write_stream(self.index, &bytes));
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_CHUNK)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.output.with(|c| c.write_stream(self.index, buf));
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_per_stream_and_keeps_the_tail() {
        let out = GuestOutput::new(2048, 100);
        let mut stdout = out.stream(0);
        let mut stderr = out.stream(1);
        stdout.write(Bytes::from_static(b"one\ntw")).unwrap();
        stderr.write(Bytes::from_static(b"oops\n")).unwrap();
        stdout.write(Bytes::from_static(b"o\nthree")).unwrap();
        assert!(out.log("info", "from the log service"));
        let (lines, dropped) = out.take();
        let texts: Vec<(&str, &str)> = lines.iter().map(|l| (l.source, l.text.as_str())).collect();
        assert_eq!(
            texts,
            [
                ("stdout", "one"),
                ("stderr", "oops"),
                ("stdout", "two"),
                ("info", "from the log service"),
                ("stdout", "three"),
            ]
        );
        assert_eq!(dropped, Dropped::default());
    }

    #[test]
    fn drops_and_counts_what_exceeds_the_budget() {
        let out = GuestOutput::new(2 * (LOG_ENTRY_BYTES + 6), 100);
        let mut stdout = out.stream(0);
        for _ in 0..100 {
            stdout.write(Bytes::from_static(b"12345\n")).unwrap();
        }
        assert!(!out.log("warn", "no room left"));
        let (lines, dropped) = out.take();
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        // Each line costs its text and the entry's fixed cost: two whole lines fit.
        assert_eq!(texts, ["12345", "12345"]);
        assert!(dropped.bytes >= 600 - 12, "{dropped:?}");
        assert!(dropped.entries >= 1, "{dropped:?}");
    }

    #[test]
    fn empty_entries_are_not_free() {
        let out = GuestOutput::new(64 << 10, 1_000_000);
        let kept = (0..100_000).filter(|_| out.log("info", "")).count();
        // 64 KiB buys at most 1,024 entries of nothing.
        assert_eq!(kept, (64 << 10) / LOG_ENTRY_BYTES);
        let (lines, dropped) = out.take();
        assert_eq!(lines.len(), kept);
        assert_eq!(dropped.entries, 100_000 - kept as u64);
    }

    #[test]
    fn the_entry_count_bounds_a_capture_of_short_lines() {
        let out = GuestOutput::new(1 << 20, 10);
        let mut stderr = out.stream(1);
        stderr.write(Bytes::from(vec![b'\n'; 10_000])).unwrap();
        let (lines, dropped) = out.take();
        assert_eq!(lines.len(), 10);
        assert_eq!(dropped.entries, 9_990);
    }
}
