//! Per-request cost of the plugin path against the same rules compiled natively.
//!
//! Run with `cargo bench -p followup-tests --bench plugin_path` (unset RUST_BACKTRACE for
//! figures comparable with other runs). Both sides do the same work on the contract's full
//! Book Job example: parse the JSON, map it to the typed records, book, map the answer back
//! and serialise it. The plugin side adds what isolation costs: a fresh `Store` and
//! instance from the pooling allocator, the call across the component boundary, and the
//! drop.

use followup_host::contract::{self, types as host};
use followup_host::plugin::loader;
use followup_host::plugin::manifest::PluginManifest;
use followup_host::runtime::sandbox::RuntimeConfig;
use followup_host::runtime::{PluginRuntime, Services};
use followup_host::store::SharedStore;
use followup_host::store::kv::KvSession;
use followup_host::store::sqlite::SqliteStore;
use followup_tests::guests;
use std::sync::Arc;
use std::time::Instant;

const WARMUP: usize = 1_000;
const RUNS: usize = 20_000;

fn report(name: &str, mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    println!(
        "{name:<44} median {:>7.2} µs   p90 {:>7.2} µs   p99 {:>7.2} µs   (n = {})",
        at(0.5),
        at(0.9),
        at(0.99),
        samples.len()
    );
    at(0.5)
}

fn context() -> (host::RequestContext, followup_sdk::RequestContext) {
    let key = "3f1c0a9e".repeat(8);
    (
        host::RequestContext {
            work_order_id: Some("WO-2024-118734".into()),
            route: "followup".into(),
            request_id: "bench".into(),
            idempotency_key: key.clone(),
            claims: None,
        },
        followup_sdk::RequestContext {
            work_order_id: Some("WO-2024-118734".into()),
            route: "followup".into(),
            request_id: "bench".into(),
            idempotency_key: key,
            claims: None,
        },
    )
}

fn main() {
    let body = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/spec/examples/book-job.full.json"),
    )
    .expect("example payload");
    let (host_ctx, sdk_ctx) = context();

    // Native: the capacity-booker rules compiled for the host.
    let config = [
        ("now", "2024-06-17T12:00:00Z"),
        ("utc_offset_minutes", "-240"),
    ];
    let get = |k: &str| {
        config
            .iter()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.to_string())
    };
    // Each side starts from an empty store, so their first answers are equal.
    followup_sdk::kv::reset();
    let native = || {
        let text = std::str::from_utf8(&body).unwrap();
        let job = followup_sdk::json::decode_text::<followup_sdk::BookJob>(text).unwrap();
        let rules = capacity_booker::Rules::from_config(get, followup_sdk::time::Timestamp(0));
        let answer = rules.book(&sdk_ctx, &job).unwrap();
        let json = followup_sdk::json::encode::<followup_sdk::BookJobResponse>(&answer).unwrap();
        serde_json::to_vec(&json).unwrap()
    };
    let expected = native();

    // Plugin: the same rules as a component, a fresh instance per request.
    let runtime = PluginRuntime::new(&RuntimeConfig::default()).expect("runtime");
    let manifest: PluginManifest = toml::from_str(&format!(
        "path = {:?}\nkv = true\n[config]\nnow = \"2024-06-17T12:00:00Z\"\nutc_offset_minutes = \"-240\"\n",
        guests::CAPACITY_BOOKER
    ))
    .unwrap();
    let plugin = loader::load_file(&runtime, "capacity-booker", &manifest).expect("load");
    let store_dir =
        std::env::temp_dir().join(format!("followup-bench-store-{}", std::process::id()));
    let store: SharedStore =
        Arc::new(SqliteStore::open(&store_dir.join("bench.db")).expect("store"));
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let wasm = || async {
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let job = contract::decode::<host::BookJob>(&value).unwrap();
        // The store is read, never committed: every call sees the same sequence number.
        let services = Services {
            kv: Some(KvSession::new(store.clone(), "capacity-booker", true)),
        };
        let (answer, _) = runtime
            .book(&plugin, &host_ctx, &job, services)
            .await
            .unwrap();
        let answer = answer.unwrap();
        let json = contract::encode::<host::BookJobResponse>(&answer).unwrap();
        serde_json::to_vec(&json).unwrap()
    };
    assert_eq!(
        tokio.block_on(wasm()),
        expected,
        "both sides answer the same"
    );

    let mut native_samples = Vec::with_capacity(RUNS);
    for i in 0..WARMUP + RUNS {
        let start = Instant::now();
        std::hint::black_box(native());
        if i >= WARMUP {
            native_samples.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    let wasm_samples = tokio.block_on(async {
        let mut samples = Vec::with_capacity(RUNS);
        for i in 0..WARMUP + RUNS {
            let start = Instant::now();
            std::hint::black_box(wasm().await);
            if i >= WARMUP {
                samples.push(start.elapsed().as_secs_f64() * 1e6);
            }
        }
        samples
    });
    println!("book-job.full.json, {} bytes", body.len());
    let n = report("native rules (decode, book, encode)", native_samples);
    let w = report("plugin, fresh instance per request", wasm_samples);
    println!(
        "plugin overhead per request (median)            {:>7.2} µs",
        w - n
    );
}
