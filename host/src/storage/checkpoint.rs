//! Checkpoints of the SQLite store's write-ahead log on a thread of their own, so that
//! copying the log into the database file, and syncing that file, does not stall the
//! writer, whose every commit bookings wait for.
//!
//! By default SQLite checkpoints in the committing connection: every 1,000 pages of log, one
//! commit also copies them into the file and syncs it (about 10 ms on this kind of disk
//! under load), and every booking behind that commit waits. Here the writer never
//! checkpoints on its own (`wal_autocheckpoint = 0`); a thread with its own connection runs
//! passive checkpoints, which never block the writer, at most every [`PACE`].
//!
//! A passive checkpoint alone would let the log grow for ever: the log starts over only
//! when the writer begins a transaction with every frame already copied, and while commits
//! keep coming a pass never ends with nothing left. So when a pass leaves the log at
//! [`RESTART_FRAMES`] or more, the writer, after its next commit, copies the few frames
//! written since that pass and restarts the log itself: a short stall every few seconds
//! instead of a long one several times a second.

use super::StorageError;
use rusqlite::Connection;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The shortest time between the starts of two passes: larger passes write a page that
/// several commits changed once.
const PACE: Duration = Duration::from_millis(100);

/// Log frames (pages) at which the writer restarts the log (64 MiB of 4 KiB pages).
const RESTART_FRAMES: i64 = 16_384;

/// The longest the writer waits to restart the log (for a pass to end, or a reader to
/// leave the log): past it the log goes on growing until the next pass asks again, rather
/// than bookings waiting.
const RESTART_WAIT: Duration = Duration::from_millis(100);

/// When passes run and when the log restarts.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub every: Duration,
    pub restart_frames: i64,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            every: PACE,
            restart_frames: RESTART_FRAMES,
        }
    }
}

#[derive(Default)]
struct State {
    /// Whether there were commits since the last pass began.
    commits: bool,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Set by a pass that left the log long enough to restart; the writer restarts it.
    restart: AtomicBool,
    /// Times the writer restarted the log.
    restarts: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The checkpointing thread of one store file; stopped and joined when dropped.
pub struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// How long the store's connections wait for a lock: the writer's again after a restart.
    busy: Duration,
}

impl Checkpointer {
    /// Starts checkpointing the file at `path`, whose writer has `wal_autocheckpoint = 0`
    /// and waits `busy` for a lock.
    pub fn start(path: &Path, pace: Pace, busy: Duration) -> Result<Checkpointer, StorageError> {
        let c = Connection::open(path)
            .map_err(|e| StorageError(format!("cannot open {}: {e}", path.display())))?;
        c.busy_timeout(busy)
            .map_err(|e| StorageError(e.to_string()))?;
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            wake: Condvar::new(),
            restart: AtomicBool::new(false),
            restarts: AtomicU64::new(0),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("followup-checkpoint".into())
                .spawn(move || run(&c, &shared, pace))
                .map_err(|e| StorageError(format!("cannot start the checkpoint thread: {e}")))?
        };
        Ok(Checkpointer {
            shared,
            thread: Some(thread),
            busy,
        })
    }

    /// Called by the writer after each commit, with its connection: restarts the log when
    /// a pass asked for it, and lets the thread know there is more to copy.
    pub fn committed(&self, writer: &Connection) {
        if self.shared.restart.swap(false, Ordering::AcqRel) {
            // Copies what came since the last pass, syncs the file, and waits for readers
            // to leave the log (they are short); the next commit starts the log over.
            let _ = writer.busy_timeout(RESTART_WAIT);
            match writer.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0)) {
                Ok(0) => {
                    self.shared.restarts.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_busy) => tracing::debug!("the store's log could not restart yet"),
                Err(e) => tracing::warn!("store checkpoint failed: {e}"),
            }
            let _ = writer.busy_timeout(self.busy);
        }
        let mut state = self.shared.lock();
        if !state.commits {
            state.commits = true;
            self.shared.wake.notify_one();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: a passive checkpoint whenever there were commits, at most every
/// `pace.every`.
fn run(c: &Connection, shared: &Shared, pace: Pace) {
    loop {
        {
            let mut state = shared.lock();
            while !state.commits && !state.stop {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.stop {
                return;
            }
            state.commits = false;
        }
        let began = Instant::now();
        // (busy, frames in the log, frames copied so far)
        match c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(frames) if frames >= pace.restart_frames => {
                shared.restart.store(true, Ordering::Release)
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("store checkpoint failed: {e}"),
        }
        // The pace, unless stopped meanwhile.
        let next = began + pace.every;
        let mut state = shared.lock();
        while let Some(left) = next.checked_duration_since(Instant::now())
            && !state.stop
        {
            state = shared
                .wake
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_bytes(db: &Path) -> u64 {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        std::fs::metadata(wal).map_or(0, |m| m.len())
    }

    /// A writer that never checkpoints, committing `n` rows of one page each, each commit
    /// synced as the store's are (so that a disk slowed by other work slows the commits as
    /// much as the passes).
    fn commit(writer: &Connection, checkpointer: Option<&Checkpointer>, n: usize) {
        for i in 0..n {
            writer
                .execute("INSERT INTO t (v) VALUES (?1)", [vec![i as u8; 4000]])
                .unwrap();
            if let Some(checkpointer) = checkpointer {
                checkpointer.committed(writer);
            }
        }
    }

    fn writer(path: &Path) -> Connection {
        let writer = Connection::open(path).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
                 PRAGMA wal_autocheckpoint = 0;
                 CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB);",
            )
            .unwrap();
        writer
    }

    #[test]
    fn the_log_is_copied_off_the_writer_and_restarts_instead_of_growing() {
        let dir = std::env::temp_dir().join(format!("followup-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pace = Pace {
            every: Duration::from_millis(5),
            restart_frames: 64,
        };
        let commits = 1_500;
        let written = commits as u64 * 4000;
        // With the checkpointer: the rows reach the database file, and the log restarts,
        // so that its file holds a small part of what was written. The file keeps the
        // largest size the log reached, so one long stall of the thread (the disk shared
        // with the suite's other tests can hold its sync for most of a run) shows in it:
        // the bound is looked for in up to five runs, while without the restarts every run
        // would leave the log larger than all that was written.
        let mut failed = Vec::new();
        let bounded = (0..5).any(|run| {
            let db = dir.join(format!("with-{run}.db"));
            let w = writer(&db);
            let checkpointer = Checkpointer::start(&db, pace, Duration::from_secs(5)).unwrap();
            commit(&w, Some(&checkpointer), commits);
            let restarts = checkpointer.shared.restarts.load(Ordering::Relaxed);
            drop(checkpointer);
            let rows: i64 = w
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap();
            assert_eq!(rows, commits as i64);
            let (log, file) = (wal_bytes(&db), std::fs::metadata(&db).unwrap().len());
            let ok = restarts > 0 && log < written / 2 && file > written / 2;
            if !ok {
                failed.push(format!(
                    "the log grew to {log} bytes and the file to {file} of the {written} \
                     written ({restarts} restarts)"
                ));
            }
            ok
        });
        assert!(bounded, "in every run: {failed:#?}");

        // The same writer alone never copies the log into the file: it only grows.
        let db = dir.join("without.db");
        let w = writer(&db);
        commit(&w, None, commits);
        assert!(wal_bytes(&db) > written);
        drop(w);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
