//! `followup plugin new` → a project that builds, passes its tests, passes `plugin check`
//! and answers 200 through `plugin run`, per language.

mod common;

use common::{followup, workspace};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn cargo(dir: &Path, args: &[&str]) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
        .join("scaffold");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(dir)
        .args(args)
        // Shared between runs so that a second run only builds the plugin itself.
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .unwrap();
    assert!(status.success(), "cargo {args:?} in {}", dir.display());
}

#[test]
fn a_new_rust_plugin_builds_tests_checks_and_runs() {
    let parent = std::env::temp_dir().join(format!("followup-new-rust-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&parent);
    std::fs::create_dir_all(&parent).unwrap();
    let started = Instant::now();
    let (ok, text) = followup(&parent, &["plugin", "new", "demo-rules", "--lang", "rust"]);
    assert!(ok, "{text}");
    let project = parent.join("demo-rules");
    cargo(&project, &["test", "--release"]);
    cargo(
        &project,
        &["build", "--release", "--target", "wasm32-wasip2"],
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
        .join("scaffold/wasm32-wasip2/release/demo_rules.wasm");
    let wasm = target.to_str().unwrap();
    let (ok, text) = followup(
        &project,
        &["plugin", "check", wasm, "--config", "host.toml"],
    );
    assert!(ok, "{text}");
    assert!(text.contains("serves book-job routes"), "{text}");
    let (ok, text) = followup(
        &project,
        &[
            "plugin",
            "run",
            wasm,
            "--config",
            "host.toml",
            "--book-job",
            "samples/book-job.json",
        ],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("→ 200") && text.contains("\"OrderNum\": \"FU-"),
        "{text}"
    );
    println!(
        "rust: plugin new → passing plugin run in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&parent);
}
