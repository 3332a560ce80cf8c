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
    /// A B-tree rather than a hash map: it grows a node at a time, where a hash map's
    /// doubling would copy every record while holding the lock (a pause of milliseconds
    /// for every request once hundreds of thousands are recorded).
    journal: BTreeMap<String, Recorded>,
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
        let was = data.journal.len();
        data.journal.retain(|_, r| r.at >= before);
        data.tapes.retain(|t| t.at >= before);
        Ok((was - data.journal.len()) as u64)
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
            data.journal.insert(record.key.clone(), record);
        }
        if let Some(tape) = batch.tape {
            data.tapes.push_back(tape);
        }
        Commit::Done
    }
}
