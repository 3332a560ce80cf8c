//! Commits in order, durable in groups: what lets bookings that touch the same key (an
//! order-number sequence, a per-day capacity counter) follow one another without each
//! waiting for the disk.
//!
//! A [`Pipeline`] sits in front of a [`Durable`] backend. [`Storage::submit`] checks a
//! booking's expectations against the newest state (what is durable, overlaid with what is
//! committed but still on its way to disk), and on success gives the batch its place in
//! the commit order at once: from that moment reads see its writes, so the next booking of
//! a hot key runs while this one's group is still being written. One thread writes the
//! queued batches, in order and in groups, each group in one durable transaction (one
//! fsync); every batch's [`Pending`] resolves only once its group is durable, and only then
//! does its answer leave.
//!
//! A group that fails to become durable takes back everything it held: its writes vanish
//! from the overlay, a batch that read a value that never became durable is reported as a
//! [`Commit::Conflict`] (the booking runs again, on what is durable), and a batch that read
//! only durable data gets the store's error. Later batches are checked again by the backend
//! when their own group is written, so one that read from a failed batch conflicts there.
//! No answer leaves with a write that was not durable.
//!
//! The writer gathers: while bookings that said they will submit (see
//! [`Storage::expect_batch`]) are still running, it waits for their batches, at most
//! [`GATHER`], before writing a group. Under load that halves the syncs, and every page the
//! group's bookings share (the journal's newest entries, a hot counter, the tree's inner
//! pages) is written once for all of them; a lone booking, with nothing else running, is
//! written at once.

use super::{
    Arrivals, Batch, Commit, Durable, Expected, Listing, Pending, Recorded, Storage, StorageError,
    stopped,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Most batches written in one transaction.
const GROUP: usize = 256;

/// The longest the writer waits for expected batches before writing a group without them:
/// about two syncs of a local disk, so a booking waits at most that much longer than it
/// would have queued behind the group before anyway.
pub const GATHER: Duration = Duration::from_millis(1);

/// A write committed in order but not yet durable.
#[derive(Debug)]
struct Unsettled {
    value: Option<Vec<u8>>,
    /// The batch that wrote it.
    seq: u64,
}

/// A batch waiting for the writer.
struct Queued {
    seq: u64,
    batch: Batch,
    /// Whether it read a value that was not durable yet.
    read_unsettled: bool,
    done: oneshot::Sender<Result<Commit, StorageError>>,
}

#[derive(Default)]
struct State {
    /// The last place given in the commit order.
    seq: u64,
    /// (namespace, key) → the newest write not yet durable.
    kv: BTreeMap<(String, String), Unsettled>,
    queue: Vec<Queued>,
    /// Bookings running that will submit a batch (see [`Storage::expect_batch`]).
    expected: usize,
    closed: bool,
    /// The writer thread has stopped (it panicked): nothing queued will become durable.
    writer_gone: bool,
}

struct Shared<D> {
    disk: D,
    state: Mutex<State>,
    /// Signalled when the queue gains a batch, the last expected batch is in (or will not
    /// come), or the pipeline closes.
    work: Condvar,
    /// How long the writer waits for expected batches ([`GATHER`]).
    gather: Duration,
}

impl<D> Shared<D> {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change to the state is whole before the lock is released.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A [`Durable`] backend with commits ordered in memory and written in groups (see the
/// module documentation).
pub struct Pipeline<D: Durable> {
    shared: Arc<Shared<D>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl<D: Durable> std::fmt::Debug for Pipeline<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

impl<D: Durable> Pipeline<D> {
    /// Puts `disk` behind a pipeline, with its writer thread.
    pub fn new(disk: D) -> Result<Self, StorageError> {
        Self::gathering(disk, GATHER)
    }

    /// [`Pipeline::new`] with the writer waiting at most `gather` for expected batches.
    fn gathering(disk: D, gather: Duration) -> Result<Self, StorageError> {
        let shared = Arc::new(Shared {
            disk,
            state: Mutex::default(),
            work: Condvar::new(),
            gather,
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("followup-store".into())
                .spawn(move || write_loop(&shared))
                .map_err(|e| StorageError(format!("cannot start the store's writer: {e}")))?
        };
        Ok(Pipeline {
            shared,
            writer: Some(writer),
        })
    }

    /// The backend behind the pipeline.
    pub fn disk(&self) -> &D {
        &self.shared.disk
    }
}

impl<D: Durable> Drop for Pipeline<D> {
    fn drop(&mut self) {
        // The writer finishes what is queued, then stops.
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl<D: Durable> Arrivals for Shared<D> {
    fn expect(&self) {
        self.lock().expected += 1;
    }

    fn arrived(&self) {
        let mut state = self.lock();
        state.expected -= 1;
        // The writer waits on expected batches only with a batch queued; each submit wakes
        // it anyway, so only the last one it waited for needs to.
        if state.expected == 0 && !state.queue.is_empty() {
            self.work.notify_one();
        }
    }
}

/// Reads of the newest state: the overlay of writes not yet durable over the disk. With
/// `state` held, the disk holds every write the overlay lacks (an entry leaves the overlay
/// only once durable), so the answer is exact.
fn newest_get<D: Durable>(
    disk: &D,
    state: &State,
    ns: &str,
    key: &str,
) -> Result<(Option<Vec<u8>>, bool), StorageError> {
    match state.kv.get(&(ns.to_string(), key.to_string())) {
        Some(unsettled) => Ok((unsettled.value.clone(), true)),
        None => Ok((disk.get(ns, key)?, false)),
    }
}

fn newest_list<D: Durable>(
    disk: &D,
    state: &State,
    ns: &str,
    prefix: &str,
    limit: u32,
) -> Result<(Vec<String>, bool), StorageError> {
    let overlaid: Vec<(&String, bool)> = state
        .kv
        .range((ns.to_string(), prefix.to_string())..)
        .take_while(|((n, k), _)| n == ns && k.starts_with(prefix))
        .map(|((_, k), u)| (k, u.value.is_some()))
        .collect();
    if overlaid.is_empty() {
        return Ok((disk.list(ns, prefix, limit)?, false));
    }
    // Deletions not yet durable may hide keys the disk lists: ask for that many more.
    let hidden = overlaid.iter().filter(|(_, present)| !present).count() as u32;
    let mut keys: std::collections::BTreeSet<String> = disk
        .list(ns, prefix, limit.saturating_add(hidden))?
        .into_iter()
        .collect();
    for (key, present) in overlaid {
        if present {
            keys.insert(key.clone());
        } else {
            keys.remove(key);
        }
    }
    Ok((keys.into_iter().take(limit as usize).collect(), true))
}

impl<D: Durable> Storage for Pipeline<D> {
    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        {
            let state = self.shared.lock();
            // Most reads find nothing on its way to disk: no key built for them.
            if !state.kv.is_empty()
                && let Some(unsettled) = state.kv.get(&(ns.to_string(), key.to_string()))
            {
                return Ok(unsettled.value.clone());
            }
        }
        // Read without the lock: a write committed meanwhile makes this read stale, which
        // the booking's commit finds (its expectation no longer holds).
        self.shared.disk.get(ns, key)
    }

    fn list(&self, ns: &str, prefix: &str, limit: u32) -> Result<Vec<String>, StorageError> {
        let state = self.shared.lock();
        newest_list(&self.shared.disk, &state, ns, prefix, limit).map(|(keys, _)| keys)
    }

    fn submit(&self, batch: Batch) -> Result<Pending, StorageError> {
        let shared = &*self.shared;
        // A backend over the network (shared with other hosts) decides every check itself
        // when the group is written, against what all hosts committed: here only what is
        // on its way to disk from this host is checked, so that no network round trip is
        // made while the pipeline's lock is held.
        let remote = shared.disk.waits_on_io();
        // A durable record stays durable, so this read needs no lock. A duplicate still on
        // its way to disk is answered by the disk when its group is written (the journal's
        // in-flight claims keep one host from letting such a duplicate through).
        if !remote
            && let Some(journal) = &batch.journal
            && let Some(earlier) = shared.disk.recorded(&journal.key)?
        {
            return Ok(Pending::Ready(Ok(Commit::Recorded(earlier))));
        }
        let mut state = shared.lock();
        if state.writer_gone {
            return Err(stopped());
        }
        let mut read_unsettled = false;
        for (key, seen) in &batch.expect {
            let (now, unsettled) = if remote {
                match state.kv.get(&(batch.ns.clone(), key.clone())) {
                    Some(unsettled) => (unsettled.value.clone(), true),
                    None => continue,
                }
            } else {
                newest_get(&shared.disk, &state, &batch.ns, key)?
            };
            if now != *seen {
                return Ok(Pending::Ready(Ok(Commit::Conflict)));
            }
            read_unsettled |= unsettled;
        }
        for Listing {
            prefix,
            limit,
            keys,
        } in &batch.expect_lists
        {
            if remote {
                read_unsettled |= state
                    .kv
                    .range((batch.ns.clone(), prefix.clone())..)
                    .next()
                    .is_some_and(|((n, k), _)| *n == batch.ns && k.starts_with(prefix.as_str()));
                continue;
            }
            let (now, unsettled) = newest_list(&shared.disk, &state, &batch.ns, prefix, *limit)?;
            if now != *keys {
                return Ok(Pending::Ready(Ok(Commit::Conflict)));
            }
            read_unsettled |= unsettled;
        }
        state.seq += 1;
        let seq = state.seq;
        for (key, value) in &batch.writes {
            let unsettled = Unsettled {
                value: value.clone(),
                seq,
            };
            state.kv.insert((batch.ns.clone(), key.clone()), unsettled);
        }
        let (done, durable) = oneshot::channel();
        state.queue.push(Queued {
            seq,
            batch,
            read_unsettled,
            done,
        });
        drop(state);
        shared.work.notify_one();
        Ok(Pending::Waiting(durable))
    }

    fn recorded(&self, key: &str) -> Result<Option<Recorded>, StorageError> {
        // Only what is durable: a record on its way to disk has not been answered yet.
        self.shared.disk.recorded(key)
    }

    fn prune(&self, before: u64) -> Result<u64, StorageError> {
        self.shared.disk.prune(before)
    }

    fn tapes(
        &self,
        plugin: &str,
        query: super::TapeQuery,
    ) -> Result<Vec<super::TapeRow>, StorageError> {
        self.shared.disk.tapes(plugin, query)
    }

    fn waits_on_io(&self) -> bool {
        // A local file's reads are short and from the page cache in practice (`cargo
        // bench --bench kv_reads`: a few microseconds, against tens for a hop to a
        // blocking thread); commits queue to the writer thread and are awaited. A
        // database over the network is another matter.
        self.shared.disk.waits_on_io()
    }

    fn submit_waits_on_io(&self) -> bool {
        // A local file's checks read like `get` does; a remote backend's are all made by
        // the backend when the group is written, so submitting only queues.
        false
    }

    fn leases(&self) -> Option<&dyn super::Leases> {
        self.shared.disk.leases()
    }

    fn versions(&self) -> Option<&dyn super::SharedVersions> {
        self.shared.disk.versions()
    }

    fn expect_batch(&self) -> Expected {
        Expected::counted(self.shared.clone())
    }

    fn ping(&self) -> Result<(), StorageError> {
        if self.shared.lock().writer_gone {
            return Err(stopped());
        }
        self.shared.disk.ping()
    }
}

/// Marks the writer gone when it stops for any reason, a panic included, and fails what
/// is still queued: a booking waiting on it gets the store's error instead of waiting for
/// ever, and later commits are refused at once.
struct WriterGone<'a, D>(&'a Shared<D>);

impl<D> Drop for WriterGone<'_, D> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.writer_gone = true;
        // Dropping a batch's sender resolves its `Pending` with the writer-stopped error.
        state.queue.clear();
    }
}

/// The writer thread: writes what is queued, in order and in groups, until the pipeline is
/// dropped and its queue is empty.
fn write_loop<D: Durable>(shared: &Shared<D>) {
    let _gone = WriterGone(shared);
    loop {
        let group: Vec<Queued> = {
            let mut state = shared.lock();
            while state.queue.is_empty() && !state.closed {
                state = shared
                    .work
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.queue.is_empty() {
                return;
            }
            // Bookings still running will submit in a moment: one sync for all of them.
            let until = Instant::now() + shared.gather;
            while state.expected > 0 && state.queue.len() < GROUP && !state.closed {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state = shared
                    .work
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            let n = state.queue.len().min(GROUP);
            state.queue.drain(..n).collect()
        };
        let batches: Vec<&Batch> = group.iter().map(|q| &q.batch).collect();
        let outcome = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            shared.disk.commit_group(&batches)
        })) {
            Ok(outcome) => outcome,
            Err(_) => {
                // Marked gone before `group` drops its senders: a booking woken by that drop
                // is refused at once instead of queueing behind a writer that is gone.
                shared.lock().writer_gone = true;
                return;
            }
        };
        let mut state = shared.lock();
        for (i, queued) in group.into_iter().enumerate() {
            settle(&mut state, &queued);
            let result = match &outcome {
                Ok(outcomes) => match outcomes.get(i) {
                    // The disk's answer stands: done, or the booking's record was already
                    // there (a duplicate answered from it).
                    Some(outcome @ (Commit::Done | Commit::Recorded(_))) => Ok(outcome.clone()),
                    // Checked against this host's newest state when submitted, so the disk
                    // disagrees when a batch it depended on failed, or when another host
                    // sharing the store committed first (or took over its claim): run it
                    // again.
                    Some(Commit::Conflict) => Ok(Commit::Conflict),
                    None => Err(StorageError("the store answered fewer commits".into())),
                },
                Err(_) if queued.read_unsettled => Ok(Commit::Conflict),
                Err(e) => Err(e.clone()),
            };
            let _ = queued.done.send(result);
        }
    }
}

/// Removes what `queued` put in the overlay, unless a later batch wrote the same key since.
fn settle(state: &mut State, queued: &Queued) {
    for (key, _) in &queued.batch.writes {
        let k = (queued.batch.ns.clone(), key.clone());
        if state.kv.get(&k).is_some_and(|u| u.seq == queued.seq) {
            state.kv.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sqlite::SqliteDisk;
    use std::sync::mpsc;

    /// SQLite whose group commits wait for a verdict from the test: `true` writes the
    /// group, `false` fails it as a full disk would.
    struct Gated {
        disk: SqliteDisk,
        verdicts: Mutex<mpsc::Receiver<bool>>,
        /// The number of batches of each group written or failed, in order.
        groups: Mutex<Vec<usize>>,
    }

    impl Durable for Gated {
        fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
            self.disk.get(ns, key)
        }
        fn list(&self, ns: &str, prefix: &str, limit: u32) -> Result<Vec<String>, StorageError> {
            self.disk.list(ns, prefix, limit)
        }
        fn recorded(&self, key: &str) -> Result<Option<Recorded>, StorageError> {
            self.disk.recorded(key)
        }
        fn prune(&self, before: u64) -> Result<u64, StorageError> {
            self.disk.prune(before)
        }
        fn tapes(
            &self,
            plugin: &str,
            query: crate::storage::TapeQuery,
        ) -> Result<Vec<crate::storage::TapeRow>, StorageError> {
            self.disk.tapes(plugin, query)
        }
        fn commit_group(&self, batches: &[&Batch]) -> Result<Vec<Commit>, StorageError> {
            self.groups.lock().unwrap().push(batches.len());
            let write = self.verdicts.lock().unwrap().recv().unwrap_or(true);
            if !write {
                return Err(StorageError("disk full".into()));
            }
            self.disk.commit_group(batches)
        }
    }

    fn gated(name: &str) -> (Pipeline<Gated>, mpsc::Sender<bool>, std::path::PathBuf) {
        gathering(name, GATHER)
    }

    /// [`gated`], the writer waiting at most `gather` for expected batches.
    fn gathering(
        name: &str,
        gather: Duration,
    ) -> (Pipeline<Gated>, mpsc::Sender<bool>, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("followup-pipeline-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (verdict, verdicts) = mpsc::channel();
        let disk = SqliteDisk::open(&dir.join("store.db")).unwrap();
        let gated = Gated {
            disk,
            verdicts: Mutex::new(verdicts),
            groups: Mutex::default(),
        };
        (Pipeline::gathering(gated, gather).unwrap(), verdict, dir)
    }

    /// The next booking of a counter, as a booking's batch would carry it.
    fn increment(seen: Option<Vec<u8>>, journal: &str) -> Batch {
        let n: u64 = seen
            .as_deref()
            .map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
        Batch {
            ns: "p".into(),
            expect: vec![("seq".into(), seen)],
            writes: vec![("seq".into(), Some((n + 1).to_string().into_bytes()))],
            journal: Some(Recorded {
                key: journal.into(),
                route: "r".into(),
                plugin: "p@v".into(),
                response: format!("{}", n + 1).into_bytes(),
                at: 1,
            }),
            ..Batch::default()
        }
    }

    /// Waits until the writer has taken everything queued (into a group of its own).
    fn taken(store: &Pipeline<Gated>) {
        while !store.shared.lock().queue.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn waits(pending: &mut Pending) -> bool {
        match pending {
            Pending::Waiting(rx) => rx.try_recv().is_err(),
            Pending::Ready(_) => false,
        }
    }

    /// The next booking of a hot key reads the previous one's write before it is durable;
    /// neither is answered before its group is.
    #[test]
    fn a_hot_key_is_read_before_it_is_durable_and_answered_after() {
        let (store, verdict, dir) = gated("early");
        let mut first = store.submit(increment(None, "b1")).unwrap();
        taken(&store);
        assert_eq!(store.get("p", "seq").unwrap().as_deref(), Some(&b"1"[..]));
        let seen = store.get("p", "seq").unwrap();
        let mut second = store.submit(increment(seen, "b2")).unwrap();
        assert_eq!(store.get("p", "seq").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(store.list("p", "", 10).unwrap(), ["seq"]);
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            waits(&mut first) && waits(&mut second),
            "answered before durable"
        );
        assert_eq!(store.recorded("b1").unwrap(), None, "not durable yet");

        verdict.send(true).unwrap();
        verdict.send(true).unwrap();
        assert_eq!(first.wait().unwrap(), Commit::Done);
        assert_eq!(second.wait().unwrap(), Commit::Done);
        assert_eq!(
            store.disk().get("p", "seq").unwrap().as_deref(),
            Some(&b"2"[..])
        );
        assert!(store.recorded("b2").unwrap().is_some());
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A backend whose group commit panics: the writer stops.
    struct Panicking;

    impl Durable for Panicking {
        fn get(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>, StorageError> {
            Ok(None)
        }
        fn list(&self, _: &str, _: &str, _: u32) -> Result<Vec<String>, StorageError> {
            Ok(Vec::new())
        }
        fn recorded(&self, _: &str) -> Result<Option<Recorded>, StorageError> {
            Ok(None)
        }
        fn prune(&self, _: u64) -> Result<u64, StorageError> {
            Ok(0)
        }
        fn tapes(
            &self,
            _: &str,
            _: crate::storage::TapeQuery,
        ) -> Result<Vec<crate::storage::TapeRow>, StorageError> {
            Ok(Vec::new())
        }
        fn commit_group(&self, _: &[&Batch]) -> Result<Vec<Commit>, StorageError> {
            panic!("the backend failed in a way it did not report");
        }
    }

    /// A writer that dies fails the booking it held and refuses the next: nobody waits
    /// for a disk write that will never come.
    #[test]
    fn a_writer_that_stops_fails_its_bookings_instead_of_leaving_them_waiting() {
        let store = Pipeline::new(Panicking).unwrap();
        let pending = store.submit(increment(None, "b1")).unwrap();
        assert!(matches!(pending.wait(), Err(StorageError(e)) if e.contains("stopped")));
        let refused = store.submit(increment(None, "b2"));
        assert!(matches!(refused, Err(StorageError(e)) if e.contains("stopped")));
    }

    /// Listings merge what is on its way to disk over what is durable: new keys appear,
    /// deleted ones vanish, and the limit holds.
    #[test]
    fn listings_see_sets_and_deletes_on_their_way_to_disk() {
        let (store, verdict, dir) = gated("listing");
        let set = |key: &str, value: Option<&[u8]>| Batch {
            ns: "p".into(),
            writes: vec![(key.into(), value.map(<[u8]>::to_vec))],
            ..Batch::default()
        };
        for key in ["a", "b", "c"] {
            let pending = store.submit(set(key, Some(b"x"))).unwrap();
            verdict.send(true).unwrap();
            assert_eq!(pending.wait().unwrap(), Commit::Done);
        }
        let delete = store.submit(set("b", None)).unwrap();
        taken(&store);
        let add = store.submit(set("ab", Some(b"y"))).unwrap();
        assert_eq!(store.list("p", "", 10).unwrap(), ["a", "ab", "c"]);
        assert_eq!(store.list("p", "", 2).unwrap(), ["a", "ab"]);
        assert_eq!(store.list("p", "b", 10).unwrap(), Vec::<String>::new());
        assert_eq!(store.disk().list("p", "", 10).unwrap(), ["a", "b", "c"]);
        verdict.send(true).unwrap();
        verdict.send(true).unwrap();
        assert_eq!(delete.wait().unwrap(), Commit::Done);
        assert_eq!(add.wait().unwrap(), Commit::Done);
        assert_eq!(store.disk().list("p", "", 10).unwrap(), ["a", "ab", "c"]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A group that fails to become durable: the booking that read its write runs again
    /// (conflict), the one that read only durable data gets the error, and nothing of
    /// either is left.
    #[test]
    fn a_failed_group_makes_every_booking_that_read_from_it_run_again() {
        let (store, verdict, dir) = gated("failed");
        let first = store.submit(increment(None, "b1")).unwrap();
        taken(&store);
        let seen = store.get("p", "seq").unwrap();
        assert_eq!(seen.as_deref(), Some(&b"1"[..]), "read before durable");
        let second = store.submit(increment(seen, "b2")).unwrap();

        // Two groups (the first was taken alone), and both fail.
        verdict.send(false).unwrap();
        verdict.send(false).unwrap();
        assert!(matches!(first.wait(), Err(StorageError(e)) if e == "disk full"));
        assert_eq!(second.wait().unwrap(), Commit::Conflict, "run again");
        assert_eq!(store.get("p", "seq").unwrap(), None, "nothing left");
        assert_eq!(store.list("p", "", 10).unwrap(), Vec::<String>::new());
        assert_eq!(store.recorded("b1").unwrap(), None);
        assert_eq!(store.recorded("b2").unwrap(), None);

        // The rerun books on what is durable.
        let rerun = store.submit(increment(None, "b2")).unwrap();
        verdict.send(true).unwrap();
        assert_eq!(rerun.wait().unwrap(), Commit::Done);
        assert_eq!(store.get("p", "seq").unwrap().as_deref(), Some(&b"1"[..]));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A batch of its own (a booking with a journal record and no reads).
    fn booking(journal: &str) -> Batch {
        Batch {
            ns: "p".into(),
            writes: vec![(journal.into(), Some(b"x".to_vec()))],
            journal: Some(Recorded {
                key: journal.into(),
                route: "r".into(),
                plugin: "p@v".into(),
                response: b"{}".to_vec(),
                at: 1,
            }),
            ..Batch::default()
        }
    }

    /// `pending`'s outcome, or `None` when it is not durable within ten seconds.
    fn within_seconds(pending: Pending) -> Option<Commit> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(pending.wait()));
        let outcome = rx.recv_timeout(Duration::from_secs(10)).ok()?;
        Some(outcome.expect("the group was written"))
    }

    const LONG: Duration = Duration::from_secs(600);

    /// A batch queued while another booking is still running waits for that booking's
    /// batch: both are written in one group, with one sync.
    #[test]
    fn a_group_waits_for_the_batches_of_bookings_still_running() {
        let (store, verdict, dir) = gathering("gather", LONG);
        let running = store.expect_batch();
        let first = store.submit(booking("b1")).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(store.shared.lock().queue.len(), 1, "not written yet");
        let second = store.submit(booking("b2")).unwrap();
        drop(running);
        taken(&store);
        verdict.send(true).unwrap();
        assert_eq!(within_seconds(first), Some(Commit::Done));
        assert_eq!(within_seconds(second), Some(Commit::Done));
        assert_eq!(*store.disk().groups.lock().unwrap(), [2], "one group");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The writer waits for nothing when no booking is running, stops waiting when the
    /// booking it waited for ends without a batch, and waits no longer than its bound.
    #[test]
    fn a_group_waits_only_for_what_is_coming_and_not_for_long() {
        let (store, verdict, dir) = gathering("lone", LONG);
        verdict.send(true).unwrap();
        let lone = store.submit(booking("b1")).unwrap();
        assert_eq!(within_seconds(lone), Some(Commit::Done), "no wait");

        let failing = store.expect_batch();
        let queued = store.submit(booking("b2")).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        drop(failing);
        verdict.send(true).unwrap();
        assert_eq!(
            within_seconds(queued),
            Some(Commit::Done),
            "the end wakes it"
        );
        assert_eq!(*store.disk().groups.lock().unwrap(), [1, 1]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);

        let (store, verdict, dir) = gathering("bound", Duration::from_millis(50));
        let _stuck = store.expect_batch();
        verdict.send(true).unwrap();
        let waited = store.submit(booking("b3")).unwrap();
        assert_eq!(within_seconds(waited), Some(Commit::Done), "bounded");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
