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
    // The whole text first, then one hash: SHA-256 runs fastest over one long input, and
    // writing into a `Vec` directly costs a fraction of serde_json's serializer writing
    // token by token into a sink (this runs for every booking).
    let mut text = Vec::with_capacity(4096);
    text.extend_from_slice(route.as_bytes());
    text.push(0);
    text.extend_from_slice(work_order_id.unwrap_or("").as_bytes());
    text.push(0);
    canonical(&mut text, body);
    hex(&Sha256::digest(&text))
}

/// Appends `value` as compact JSON with object keys sorted: the bytes
/// `serde_json::to_writer` writes for it (serde_json's map is ordered by key).
fn canonical(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // Writing a number into a Vec cannot fail.
        Value::Number(n) => {
            let _ = serde_json::to_writer(&mut *out, n);
        }
        Value::String(s) => string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(out, item);
            }
            out.push(b']');
        }
        Value::Object(entries) => {
            out.push(b'{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(out, key);
                out.push(b':');
                canonical(out, item);
            }
            out.push(b'}');
        }
    }
}

/// Appends `s` quoted, escaped as serde_json escapes: `"` and `\\`, the named control
/// characters, and the other controls as `\u00xx`.
fn string(out: &mut Vec<u8>, s: &str) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut run = 0;
    let mut at = 0;
    while at < bytes.len() {
        // Eight bytes at a time while none of them needs an escape (nearly all text).
        if let Some(word) = bytes.get(at..at + 8) {
            let word = u64::from_le_bytes([
                word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
            ]);
            if !needs_escape(word) {
                at += 8;
                continue;
            }
        }
        let byte = bytes[at];
        let escape = ESCAPE[usize::from(byte)];
        if escape != 0 {
            out.extend_from_slice(&bytes[run..at]);
            out.extend_from_slice(&[b'\\', escape]);
            if escape == b'u' {
                out.extend_from_slice(&[
                    b'0',
                    b'0',
                    DIGITS[usize::from(byte >> 4)],
                    DIGITS[usize::from(byte & 0x0f)],
                ]);
            }
            run = at + 1;
        }
        at += 1;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// Whether any of the eight bytes of `word` is a control character, `"` or `\\`.
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte's high bit is set by `x - 1` only when the byte was 0 or above 0x80; `!x`
    // keeps those that were 0.
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    below_space | zero(word ^ (ONES * u64::from(b'"'))) | zero(word ^ (ONES * u64::from(b'\\')))
        != 0
}

/// What follows the backslash that escapes a byte, or 0 for a byte written as it is.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = b'u';
        byte += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

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

    /// The canonical text is serde_json's own compact text of the tree: keys already hashed
    /// into journals stay the same.
    #[test]
    fn the_canonical_text_is_what_serde_json_writes() {
        let mut controls = String::new();
        for c in 0u8..0x20 {
            controls.push(char::from(c));
        }
        let tricky = serde_json::json!({
            "z": [1, -2, 3.5, -0.0, 1e300, 18446744073709551615u64, -9223372036854775808i64, 0.1],
            "a": {"b": null, "a": [true, false, {}, []], "": ""},
            "quotes": "say \"hi\" \\ back\\slash",
            "controls": controls,
            "unicode": "Müller 東京 \u{7f} \u{1F600}",
            "Qty:": 2,
        });
        let examples: [Value; 2] = [tricky, serde_json::from_str(SAMPLE).unwrap()];
        for value in examples {
            let mut ours = Vec::new();
            canonical(&mut ours, &value);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&value).unwrap()
            );
        }
    }

    #[test]
    fn every_byte_is_escaped_as_serde_json_escapes_it_wherever_it_stands() {
        // Each ASCII byte at every offset of a 20-byte string, so that the eight-byte scan
        // meets it in every lane and in the tail.
        for byte in 0u8..0x80 {
            for at in 0..20 {
                let mut text = vec![b'x'; 20];
                text[at] = byte;
                let text = String::from_utf8(text).unwrap();
                let mut ours = Vec::new();
                string(&mut ours, &text);
                assert_eq!(
                    ours,
                    serde_json::to_vec(&text).unwrap(),
                    "{byte:#x} at {at}"
                );
            }
        }
    }

    /// A Book Job in the contract's shape, keys out of order, with escapes.
    const SAMPLE: &str = r#"{"WorkOrderID":"WO-1","Account":{"Name":"R \"Bob\" Morales",
        "Lat":"40.7","Lon":-73.91},"RequiredParts":[{"Part":"W10276397","Qty":2},
        {"Qty:":1,"Part":"Ünï\u00e9"}],"TimeConstraints":[{"Period":{"End":
        "2024-06-17T20:00:00Z","Start":"2024-06-17T16:00:00.000Z"}}],"Notes":"line\nnext\t"}"#;

    /// The key of [`SAMPLE`] as serde_json's serializer wrote the canonical text before
    /// it was written by hand: what journals already hold for it.
    #[test]
    fn keys_already_journaled_are_unchanged() {
        let value: Value = serde_json::from_str(SAMPLE).unwrap();
        assert_eq!(
            key("followup", Some("WO-1"), &value),
            "726d7a9ffe4c6cfa5308253d382774f0b139a2aee5193956ef6cae2afdc85ce9"
        );
    }
}
