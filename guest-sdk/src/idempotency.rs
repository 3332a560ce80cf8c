//! The idempotency key of a booking: one function, for the host's journal and for any
//! component that must find the same key as the host (the `wasi:http` peer of the load
//! comparison).
//!
//! This one file is compiled into the host (`contract::idempotency`) and, with the SDK's
//! `idempotency` feature, into the guest SDK (`followup_sdk::idempotency`).

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Equal for retries of the same booking: lowercase hex SHA-256 over the route name, 0, the
/// WorkOrderID, 0, and the canonical body (object keys sorted, no insignificant white
/// space).
pub fn key(route: &str, work_order_id: Option<&str>, body: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update([0]);
    hasher.update(work_order_id.unwrap_or("").as_bytes());
    hasher.update([0]);
    // serde_json's map is ordered by key, so this serialisation is canonical. It goes
    // through a buffer: serde_json writes a token at a time (a quote, a colon, a key), and
    // one hash update per token costs more than the copy.
    let mut into_hash = std::io::BufWriter::with_capacity(4096, HashWriter(&mut hasher));
    // Writing a `Value` into a sink that cannot fail cannot fail.
    let _ = serde_json::to_writer(&mut into_hash, body);
    let _ = std::io::Write::flush(&mut into_hash);
    drop(into_hash);
    hex(&hasher.finalize())
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
