//! `verify` token mode end to end, through the real binary: every malformed, forged,
//! expired or misaddressed token is 401 "Invalid Logon" and never reaches the plugin; a
//! valid token (minted by `followup token`) reaches it with its claims.

mod common;

use common::{Kill, b64, guest, listening_address, now, post, workspace};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use std::process::{Command, Stdio};

const SECRET_ENV: &str = "FOLLOWUP_TEST_JWT_SECRET";
const SECRET: &str = "a-shared-secret-of-reasonable-length";

fn sign(claims: &Value, secret: &str, alg: Algorithm) -> String {
    encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
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

#[test]
fn verify_mode_refuses_every_bad_token_before_the_plugin_runs() {
    let dir = std::env::temp_dir().join(format!("followup-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("followup.toml");
    std::fs::write(
        &config,
        format!(
            "[token]\nmode = \"verify\"\nsecret_env = \"{SECRET_ENV}\"\nissuer = \"servicemobility\"\n\
             audience = \"followup\"\nleeway_seconds = 5\n\
             [plugins.echo]\npath = {:?}\n\
             [[routes]]\npath = \"/echo/{{0}}\"\nkind = \"book-job\"\nplugin = \"echo\"\n",
            guest("echo-guest", "echo_guest")
        ),
    )
    .unwrap();
    let log = dir.join("stderr.log");
    let child = Command::new(env!("CARGO_BIN_EXE_followup"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env(SECRET_ENV, SECRET)
        .env("RUST_LOG", "info")
        // The admin API stays off (and off its default port) in these tests.
        .env_remove("FOLLOWUP_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start followup");
    let mut child = Kill(child);
    let addr = listening_address(&mut child);
    let body =
        std::fs::read_to_string(workspace().join("../shared/spec/examples/book-job.minimal.json"))
            .unwrap();

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
        ("HS512", sign(&claims(json!({})), SECRET, Algorithm::HS512)),
        (
            "wrong secret",
            sign(&claims(json!({})), "another-secret", Algorithm::HS256),
        ),
        (
            "expired",
            sign(
                &claims(json!({"exp": now() - 600})),
                SECRET,
                Algorithm::HS256,
            ),
        ),
        (
            "not yet valid",
            sign(
                &claims(json!({"nbf": now() + 600})),
                SECRET,
                Algorithm::HS256,
            ),
        ),
        (
            "wrong iss",
            sign(
                &claims(json!({"iss": "someone-else"})),
                SECRET,
                Algorithm::HS256,
            ),
        ),
        (
            "wrong aud",
            sign(
                &claims(json!({"aud": "another-api"})),
                SECRET,
                Algorithm::HS256,
            ),
        ),
        (
            "oversized",
            sign(
                &claims(json!({"pad": "x".repeat(10_000)})),
                SECRET,
                Algorithm::HS256,
            ),
        ),
    ];
    let (status, answer) = post_without_token(&addr, &body);
    assert_eq!(status, 401, "missing: {answer}");
    for (name, token) in &cases {
        let (status, answer) = post(&addr, "/echo/WO-1", &body, token);
        assert_eq!(status, 401, "{name}: {answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["type"], "invalid-logon", "{name}");
        assert_eq!(answer["title"], "Invalid Logon", "{name}");
        assert!(!answer["detail"].as_str().unwrap().contains(token.as_str()) || token.is_empty());
    }

    // A token minted by the CLI with the same secret is accepted, and its claims reach the
    // plugin.
    let minted = Command::new(env!("CARGO_BIN_EXE_followup"))
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
        .output()
        .unwrap();
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_string();
    let (status, answer) = post(&addr, "/echo/WO-1", &body, &token);
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    let claims_line = answer["OrderedParts"][0]["Parts"][4].as_str().unwrap();
    let seen: Value = serde_json::from_str(claims_line.strip_prefix("claims=").unwrap()).unwrap();
    assert_eq!(seen["name"], "R Morales");
    assert_eq!(seen["iss"], "servicemobility");

    drop(child);
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(log.matches("echo: booking received").count(), 1, "{log}");
    assert!(!log.contains(SECRET), "the secret reached the log");
    let _ = std::fs::remove_dir_all(&dir);
}

fn post_without_token(addr: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /echo/WO-1 HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    (response[9..12].parse().unwrap(), response)
}
