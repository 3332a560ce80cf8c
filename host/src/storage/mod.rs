//! The host's storage: plugins' key-value data and the idempotency journal, behind one
//! trait. ("Store" alone is wasmtime's per-call `Store`; the `[store]` configuration section
//! keeps its name.)
//!
//! The trait is what every backend must honestly provide: reads of committed data, and one
//! atomic, durable commit that checks what a booking read (compare-and-swap over every key
//! and listing it saw), applies its writes and records its answer in the journal, or does
//! nothing. Increment, compare-and-swap and the rest are built on that by
//! [`kv::KvSession`], so a backend implements no booking logic. SQLite ([`sqlite`]) is the
//! default; nothing outside that module knows it is SQLite.
//!
//! A commit has two moments: its place in the commit order (from then on reads see it, so
//! the next booking of the same key can run) and its durability (only then may its answer
//! leave). [`Storage::submit`] returns at the first and hands back a [`Pending`] that
//! resolves at the second. A disk backend implements [`Durable`] (reads of what is
//! durable, and a group of batches written in one transaction) and gets the ordering from
//! [`pipeline::Pipeline`].
//!
//! PostgreSQL ([`postgres`]) is the store several hosts share; it also provides
//! [`Leases`], which keep a booking from running on two hosts at once.

mod checkpoint;
pub mod keys;
pub mod kv;
pub mod memory;
pub mod pipeline;
pub mod postgres;
pub mod sqlite;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

/// A failure of the store itself (I/O, corruption, a backend gone away).
#[derive(Debug, Clone, thiserror::Error)]
#[error("store: {0}")]
pub struct StorageError(pub String);

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
    /// The fence of the booking's claim ([`Leases`]), which the commit must still hold.
    pub lease: Option<u64>,
    /// The booking's tape (see [`crate::replay`]), kept only if the batch applies.
    pub tape: Option<TapeRow>,
}

/// One booking's tape as the store keeps it: what lists and prunes it, and the tape itself
/// (JSON, see [`crate::tape::Tape`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapeRow {
    /// The plugin's name.
    pub plugin: String,
    /// Unix seconds of the booking.
    pub at: u64,
    pub route: String,
    pub work_order_id: Option<String>,
    /// The version that answered (`sha256:…`).
    pub version: String,
    /// `ok`, or the error type of the answer.
    pub outcome: String,
    pub tape: Vec<u8>,
}

/// Which tapes of a plugin to read: the newest `last`, those since `since` (Unix
/// seconds), or both bounds, and never more than [`TapeQuery::MAX`] of them or
/// [`TapeQuery::MAX_BYTES`]; oldest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapeQuery {
    pub last: Option<u32>,
    pub since: Option<u64>,
}

impl TapeQuery {
    /// Most tapes one query answers, whatever it asks: a replay runs each through a plugin.
    pub const MAX: u32 = 100_000;
    /// Most bytes of tapes one query answers (the newest first): a replay holds them all.
    pub const MAX_BYTES: u64 = 256 << 20;

    /// How many rows to read at most.
    pub fn limit(&self) -> u32 {
        self.last.unwrap_or(Self::MAX).min(Self::MAX)
    }

    /// The newest tapes among `rows` (oldest first) that the query selects, oldest first.
    pub fn select<'a>(&self, rows: impl DoubleEndedIterator<Item = &'a TapeRow>) -> Vec<TapeRow> {
        let mut bytes = 0u64;
        let mut picked: Vec<TapeRow> = rows
            .rev()
            .filter(|t| self.since.is_none_or(|since| t.at >= since))
            .take(self.limit() as usize)
            .take_while(|t| {
                bytes += t.tape.len() as u64;
                bytes <= Self::MAX_BYTES
            })
            .cloned()
            .collect();
        picked.reverse();
        picked
    }
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

/// A commit on its way to disk (see [`Storage::submit`]).
#[derive(Debug)]
pub enum Pending {
    /// Decided without waiting: a conflict, a recorded duplicate, or a backend for which
    /// applied is durable.
    Ready(Result<Commit, StorageError>),
    /// Resolves once the batch is durable, or failed.
    Waiting(oneshot::Receiver<Result<Commit, StorageError>>),
}

impl Pending {
    /// The outcome, once durable.
    pub async fn durable(self) -> Result<Commit, StorageError> {
        match self {
            Pending::Ready(outcome) => outcome,
            Pending::Waiting(rx) => rx.await.unwrap_or_else(|_| Err(stopped())),
        }
    }

    /// The outcome, once durable, blocking the thread (never from async code).
    pub fn wait(self) -> Result<Commit, StorageError> {
        match self {
            Pending::Ready(outcome) => outcome,
            Pending::Waiting(rx) => rx.blocking_recv().unwrap_or_else(|_| Err(stopped())),
        }
    }
}

fn stopped() -> StorageError {
    StorageError("the store's writer has stopped".into())
}

/// A storage backend.
pub trait Storage: Send + Sync + 'static {
    /// The newest committed value of `key` in namespace `ns`.
    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// The newest committed keys of `ns` that start with `prefix`, in byte order, at most
    /// `limit`.
    fn list(&self, ns: &str, prefix: &str, limit: u32) -> Result<Vec<String>, StorageError>;
    /// Commits `batch` if its expectations hold (see [`Commit`]): returns once it has its
    /// place in the commit order, with what resolves when it is durable.
    fn submit(&self, batch: Batch) -> Result<Pending, StorageError>;
    /// Commits `batch` and waits until it is durable (blocking the thread).
    fn commit(&self, batch: Batch) -> Result<Commit, StorageError> {
        self.submit(batch)?.wait()
    }
    /// The journal's record of a completed booking, once durable.
    fn recorded(&self, key: &str) -> Result<Option<Recorded>, StorageError>;
    /// Removes journal records and tapes older than `before` (Unix seconds); how many
    /// journal records.
    fn prune(&self, before: u64) -> Result<u64, StorageError>;
    /// The durable tapes of `plugin` the query selects, oldest first.
    fn tapes(&self, plugin: &str, query: TapeQuery) -> Result<Vec<TapeRow>, StorageError>;
    /// Whether calls may wait on I/O (disk, network), so that async code must make them
    /// on a blocking thread. A backend that never waits is called inline.
    fn waits_on_io(&self) -> bool {
        true
    }
    /// Whether [`Storage::submit`] may wait on I/O (else async code calls it inline).
    fn submit_waits_on_io(&self) -> bool {
        self.waits_on_io()
    }
    /// Claims across hosts, for a store that several hosts share (`None`: this host is
    /// the store's only user, and its own bookkeeping of running bookings suffices).
    fn leases(&self) -> Option<&dyn Leases> {
        None
    }
    /// Whether the store answers now (for `/readyz`).
    fn ping(&self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Plugin versions shared by every host of the store (`None`: each host keeps its own).
    fn versions(&self) -> Option<&dyn SharedVersions> {
        None
    }
    /// Says that a booking is running and will submit a batch in a moment, until the
    /// returned guard drops (after its submit, or when it fails). A backend that writes in
    /// groups may wait for that batch instead of paying a sync without it; one that does
    /// not group ignores it.
    fn expect_batch(&self) -> Expected {
        Expected(None)
    }
}

/// A batch on its way to a store (see [`Storage::expect_batch`]): the store stops counting
/// on it when this drops.
#[must_use = "the store stops expecting the batch when this drops"]
pub struct Expected(Option<Arc<dyn Arrivals>>);

impl Expected {
    /// Counted by `arrivals` until dropped.
    fn counted(arrivals: Arc<dyn Arrivals>) -> Self {
        arrivals.expect();
        Expected(Some(arrivals))
    }
}

impl Drop for Expected {
    fn drop(&mut self) {
        if let Some(arrivals) = self.0.take() {
            arrivals.arrived();
        }
    }
}

impl std::fmt::Debug for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Expected").field(&self.0.is_some()).finish()
    }
}

/// What counts the batches a store expects.
trait Arrivals: Send + Sync {
    fn expect(&self);
    /// The batch was submitted, or will not be.
    fn arrived(&self);
}

/// What a call to a store resolves to, when it is made asynchronously.
pub type StoreFuture<T> = std::pin::Pin<Box<dyn Future<Output = Result<T, StorageError>> + Send>>;

/// What claiming a booking found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Claimed, and not in the journal: run it, and commit with this fence.
    Held(u64),
    /// Already completed (by any host): answer this; no claim is kept.
    Recorded(Recorded),
    /// Running elsewhere: wait for its claim to end.
    Busy,
}

/// Claims on bookings for a store several hosts share: the holder of a key's claim is the
/// only host that runs that booking until the claim ends (its commit, its release, or its
/// expiry: a host that dies holding one costs its bookings the claim's time to live).
/// Asynchronous, because every one is a round trip that a booking waits for.
pub trait Leases: Send + Sync {
    /// Claims `key` for `ttl` unless another holder's claim is still live, then reads the
    /// journal: a booking completed before the claim was made is answered from it.
    fn claim(&self, key: &str, ttl: Duration) -> StoreFuture<Claim>;
    /// Extends a claim still held with `fence`; false if it was lost.
    fn renew(&self, key: &str, fence: u64, ttl: Duration) -> StoreFuture<bool>;
    /// Ends a claim held with `fence` (a booking that failed: the next may run at once).
    fn release(&self, key: &str, fence: u64) -> StoreFuture<()>;
    /// Notified (at least once) when a claim on `key` held elsewhere may have ended: a
    /// hint, so waiters also poll. [`Leases::unwatch`] when done.
    fn watch(&self, key: &str) -> Arc<Notify>;
    fn unwatch(&self, key: &str);
}

/// The version of a plugin that every host sharing the store serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedVersion {
    pub plugin: String,
    /// The component's SHA-256 in hex.
    pub hash: String,
    /// Raised by every deploy, so that hosts apply each once, in order.
    pub generation: u64,
    /// How it came to serve (`api`, `file`, `rollback`, `config`).
    pub how: String,
    /// The host that deployed it.
    pub by: String,
}

/// A candidate version every host of the store runs beside the serving one (shadow or
/// canary, see [`crate::promote`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCandidate {
    pub plugin: String,
    /// The component's SHA-256 in hex.
    pub hash: String,
    /// `shadow` or `canary`.
    pub mode: String,
    /// A canary's share of work orders, in percent.
    pub percent: u8,
    /// Raised by every change, so that hosts apply each once.
    pub generation: u64,
    pub by: String,
}

/// A host that served recently, and what it serves (plugin name → version hash).
#[derive(Debug, Clone, PartialEq)]
pub struct LiveHost {
    pub id: String,
    pub seen_seconds_ago: f64,
    pub serving: std::collections::BTreeMap<String, String>,
}

/// Plugin versions kept in a store several hosts share: the components, which version
/// serves each plugin, and which hosts are alive serving what. Calls wait for the store
/// (call them from blocking threads).
pub trait SharedVersions: Send + Sync {
    /// This host's name in the store.
    fn host_id(&self) -> &str;
    /// Makes `hash` (with its component) the version every host serves, in one
    /// transaction, and tells the hosts: the new generation.
    fn publish(
        &self,
        plugin: &str,
        hash: &str,
        bytes: &[u8],
        how: &str,
    ) -> Result<u64, StorageError>;
    /// The version serving each plugin, as the store says.
    fn serving(&self) -> Result<Vec<SharedVersion>, StorageError>;
    /// A kept component.
    fn component(&self, plugin: &str, hash: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Says this host is alive and serves `serving` (plugin name → version hash).
    fn heartbeat(
        &self,
        serving: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), StorageError>;
    /// The hosts seen within `within`.
    fn live_hosts(&self, within: Duration) -> Result<Vec<LiveHost>, StorageError>;
    /// Notified when a deploy is published (a hint: followers poll too).
    fn published(&self) -> Arc<Notify>;
    /// Makes `hash` (with its component) plugin `plugin`'s candidate on every host, in
    /// place of any before it, and tells the hosts.
    fn stage(
        &self,
        plugin: &str,
        hash: &str,
        bytes: &[u8],
        mode: &str,
        percent: u8,
    ) -> Result<(), StorageError>;
    /// Ends plugin `plugin`'s candidate `hash` on every host (a promote, an abort, a
    /// rollback); whether it was the candidate.
    fn unstage(&self, plugin: &str, hash: &str) -> Result<bool, StorageError>;
    /// The candidates every host runs.
    fn candidates(&self) -> Result<Vec<SharedCandidate>, StorageError>;
}

/// What a disk backend provides behind a [`pipeline::Pipeline`].
pub trait Durable: Send + Sync + 'static {
    /// The durable value of `key` in namespace `ns`.
    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// The durable keys of `ns` that start with `prefix`, in byte order, at most `limit`.
    fn list(&self, ns: &str, prefix: &str, limit: u32) -> Result<Vec<String>, StorageError>;
    /// The journal's durable record under `key`.
    fn recorded(&self, key: &str) -> Result<Option<Recorded>, StorageError>;
    /// Removes journal records and tapes older than `before` (Unix seconds); how many
    /// journal records.
    fn prune(&self, before: u64) -> Result<u64, StorageError>;
    /// The durable tapes of `plugin` the query selects, oldest first.
    fn tapes(&self, plugin: &str, query: TapeQuery) -> Result<Vec<TapeRow>, StorageError>;
    /// Writes `batches` in order in one durable transaction: each checked after the ones
    /// before it and applied only if its expectations hold. An error writes none of them.
    fn commit_group(&self, batches: &[&Batch]) -> Result<Vec<Commit>, StorageError>;
    /// Whether reads wait on the network rather than on a local file's page cache.
    fn waits_on_io(&self) -> bool {
        false
    }
    /// Claims across hosts, for a backend several hosts share.
    fn leases(&self) -> Option<&dyn Leases> {
        None
    }
    /// Whether the backend answers now.
    fn ping(&self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Plugin versions shared by the hosts of a backend several hosts share.
    fn versions(&self) -> Option<&dyn SharedVersions> {
        None
    }
}

/// The storage every plugin of a host shares.
pub type SharedStorage = Arc<dyn Storage>;

/// One suite of cases every storage backend must pass, run against each of them: the same
/// commits, conflicts, journal records and listings, whatever holds them.
#[cfg(test)]
mod conformance {
    use super::{Batch, Commit, Listing, Recorded, Storage, TapeQuery, TapeRow};

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

    pub fn commits_apply_whole_and_namespaces_are_separate(s: &dyn Storage) {
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

    pub fn a_changed_read_or_listing_is_a_conflict_and_applies_nothing(s: &dyn Storage) {
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

    pub fn the_journal_records_once_and_prunes_by_age(s: &dyn Storage) {
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

    fn tape(plugin: &str, at: u64, body: &[u8]) -> TapeRow {
        TapeRow {
            plugin: plugin.into(),
            at,
            route: "r".into(),
            work_order_id: Some(format!("WO-{at}")),
            version: "sha256:0".into(),
            outcome: "ok".into(),
            tape: body.to_vec(),
        }
    }

    pub fn tapes_are_kept_with_their_booking_listed_newest_and_pruned(s: &dyn Storage) {
        for at in [10, 20, 30, 40] {
            let batch = Batch {
                journal: Some(record(&format!("k{at}"), at)),
                tape: Some(tape("p", at, format!("t{at}").as_bytes())),
                ..write("a", &format!("x{at}"), b"1")
            };
            assert_eq!(s.commit(batch).unwrap(), Commit::Done);
        }
        // A tape alone (a refused booking) is kept too; one whose batch conflicts is not.
        let alone = Batch {
            ns: "a".into(),
            tape: Some(tape("p", 50, b"t50")),
            ..Batch::default()
        };
        assert_eq!(s.commit(alone).unwrap(), Commit::Done);
        let stale = Batch {
            expect: vec![("x10".into(), None)],
            tape: Some(tape("p", 60, b"t60")),
            ..write("a", "y", b"1")
        };
        assert_eq!(s.commit(stale).unwrap(), Commit::Conflict);
        s.commit(Batch {
            tape: Some(tape("other", 70, b"o")),
            ..write("b", "z", b"1")
        })
        .unwrap();
        let bodies = |q: TapeQuery| -> Vec<Vec<u8>> {
            s.tapes("p", q)
                .unwrap()
                .into_iter()
                .map(|t| t.tape)
                .collect()
        };
        assert_eq!(
            bodies(TapeQuery::default()),
            [&b"t10"[..], b"t20", b"t30", b"t40", b"t50"]
        );
        let newest = TapeQuery {
            last: Some(2),
            since: None,
        };
        assert_eq!(bodies(newest), [&b"t40"[..], b"t50"]);
        let since = TapeQuery {
            last: None,
            since: Some(30),
        };
        assert_eq!(bodies(since), [&b"t30"[..], b"t40", b"t50"]);
        assert_eq!(s.tapes("p", newest).unwrap()[0], tape("p", 40, b"t40"));
        s.prune(35).unwrap();
        assert_eq!(bodies(TapeQuery::default()), [&b"t40"[..], b"t50"]);
        assert_eq!(s.tapes("other", TapeQuery::default()).unwrap().len(), 1);
    }

    pub fn listings_are_in_byte_order_within_the_namespace_and_limit(s: &dyn Storage) {
        for key in ["p/b", "p/a", "q/a", "p/c"] {
            s.commit(write("a", key, b"")).unwrap();
        }
        s.commit(write("b", "p/z", b"")).unwrap();
        assert_eq!(s.list("a", "p/", 10).unwrap(), ["p/a", "p/b", "p/c"]);
        assert_eq!(s.list("a", "p/", 2).unwrap(), ["p/a", "p/b"]);
        assert_eq!(s.list("a", "", 10).unwrap().len(), 4);
    }

    /// What a case's store needs beside it: a directory to remove, a database server to
    /// keep running.
    pub enum Beside {
        Nothing,
        Dir(std::path::PathBuf),
        Cluster(std::sync::Arc<crate::storage::postgres::local::LocalCluster>),
    }

    /// Runs `case` against the store `make` builds for it, then removes the store's
    /// directory, if it has one.
    fn run(
        name: &str,
        make: impl FnOnce(&str) -> (Box<dyn Storage>, Beside),
        case: fn(&dyn Storage),
    ) {
        let (store, beside) = make(name);
        case(&*store);
        drop(store);
        match beside {
            Beside::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            // The last case to let go stops the server.
            Beside::Cluster(cluster) => drop(cluster),
            Beside::Nothing => {}
        }
    }

    /// A test per case against the backend `$make` builds.
    macro_rules! conformance {
        ($backend:ident, $make:expr) => {
            mod $backend {
                conformance!(@cases $make;
                    commits_apply_whole_and_namespaces_are_separate,
                    a_changed_read_or_listing_is_a_conflict_and_applies_nothing,
                    the_journal_records_once_and_prunes_by_age,
                    tapes_are_kept_with_their_booking_listed_newest_and_pruned,
                    listings_are_in_byte_order_within_the_namespace_and_limit);
            }
        };
        (@cases $make:expr; $($case:ident),*) => {
            $(
                #[test]
                fn $case() {
                    super::run(stringify!($case), $make, super::$case);
                }
            )*
        };
    }

    conformance!(memory, |_case: &str| {
        let store: Box<dyn crate::storage::Storage> =
            Box::new(crate::storage::memory::MemoryStorage::new());
        (store, super::Beside::Nothing)
    });
    conformance!(sqlite, |case: &str| {
        let (store, dir) =
            crate::storage::sqlite::tests::temp_store(&format!("conformance-{case}"));
        let store: Box<dyn crate::storage::Storage> = Box::new(store);
        (store, super::Beside::Dir(dir))
    });
    conformance!(postgres, |case: &str| {
        let (store, cluster) = crate::storage::postgres::tests::temp_store(case);
        let store: Box<dyn crate::storage::Storage> = Box::new(store);
        (store, super::Beside::Cluster(cluster))
    });
}
