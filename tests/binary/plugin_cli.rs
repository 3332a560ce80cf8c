//! `followup plugin list|deploy|rollback` against a running host's admin API.

use crate::support::{FOLLOWUP, Host, followup, run, scratch, workspace, write_config};
use followup_host::config::{Config, Limits, PluginManifest, RouteConfig, TokenConfig};
use followup_tests::configs::{self, example_booker};
use followup_tests::guests;
use std::process::Command;

const TOKEN_ENV: &str = "FOLLOWUP_ADMIN_TOKEN";
const TOKEN: &str = "cli-admin-token";

fn plugin_cli(admin: &str, args: &[&str]) -> (bool, String) {
    run(Command::new(FOLLOWUP)
        .arg("plugin")
        .args(args)
        .args(["--admin", admin])
        .env(TOKEN_ENV, TOKEN))
}

#[test]
fn the_plugin_commands_drive_a_running_host() {
    let dir = scratch("plugin-cli");
    let (booker, echo) = (guests::CAPACITY_BOOKER, guests::ECHO);
    let mut config = Config::default()
        .with_token(TokenConfig::off())
        .with_plugin("booker", PluginManifest::new(booker).with_kv())
        .with_route(RouteConfig::book_job("/workorders/{0}/followup", "booker"))
        .with_route(RouteConfig::appointment_search("/search", "booker"));
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    let config = write_config(&dir, &config.checked().unwrap());
    let host = Host::serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
        ],
        true,
        |command| {
            command.env(TOKEN_ENV, TOKEN);
        },
    );
    let admin = host.admin.clone().unwrap();

    let (ok, listed) = plugin_cli(&admin, &["list"]);
    assert!(ok, "{listed}");
    assert!(listed.contains("\"name\":\"booker\""), "{listed}");

    // The echo guest cannot serve the search route: refused, and the command fails.
    let (ok, refused) = plugin_cli(&admin, &["deploy", "booker", echo]);
    assert!(!ok, "{refused}");
    assert!(refused.contains("does not export"), "{refused}");

    // Deploying a component (here the same one again) answers its version.
    let (ok, deployed) = plugin_cli(&admin, &["deploy", "booker", booker]);
    assert!(ok, "{deployed}");
    assert!(deployed.contains("\"version\":\"sha256:"), "{deployed}");

    let (ok, missing) = plugin_cli(&admin, &["rollback", "booker", "sha256:0123456789ab"]);
    assert!(!ok, "{missing}");
    assert!(missing.contains("404"), "{missing}");

    // Without the token the CLI refuses before calling.
    let (ok, text) = run(Command::new(FOLLOWUP)
        .args(["plugin", "list", "--admin", &admin])
        .env_remove(TOKEN_ENV));
    assert!(!ok, "{text}");
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `followup plugin ARGS…` without a host.
fn local(args: &[&str]) -> (bool, String) {
    let mut all = vec!["plugin"];
    all.extend_from_slice(args);
    followup(&std::env::temp_dir(), &all)
}

fn example(name: &str) -> String {
    workspace()
        .join("../shared/spec/examples")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn check_describes_a_component_and_what_it_asks_for() {
    let booker = guests::CAPACITY_BOOKER;
    let (ok, text) = local(&["check", booker]);
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
    let dir = scratch("check");
    let config = write_config(
        &dir,
        &Config::default().with_plugin("booker", PluginManifest::new(booker)),
    );
    let (ok, text) = local(&["check", booker, "--config", config.to_str().unwrap()]);
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
    let (booker, hostile) = (guests::CAPACITY_BOOKER, guests::HOSTILE);
    let dir = scratch("run-test");
    let config = Config::default()
        .with_plugin("booker", example_booker())
        .with_plugin(
            "looper",
            configs::hostile(
                "loop",
                Limits {
                    timeout_ms: 100,
                    ..Limits::default()
                },
            ),
        )
        .with_plugin(
            "bomb",
            configs::hostile(
                "memory-bomb",
                Limits {
                    max_memory_bytes: 16 << 20,
                    ..Limits::default()
                },
            ),
        );
    let config = write_config(&dir, &config.checked().unwrap());
    let config = config.to_str().unwrap();
    let book_job = example("book-job.full.json");

    let (ok, text) = local(&[
        "run",
        booker,
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
            hostile,
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

#[tokio::test]
async fn replay_reads_the_tapes_of_a_host_that_keeps_serving() {
    let dir = scratch("plugin-replay");
    let booker = example_booker()
        .with_value("closed_weekdays", "7")
        .recorded(&[]);
    let mut config = Config::default()
        .with_token(TokenConfig::off())
        .with_plugin("booker", booker)
        .with_route(RouteConfig::book_job("/workorders/{0}/followup", "booker"));
    config.store.path = dir.join("followup.db");
    config.versions_dir = dir.join("versions");
    let config = write_config(&dir, &config.checked().unwrap());
    let host = Host::serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
        ],
        false,
        |_| {},
    );
    // Saturday 2024-06-22 at 09:00 local (UTC−4), then the Tuesday after, both open.
    let client = reqwest::Client::new();
    for (wo, day) in [("WO-SAT", 22), ("WO-TUE", 25)] {
        let body = std::fs::read_to_string(example("book-job.minimal.json"))
            .unwrap()
            .replace("2024-06-18T13:00", &format!("2024-06-{day}T13:00"))
            .replace("2024-06-18T17:00", &format!("2024-06-{day}T15:00"));
        let answer = client
            .post(format!("{}/workorders/{wo}/followup", host.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    }
    let replay = |candidate: &str, extra: &[&str]| {
        let mut args = vec![
            "replay",
            candidate,
            "--plugin",
            "booker",
            "--config",
            config.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        local(&args)
    };
    // While the host serves (and holds the store's lock): the variant changes Saturday's.
    let (ok, text) = replay(guests::BOOKER_VARIANT, &["--json"]);
    assert!(!ok, "{text}");
    let json_end = text.rfind('}').unwrap() + 1;
    let report: serde_json::Value = serde_json::from_str(&text[..json_end]).unwrap();
    assert_eq!(report["summary"]["total"], 2);
    assert_eq!(report["summary"]["differs"], 1);
    assert_eq!(report["bookings"][0]["work_order_id"], "WO-SAT");
    assert_eq!(report["bookings"][0]["outcome"], "differs");
    assert_eq!(report["bookings"][1]["outcome"], "same");
    assert!(text.contains("1 of 2 bookings differ or failed"), "{text}");
    // Allowed one difference, the same replay passes; the example itself changes nothing.
    let (ok, text) = replay(guests::BOOKER_VARIANT, &["--max-diff", "1"]);
    assert!(ok, "{text}");
    assert!(text.contains("1 differ"), "{text}");
    let (ok, text) = replay(guests::CAPACITY_BOOKER, &["--last", "1"]);
    assert!(ok, "{text}");
    assert!(text.contains("replayed 1 recorded bookings"), "{text}");
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
}
