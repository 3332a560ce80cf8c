//! A booking's tape: the request a plugin was called with, what it answered, and every
//! host call it made with what the host answered — enough to run the booking again
//! through another version and give it the same world.
//!
//! A [`Recorder`] is shared by the call's host services (key-value reads and listings,
//! config reads, outbound HTTP), so the calls stay in the order the plugin made them. It
//! keeps at most its budget of bytes: past it the rest is dropped and the tape says it is
//! incomplete (a replay then answers the missing calls as for a call never recorded).
//!
//! [`world`] holds the store as a recorded call reads it and the world a replayed call is
//! answered from. Both sit below the runtime, which records and replays through them;
//! running a replay and comparing answers is [`crate::replay`]'s.

pub mod world;

use crate::contract::types::TokenClaims;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::{Arc, Mutex, PoisonError};

/// The format of [`Tape`]; raised when a field changes meaning.
pub const FORMAT: u32 = 1;

/// One booking call as it was recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tape {
    pub format: u32,
    pub route: String,
    pub work_order_id: Option<String>,
    /// The idempotency key the plugin saw.
    pub key: String,
    pub request_id: String,
    /// The version that answered (`sha256:…`).
    pub version: String,
    /// The wall clock when the call began, in milliseconds since the Unix epoch: a replay
    /// shows the candidate this clock.
    pub at_ms: u64,
    /// The token's claims, when the route checks tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<Claims>,
    /// The Book Job as the plugin got it, minus the paths the operator redacts.
    pub request: Value,
    pub answer: Answer,
    /// Host calls in the order the plugin made them.
    pub calls: Vec<HostCall>,
    pub stats: RunStats,
    /// Calls past the tape's budget were not kept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
}

/// The claims of the request's token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub name: Option<String>,
    pub email: Option<String>,
    pub exp: Option<i64>,
    pub iat: Option<i64>,
    pub raw: String,
}

impl From<&TokenClaims> for Claims {
    fn from(c: &TokenClaims) -> Claims {
        Claims {
            name: c.name.clone(),
            email: c.email.clone(),
            exp: c.exp,
            iat: c.iat,
            raw: c.raw.clone(),
        }
    }
}

impl From<&Claims> for TokenClaims {
    fn from(c: &Claims) -> TokenClaims {
        TokenClaims {
            name: c.name.clone(),
            email: c.email.clone(),
            exp: c.exp,
            iat: c.iat,
            raw: c.raw.clone(),
        }
    }
}

/// What a booking answered: the Book Job Response, or the error type and the plugin's
/// reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The status in the contract's documented mode.
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// The response, or `{"error_type", "detail"}` for an error.
    pub body: Value,
}

/// What a call cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStats {
    pub wall_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    pub peak_memory_bytes: u64,
}

/// One host call and the host's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "kebab-case")]
pub enum HostCall {
    /// A key read from the store (the call's own writes are not store reads).
    KvGet {
        key: String,
        value: Option<Blob>,
    },
    /// A listing of the store.
    KvList {
        prefix: String,
        limit: u32,
        keys: Vec<String>,
    },
    Config {
        key: String,
        value: Option<String>,
    },
    ConfigAll {
        values: Vec<(String, String)>,
    },
    Http(Exchange),
}

/// An outbound request and what came back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    pub method: String,
    pub uri: String,
    pub body: Blob,
    /// The response's status, headers and body; absent when the request failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Blob>,
    /// Why the request failed (the `wasi:http` error the plugin got).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Exchange {
    /// Whether `other` is the same request (method, URI and body; headers such as a
    /// trace's differ from run to run).
    pub fn same_request(&self, method: &str, uri: &str, body: &[u8]) -> bool {
        self.method == method && self.uri == uri && self.body.bytes() == body
    }
}

/// Bytes in a tape: as text when they are UTF-8, else in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Blob {
    Text(String),
    Hex { hex: String },
}

impl Blob {
    pub fn of(bytes: &[u8]) -> Blob {
        match std::str::from_utf8(bytes) {
            Ok(text) => Blob::Text(text.to_string()),
            Err(_) => Blob::Hex {
                hex: crate::text::hex(bytes),
            },
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Blob::Text(text) => text.as_bytes().to_vec(),
            Blob::Hex { hex } => (0..hex.len() / 2)
                .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
                .collect(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Blob::Text(t) => t.len(),
            Blob::Hex { hex } => hex.len(),
        }
    }
}

/// Records one call's host calls, within a budget of bytes. Cheap to clone: the clones
/// share the log.
#[derive(Debug, Clone)]
pub struct Recorder(Arc<Mutex<Log>>);

#[derive(Debug, Default)]
struct Log {
    calls: Vec<HostCall>,
    bytes: usize,
    budget: usize,
    incomplete: bool,
    /// The plugin was called (not refused before it ran: a bad request, a full queue).
    reached: bool,
    stats: RunStats,
}

/// What a recorder kept.
#[derive(Debug, Default)]
pub struct Recording {
    pub calls: Vec<HostCall>,
    pub incomplete: bool,
    pub reached: bool,
    pub stats: RunStats,
}

/// What a call's bookkeeping costs on a tape besides its bytes.
const CALL_BYTES: usize = 32;

impl Recorder {
    /// A recorder that keeps up to `budget` bytes of host calls.
    pub fn new(budget: usize) -> Recorder {
        Recorder(Arc::new(Mutex::new(Log {
            budget,
            ..Log::default()
        })))
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, call: HostCall, bytes: usize) {
        let mut log = self.log();
        let bytes = bytes + CALL_BYTES;
        if log.incomplete || log.bytes + bytes > log.budget {
            log.incomplete = true;
            return;
        }
        log.bytes += bytes;
        log.calls.push(call);
    }

    pub fn kv_get(&self, key: &str, value: &Option<Vec<u8>>) {
        let value = value.as_deref().map(Blob::of);
        let bytes = key.len() + value.as_ref().map_or(0, Blob::len);
        self.push(
            HostCall::KvGet {
                key: key.to_string(),
                value,
            },
            bytes,
        );
    }

    pub fn kv_list(&self, prefix: &str, limit: u32, keys: &[String]) {
        let bytes = prefix.len() + keys.iter().map(|k| k.len() + 4).sum::<usize>();
        self.push(
            HostCall::KvList {
                prefix: prefix.to_string(),
                limit,
                keys: keys.to_vec(),
            },
            bytes,
        );
    }

    pub fn config(&self, key: &str, value: Option<&String>) {
        let bytes = key.len() + value.map_or(0, String::len);
        self.push(
            HostCall::Config {
                key: key.to_string(),
                value: value.cloned(),
            },
            bytes,
        );
    }

    pub fn config_all(&self, values: &[(String, String)]) {
        let bytes = values.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
        self.push(
            HostCall::ConfigAll {
                values: values.to_vec(),
            },
            bytes,
        );
    }

    pub fn http(&self, exchange: Exchange) {
        let bytes = exchange.method.len()
            + exchange.uri.len()
            + exchange.body.len()
            + exchange.response.as_ref().map_or(0, Blob::len)
            + exchange
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 8)
                .sum::<usize>();
        self.push(HostCall::Http(exchange), bytes);
    }

    /// Bytes the recorder may still keep (an outbound body larger than this is not
    /// buffered for the tape).
    pub fn room(&self) -> usize {
        let log = self.log();
        log.budget.saturating_sub(log.bytes)
    }

    /// Marks the tape incomplete (a call that could not be kept whole).
    pub fn overflowed(&self) {
        self.log().incomplete = true;
    }

    /// The plugin was called.
    pub fn reached(&self) {
        self.log().reached = true;
    }

    /// What the call cost, once it ended.
    pub fn finished(&self, stats: RunStats) {
        self.log().stats = stats;
    }

    /// Everything recorded so far.
    pub fn take(&self) -> Recording {
        let mut log = self.log();
        Recording {
            calls: std::mem::take(&mut log.calls),
            incomplete: log.incomplete,
            reached: log.reached,
            stats: log.stats,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_keep_text_as_text_and_any_bytes_exactly() {
        assert_eq!(Blob::of(b"12"), Blob::Text("12".into()));
        let binary = [0u8, 0xff, 0x10];
        let blob = Blob::of(&binary);
        assert_eq!(
            blob,
            Blob::Hex {
                hex: "00ff10".into()
            }
        );
        let text = serde_json::to_string(&blob).unwrap();
        assert_eq!(serde_json::from_str::<Blob>(&text).unwrap().bytes(), binary);
    }

    #[test]
    fn a_recorder_keeps_calls_in_order_within_its_budget() {
        let r = Recorder::new(200);
        r.kv_get("sequence/order", &Some(b"7".to_vec()));
        r.config("open", Some(&"08:00".to_string()));
        r.kv_list("capacity/", 10, &["capacity/a".into()]);
        let kept = r.take();
        assert!(!kept.incomplete);
        assert_eq!(kept.calls.len(), 3);
        assert!(matches!(&kept.calls[1], HostCall::Config { key, .. } if key == "open"));
        // Past the budget nothing more is kept, and the tape says so.
        let r = Recorder::new(100);
        r.kv_get("a", &Some(vec![b'x'; 50]));
        r.kv_get("b", &Some(vec![b'x'; 50]));
        r.kv_get("c", &None);
        let kept = r.take();
        assert_eq!(kept.calls.len(), 1);
        assert!(kept.incomplete);
    }
}
