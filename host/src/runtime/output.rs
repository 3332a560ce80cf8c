//! What a guest writes — stdout, stderr and the `log` service — captured per call within
//! one byte budget (`max_log_bytes`). Writes past the budget are dropped and counted, never
//! refused: a chatty plugin keeps booking, and the host log stays bounded.

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
    /// Bytes written to stdout/stderr not yet ended by a newline, per stream.
    partial: [Vec<u8>; 2],
    lines: Vec<Line>,
    dropped_bytes: u64,
}

impl Capture {
    fn admit(&mut self, len: usize) -> usize {
        let take = len.min(self.remaining);
        self.remaining -= take;
        self.dropped_bytes += (len - take) as u64;
        take
    }

    fn write_stream(&mut self, index: usize, bytes: &[u8]) {
        let take = self.admit(bytes.len());
        let source = STREAMS[index];
        let partial = &mut self.partial[index];
        partial.extend_from_slice(&bytes[..take]);
        while let Some(end) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            self.lines.push(Line { source, text });
        }
    }
}

const STREAMS: [&str; 2] = ["stdout", "stderr"];

/// The capture of one call. Cloning shares it.
#[derive(Debug, Clone)]
pub struct GuestOutput(Arc<Mutex<Capture>>);

impl GuestOutput {
    pub fn new(budget: usize) -> Self {
        GuestOutput(Arc::new(Mutex::new(Capture {
            remaining: budget,
            ..Capture::default()
        })))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Capture) -> R) -> R {
        // A capture has no invariant a panicking writer could break.
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Starts a new call's capture on the same streams (a warm instance's next call):
    /// a full budget, nothing dropped yet, no partial lines.
    pub fn renew(&self, budget: usize) {
        self.with(|c| {
            *c = Capture {
                remaining: budget,
                ..Capture::default()
            }
        });
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
            // A log line is kept whole or not at all.
            if text.len() > c.remaining {
                c.dropped_bytes += text.len() as u64;
                return false;
            }
            c.admit(text.len());
            c.lines.push(Line {
                source,
                text: text.to_string(),
            });
            true
        })
    }

    /// Everything captured, with unterminated stream output as final lines, and the number
    /// of bytes dropped over the budget.
    pub fn take(&self) -> (Vec<Line>, u64) {
        self.with(|c| {
            for (partial, source) in c.partial.iter_mut().zip(STREAMS) {
                if !partial.is_empty() {
                    let text = String::from_utf8_lossy(partial).into_owned();
                    partial.clear();
                    c.lines.push(Line { source, text });
                }
            }
            (std::mem::take(&mut c.lines), c.dropped_bytes)
        })
    }
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
        let out = GuestOutput::new(1024);
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
        assert_eq!(dropped, 0);
    }

    #[test]
    fn drops_and_counts_what_exceeds_the_budget() {
        let out = GuestOutput::new(10);
        let mut stdout = out.stream(0);
        for _ in 0..100 {
            stdout.write(Bytes::from_static(b"12345\n")).unwrap();
        }
        assert!(!out.log("warn", "no room left"));
        let (lines, dropped) = out.take();
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        // The budget cuts the second line short; what fits is kept.
        assert_eq!(texts, ["12345", "1234"]);
        assert_eq!(dropped, 600 - 10 + "no room left".len() as u64);
    }
}
