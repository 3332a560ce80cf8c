//! Bookings that happen once: the idempotency journal around a book-job call.
//!
//! The key is (route, WorkOrderID, SHA-256 of the canonical body). In order:
//! 1. a key the journal holds is answered from it, without running the plugin (header
//!    `x-followup-replayed: true`);
//! 2. a duplicate of a booking still running in this host waits for it, then looks again;
//! 3. otherwise the plugin runs; its key-value writes and the journal record are committed
//!    in one durable transaction before the 200 leaves, and only if what the plugin read is
//!    unchanged — else it runs again on a fresh instance (after a few optimistic attempts,
//!    or at once in a namespace that saw conflicts in the last second, holding its
//!    namespace exclusively, which cannot conflict). The namespace is held from the run
//!    until the commit has its place in the store's order, not until it is durable: the
//!    next booking reads what this one wrote while its group is being written (see
//!    `storage/pipeline.rs`);
//! 4. a failed booking commits nothing, so a retry runs it afresh.
//!
//! A crash before the commit leaves nothing behind (the retry runs the plugin again and
//! its storage writes happen once); a crash after it leaves the record, which the retry gets.
//! Records older than the retention are pruned ([`Journal::prune_periodically`]).

use crate::contract::RouteKind;
use crate::contract::types::RequestContext;
use crate::error::{ApiError, ErrorKind};
use crate::plugin::LoadedPlugin;
use crate::runtime::PluginRuntime;
use crate::runtime::Services;
use crate::storage::kv::KvSession;
use crate::storage::{Batch, Commit, Recorded, SharedStorage, StorageError};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{RwLock, watch};
use tracing::Instrument;

/// Equal for retries of the same booking (see [`crate::contract::idempotency`]).
pub use crate::contract::idempotency::key as idempotency_key;

/// Attempts that commit optimistically before one runs with its namespace held.
const OPTIMISTIC_ATTEMPTS: usize = 3;

/// How long after a conflict a namespace's bookings run exclusively from their first
/// attempt: a hot key (an order-number sequence, a day's capacity) conflicts again and
/// again, and every optimistic run that conflicts is a plugin call thrown away.
const CONTENDED_FOR: Duration = Duration::from_secs(1);

/// What a booking answered: run now, or replayed from the journal.
#[derive(Debug)]
pub enum Booked {
    Ran(Vec<u8>),
    Replayed(Recorded),
}

/// Bookings running in this host, by idempotency key, so that a duplicate waits for the
/// first instead of running beside it.
#[derive(Debug, Default)]
struct InFlight {
    running: Mutex<HashMap<String, watch::Sender<()>>>,
}

/// Held by the booking that runs a key; dropping it wakes the duplicates.
struct Claim<'a> {
    in_flight: &'a InFlight,
    key: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        // Dropping the sender ends every waiter's `changed()`.
        self.in_flight
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

impl InFlight {
    /// Claims `key`, or answers what to wait on while another booking holds it.
    fn claim(&self, key: &str) -> Result<Claim<'_>, watch::Receiver<()>> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(first) = running.get(key) {
            return Err(first.subscribe());
        }
        running.insert(key.to_string(), watch::channel(()).0);
        Ok(Claim {
            in_flight: self,
            key: key.to_string(),
        })
    }
}

/// One plugin's namespace: optimistic commits share its lock, an exclusive attempt holds
/// it alone from its run to its commit; and when it last saw a conflict.
#[derive(Debug, Default)]
struct Namespace {
    lock: RwLock<()>,
    /// Milliseconds after [`Namespaces::epoch`] of the last conflict, plus one (0: never).
    conflicted: AtomicU64,
}

#[derive(Debug)]
struct Namespaces {
    spaces: HashMap<String, Namespace>,
    epoch: Instant,
}

impl Namespaces {
    fn new<'a>(names: impl IntoIterator<Item = &'a String>) -> Namespaces {
        Namespaces {
            spaces: names
                .into_iter()
                .map(|n| (n.clone(), Namespace::default()))
                .collect(),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn conflicted(&self, space: &Namespace) {
        space.conflicted.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Whether `space` saw a conflict within [`CONTENDED_FOR`].
    fn contended(&self, space: &Namespace) -> bool {
        let at = space.conflicted.load(Ordering::Relaxed);
        at != 0 && self.now_ms().saturating_sub(at) < CONTENDED_FOR.as_millis() as u64
    }
}

fn unavailable(e: StorageError) -> ApiError {
    ApiError::new(ErrorKind::StoreUnavailable, e.to_string())
}

/// Runs a storage call: on a blocking thread when the storage may wait on I/O, else inline.
async fn blocking<T: Send + 'static>(
    storage: &SharedStorage,
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, ApiError> {
    if !storage.waits_on_io() {
        return f().map_err(unavailable);
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, format!("store task failed: {e}")))?
        .map_err(unavailable)
}

async fn lookup(storage: &SharedStorage, key: &str) -> Result<Option<Recorded>, ApiError> {
    let (s, key) = (storage.clone(), key.to_string());
    blocking(storage, move || s.recorded(&key)).await
}

/// The journal of one host: its storage, the bookings running, the namespace locks and the
/// retention.
pub struct Journal {
    storage: SharedStorage,
    in_flight: InFlight,
    namespaces: Namespaces,
    retention: Duration,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// A journal in `storage` for the plugins named `plugins`, keeping records `retention`.
    pub fn new<'a>(
        storage: SharedStorage,
        plugins: impl IntoIterator<Item = &'a String>,
        retention: Duration,
    ) -> Journal {
        Journal {
            storage,
            in_flight: InFlight::default(),
            namespaces: Namespaces::new(plugins),
            retention,
        }
    }

    /// Removes records past their retention, now and then every hour, for as long as the
    /// journal lives.
    pub fn prune_periodically(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let journal = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(3600));
            loop {
                every.tick().await;
                let Some(journal) = journal.upgrade() else {
                    return;
                };
                let before =
                    crate::clock::unix_seconds().saturating_sub(journal.retention.as_secs());
                let storage = journal.storage.clone();
                drop(journal);
                match tokio::task::spawn_blocking(move || storage.prune(before)).await {
                    Ok(Ok(n)) if n > 0 => tracing::info!(removed = n, "journal pruned"),
                    Ok(Err(e)) => tracing::warn!("journal pruning failed: {e}"),
                    _ => {}
                }
            }
        })
    }

    /// Books `json` through `plugin` at most once per idempotency key (see the module doc).
    pub async fn book(
        &self,
        runtime: &PluginRuntime,
        plugin: &LoadedPlugin,
        ctx: &RequestContext,
        json: &Value,
    ) -> Result<Booked, ApiError> {
        book(self, runtime, plugin, ctx, json).await
    }
}

async fn book(
    app: &Journal,
    runtime: &PluginRuntime,
    plugin: &LoadedPlugin,
    ctx: &RequestContext,
    json: &Value,
) -> Result<Booked, ApiError> {
    let key = &ctx.idempotency_key;
    let _claim = loop {
        match app.in_flight.claim(key) {
            Ok(claim) => break claim,
            Err(mut first) => {
                // Ends when the first booking ends, however it ends.
                let _ = first.changed().await;
                if let Some(done) = lookup(&app.storage, key).await? {
                    return Ok(Booked::Replayed(done));
                }
            }
        }
    };
    // Claimed: this is the only booking of the key running in this host; it may have
    // been completed before (a retry).
    if let Some(done) = lookup(&app.storage, key).await? {
        return Ok(Booked::Replayed(done));
    }

    let name = &plugin.ident.name;
    let space = app.namespaces.spaces.get(name);
    for attempt in 0.. {
        let exclusive = match space {
            Some(space)
                if plugin.kv
                    && (attempt >= OPTIMISTIC_ATTEMPTS || app.namespaces.contended(space)) =>
            {
                Some(space.lock.write().await)
            }
            _ => None,
        };
        let services = Services {
            kv: plugin
                .kv
                .then(|| KvSession::new(app.storage.clone(), name, true)),
        };
        let (bytes, services) =
            crate::dispatch::answer(runtime, plugin, RouteKind::BookJob, ctx, json, services)
                .await?;
        let record = Recorded {
            key: key.clone(),
            route: ctx.route.clone(),
            plugin: plugin.ident.to_string(),
            response: bytes,
            at: crate::clock::unix_seconds(),
        };
        let batch = match services.kv {
            Some(kv) => kv.into_batch(Some(record)),
            None => Batch {
                ns: name.clone(),
                journal: Some(record),
                ..Batch::default()
            },
        };
        let shared = match (&exclusive, space) {
            (None, Some(space)) if !batch.writes.is_empty() => Some(space.lock.read().await),
            _ => None,
        };
        let response = batch.journal.as_ref().map(|j| j.response.clone());
        let storage = app.storage.clone();
        let span = otel_span!(
            "followup.store_commit",
            followup.attempt = attempt,
            followup.commit = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let committed = async {
            let pending = blocking(&app.storage, move || storage.submit(batch)).await?;
            // Ordered: the next booking of the namespace may run on what this one wrote.
            drop((shared, exclusive));
            pending.durable().await.map_err(unavailable)
        }
        .instrument(span.clone())
        .await;
        if !span.is_none() {
            match &committed {
                Ok(Commit::Done) => span.record("followup.commit", "done"),
                Ok(Commit::Recorded(_)) => span.record("followup.commit", "recorded"),
                Ok(Commit::Conflict) => span.record("followup.commit", "conflict"),
                Err(e) => span.record("error.type", e.kind.code()),
            };
        }
        let outcome = (committed?, response);
        if let (Commit::Conflict, Some(space)) = (&outcome.0, space) {
            app.namespaces.conflicted(space);
        }
        match outcome {
            (Commit::Done, Some(response)) => return Ok(Booked::Ran(response)),
            (Commit::Recorded(done), _) => return Ok(Booked::Replayed(done)),
            (Commit::Conflict, _) if attempt <= OPTIMISTIC_ATTEMPTS => {
                tracing::debug!(plugin = %plugin.ident, attempt, "store conflict; booking again");
            }
            (Commit::Conflict | Commit::Done, _) => break,
        }
    }
    Err(ApiError::new(
        ErrorKind::Conflict,
        format!(
            "plugin {}: the booking kept conflicting with concurrent bookings in the store",
            plugin.ident
        ),
    )
    .for_plugin(&plugin.ident))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn idempotency_key_ignores_key_order_and_white_space() {
        let a: Value = serde_json::from_str(r#"{"A":1,"B":{"x":[1,2]}}"#).unwrap();
        let b: Value = serde_json::from_str("{ \"B\": {\"x\": [1, 2]},\n \"A\": 1 }").unwrap();
        assert_eq!(
            idempotency_key("r", Some("1"), &a),
            idempotency_key("r", Some("1"), &b)
        );
        assert_ne!(
            idempotency_key("r", Some("1"), &a),
            idempotency_key("r", Some("2"), &a)
        );
        assert_ne!(
            idempotency_key("r", Some("1"), &a),
            idempotency_key("q", Some("1"), &a)
        );
        assert_eq!(idempotency_key("r", None, &a).len(), 64);
        // Keys already in journals stay valid: SHA-256 of route, 0, id, 0, compact JSON.
        let mut plain = Sha256::new();
        plain.update(b"r\x001\x00");
        plain.update(a.to_string().as_bytes());
        let expected: String = plain
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(idempotency_key("r", Some("1"), &a), expected);
    }
}
