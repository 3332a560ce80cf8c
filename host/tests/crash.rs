//! Crash test: the real binary is killed with SIGKILL while clients book, restarted, and
//! every booking that got no answer is sent again. Afterwards no booking answered 200 may
//! be missing from the journal, and none may have booked twice (each record took exactly
//! one order number of the plugin's sequence, with no gaps).
//!
//! `scripts/crash-test` runs it with more rounds and prints the figures; knobs:
//! `FOLLOWUP_CRASH_ROUNDS` (2), `FOLLOWUP_CRASH_CLIENTS` (16),
//! `FOLLOWUP_CRASH_KILL_AFTER_MS` (800).

mod common;

use common::{Kill, example_plugin, listening_address, try_post, workspace};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn start(config: &Path) -> (Kill, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_followup"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "error")
        .env_remove("FOLLOWUP_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Kill(child);
    let addr = listening_address(&mut child);
    (child, addr)
}

/// What happened to one booking (work order `WO-n`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Answered 200 with this order number; `true` when replayed from the journal.
    Booked(String, bool),
    /// No answer: the host died with the request in flight (or before it connected).
    NoAnswer,
    /// Any other answer: status and body.
    Failed(u16, String),
}

fn book(addr: &str, n: usize, body: &str) -> Outcome {
    match try_post(addr, &format!("/workorders/WO-{n}/followup"), body) {
        Ok((200, head, text)) => {
            let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            Outcome::Booked(
                json["OrderNum"].as_str().unwrap_or("").to_string(),
                head.contains("x-followup-replayed: true"),
            )
        }
        Ok((status, _, text)) => Outcome::Failed(status, text),
        Err(_) => Outcome::NoAnswer,
    }
}

#[test]
fn a_killed_host_loses_no_answered_booking_and_books_nothing_twice() {
    let rounds = knob("FOLLOWUP_CRASH_ROUNDS", 2);
    let clients = knob("FOLLOWUP_CRASH_CLIENTS", 16) as usize;
    let kill_after = Duration::from_millis(knob("FOLLOWUP_CRASH_KILL_AFTER_MS", 800));

    let dir = std::env::temp_dir().join(format!("followup-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("followup.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ncache_dir = \"cache\"\nversions_dir = \"versions\"\n\
             [store]\npath = \"followup.db\"\n[watch]\nenabled = false\n[token]\nmode = \"off\"\n\
             [plugins.booker]\npath = {:?}\nkv = true\n[plugins.booker.config]\n\
             now = \"2024-06-17T12:00:00Z\"\nutc_offset_minutes = \"-240\"\n\
             [[routes]]\nname = \"followup\"\npath = \"/workorders/{{0}}/followup\"\n\
             kind = \"book-job\"\nplugin = \"booker\"\n",
            example_plugin()
        ),
    )
    .unwrap();
    let body =
        std::fs::read_to_string(workspace().join("../shared/spec/examples/book-job.minimal.json"))
            .unwrap();

    let outcomes: Arc<Mutex<BTreeMap<usize, Outcome>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    for _ in 0..rounds {
        let (mut host, addr) = start(&config);
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                let (addr, body, stop) = (addr.clone(), body.clone(), stop.clone());
                let (outcomes, next) = (outcomes.clone(), next.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let outcome = book(&addr, n, &body);
                        let gone = outcome == Outcome::NoAnswer;
                        outcomes.lock().unwrap().insert(n, outcome);
                        if gone {
                            return;
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(kill_after);
        // SIGKILL: no shutdown, no flush; whatever was in flight is cut.
        host.0.kill().unwrap();
        host.0.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
    }

    // Restart and retry every booking that got no answer.
    let (_host, addr) = start(&config);
    let mut outcomes = outcomes.lock().unwrap().clone();
    let unanswered: Vec<usize> = outcomes
        .iter()
        .filter(|(_, o)| **o == Outcome::NoAnswer)
        .map(|(n, _)| *n)
        .collect();
    let mut replayed_on_retry = 0;
    for n in &unanswered {
        let outcome = book(&addr, *n, &body);
        if matches!(outcome, Outcome::Booked(_, true)) {
            replayed_on_retry += 1;
        }
        outcomes.insert(*n, outcome);
    }
    drop(_host);

    // Every booking is answered now, each with a 200.
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|(_, o)| !matches!(o, Outcome::Booked(..)))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");

    // The journal holds every answered booking with the answer that was sent.
    let db = rusqlite::Connection::open(dir.join("followup.db")).unwrap();
    let journal: BTreeMap<String, String> = db
        .prepare("SELECT key, response FROM journal")
        .unwrap()
        .query_map([], |r| {
            let response: Vec<u8> = r.get(1)?;
            let json: serde_json::Value = serde_json::from_slice(&response).unwrap_or_default();
            Ok((
                r.get(0)?,
                json["OrderNum"].as_str().unwrap_or("").to_string(),
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut missing = Vec::new();
    for (n, outcome) in &outcomes {
        let Outcome::Booked(order, _) = outcome else {
            unreachable!()
        };
        let key =
            followup_host::journal::idempotency_key("followup", Some(&format!("WO-{n}")), &parsed);
        if journal.get(&key) != Some(order) {
            missing.push((n, order.clone(), journal.get(&key).cloned()));
        }
    }
    assert!(
        missing.is_empty(),
        "answered but not journaled: {missing:?}"
    );

    // Nothing booked twice: one order number per record, all distinct, no gaps.
    let sequence: String = db
        .query_row(
            "SELECT CAST(value AS TEXT) FROM kv WHERE ns = 'booker' AND key = 'sequence/order'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let sequence: usize = sequence.parse().unwrap();
    let numbers: BTreeSet<&String> = journal.values().collect();
    let expected: BTreeSet<String> = (1..=sequence).map(|i| format!("FU-{i:08}")).collect();
    assert_eq!(journal.len(), outcomes.len(), "one record per booking");
    assert_eq!(numbers.len(), journal.len(), "order numbers are unique");
    assert_eq!(sequence, journal.len(), "no order number was taken twice");
    assert!(numbers.iter().all(|n| expected.contains(*n)), "gap-free");

    println!(
        "crash test: {rounds} SIGKILLs under {clients} clients in {:.1} s; {} bookings, \
         {} cut off by a kill and sent again ({replayed_on_retry} of them had \
         committed and were replayed, {} ran again); journal {} records, sequence {sequence}; \
         missing 0, doubled 0",
        started.elapsed().as_secs_f64(),
        outcomes.len(),
        unanswered.len(),
        unanswered.len() - replayed_on_retry,
        journal.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
