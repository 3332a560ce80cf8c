//! `verify` token mode end to end, through the real binary: every malformed, forged,
//! expired or misaddressed token is 401 "Invalid Logon" and never reaches the plugin; a
//! valid token (minted by `followup token`) reaches it with its claims.

use crate::support::{FOLLOWUP, Host, run, scratch, write_config};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use followup_host::clock::unix_seconds as now;
use followup_host::config::{Config, PluginManifest, RouteConfig, TokenConfig};
use followup_tests::guests;
use followup_tests::http::{example, send};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use std::process::Command;

const SECRET_ENV: &str = "FOLLOWUP_TEST_JWT_SECRET";
const SECRET: &str = "a-shared-secret-of-reasonable-length";

/// A JWT signed here, by hand, with HMAC over SHA-256 (`HS256`) or SHA-512 (`HS512`):
/// the host's own signing code is what is under test.
fn sign(claims: &Value, secret: &str, alg: &str) -> String {
    let input = format!(
        "{}.{}",
        b64(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#)),
        b64(&claims.to_string())
    );
    let key = secret.as_bytes();
    let tag = match alg {
        "HS256" => mac(Hmac::<sha2::Sha256>::new_from_slice(key).unwrap(), &input),
        "HS512" => mac(Hmac::<sha2::Sha512>::new_from_slice(key).unwrap(), &input),
        other => panic!("no HMAC for {other}"),
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag))
}

fn mac(mut mac: impl Mac, input: &str) -> Vec<u8> {
    mac.update(input.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn claims(extra: Value) -> Value {
    let mut c = json!({
        "exp": now() + 600,
        "iat": now(),
        "iss": "servicemobility",
        "aud": "followup",
        "name": "R Morales",
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn b64(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text)
}

/// POSTs the body to the echo route for WO-1, with `token` when there is one; status and
/// body.
async fn post(base: &str, body: &str, token: Option<&str>) -> (u16, String) {
    post_for(base, "WO-1", body, token).await
}

/// [`post`] for another WorkOrderID: a booking of its own, not the replay of WO-1's.
async fn post_for(base: &str, work_order: &str, body: &str, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/echo/{work_order}"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.header("x-access-token", token);
    }
    let answer = send(request).await;
    (answer.status, answer.text)
}

#[tokio::test]
async fn verify_mode_refuses_every_bad_token_before_the_plugin_runs() {
    let dir = scratch("tokens");
    let config = Config::default()
        .with_token(TokenConfig {
            issuer: Some("servicemobility".into()),
            audience: Some("followup".into()),
            leeway_seconds: 5,
            ..TokenConfig::verify(SECRET_ENV)
        })
        .with_plugin("echo", PluginManifest::new(guests::ECHO))
        .with_route(RouteConfig::book_job("/echo/{0}", "echo"));
    let config = write_config(&dir, &config.checked().unwrap());
    let log = dir.join("stderr.log");
    let host = Host::serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
        ],
        false,
        |command| {
            command
                .env(SECRET_ENV, SECRET)
                .env("RUST_LOG", "info")
                .stderr(std::fs::File::create(&log).unwrap());
        },
    );
    let addr = host.base.as_str();
    let body = example("book-job.minimal.json");

    let good_header = b64(r#"{"alg":"HS256","typ":"JWT"}"#);
    let good_payload = b64(&claims(json!({})).to_string());
    let cases: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("two segments", format!("{good_header}.{good_payload}")),
        ("bad base64", format!("{good_header}.%%%.c2ln")),
        (
            "bad JSON",
            format!("{good_header}.{}.c2ln", b64("{not json")),
        ),
        (
            "alg none",
            format!("{}.{good_payload}.", b64(r#"{"alg":"none"}"#)),
        ),
        (
            "RS256",
            format!(
                "{}.{good_payload}.{}",
                b64(r#"{"alg":"RS256","typ":"JWT"}"#),
                b64("x")
            ),
        ),
        ("HS512", sign(&claims(json!({})), SECRET, "HS512")),
        (
            "wrong secret",
            sign(&claims(json!({})), "another-secret", "HS256"),
        ),
        (
            "expired",
            sign(&claims(json!({"exp": now() - 600})), SECRET, "HS256"),
        ),
        (
            "not yet valid",
            sign(&claims(json!({"nbf": now() + 600})), SECRET, "HS256"),
        ),
        (
            "wrong iss",
            sign(&claims(json!({"iss": "someone-else"})), SECRET, "HS256"),
        ),
        (
            "wrong aud",
            sign(&claims(json!({"aud": "another-api"})), SECRET, "HS256"),
        ),
        (
            "oversized",
            sign(&claims(json!({"pad": "x".repeat(10_000)})), SECRET, "HS256"),
        ),
    ];
    let (status, answer) = post(addr, &body, None).await;
    assert_eq!(status, 401, "missing: {answer}");
    // The same signing with every claim right is accepted: each case above is refused for
    // its own fault, not for how this test signs.
    let good = sign(&claims(json!({})), SECRET, "HS256");
    let (status, answer) = post_for(addr, "WO-2", &body, Some(&good)).await;
    assert_eq!(status, 200, "well signed: {answer}");
    for (name, token) in &cases {
        let (status, answer) = post(addr, &body, Some(token)).await;
        assert_eq!(status, 401, "{name}: {answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["type"], "invalid-logon", "{name}");
        assert_eq!(answer["title"], "Invalid Logon", "{name}");
        assert!(!answer["detail"].as_str().unwrap().contains(token.as_str()) || token.is_empty());
    }

    // A token minted by the CLI with the same secret is accepted, and its claims reach the
    // plugin.
    let (minted, token) = run(Command::new(FOLLOWUP)
        .args([
            "token",
            "--secret-env",
            SECRET_ENV,
            "--ttl",
            "10m",
            "--name",
            "R Morales",
            "--issuer",
            "servicemobility",
            "--audience",
            "followup",
        ])
        .env(SECRET_ENV, SECRET)
        .stderr(std::process::Stdio::null()));
    assert!(minted, "{token}");
    let token = token.trim().to_string();
    let (status, answer) = post(addr, &body, Some(&token)).await;
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    let claims_line = answer["OrderedParts"][0]["Parts"][4].as_str().unwrap();
    let seen: Value = serde_json::from_str(claims_line.strip_prefix("claims=").unwrap()).unwrap();
    assert_eq!(seen["name"], "R Morales");
    assert_eq!(seen["iss"], "servicemobility");

    drop(host);
    let log = std::fs::read_to_string(&log).unwrap();
    // The two good tokens (signed here, minted by the CLI), and no other, reached it.
    assert_eq!(log.matches("echo: booking received").count(), 2, "{log}");
    assert!(!log.contains(SECRET), "the secret reached the log");
    let _ = std::fs::remove_dir_all(&dir);
}
