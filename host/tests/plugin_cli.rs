//! `followup plugin list|deploy|rollback` against a running host's admin API.

mod common;

use common::{Kill, address_in, first_lines, guest};
use std::process::{Command, Stdio};

const TOKEN_ENV: &str = "FOLLOWUP_ADMIN_TOKEN";
const TOKEN: &str = "cli-admin-token";

fn plugin_cli(admin: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_followup"))
        .arg("plugin")
        .args(args)
        .args(["--admin", admin])
        .env(TOKEN_ENV, TOKEN)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_plugin_commands_drive_a_running_host() {
    let dir = std::env::temp_dir().join(format!("followup-plugin-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let booker = guest("capacity-booker", "capacity_booker");
    let echo = guest("echo-guest", "echo_guest");
    let config = dir.join("followup.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[token]\nmode = \"off\"\n\
             [plugins.booker]\npath = {booker:?}\nkv = true\n\
             [[routes]]\npath = \"/workorders/{{0}}/followup\"\nkind = \"book-job\"\nplugin = \"booker\"\n\
             [[routes]]\npath = \"/search\"\nkind = \"appointment-search\"\nplugin = \"booker\"\n"
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_followup"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env(TOKEN_ENV, TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Kill(child);
    let lines = first_lines(&mut child, 2);
    let admin = format!(
        "http://{}",
        address_in(&lines[1], "followup admin API on http://")
    );

    let (ok, listed) = plugin_cli(&admin, &["list"]);
    assert!(ok, "{listed}");
    assert!(listed.contains("\"name\":\"booker\""), "{listed}");

    // The echo guest cannot serve the search route: refused, and the command fails.
    let (ok, refused) = plugin_cli(&admin, &["deploy", "booker", echo.to_str().unwrap()]);
    assert!(!ok, "{refused}");
    assert!(refused.contains("does not export"), "{refused}");

    // Deploying a component (here the same one again) answers its version.
    let (ok, deployed) = plugin_cli(&admin, &["deploy", "booker", booker.to_str().unwrap()]);
    assert!(ok, "{deployed}");
    assert!(deployed.contains("\"version\":\"sha256:"), "{deployed}");

    let (ok, missing) = plugin_cli(&admin, &["rollback", "booker", "sha256:0123456789ab"]);
    assert!(!ok, "{missing}");
    assert!(missing.contains("404"), "{missing}");

    // Without the token the CLI refuses before calling.
    let out = Command::new(env!("CARGO_BIN_EXE_followup"))
        .args(["plugin", "list", "--admin", &admin])
        .env_remove(TOKEN_ENV)
        .output()
        .unwrap();
    assert!(!out.status.success());
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `followup plugin ARGS…` without a host.
fn local(args: &[&str]) -> (bool, String) {
    let mut all = vec!["plugin"];
    all.extend_from_slice(args);
    common::followup(&std::env::temp_dir(), &all)
}

fn example(name: &str) -> String {
    common::workspace()
        .join("../shared/spec/examples")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn check_describes_a_component_and_what_it_asks_for() {
    let booker = guest("capacity-booker", "capacity_booker");
    let (ok, text) = local(&["check", booker.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(
        text.contains("servicemobility:booking/followup (book): serves book-job routes"),
        "{text}"
    );
    assert!(
        text.contains("servicemobility:booking/appointments (search)"),
        "{text}"
    );
    assert!(text.contains("servicemobility:booking@0.1.0"), "{text}");
    assert!(
        text.contains("the key-value store: needs kv = true"),
        "{text}"
    );
    assert!(
        text.contains("verdict    loads as plugin capacity-booker when granted kv = true"),
        "{text}"
    );

    // Judged by a config that does not grant the store: refused, with the reason.
    let dir = std::env::temp_dir().join(format!("followup-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("host.toml");
    std::fs::write(&config, format!("[plugins.booker]\npath = {booker:?}\n")).unwrap();
    let (ok, text) = local(&[
        "check",
        booker.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("refused") && text.contains("kv = true"),
        "{text}"
    );

    let garbage = dir.join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm").unwrap();
    let (ok, text) = local(&["check", garbage.to_str().unwrap()]);
    assert!(!ok, "{text}");
    assert!(text.contains("not a WebAssembly component"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_answers_through_the_production_path_and_reports_limits_hit() {
    let booker = guest("capacity-booker", "capacity_booker");
    let hostile = guest("hostile-guest", "hostile_guest");
    let dir = std::env::temp_dir().join(format!("followup-run-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("host.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins.booker]\npath = {booker:?}\nkv = true\n[plugins.booker.config]\n\
             now = \"2024-06-17T12:00:00Z\"\nutc_offset_minutes = \"-240\"\n\
             [plugins.looper]\npath = {hostile:?}\ntimeout_ms = 100\n\
             [plugins.looper.config]\nbehaviour = \"loop\"\n\
             [plugins.bomb]\npath = {hostile:?}\nmax_memory_bytes = 16777216\n\
             [plugins.bomb.config]\nbehaviour = \"memory-bomb\"\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let book_job = example("book-job.full.json");

    let (ok, text) = local(&[
        "run",
        booker.to_str().unwrap(),
        "--config",
        config,
        "--plugin",
        "booker",
        "--book-job",
        &book_job,
        "--search",
        &example("appointment-search.request.json"),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("book /run/WO-RUN-1 → 200"), "{text}");
    assert!(text.contains("\"OrderNum\": \"FU-00000001\""), "{text}");
    assert!(text.contains("search /run-search → 200"), "{text}");
    for field in [
        "wall time",
        "fuel used",
        "peak memory",
        "log",
        "log entries",
        "resources",
        "kv read",
        "kv written",
        "response",
        "host calls",
    ] {
        assert!(text.contains(&format!("  {field}")), "{field}: {text}");
    }
    assert!(text.contains("kv 1"), "{text}");
    // Every budget a call is charged with shows its headroom.
    assert!(text.contains("of max_log_entries 1000"), "{text}");
    assert!(text.contains("of max_host_resources 256"), "{text}");
    assert!(
        text.contains("lifted from the plugin: at most 4194304 bytes"),
        "{text}"
    );

    // The same error types the server answers.
    for (plugin, kind, warned) in [
        ("looper", "plugin-timeout", "wall time at"),
        ("bomb", "plugin-memory-limit", "peak memory at"),
    ] {
        let (ok, text) = local(&[
            "run",
            hostile.to_str().unwrap(),
            "--config",
            config,
            "--plugin",
            plugin,
            "--book-job",
            &book_job,
        ]);
        assert!(!ok, "{text}");
        assert!(
            text.contains(&format!("\"type\": \"{kind}\"")),
            "{plugin}: {text}"
        );
        assert!(text.contains("  failed"), "{plugin}: {text}");
        assert!(
            text.contains(&format!("warning: {warned}")),
            "{plugin}: {text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
