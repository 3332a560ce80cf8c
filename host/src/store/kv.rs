//! One plugin call's view of its key-value namespace.
//!
//! Reads see committed data plus the call's own writes, and each key read is remembered
//! with the value seen (so a second read of it answers the same). Writes are held until the
//! call ends: for a booking that succeeds they are committed together with its journal
//! record, only if nothing it read has changed meanwhile (else the booking runs again); for a
//! booking that fails they are dropped. Increment and compare-and-swap are a read and a write
//! of this kind, which makes them race-free without locks held across a plugin call.

use super::{Batch, Listing, Recorded, SharedStore, StoreError};
use std::collections::BTreeMap;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 << 10;
/// Most operations in one call.
pub const MAX_OPERATIONS: u32 = 10_000;
/// Most bytes written (keys and values) in one call.
pub const MAX_WRITTEN_BYTES: usize = 4 << 20;
/// Most keys one listing answers.
pub const MAX_LIST: u32 = 1_000;

/// Why a key-value operation failed; the guest sees it as `kv-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    NotANumber(String),
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for KvError {
    fn from(e: StoreError) -> Self {
        KvError::Unavailable(e.0)
    }
}

pub struct KvSession {
    store: SharedStore,
    ns: String,
    writable: bool,
    reads: BTreeMap<String, Option<Vec<u8>>>,
    lists: Vec<Listing>,
    writes: BTreeMap<String, Option<Vec<u8>>>,
    operations: u32,
    written: usize,
}

impl std::fmt::Debug for KvSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvSession")
            .field("ns", &self.ns)
            .field("writable", &self.writable)
            .field("reads", &self.reads.len())
            .field("writes", &self.writes.len())
            .finish_non_exhaustive()
    }
}

impl KvSession {
    /// A session over namespace `ns`; `writable` is false for appointment searches.
    pub fn new(store: SharedStore, ns: &str, writable: bool) -> KvSession {
        KvSession {
            store,
            ns: ns.to_string(),
            writable,
            reads: BTreeMap::new(),
            lists: Vec::new(),
            writes: BTreeMap::new(),
            operations: 0,
            written: 0,
        }
    }

    fn count(&mut self) -> Result<(), KvError> {
        self.operations += 1;
        if self.operations > MAX_OPERATIONS {
            return Err(KvError::TooLarge(format!(
                "more than {MAX_OPERATIONS} key-value operations in one call"
            )));
        }
        Ok(())
    }

    fn check_key(key: &str) -> Result<(), KvError> {
        if key.len() > MAX_KEY_BYTES {
            return Err(KvError::TooLarge(format!(
                "key of {} bytes; the limit is {MAX_KEY_BYTES}",
                key.len()
            )));
        }
        Ok(())
    }

    pub fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.count()?;
        Self::check_key(key)?;
        self.read(key)
    }

    fn read(&mut self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        if let Some(written) = self.writes.get(key) {
            return Ok(written.clone());
        }
        if let Some(seen) = self.reads.get(key) {
            return Ok(seen.clone());
        }
        let value = self.store.get(&self.ns, key)?;
        self.reads.insert(key.to_string(), value.clone());
        Ok(value)
    }

    fn write(&mut self, key: &str, value: Option<Vec<u8>>) -> Result<(), KvError> {
        if !self.writable {
            return Err(KvError::Denied(
                "the store is read-only during an appointment search".into(),
            ));
        }
        Self::check_key(key)?;
        let size = value.as_ref().map_or(0, Vec::len);
        if size > MAX_VALUE_BYTES {
            return Err(KvError::TooLarge(format!(
                "value of {size} bytes; the limit is {MAX_VALUE_BYTES}"
            )));
        }
        self.written += key.len() + size;
        if self.written > MAX_WRITTEN_BYTES {
            return Err(KvError::TooLarge(format!(
                "more than {MAX_WRITTEN_BYTES} bytes written in one call"
            )));
        }
        self.writes.insert(key.to_string(), value);
        Ok(())
    }

    pub fn set(&mut self, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        self.count()?;
        self.write(key, Some(value))
    }

    /// Deletes `key`; whether it existed.
    pub fn delete(&mut self, key: &str) -> Result<bool, KvError> {
        self.count()?;
        Self::check_key(key)?;
        let existed = self.read(key)?.is_some();
        self.write(key, None)?;
        Ok(existed)
    }

    /// Keys starting with `prefix`, in byte order, at most `limit` (and [`MAX_LIST`]).
    pub fn list(&mut self, prefix: &str, limit: u32) -> Result<Vec<String>, KvError> {
        self.count()?;
        Self::check_key(prefix)?;
        let limit = limit.min(MAX_LIST);
        // Enough committed keys that the call's own deletions cannot leave it short.
        let pending = u32::try_from(self.writes.len()).unwrap_or(u32::MAX);
        let fetch = limit.saturating_add(pending);
        let committed = self.store.list(&self.ns, prefix, fetch)?;
        self.lists.push(Listing {
            prefix: prefix.to_string(),
            limit: fetch,
            keys: committed.clone(),
        });
        let mut keys: std::collections::BTreeSet<String> = committed.into_iter().collect();
        for (key, value) in self.writes.range(prefix.to_string()..) {
            if !key.starts_with(prefix) {
                break;
            }
            if value.is_some() {
                keys.insert(key.clone());
            } else {
                keys.remove(key);
            }
        }
        Ok(keys.into_iter().take(limit as usize).collect())
    }

    /// Adds `delta` to the integer at `key` (absent counts as 0) and answers the new value.
    /// Integers are stored as decimal text.
    pub fn increment(&mut self, key: &str, delta: i64) -> Result<i64, KvError> {
        self.count()?;
        Self::check_key(key)?;
        let current = match self.read(key)? {
            None => 0,
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|t| t.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    KvError::NotANumber(format!("the value at {key:?} is not a decimal integer"))
                })?,
        };
        let next = current.checked_add(delta).ok_or_else(|| {
            KvError::NotANumber(format!("{current} + {delta} overflows at {key:?}"))
        })?;
        self.write(key, Some(next.to_string().into_bytes()))?;
        Ok(next)
    }

    /// Sets `key` to `new` (or deletes it when `None`) if its value is `expected` (`None`:
    /// absent); whether it did.
    pub fn compare_and_swap(
        &mut self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, KvError> {
        self.count()?;
        Self::check_key(key)?;
        if self.read(key)? != expected {
            return Ok(false);
        }
        self.write(key, new)?;
        Ok(true)
    }

    /// Whether the call wrote anything.
    pub fn wrote(&self) -> bool {
        !self.writes.is_empty()
    }

    /// The call's effects as one batch, with `journal` recorded alongside.
    pub fn into_batch(self, journal: Option<Recorded>) -> Batch {
        Batch {
            ns: self.ns,
            expect: self.reads.into_iter().collect(),
            expect_lists: self.lists,
            writes: self.writes.into_iter().collect(),
            journal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Commit;
    use crate::store::sqlite::SqliteStore;
    use std::sync::Arc;

    fn store(name: &str) -> (SharedStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("followup-kv-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = SqliteStore::open(&dir.join("kv.db")).unwrap();
        (Arc::new(s), dir)
    }

    #[test]
    fn a_call_sees_its_own_writes_and_commits_them_together() {
        let (s, dir) = store("own");
        let mut kv = KvSession::new(s.clone(), "p", true);
        assert_eq!(kv.get("a").unwrap(), None);
        kv.set("a", b"1".to_vec()).unwrap();
        assert_eq!(kv.get("a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(kv.increment("n", 5).unwrap(), 5);
        assert_eq!(kv.increment("n", -2).unwrap(), 3);
        assert!(
            kv.compare_and_swap("a", Some(b"1".to_vec()), Some(b"2".to_vec()))
                .unwrap()
        );
        assert!(!kv.compare_and_swap("a", Some(b"1".to_vec()), None).unwrap());
        assert_eq!(kv.list("", 10).unwrap(), vec!["a", "n"]);
        assert!(kv.delete("a").unwrap());
        assert_eq!(kv.list("", 10).unwrap(), vec!["n"]);
        // Nothing is visible to others before the commit.
        assert_eq!(s.get("p", "n").unwrap(), None);
        assert_eq!(s.commit(kv.into_batch(None)).unwrap(), Commit::Done);
        assert_eq!(s.get("p", "n").unwrap(), Some(b"3".to_vec()));
        assert_eq!(s.get("p", "a").unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn concurrent_increments_conflict_and_a_rerun_sees_the_new_value() {
        let (s, dir) = store("race");
        let mut first = KvSession::new(s.clone(), "p", true);
        let mut second = KvSession::new(s.clone(), "p", true);
        assert_eq!(first.increment("seq", 1).unwrap(), 1);
        assert_eq!(second.increment("seq", 1).unwrap(), 1);
        assert_eq!(s.commit(first.into_batch(None)).unwrap(), Commit::Done);
        assert_eq!(s.commit(second.into_batch(None)).unwrap(), Commit::Conflict);
        let mut rerun = KvSession::new(s.clone(), "p", true);
        assert_eq!(rerun.increment("seq", 1).unwrap(), 2);
        assert_eq!(s.commit(rerun.into_batch(None)).unwrap(), Commit::Done);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn limits_and_read_only_sessions_refuse_clearly() {
        let (s, dir) = store("limits");
        let mut kv = KvSession::new(s.clone(), "p", false);
        assert!(matches!(kv.set("a", vec![]), Err(KvError::Denied(_))));
        assert_eq!(kv.get("a").unwrap(), None);
        let mut kv = KvSession::new(s.clone(), "p", true);
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(matches!(kv.get(&long), Err(KvError::TooLarge(_))));
        assert!(matches!(
            kv.set("v", vec![0; MAX_VALUE_BYTES + 1]),
            Err(KvError::TooLarge(_))
        ));
        kv.set("text", b"abc".to_vec()).unwrap();
        assert!(matches!(
            kv.increment("text", 1),
            Err(KvError::NotANumber(_))
        ));
        kv.set("max", i64::MAX.to_string().into_bytes()).unwrap();
        assert!(matches!(
            kv.increment("max", 1),
            Err(KvError::NotANumber(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
