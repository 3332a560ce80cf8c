//! Authentication routes through the real binary: users hashed by `followup hash-password`,
//! logons checked by the example plugin, tokens minted by the host that its own `verify`
//! mode accepts, failures throttled per username and per client address, and the password
//! in no log line, metric or stored byte.

use crate::support::{FOLLOWUP, Host, run, scratch, write_config};
use followup_host::config::{Config, RouteConfig, StatusMode, TokenConfig};
use followup_tests::configs::example_booker;
use followup_tests::http::{Answer, example, send};
use std::path::Path;
use std::process::{Command, Stdio};

const SECRET_ENV: &str = "FOLLOWUP_TEST_LOGON_SECRET";
const SECRET: &str = "a-signing-secret-of-thirty-two-bytes-or-more";
const ANN_PASSWORD: &str = "correct horse battery staple";
const BOB_PASSWORD: &str = "Tr0ub4dor&3-of-bob";
const WRONG: &str = "not-the-password-9f2c";

/// `followup hash-password USER`, the password from an environment variable or stdin.
fn hash_password(user: &str, password: &str, from_stdin: bool) -> String {
    let mut command = Command::new(FOLLOWUP);
    command.args(["hash-password", user]);
    if from_stdin {
        command.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = command.spawn().unwrap();
        use std::io::Write as _;
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    } else {
        command.args(["--password-env", "PW"]).env("PW", password);
        let (ok, out) = run(&mut command);
        assert!(ok, "{out}");
        out.trim().to_string()
    }
}

/// The example plugin with users ann and bob, its logon route, and its booking route
/// checking tokens in `verify` mode with the same secret.
fn config(dir: &Path, status_mode: StatusMode, logon: RouteConfig) -> Config {
    let ann = hash_password("ann", ANN_PASSWORD, false);
    let bob = hash_password("bob", BOB_PASSWORD, true);
    for entry in [&ann, &bob] {
        assert!(entry.contains(":$argon2id$v=19$"), "{entry}");
        assert!(!entry.contains(ANN_PASSWORD) && !entry.contains(BOB_PASSWORD));
    }
    let mut config = Config {
        status_mode,
        ..Config::default()
    }
    .with_plugin(
        "capacity-booker",
        example_booker().with_value("users", format!("{ann},{bob}")),
    )
    .with_route(logon)
    .with_route(
        RouteConfig::book_job("/workorders/{0}/followup", "capacity-booker")
            .with_token(TokenConfig::verify(SECRET_ENV)),
    );
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    config.store.path = dir.join("followup.db");
    config.versions_dir = dir.join("versions");
    config
}

fn serve(dir: &Path, config: &Config) -> Host {
    let file = write_config(dir, &config.clone().checked().unwrap());
    let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
    Host::serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--config",
            file.to_str().unwrap(),
        ],
        true,
        |command| {
            command
                .env(SECRET_ENV, SECRET)
                .env("FOLLOWUP_ADMIN_TOKEN", "admin-token-for-the-test")
                .env("RUST_LOG", "debug")
                .stderr(log);
        },
    )
}

async fn log_on(base: &str, body: String) -> Answer {
    send(
        reqwest::Client::new()
            .post(format!("{base}/auth/token"))
            .header("content-type", "application/json")
            .body(body),
    )
    .await
}

fn credentials(user: &str, password: &str) -> String {
    serde_json::json!({ "username": user, "password": password }).to_string()
}

#[tokio::test]
async fn a_minted_token_books_and_bad_logons_are_refused_without_leaking_the_password() {
    let dir = scratch("logon");
    let logon = RouteConfig::authentication("/auth/token", "capacity-booker", SECRET_ENV);
    let config = config(&dir, StatusMode::Documented, logon);
    let host = serve(&dir, &config);

    // The right password: a token the booking route's `verify` mode accepts.
    let answer = log_on(&host.base, credentials("ann", ANN_PASSWORD)).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let token = answer.json["token"].as_str().expect("a token").to_string();
    let claims: serde_json::Value = {
        use base64::Engine as _;
        let payload = token.split('.').nth(1).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    assert_eq!(claims["sub"], "ann");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );
    let booked = send(
        reqwest::Client::new()
            .post(format!("{}/workorders/WO-77/followup", host.base))
            .header("content-type", "application/json")
            .header("x-access-token", &token)
            .body(example("book-job.minimal.json")),
    )
    .await;
    assert_eq!(booked.status, 200, "{}", booked.text);
    // A token signed with another secret is not.
    followup_host::http::hs256::install();
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret-of-thirty-two-bytes-at-least"),
    )
    .unwrap();
    let refused = send(
        reqwest::Client::new()
            .post(format!("{}/workorders/WO-78/followup", host.base))
            .header("content-type", "application/json")
            .header("x-access-token", forged)
            .body(example("book-job.minimal.json")),
    )
    .await;
    refused.assert_error(401, "invalid-logon");

    // Wrong password and unknown user look the same: 401 Invalid Logon.
    for (user, password) in [("ann", WRONG), ("nobody", ANN_PASSWORD)] {
        let answer = log_on(&host.base, credentials(user, password)).await;
        answer.assert_error(401, "invalid-logon");
        assert_eq!(answer.json["title"], "Invalid Logon");
    }
    // Malformed requests: the error body names the key, never the value.
    for (body, path) in [
        (r#"{"username":"ann"}"#.to_string(), "$.password"),
        (format!(r#"{{"password":"{BOB_PASSWORD}"}}"#), "$.username"),
        (
            format!(r#"{{"username":"ann","password":["{BOB_PASSWORD}"]}}"#),
            "$.password",
        ),
        (
            format!(r#"{{"username":7,"password":"{BOB_PASSWORD}"}}"#),
            "$.username",
        ),
        (format!(r#""{BOB_PASSWORD}""#), "$"),
    ] {
        let answer = log_on(&host.base, body.clone()).await;
        answer.assert_error(500, "invalid-request");
        assert_eq!(answer.invalid_paths(), [path], "{body}");
        assert!(!answer.text.contains(BOB_PASSWORD), "{}", answer.text);
    }
    let oversized = credentials("ann", &format!("{ANN_PASSWORD}{}", "x".repeat(5000)));
    log_on(&host.base, oversized)
        .await
        .assert_error(500, "payload-too-large");

    // Twenty wrong passwords for bob: the first five are judged, the rest throttled with
    // the time to wait; ann is not throttled for bob's failures.
    let mut kinds = Vec::new();
    for _ in 0..20 {
        let answer = log_on(&host.base, credentials("bob", WRONG)).await;
        assert_eq!(answer.status, 401, "{}", answer.text);
        kinds.push(answer.error_type().to_string());
        if answer.error_type() == "logon-throttled" {
            let wait = answer.retry_after.expect("Retry-After");
            assert!((1..=300).contains(&wait), "{wait}");
        }
    }
    assert_eq!(kinds[..5], ["invalid-logon"; 5]);
    assert_eq!(kinds[5..], ["logon-throttled"; 15]);
    // Bob's right password is throttled too until the window moves on.
    log_on(&host.base, credentials("BOB", BOB_PASSWORD))
        .await
        .assert_error(401, "logon-throttled");
    let answer = log_on(&host.base, credentials("ann", ANN_PASSWORD)).await;
    assert_eq!(answer.status, 200, "{}", answer.text);

    // No password anywhere the host writes: its log, its metrics, its store.
    let metrics = send(
        reqwest::Client::new()
            .get(format!("{}/metrics", host.admin.as_ref().unwrap()))
            .bearer_auth("admin-token-for-the-test"),
    )
    .await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.text.contains("authentication") || metrics.text.contains("/auth/token"));
    drop(host);
    let mut written = metrics.text.into_bytes();
    written.extend(std::fs::read(dir.join("stderr.log")).unwrap());
    assert!(
        String::from_utf8_lossy(&written).contains("logon refused"),
        "the refusals are logged"
    );
    for entry in walk(&dir) {
        if entry.extension().is_some_and(|e| e == "toml") {
            continue;
        }
        written.extend(std::fs::read(&entry).unwrap());
    }
    for password in [ANN_PASSWORD, BOB_PASSWORD, WRONG] {
        assert!(
            !contains(&written, password.as_bytes()),
            "{password:?} was written somewhere"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn in_http_mode_a_client_over_its_limit_gets_429_whoever_it_claims_to_be() {
    let dir = scratch("logon-http");
    let logon = RouteConfig::authentication("/auth/token", "capacity-booker", SECRET_ENV)
        .throttled(100, 3, 60);
    let host = serve(&dir, &config(&dir, StatusMode::Http, logon));
    for user in ["u1", "u2", "u3"] {
        log_on(&host.base, credentials(user, WRONG))
            .await
            .assert_error(401, "invalid-logon");
    }
    // A fourth username from the same address: refused before the plugin is asked.
    let answer = log_on(&host.base, credentials("ann", ANN_PASSWORD)).await;
    answer.assert_error(429, "logon-throttled");
    assert!(answer.retry_after.is_some_and(|wait| wait <= 60));
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_logon_route_without_its_secret_stops_the_host_and_says_why() {
    let dir = scratch("logon-nosecret");
    let logon = RouteConfig::authentication("/auth/token", "capacity-booker", SECRET_ENV);
    let file = write_config(&dir, &config(&dir, StatusMode::Documented, logon));
    for secret in [None, Some("too-short")] {
        let mut command = Command::new(FOLLOWUP);
        command.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            file.to_str().unwrap(),
        ]);
        match secret {
            Some(s) => command.env(SECRET_ENV, s),
            None => command.env_remove(SECRET_ENV),
        };
        let (ok, out) = run(&mut command);
        assert!(!ok, "{out}");
        assert!(out.contains(SECRET_ENV), "{out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
