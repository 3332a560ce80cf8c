//! Per-request cost of the plugin path against the same rules compiled natively, and
//! start-up from the precompiled cache.
//!
//! `cargo bench -p followup-tests --bench plugin_path` (unset `RUST_BACKTRACE` for figures
//! comparable with other runs). Three parts:
//!
//! 1. Criterion, `request/PAYLOAD/{native,fresh,warm}`: one request of each contract example
//!    through the host's plugin path — check and parse the JSON body, decode it into the
//!    typed records, call the plugin, check and encode its answer — with the capacity-booker
//!    rules called natively (`native`), in a fresh instance (`fresh`: a new `Store`, instance
//!    and drop per request), or in a warm instance (`warm`, `reuse_instances = 1000`).
//!    Everything else about the request (HTTP, token, journal) is the same for all three
//!    and left out.
//! 2. Percentiles of the same three paths, interleaved, 20,000 requests each on the full
//!    Book Job, and the plugin's overhead over native at the median and at p99.
//! 3. Criterion, `startup/100-plugins-from-cache`: a new host loading 100 distinct plugins
//!    whose compiled artefacts are in the disk cache; then the resident memory of a host
//!    process with those 100 plugins loaded and idle.
//!
//! `FOLLOWUP_BENCH_ONLY=request|percentiles|startup` runs one part.

use criterion::{BenchmarkId, Criterion};
use followup_host::App;
use followup_host::config::{Config, PluginManifest, StoreBackend, StoreConfig, WatchConfig};
use followup_host::contract::types::RequestContext;
use followup_host::dispatch::native::NativeRules;
use followup_host::http::routes::RouteKind;
use followup_host::plugin::LoadedPlugin;
use followup_host::runtime::Services;
use followup_host::storage::kv::KvSession;
use followup_tests::{configs, guests};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The allocator of the host binaries, so that the figures are theirs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PLUGINS: [&str; 3] = ["native", "fresh", "warm"];

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/examples")
}

fn bench_dir(label: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench")
        .join(label);
    std::fs::create_dir_all(&dir).expect("bench directory");
    dir
}

/// The in-memory store, no versions kept, no watcher; compiled plugins cached in `cache`.
fn bench_config(cache: PathBuf) -> Config {
    Config {
        cache_dir: cache,
        versions_dir: PathBuf::new(),
        store: StoreConfig {
            backend: StoreBackend::Memory,
            ..StoreConfig::default()
        },
        watch: WatchConfig {
            enabled: false,
            ..WatchConfig::default()
        },
        ..Config::default()
    }
}

/// The example plugin three times over (native, fresh, warm), configured as in
/// `scripts/load`, on the in-memory store.
fn request_app() -> Arc<App> {
    let mut config = bench_config(bench_dir("cache"));
    for name in PLUGINS {
        let reuse = if name == "warm" { 1000 } else { 0 };
        let booker = configs::example_booker()
            .with_value("order_numbers", "key")
            .with_reuse(reuse);
        config = config.with_plugin(name, booker);
    }
    let rules = NativeRules::booking::<capacity_booker::CapacityBooker>()
        .with_search::<capacity_booker::CapacityBooker>();
    let app = App::new(&config)
        .and_then(|app| app.with_native("native", rules))
        .expect("app");
    Arc::new(app)
}

fn context(route: &str) -> RequestContext {
    RequestContext {
        work_order_id: Some("WO-2024-118734".into()),
        route: route.into(),
        request_id: "bench".into(),
        idempotency_key: "3f1c0a9e".repeat(8),
        claims: None,
    }
}

/// One request's plugin path: body bytes → answer bytes.
async fn request(
    app: &App,
    plugin: &LoadedPlugin,
    kind: RouteKind,
    ctx: &RequestContext,
    body: &[u8],
) -> Vec<u8> {
    let json = followup_host::http::json::parse_body(body, &app.limits).expect("valid body");
    let services = Services {
        kv: Some(KvSession::new(
            app.storage.clone(),
            &plugin.ident.name,
            kind == RouteKind::BookJob,
        )),
        ..Services::default()
    };
    let (bytes, _) =
        followup_host::dispatch::answer(&app.runtime, plugin, kind, ctx, &json, services)
            .await
            .expect("answered");
    bytes
}

struct Case {
    name: &'static str,
    kind: RouteKind,
    body: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let read = |name: &str| std::fs::read(examples().join(name)).expect("example payload");
    vec![
        Case {
            name: "book-job.full",
            kind: RouteKind::BookJob,
            body: read("book-job.full.json"),
        },
        Case {
            name: "book-job.minimal",
            kind: RouteKind::BookJob,
            body: read("book-job.minimal.json"),
        },
        Case {
            name: "appointment-search.request",
            kind: RouteKind::AppointmentSearch,
            body: read("appointment-search.request.json"),
        },
    ]
}

fn per_request(c: &mut Criterion, app: &Arc<App>, tokio: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group("request");
    for case in cases() {
        let mut answers = Vec::new();
        for name in PLUGINS {
            let plugin = app.plugin(name).expect("plugin");
            let ctx = context(name);
            answers.push(tokio.block_on(request(app, &plugin, case.kind, &ctx, &case.body)));
            group.bench_function(BenchmarkId::new(case.name, name), |b| {
                b.to_async(tokio)
                    .iter(|| request(app, &plugin, case.kind, &ctx, &case.body));
            });
        }
        assert!(
            answers.iter().all(|a| *a == answers[0]),
            "{}: native, fresh and warm answer alike",
            case.name
        );
    }
    group.finish();
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q) as usize]
}

fn percentiles(app: &Arc<App>, tokio: &tokio::runtime::Runtime) {
    const WARMUP: usize = 2_000;
    const RUNS: usize = 20_000;
    let body = std::fs::read(examples().join("book-job.full.json")).expect("example");
    let plugins: Vec<_> = PLUGINS
        .iter()
        .map(|name| (app.plugin(name).expect("plugin"), context(name)))
        .collect();
    let mut samples = vec![Vec::with_capacity(RUNS); PLUGINS.len()];
    tokio.block_on(async {
        for i in 0..WARMUP + RUNS {
            // Interleaved, so that all three see the same machine.
            for (which, (plugin, ctx)) in plugins.iter().enumerate() {
                let start = Instant::now();
                std::hint::black_box(request(app, plugin, RouteKind::BookJob, ctx, &body).await);
                if i >= WARMUP {
                    samples[which].push(start.elapsed().as_secs_f64() * 1e6);
                }
            }
        }
    });
    println!(
        "\nbook-job.full.json ({} bytes), {RUNS} requests each, interleaved",
        body.len()
    );
    let mut medians = Vec::new();
    for (name, mut s) in PLUGINS.iter().zip(samples) {
        s.sort_by(f64::total_cmp);
        let (p50, p90, p99) = (
            percentile(&s, 0.5),
            percentile(&s, 0.9),
            percentile(&s, 0.99),
        );
        println!("  {name:<7} p50 {p50:>7.2} µs   p90 {p90:>7.2} µs   p99 {p99:>7.2} µs");
        medians.push((p50, p99));
    }
    for (which, name) in [(1, "fresh"), (2, "warm")] {
        println!(
            "  {name} overhead over native: p50 {:>6.2} µs   p99 {:>6.2} µs",
            medians[which].0 - medians[0].0,
            medians[which].1 - medians[0].1
        );
    }
}

/// Writes 100 distinct components (the example plugin under 100 hashes) and a config that
/// loads them all; compiles them into the cache once.
fn hundred_plugins() -> Config {
    let dir = bench_dir("startup");
    let bytes = std::fs::read(guests::CAPACITY_BOOKER).expect("example plugin");
    let mut config = bench_config(dir.join("cache"));
    for i in 0..100 {
        let path = dir.join(format!("plugin-{i:03}.wasm"));
        let variant = followup_tests::component::with_custom_section(
            &bytes,
            "followup-bench",
            format!("{i}").as_bytes(),
        );
        if std::fs::read(&path).ok().as_deref() != Some(&variant[..]) {
            std::fs::write(&path, &variant).expect("write component");
        }
        let name = format!("p{i:03}");
        let manifest = PluginManifest::new(path).with_kv();
        config = configs::served(config, &name, manifest);
    }
    let config = config.checked().expect("config");
    let text = config.to_toml().expect("config as TOML");
    std::fs::write(dir.join("followup.toml"), text).expect("write config");
    let started = Instant::now();
    App::new(&config).expect("100 plugins load");
    println!(
        "\n100 plugins made ready (compiled where not cached yet) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    config
}

fn startup(c: &mut Criterion, config: &Config) {
    let mut group = c.benchmark_group("startup");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("100-plugins-from-cache", |b| {
        b.iter(|| App::new(config).expect("app"));
    });
    group.finish();
}

/// Starts the bench host on the 100-plugin config and reads its resident memory once it
/// has been idle for a second.
fn idle_rss() {
    use std::io::BufRead as _;
    let config = bench_dir("startup").join("followup.toml");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_followup-bench-host"))
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("bench host");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("listening line");
    std::thread::sleep(Duration::from_secs(1));
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .map_or("unknown".to_string(), |v| v.trim().to_string());
    println!("host with 100 plugins loaded, idle: VmRSS {rss}");
}

fn main() {
    let only = std::env::var("FOLLOWUP_BENCH_ONLY").unwrap_or_default();
    let runs = |part: &str| only.is_empty() || only == part;
    let mut c = Criterion::default().configure_from_args();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    if runs("request") || runs("percentiles") {
        let app = request_app();
        if runs("request") {
            per_request(&mut c, &app, &tokio);
        }
        if runs("percentiles") {
            percentiles(&app, &tokio);
        }
    }
    if runs("startup") {
        let config = hundred_plugins();
        startup(&mut c, &config);
        idle_rss();
    }
    c.final_summary();
}
