//! The host's store: plugins' key-value data and the idempotency journal, behind one trait.
//!
//! The trait is what every backend must honestly provide: reads of committed data, and one
//! atomic, durable `commit` that checks what a booking read (compare-and-swap over every key
//! and listing it saw), applies its writes and records its answer in the journal, or does
//! nothing. Increment, compare-and-swap and the rest are built on that by
//! [`kv::KvSession`], so a backend implements no booking logic. SQLite ([`sqlite`]) is the
//! default; nothing outside that module knows it is SQLite.

#[cfg(test)]
mod conformance;
pub mod kv;
pub mod memory;
pub mod sqlite;

use std::sync::Arc;

/// A failure of the store itself (I/O, corruption, a backend gone away).
#[derive(Debug, Clone, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// One booking's effects, applied all together or not at all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// The plugin's namespace.
    pub ns: String,
    /// Keys read and the value seen (`None`: absent). All must still hold.
    pub expect: Vec<(String, Option<Vec<u8>>)>,
    /// Listings made and the keys they returned. All must still return the same.
    pub expect_lists: Vec<Listing>,
    /// Keys to set (`Some`) or delete (`None`).
    pub writes: Vec<(String, Option<Vec<u8>>)>,
    /// The answer to record under the booking's idempotency key.
    pub journal: Option<Recorded>,
}

/// A listing a booking made: the keys under `prefix`, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub prefix: String,
    pub limit: u32,
    pub keys: Vec<String>,
}

/// A completed booking in the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The idempotency key (route, WorkOrderID, canonical body).
    pub key: String,
    pub route: String,
    /// `name@version` of the plugin version that answered.
    pub plugin: String,
    /// The response body that was sent.
    pub response: Vec<u8>,
    /// Unix seconds.
    pub at: u64,
}

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// Applied and durable.
    Done,
    /// Something the booking read has changed since: nothing applied; run it again.
    Conflict,
    /// The journal already holds this key (a duplicate finished first): nothing applied.
    Recorded(Recorded),
}

/// A backend of the store.
pub trait Store: Send + Sync + 'static {
    /// The committed value of `key` in namespace `ns`.
    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The committed keys of `ns` that start with `prefix`, in byte order, at most `limit`.
    fn list(&self, ns: &str, prefix: &str, limit: u32) -> Result<Vec<String>, StoreError>;
    /// Applies `batch` atomically and durably if its expectations hold (see [`Commit`]).
    fn commit(&self, batch: Batch) -> Result<Commit, StoreError>;
    /// The journal's record of a completed booking.
    fn recorded(&self, key: &str) -> Result<Option<Recorded>, StoreError>;
    /// Removes journal records older than `before` (Unix seconds); how many.
    fn prune(&self, before: u64) -> Result<u64, StoreError>;
    /// Whether calls may wait on I/O (disk, network), so that async code must make them
    /// on a blocking thread. A backend that never waits is called inline.
    fn waits_on_io(&self) -> bool {
        true
    }
}

/// The store every plugin of a host shares.
pub type SharedStore = Arc<dyn Store>;

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
