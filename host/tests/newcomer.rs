//! A newcomer's first try: from the repository root, with nothing but the two release
//! builds, `target/release/followup serve --listen ADDR` serves the example plugin on
//! `POST /workorders/{0}/followup` and `POST /appointments/search`.
//!
//! The test lays out a directory like a freshly built checkout (the example plugin at
//! `target/wasm32-wasip2/release/capacity_booker.wasm`), runs the real binary there with
//! no config, and books the contract's examples over plain HTTP.

mod common;

use common::{Kill, b64, example_plugin, listening_address, now, post, workspace};
use std::process::{Command, Stdio};

#[test]
fn the_release_binary_serves_the_example_plugin_with_no_config() {
    let root = std::env::temp_dir().join(format!("followup-newcomer-{}", std::process::id()));
    let release = root.join("target/wasm32-wasip2/release");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::copy(example_plugin(), release.join("capacity_booker.wasm")).unwrap();

    let child = Command::new(env!("CARGO_BIN_EXE_followup"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(&root)
        .env("RUST_LOG", "warn")
        // The admin API stays off (and off its default port) in these tests.
        .env_remove("FOLLOWUP_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start followup");
    let mut child = Kill(child);
    let addr = listening_address(&mut child);
    let exp = now() + 3600;
    let token = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"HS256","typ":"JWT"}"#),
        b64(&format!(r#"{{"exp":{exp},"name":"newcomer"}}"#)),
        b64("sig")
    );
    let examples = workspace().join("../shared/spec/examples");
    let read = |name: &str| std::fs::read_to_string(examples.join(name)).unwrap();

    for name in ["book-job.full.json", "book-job.minimal.json"] {
        let (status, body) = post(
            &addr,
            "/workorders/WO-2024-118734/followup",
            &read(name),
            &token,
        );
        assert_eq!(status, 200, "{name}: {body}");
        assert!(body.starts_with("{\"OrderNum\":\"FU-"), "{body}");
    }
    let (status, body) = post(
        &addr,
        "/appointments/search",
        &read("appointment-search.request.json"),
        &token,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"TimeConstraints\":[{"), "{body}");

    // Documented status mode: a bad token is 401, anything else that fails is 500.
    let (status, body) = post(
        &addr,
        "/workorders/WO-1/followup",
        &read("book-job.minimal.json"),
        "x",
    );
    assert_eq!(status, 401, "{body}");
    let (status, body) = post(&addr, "/workorders/WO-1/followup", "[]", &token);
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("\"type\":\"invalid-request\""), "{body}");

    drop(child);
    let _ = std::fs::remove_dir_all(&root);
}
