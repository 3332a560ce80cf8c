//! A newcomer's first try: from the repository root, with nothing but the two release
//! builds, `target/release/followup serve --listen ADDR` serves the example plugin on
//! `POST /workorders/{0}/followup` and `POST /appointments/search`.
//!
//! The test lays out a directory like a freshly built checkout (the example plugin at
//! `target/wasm32-wasip2/release/capacity_booker.wasm`), runs the real binary there with
//! no config, and books the contract's examples over plain HTTP.

use crate::support::{Host, scratch};
use followup_tests::guests;
use followup_tests::http::{example, send, token};

/// POSTs `body` with `token`; the status and the body.
async fn post(base: &str, path: &str, body: String, token: &str) -> (u16, String) {
    let request = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .header("x-access-token", token)
        .body(body);
    let answer = send(request).await;
    (answer.status, answer.text)
}

#[tokio::test]
async fn the_release_binary_serves_the_example_plugin_with_no_config() {
    let root = scratch("newcomer");
    let release = root.join("target/wasm32-wasip2/release");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::copy(
        guests::CAPACITY_BOOKER,
        release.join("capacity_booker.wasm"),
    )
    .unwrap();

    let host = Host::serve(&["--listen", "127.0.0.1:0"], false, |command| {
        command.current_dir(&root).env("RUST_LOG", "warn");
    });
    let addr = host.base.as_str();
    let token = token(3600);
    let read = example;

    for name in ["book-job.full.json", "book-job.minimal.json"] {
        let (status, body) = post(
            addr,
            "/workorders/WO-2024-118734/followup",
            read(name),
            &token,
        )
        .await;
        assert_eq!(status, 200, "{name}: {body}");
        assert!(body.starts_with("{\"OrderNum\":\"FU-"), "{body}");
    }
    let (status, body) = post(
        addr,
        "/appointments/search",
        read("appointment-search.request.json"),
        &token,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"TimeConstraints\":[{"), "{body}");

    // Documented status mode: a bad token is 401, anything else that fails is 500.
    let (status, body) = post(
        addr,
        "/workorders/WO-1/followup",
        read("book-job.minimal.json"),
        "x",
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = post(addr, "/workorders/WO-1/followup", "[]".into(), &token).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("\"type\":\"invalid-request\""), "{body}");

    drop(host);
    let _ = std::fs::remove_dir_all(&root);
}
