//! The in-memory backend (`[store] backend = "memory"`): the store's semantics without
//! durability. Everything is lost when the host stops, so it is for development, tests and
//! benchmarks that measure the plugin path rather than the disk; production uses SQLite.
//!
//! One mutex guards the data. A commit checks a booking's expectations and applies it under
//! the lock, so commits are atomic and serialisable like SQLite's; none of them waits on
//! I/O, which is why the journal calls this backend inline instead of on a blocking thread.

use super::{Batch, Commit, Listing, Recorded, Store, StoreError};
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
}

/// The store in this process's memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    data: Mutex<Data>,
}

impl MemoryStore {
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

impl Store for MemoryStore {
    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().get(ns, key))
    }

    fn list(&self, ns: &str, prefix: &str, limit: u32) -> Result<Vec<String>, StoreError> {
        Ok(self.lock().list(ns, prefix, limit))
    }

    fn commit(&self, batch: Batch) -> Result<Commit, StoreError> {
        let mut data = self.lock();
        if let Some(journal) = &batch.journal
            && let Some(earlier) = data.journal.get(&journal.key)
        {
            return Ok(Commit::Recorded(earlier.clone()));
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
            return Ok(Commit::Conflict);
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
        Ok(Commit::Done)
    }

    fn recorded(&self, key: &str) -> Result<Option<Recorded>, StoreError> {
        Ok(self.lock().journal.get(key).cloned())
    }

    fn prune(&self, before: u64) -> Result<u64, StoreError> {
        let mut data = self.lock();
        let was = data.journal.len();
        data.journal.retain(|_, r| r.at >= before);
        Ok((was - data.journal.len()) as u64)
    }

    fn waits_on_io(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, at: u64) -> Recorded {
        Recorded {
            key: key.into(),
            route: "r".into(),
            plugin: "p@v".into(),
            response: b"{}".to_vec(),
            at,
        }
    }

    fn write(ns: &str, key: &str, value: &[u8]) -> Batch {
        Batch {
            ns: ns.into(),
            writes: vec![(key.into(), Some(value.to_vec()))],
            ..Batch::default()
        }
    }

    #[test]
    fn commits_apply_whole_and_namespaces_are_separate() {
        let s = MemoryStore::new();
        assert_eq!(s.commit(write("a", "k", b"1")).unwrap(), Commit::Done);
        assert_eq!(s.get("a", "k").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.get("b", "k").unwrap(), None);
        let delete = Batch {
            ns: "a".into(),
            writes: vec![("k".into(), None)],
            ..Batch::default()
        };
        assert_eq!(s.commit(delete).unwrap(), Commit::Done);
        assert_eq!(s.get("a", "k").unwrap(), None);
    }

    #[test]
    fn a_changed_read_or_listing_is_a_conflict_and_applies_nothing() {
        let s = MemoryStore::new();
        s.commit(write("a", "seq", b"1")).unwrap();
        let stale = Batch {
            expect: vec![("seq".into(), None)],
            journal: Some(record("k1", 1)),
            ..write("a", "seq", b"2")
        };
        assert_eq!(s.commit(stale).unwrap(), Commit::Conflict);
        assert_eq!(s.get("a", "seq").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.recorded("k1").unwrap(), None);

        let listed = Batch {
            expect_lists: vec![Listing {
                prefix: "s".into(),
                limit: 10,
                keys: vec![],
            }],
            ..write("a", "other", b"x")
        };
        assert_eq!(s.commit(listed).unwrap(), Commit::Conflict);
        let fresh = Batch {
            expect: vec![("seq".into(), Some(b"1".to_vec()))],
            ..write("a", "seq", b"2")
        };
        assert_eq!(s.commit(fresh).unwrap(), Commit::Done);
    }

    #[test]
    fn the_journal_records_once_and_prunes_by_age() {
        let s = MemoryStore::new();
        let first = Batch {
            journal: Some(record("k", 10)),
            ..write("a", "x", b"1")
        };
        assert_eq!(s.commit(first).unwrap(), Commit::Done);
        let again = Batch {
            journal: Some(record("k", 20)),
            ..write("a", "x", b"2")
        };
        assert_eq!(s.commit(again).unwrap(), Commit::Recorded(record("k", 10)));
        assert_eq!(s.get("a", "x").unwrap(), Some(b"1".to_vec()));
        s.commit(Batch {
            journal: Some(record("new", 30)),
            ..Batch::default()
        })
        .unwrap();
        assert_eq!(s.prune(20).unwrap(), 1);
        assert_eq!(s.recorded("k").unwrap(), None);
        assert!(s.recorded("new").unwrap().is_some());
    }

    #[test]
    fn listings_are_in_byte_order_within_the_namespace_and_limit() {
        let s = MemoryStore::new();
        for key in ["p/b", "p/a", "q/a", "p/c"] {
            s.commit(write("a", key, b"")).unwrap();
        }
        s.commit(write("b", "p/z", b"")).unwrap();
        assert_eq!(s.list("a", "p/", 10).unwrap(), ["p/a", "p/b", "p/c"]);
        assert_eq!(s.list("a", "p/", 2).unwrap(), ["p/a", "p/b"]);
        assert_eq!(s.list("a", "", 10).unwrap().len(), 4);
    }
}
