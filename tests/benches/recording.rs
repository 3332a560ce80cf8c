//! `cargo bench -p followup-tests --bench recording`: what `record = true` costs a booking.
//!
//! The example plugin twice on one host, `plain` and `recorded` (`record = true`), both
//! with key order numbers so that bookings never wait on each other, on the memory store
//! (the CPU cost alone) and on SQLite (the tape written in the booking's own
//! transaction). Bookings go through the host's booking path (journal, plugin, commit)
//! one after another, alternating between the two plugins, each with a new WorkOrderID;
//! prints p50, p99 and the mean of each, the difference, and the bytes of a tape.

use followup_host::App;
use followup_host::config::{Config, StoreBackend, StoreConfig, WatchConfig};
use followup_host::contract::types::RequestContext;
use followup_host::storage::TapeQuery;
use followup_tests::configs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The allocator of the host binaries, so that the figures are theirs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn app(backend: StoreBackend, dir: &std::path::Path) -> App {
    let mut config = Config {
        cache_dir: std::env::temp_dir().join("followup-bench-recording-cache"),
        versions_dir: PathBuf::new(),
        store: StoreConfig {
            backend,
            path: dir.join("followup.db"),
            ..StoreConfig::default()
        },
        watch: WatchConfig {
            enabled: false,
            ..WatchConfig::default()
        },
        ..Config::default()
    };
    for (name, record) in [("plain", false), ("recorded", true)] {
        let mut booker = configs::example_booker().with_value("order_numbers", "key");
        booker.record = record;
        config = config.with_plugin(name, booker);
    }
    App::new(&config).expect("app")
}

fn main() {
    // `cargo bench` passes `--bench`; elsewhere (a build check) run briefly.
    let bookings = if std::env::args().any(|a| a == "--bench") {
        5_000
    } else {
        200
    };
    let body: serde_json::Value =
        serde_json::from_str(&followup_tests::http::example("book-job.full.json")).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (label, backend) in [
        ("memory store", StoreBackend::Memory),
        ("SQLite", StoreBackend::Sqlite),
    ] {
        let dir = std::env::temp_dir().join(format!(
            "followup-bench-recording-{}-{}",
            std::process::id(),
            label.len()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let app = app(backend, &dir);
        let times = runtime.block_on(async {
            let mut times = [Vec::new(), Vec::new()];
            for i in 0..bookings * 2 {
                let (n, name) = if i % 2 == 0 {
                    (0, "plain")
                } else {
                    (1, "recorded")
                };
                let plugin = app.plugin(name).unwrap();
                let ctx = RequestContext {
                    work_order_id: Some(format!("WO-{i}")),
                    route: name.into(),
                    request_id: format!("bench-{i}"),
                    idempotency_key: followup_host::journal::idempotency_key(
                        name,
                        Some(&format!("WO-{i}")),
                        &body,
                    ),
                    claims: None,
                };
                let started = Instant::now();
                app.journal
                    .book(&app.runtime, &plugin, &ctx, &body)
                    .await
                    .expect("booked");
                times[n].push(started.elapsed());
            }
            times
        });
        let tapes = app.storage.tapes("recorded", TapeQuery::default()).unwrap();
        assert_eq!(tapes.len(), bookings, "a tape per booking");
        let bytes = tapes.iter().map(|t| t.tape.len()).sum::<usize>() / tapes.len();
        println!("{label}, {bookings} bookings of the full Book Job per plugin, one at a time:");
        let [plain, recorded] = times;
        let (p, r) = (report("plain", plain), report("record = true", recorded));
        println!(
            "  recording costs {:+.1} µs at the median, {:+.1} µs on average; a tape is {bytes} bytes\n",
            r.0 - p.0,
            r.1 - p.1
        );
        drop(app);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Prints p50, p99 and the mean; answers (p50, mean) in µs.
fn report(label: &str, mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let at = |p: f64| us(times[((times.len() - 1) as f64 * p) as usize]);
    let mean = times.iter().map(|d| us(*d)).sum::<f64>() / times.len() as f64;
    println!(
        "  {label:<15} p50 {:>7.1} µs   p99 {:>7.1} µs   mean {:>7.1} µs",
        at(0.5),
        at(0.99),
        mean
    );
    (at(0.5), mean)
}
