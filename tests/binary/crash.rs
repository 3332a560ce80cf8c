//! Crash test: the real binary is killed with SIGKILL while clients book, restarted, and
//! every booking that got no answer is sent again. Afterwards no booking answered 200 may
//! be missing from the journal, and none may have booked twice (each record took exactly
//! one order number of the plugin's sequence, with no gaps).
//!
//! `scripts/crash-test` runs it with more rounds and prints the figures; knobs:
//! `FOLLOWUP_CRASH_ROUNDS` (2), `FOLLOWUP_CRASH_CLIENTS` (16),
//! `FOLLOWUP_CRASH_KILL_AFTER_MS` (800).

use crate::support::{Host, scratch, write_config};
use followup_host::config::{Config, RouteConfig, TokenConfig};
use followup_tests::configs::example_booker;
use followup_tests::http::{example, try_send};
use followup_tests::knob;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn start(config: &Path) -> Host {
    Host::serve(&["--config", config.to_str().unwrap()], false, |_| {})
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

async fn book(client: &reqwest::Client, base: &str, n: usize, body: &str) -> Outcome {
    let request = client
        .post(format!("{base}/workorders/WO-{n}/followup"))
        .header("content-type", "application/json")
        .body(body.to_string());
    match try_send(request).await {
        Ok(answer) if answer.status == 200 => Outcome::Booked(
            answer.json["OrderNum"].as_str().unwrap_or("").to_string(),
            answer.replayed,
        ),
        Ok(answer) => Outcome::Failed(answer.status, answer.text),
        Err(_) => Outcome::NoAnswer,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_host_loses_no_answered_booking_and_books_nothing_twice() {
    let rounds = knob("FOLLOWUP_CRASH_ROUNDS", 2);
    let clients = knob("FOLLOWUP_CRASH_CLIENTS", 16) as usize;
    let kill_after = Duration::from_millis(knob("FOLLOWUP_CRASH_KILL_AFTER_MS", 800));

    let dir = scratch("crash");
    let mut config = Config::default()
        .with_token(TokenConfig::off())
        .with_plugin("booker", example_booker())
        .with_route(RouteConfig::book_job("/workorders/{0}/followup", "booker").named("followup"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    // Relative to the config file: everything the host keeps stays in the test's directory.
    config.cache_dir = "cache".into();
    config.versions_dir = "versions".into();
    config.store.path = "followup.db".into();
    config.watch.enabled = false;
    let config = write_config(&dir, &config.checked().unwrap());
    let body = example("book-job.minimal.json");
    let client = reqwest::Client::new();

    let outcomes: Arc<Mutex<BTreeMap<usize, Outcome>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    for _ in 0..rounds {
        let mut host = start(&config);
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (base, body, stop) = (host.base.clone(), body.clone(), stop.clone());
                let (outcomes, next, client) = (outcomes.clone(), next.clone(), client.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let outcome = book(&client, &base, n, &body).await;
                        let gone = outcome == Outcome::NoAnswer;
                        outcomes.lock().unwrap().insert(n, outcome);
                        if gone {
                            return;
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(kill_after).await;
        // SIGKILL: no shutdown, no flush; whatever was in flight is cut.
        host.kill();
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.unwrap();
        }
    }

    // Restart and retry every booking that got no answer.
    let host = start(&config);
    let mut outcomes = outcomes.lock().unwrap().clone();
    let unanswered: Vec<usize> = outcomes
        .iter()
        .filter(|(_, o)| **o == Outcome::NoAnswer)
        .map(|(n, _)| *n)
        .collect();
    let mut replayed_on_retry = 0;
    for n in &unanswered {
        let outcome = book(&client, &host.base, *n, &body).await;
        if matches!(outcome, Outcome::Booked(_, true)) {
            replayed_on_retry += 1;
        }
        outcomes.insert(*n, outcome);
    }
    drop(host);

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
