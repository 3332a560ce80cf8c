//! The PostgreSQL store (`[store] backend = "postgres"`): the store several hosts share.
//!
//! [`PgDisk`] is a [`Durable`] backend, so it sits behind the same
//! [`Pipeline`](super::pipeline::Pipeline) as SQLite: commits are ordered in this host's
//! memory and written in groups. A group is one call of the `followup_commit` function
//! (one round trip, one transaction, one WAL flush), which checks every booking against
//! what the database holds *now* — other hosts' commits included — under a lock per
//! namespace, so what the pipeline let through on this host's view alone is decided by
//! the database. No transaction is open across a plugin call or an outbound request: a
//! booking's reads are single statements, its writes one function call after it ran.
//!
//! Across hosts, a booking is claimed before it runs ([`Leases`]): one row per idempotency
//! key with an expiry and a fence; the commit deletes the row only if it still holds the
//! fence, so a host whose claim expired (it stalled, or the database thought it dead)
//! cannot commit over the host that took the booking over. Duplicates wait for the claim
//! to end: a notification (`LISTEN followup_claims`) wakes them, and they poll in any case.
//!
//! Reads are answered from a cache of what this host read or committed, at most
//! [`FRESH_FOR`] old: a booking's reads are its optimistic assumptions, checked by its
//! commit, so a value another host changed meanwhile costs a rerun (its keys are dropped
//! from the cache on the conflict), never a wrong booking; on one host the cache is exact.
//! Without it, every read of a hot key would be a round trip made while the namespace's
//! next booking waits.
//!
//! The host's code is synchronous where it meets the store, so the client runs on a small
//! tokio runtime of its own and calls wait for it on a channel; every call is bounded (pool
//! wait, connect, statement timeout), so an unreachable database is a quick error, which
//! bookings answer as `store-unavailable`.

pub mod local;
pub mod schema;
mod versions;

use super::{Batch, Claim, Commit, Durable, Leases, Listing, Recorded, StorageError, StoreFuture};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::NoTls;

/// The notification channel on which claims that others wait for announce their end.
const CHANNEL: &str = "followup_claims";

/// The notification channel on which deploys are announced to every host.
const VERSIONS: &str = "followup_versions";

/// The oldest a cached read may be: how far behind other hosts' commits a read may be.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// Most values cached; past it the cache starts afresh.
const CACHED: usize = 100_000;

/// A value read or committed (`None`: absent), and when.
type Cached = (Option<Vec<u8>>, std::time::Instant);

/// Values read or committed by this host, by namespace and key.
#[derive(Default)]
struct Cache {
    entries: HashMap<(String, String), Cached>,
    /// Bumped by every commit: a read that began before one does not cache what it read,
    /// which may predate the commit.
    commits: u64,
}

/// How the store connects, from `[store]`.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// A libpq connection string or URL.
    pub url: String,
    /// Most connections this host holds.
    pub pool_size: usize,
    /// Longest a statement may run, and the bound on waiting for a connection.
    pub statement_timeout: Duration,
}

/// The PostgreSQL database: durable reads, group commits and claims.
pub struct PgDisk {
    pool: Pool,
    io: Io,
    /// Who this host is, in the claims it holds.
    holder: String,
    /// The longest any call may take before it is reported as a store failure.
    bound: Duration,
    /// Claims this host waits on, by key.
    watchers: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    /// Notified when another host publishes a deploy.
    published: Arc<Notify>,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for PgDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDisk")
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

/// The runtime the client runs on, shut down without waiting when the store is dropped
/// (from async code too).
struct Io(Option<tokio::runtime::Runtime>);

impl Io {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("the runtime lives as long as the store")
            .handle()
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

fn err(e: impl std::fmt::Display) -> StorageError {
    StorageError(format!("postgres: {e}"))
}

/// The full error of a database call: tokio-postgres's `Display` leaves out the server's
/// message, which says what went wrong.
fn db(e: tokio_postgres::Error) -> StorageError {
    match e.as_db_error() {
        Some(d) => err(format_args!("{}: {}", d.code().code(), d.message())),
        None => err(e),
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StorageError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db(e),
        deadpool_postgres::PoolError::Timeout(_) => {
            err("no connection to the database within the time allowed")
        }
        e => err(e),
    }
}

impl PgDisk {
    /// Connects, applies the schema's migrations, and starts listening for claims' ends.
    /// Refuses a database whose schema is newer than this build.
    pub fn open(options: &PgOptions) -> Result<PgDisk, StorageError> {
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e| err(format_args!("the connection string does not parse: {e}")))?;
        let bound = options.statement_timeout;
        let statement_ms = bound.as_millis().max(1);
        let given = config.get_options().unwrap_or("").to_string();
        config.options(format!("{given} -c statement_timeout={statement_ms}").trim());
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(bound);
        }
        config.keepalives_idle(Duration::from_secs(10));
        if config.get_application_name().is_none() {
            config.application_name("followup");
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("followup-pg")
            .enable_all()
            .build()
            .map_err(|e| err(format_args!("cannot start the client's runtime: {e}")))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                // A connection left broken by a database restart is found and replaced
                // before a booking uses it.
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let pool = {
            let _in = rt.enter();
            Pool::builder(manager)
                .max_size(options.pool_size.max(1))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(bound))
                .create_timeout(Some(bound))
                .recycle_timeout(Some(bound))
                .build()
                .map_err(err)?
        };
        let disk = PgDisk {
            pool,
            io: Io(Some(rt)),
            holder: holder_id(),
            bound,
            watchers: Arc::default(),
            published: Arc::default(),
            cache: Mutex::default(),
        };
        let pool = disk.pool.clone();
        disk.run(async move { migrate(&pool).await })?;
        disk.io.handle().spawn(listen(
            config,
            disk.watchers.clone(),
            disk.published.clone(),
        ));
        Ok(disk)
    }

    /// Runs `f` on the client's runtime and waits for it, from any thread (async code
    /// included: it waits on a plain channel), at most the store's bound plus a margin.
    fn run<T: Send + 'static>(
        &self,
        f: impl Future<Output = Result<T, StorageError>> + Send + 'static,
    ) -> Result<T, StorageError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let bound = self.bound;
        self.io.handle().spawn(async move {
            let outcome = tokio::time::timeout(bound * 2, f)
                .await
                .unwrap_or_else(|_| Err(err("the database did not answer in time")));
            let _ = tx.send(outcome);
        });
        rx.recv()
            .unwrap_or_else(|_| Err(err("the database client has stopped")))
    }

    /// Statements on one connection from the pool, run on the client's runtime: what
    /// resolves with their outcome, from any runtime, without a blocking thread.
    fn query_async<T, F, Fut>(&self, f: F) -> StoreFuture<T>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send,
    {
        let (pool, bound) = (self.pool.clone(), self.bound);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.io.handle().spawn(async move {
            let run = async move {
                let client = pool.get().await.map_err(pool_err)?;
                f(client).await.map_err(db)
            };
            let outcome = tokio::time::timeout(bound * 2, run)
                .await
                .unwrap_or_else(|_| Err(err("the database did not answer in time")));
            let _ = tx.send(outcome);
        });
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(err("the database client has stopped")))
        })
    }

    /// Statements on one connection from the pool.
    fn query<T, F, Fut>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send,
    {
        let pool = self.pool.clone();
        self.run(async move {
            let client = pool.get().await.map_err(pool_err)?;
            f(client).await.map_err(db)
        })
    }

    /// The pool, for the other tables the host keeps in this database.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

/// This process's name in the store: machine, process and a random part (two containers
/// may share a host name and a process id; a restarted host is a new one).
fn holder_id() -> String {
    let machine = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let mut random = [0u8; 3];
    let _ = getrandom::getrandom(&mut random);
    format!(
        "{}:{}:{}",
        if machine.is_empty() { "host" } else { &machine },
        std::process::id(),
        hex(&random)
    )
}

/// Applies the migrations this database lacks, under one lock for all hosts.
async fn migrate(pool: &Pool) -> Result<(), StorageError> {
    let mut client = pool.get().await.map_err(pool_err)?;
    let tx = client.transaction().await.map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&schema::LOCK])
        .await
        .map_err(db)?;
    tx.batch_execute(schema::PREPARE).await.map_err(db)?;
    let have: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM followup_migrations",
            &[],
        )
        .await
        .map_err(db)?
        .get(0);
    let known = schema::MIGRATIONS.len() as i32;
    if have > known {
        return Err(StorageError(format!(
            "postgres: the database's schema is version {have}, newer than this host knows \
             (version {known}): upgrade this host, or point it at another database"
        )));
    }
    for (i, migration) in schema::MIGRATIONS.iter().enumerate().skip(have as usize) {
        let version = i as i32 + 1;
        tx.batch_execute(migration)
            .await
            .map_err(|e| err(format_args!("migration {version}: {}", db(e).0)))?;
        tx.execute(
            "INSERT INTO followup_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(db)?;
        tracing::info!(version, "store schema migrated");
    }
    tx.commit().await.map_err(db)
}

/// Listens for claims' ends and deploys, and wakes this host's waiters, reconnecting for
/// as long as the store lives (a missed notification costs a waiter one poll interval).
async fn listen(
    config: tokio_postgres::Config,
    watchers: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    published: Arc<Notify>,
) {
    use futures_util::StreamExt;
    loop {
        if let Ok((client, mut connection)) = config.connect(NoTls).await {
            let (watchers, published) = (watchers.clone(), published.clone());
            let messages = tokio::spawn(async move {
                let mut stream = futures_util::stream::poll_fn(|cx| connection.poll_message(cx));
                while let Some(Ok(message)) = stream.next().await {
                    if let tokio_postgres::AsyncMessage::Notification(n) = message {
                        if n.channel() == VERSIONS {
                            published.notify_one();
                            continue;
                        }
                        let watcher = watchers
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .get(n.payload())
                            .cloned();
                        if let Some(watcher) = watcher {
                            watcher.notify_one();
                        }
                    }
                }
            });
            if client
                .batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {VERSIONS}"))
                .await
                .is_ok()
            {
                // Ends when the connection does.
                let _ = messages.await;
            } else {
                messages.abort();
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// The first string after every string that starts with `prefix`, in byte order (`None`:
/// no bound, for an empty prefix or one of only the highest characters).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// A group of batches as `followup_commit` takes it.
fn group_json(batches: &[&Batch]) -> String {
    let value = |v: &Option<Vec<u8>>| v.as_deref().map(hex);
    let batches: Vec<Value> = batches
        .iter()
        .map(|b| {
            json!({
                "ns": b.ns,
                "expect": b.expect.iter().map(|(k, v)| json!([k, value(v)])).collect::<Vec<_>>(),
                "lists": b.expect_lists.iter().map(|Listing { prefix, limit, keys }| {
                    json!([prefix, prefix_end(prefix), limit, keys])
                }).collect::<Vec<_>>(),
                "writes": b.writes.iter().map(|(k, v)| json!([k, value(v)])).collect::<Vec<_>>(),
                "journal": b.journal.as_ref().map(|j| json!({
                    "key": j.key, "route": j.route, "plugin": j.plugin,
                    "response": hex(&j.response), "at": j.at,
                })),
                "lease": b.lease,
            })
        })
        .collect();
    Value::Array(batches).to_string()
}

fn recorded_row(key: &str, row: &tokio_postgres::Row) -> Recorded {
    Recorded {
        key: key.to_string(),
        route: row.get(0),
        plugin: row.get(1),
        response: row.get(2),
        at: row.get::<_, i64>(3) as u64,
    }
}

impl PgDisk {
    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Brings the cache up to a group's outcome: what the group wrote is what the database
    /// holds now; what a conflicting booking read was wrong or has changed.
    fn cache_outcome(&self, batches: &[&Batch], outcome: &Result<Vec<Commit>, StorageError>) {
        let mut cache = self.cache();
        cache.commits += 1;
        let Ok(outcomes) = outcome else {
            // Perhaps committed, perhaps not: nothing cached can be trusted.
            cache.entries.clear();
            return;
        };
        let now = std::time::Instant::now();
        for (batch, outcome) in batches.iter().zip(outcomes) {
            match outcome {
                Commit::Done => {
                    for (key, value) in &batch.writes {
                        cache
                            .entries
                            .insert((batch.ns.clone(), key.clone()), (value.clone(), now));
                    }
                }
                Commit::Conflict => {
                    for (key, _) in &batch.expect {
                        cache.entries.remove(&(batch.ns.clone(), key.clone()));
                    }
                }
                Commit::Recorded(_) => {}
            }
        }
        if cache.entries.len() > CACHED {
            cache.entries.clear();
        }
    }
}

impl Durable for PgDisk {
    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let at = (ns.to_string(), key.to_string());
        let commits = {
            let cache = self.cache();
            if let Some((value, when)) = cache.entries.get(&at)
                && when.elapsed() < FRESH_FOR
            {
                return Ok(value.clone());
            }
            cache.commits
        };
        let (ns, key) = at.clone();
        let value = self.query(move |c| async move {
            let stmt = c
                .prepare_cached("SELECT value FROM kv WHERE ns = $1 AND key = $2")
                .await?;
            Ok(c.query_opt(&stmt, &[&ns, &key]).await?.map(|r| r.get(0)))
        })?;
        let mut cache = self.cache();
        if cache.commits == commits && cache.entries.len() < CACHED {
            cache
                .entries
                .insert(at, (value.clone(), std::time::Instant::now()));
        }
        Ok(value)
    }

    fn list(&self, ns: &str, prefix: &str, limit: u32) -> Result<Vec<String>, StorageError> {
        let (ns, from, to) = (ns.to_string(), prefix.to_string(), prefix_end(prefix));
        let limit = i64::from(limit);
        self.query(move |c| async move {
            let rows = match &to {
                Some(to) => {
                    let stmt = c
                        .prepare_cached(
                            "SELECT key FROM kv WHERE ns = $1 AND key >= $2 AND key < $3
                             ORDER BY key LIMIT $4",
                        )
                        .await?;
                    c.query(&stmt, &[&ns, &from, to, &limit]).await?
                }
                None => {
                    let stmt = c
                        .prepare_cached(
                            "SELECT key FROM kv WHERE ns = $1 AND key >= $2 ORDER BY key LIMIT $3",
                        )
                        .await?;
                    c.query(&stmt, &[&ns, &from, &limit]).await?
                }
            };
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn recorded(&self, key: &str) -> Result<Option<Recorded>, StorageError> {
        let key = key.to_string();
        self.query(move |c| async move {
            let stmt = c
                .prepare_cached("SELECT route, plugin, response, at FROM journal WHERE key = $1")
                .await?;
            Ok(c.query_opt(&stmt, &[&key])
                .await?
                .map(|row| recorded_row(&key, &row)))
        })
    }

    fn prune(&self, before: u64) -> Result<u64, StorageError> {
        let before = before as i64;
        self.query(move |c| async move {
            // Claims left by hosts that died mid-booking go too, long after they expired,
            // and the heartbeats of hosts gone for a day.
            c.batch_execute(
                "DELETE FROM claims WHERE expires < now() - interval '1 hour';
                 DELETE FROM hosts WHERE seen < now() - interval '1 day';",
            )
            .await?;
            c.execute("DELETE FROM tapes WHERE at < $1", &[&before])
                .await?;
            c.execute("DELETE FROM journal WHERE at < $1", &[&before])
                .await
        })
    }

    fn tapes(
        &self,
        plugin: &str,
        query: super::TapeQuery,
    ) -> Result<Vec<super::TapeRow>, StorageError> {
        let plugin = plugin.to_string();
        self.query(move |c| async move {
            let stmt = c
                .prepare_cached(
                    "SELECT at, route, work_order_id, version, outcome, tape FROM (
                        SELECT *, sum(length(tape)) OVER (ORDER BY id DESC) AS held FROM tapes
                        WHERE plugin = $1 AND at >= $2 ORDER BY id DESC LIMIT $3) t
                     WHERE held <= $4 ORDER BY id DESC",
                )
                .await?;
            let since = query.since.unwrap_or(0) as i64;
            let max_bytes = super::TapeQuery::MAX_BYTES as i64;
            let rows = c
                .query(
                    &stmt,
                    &[&plugin, &since, &i64::from(query.limit()), &max_bytes],
                )
                .await?;
            Ok(rows
                .iter()
                .rev()
                .map(|r| super::TapeRow {
                    plugin: plugin.clone(),
                    at: r.get::<_, i64>(0) as u64,
                    route: r.get(1),
                    work_order_id: r.get(2),
                    version: r.get(3),
                    outcome: r.get(4),
                    tape: r.get(5),
                })
                .collect())
        })
    }

    fn commit_group(&self, batches: &[&Batch]) -> Result<Vec<Commit>, StorageError> {
        let group = group_json(batches);
        let keys: Vec<Option<String>> = batches
            .iter()
            .map(|b| b.journal.as_ref().map(|j| j.key.clone()))
            .collect();
        let tapes = tapes_json(batches);
        let outcome = self
            .query(move |c| async move {
                match tapes {
                    None => {
                        let stmt = c.prepare_cached(COMMIT).await?;
                        c.query(&stmt, &[&group]).await
                    }
                    Some(tapes) => {
                        let stmt = c.prepare_cached(COMMIT_WITH_TAPES).await?;
                        c.query(&stmt, &[&group, &tapes]).await
                    }
                }
            })
            .and_then(|rows| outcomes(&rows, keys));
        self.cache_outcome(batches, &outcome);
        outcome
    }

    fn waits_on_io(&self) -> bool {
        true
    }

    fn leases(&self) -> Option<&dyn Leases> {
        Some(self)
    }

    fn ping(&self) -> Result<(), StorageError> {
        self.query(|c| async move { c.simple_query("").await.map(drop) })
    }

    fn versions(&self) -> Option<&dyn super::SharedVersions> {
        Some(self)
    }
}

/// Commits a group in one statement.
const COMMIT: &str = "SELECT * FROM followup_commit($1::TEXT::JSONB)";

/// Commits a group and keeps the tapes of the bookings that applied, in one statement (so
/// in one transaction and one round trip); `$2` holds each booking's tape or null.
const COMMIT_WITH_TAPES: &str = "
    WITH c AS (
        SELECT * FROM followup_commit($1::TEXT::JSONB)
        WITH ORDINALITY AS c(o_outcome, o_route, o_plugin, o_response, o_at, i)
    ), kept AS (
        INSERT INTO tapes (plugin, at, route, work_order_id, version, outcome, tape)
        SELECT t->>'plugin', (t->>'at')::BIGINT, t->>'route', t->>'work_order_id',
               t->>'version', t->>'outcome', decode(t->>'tape', 'hex')
        FROM jsonb_array_elements($2::TEXT::JSONB) WITH ORDINALITY AS x(t, i)
        JOIN c USING (i)
        WHERE c.o_outcome = 'done' AND jsonb_typeof(t) = 'object'
        ORDER BY i
    )
    SELECT o_outcome, o_route, o_plugin, o_response, o_at FROM c ORDER BY i";

/// The tapes of a group's bookings as `COMMIT_WITH_TAPES` takes them; `None` when no
/// booking of the group has one.
fn tapes_json(batches: &[&Batch]) -> Option<String> {
    if batches.iter().all(|b| b.tape.is_none()) {
        return None;
    }
    let tapes: Vec<Value> = batches
        .iter()
        .map(|b| match &b.tape {
            None => Value::Null,
            Some(t) => json!({
                "plugin": t.plugin, "at": t.at, "route": t.route,
                "work_order_id": t.work_order_id, "version": t.version,
                "outcome": t.outcome, "tape": hex(&t.tape),
            }),
        })
        .collect();
    Some(Value::Array(tapes).to_string())
}

/// What `followup_commit` answered for each booking of a group.
fn outcomes(
    rows: &[tokio_postgres::Row],
    keys: Vec<Option<String>>,
) -> Result<Vec<Commit>, StorageError> {
    if rows.len() != keys.len() {
        return Err(err("the database answered fewer commits than it was given"));
    }
    rows.iter()
        .zip(keys)
        .map(|(row, key)| match row.get::<_, &str>(0) {
            "done" => Ok(Commit::Done),
            "conflict" => Ok(Commit::Conflict),
            "recorded" => Ok(Commit::Recorded(Recorded {
                key: key.unwrap_or_default(),
                route: row.get(1),
                plugin: row.get(2),
                response: row.get(3),
                at: row.get::<_, i64>(4) as u64,
            })),
            other => Err(err(format_args!("unknown commit outcome {other}"))),
        })
        .collect()
}

const RELEASE: &str =
    "WITH ended AS (DELETE FROM claims WHERE key = $1 AND fence = $2 RETURNING waited)
     SELECT pg_notify('followup_claims', $1) FROM ended WHERE waited";

impl Leases for PgDisk {
    fn claim(&self, key: &str, ttl: Duration) -> StoreFuture<Claim> {
        let (key, holder) = (key.to_string(), self.holder.clone());
        let ms = ttl.as_millis() as f64;
        self.query_async(move |c| async move {
            let claim = c
                .prepare_cached(
                    "INSERT INTO claims (key, holder, fence, expires)
                     VALUES ($1, $2, txid_current(),
                             now() + $3::FLOAT8 * interval '1 millisecond')
                     ON CONFLICT (key) DO UPDATE
                        SET holder = excluded.holder, fence = excluded.fence,
                            expires = excluded.expires, waited = false
                        WHERE claims.expires < now()
                     RETURNING fence",
                )
                .await?;
            let read = c
                .prepare_cached("SELECT route, plugin, response, at FROM journal WHERE key = $1")
                .await?;
            // One round trip: the journal is read after the claim is made (the server runs
            // pipelined statements in order, each with a fresh snapshot), so a booking
            // that another host completed before the claim succeeded is seen here.
            let (claimed, recorded) = futures_util::future::try_join(
                c.query_opt(&claim, &[&key, &holder, &ms]),
                c.query_opt(&read, &[&key]),
            )
            .await?;
            let fence = claimed.map(|row| row.get::<_, i64>(0));
            match (fence, recorded) {
                (fence, Some(row)) => {
                    if let Some(fence) = fence {
                        c.execute(RELEASE, &[&key, &fence]).await?;
                    }
                    Ok(Claim::Recorded(recorded_row(&key, &row)))
                }
                (Some(fence), None) => Ok(Claim::Held(fence as u64)),
                (None, None) => {
                    // Held elsewhere: ask its holder to announce the end.
                    c.execute("UPDATE claims SET waited = true WHERE key = $1", &[&key])
                        .await?;
                    Ok(Claim::Busy)
                }
            }
        })
    }

    fn renew(&self, key: &str, fence: u64, ttl: Duration) -> StoreFuture<bool> {
        let key = key.to_string();
        let (fence, ms) = (fence as i64, ttl.as_millis() as f64);
        self.query_async(move |c| async move {
            let n = c
                .execute(
                    "UPDATE claims SET expires = now() + $3::FLOAT8 * interval '1 millisecond'
                     WHERE key = $1 AND fence = $2",
                    &[&key, &fence, &ms],
                )
                .await?;
            Ok(n == 1)
        })
    }

    fn release(&self, key: &str, fence: u64) -> StoreFuture<()> {
        let key = key.to_string();
        let fence = fence as i64;
        self.query_async(
            move |c| async move { c.execute(RELEASE, &[&key, &fence]).await.map(drop) },
        )
    }

    fn watch(&self, key: &str) -> Arc<Notify> {
        self.watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    fn unwatch(&self, key: &str) {
        self.watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::storage::Storage;
    use crate::storage::pipeline::Pipeline;
    use local::LocalCluster;

    pub fn options(url: String) -> PgOptions {
        PgOptions {
            url,
            pool_size: 4,
            statement_timeout: Duration::from_secs(5),
        }
    }

    /// A store in a fresh database `name` of the process's shared cluster, which it keeps
    /// running.
    pub fn temp_store(name: &str) -> (Pipeline<PgDisk>, Arc<LocalCluster>) {
        let cluster = LocalCluster::shared().unwrap();
        let url = cluster.database(name).unwrap();
        (
            Pipeline::new(PgDisk::open(&options(url)).unwrap()).unwrap(),
            cluster,
        )
    }

    fn counter(seen: Option<Vec<u8>>) -> Batch {
        let n: u64 = seen
            .as_deref()
            .map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
        Batch {
            ns: "c".into(),
            expect: vec![("n".into(), seen)],
            writes: vec![("n".into(), Some((n + 1).to_string().into_bytes()))],
            ..Batch::default()
        }
    }

    /// Two hosts' stores on one database: each sees what the other committed, and a
    /// counter both increment by compare-and-swap counts every increment once.
    #[test]
    fn hosts_sharing_a_database_see_each_other_and_conflict() {
        let cluster = LocalCluster::shared().unwrap();
        let url = cluster.database("two_hosts").unwrap();
        let a = Arc::new(Pipeline::new(PgDisk::open(&options(url.clone())).unwrap()).unwrap());
        let b = Arc::new(Pipeline::new(PgDisk::open(&options(url)).unwrap()).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let s = if i % 2 == 0 { a.clone() } else { b.clone() };
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        loop {
                            let seen = s.get("c", "n").unwrap();
                            if s.commit(counter(seen)).unwrap() == Commit::Done {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // A host's reads may lag the other's commits by the cache's freshness, no more.
        std::thread::sleep(FRESH_FOR);
        assert_eq!(a.get("c", "n").unwrap().as_deref(), Some(&b"80"[..]));
        assert_eq!(b.get("c", "n").unwrap().as_deref(), Some(&b"80"[..]));
    }

    /// Waits for a claim call (from a test's plain thread).
    fn wait<T>(f: StoreFuture<T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
            .unwrap()
    }

    /// A claim keeps a booking to one host: the second host is refused while it lives,
    /// takes it over once it expires, and the first host's commit with the stale fence
    /// applies nothing; once committed, claiming finds the journal's answer.
    #[test]
    fn a_claim_is_one_hosts_until_it_ends_or_expires() {
        let cluster = LocalCluster::shared().unwrap();
        let url = cluster.database("claims").unwrap();
        let a = Pipeline::new(PgDisk::open(&options(url.clone())).unwrap()).unwrap();
        let b = Pipeline::new(PgDisk::open(&options(url)).unwrap()).unwrap();
        let (la, lb) = (a.leases().unwrap(), b.leases().unwrap());
        let short = Duration::from_millis(300);
        let Claim::Held(first) = wait(la.claim("k", short)) else {
            panic!("free")
        };
        assert_eq!(wait(lb.claim("k", short)), Claim::Busy, "held by a");
        std::thread::sleep(Duration::from_millis(400));
        let Claim::Held(second) = wait(lb.claim("k", Duration::from_secs(30))) else {
            panic!("expired")
        };
        assert!(second > first);
        assert!(!wait(la.renew("k", first, short)), "a lost it");
        let journal = |response: &[u8]| Recorded {
            key: "k".into(),
            route: "r".into(),
            plugin: "p@v".into(),
            response: response.to_vec(),
            at: 1,
        };
        let stale = Batch {
            journal: Some(journal(b"a")),
            lease: Some(first),
            ..counter(None)
        };
        assert_eq!(a.commit(stale).unwrap(), Commit::Conflict);
        assert_eq!(a.get("c", "n").unwrap(), None, "nothing applied");
        let current = Batch {
            journal: Some(journal(b"b")),
            lease: Some(second),
            ..counter(None)
        };
        assert_eq!(b.commit(current).unwrap(), Commit::Done);
        let recorded = a.recorded("k").unwrap().unwrap();
        assert_eq!(recorded.response, b"b");
        // The commit ended the claim; claiming the key again finds the journal's answer
        // (and keeps no claim).
        assert_eq!(
            wait(la.claim("k", short)),
            Claim::Recorded(recorded.clone())
        );
        assert_eq!(wait(lb.claim("k", short)), Claim::Recorded(recorded));
        // A claim released by a booking that failed frees the key at once.
        let Claim::Held(f) = wait(la.claim("other", Duration::from_secs(30))) else {
            panic!("free")
        };
        assert_eq!(wait(lb.claim("other", short)), Claim::Busy);
        wait(la.release("other", f));
        assert!(
            matches!(wait(lb.claim("other", short)), Claim::Held(_)),
            "released"
        );
    }

    /// A waiter on another host is woken by the end of the claim it waits for.
    #[test]
    fn the_end_of_a_claim_wakes_a_waiter_on_another_host() {
        let cluster = LocalCluster::shared().unwrap();
        let url = cluster.database("wake").unwrap();
        let a = Pipeline::new(PgDisk::open(&options(url.clone())).unwrap()).unwrap();
        let b = Pipeline::new(PgDisk::open(&options(url)).unwrap()).unwrap();
        let (la, lb) = (a.leases().unwrap(), b.leases().unwrap());
        let ttl = Duration::from_secs(30);
        let Claim::Held(fence) = wait(la.claim("w", ttl)) else {
            panic!("free")
        };
        let woken = lb.watch("w");
        assert_eq!(wait(lb.claim("w", ttl)), Claim::Busy);
        // Give b's listener time to have subscribed.
        std::thread::sleep(Duration::from_millis(300));
        wait(la.release("w", fence));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), woken.notified())
                .await
                .expect("woken by the notification")
        });
        lb.unwatch("w");
    }

    /// A database whose schema is newer than the host knows is refused, saying so.
    #[test]
    fn a_newer_schema_is_refused() {
        let cluster = LocalCluster::shared().unwrap();
        let url = cluster.database("newer").unwrap();
        let disk = PgDisk::open(&options(url.clone())).unwrap();
        let next = schema::MIGRATIONS.len() as i32 + 1;
        disk.query(move |c| async move {
            c.execute(
                "INSERT INTO followup_migrations (version) VALUES ($1)",
                &[&next],
            )
            .await
        })
        .unwrap();
        drop(disk);
        let refused = PgDisk::open(&options(url)).unwrap_err();
        assert!(
            refused.0.contains("newer than this host knows"),
            "{refused}"
        );
    }

    #[test]
    fn a_prefix_ends_at_its_last_character_plus_one() {
        assert_eq!(prefix_end("cap/"), Some("cap0".into()));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("a\u{10FFFF}"), Some("b".into()));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        // The surrogate gap is skipped: the next character after U+D7FF is U+E000.
        assert_eq!(prefix_end("\u{D7FF}"), Some("\u{E000}".into()));
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
