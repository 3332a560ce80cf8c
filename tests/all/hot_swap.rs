//! Swapping the version behind a plugin name while requests are in flight: through the
//! API and through the watched file, the admission gate, rollback, restarts and shutdown.

use crate::admin::{Admin, TOKEN};
use crate::support::{
    Server, app, example, example_booker, runtime, served, shared_runtime_config, temp_dir,
    test_config_of,
};
use followup_host::App;
use followup_host::config::{Config, PluginManifest};
use followup_host::plugin::history::Trigger;
use followup_host::plugin::loader;
use followup_host::watch;
use followup_tests::{component, guests};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn read(path: &str) -> Arc<[u8]> {
    Arc::from(std::fs::read(path).unwrap())
}

/// `bytes` as another version of the same code.
fn rebuilt(bytes: &[u8], tag: &str) -> Arc<[u8]> {
    Arc::from(component::with_custom_section(
        bytes,
        "servicemobility:build",
        tag.as_bytes(),
    ))
}

/// The hostile guest's `slow` behaviour from `path` as plugin `name` (see [`served`]): it
/// sleeps `sleep_ms` and answers with `tag`.
fn slow(name: &str, path: impl Into<PathBuf>, sleep_ms: &str, tag: &str) -> Config {
    let manifest = PluginManifest::new(path)
        .with_value("behaviour", "slow")
        .with_value("sleep_ms", sleep_ms)
        .with_value("tag", tag);
    served(Config::default(), name, manifest)
}

/// Waits (at most 10 s) until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(10), "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_request_started_on_v1_finishes_on_v1_while_v2_serves_new_ones() {
    let server = Server::of(slow("swappable", guests::HOSTILE, "300", "v1")).await;
    let body = example("book-job.minimal.json");
    let v1 = server.app.plugin("swappable").unwrap().ident.clone();

    let slow = tokio::spawn(crate::support::send(
        server.request("/swappable/WO-1", &body),
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;

    let v2 = server
        .app
        .deploy("swappable", read(guests::ECHO), Trigger::Api)
        .await
        .unwrap();
    assert_ne!(v2, v1);

    // The old version drains: the slow request still holds it.
    let draining = server.app.plugins.draining();
    assert_eq!(draining.len(), 1, "{draining:?}");
    assert_eq!(draining[0].ident, *v1);
    assert_eq!(draining[0].in_flight, 1);

    // New requests are served by v2 at once.
    let fresh = server.post("/swappable/WO-2", &body).await;
    assert_eq!(fresh.status, 200, "{}", fresh.text);
    assert_eq!(fresh.plugin, v2.to_string());
    assert!(fresh.json["OrderNum"].as_str().unwrap().starts_with('{'));

    // The request started before the swap finishes on v1.
    let slow = slow.await.unwrap();
    assert_eq!(slow.status, 200, "{}", slow.text);
    assert_eq!(slow.json["OrderNum"], "SLOW-v1");
    assert_eq!(slow.plugin, v1.to_string());
    assert!(server.app.plugins.draining().is_empty());
    assert_eq!(server.app.metrics.swap_count("swappable", Trigger::Api), 1);
}

#[tokio::test]
async fn a_component_renamed_over_the_watched_file_serves_and_partial_writes_are_ignored() {
    let dir = temp_dir("watched");
    let path = dir.join("booker.wasm");
    std::fs::copy(guests::ECHO, &path).unwrap();
    let server = Server::of(slow("watched", &path, "0", "file")).await;
    let _watcher = watch::watch(server.app.clone(), Duration::from_millis(5)).unwrap();
    let body = example("book-job.minimal.json");
    let version = || server.app.plugin("watched").unwrap().ident.clone();
    let v1 = version();
    assert!(
        server.post("/watched/WO-1", &body).await.json["OrderNum"]
            .as_str()
            .unwrap()
            .starts_with('{')
    );

    // Publish v2 the atomic way: write beside, rename over.
    let staged = dir.join(".booker.wasm.tmp");
    std::fs::copy(guests::HOSTILE, &staged).unwrap();
    std::fs::rename(&staged, &path).unwrap();
    eventually("v2 serves", || version() != v1).await;
    let v2 = version();
    let answer = server.post("/watched/WO-2", &body).await;
    assert_eq!(answer.json["OrderNum"], "SLOW-file", "{}", answer.text);
    assert_eq!(server.app.metrics.swap_count("watched", Trigger::File), 1);

    // A file being written in place is not read before it is closed.
    let echo = std::fs::read(guests::ECHO).unwrap();
    let mut writing = std::fs::File::create(&path).unwrap();
    std::io::Write::write_all(&mut writing, &echo[..echo.len() / 2]).unwrap();
    std::io::Write::flush(&mut writing).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(version(), v2);
    assert_eq!(
        server.app.metrics.rejected_count("watched", Trigger::File),
        0
    );
    std::io::Write::write_all(&mut writing, &echo[echo.len() / 2..]).unwrap();
    drop(writing);
    eventually("the completed file serves", || version() == v1).await;

    // A damaged file is refused and counted; the serving version stays.
    std::fs::write(&staged, &echo[..echo.len() / 3]).unwrap();
    std::fs::rename(&staged, &path).unwrap();
    eventually("the damaged file is refused", || {
        server.app.metrics.rejected_count("watched", Trigger::File) == 1
    })
    .await;
    assert_eq!(version(), v1);
    assert_eq!(server.post("/watched/WO-3", &body).await.status, 200);

    // Other files in the directory are not candidates.
    std::fs::copy(guests::HOSTILE, dir.join("other.wasm")).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(version(), v1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A component that is well formed but does not validate: a function that returns nothing
/// where it promises an `i32`, stamped with this host's WIT version.
fn does_not_compile() -> Arc<[u8]> {
    let bytes = wat::parse_str("(component (core module (func (result i32))))").unwrap();
    Arc::from(component::with_custom_section(
        &bytes,
        loader::VERSION_SECTION,
        loader::HOST_WIT_VERSION.as_bytes(),
    ))
}

#[tokio::test]
async fn broken_candidates_are_refused_with_their_reason_and_v2_keeps_serving() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/spec/examples/book-job.minimal.json");
    let gated = example_booker().with_sample(sample);
    let server = Server::of(served(Config::default(), "gated", gated)).await;
    let app = &server.app;
    let body = example("book-job.minimal.json");

    let v2 = app
        .deploy(
            "gated",
            rebuilt(&read(guests::CAPACITY_BOOKER), "v2"),
            Trigger::Api,
        )
        .await
        .unwrap();
    let serves_v2 = || async {
        let answer = server.post("/gated/WO-1", &body).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.plugin, v2.to_string());
    };
    serves_v2().await;

    let cases: Vec<(&str, Arc<[u8]>, &str)> = vec![
        ("does not compile", does_not_compile(), "does not compile"),
        (
            "wrong WIT major",
            Arc::from(component::restamp(
                &read(guests::ECHO),
                loader::HOST_WIT_VERSION,
                "1.0.0",
            )),
            "built for WIT servicemobility:booking@1.0.0",
        ),
        (
            "fails a sample",
            read(guests::TRAP),
            "book-job.minimal.json on route /gated/{0} failed with plugin-trap",
        ),
        (
            "not a component",
            Arc::from(&b"not wasm"[..]),
            "not a WebAssembly component",
        ),
    ];
    for (i, (case, bytes, reason)) in cases.into_iter().enumerate() {
        let refused = app.deploy("gated", bytes, Trigger::Api).await.unwrap_err();
        assert!(refused.to_string().contains(reason), "{case}: {refused}");
        assert_eq!(app.plugin("gated").unwrap().ident, v2, "{case}");
        assert_eq!(
            app.metrics.rejected_count("gated", Trigger::Api),
            i as u64 + 1
        );
        serves_v2().await;
    }

    // A missing export: the example plugin's routes need search, which echo lacks.
    let refused = app
        .deploy("capacity-booker", read(guests::ECHO), Trigger::Api)
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("does not export servicemobility:booking/appointments"),
        "{refused}"
    );
    assert!(
        app.deploy("nobody", read(guests::ECHO), Trigger::Api)
            .await
            .is_err()
    );
    assert_eq!(app.metrics.swap_count("gated", Trigger::Api), 1);
}

#[tokio::test]
async fn rollback_serves_an_earlier_version_again() {
    let server = Server::start().await;
    let app = &server.app;
    let body = example("book-job.minimal.json");
    let v1 = app.plugin("echo").unwrap().ident.clone();
    let v2 = app
        .deploy("echo", read(guests::HOSTILE), Trigger::Api)
        .await
        .unwrap();
    // The hostile guest without a `behaviour` answers that it has none.
    server
        .post("/echo/WO-1", &body)
        .await
        .assert_error(500, "booking-failed");

    let back = app.rollback("echo", &v1.version).await.unwrap();
    assert_eq!(back, v1);
    let restored = server.post("/echo/WO-1", &body).await;
    assert_eq!(restored.status, 200, "{}", restored.text);
    assert_eq!(restored.plugin, v1.to_string());
    // ... and forward again.
    assert_eq!(app.rollback("echo", &v2.version).await.unwrap(), v2);
    assert!(app.rollback("echo", "sha256:000000000000").await.is_err());
    assert!(app.rollback("echo", "sha256:").await.is_err());
    assert_eq!(app.metrics.swap_count("echo", Trigger::Rollback), 2);
}

#[tokio::test]
async fn deployed_versions_and_rollback_targets_survive_a_restart() {
    let dir = temp_dir("restart");
    let file: PathBuf = dir.join("echo.wasm");
    std::fs::copy(guests::ECHO, &file).unwrap();
    let config = || {
        let mut c = test_config_of(served(
            Config::default(),
            "kept",
            PluginManifest::new(&file),
        ));
        c.versions_dir = dir.join("versions");
        c
    };
    let first = app(config()).await;
    let v1 = first.plugin("kept").unwrap().ident.clone();
    let v2 = first
        .deploy("kept", read(guests::HOSTILE), Trigger::Api)
        .await
        .unwrap();
    drop(first);

    // The config still names v1's file: the deployed v2 serves after the restart.
    let second = app(config()).await;
    assert_eq!(second.plugin("kept").unwrap().ident, v2);
    // v1 is still a rollback target.
    assert_eq!(second.rollback("kept", &v1.version).await.unwrap(), v1);
    drop(second);

    // Rolled back before the restart: v1 serves after it.
    let third = app(config()).await;
    assert_eq!(third.plugin("kept").unwrap().ident, v1);
    drop(third);

    // The file itself replaced while the host was down: the file wins.
    std::fs::copy(guests::TRAP, &file).unwrap();
    let fourth = app(config()).await;
    let v3 = fourth.plugin("kept").unwrap().ident.clone();
    assert_ne!(v3, v1);
    assert_ne!(v3, v2);
    assert_eq!(fourth.rollback("kept", &v2.version).await.unwrap(), v2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A plugin `fallback` served from `file`, with its versions kept in `dir/versions`.
fn fallback_config(dir: &Path, file: &Path) -> Config {
    let mut config = test_config_of(served(
        Config::default(),
        "fallback",
        PluginManifest::new(file),
    ));
    config.versions_dir = dir.join("versions");
    config
}

/// Starts the app of `config` on the shared runtime; the error is the host's refusal.
async fn try_app(mut config: Config) -> anyhow::Result<App> {
    config.runtime = shared_runtime_config();
    tokio::task::spawn_blocking(move || App::with_runtime(&config, runtime()))
        .await
        .unwrap()
}

/// The first third of the echo guest: what a copy cut short leaves.
fn truncated() -> Vec<u8> {
    let echo = std::fs::read(guests::ECHO).unwrap();
    echo[..echo.len() / 3].to_vec()
}

#[tokio::test]
async fn a_file_refused_by_the_watcher_does_not_stop_the_restart_which_serves_the_kept_version() {
    let dir = temp_dir("refused-restart");
    let file = dir.join("echo.wasm");
    std::fs::copy(guests::ECHO, &file).unwrap();
    let body = example("book-job.minimal.json");

    let first = Server::serving(app(fallback_config(&dir, &file)).await).await;
    let v1 = first.app.plugin("fallback").unwrap().ident.clone();
    let watcher = watch::watch(first.app.clone(), Duration::from_millis(5)).unwrap();
    let staged = dir.join(".echo.wasm.tmp");
    std::fs::write(&staged, truncated()).unwrap();
    std::fs::rename(&staged, &file).unwrap();
    eventually("the truncated file is refused", || {
        first.app.metrics.rejected_count("fallback", Trigger::File) == 1
    })
    .await;
    assert_eq!(
        first.post("/fallback/WO-1", &body).await.plugin,
        v1.to_string()
    );
    drop(watcher);
    drop(first);

    // The restart finds the refused file where the config points.
    let second = Server::serving(app(fallback_config(&dir, &file)).await).await;
    let answer = second.post("/fallback/WO-2", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.plugin, v1.to_string());

    // Ready (it serves), with the fallback and its reason named.
    let admin = Admin::start(&second).await;
    let (status, text) = admin.call(None, "/readyz", None).await;
    assert_eq!(status, 200, "{text}");
    let ready: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(ready["ready"], true, "{text}");
    let degraded = ready["degraded"].as_array().unwrap();
    assert_eq!(degraded.len(), 1, "{text}");
    assert_eq!(degraded[0]["plugin"], "fallback", "{text}");
    assert_eq!(degraded[0]["version"], v1.version.as_str(), "{text}");
    assert_eq!(
        degraded[0]["refused_file"],
        file.display().to_string(),
        "{text}"
    );
    let reason = degraded[0]["reason"].as_str().unwrap();
    assert!(reason.contains("not a WebAssembly component"), "{reason}");

    let listed = admin.listed("fallback").await;
    assert_eq!(listed["version"], v1.version.as_str(), "{listed}");
    assert_eq!(listed["degraded"]["reason"], reason, "{listed}");
    assert_eq!(
        listed["degraded"]["refused_file"],
        file.display().to_string()
    );
    assert!(admin.listed("echo").await["degraded"].is_null());
    let (_, metrics) = admin.call(None, "/metrics", Some(TOKEN)).await;
    let gauge = format!(
        "followup_plugin_degraded{{plugin=\"fallback\",version=\"{}\"}} 1",
        v1.version
    );
    assert!(metrics.lines().any(|l| l == gauge), "{metrics}");

    // A deliberate deploy clears the note.
    let v2 = second
        .app
        .deploy("fallback", rebuilt(&read(guests::ECHO), "v2"), Trigger::Api)
        .await
        .unwrap();
    assert_eq!(
        second.post("/fallback/WO-3", &body).await.plugin,
        v2.to_string()
    );
    let (_, text) = admin.call(None, "/readyz", None).await;
    let ready: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(ready["degraded"].as_array().unwrap().len(), 0, "{text}");
    assert!(admin.listed("fallback").await["degraded"].is_null());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_host_that_only_served_its_configured_file_still_serves_it_when_the_file_breaks() {
    let dir = temp_dir("refused-never-swapped");
    let file = dir.join("echo.wasm");
    std::fs::copy(guests::ECHO, &file).unwrap();
    let first = app(fallback_config(&dir, &file)).await;
    let v1 = first.plugin("fallback").unwrap().ident.clone();
    drop(first);

    // Broken while the host was down.
    std::fs::write(&file, truncated()).unwrap();
    let second = Server::serving(app(fallback_config(&dir, &file)).await).await;
    let answer = second
        .post("/fallback/WO-1", &example("book-job.minimal.json"))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.plugin, v1.to_string());
    let degraded = second.app.degraded();
    assert_eq!(degraded.len(), 1, "{degraded:?}");
    assert_eq!(degraded[0].version, v1.version);
    assert_eq!(degraded[0].file, file);
    assert!(
        degraded[0].reason.contains("not a WebAssembly component"),
        "{degraded:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn without_a_kept_version_that_loads_a_refused_file_stops_the_start_and_says_why() {
    let dir = temp_dir("refused-nothing-kept");
    let file = dir.join("echo.wasm");
    let refusal = |e: anyhow::Error| {
        let message = format!("{e:#}");
        assert!(message.contains(&file.display().to_string()), "{message}");
        assert!(message.contains("no kept version"), "{message}");
        message
    };

    // A fresh versions directory: nothing to fall back on.
    std::fs::write(&file, truncated()).unwrap();
    let err = try_app(fallback_config(&dir, &file)).await.unwrap_err();
    let message = refusal(err);
    assert!(message.contains("not a WebAssembly component"), "{message}");
    assert!(message.contains("none is kept"), "{message}");

    // A missing file is refused the same way.
    std::fs::remove_file(&file).unwrap();
    let message = refusal(try_app(fallback_config(&dir, &file)).await.unwrap_err());
    assert!(message.contains("cannot read"), "{message}");

    // The one kept version is damaged: it is not trusted either.
    std::fs::copy(guests::ECHO, &file).unwrap();
    let first = app(fallback_config(&dir, &file)).await;
    let hash = first.plugin("fallback").unwrap().hash.clone();
    drop(first);
    let kept = dir.join("versions/fallback").join(format!("{hash}.wasm"));
    std::fs::write(&kept, b"damaged").unwrap();
    std::fs::write(&file, truncated()).unwrap();
    let message = refusal(try_app(fallback_config(&dir, &file)).await.unwrap_err());
    assert!(message.contains("the one kept does not"), "{message}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_then_stops_accepting() {
    let app = Arc::new(app(test_config_of(slow("slow", guests::HOSTILE, "300", "last"))).await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(followup_host::run(listener, app, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let body = example("book-job.minimal.json");
    let slow = tokio::spawn(crate::support::send(
        client
            .post(format!("http://{addr}/slow/WO-1"))
            .header("content-type", "application/json")
            .header("x-access-token", crate::support::token(3600))
            .body(body),
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();

    let slow = slow.await.unwrap();
    assert_eq!(slow.status, 200, "{}", slow.text);
    assert_eq!(slow.json["OrderNum"], "SLOW-last");
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("run returns once the last request is answered")
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
