//! The in-memory backend (`[store] backend = "memory"`): the store's semantics without
//! durability. Everything is lost when the host stops, so it is for development, tests and
//! benchmarks that measure the plugin path rather than the disk; production uses SQLite.
//!
//! One mutex guards the data. A commit checks a booking's expectations and applies it under
//! the lock, so commits are atomic and serialisable like SQLite's; none of them waits on
//! I/O, which is why the journal calls this backend inline instead of on a blocking thread.

use super::{Batch, Commit, Listing, Pending, Recorded, Storage, StorageError, TapeQuery, TapeRow};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

#[derive(Debug, Default)]
struct Data {
    /// (namespace, key) → value.
    kv: BTreeMap<(String, String), Vec<u8>>,
    journal: Journal,
    /// Tapes in the order they were kept.
    tapes: std::collections::VecDeque<TapeRow>,
}

/// The store in this process's memory.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    data: Mutex<Data>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Data> {
        // Every change is applied whole under the lock before it is released.
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The journal's records by idempotency key.
///
/// A B-tree rather than a hash map: it grows a node at a time, where a hash map's doubling
/// would copy every record while holding the lock (a pause of milliseconds for every
/// request once hundreds of thousands are recorded). It is ordered by a 64-bit hash of the
/// key, so that a lookup (up to three a booking, nearly always of a key that is not there)
/// descends it with integer comparisons instead of a call comparing strings at every level
/// (4 % of a native booking's CPU with a few hundred thousand records); the records of keys
/// whose hashes collide share a bucket.
#[derive(Debug, Default)]
struct Journal {
    buckets: BTreeMap<u64, Vec<Recorded>>,
    len: usize,
}

impl Journal {
    fn get(&self, key: &str) -> Option<&Recorded> {
        self.get_at(super::keys::hash(key), key)
    }

    fn insert(&mut self, record: Recorded) {
        self.insert_at(super::keys::hash(&record.key), record);
    }

    fn get_at(&self, hash: u64, key: &str) -> Option<&Recorded> {
        self.buckets.get(&hash)?.iter().find(|r| r.key == key)
    }

    fn insert_at(&mut self, hash: u64, record: Recorded) {
        let bucket = self.buckets.entry(hash).or_default();
        match bucket.iter_mut().find(|r| r.key == record.key) {
            Some(earlier) => *earlier = record,
            None => {
                bucket.push(record);
                self.len += 1;
            }
        }
    }

    /// Drops the records older than `before`; how many.
    fn prune(&mut self, before: u64) -> usize {
        let was = self.len;
        self.buckets.retain(|_, bucket| {
            bucket.retain(|r| r.at >= before);
            !bucket.is_empty()
        });
        self.len = self.buckets.values().map(Vec::len).sum();
        was - self.len
    }
}

impl Data {
    fn get(&self, ns: &str, key: &str) -> Option<Vec<u8>> {
        // The tuple key needs owned strings to look up; keys are short.
        self.kv.get(&(ns.to_string(), key.to_string())).cloned()
    }

    fn list(&self, ns: &str, prefix: &str, limit: u32) -> Vec<String> {
        self.kv
            .range((ns.to_string(), prefix.to_string())..)
            .take_while(|((n, k), _)| n == ns && k.starts_with(prefix))
            .take(limit as usize)
            .map(|((_, k), _)| k.clone())
            .collect()
    }
}

impl Storage for MemoryStorage {
    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock().get(ns, key))
    }

    fn list(&self, ns: &str, prefix: &str, limit: u32) -> Result<Vec<String>, StorageError> {
        Ok(self.lock().list(ns, prefix, limit))
    }

    fn submit(&self, batch: Batch) -> Result<Pending, StorageError> {
        // Nothing to wait for: applied is all this backend's "durable" means.
        Ok(Pending::Ready(Ok(self.apply(batch))))
    }

    fn recorded(&self, key: &str) -> Result<Option<Recorded>, StorageError> {
        Ok(self.lock().journal.get(key).cloned())
    }

    fn prune(&self, before: u64) -> Result<u64, StorageError> {
        let mut data = self.lock();
        let pruned = data.journal.prune(before);
        data.tapes.retain(|t| t.at >= before);
        Ok(pruned as u64)
    }

    fn tapes(&self, plugin: &str, query: TapeQuery) -> Result<Vec<TapeRow>, StorageError> {
        Ok(query.select(self.lock().tapes.iter().filter(|t| t.plugin == plugin)))
    }

    fn waits_on_io(&self) -> bool {
        false
    }
}

impl MemoryStorage {
    /// Applies `batch` if its expectations hold.
    fn apply(&self, batch: Batch) -> Commit {
        let mut data = self.lock();
        if let Some(journal) = &batch.journal
            && let Some(earlier) = data.journal.get(&journal.key)
        {
            return Commit::Recorded(earlier.clone());
        }
        let unchanged = batch
            .expect
            .iter()
            .all(|(key, seen)| data.get(&batch.ns, key) == *seen)
            && batch.expect_lists.iter().all(
                |Listing {
                     prefix,
                     limit,
                     keys,
                 }| data.list(&batch.ns, prefix, *limit) == *keys,
            );
        if !unchanged {
            return Commit::Conflict;
        }
        for (key, value) in batch.writes {
            let at = (batch.ns.clone(), key);
            match value {
                Some(v) => data.kv.insert(at, v),
                None => data.kv.remove(&at),
            };
        }
        if let Some(record) = batch.journal {
            data.journal.insert(record);
        }
        if let Some(tape) = batch.tape {
            data.tapes.push_back(tape);
        }
        Commit::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, at: u64, response: &[u8]) -> Recorded {
        Recorded {
            key: key.into(),
            route: "r".into(),
            plugin: "p@sha256:0".into(),
            response: response.to_vec(),
            at,
        }
    }

    #[test]
    fn keys_whose_hashes_collide_keep_their_own_records() {
        let mut journal = Journal::default();
        journal.insert_at(7, record("a", 10, b"A"));
        journal.insert_at(7, record("b", 20, b"B"));
        journal.insert_at(8, record("c", 30, b"C"));
        assert_eq!(journal.get_at(7, "a").unwrap().response, b"A");
        assert_eq!(journal.get_at(7, "b").unwrap().response, b"B");
        assert!(journal.get_at(7, "c").is_none());
        // Recording a key again replaces its record and no other.
        journal.insert_at(7, record("a", 25, b"A2"));
        assert_eq!(journal.get_at(7, "a").unwrap().response, b"A2");
        assert_eq!(journal.get_at(7, "b").unwrap().response, b"B");
        assert_eq!(journal.len, 3);
        // Pruning counts records, not buckets, and empties buckets away.
        assert_eq!(journal.prune(21), 1);
        assert!(journal.get_at(7, "b").is_none());
        assert_eq!(journal.get_at(7, "a").unwrap().at, 25);
        assert_eq!(journal.prune(31), 2);
        assert!(journal.buckets.is_empty());
    }
}
