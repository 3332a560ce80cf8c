//! The world a plugin call sees, recorded and replayed: the store as a recorded call read
//! it ([`Recording`]), the store as a tape remembers it ([`Remembered`]), and the rest of a
//! tape a replayed call is answered from ([`Replayed`]: outbound HTTP, config, the clock).

use super::{Exchange, HostCall, Recorder, Tape};
use crate::storage::{
    Batch, Pending, Recorded, SharedStorage, Storage, StorageError, TapeQuery, TapeRow,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The store, with every read and listing a call makes recorded. Commits are not its
/// business (the journal commits a booking's batch to the store itself).
pub struct Recording {
    inner: SharedStorage,
    recorder: Recorder,
}

impl Recording {
    pub fn new(inner: SharedStorage, recorder: Recorder) -> Recording {
        Recording { inner, recorder }
    }
}

fn read_only() -> StorageError {
    StorageError("a replay commits nothing".into())
}

impl Storage for Recording {
    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let value = self.inner.get(ns, key)?;
        self.recorder.kv_get(key, &value);
        Ok(value)
    }

    fn list(&self, ns: &str, prefix: &str, limit: u32) -> Result<Vec<String>, StorageError> {
        let keys = self.inner.list(ns, prefix, limit)?;
        self.recorder.kv_list(prefix, limit, &keys);
        Ok(keys)
    }

    fn submit(&self, batch: Batch) -> Result<Pending, StorageError> {
        self.inner.submit(batch)
    }

    fn recorded(&self, key: &str) -> Result<Option<Recorded>, StorageError> {
        self.inner.recorded(key)
    }

    fn prune(&self, before: u64) -> Result<u64, StorageError> {
        self.inner.prune(before)
    }

    fn tapes(&self, plugin: &str, query: TapeQuery) -> Result<Vec<TapeRow>, StorageError> {
        self.inner.tapes(plugin, query)
    }

    fn waits_on_io(&self) -> bool {
        self.inner.waits_on_io()
    }
}

/// The store as a tape remembers it: a key the recorded call read answers what it read
/// then, a listing it made answers the keys it got; anything else is read from the
/// current store. Nothing is ever written.
pub struct Remembered {
    reads: HashMap<String, Option<Vec<u8>>>,
    lists: Vec<(String, u32, Vec<String>)>,
    current: SharedStorage,
}

impl Remembered {
    pub fn new(tape: &Tape, current: SharedStorage) -> Remembered {
        let mut reads = HashMap::new();
        let mut lists = Vec::new();
        for call in &tape.calls {
            match call {
                HostCall::KvGet { key, value } => {
                    // The first read is what the store held; the session answers any later
                    // read of the key itself.
                    reads
                        .entry(key.clone())
                        .or_insert_with(|| value.as_ref().map(|v| v.bytes()));
                }
                HostCall::KvList {
                    prefix,
                    limit,
                    keys,
                } => lists.push((prefix.clone(), *limit, keys.clone())),
                _ => {}
            }
        }
        Remembered {
            reads,
            lists,
            current,
        }
    }
}

impl Storage for Remembered {
    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        match self.reads.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.current.get(ns, key),
        }
    }

    /// A recorded listing of the prefix answers any limit it covers: one with a larger
    /// limit (its first keys), or one that came back short (all there was).
    fn list(&self, ns: &str, prefix: &str, limit: u32) -> Result<Vec<String>, StorageError> {
        let covering = self.lists.iter().find(|(p, recorded, keys)| {
            p == prefix && (*recorded >= limit || keys.len() < *recorded as usize)
        });
        match covering {
            Some((_, _, keys)) => Ok(keys.iter().take(limit as usize).cloned().collect()),
            None => self.current.list(ns, prefix, limit),
        }
    }

    fn submit(&self, _: Batch) -> Result<Pending, StorageError> {
        Err(read_only())
    }

    fn recorded(&self, _: &str) -> Result<Option<Recorded>, StorageError> {
        Ok(None)
    }

    fn prune(&self, _: u64) -> Result<u64, StorageError> {
        Err(read_only())
    }

    fn tapes(&self, _: &str, _: TapeQuery) -> Result<Vec<TapeRow>, StorageError> {
        Ok(Vec::new())
    }

    fn waits_on_io(&self) -> bool {
        self.current.waits_on_io()
    }
}

/// What a replayed call is answered from besides the store: the recorded outbound
/// exchanges (each answers one request), the recorded config values, and the clock.
#[derive(Debug)]
pub struct Replayed {
    exchanges: Mutex<Vec<Option<Exchange>>>,
    /// The config the candidate reads: the serving values, overlaid with what the recorded
    /// call read.
    pub config: Arc<HashMap<String, String>>,
    /// The wall clock when the recorded call began, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

impl Replayed {
    pub fn new(tape: &Tape, serving: &HashMap<String, String>) -> Replayed {
        let mut config = serving.clone();
        let mut exchanges = Vec::new();
        for call in &tape.calls {
            match call {
                HostCall::Config { key, value } => match value {
                    Some(v) => {
                        config.insert(key.clone(), v.clone());
                    }
                    None => {
                        config.remove(key);
                    }
                },
                HostCall::ConfigAll { values } => {
                    config = values.iter().cloned().collect();
                }
                HostCall::Http(exchange) => exchanges.push(Some(exchange.clone())),
                _ => {}
            }
        }
        Replayed {
            exchanges: Mutex::new(exchanges),
            config: Arc::new(config),
            at_ms: tape.at_ms,
        }
    }

    /// The recorded exchange of the same request, once; `None` when the recorded call made
    /// no such request (or made it fewer times).
    pub fn answer(&self, method: &str, uri: &str, body: &[u8]) -> Option<Exchange> {
        let mut exchanges = self
            .exchanges
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        exchanges
            .iter_mut()
            .find(|e| {
                e.as_ref()
                    .is_some_and(|e| e.same_request(method, uri, body))
            })
            .and_then(Option::take)
    }

    /// A wall clock that starts at the recorded call's and runs at the real pace.
    pub fn clock(&self) -> RecordedClock {
        RecordedClock {
            at: Duration::from_millis(self.at_ms),
            began: Instant::now(),
        }
    }
}

/// The wall clock a replayed call reads.
pub struct RecordedClock {
    at: Duration,
    began: Instant,
}

impl wasmtime_wasi::HostWallClock for RecordedClock {
    fn resolution(&self) -> Duration {
        Duration::from_micros(1)
    }

    fn now(&self) -> Duration {
        self.at + self.began.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;
    use crate::tape::{Answer, Blob, RunStats};

    fn tape(calls: Vec<HostCall>) -> Tape {
        Tape {
            format: 1,
            route: "r".into(),
            work_order_id: Some("WO-1".into()),
            key: "k".into(),
            request_id: "q".into(),
            version: "sha256:0".into(),
            at_ms: 1_000,
            claims: None,
            request: serde_json::json!({}),
            answer: Answer {
                status: 200,
                error_type: None,
                body: serde_json::json!({}),
            },
            calls,
            stats: RunStats::default(),
            incomplete: false,
        }
    }

    #[test]
    fn the_store_answers_what_the_recorded_call_saw_and_the_rest_from_now() {
        let current = Arc::new(MemoryStorage::new());
        current
            .commit(Batch {
                ns: "p".into(),
                writes: vec![
                    ("seq".into(), Some(b"99".to_vec())),
                    ("other".into(), Some(b"now".to_vec())),
                ],
                ..Batch::default()
            })
            .unwrap();
        let recorded = tape(vec![
            HostCall::KvGet {
                key: "seq".into(),
                value: Some(Blob::Text("7".into())),
            },
            HostCall::KvGet {
                key: "gone".into(),
                value: None,
            },
            HostCall::KvList {
                prefix: "c/".into(),
                limit: 5,
                keys: vec!["c/a".into()],
            },
        ]);
        let store = Remembered::new(&recorded, current);
        assert_eq!(store.get("p", "seq").unwrap(), Some(b"7".to_vec()));
        assert_eq!(store.get("p", "gone").unwrap(), None);
        assert_eq!(store.get("p", "other").unwrap(), Some(b"now".to_vec()));
        // A short listing was everything: it answers a larger limit too.
        assert_eq!(store.list("p", "c/", 50).unwrap(), ["c/a"]);
        assert!(
            store
                .list("p", "s", 10)
                .unwrap()
                .contains(&"seq".to_string())
        );
        assert!(store.submit(Batch::default()).is_err());
    }

    #[test]
    fn each_recorded_exchange_answers_the_same_request_once() {
        let exchange = |body: &str, status: u16| {
            HostCall::Http(Exchange {
                method: "POST".into(),
                uri: "http://h/book".into(),
                body: Blob::Text(body.into()),
                status: Some(status),
                headers: vec![],
                response: Some(Blob::Text("{}".into())),
                error: None,
            })
        };
        let recorded = tape(vec![
            exchange("a", 200),
            exchange("a", 201),
            HostCall::Config {
                key: "open".into(),
                value: Some("09:00".into()),
            },
            HostCall::Config {
                key: "dropped".into(),
                value: None,
            },
        ]);
        let serving = HashMap::from([
            ("open".to_string(), "08:00".to_string()),
            ("dropped".to_string(), "x".to_string()),
            ("kept".to_string(), "y".to_string()),
        ]);
        let replayed = Replayed::new(&recorded, &serving);
        assert_eq!(replayed.config["open"], "09:00");
        assert_eq!(replayed.config["kept"], "y");
        assert!(!replayed.config.contains_key("dropped"));
        let first = replayed.answer("POST", "http://h/book", b"a").unwrap();
        assert_eq!(first.status, Some(200));
        assert_eq!(
            replayed
                .answer("POST", "http://h/book", b"a")
                .unwrap()
                .status,
            Some(201)
        );
        assert!(replayed.answer("POST", "http://h/book", b"a").is_none());
        assert!(replayed.answer("POST", "http://h/book", b"b").is_none());
    }
}
