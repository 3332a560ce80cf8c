//! `cargo bench -p followup-tests --bench kv_reads`: what a plugin's `kv.get` costs the
//! worker that runs it, against handing the same read to tokio's blocking pool.
//!
//! The host answers `kv` reads inline, on the async worker running the guest
//! (`contract/bindings.rs`): the imports are synchronous, and a read of SQLite's page cache
//! takes microseconds. The alternative, a `spawn_blocking` round trip per read, would free
//! the worker only for a cold page. This measures both on the default backend (SQLite,
//! WAL, the read-only connection pool) with 10,000 keys of 64 bytes, after a first pass
//! has brought the pages into memory, and prints p50, p99 and the mean of each.

use followup_host::storage::sqlite::SqliteStorage;
use followup_host::storage::{Batch, SharedStorage};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYS: usize = 10_000;

fn main() {
    // `cargo bench` passes `--bench`; elsewhere (a build check) run briefly.
    let reads = if std::env::args().any(|a| a == "--bench") {
        200_000
    } else {
        2_000
    };
    let dir = std::env::temp_dir().join(format!("followup-bench-kv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let storage: SharedStorage =
        Arc::new(SqliteStorage::open(&dir.join("followup.db")).expect("open SQLite"));
    let key = |i: usize| format!("slots/2024-06-{:02}/{i:05}", 1 + i % 28);
    storage
        .commit(Batch {
            ns: "p".into(),
            writes: (0..KEYS).map(|i| (key(i), Some(vec![b'v'; 64]))).collect(),
            ..Batch::default()
        })
        .expect("seed");
    // A fixed pseudo-random order of keys (a linear congruential walk).
    let order: Vec<String> = (0..reads)
        .scan(12_345u64, |x, _| {
            *x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            Some(key((*x >> 33) as usize % KEYS))
        })
        .collect();
    for k in order.iter().take(KEYS) {
        let _ = storage.get("p", k);
    }

    let mut inline = Vec::with_capacity(reads);
    for k in &order {
        let started = Instant::now();
        let value = storage.get("p", k).expect("read");
        inline.push(started.elapsed());
        assert!(value.is_some());
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handed_off = runtime.block_on(async {
        let mut times = Vec::with_capacity(reads);
        for k in &order {
            let (s, k) = (storage.clone(), k.clone());
            let started = Instant::now();
            let value = tokio::task::spawn_blocking(move || s.get("p", &k))
                .await
                .expect("join")
                .expect("read");
            times.push(started.elapsed());
            assert!(value.is_some());
        }
        times
    });

    println!("kv.get on SQLite, {KEYS} keys of 64 B, {reads} reads in a fixed random order:");
    report("inline, on the calling worker", inline);
    report("spawn_blocking round trip", handed_off);
    let _ = std::fs::remove_dir_all(&dir);
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    let mean = times.iter().sum::<Duration>().as_secs_f64() * 1e6 / times.len() as f64;
    println!(
        "  {what:<32} p50 {:>6.2} µs   p99 {:>6.2} µs   mean {:>6.2} µs",
        at(0.5),
        at(0.99),
        mean
    );
}
