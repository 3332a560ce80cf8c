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
//!
//! With a store several hosts share ([`Leases`]), step 2 spans the hosts: before it runs,
//! a booking claims its key in the store, a duplicate on another host waits for that claim
//! to end (woken by the store, polling in any case) and is answered from the journal, and
//! the commit applies only while the claim is still the booking's. A claim is renewed while
//! its booking runs; one left by a host that died expires, and the booking runs elsewhere.

use crate::contract::RouteKind;
use crate::contract::types::RequestContext;
use crate::error::{ApiError, ErrorKind};
use crate::plugin::LoadedPlugin;
use crate::runtime::PluginRuntime;
use crate::runtime::Services;
use crate::storage::kv::KvSession;
use crate::storage::{self, Batch, Commit, Leases, Recorded, SharedStorage, StorageError};
use crate::tape::{Recorder, Tape};
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

/// Attempts in all with a store several hosts share: a hot key conflicts with other hosts'
/// bookings too, which this host's namespace lock does not keep out.
const SHARED_ATTEMPTS: usize = 24;

/// How often a booking waiting for another host's claim looks at the journal again, when
/// no notification came first.
const CLAIM_POLL: Duration = Duration::from_millis(200);

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
    /// How long a claim across hosts lives without renewal.
    claim_ttl: Duration,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// A journal in `storage` for the plugins named `plugins`, keeping records `retention`;
    /// claims across hosts (when the store is shared) live `claim_ttl` unless renewed.
    pub fn new<'a>(
        storage: SharedStorage,
        plugins: impl IntoIterator<Item = &'a String>,
        retention: Duration,
        claim_ttl: Duration,
    ) -> Journal {
        Journal {
            storage,
            in_flight: InFlight::default(),
            namespaces: Namespaces::new(plugins),
            retention,
            claim_ttl,
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
        book(self, runtime, plugin, ctx, json, None).await
    }

    /// [`Journal::book`], filling `taped` with the tape of the run that answered, when the
    /// plugin ran (a shadow replays it).
    pub async fn book_taped(
        &self,
        runtime: &PluginRuntime,
        plugin: &LoadedPlugin,
        ctx: &RequestContext,
        json: &Value,
        taped: &mut Option<Tape>,
    ) -> Result<Booked, ApiError> {
        book(self, runtime, plugin, ctx, json, Some(taped)).await
    }
}

async fn book(
    app: &Journal,
    runtime: &PluginRuntime,
    plugin: &LoadedPlugin,
    ctx: &RequestContext,
    json: &Value,
    mut taped: Option<&mut Option<Tape>>,
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
    // Claimed: this is the only booking of the key running in this host. With a shared
    // store, claimed across hosts too, before the journal is read: a booking that another
    // host completed after that read could otherwise run again here.
    let host_claim = match HostClaim::take(app, key).await? {
        Ok(claim) => claim,
        Err(done) => return Ok(Booked::Replayed(done)),
    };
    // It may have been completed before (a retry).
    if let Some(done) = lookup(&app.storage, key).await? {
        return Ok(Booked::Replayed(done));
    }
    let lease = host_claim.as_ref().map(|c| c.fence);
    let attempts = match lease {
        Some(_) => SHARED_ATTEMPTS,
        None => OPTIMISTIC_ATTEMPTS + 2,
    };
    let name = &plugin.ident.name;
    let space = app.namespaces.spaces.get(name);
    for attempt in 0..attempts {
        if attempt > 0
            && let Some(claim) = &host_claim
        {
            claim.still_held(app).await?;
            // Other hosts' bookings of the same keys: let them through before trying
            // again, at a jittered pace so that hosts do not collide in step.
            tokio::time::sleep(Duration::from_micros(
                500 * attempt as u64 + u64::from(jitter()) % 2000,
            ))
            .await;
        }
        let exclusive = match space {
            Some(space)
                if plugin.kv
                    && (attempt >= OPTIMISTIC_ATTEMPTS || app.namespaces.contended(space)) =>
            {
                Some(space.lock.write().await)
            }
            _ => None,
        };
        // A plugin that records, or a caller that wants the tape, has the booking's host
        // calls kept.
        let recorder = (plugin.record.is_some() || taped.is_some()).then(|| {
            Recorder::new(
                plugin
                    .record
                    .as_ref()
                    .map_or(crate::replay::DEFAULT_MAX_BYTES, |p| p.max_bytes),
            )
        });
        let store = match &recorder {
            Some(recorder) => Arc::new(crate::tape::world::Recording::new(
                app.storage.clone(),
                recorder.clone(),
            )) as SharedStorage,
            None => app.storage.clone(),
        };
        let services = Services {
            kv: plugin.kv.then(|| KvSession::new(store, name, true)),
            recorder: recorder.clone(),
            replay: None,
        };
        // Until this booking's batch is in, a store writing in groups may wait for it.
        let expected = app.storage.expect_batch();
        let answered =
            crate::dispatch::answer(runtime, plugin, RouteKind::BookJob, ctx, json, services).await;
        let (bytes, services) = match answered {
            Ok(answer) => answer,
            Err(e) => {
                if let Some(recorder) = recorder {
                    let recording = recorder.take();
                    if recording.reached {
                        let answer = crate::replay::answered(Err(&e));
                        let tape = taping(plugin, ctx, json, recording, answer);
                        if plugin.record.is_some() {
                            keep_tape(app, plugin, &tape);
                        }
                        if let Some(taped) = taped {
                            *taped = Some(tape);
                        }
                    }
                }
                return Err(e);
            }
        };
        let tape = recorder.map(|recorder| {
            let answer = crate::replay::answered(Ok(&bytes));
            taping(plugin, ctx, json, recorder.take(), answer)
        });
        let row = match (&tape, &plugin.record) {
            (Some(tape), Some(_)) => Some(crate::replay::row(name, tape)),
            _ => None,
        };
        if let Some(taped) = taped.as_deref_mut() {
            *taped = tape;
        }
        let record = Recorded {
            key: key.clone(),
            route: ctx.route.clone(),
            plugin: plugin.ident.to_string(),
            response: bytes,
            at: crate::clock::unix_seconds(),
        };
        let mut batch = match services.kv {
            Some(kv) => kv.into_batch(Some(record)),
            None => Batch {
                ns: name.clone(),
                journal: Some(record),
                ..Batch::default()
            },
        };
        batch.lease = lease;
        batch.tape = row;
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
            let pending = if storage.submit_waits_on_io() {
                blocking(&app.storage, move || storage.submit(batch)).await?
            } else {
                storage.submit(batch).map_err(unavailable)?
            };
            drop(expected);
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
            (Commit::Done, Some(response)) => {
                // The commit ended the claim.
                if let Some(mut claim) = host_claim {
                    claim.ended = true;
                }
                return Ok(Booked::Ran(response));
            }
            (Commit::Recorded(done), _) => return Ok(Booked::Replayed(done)),
            (Commit::Conflict, _) => {
                tracing::debug!(plugin = %plugin.ident, attempt, "store conflict; booking again");
            }
            (Commit::Done, None) => break,
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

/// A booking's tape, without the paths the plugin's recording leaves out.
fn taping(
    plugin: &LoadedPlugin,
    ctx: &RequestContext,
    json: &Value,
    recording: crate::tape::Recording,
    answer: crate::tape::Answer,
) -> Tape {
    let redact = plugin.record.as_ref().map_or(&[][..], |p| &p.redact[..]);
    crate::replay::tape(redact, plugin, ctx, json, recording, answer)
}

/// Keeps the tape of a booking the plugin refused or failed (one that reached it): no
/// journal record goes with it, so it is committed alone, off the answer's path.
fn keep_tape(app: &Journal, plugin: &LoadedPlugin, tape: &Tape) {
    let batch = Batch {
        ns: plugin.ident.name.clone(),
        tape: Some(crate::replay::row(&plugin.ident.name, tape)),
        ..Batch::default()
    };
    let storage = app.storage.clone();
    tokio::spawn(async move {
        let s = storage.clone();
        let kept = match blocking(&storage, move || s.submit(batch)).await {
            Ok(pending) => pending.durable().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.detail),
        };
        if let Err(e) = kept {
            tracing::warn!("a refused booking's tape could not be kept: {e}");
        }
    });
}

/// This host's claim on a booking in a store several hosts share (see the module
/// documentation): renewed while held, released when dropped unless the commit ended it.
struct HostClaim {
    storage: SharedStorage,
    key: String,
    fence: u64,
    ttl: Duration,
    renewer: tokio::task::JoinHandle<()>,
    /// The booking's commit deleted the claim.
    ended: bool,
}

fn leases(storage: &SharedStorage) -> &dyn Leases {
    storage
        .leases()
        .expect("a claim is only taken in a store with leases")
}

/// Stops watching a key's claim when the waiting ends, however it ends.
struct Watching<'a>(&'a SharedStorage, &'a str);

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        leases(self.0).unwatch(self.1);
    }
}

impl HostClaim {
    /// Claims `key` across hosts, waiting while another host holds it: `Ok(None)` when the
    /// store is this host's alone, `Err` with the journal's answer when the other host
    /// completed the booking meanwhile.
    async fn take(
        app: &Journal,
        key: &str,
    ) -> Result<Result<Option<HostClaim>, Recorded>, ApiError> {
        let Some(shared) = app.storage.leases() else {
            return Ok(Ok(None));
        };
        let ttl = app.claim_ttl;
        // Registered before the first try, so that an end announced in between is kept.
        let woken = shared.watch(key);
        let _watching = Watching(&app.storage, key);
        // A holder that lives renews; one that died expires within `ttl`.
        let give_up = Instant::now() + ttl * 3;
        loop {
            match shared.claim(key, ttl).await.map_err(unavailable)? {
                storage::Claim::Held(fence) => {
                    return Ok(Ok(Some(HostClaim::held(app, key, fence))));
                }
                storage::Claim::Recorded(done) => return Ok(Err(done)),
                storage::Claim::Busy => {}
            }
            tokio::select! {
                () = woken.notified() => {}
                () = tokio::time::sleep(CLAIM_POLL) => {}
            }
            if let Some(done) = lookup(&app.storage, key).await? {
                return Ok(Err(done));
            }
            if Instant::now() > give_up {
                return Err(ApiError::new(
                    ErrorKind::Conflict,
                    "the same booking is still running on another host; retry later",
                ));
            }
        }
    }

    fn held(app: &Journal, key: &str, fence: u64) -> HostClaim {
        let ttl = app.claim_ttl;
        let (storage, k) = (app.storage.clone(), key.to_string());
        // Renewed a third of the way through its life for as long as the booking runs; a
        // booking shorter than that (nearly all) costs no renewal.
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                if !matches!(leases(&storage).renew(&k, fence, ttl).await, Ok(true)) {
                    tracing::warn!("a booking's claim across hosts could not be renewed");
                    return;
                }
            }
        });
        HostClaim {
            storage: app.storage.clone(),
            key: key.to_string(),
            fence,
            ttl,
            renewer,
            ended: false,
        }
    }

    /// Before a booking runs again: its claim must still be this host's, else another host
    /// took the booking over (this one stalled past the claim's life) and answers it.
    async fn still_held(&self, app: &Journal) -> Result<(), ApiError> {
        let renewed = leases(&app.storage).renew(&self.key, self.fence, self.ttl);
        if renewed.await.map_err(unavailable)? {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorKind::Conflict,
            "another host took this booking over; a retry is answered from the journal",
        ))
    }
}

impl Drop for HostClaim {
    fn drop(&mut self) {
        self.renewer.abort();
        if self.ended {
            return;
        }
        // A booking that failed or was answered from the journal: the next may run at once.
        let release = leases(&self.storage).release(&self.key, self.fence);
        tokio::spawn(async move {
            if let Err(e) = release.await {
                tracing::warn!("a booking's claim across hosts could not be released: {e}");
            }
        });
    }
}

/// A few random bits, to spread retries.
fn jitter() -> u32 {
    let mut bytes = [0; 4];
    let _ = getrandom::getrandom(&mut bytes);
    u32::from_ne_bytes(bytes)
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
