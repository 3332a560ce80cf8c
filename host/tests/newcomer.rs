//! A newcomer's first try: from the repository root, with nothing but the two release
//! builds, `target/release/followup serve --listen ADDR` serves the example plugin on
//! `POST /workorders/{0}/followup` and `POST /appointments/search`.
//!
//! The test lays out a directory like a freshly built checkout (the example plugin at
//! `target/wasm32-wasip2/release/capacity_booker.wasm`), runs the real binary there with
//! no config, and books the contract's examples over plain HTTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The example plugin, built from source into `target/guests` when not built yet.
fn example_plugin() -> PathBuf {
    let root = workspace();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("guests");
    let wasm = target.join("wasm32-wasip2/release/capacity_booker.wasm");
    if !wasm.exists() {
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(&root)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "-p",
                "capacity-booker",
            ])
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("run cargo");
        assert!(status.success(), "help: rustup target add wasm32-wasip2");
    }
    wasm
}

fn post(addr: &str, path: &str, body: &str, token: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         x-access-token: {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn b64(s: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

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
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start followup");
    let mut child = Kill(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("followup listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();

    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
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
