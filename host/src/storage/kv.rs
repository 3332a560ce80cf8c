//! One plugin call's view of its key-value namespace.
//!
//! Reads see committed data plus the call's own writes, and each key read is remembered
//! with the value seen (so a second read of it answers the same). Writes are held until the
//! call ends: for a booking that succeeds they are committed together with its journal
//! record, only if nothing it read has changed meanwhile (else the booking runs again); for a
//! booking that fails they are dropped. Increment and compare-and-swap are a read and a write
//! of this kind, which makes them race-free without locks held across a plugin call.

use super::{Batch, Listing, Recorded, SharedStorage, StorageError};
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
/// Most bytes of reads and listings (keys and values the call saw, which the session keeps
/// to check them at commit) in one call. A read or listing repeated is answered from what
/// the session already holds and costs nothing more.
pub const MAX_READ_BYTES: usize = 4 << 20;
/// What the session's bookkeeping of one key read or listed costs on top of its bytes.
const ENTRY_BYTES: usize = 32;

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

impl From<StorageError> for KvError {
    fn from(e: StorageError) -> Self {
        KvError::Unavailable(e.0)
    }
}

pub struct KvSession {
    storage: SharedStorage,
    ns: String,
    writable: bool,
    reads: BTreeMap<String, Option<Vec<u8>>>,
    lists: Vec<Listing>,
    writes: BTreeMap<String, Option<Vec<u8>>>,
    operations: u32,
    written: usize,
    /// Bytes of reads and listings held, against [`MAX_READ_BYTES`].
    held: usize,
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
    pub fn new(storage: SharedStorage, ns: &str, writable: bool) -> KvSession {
        KvSession {
            storage,
            ns: ns.to_string(),
            writable,
            reads: BTreeMap::new(),
            lists: Vec::new(),
            writes: BTreeMap::new(),
            operations: 0,
            written: 0,
            held: 0,
        }
    }

    /// Bytes of reads and listings the session holds.
    pub fn read_bytes(&self) -> usize {
        self.held
    }

    /// Bytes of keys and values the call wrote.
    pub fn written_bytes(&self) -> usize {
        self.written
    }

    /// Charges `bytes` of reads or listings to the call.
    fn hold(&mut self, bytes: usize) -> Result<(), KvError> {
        self.held = self.held.saturating_add(bytes);
        if self.held > MAX_READ_BYTES {
            return Err(KvError::TooLarge(format!(
                "more than {MAX_READ_BYTES} bytes of keys and values read in one call"
            )));
        }
        Ok(())
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
        let value = self.storage.get(&self.ns, key)?;
        self.hold(ENTRY_BYTES + key.len() + value.as_ref().map_or(0, Vec::len))?;
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
        // The same listing again sees what it saw the first time (as a key read again
        // does), and the session keeps it once.
        let seen = self
            .lists
            .iter()
            .find(|l| l.prefix == prefix && l.limit == fetch);
        let committed = match seen {
            Some(listing) => listing.keys.clone(),
            None => {
                let keys = self.storage.list(&self.ns, prefix, fetch)?;
                let bytes = keys.iter().map(|k| ENTRY_BYTES + k.len()).sum::<usize>();
                self.hold(ENTRY_BYTES + prefix.len() + bytes)?;
                self.lists.push(Listing {
                    prefix: prefix.to_string(),
                    limit: fetch,
                    keys: keys.clone(),
                });
                keys
            }
        };
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
            lease: None,
            tape: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Commit;
    use crate::storage::sqlite::SqliteStorage;
    use std::sync::Arc;

    fn store(name: &str) -> (SharedStorage, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("followup-kv-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = SqliteStorage::open(&dir.join("kv.db")).unwrap();
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
    fn repeated_listings_are_held_once_and_reads_are_bounded() {
        let (s, dir) = store("held");
        let mut setup = KvSession::new(s.clone(), "p", true);
        for i in 0..1_000 {
            setup
                .set(&format!("{i:04}{}", "k".repeat(500)), b"v".to_vec())
                .unwrap();
        }
        assert_eq!(s.commit(setup.into_batch(None)).unwrap(), Commit::Done);
        let mut kv = KvSession::new(s.clone(), "p", false);
        let first = kv.list("", 1_000).unwrap();
        let held = kv.read_bytes();
        assert!(held > 500_000, "{held}");
        for _ in 0..1_000 {
            assert_eq!(kv.list("", 1_000).unwrap(), first);
        }
        assert_eq!(kv.read_bytes(), held);
        // Distinct listings are charged until the budget runs out.
        let mut refused = None;
        for limit in (1..=1_000).rev() {
            if let Err(e) = kv.list("", limit) {
                refused = Some(e);
                break;
            }
        }
        assert!(matches!(refused, Some(KvError::TooLarge(_))), "{refused:?}");
        assert!(kv.read_bytes() <= MAX_READ_BYTES + 600_000);
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
