//! `cargo bench -p followup-tests --bench containment`: 16 concurrent calls of an amplifying
//! plugin beside a well-behaved one.
//!
//! A host process (`followup-bench-host`, the production serving path, memory store) serves
//! the amplifier guest's `many-parts` (1.2 million empty parts in a 64 MiB plugin: the
//! largest host footprint of the hostile behaviours) and the example plugin with key order
//! numbers. On loopback only, `ROUNDS` rounds of two phases of `SECONDS` each, then the
//! first phase once more:
//! 1. `GOOD_CLIENTS` clients book the example plugin as fast as they can (alone);
//! 2. the same, while 16 clients call the amplifying plugin back to back (beside).
//!
//! Each beside phase is compared with the mean of the alone phases either side of it:
//! short, interleaved phases keep the drift of a shared 2-core machine out of the ratio
//! (one 8 s phase of each measured the same build anywhere from 80 to 101 %).
//!
//! Printed: the well-behaved throughput alone and beside and their ratio (goal ≥ 90 %),
//! with each round's; the host's peak resident memory alone and over the beside phases, and
//! the bound it is held to: what it used before plus, per concurrent amplifying call, the
//! plugin's memory and the host's ceiling per call (`docs/sandbox.md`); and the CPU seconds
//! the host and the load generator used alone and beside.
//!
//! To compare: `AMPLIFIER` names another behaviour of the amplifier guest (or, with
//! `AMPLIFIER_GUEST=hostile`, of the hostile guest: `loop`, `sleep`, …),
//! `AMPLIFIER_TIMEOUT_MS` its deadline (default 500), and `RUNTIME` extra config lines with
//! `;` for newlines (e.g. `[runtime];runaway_share_percent = 1`).

use followup_host::config::{Config, HttpGrant, Limits, PluginManifest, RouteConfig, StoreBackend};
use followup_tests::{configs, guests};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SECONDS: u64 = 2;
const ROUNDS: usize = 6;
const GOOD_CLIENTS: usize = 8;
const HOSTILE_CLIENTS: usize = 16;
const PLUGIN_MEMORY: u64 = 64 << 20;
const HOST_CEILING: u64 = 24 << 20;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it too, briefly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let behaviour = std::env::var("AMPLIFIER").unwrap_or_else(|_| "many-parts".into());
    let (seconds, rounds) = if quick { (1, 1) } else { (SECONDS, ROUNDS) };
    let dir = std::env::temp_dir().join(format!("followup-bench-contain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // `RUNTIME`: settings to compare, in TOML with `;` for newlines.
    let settings = std::env::var("RUNTIME")
        .unwrap_or_default()
        .replace(';', "\n");
    let mut config: Config = toml::from_str(&settings).expect("RUNTIME is TOML settings");
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.cache_dir = std::env::temp_dir().join("followup-tests-cache");
    config.versions_dir = dir.join("versions");
    config.store.backend = StoreBackend::Memory;
    let amp = match std::env::var("AMPLIFIER_GUEST").as_deref() {
        Ok("hostile") => guests::HOSTILE,
        _ => guests::AMPLIFIER,
    };
    let amp = PluginManifest::new(amp)
        .with_kv()
        .with_http(HttpGrant::allowing(["http://127.0.0.1:9"]))
        .with_value("behaviour", &behaviour)
        .with_limits(Limits {
            max_memory_bytes: PLUGIN_MEMORY,
            timeout_ms: std::env::var("AMPLIFIER_TIMEOUT_MS")
                .map_or(500, |v| v.parse().expect("AMPLIFIER_TIMEOUT_MS")),
            ..Limits::default()
        });
    let booker = configs::example_booker().with_value("order_numbers", "key");
    let text = configs::served(config, "amp", amp)
        .with_plugin("booker", booker)
        .with_route(RouteConfig::book_job("/workorders/{0}/followup", "booker"))
        .checked()
        .and_then(|c| c.to_toml())
        .expect("config");
    let config = dir.join("followup.toml");
    std::fs::write(&config, text).unwrap();
    let (mut host, base) = followup_tests::process::start(
        env!("CARGO_BIN_EXE_followup-bench-host"),
        &config,
        Stdio::null(),
        "warn",
    );
    let pid = host.id();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let body = Arc::new(example("book-job.full.json"));
        let client = reqwest::Client::new();
        // Warm up both plugins (compiled artefacts, pool slots, allocator).
        let _ = post(&client, &format!("{base}/amp/WO-0"), &body).await;
        let _ = post(&client, &format!("{base}/workorders/WARM/followup"), &body).await;

        // The host's throughput rises over its first seconds (allocator, caches, pool).
        let _ = good_load(&client, &base, &body, if quick { 1 } else { 3 }).await;
        reset_peak(pid);
        let before = rss(pid, "VmRSS:");
        let (mut cpu_alone, mut cpu_beside) = ((0.0, 0.0), (0.0, 0.0));
        let measure = |total: &mut (f64, f64), from: (f64, f64)| {
            total.0 += cpu(pid) - from.0;
            total.1 += cpu(std::process::id()) - from.1;
        };
        let now = || (cpu(pid), cpu(std::process::id()));
        let mut alone_runs = Vec::new();
        let mut beside_runs = Vec::new();
        let mut peak_alone = 0;
        let hostile_calls = Arc::new(AtomicU64::new(0));
        for round in 0..rounds {
            let from = now();
            alone_runs.push(good_load(&client, &base, &body, seconds).await);
            measure(&mut cpu_alone, from);
            if round == 0 {
                peak_alone = rss(pid, "VmHWM:");
                reset_peak(pid);
            }
            let from = now();
            beside_runs.push(beside(&client, &base, &body, seconds, &hostile_calls).await);
            measure(&mut cpu_beside, from);
        }
        let peak_beside = rss(pid, "VmHWM:");
        // The last beside phase needs an alone phase after it.
        alone_runs.push(good_load(&client, &base, &body, seconds).await);
        let ratios: Vec<f64> = beside_runs
            .iter()
            .enumerate()
            .map(|(i, b)| 2.0 * *b as f64 / (alone_runs[i] + alone_runs[i + 1]).max(1) as f64)
            .collect();
        let beside: u64 = beside_runs.iter().sum();
        let alone = alone_runs.windows(2).map(|w| (w[0] + w[1]) / 2).sum::<u64>();
        let bound = before + HOSTILE_CLIENTS as u64 * (PLUGIN_MEMORY + HOST_CEILING);

        let mib = |b: u64| b as f64 / 1048576.0;
        println!(
            "CPU seconds (host, load generator): alone {:.2}, {:.2}; beside {:.2}, {:.2}",
            cpu_alone.0, cpu_alone.1, cpu_beside.0, cpu_beside.1
        );
        let each: Vec<String> = ratios.iter().map(|r| format!("{:.1}", 100.0 * r)).collect();
        println!("kept in each round: {} %", each.join(", "));
        println!("amplifying plugin: {behaviour}, {HOSTILE_CLIENTS} concurrent calls");
        println!(
            "well-behaved alone:   {:>8.0} req/s ({} bookings: the mean of the phases around each beside phase, {GOOD_CLIENTS} clients, {rounds} x {seconds} s), host peak RSS {:.0} MiB",
            alone as f64 / (seconds * rounds as u64) as f64,
            alone,
            mib(peak_alone)
        );
        println!(
            "well-behaved beside:  {:>8.0} req/s ({} bookings; {} amplifying calls answered), host peak RSS {:.0} MiB",
            beside as f64 / (seconds * rounds as u64) as f64,
            beside,
            hostile_calls.load(Ordering::Relaxed),
            mib(peak_beside)
        );
        println!(
            "throughput kept: {:.1} % (goal >= 90 %); peak RSS {:.0} MiB against the bound {:.0} MiB ({:.0} MiB before + {HOSTILE_CLIENTS} x ({:.0} + {:.0}) MiB)",
            100.0 * beside as f64 / alone.max(1) as f64,
            mib(peak_beside),
            mib(bound),
            mib(before),
            mib(PLUGIN_MEMORY),
            mib(HOST_CEILING)
        );
        assert!(peak_beside <= bound, "the host held more than its bound");
    });
    let _ = host.kill();
    let _ = host.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bookings answered 200 by `GOOD_CLIENTS` clients in `seconds`, while `HOSTILE_CLIENTS`
/// call the amplifying plugin back to back (counted in `calls`).
async fn beside(
    client: &reqwest::Client,
    base: &str,
    body: &Arc<String>,
    seconds: u64,
    calls: &Arc<AtomicU64>,
) -> u64 {
    static CALL: AtomicU64 = AtomicU64::new(0);
    let stop = Arc::new(AtomicBool::new(false));
    let mut hostile = Vec::new();
    for _ in 0..HOSTILE_CLIENTS {
        let (client, base, body, stop, calls) = (
            client.clone(),
            base.to_string(),
            body.clone(),
            stop.clone(),
            calls.clone(),
        );
        hostile.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = CALL.fetch_add(1, Ordering::Relaxed);
                let _ = post(&client, &format!("{base}/amp/H{n}"), &body).await;
                calls.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let good = good_load(client, base, body, seconds).await;
    stop.store(true, Ordering::Relaxed);
    for h in hostile {
        let _ = h.await;
    }
    good
}

/// Bookings answered 200 by `GOOD_CLIENTS` clients in `seconds`.
async fn good_load(client: &reqwest::Client, base: &str, body: &Arc<String>, seconds: u64) -> u64 {
    // Every phase books new WorkOrderIDs: a repeated one is answered from the journal
    // without calling the plugin, which would measure replays instead of bookings.
    static PHASE: AtomicU64 = AtomicU64::new(0);
    let phase = PHASE.fetch_add(1, Ordering::Relaxed);
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut clients = Vec::new();
    for c in 0..GOOD_CLIENTS {
        let (client, base, body, done) =
            (client.clone(), base.to_string(), body.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < until {
                let url = format!("{base}/workorders/G{phase}-{c}-{n}/followup");
                if post(&client, &url, &body).await == 200 {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
        }));
    }
    for c in clients {
        let _ = c.await;
    }
    done.load(Ordering::Relaxed)
}

async fn post(client: &reqwest::Client, url: &str, body: &str) -> u16 {
    match client
        .post(url)
        .header("content-type", "application/json")
        .header("x-access-token", token())
        .body(body.to_string())
        .send()
        .await
    {
        Ok(response) => {
            let status = response.status().as_u16();
            let _ = response.bytes().await;
            status
        }
        Err(_) => 0,
    }
}

fn token() -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{exp}}}"#)),
        URL_SAFE_NO_PAD.encode("signature")
    )
}

fn example(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/spec/examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Resets the process's peak resident size to its current one (Linux 4.0 and later).
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn rss(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0)
        << 10
}

/// User and system CPU seconds of a process so far.
fn cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after its ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}
