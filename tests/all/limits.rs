//! Input limits at their edges: just under each limit is served, just over is refused with
//! the error body, and slow clients are cut off.

use crate::support::{Server, example_json, send, token};
use serde_json::json;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const LIMITS: &str = "status_mode = \"http\"\nmax_body_bytes = 4096\n[limits]\nmax_headers = 12\n\
    max_header_bytes = 2048\nheader_timeout_ms = 300\nbody_timeout_ms = 300\nmax_json_depth = 8\n\
    max_json_string_bytes = 256\n";

/// The minimal booking padded with an unknown key to exactly `size` bytes.
fn body_of_size(size: usize) -> String {
    let mut doc = example_json("book-job.minimal.json");
    doc["Pad"] = json!("");
    let base = doc.to_string().len();
    let pad = size - base;
    // Keep each padding string under the string limit.
    let mut pads = Vec::new();
    let mut left = pad;
    let mut i = 0;
    while left > 0 {
        // Each extra key costs `,"PadN":""` on top of its text.
        let overhead = format!(",\"Pad{i}\":\"\"").len();
        let text = left.saturating_sub(overhead).min(200);
        if left < overhead {
            doc["Pad"] = json!("x".repeat(left));
            break;
        }
        pads.push((format!("Pad{i}"), "x".repeat(text)));
        left -= overhead + text;
        i += 1;
    }
    for (k, v) in pads {
        doc[k] = json!(v);
    }
    let text = doc.to_string();
    assert_eq!(text.len(), size, "padding arithmetic");
    text
}

#[tokio::test]
async fn body_size_limit_is_exact() {
    let server = Server::with_config(LIMITS).await;
    let ok = server
        .post("/workorders/WO-1/followup", &body_of_size(4096))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let over = server
        .post("/workorders/WO-1/followup", &body_of_size(4097))
        .await;
    over.assert_error(413, "payload-too-large");
}

/// Sends a request with exactly `headers` (name, value) and the body; the raw answer.
fn raw_post(addr: &str, headers: &[(String, String)], body: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let mut head = String::from("POST /workorders/WO-1/followup HTTP/1.1\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn header_count_and_size_limits_are_exact() {
    let server = Server::with_config(LIMITS).await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let body = example_json("book-job.minimal.json").to_string();
    let base = vec![
        ("host".to_string(), addr.clone()),
        ("content-type".to_string(), "application/json".to_string()),
        ("x-access-token".to_string(), token(600)),
        ("content-length".to_string(), body.len().to_string()),
        ("connection".to_string(), "close".to_string()),
    ];
    let bytes = |h: &[(String, String)]| h.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>();
    let run = move |headers: Vec<(String, String)>| {
        let (addr, body) = (addr.clone(), body.clone());
        tokio::task::spawn_blocking(move || raw_post(&addr, &headers, &body))
    };

    // 12 headers pass, 13 are refused.
    let count = |n: usize| {
        let mut h = base.clone();
        for i in 0..n - base.len() {
            h.push((format!("x-extra-{i}"), "v".into()));
        }
        h
    };
    let ok = run(count(12)).await.unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let over = run(count(13)).await.unwrap();
    assert!(over.starts_with("HTTP/1.1 431"), "{over}");
    assert!(over.contains("\"type\":\"headers-too-large\""), "{over}");

    // 2048 bytes of names and values pass, 2049 are refused.
    let sized = |total: usize| {
        let mut h = base.clone();
        let name = "x-pad".to_string();
        let value = "p".repeat(total - bytes(&base) - name.len());
        h.push((name, value));
        assert_eq!(bytes(&h), total);
        h
    };
    let ok = run(sized(2048)).await.unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let over = run(sized(2049)).await.unwrap();
    assert!(over.starts_with("HTTP/1.1 431"), "{over}");
}

#[tokio::test]
async fn json_depth_and_string_limits_are_exact() {
    let server = Server::with_config(LIMITS).await;
    let nested = |depth: usize| {
        let mut doc = example_json("book-job.minimal.json");
        // The body itself is level 1.
        let inner = format!("{}1{}", "[".repeat(depth - 1), "]".repeat(depth - 1));
        doc["Nest"] = serde_json::from_str(&inner).unwrap();
        doc.to_string()
    };
    let ok = server.post("/workorders/WO-1/followup", &nested(8)).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let deep = server.post("/workorders/WO-1/followup", &nested(9)).await;
    deep.assert_error(400, "invalid-request");
    assert!(
        deep.json["invalidParams"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("deeper than 8")
    );
    // At the path of the array one level too deep.
    assert_eq!(
        deep.json["invalidParams"][0]["path"],
        format!("$.Nest{}", "[0]".repeat(7))
    );

    let string = |len: usize| {
        let mut doc = example_json("book-job.minimal.json");
        doc["OriginalOrderNum"] = json!("9".repeat(len));
        doc.to_string()
    };
    let ok = server.post("/workorders/WO-1/followup", &string(256)).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let long = server.post("/workorders/WO-1/followup", &string(257)).await;
    long.assert_error(400, "invalid-request");
    let problem = &long.json["invalidParams"][0];
    assert_eq!(problem["path"], "$.OriginalOrderNum");
    assert!(
        problem["reason"]
            .as_str()
            .unwrap()
            .contains("257 bytes, longer than the 256 allowed"),
        "{problem}"
    );
}

#[tokio::test]
async fn token_length_limit_is_exact() {
    let body = example_json("book-job.minimal.json").to_string();
    let sized = |len: usize| {
        let mut t = token(600);
        // Padding the signature keeps the token well-formed in decode mode.
        while t.len() < len {
            t.push('A');
        }
        t
    };
    let roomy = Server::with_config("[limits]\nmax_header_bytes = 65536\n").await;
    let at = |t: String| {
        roomy
            .client
            .post(format!("{}/workorders/WO-1/followup", roomy.base))
            .header("content-type", "application/json")
            .header("x-access-token", t)
            .body(body.clone())
    };
    assert_eq!(send(at(sized(8192))).await.status, 200);
    let over = send(at(sized(8193))).await;
    over.assert_error(401, "invalid-logon");
    assert!(over.json["detail"].as_str().unwrap().contains("too long"));
}

#[tokio::test]
async fn a_slow_client_is_cut_off() {
    let server = Server::with_config(LIMITS).await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let started = Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // Half a request line, then nothing.
        stream
            .write_all(b"POST /workorders/WO-1/followup HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let mut buf = Vec::new();
        // The server closes the connection (read returns) once the header timeout passes.
        let _ = stream.read_to_end(&mut buf);
        buf
    })
    .await
    .unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the connection stayed open {took:?}"
    );
    let text = String::from_utf8_lossy(&closed);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );

    // A client that sends headers but stalls in the body gets the error body.
    let addr = server.base.trim_start_matches("http://").to_string();
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let head = format!(
            "POST /workorders/WO-1/followup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             x-access-token: {}\r\nContent-Length: 100\r\n\r\n{{\"Account\":",
            token(600)
        );
        stream.write_all(head.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let _ = stream.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"type\":\"request-timeout\""), "{answer}");
}
