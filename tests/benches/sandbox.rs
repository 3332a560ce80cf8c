//! What hostile plugins cost everyone else, measured over loopback HTTP.
//!
//! Run with `cargo bench -p followup-tests --bench sandbox` (unset RUST_BACKTRACE).
//!
//! 1. Isolation: throughput of a well-behaved plugin (capacity-booker, minimal Book Job,
//!    16 concurrent clients, 3 rounds of 3 s) alone, and while 8 clients keep a looping plugin busy
//!    on another route. Goal: ≥ 90 % of the throughput alone.
//! 2. Leaks: 10,000 hostile requests (20 ms loop, memory bomb with a 100 ms deadline, panic,
//!    in turn) after a warm-up;
//!    the host's RSS before and after. Goal: within 10 %.
//!
//! The server runs on its own 2-worker runtime; the clients share the same 2 cores.

use followup_host::config::{Config, Limits, RouteConfig, TokenConfig};
use followup_host::{App, run};
use followup_tests::configs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn config() -> Config {
    let hostile = |config, name, behaviour, timeout_ms| {
        let limits = Limits {
            timeout_ms,
            ..Limits::default()
        };
        configs::served(config, name, configs::hostile(behaviour, limits))
    };
    let config = Config::default()
        .with_token(TokenConfig::off())
        .with_plugin("booker", configs::example_booker())
        .with_route(RouteConfig::book_job("/workorders/{0}/followup", "booker"));
    let config = hostile(config, "loop", "loop", 500);
    let config = hostile(config, "quickloop", "loop", 20);
    let config = hostile(config, "bomb", "memory-bomb", 100);
    hostile(config, "trap", "panic", 500)
}

/// Rounds of each phase in the isolation measurement.
const ROUNDS: usize = 3;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// POSTs `body`; the status, and for a failure what it said (0: no answer at all).
async fn post(client: &reqwest::Client, url: &str, body: &str) -> (u16, String) {
    match client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            (status, if status == 200 { String::new() } else { text })
        }
        Err(e) => (0, e.to_string()),
    }
}

async fn throughput(base: &str, body: &str, clients: usize, secs: u64) -> (f64, u64) {
    // A new WorkOrderID each time, in every phase: a repeated booking is answered by the
    // journal without calling the plugin.
    static PHASE: AtomicU64 = AtomicU64::new(0);
    let phase = PHASE.fetch_add(1, Ordering::Relaxed);
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (ok, failed) = (ok.clone(), failed.clone());
        let body = body.to_string();
        let base = base.to_string();
        tasks.spawn(async move {
            let client = reqwest::Client::new();
            for n in 0.. {
                if Instant::now() >= until {
                    break;
                }
                let url = format!("{base}/workorders/WO-{phase}-{c}-{n}/followup");
                match post(&client, &url, &body).await {
                    (200, _) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    (status, said) => {
                        // The first few failures say why: a failed booking beside hostile
                        // plugins is a finding, not a statistic.
                        if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("  a booking failed: {status} {said}");
                        }
                    }
                }
            }
        });
    }
    tasks.join_all().await;
    (
        ok.load(Ordering::Relaxed) as f64 / secs as f64,
        failed.load(Ordering::Relaxed),
    )
}

fn main() {
    let body = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/spec/examples/book-job.minimal.json"),
    )
    .unwrap();
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config = config().checked().unwrap();
    config.cache_dir = std::env::temp_dir().join("followup-bench-cache");
    let data = std::env::temp_dir().join(format!("followup-bench-sandbox-{}", std::process::id()));
    config.store.path = data.join("followup.db");
    config.versions_dir = data.join("versions");
    let app = Arc::new(App::new(&config).expect("app"));
    let listener = server_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    server_rt.spawn(run(listener, app, std::future::pending()));

    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    clients.block_on(async {
        // Warm-up, then three rounds of each phase in turn, so that drift on a shared
        // machine affects both phases alike.
        throughput(&base, &body, 16, 1).await;
        let (mut alone, mut loaded) = (0.0, 0.0);
        let (mut failed_alone, mut failed_loaded) = (0, 0);
        let hostile_answers = Arc::new(AtomicU64::new(0));
        for _round in 0..ROUNDS {
            let (rate, failed) = throughput(&base, &body, 16, 3).await;
            alone += rate / ROUNDS as f64;
            failed_alone += failed;

            let stop = Arc::new(AtomicBool::new(false));
            let mut hostile = tokio::task::JoinSet::new();
            for c in 0..8 {
                let (stop, n) = (stop.clone(), hostile_answers.clone());
                let url = format!("{base}/loop/WO-{c}");
                let body = body.clone();
                hostile.spawn(async move {
                    let client = reqwest::Client::new();
                    while !stop.load(Ordering::Relaxed) {
                        post(&client, &url, &body).await;
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (rate, failed) = throughput(&base, &body, 16, 3).await;
            loaded += rate / ROUNDS as f64;
            failed_loaded += failed;
            stop.store(true, Ordering::Relaxed);
            hostile.join_all().await;
        }
        println!("isolation (capacity-booker, 16 clients, 3 rounds of 3 s per phase):");
        println!("  alone                     {alone:>9.0} req/s   ({failed_alone} failed)");
        println!(
            "  with 8 looping clients    {loaded:>9.0} req/s   ({failed_loaded} failed; {} looping calls timed out)",
            hostile_answers.load(Ordering::Relaxed)
        );
        println!("  ratio                     {:>9.1} %   (goal ≥ 90 %)", 100.0 * loaded / alone);

        // Leaks: hostile mix, 8 at a time.
        let mix = ["quickloop", "bomb", "trap"];
        let run_mix = |n: usize| {
            let base = base.clone();
            let body = body.clone();
            async move {
                let mut tasks = tokio::task::JoinSet::new();
                for c in 0..8 {
                    let (base, body) = (base.clone(), body.clone());
                    tasks.spawn(async move {
                        let client = reqwest::Client::new();
                        let mut non_200 = 0u64;
                        for i in (c..n).step_by(8) {
                            let url = format!("{base}/{}/WO-{i}", mix[i % 3]);
                            non_200 += u64::from(post(&client, &url, &body).await.0 != 200);
                        }
                        non_200
                    });
                }
                tasks.join_all().await.into_iter().sum::<u64>()
            }
        };
        run_mix(1_000).await;
        let before = rss_kib();
        let started = Instant::now();
        let errors = run_mix(10_000).await;
        let after = rss_kib();
        println!("leaks (10,000 hostile requests: 20 ms loop, memory bomb, panic, 8 at a time; after 1,000 warm-up):");
        println!(
            "  answered with an error    {errors} of 10000 in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        println!(
            "  RSS before {before} KiB, after {after} KiB: {:+.1} %   (goal within 10 %)",
            100.0 * (after as f64 - before as f64) / before as f64
        );
    });
}
