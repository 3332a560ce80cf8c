//! Hot swap under load, over loopback HTTP: does any request fail while the plugin file is
//! replaced every 100 ms, and how long does a swap take?
//!
//! Run with `scripts/swap-load` (or `cargo bench -p followup-tests --bench hot_swap`).
//!
//! The example plugin serves `POST /workorders/{0}/followup` from a file in a temporary
//! directory that the host watches. Two versions (the same rules under two hashes) are
//! published in turn, the atomic way (written beside, renamed over), while 32 clients send
//! the contract's full Book Job. Phases: 1 s warm-up; 10 s of load without swapping;
//! 20 s of load with a swap every 100 ms. Reported: requests, non-200 answers (goal 0),
//! the versions that answered, swap latency (rename → new version serving; goal ≤ 20 ms
//! once compiled) and request latency p50/p99 with and without swapping.
//!
//! Knobs (environment): `FOLLOWUP_SWAP_SECONDS` (20), `FOLLOWUP_SWAP_BASELINE_SECONDS`
//! (10), `FOLLOWUP_SWAP_CLIENTS` (32), `FOLLOWUP_SWAP_EVERY_MS` (100). Exits 1 when a
//! request failed or a swap never took effect.
//!
//! The server runs on its own 2-worker runtime; the clients and the swapper share the same
//! 2 cores.

use followup_host::config::{Config, PluginManifest, RouteConfig, TokenConfig};
use followup_host::plugin::loader::content_hash;
use followup_host::{App, run, watch};
use followup_tests::{component, configs, guests, knob};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn config(plugin: &Path) -> Config {
    let booker = PluginManifest {
        path: plugin.to_path_buf(),
        ..configs::example_booker()
    };
    Config::default()
        .with_token(TokenConfig::off())
        .with_plugin("capacity-booker", booker)
        .with_route(
            RouteConfig::book_job("/workorders/{0}/followup", "capacity-booker").named("followup"),
        )
}

/// What the clients saw in one phase.
#[derive(Default)]
struct Seen {
    latencies_us: Vec<u64>,
    non_200: u64,
    statuses: BTreeMap<u16, u64>,
    versions: BTreeMap<String, u64>,
}

impl Seen {
    fn merge(&mut self, other: Seen) {
        self.latencies_us.extend(other.latencies_us);
        self.non_200 += other.non_200;
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in other.versions {
            *self.versions.entry(k).or_default() += v;
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn load(base: &str, body: &str, clients: u64, secs: u64) -> Seen {
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let body = body.to_string();
        let base = base.to_string();
        tasks.spawn(async move {
            let client = reqwest::Client::new();
            let mut seen = Seen::default();
            // A new WorkOrderID each time: a repeated booking is answered by the journal.
            for n in 0.. {
                if Instant::now() >= until {
                    break;
                }
                let url = format!("{base}/workorders/WO-{c}-{n}/followup");
                let started = Instant::now();
                let answer = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let (status, version) = match answer {
                    Ok(r) => {
                        let version = r
                            .headers()
                            .get("x-followup-plugin")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_string();
                        let status = r.status().as_u16();
                        match r.bytes().await {
                            Ok(_) => (status, version),
                            Err(_) => (0, version),
                        }
                    }
                    Err(_) => (0, "-".to_string()),
                };
                seen.latencies_us.push(started.elapsed().as_micros() as u64);
                seen.non_200 += u64::from(status != 200);
                *seen.statuses.entry(status).or_default() += 1;
                *seen.versions.entry(version).or_default() += 1;
            }
            seen
        });
    }
    let mut all = Seen::default();
    for seen in tasks.join_all().await {
        all.merge(seen);
    }
    all.latencies_us.sort_unstable();
    all
}

/// Publishes `bytes` at `path` (write beside, rename over) and waits until `app` serves it.
/// The time from the rename to the new version serving, or `None` after 5 s.
fn publish(app: &App, path: &Path, bytes: &[u8]) -> Option<Duration> {
    let hash = content_hash(bytes);
    let staged = path.with_extension("wasm.tmp");
    std::fs::write(&staged, bytes).unwrap();
    std::fs::rename(&staged, path).unwrap();
    let renamed = Instant::now();
    while app.plugin("capacity-booker").unwrap().hash != hash {
        if renamed.elapsed() > Duration::from_secs(5) {
            return None;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    Some(renamed.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let swap_secs = knob("FOLLOWUP_SWAP_SECONDS", 20);
    let baseline_secs = knob("FOLLOWUP_SWAP_BASELINE_SECONDS", 10);
    let clients = knob("FOLLOWUP_SWAP_CLIENTS", 32);
    let every = Duration::from_millis(knob("FOLLOWUP_SWAP_EVERY_MS", 100));
    let body = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/examples/book-job.full.json"),
    )
    .unwrap();

    let dir: PathBuf =
        std::env::temp_dir().join(format!("followup-swap-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let v1 = std::fs::read(guests::CAPACITY_BOOKER).unwrap();
    let v2 = component::with_custom_section(&v1, "servicemobility:build", b"v2");
    let path = dir.join("capacity-booker.wasm");
    std::fs::write(&path, &v1).unwrap();

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config = config(&path).checked().unwrap();
    config.cache_dir = dir.join("cache");
    config.versions_dir = dir.join("versions");
    config.store.path = dir.join("followup.db");
    let app = Arc::new(App::new(&config).expect("app"));
    let listener = server_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let watcher = {
        let _in_runtime = server_rt.enter();
        watch::watch(app.clone(), config.watch.debounce()).expect("watch")
    };
    server_rt.spawn(run(listener, app.clone(), std::future::pending()));

    // The first swap to v2 compiles it; every later swap finds both versions compiled.
    let cold = publish(&app, &path, &v2).expect("v2 serves");
    publish(&app, &path, &v1).expect("v1 serves again");

    let clients_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    clients_rt.block_on(load(&base, &body, clients, 1));
    let quiet = clients_rt.block_on(load(&base, &body, clients, baseline_secs));

    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (app, path, stop) = (app.clone(), path.clone(), stop.clone());
        let versions = [v2.clone(), v1.clone()];
        std::thread::spawn(move || {
            let mut latencies = Vec::new();
            let mut missed = 0u64;
            let mut next = Instant::now();
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match publish(&app, &path, &versions[i % 2]) {
                    Some(took) => latencies.push(took),
                    None => missed += 1,
                }
                next += every;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            (latencies, missed)
        })
    };
    let swapping = clients_rt.block_on(load(&base, &body, clients, swap_secs));
    stop.store(true, Ordering::Relaxed);
    let (mut swaps, missed) = swapper.join().unwrap();
    swaps.sort_unstable();
    drop(watcher);

    let requests = quiet.latencies_us.len() + swapping.latencies_us.len();
    println!(
        "hot swap under load: {clients} clients, full Book Job, a swap every {} ms for {swap_secs} s",
        every.as_millis()
    );
    println!(
        "  requests while swapping    {}",
        swapping.latencies_us.len()
    );
    println!("  requests without swapping  {}", quiet.latencies_us.len());
    println!(
        "  non-200 answers            {} of {requests} (while swapping {}; statuses {:?})   (goal 0)",
        quiet.non_200 + swapping.non_200,
        swapping.non_200,
        swapping.statuses
    );
    println!("  versions that answered while swapping:");
    for (version, n) in &swapping.versions {
        println!("    {version}  {n}");
    }
    println!(
        "  swaps                      {} (never took effect: {missed}; rejected candidates: {})",
        swaps.len(),
        app.metrics.rejected_count(
            "capacity-booker",
            followup_host::plugin::history::Trigger::File
        )
    );
    println!(
        "  swap latency               median {:.2} ms, p99 {:.2} ms, max {:.2} ms   (goal ≤ 20 ms)",
        ms(swaps.get(swaps.len() / 2).copied().unwrap_or_default()),
        ms(swaps
            .get((swaps.len() * 99 / 100).min(swaps.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()),
        ms(swaps.last().copied().unwrap_or_default()),
    );
    println!("  first swap (compiling v2)  {:.1} ms", ms(cold));
    for (label, seen, secs) in [
        ("without swapping", &quiet, baseline_secs),
        ("while swapping  ", &swapping, swap_secs),
    ] {
        println!(
            "  request latency {label}  p50 {:.2} ms, p99 {:.2} ms   ({:.0} req/s)",
            percentile(&seen.latencies_us, 0.5) as f64 / 1e3,
            percentile(&seen.latencies_us, 0.99) as f64 / 1e3,
            seen.latencies_us.len() as f64 / secs as f64
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    if quiet.non_200 + swapping.non_200 > 0 || missed > 0 {
        std::process::exit(1);
    }
}
