//! The HTTP edge: connections stay usable, or are announced closed, after an answer sent
//! before the body was read (pooling clients lose no request to a silent close), and what
//! is refused there for being ambiguous downstream: control characters in a WorkOrderID,
//! keys given twice in a body.

use crate::support::{Server, example, token};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BOOKING: &str = "/workorders/WO-EDGE-1/followup";

/// How long a test waits for an answer that should come at once.
const PROMPT: Duration = Duration::from_secs(5);

/// One answer as it came off the wire.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The answer says the connection ends with it.
    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("close"))
    }
}

/// A raw HTTP/1.1 connection: requests are written in the pieces a test chooses (headers
/// first, the body a few milliseconds later, as pooling clients do), answers read one by
/// one.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(server: &Server) -> Conn {
        let addr = server.base.trim_start_matches("http://");
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Writes the head, pauses, then writes the body.
    async fn send(&mut self, head: &str, body: &[u8]) -> io::Result<()> {
        self.write(head.as_bytes()).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.write(body).await
    }

    /// Reads one answer (a `100 Continue` is an answer here too).
    async fn answer(&mut self) -> io::Result<Raw> {
        tokio::time::timeout(PROMPT, self.read_answer())
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no answer")))
    }

    async fn read_answer(&mut self) -> io::Result<Raw> {
        let end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, head.clone()))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while self.buf.len() < end + length {
            self.fill().await?;
        }
        let body = String::from_utf8_lossy(&self.buf[end..end + length]).into_owned();
        self.buf.drain(..end + length);
        Ok(Raw {
            status,
            headers,
            body,
        })
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the host closed the connection",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Whether the host closes the connection (end of stream or reset) within `within`,
    /// sending nothing more.
    async fn closed_within(&mut self, within: Duration) -> bool {
        let mut chunk = [0u8; 8192];
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                Ok(Ok(0) | Err(_)) => return self.buf.is_empty(),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return false,
            }
        }
    }
}

/// The head of a POST (or `method`) to `path` with `headers` and a body of `length` bytes.
fn head(method: &str, path: &str, headers: &[(&str, &str)], length: usize) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: edge\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!("Content-Length: {length}\r\n\r\n"));
    text
}

/// A valid booking of the minimal example, written as head then body.
async fn book(conn: &mut Conn) -> io::Result<Raw> {
    let body = example("book-job.minimal.json");
    let token = token(600);
    let head = head(
        "POST",
        BOOKING,
        &[
            ("Content-Type", "application/json"),
            ("x-access-token", &token),
        ],
        body.len(),
    );
    conn.send(&head, body.as_bytes()).await?;
    conn.answer().await
}

#[tokio::test]
async fn a_request_refused_before_its_body_leaves_the_connection_ready_for_the_next() {
    let server = Server::with_config("status_mode = \"http\"").await;
    let body = example("book-job.minimal.json");
    let good = token(600);
    let json = ("Content-Type", "application/json");
    let many: Vec<(String, &str)> = (0..70).map(|i| (format!("x-pad-{i}"), "1")).collect();
    let mut too_many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    too_many.extend([json, ("x-access-token", &good)]);
    let cases = [
        (
            "a bad token",
            "POST",
            BOOKING,
            vec![json, ("x-access-token", "not-a-token")],
            401,
        ),
        (
            "a text/plain body",
            "POST",
            BOOKING,
            vec![("Content-Type", "text/plain"), ("x-access-token", &good)],
            415,
        ),
        (
            "no route",
            "POST",
            "/nowhere",
            vec![json, ("x-access-token", &good)],
            404,
        ),
        (
            "a wrong method",
            "PUT",
            BOOKING,
            vec![json, ("x-access-token", &good)],
            405,
        ),
        ("too many headers", "POST", BOOKING, too_many, 431),
    ];
    for (what, method, path, headers, status) in cases {
        let mut conn = Conn::open(&server).await;
        conn.send(&head(method, path, &headers, body.len()), body.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{what}: sending the refused request: {e}"));
        let refused = conn
            .answer()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(refused.status, status, "{what}: {}", refused.body);
        assert!(!refused.closes(), "{what}: {refused:?}");
        let next = book(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{what}: the next request on the connection: {e}"));
        assert_eq!(next.status, 200, "{what}: {}", next.body);
    }
}

#[tokio::test]
async fn a_body_that_cannot_be_drained_gets_connection_close_and_the_host_closes() {
    let server = Server::start().await;
    let good = token(600);
    let json = ("Content-Type", "application/json");

    // Announced larger than the drain bound: answered at once, without waiting for it.
    let mut conn = Conn::open(&server).await;
    let started = Instant::now();
    let announced = head(
        "POST",
        BOOKING,
        &[json, ("x-access-token", "not-a-token")],
        200_000,
    );
    conn.write(announced.as_bytes()).await.unwrap();
    let refused = conn.answer().await.expect("an answer before the body");
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused.closes(), "{refused:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(conn.closed_within(Duration::from_secs(3)).await);

    // Announced over max_body_bytes, with a valid token.
    let mut conn = Conn::open(&server).await;
    let too_large = head("POST", BOOKING, &[json, ("x-access-token", &good)], 2 << 20);
    conn.write(too_large.as_bytes()).await.unwrap();
    let refused = conn.answer().await.expect("an answer before the body");
    assert_eq!(refused.status, 500, "{}", refused.body);
    assert!(
        refused.body.contains("payload-too-large"),
        "{}",
        refused.body
    );
    assert!(refused.closes(), "{refused:?}");
    assert!(conn.closed_within(Duration::from_secs(3)).await);

    // Chunked, and more than the drain bound without an end.
    let mut conn = Conn::open(&server).await;
    let chunked = "POST /workorders/WO-EDGE-1/followup HTTP/1.1\r\nHost: edge\r\n\
                   Content-Type: application/json\r\nx-access-token: not-a-token\r\n\
                   Transfer-Encoding: chunked\r\n\r\n";
    let chunk = format!("{:x}\r\n{}\r\n", 100_000, "x".repeat(100_000));
    conn.send(chunked, chunk.as_bytes()).await.unwrap();
    let refused = conn.answer().await.expect("an answer");
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused.closes(), "{refused:?}");
    assert!(conn.closed_within(Duration::from_secs(3)).await);
}

#[tokio::test]
async fn a_small_body_that_never_comes_gets_connection_close_after_the_body_timeout() {
    let server = Server::with_config("[limits]\nbody_timeout_ms = 300").await;
    let mut conn = Conn::open(&server).await;
    let started = Instant::now();
    let announced = head(
        "POST",
        BOOKING,
        &[
            ("Content-Type", "application/json"),
            ("x-access-token", "not-a-token"),
        ],
        100,
    );
    conn.write(announced.as_bytes()).await.unwrap();
    let refused = conn.answer().await.expect("an answer");
    let took = started.elapsed();
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused.closes(), "{refused:?}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(conn.closed_within(Duration::from_secs(3)).await);
}

#[tokio::test]
async fn a_client_expecting_100_continue_gets_its_refusal_at_once() {
    let server = Server::start().await;
    let body = example("book-job.minimal.json");
    let expecting = |token: &str| {
        head(
            "POST",
            BOOKING,
            &[
                ("Content-Type", "application/json"),
                ("x-access-token", token),
                ("Expect", "100-continue"),
            ],
            body.len(),
        )
    };

    // The client waits for 100 Continue and gets the 401 instead, promptly.
    let mut conn = Conn::open(&server).await;
    let started = Instant::now();
    conn.write(expecting("not-a-token").as_bytes())
        .await
        .unwrap();
    let refused = conn.answer().await.expect("the refusal, not a hang");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(refused.status, 401, "{refused:?}");
    // Either the connection is announced closed and ends, or it carries the next request.
    if refused.closes() {
        assert!(conn.closed_within(Duration::from_secs(3)).await);
    } else {
        let next = book(&mut conn).await.expect("the next request");
        assert_eq!(next.status, 200, "{}", next.body);
    }

    // A valid request still gets its 100 Continue, then its booking.
    let mut conn = Conn::open(&server).await;
    conn.write(expecting(&token(600)).as_bytes()).await.unwrap();
    let go_on = conn.answer().await.expect("100 Continue");
    assert_eq!(go_on.status, 100, "{go_on:?}");
    conn.write(body.as_bytes()).await.unwrap();
    let booked = conn.answer().await.expect("the booking");
    assert_eq!(booked.status, 200, "{}", booked.body);
    assert!(!booked.closes());
}

/// A TCP relay in front of the host, as a network between a client and the host: it
/// passes each request's head on at once and the rest a few milliseconds later (the body
/// travels in later segments), and counts the connections clients open through it.
async fn relay(server: &Server) -> (String, Arc<AtomicUsize>) {
    let host = server.base.trim_start_matches("http://").to_string();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let opened = Arc::new(AtomicUsize::new(0));
    let count = opened.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            let Ok(upstream) = TcpStream::connect(&host).await else {
                continue;
            };
            let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
            let (mut from_client, mut to_client) = client.into_split();
            let (mut from_host, mut to_host) = upstream.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_host, &mut to_client).await;
                let _ = to_client.shutdown().await;
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let n = match from_client.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let data = &buf[..n];
                    let split = data
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map_or(n, |at| at + 4);
                    if to_host.write_all(&data[..split]).await.is_err() {
                        break;
                    }
                    if split < n {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        if to_host.write_all(&data[split..]).await.is_err() {
                            break;
                        }
                    }
                }
                let _ = to_host.shutdown().await;
            });
        }
    });
    (base, opened)
}

#[tokio::test]
async fn a_pooling_client_keeps_its_connection_through_a_hundred_early_refusals() {
    let server = Server::start().await;
    let (base, opened) = relay(&server).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let url = format!("{base}{BOOKING}");
    let booking = example("book-job.minimal.json");
    let padded = booking.replacen('{', &format!("{{\"Pad\":\"{}\",", "x".repeat(4000)), 1);
    let (mut lost, mut refused, mut booked) = (Vec::new(), 0, 0);
    for i in 0..100 {
        let early = if i % 2 == 0 {
            client
                .post(&url)
                .header("content-type", "application/json")
                .header("x-access-token", "not-a-token")
        } else {
            client
                .post(&url)
                .header("content-type", "text/plain")
                .header("x-access-token", token(600))
        };
        match early.body(padded.clone()).send().await {
            Ok(answer) => {
                let status = answer.status().as_u16();
                assert!([401, 500].contains(&status), "{i}: {status}");
                match answer.text().await {
                    Ok(_) => refused += 1,
                    Err(e) => lost.push(format!("refusal {i}: {e:?}")),
                }
            }
            Err(e) => lost.push(format!("refusal {i}: {e:?}")),
        }
        if i % 4 == 3 {
            let valid = client
                .post(&url)
                .header("content-type", "application/json")
                .header("x-access-token", token(600))
                .body(booking.clone());
            match valid.send().await {
                Ok(answer) => {
                    assert_eq!(answer.status(), 200, "{i}");
                    booked += 1;
                }
                Err(e) => lost.push(format!("booking after {i}: {e:?}")),
            }
        }
    }
    assert!(lost.is_empty(), "{} lost: {lost:#?}", lost.len());
    assert_eq!((refused, booked), (100, 25));
    // Every answer left the connection usable: the client never needed another.
    assert_eq!(opened.load(Ordering::Relaxed), 1, "connections opened");
}

#[tokio::test]
async fn work_order_ids_with_control_characters_are_refused() {
    let documented = Server::start().await;
    let http = Server::with_config("status_mode = \"http\"").await;
    let body = example("book-job.minimal.json");
    for id in [
        "A%00B",
        "A%0AB",
        "A%0D%0AX-Injected:%201",
        "A%1F",
        "A%7FB",
        "%C2%85",
    ] {
        let path = format!("/workorders/{id}/followup");
        for (server, status) in [(&documented, 500), (&http, 400)] {
            let answer = server.post(&path, &body).await;
            answer.assert_error(status, "invalid-request");
            assert_eq!(answer.invalid_paths(), ["$path.WorkOrderID"], "{id}");
            let param = &answer.json["invalidParams"][0];
            assert_eq!(param["name"], "WorkOrderID");
            assert!(
                param["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("control character")),
                "{id}: {}",
                answer.text
            );
        }
    }
    // Printable IDs, spaces and non-ASCII letters included, still book.
    for id in ["WO-2024-118734", "WO%20118", "%C3%89T%C3%89-7"] {
        let answer = documented
            .post(&format!("/workorders/{id}/followup"), &body)
            .await;
        assert_eq!(answer.status, 200, "{id}: {}", answer.text);
    }
}

#[tokio::test]
async fn a_key_given_twice_is_refused_with_the_path_of_the_duplicate() {
    let server = Server::start().await;
    let minimal = example("book-job.minimal.json");
    let cases = [
        (
            // The forged order number first, the real one after it.
            minimal.replacen('{', "{\"OriginalOrderNum\": \"WO-FORGED\",", 1),
            "OriginalOrderNum",
            "$.OriginalOrderNum",
        ),
        (
            minimal.replacen(
                "\"AccountNum\": \"ACC-0048213\"",
                "\"AccountNum\": \"ACC-0048213\", \"Name\": \"A\", \"Name\": \"B\"",
                1,
            ),
            "Name",
            "$.Account.Name",
        ),
        (
            minimal.replacen(
                '{',
                "{\"RequiredParts\": [{\"ProdNum\": \"P1\", \"Qty\": 1}, \
                 {\"ProdNum\": \"P2\", \"Qty\": 1, \"Qty\": 40}],",
                1,
            ),
            "Qty",
            "$.RequiredParts[1].Qty",
        ),
    ];
    for (body, name, path) in cases {
        let answer = server.post(BOOKING, &body).await;
        answer.assert_error(500, "invalid-request");
        assert_eq!(answer.invalid_paths(), [path], "{}", answer.text);
        assert_eq!(answer.json["invalidParams"][0]["name"], name);
    }
    // The same keys in different objects are no duplicates.
    let distinct = minimal.replacen(
        '{',
        "{\"RequiredParts\": [{\"ProdNum\": \"P1\", \"Qty\": 1}, {\"ProdNum\": \"P2\", \"Qty\": 2}],",
        1,
    );
    let answer = server.post(BOOKING, &distinct).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let answer = server.post(BOOKING, &minimal).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}
