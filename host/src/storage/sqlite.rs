//! The SQLite store: one file in WAL mode, `synchronous = FULL`, so a commit is on disk
//! before the booking's 200 leaves.
//!
//! [`SqliteDisk`] is the file: a small pool of read-only connections, which WAL lets run
//! beside the writer, and one writer connection that commits a group of batches in one
//! transaction (a conflicting batch is found before it writes, so it leaves nothing), with
//! one fsync for the group. [`SqliteStorage`] puts it behind a
//! [`Pipeline`](super::pipeline::Pipeline), which orders commits in memory and feeds the
//! writer its groups.

use super::checkpoint::{Checkpointer, Pace};
use super::keys::JournalKeys;
use super::pipeline::Pipeline;
use super::{Batch, Commit, Durable, Listing, Recorded, StorageError, TapeQuery, TapeRow};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Read connections; reads are short, so a few serve many concurrent calls.
const READERS: usize = 4;

/// How long a connection waits for a lock another one holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS kv (
        ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
        PRIMARY KEY (ns, key)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS journal (
        id INTEGER PRIMARY KEY, key TEXT NOT NULL, route TEXT NOT NULL,
        plugin TEXT NOT NULL, response BLOB NOT NULL, at INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS journal_key ON journal (substr(key, 1, 16));
    CREATE INDEX IF NOT EXISTS journal_at ON journal (at);
    CREATE TABLE IF NOT EXISTS tapes (
        id INTEGER PRIMARY KEY, plugin TEXT NOT NULL, at INTEGER NOT NULL,
        route TEXT NOT NULL, work_order_id TEXT, version TEXT NOT NULL,
        outcome TEXT NOT NULL, tape BLOB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS tapes_plugin ON tapes (plugin, id);
    CREATE INDEX IF NOT EXISTS tapes_at ON tapes (at);
";

/// The journal as files written before its rows were kept in the order they came: a table
/// keyed by the idempotency key. Its keys are hashes, so every booking inserted its row
/// (about 200 bytes) at a random place of a tree with a dozen rows a page: a page of its
/// own in the write-ahead log, a split every few bookings, and inner pages of their own
/// (3.2 pages logged a booking under load). Rows now go at the end, where a group's
/// bookings share a page, and the key is found through an index of its first 16 digits,
/// small entries that split rarely (1.7 pages a booking).
const JOURNAL_BY_KEY: &str = "
    CREATE TABLE journal_rows (
        id INTEGER PRIMARY KEY, key TEXT NOT NULL, route TEXT NOT NULL,
        plugin TEXT NOT NULL, response BLOB NOT NULL, at INTEGER NOT NULL
    );
    INSERT INTO journal_rows (key, route, plugin, response, at)
        SELECT key, route, plugin, response, at FROM journal ORDER BY at;
    DROP TABLE journal;
    ALTER TABLE journal_rows RENAME TO journal;
";

/// Moves a journal written in the old layout (see [`JOURNAL_BY_KEY`]) into the new one,
/// in one transaction: an interrupted move leaves the old journal whole.
fn upgrade_journal(c: &mut Connection) -> rusqlite::Result<()> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let old: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'journal')
            AND NOT EXISTS (SELECT 1 FROM pragma_table_info('journal') WHERE name = 'id')",
        [],
        |r| r.get(0),
    )?;
    if old {
        tx.execute_batch(JOURNAL_BY_KEY)?;
    }
    tx.commit()
}

/// The SQLite store the host serves from: the file behind a commit pipeline.
pub type SqliteStorage = Pipeline<SqliteDisk>;

impl Pipeline<SqliteDisk> {
    /// Opens (creating if missing) the store at `path`.
    pub fn open(path: &Path) -> Result<SqliteStorage, StorageError> {
        Pipeline::new(SqliteDisk::open(path)?)
    }
}

/// The SQLite file: durable reads and group commits.
pub struct SqliteDisk {
    writer: Mutex<Connection>,
    /// Every journal key the file holds, in memory: a new booking's journal lookup, and
    /// the writer's check that its key is new, need no read of the file.
    keys: JournalKeys,
    readers: Vec<Mutex<Connection>>,
    /// Copies the log into the file, off the writer.
    checkpointer: Checkpointer,
    /// An exclusive lock on `<file>.lock` for as long as the store is open: a second host
    /// on the same file would double-book (each orders commits in its own memory), so it
    /// is refused at start.
    _lock: std::fs::File,
}

impl std::fmt::Debug for SqliteDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteDisk").finish_non_exhaustive()
    }
}

fn err(e: impl std::fmt::Display) -> StorageError {
    StorageError(e.to_string())
}

impl SqliteDisk {
    /// Opens (creating if missing) the file at `path`.
    pub fn open(path: &Path) -> Result<SqliteDisk, StorageError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StorageError(format!("cannot create {}: {e}", dir.display())))?;
        }
        let lock = lock(path)?;
        let mut writer = Connection::open(path)
            .map_err(|e| StorageError(format!("cannot open {}: {e}", path.display())))?;
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
                 PRAGMA wal_autocheckpoint = 0;",
            )
            .map_err(err)?;
        writer.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        upgrade_journal(&mut writer).map_err(err)?;
        writer.execute_batch(SCHEMA).map_err(err)?;
        let keys = journal_keys(&writer, None)
            .map_err(err)?
            .unwrap_or_else(|| JournalKeys::with_capacity(0));
        let readers = (0..READERS)
            .map(|_| {
                let c = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(err)?;
                c.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
                Ok(Mutex::new(c))
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        Ok(SqliteDisk {
            writer: Mutex::new(writer),
            keys,
            readers,
            checkpointer: Checkpointer::start(path, Pace::default(), BUSY_TIMEOUT)?,
            _lock: lock,
        })
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StorageError> {
        // The first free connection, else wait for one chosen by thread.
        for reader in &self.readers {
            if let Ok(c) = reader.try_lock() {
                return f(&c).map_err(err);
            }
        }
        let i = thread_index() % self.readers.len();
        let c = self.readers[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&c).map_err(err)
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How long opening a store waits for the file's lock before refusing: a host restarted
/// in place may start while its predecessor is still exiting, and a lock is also held for
/// a moment by any child process forked while it was taken (the child's copy of the
/// descriptor shares the lock until it executes its program).
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Takes the lock that makes one process the file's only user.
fn lock(path: &Path) -> Result<std::fs::File, StorageError> {
    lock_within(path, LOCK_WAIT)
}

/// [`lock`], waiting at most `wait` for another holder to let go.
fn lock_within(path: &Path, wait: Duration) -> Result<std::fs::File, StorageError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .map_err(|e| StorageError(format!("cannot open {}: {e}", Path::new(&name).display())))?;
    let until = Instant::now() + wait;
    let mut held = file.try_lock();
    while matches!(held, Err(std::fs::TryLockError::WouldBlock)) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
        held = file.try_lock();
    }
    match held {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StorageError(format!(
            "{} is in use by another host: SQLite serves one host; hosts that share \
             bookings need [store] backend = \"postgres\" (docs/scale-out.md)",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StorageError(format!(
            "cannot lock {}: {e}",
            Path::new(&name).display()
        ))),
    }
}

fn thread_index() -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::thread::current().id().hash(&mut h);
    h.finish() as usize
}

impl Durable for SqliteDisk {
    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.read(|c| get(c, ns, key))
    }

    fn list(&self, ns: &str, prefix: &str, limit: u32) -> Result<Vec<String>, StorageError> {
        self.read(|c| list(c, ns, prefix, limit))
    }

    fn recorded(&self, key: &str) -> Result<Option<Recorded>, StorageError> {
        if !self.keys.may_hold(key) {
            return Ok(None);
        }
        self.read(|c| recorded(c, key))
    }

    fn prune(&self, before: u64) -> Result<u64, StorageError> {
        let c = self.writer();
        c.execute("DELETE FROM tapes WHERE at < ?1", params![before as i64])
            .map_err(err)?;
        let pruned = c
            .execute("DELETE FROM journal WHERE at < ?1", params![before as i64])
            .map_err(err)?;
        // With the writer held no key is added meanwhile, so the rebuilt filter misses none.
        if let Some(rebuilt) = journal_keys(&c, Some(&self.keys)).map_err(err)? {
            self.keys.replace_with(rebuilt);
        }
        Ok(pruned as u64)
    }

    fn tapes(&self, plugin: &str, query: TapeQuery) -> Result<Vec<TapeRow>, StorageError> {
        self.read(|c| tapes(c, plugin, query))
    }

    fn commit_group(&self, batches: &[&Batch]) -> Result<Vec<Commit>, StorageError> {
        let mut c = self.writer();
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        // No savepoint per batch: `apply` decides a conflict or a duplicate before it
        // writes anything, and an error while writing fails the whole group.
        let outcomes = batches
            .iter()
            .map(|batch| apply(&tx, batch, Some(&self.keys)))
            .collect::<rusqlite::Result<Vec<Commit>>>()
            .map_err(err)?;
        tx.commit().map_err(|e| {
            tracing::error!("store commit failed: {e}");
            err(e)
        })?;
        self.checkpointer.committed(&c);
        Ok(outcomes)
    }
}

/// A filter of the journal's keys (see [`JournalKeys`]); with `current`, only when
/// rebuilding it pays (`None` otherwise).
fn journal_keys(
    c: &Connection,
    current: Option<&JournalKeys>,
) -> rusqlite::Result<Option<JournalKeys>> {
    let count: i64 = c.query_row("SELECT count(*) FROM journal", [], |r| r.get(0))?;
    let count = usize::try_from(count).unwrap_or(0);
    if current.is_some_and(|keys| !keys.worth_rebuilding(count)) {
        return Ok(None);
    }
    let keys = JournalKeys::with_capacity(count);
    let mut stmt = c.prepare("SELECT key FROM journal")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        keys.add(row.get_ref(0)?.as_str()?);
    }
    Ok(Some(keys))
}

fn get(c: &Connection, ns: &str, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    c.prepare_cached("SELECT value FROM kv WHERE ns = ?1 AND key = ?2")?
        .query_row(params![ns, key], |r| r.get(0))
        .optional()
}

fn list(c: &Connection, ns: &str, prefix: &str, limit: u32) -> rusqlite::Result<Vec<String>> {
    let mut stmt = c.prepare_cached(
        "SELECT key FROM kv WHERE ns = ?1 AND substr(key, 1, ?2) = ?3 ORDER BY key LIMIT ?4",
    )?;
    let rows = stmt.query_map(
        params![ns, prefix.chars().count() as i64, prefix, i64::from(limit)],
        |r| r.get(0),
    )?;
    rows.collect()
}

fn recorded(c: &Connection, key: &str) -> rusqlite::Result<Option<Recorded>> {
    // The prefix term is the indexed expression, so the index finds the row (on a file of
    // the old layout, opened for reading only, the key itself does).
    c.prepare_cached(
        "SELECT route, plugin, response, at FROM journal
         WHERE substr(key, 1, 16) = substr(?1, 1, 16) AND key = ?1",
    )?
    .query_row(params![key], |r| {
        Ok(Recorded {
            key: key.to_string(),
            route: r.get(0)?,
            plugin: r.get(1)?,
            response: r.get(2)?,
            at: r.get::<_, i64>(3)? as u64,
        })
    })
    .optional()
}

fn tapes(c: &Connection, plugin: &str, query: TapeQuery) -> rusqlite::Result<Vec<TapeRow>> {
    let mut stmt = c.prepare_cached(
        "SELECT at, route, work_order_id, version, outcome, tape FROM (
            SELECT *, sum(length(tape)) OVER (ORDER BY id DESC) AS held FROM tapes
            WHERE plugin = ?1 AND at >= ?2 ORDER BY id DESC LIMIT ?3)
         WHERE held <= ?4 ORDER BY id DESC",
    )?;
    let since = query.since.unwrap_or(0) as i64;
    let max_bytes = TapeQuery::MAX_BYTES as i64;
    let rows = stmt.query_map(params![plugin, since, query.limit(), max_bytes], |r| {
        Ok(TapeRow {
            plugin: plugin.to_string(),
            at: r.get::<_, i64>(0)? as u64,
            route: r.get(1)?,
            work_order_id: r.get(2)?,
            version: r.get(3)?,
            outcome: r.get(4)?,
            tape: r.get(5)?,
        })
    })?;
    let mut newest_first = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    newest_first.reverse();
    Ok(newest_first)
}

/// A store file opened for reading only, without its lock: what `followup plugin replay`
/// reads while the host that owns the file keeps serving (WAL lets readers run beside
/// its writer). Its commits are refused.
pub struct ReadOnly {
    reader: Mutex<Connection>,
}

impl ReadOnly {
    pub fn open(path: &Path) -> Result<ReadOnly, StorageError> {
        let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| StorageError(format!("cannot open {}: {e}", path.display())))?;
        c.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        Ok(ReadOnly {
            reader: Mutex::new(c),
        })
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StorageError> {
        f(&self.reader.lock().unwrap_or_else(PoisonError::into_inner)).map_err(err)
    }
}

impl super::Storage for ReadOnly {
    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.read(|c| get(c, ns, key))
    }

    fn list(&self, ns: &str, prefix: &str, limit: u32) -> Result<Vec<String>, StorageError> {
        self.read(|c| list(c, ns, prefix, limit))
    }

    fn submit(&self, _: Batch) -> Result<super::Pending, StorageError> {
        Err(StorageError("this store is open for reading only".into()))
    }

    fn recorded(&self, key: &str) -> Result<Option<Recorded>, StorageError> {
        self.read(|c| recorded(c, key))
    }

    fn prune(&self, _: u64) -> Result<u64, StorageError> {
        Err(StorageError("this store is open for reading only".into()))
    }

    fn tapes(&self, plugin: &str, query: TapeQuery) -> Result<Vec<TapeRow>, StorageError> {
        self.read(|c| tapes(c, plugin, query))
    }
}

/// Applies one batch inside the current transaction; `Done` only if it wrote. Every
/// check comes before the first write, so a batch that does not apply wrote nothing.
/// `keys`: the journal's keys, which answer for a new key without a read, and gain the
/// batch's.
fn apply(c: &Connection, batch: &Batch, keys: Option<&JournalKeys>) -> rusqlite::Result<Commit> {
    if let Some(journal) = &batch.journal
        && keys.is_none_or(|keys| keys.may_hold(&journal.key))
        && let Some(earlier) = recorded(c, &journal.key)?
    {
        return Ok(Commit::Recorded(earlier));
    }
    for (key, seen) in &batch.expect {
        if get(c, &batch.ns, key)? != *seen {
            return Ok(Commit::Conflict);
        }
    }
    for Listing {
        prefix,
        limit,
        keys,
    } in &batch.expect_lists
    {
        if list(c, &batch.ns, prefix, *limit)? != *keys {
            return Ok(Commit::Conflict);
        }
    }
    for (key, value) in &batch.writes {
        match value {
            Some(v) => c
                .prepare_cached(
                    "INSERT INTO kv (ns, key, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
                )?
                .execute(params![batch.ns, key, v])?,
            None => c
                .prepare_cached("DELETE FROM kv WHERE ns = ?1 AND key = ?2")?
                .execute(params![batch.ns, key])?,
        };
    }
    if let Some(j) = &batch.journal {
        c.prepare_cached(
            "INSERT INTO journal (key, route, plugin, response, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![j.key, j.route, j.plugin, j.response, j.at as i64])?;
        // Before the group commits, so before anyone may look the record up. A group that
        // then fails leaves its keys in the filter, which costs a read, never an answer.
        if let Some(keys) = keys {
            keys.add(&j.key);
        }
    }
    if let Some(t) = &batch.tape {
        c.prepare_cached(
            "INSERT INTO tapes (plugin, at, route, work_order_id, version, outcome, tape)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            t.plugin,
            t.at as i64,
            t.route,
            t.work_order_id,
            t.version,
            t.outcome,
            t.tape
        ])?;
    }
    Ok(Commit::Done)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::storage::Storage;
    use std::sync::Arc;

    pub fn temp_store(name: &str) -> (SqliteStorage, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("followup-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("store.db");
        (SqliteStorage::open(&path).unwrap(), dir)
    }

    fn write(ns: &str, key: &str, value: &[u8]) -> Batch {
        Batch {
            ns: ns.into(),
            writes: vec![(key.into(), Some(value.to_vec()))],
            ..Batch::default()
        }
    }

    #[test]
    fn commits_are_atomic_and_checked() {
        let (s, dir) = temp_store("atomic");
        assert_eq!(s.commit(write("a", "k", b"1")).unwrap(), Commit::Done);
        assert_eq!(s.get("a", "k").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(s.get("b", "k").unwrap(), None, "namespaces are apart");

        // A stale expectation applies nothing, not even its other writes.
        let stale = Batch {
            expect: vec![("k".into(), Some(b"0".to_vec()))],
            writes: vec![
                ("k".into(), Some(b"2".to_vec())),
                ("other".into(), Some(b"x".to_vec())),
            ],
            ..write("a", "k", b"2")
        };
        assert_eq!(s.commit(stale).unwrap(), Commit::Conflict);
        assert_eq!(s.get("a", "k").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(s.get("a", "other").unwrap(), None);

        // A listing that changed is a conflict too.
        let listing = Batch {
            ns: "a".into(),
            expect_lists: vec![Listing {
                prefix: "".into(),
                limit: 10,
                keys: vec![],
            }],
            writes: vec![("z".into(), None)],
            ..Batch::default()
        };
        assert_eq!(s.commit(listing).unwrap(), Commit::Conflict);
        assert_eq!(s.list("a", "", 10).unwrap(), vec!["k".to_string()]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_journal_records_once_and_survives_reopening() {
        let (s, dir) = temp_store("journal");
        let record = |response: &[u8]| Recorded {
            key: "idem".into(),
            route: "followup".into(),
            plugin: "p@sha256:1".into(),
            response: response.to_vec(),
            at: 100,
        };
        let first = Batch {
            journal: Some(record(b"first")),
            ..write("p", "seq", b"1")
        };
        assert_eq!(s.commit(first).unwrap(), Commit::Done);
        // A duplicate's batch is refused whole, with the recorded answer.
        let second = Batch {
            journal: Some(record(b"second")),
            ..write("p", "seq", b"2")
        };
        assert_eq!(
            s.commit(second).unwrap(),
            Commit::Recorded(record(b"first"))
        );
        assert_eq!(s.get("p", "seq").unwrap().as_deref(), Some(&b"1"[..]));
        drop(s);
        let s = SqliteStorage::open(&dir.join("store.db")).unwrap();
        assert_eq!(s.recorded("idem").unwrap(), Some(record(b"first")));
        assert_eq!(s.prune(50).unwrap(), 0);
        assert_eq!(s.prune(101).unwrap(), 1);
        assert_eq!(s.recorded("idem").unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A file whose journal was written in the old layout (rows keyed by the idempotency
    /// key) is moved to the new one when opened: its records are found and still refuse a
    /// second booking of their key, and the lookup goes through the prefix index.
    #[test]
    fn a_journal_of_the_old_layout_is_moved_and_kept() {
        let dir = std::env::temp_dir().join(format!("followup-store-old-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.db");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE kv (
                 ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                 PRIMARY KEY (ns, key)
             ) WITHOUT ROWID;
             CREATE TABLE journal (
                 key TEXT PRIMARY KEY, route TEXT NOT NULL, plugin TEXT NOT NULL,
                 response BLOB NOT NULL, at INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE INDEX journal_at ON journal (at);
             INSERT INTO journal VALUES ('k-old', 'followup', 'p@1', x'7b7d', 100);
             INSERT INTO journal VALUES ('k-older', 'followup', 'p@1', x'5b5d', 90);",
        )
        .unwrap();
        drop(old);
        let recorded = |key: &str, response: &[u8], at: u64| Recorded {
            key: key.into(),
            route: "followup".into(),
            plugin: "p@1".into(),
            response: response.to_vec(),
            at,
        };

        let s = SqliteStorage::open(&path).unwrap();
        assert_eq!(
            s.recorded("k-old").unwrap(),
            Some(recorded("k-old", b"{}", 100))
        );
        let again = Batch {
            journal: Some(recorded("k-old", b"other", 200)),
            ..write("p", "seq", b"1")
        };
        assert_eq!(
            s.commit(again).unwrap(),
            Commit::Recorded(recorded("k-old", b"{}", 100))
        );
        let new = Batch {
            journal: Some(recorded("k-new", b"new", 200)),
            ..write("p", "seq", b"1")
        };
        assert_eq!(s.commit(new).unwrap(), Commit::Done);
        assert_eq!(s.prune(95).unwrap(), 1, "k-older");
        drop(s);

        let c = Connection::open(&path).unwrap();
        let columns: Vec<String> = c
            .prepare("SELECT name FROM pragma_table_info('journal')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(columns, ["id", "key", "route", "plugin", "response", "at"]);
        let plan: Vec<String> = c
            .prepare(
                "EXPLAIN QUERY PLAN SELECT route, plugin, response, at FROM journal
                 WHERE substr(key, 1, 16) = substr(?1, 1, 16) AND key = ?1",
            )
            .unwrap()
            .query_map(["k-new"], |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            plan.iter().any(|step| step.contains("journal_key")),
            "{plan:?}"
        );
        drop(c);
        let s = SqliteStorage::open(&path).unwrap();
        assert_eq!(
            s.recorded("k-new").unwrap(),
            Some(recorded("k-new", b"new", 200))
        );
        assert_eq!(s.recorded("k-older").unwrap(), None);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The journal's keys are answered from memory (`storage/keys.rs`): every key the file
    /// holds is found, those committed in this run and those read at open, and a duplicate
    /// in the same group as its first booking is still caught by the writer.
    #[test]
    fn the_key_filter_misses_no_recorded_key() {
        let (s, dir) = temp_store("keys");
        let record = |key: String, response: &[u8]| Recorded {
            key,
            route: "followup".into(),
            plugin: "p@sha256:1".into(),
            response: response.to_vec(),
            at: 100,
        };
        let batch = |key: String, response: &[u8]| Batch {
            ns: "p".into(),
            journal: Some(record(key, response)),
            ..Batch::default()
        };
        let keys: Vec<String> = (0..2000).map(|i| format!("{i:064x}")).collect();
        for key in &keys[..1000] {
            assert_eq!(s.commit(batch(key.clone(), b"a")).unwrap(), Commit::Done);
        }
        drop(s);
        let disk = SqliteDisk::open(&dir.join("store.db")).unwrap();
        let (first, again) = (
            batch(keys[1000].clone(), b"1"),
            batch(keys[1000].clone(), b"2"),
        );
        assert_eq!(
            disk.commit_group(&[&first, &again]).unwrap(),
            vec![
                Commit::Done,
                Commit::Recorded(record(keys[1000].clone(), b"1"))
            ]
        );
        for key in &keys[..1001] {
            assert!(disk.recorded(key).unwrap().is_some(), "{key} is recorded");
        }
        for key in &keys[1001..] {
            assert_eq!(disk.recorded(key).unwrap(), None);
        }
        drop(disk);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn concurrent_commits_join_groups_and_conflict_one_by_one() {
        let (s, dir) = temp_store("groups");
        let s = Arc::new(s);
        // 16 threads each add 1 to a counter by compare-and-swap, retrying on conflict.
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let mut conflicts = 0;
                    loop {
                        let seen = s.get("c", "n").unwrap();
                        let n: u64 = seen
                            .as_deref()
                            .map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
                        let batch = Batch {
                            ns: "c".into(),
                            expect: vec![("n".into(), seen)],
                            writes: vec![("n".into(), Some((n + 1).to_string().into_bytes()))],
                            ..Batch::default()
                        };
                        match s.commit(batch).unwrap() {
                            Commit::Done => return conflicts,
                            _ => conflicts += 1,
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.get("c", "n").unwrap().as_deref(), Some(&b"16"[..]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_second_host_on_the_same_file_is_refused() {
        let (s, dir) = temp_store("second-host");
        let second = SqliteStorage::open(&dir.join("store.db")).unwrap_err();
        assert!(second.0.contains("in use by another host"), "{second}");
        drop(s);
        SqliteStorage::open(&dir.join("store.db")).expect("free once the first has closed");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A host restarted in place starts while its predecessor still holds the file for a
    /// moment: it waits for the lock instead of refusing.
    #[test]
    fn a_lock_let_go_of_within_the_wait_is_taken() {
        let dir = std::env::temp_dir().join(format!("followup-lock-wait-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.db");
        let first = lock_within(&path, Duration::ZERO).unwrap();
        let refused = lock_within(&path, Duration::from_millis(50)).unwrap_err();
        assert!(refused.0.contains("in use by another host"), "{refused}");
        let exiting = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(first);
        });
        lock_within(&path, Duration::from_secs(30)).expect("taken once let go of");
        exiting.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn listing_is_by_prefix_in_order_and_limited() {
        let (s, dir) = temp_store("list");
        for key in ["cap/b", "cap/a", "seq", "cap/c"] {
            s.commit(write("p", key, b"x")).unwrap();
        }
        assert_eq!(s.list("p", "cap/", 2).unwrap(), vec!["cap/a", "cap/b"]);
        assert_eq!(s.list("p", "", 10).unwrap().len(), 4);
        assert!(s.list("p", "nope", 10).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
