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
    // serde_json's map is ordered by key, so its compact text is canonical. The whole text
    // goes into one buffer, then into one hash: serde_json writes a token at a time, and a
    // hash update (or a buffered writer's call) per token costs more than the copy.
    let mut text = Vec::with_capacity(4096);
    text.extend_from_slice(route.as_bytes());
    text.push(0);
    text.extend_from_slice(work_order_id.unwrap_or("").as_bytes());
    text.push(0);
    // Writing a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut text, body);
    hex(&Sha256::digest(&text))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A Book Job in the contract's shape, keys out of order, with escapes.
    const SAMPLE: &str = r#"{"WorkOrderID":"WO-1","Account":{"Name":"R \"Bob\" Morales",
        "Lat":"40.7","Lon":-73.91},"RequiredParts":[{"Part":"W10276397","Qty":2},
        {"Qty:":1,"Part":"Ünï\u00e9"}],"TimeConstraints":[{"Period":{"End":
        "2024-06-17T20:00:00Z","Start":"2024-06-17T16:00:00.000Z"}}],"Notes":"line\nnext\t"}"#;

    /// The key of [`SAMPLE`] as an earlier build computed it (serde_json's text streamed
    /// into the hash): what journals already hold must be found again, whatever changes
    /// in how the text is written (or if a dependency turned on serde_json's
    /// `preserve_order`, which would make the text follow the body's key order).
    #[test]
    fn keys_already_journaled_are_unchanged() {
        let value: Value = serde_json::from_str(SAMPLE).unwrap();
        assert_eq!(
            key("followup", Some("WO-1"), &value),
            "726d7a9ffe4c6cfa5308253d382774f0b139a2aee5193956ef6cae2afdc85ce9"
        );
    }
}
