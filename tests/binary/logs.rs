//! `log_format = "json"` and `--log-format json`: every line the host logs, start-up
//! included, is one JSON object with the documented keys, and a request's lines carry its
//! request id.

use crate::support::{Host, scratch, write_config};
use followup_host::config::{Config, LogFormat, PluginManifest, RouteConfig, TokenConfig};
use followup_tests::guests;
use followup_tests::http::{example, send};
use serde_json::Value;
use std::path::Path;

/// The JSON objects of the log at `path`; fails on any line that is not one.
fn json_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
            for key in ["timestamp", "level", "target", "message"] {
                assert!(value[key].is_string(), "no {key}: {line}");
            }
            value
        })
        .collect();
    assert!(!lines.is_empty(), "nothing logged");
    lines
}

/// Starts the host on `config` with `args`, books once through the echo plugin and once
/// through the trapping one, each with a request id of its own; the log's lines.
async fn serve_and_log(label: &str, config: Config, args: &[&str]) -> Vec<Value> {
    let dir = scratch(label);
    let config = write_config(&dir, &config.checked().unwrap());
    let log = dir.join("stderr.log");
    let mut all = vec![
        "--listen",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let host = Host::serve(&all, false, |command| {
        command
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap());
    });
    let client = reqwest::Client::new();
    for (id, route) in [("req-json-ok", "echo"), ("req-json-bad", "trap")] {
        let request = client
            .post(format!("{}/{route}/WO-1", host.base))
            .header("content-type", "application/json")
            .header("x-request-id", id)
            .body(example("book-job.minimal.json"));
        send(request).await;
    }
    drop(host);
    let lines = json_lines(&log);
    let _ = std::fs::remove_dir_all(&dir);
    lines
}

fn echo_config() -> Config {
    Config::default()
        .with_token(TokenConfig::off())
        .with_plugin("echo", PluginManifest::new(guests::ECHO))
        .with_route(RouteConfig::book_job("/echo/{0}", "echo"))
        .with_plugin("trap", PluginManifest::new(guests::TRAP))
        .with_route(RouteConfig::book_job("/trap/{0}", "trap"))
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_request_id() {
    let config = Config {
        log_format: LogFormat::Json,
        ..echo_config()
    };
    let lines = serve_and_log("logs-json", config, &[]).await;
    // Start-up, before any request.
    let loaded = lines.iter().filter(|l| l["message"] == "plugin loaded");
    assert_eq!(loaded.count(), 2, "echo and trap: {lines:#?}");
    // The plugin's own log entry and the trap, each with its request's id as a key.
    let plugin_lines: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("booking received"))
        })
        .collect();
    assert_eq!(plugin_lines.len(), 1, "{lines:#?}");
    assert_eq!(plugin_lines[0]["request_id"], "req-json-ok", "{lines:#?}");
    let refused: Vec<&Value> = lines
        .iter()
        .filter(|l| l["request_id"] == "req-json-bad")
        .collect();
    assert!(!refused.is_empty(), "{lines:#?}");
    assert!(
        refused.iter().any(|l| l["kind"] == "plugin-trap"),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn the_command_line_option_overrides_the_config() {
    let lines = serve_and_log("logs-flag", echo_config(), &["--log-format", "json"]).await;
    assert!(
        lines.iter().any(|l| l["message"] == "plugin loaded"),
        "{lines:#?}"
    );
}
