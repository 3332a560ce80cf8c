//! Several host processes on one PostgreSQL database, as `docs/scale-out.md` runs them:
//! capacity counted exactly across hosts, a booking sent to all of them at once run once,
//! hosts killed while clients book, and the database restarted under load.

use crate::support::{Host, scratch, write_config};
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use followup_host::config::{
    Config, HttpGrant, Limits, PluginManifest, RouteConfig, StoreBackend, TokenConfig,
};
use followup_host::storage::postgres::local::LocalCluster;
use followup_tests::configs::example_booker;
use followup_tests::guests;
use followup_tests::http::{example, try_send};
use followup_tests::knob;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The variable the hosts read the connection string from.
const URL_ENV: &str = "FOLLOWUP_TEST_DATABASE_URL";

/// `config` for a host of the shared database: PostgreSQL from [`URL_ENV`], free ports
/// (API and admin API), directories relative to its config file, no file watcher.
fn on_postgres(mut config: Config) -> Config {
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    config.cache_dir = "cache".into();
    config.versions_dir = "versions".into();
    config.store.backend = StoreBackend::Postgres;
    config.store.url_env = URL_ENV.into();
    config.watch.enabled = false;
    config.checked().unwrap()
}

/// `n` hosts serving `config` on the database at `url`, each with its own directory and
/// its admin API on (token `t`).
fn hosts(label: &str, config: &Config, url: &str, n: usize) -> (Vec<Host>, Vec<PathBuf>) {
    let config = on_postgres(config.clone());
    let dirs: Vec<PathBuf> = (0..n)
        .map(|i| scratch(&format!("{label}-host{i}")))
        .collect();
    let hosts = dirs
        .iter()
        .map(|dir| admin_host(dir, &config, url))
        .collect();
    (hosts, dirs)
}

/// A host serving `config` (from `dir`) on the database at `url`.
fn admin_host(dir: &std::path::Path, config: &Config, url: &str) -> Host {
    let file = write_config(dir, config);
    Host::serve(&["--config", file.to_str().unwrap()], true, |c| {
        c.env(URL_ENV, url).env("FOLLOWUP_ADMIN_TOKEN", "t");
    })
}

/// Reads one row of the database at `url`.
async fn query_one(url: &str, sql: &str) -> tokio_postgres::Row {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client.query_one(sql, &[]).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hosts_count_capacity_exactly_across_them() {
    let cluster = LocalCluster::shared().unwrap();
    let url = cluster.database("capacity").unwrap();
    let config = Config::default()
        .with_token(TokenConfig::off())
        .with_plugin("booker", example_booker().with_value("daily_capacity", "3"))
        .with_route(RouteConfig::book_job("/workorders/{0}/followup", "booker").named("followup"));
    let (hosts, dirs) = hosts("capacity", &config, &url, 3);
    let body = example("book-job.minimal.json");
    let client = reqwest::Client::new();
    // 50 bookings of the same day and area at once, spread over the three hosts.
    let answers = futures_util::future::join_all((0..50).map(|n| {
        let request = client
            .post(format!(
                "{}/workorders/WO-{n}/followup",
                hosts[n % hosts.len()].base
            ))
            .header("content-type", "application/json")
            .body(body.clone());
        async move { try_send(request).await.unwrap() }
    }))
    .await;
    let booked: Vec<_> = answers.iter().filter(|a| a.status == 200).collect();
    let refused = answers
        .iter()
        .filter(|a| a.status == 500 && a.error_type() == "slot-unavailable")
        .count();
    let others: Vec<_> = answers
        .iter()
        .filter(|a| a.status != 200 && a.error_type() != "slot-unavailable")
        .map(|a| (a.status, a.text.clone()))
        .collect();
    assert!(others.is_empty(), "{others:?}");
    assert_eq!(booked.len(), 3, "capacity 3 across three hosts");
    assert_eq!(refused, 47);
    let mut numbers: Vec<&str> = booked
        .iter()
        .map(|a| a.json["OrderNum"].as_str().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, ["FU-00000001", "FU-00000002", "FU-00000003"]);
    let journaled: i64 = query_one(&url, "SELECT count(*) FROM journal").await.get(0);
    assert_eq!(journaled, 3);
    drop(hosts);
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A back end that counts the bookings it receives and answers each after `delay`.
async fn counting_back_end(delay: Duration) -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/bookings/{wo}",
            post(move |State(count): State<Arc<AtomicUsize>>| async move {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(delay).await;
                (
                    axum::http::StatusCode::CREATED,
                    format!(r#"{{"orderNumber":"ACME-{n}"}}"#),
                )
            }),
        )
        .with_state(count.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (origin, count)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_booking_sent_to_three_hosts_at_once_runs_once() {
    let cluster = LocalCluster::shared().unwrap();
    let url = cluster.database("once").unwrap();
    let (origin, received) = counting_back_end(Duration::from_millis(300)).await;
    let forwarder = PluginManifest::new(guests::REST_FORWARDER)
        .with_limits(Limits {
            timeout_ms: 3000,
            ..Limits::default()
        })
        .with_http(HttpGrant {
            timeout_ms: 2000,
            ..HttpGrant::allowing([origin.as_str()])
        })
        .with_value("base_url", &origin)
        .with_secret("api_key", "CARGO_PKG_NAME");
    let config = Config::default()
        .with_token(TokenConfig::off())
        .with_plugin("forwarder", forwarder)
        .with_plugin("booker", example_booker())
        .with_route(RouteConfig::book_job("/forward/{0}", "forwarder").named("forward"))
        .with_route(RouteConfig::book_job("/workorders/{0}/followup", "booker").named("followup"));
    let (hosts, dirs) = hosts("once", &config, &url, 3);
    let body = example("book-job.minimal.json");
    let client = reqwest::Client::new();
    for path in ["/forward/WO-1", "/workorders/WO-1/followup"] {
        let answers = futures_util::future::join_all((0..20).map(|i| {
            let request = client
                .post(format!("{}{path}", hosts[i % hosts.len()].base))
                .header("content-type", "application/json")
                .body(body.clone());
            async move { try_send(request).await.unwrap() }
        }))
        .await;
        let failed: Vec<_> = answers
            .iter()
            .filter(|a| a.status != 200)
            .map(|a| (a.status, a.text.clone()))
            .collect();
        assert!(failed.is_empty(), "{path}: {failed:?}");
        let mut numbers: Vec<&str> = answers
            .iter()
            .map(|a| a.json["OrderNum"].as_str().unwrap())
            .collect();
        numbers.dedup();
        assert_eq!(numbers.len(), 1, "{path}: one order number: {numbers:?}");
        assert_eq!(
            answers.iter().filter(|a| !a.replayed).count(),
            1,
            "{path}: one run, the rest answered from the journal"
        );
    }
    // The customer's system was called once.
    assert_eq!(received.load(Ordering::SeqCst), 1);
    let sequence: Vec<u8> = query_one(
        &url,
        "SELECT value FROM kv WHERE ns = 'booker' AND key = 'sequence/order'",
    )
    .await
    .get(0);
    assert_eq!(sequence, b"1", "the sequence advanced once");
    drop(hosts);
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// What happened to one booking (work order `WO-n`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// 200 with this order number.
    Booked(String),
    /// No answer: the host died with the request in flight, or was down.
    NoAnswer,
    /// Another answer: status, error type.
    Failed(u16, String),
}

async fn book(client: &reqwest::Client, base: &str, n: usize, body: &str) -> (Outcome, Duration) {
    let started = std::time::Instant::now();
    let request = client
        .post(format!("{base}/workorders/WO-{n}/followup"))
        .header("content-type", "application/json")
        .body(body.to_string());
    let outcome = match try_send(request).await {
        Ok(a) if a.status == 200 => {
            Outcome::Booked(a.json["OrderNum"].as_str().unwrap_or("").into())
        }
        Ok(a) => Outcome::Failed(a.status, a.error_type().to_string()),
        Err(_) => Outcome::NoAnswer,
    };
    (outcome, started.elapsed())
}

/// Checks the database against the answers: every booking answered 200 is journaled once
/// with the order number it was answered, order numbers are unique, and the sequence took
/// one number per record, with no gap. The number of records.
async fn journal_matches(url: &str, booked: &BTreeMap<usize, String>) -> usize {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows = client
        .query("SELECT key, response FROM journal", &[])
        .await
        .unwrap();
    let journal: BTreeMap<String, String> = rows
        .iter()
        .map(|r| {
            let response: Vec<u8> = r.get(1);
            let json: serde_json::Value = serde_json::from_slice(&response).unwrap_or_default();
            (
                r.get(0),
                json["OrderNum"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let parsed: serde_json::Value =
        serde_json::from_str(&example("book-job.minimal.json")).unwrap();
    let missing: Vec<_> = booked
        .iter()
        .filter(|(n, order)| {
            let key = followup_host::journal::idempotency_key(
                "followup",
                Some(&format!("WO-{n}")),
                &parsed,
            );
            journal.get(&key) != Some(*order)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "answered but not journaled: {missing:?}"
    );
    let numbers: BTreeSet<&String> = journal.values().collect();
    assert_eq!(numbers.len(), journal.len(), "an order number given twice");
    let sequence: Vec<u8> = client
        .query_one(
            "SELECT value FROM kv WHERE ns = 'booker' AND key = 'sequence/order'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let sequence: usize = String::from_utf8(sequence).unwrap().parse().unwrap();
    assert_eq!(
        sequence,
        journal.len(),
        "one number of the sequence per record"
    );
    let expected: BTreeSet<String> = (1..=sequence).map(|i| format!("FU-{i:08}")).collect();
    assert!(numbers.iter().all(|n| expected.contains(*n)), "gap-free");
    journal.len()
}

/// A booking's number, outcome, time taken, and when it was answered.
type Answered = (usize, Outcome, Duration, std::time::Instant);

/// The example plugin on its route, with a deadline that a loaded test machine (several
/// host processes on two cores) does not reach: these tests are about the store.
fn booker_config() -> Config {
    let booker = example_booker().with_limits(Limits {
        timeout_ms: 5000,
        ..Limits::default()
    });
    Config::default()
        .with_token(TokenConfig::off())
        .with_plugin("booker", booker)
        .with_route(RouteConfig::book_job("/workorders/{0}/followup", "booker").named("followup"))
}

/// HAProxy in front of `backends` (`127.0.0.1:PORT`), stopped when dropped. A request
/// whose connection to a host fails is sent to another (it never reached the host); one
/// cut off by a host's death is answered 502, and the client sends it again.
struct Balancer {
    child: std::process::Child,
    base: String,
}

impl Balancer {
    fn start(dir: &std::path::Path, backends: &[u16]) -> Balancer {
        let port = free_port();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!("    server h{i} 127.0.0.1:{p} check inter 300ms fall 1 rise 1\n")
            })
            .collect();
        let config = format!(
            "defaults\n    mode http\n    timeout connect 1s\n    timeout client 30s\n    \
             timeout server 30s\n    retries 3\n    option redispatch 1\n\
             frontend f\n    bind 127.0.0.1:{port}\n    default_backend hosts\n\
             backend hosts\n    balance roundrobin\n{servers}"
        );
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, config).unwrap();
        let child = std::process::Command::new("haproxy")
            .arg("-f")
            .arg(&file)
            .arg("-db")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("HAProxy is installed (scripts/setup installs it)");
        let base = format!("http://127.0.0.1:{port}");
        // Listening once a connection is accepted.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Balancer { child, base }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Hosts killed with SIGKILL one after another while clients book through HAProxy, each
/// booking that got no answer (or the balancer's 502 for a host that died under it) sent
/// again: no booking answered 200 is missing from the journal, none booked twice, the
/// sequence has no gap. `scripts/crash-test --cluster` runs more rounds; knobs
/// `FOLLOWUP_CLUSTER_KILLS` (3), `FOLLOWUP_CRASH_CLIENTS` (12).
#[tokio::test(flavor = "multi_thread")]
async fn hosts_killed_while_clients_book_lose_and_double_nothing() {
    let kills = knob("FOLLOWUP_CLUSTER_KILLS", 3) as usize;
    let clients = knob("FOLLOWUP_CRASH_CLIENTS", 12) as usize;
    let cluster = LocalCluster::shared().unwrap();
    let url = cluster.database("killed").unwrap();
    // Fixed ports, so that a restarted host is back behind the balancer.
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let dirs: Vec<PathBuf> = (0..3)
        .map(|i| scratch(&format!("killed-host{i}")))
        .collect();
    let configs: Vec<Config> = ports
        .iter()
        .map(|port| {
            let mut config = on_postgres(booker_config());
            config.store.claim_seconds = 2;
            config.listen = format!("127.0.0.1:{port}").parse().unwrap();
            config
        })
        .collect();
    let start = |i: usize| admin_host(&dirs[i], &configs[i], &url);
    let mut hosts: Vec<Host> = (0..3).map(start).collect();
    let balancer = Balancer::start(&dirs[0], &ports);
    let body = example("book-job.minimal.json");
    let client = reqwest::Client::new();
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (base, body, stop, next, client) = (
                balancer.base.clone(),
                body.clone(),
                stop.clone(),
                next.clone(),
                client.clone(),
            );
            tokio::spawn(async move {
                let mut answered = BTreeMap::new();
                let mut sent_again = 0;
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    // Until answered: a booking cut off is sent again.
                    for attempt in 0.. {
                        match book(&client, &base, n, &body).await.0 {
                            Outcome::Booked(order) => {
                                answered.insert(n, Ok(order));
                                break;
                            }
                            Outcome::NoAnswer | Outcome::Failed(502 | 503, _) if attempt < 200 => {
                                sent_again += 1;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            other => {
                                answered.insert(n, Err(other));
                                break;
                            }
                        }
                    }
                }
                (answered, sent_again)
            })
        })
        .collect();
    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let i = k % hosts.len();
        hosts[i].kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        hosts[i] = start(i);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    let mut booked = BTreeMap::new();
    let mut sent_again = 0;
    for task in tasks {
        let (answered, again) = task.await.unwrap();
        sent_again += again;
        for (n, outcome) in answered {
            match outcome {
                Ok(order) => {
                    booked.insert(n, order);
                }
                Err(other) => panic!("WO-{n}: {other:?}"),
            }
        }
    }
    let records = journal_matches(&url, &booked).await;
    assert_eq!(records, booked.len(), "one record per booking");
    println!(
        "cluster crash test: {kills} SIGKILLs of 3 hosts behind HAProxy under {clients} clients \
         in {:.1} s; {} bookings answered 200, {sent_again} sends of cut-off bookings; \
         journal {records} records; missing 0, doubled 0, sequence gap-free",
        started.elapsed().as_secs_f64(),
        booked.len()
    );
    drop(balancer);
    drop(hosts);
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// PostgreSQL stopped as a crash would under load, then started again: meanwhile bookings
/// answer `store-unavailable` (quickly) and `/readyz` says not ready; afterwards nothing
/// answered is lost and bookings succeed again without restarting the host.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_restart_is_answered_store_unavailable_and_service_resumes() {
    let mut cluster = LocalCluster::temporary("restart").unwrap();
    let url = cluster.url();
    let mut config = on_postgres(booker_config());
    config.store.statement_timeout_ms = 1000;
    let dir = scratch("pg-restart");
    let host = admin_host(&dir, &config, &url);
    let admin = host.admin.clone().unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let ready = |client: reqwest::Client| {
        let admin = admin.clone();
        async move {
            client
                .get(format!("{admin}/readyz"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert_eq!(ready(client.clone()).await, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let answers: Arc<Mutex<Vec<Answered>>> = Arc::default();
    let body = example("book-job.minimal.json");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (base, body, stop, next, client, answers) = (
                host.base.clone(),
                body.clone(),
                stop.clone(),
                next.clone(),
                client.clone(),
                answers.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let (outcome, took) = book(&client, &base, n, &body).await;
                    answers
                        .lock()
                        .unwrap()
                        .push((n, outcome, took, std::time::Instant::now()));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let down_at = std::time::Instant::now();
    cluster.stop(true).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ready_while_down = ready(client.clone()).await;
    cluster.start().unwrap();
    let up_at = std::time::Instant::now();
    // Back by itself: the first booking answered 200 after the database returned.
    let mut back = None;
    while up_at.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        back = answers
            .lock()
            .unwrap()
            .iter()
            .find(|(_, o, _, at)| *at > up_at && matches!(o, Outcome::Booked(_)))
            .map(|(_, _, _, at)| at.duration_since(up_at));
        if back.is_some() {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let ready_after = ready(client.clone()).await;
    let answers = answers.lock().unwrap().clone();
    let unavailable: Vec<Duration> = answers
        .iter()
        .filter(|(_, o, _, _)| *o == Outcome::Failed(500, "store-unavailable".into()))
        .map(|(_, _, took, _)| *took)
        .collect();
    let others: Vec<_> = answers
        .iter()
        .filter(|(_, o, _, _)| {
            !matches!(o, Outcome::Booked(_))
                && *o != Outcome::Failed(500, "store-unavailable".into())
        })
        .collect();
    assert!(
        others.is_empty(),
        "only store-unavailable while down: {} others, first {:?}",
        others.len(),
        others.iter().take(5).collect::<Vec<_>>()
    );
    assert!(!unavailable.is_empty(), "the outage was answered");
    let slowest = unavailable.iter().max().unwrap();
    // Bounded by the store's timeouts (1 s here), far below the client's 30 s.
    assert!(*slowest < Duration::from_secs(10), "{slowest:?}");
    assert_eq!(ready_while_down, 503);
    assert_eq!(ready_after, 200);
    let back = back.expect("bookings succeed again without a restart");
    let booked: BTreeMap<usize, String> = answers
        .iter()
        .filter_map(|(n, o, _, _)| match o {
            Outcome::Booked(order) => Some((*n, order.clone())),
            _ => None,
        })
        .collect();
    let records = journal_matches(&url, &booked).await;
    let mut took: Vec<Duration> = unavailable.clone();
    took.sort();
    println!(
        "database restart: down {:.1} s; {} bookings answered 200 ({records} journaled), {} \
         answered store-unavailable (p50 {:?}, max {:?}); first 200 {:?} after the database \
         was back",
        (up_at - down_at).as_secs_f64(),
        booked.len(),
        unavailable.len(),
        took[took.len() / 2],
        slowest,
        back
    );
    drop(host);
    let _ = std::fs::remove_dir_all(dir);
}

/// The plugin version that answers a new booking on `host`.
async fn version_answering(client: &reqwest::Client, host: &Host, n: usize) -> String {
    let request = client
        .post(format!("{}/workorders/WO-probe-{n}/followup", host.base))
        .header("content-type", "application/json")
        .body(example("book-job.minimal.json"));
    let answer = try_send(request).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.plugin
}

/// A deploy through one host's admin API is served by every host, a host that starts
/// later serves it too (not its configured file), and `GET /plugins` on any host says on
/// how many hosts it serves.
#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_through_one_host_is_served_by_every_host() {
    let cluster = LocalCluster::shared().unwrap();
    let url = cluster.database("deploys").unwrap();
    let config = booker_config();
    let (hosts, mut dirs) = hosts("deploys", &config, &url, 3);
    let client = reqwest::Client::new();
    let original = std::fs::read(guests::CAPACITY_BOOKER).unwrap();
    let mut probe = 0;
    let mut took = Vec::new();
    for round in 0..5u8 {
        let bytes = followup_tests::component::with_custom_section(
            &original,
            "followup-test-deploy",
            &[round],
        );
        let deployed = client
            .post(format!(
                "{}/plugins/booker",
                hosts[0].admin.as_ref().unwrap()
            ))
            .bearer_auth("t")
            .body(bytes)
            .send()
            .await
            .unwrap();
        let answered = std::time::Instant::now();
        assert_eq!(deployed.status(), 200);
        let version = deployed.json::<serde_json::Value>().await.unwrap()["version"]
            .as_str()
            .unwrap()
            .to_string();
        // Until every host answers with it.
        let mut behind: Vec<&Host> = hosts.iter().collect();
        while !behind.is_empty() {
            assert!(
                answered.elapsed() < Duration::from_secs(20),
                "round {round}: {} hosts still serve another version",
                behind.len()
            );
            let mut still = Vec::new();
            for host in behind {
                probe += 1;
                if !version_answering(&client, host, probe)
                    .await
                    .ends_with(&version)
                {
                    still.push(host);
                }
            }
            behind = still;
        }
        took.push(answered.elapsed());
    }
    took.sort();
    println!(
        "deploy through host A until all three hosts answer with it, 5 deploys: \
         min {:?}, median {:?}, max {:?}",
        took[0],
        took[took.len() / 2],
        took[took.len() - 1]
    );
    // The hosts say what they serve.
    let last = version_answering(&client, &hosts[2], 0).await;
    let version = last.rsplit('@').next().unwrap().to_string();
    let mut listed = String::new();
    for _ in 0..50 {
        let list: serde_json::Value = client
            .get(format!("{}/plugins", hosts[1].admin.as_ref().unwrap()))
            .bearer_auth("t")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        listed = list["plugins"][0]["serving_on"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if listed == format!("{version} serving on 3 of 3 hosts") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(listed, format!("{version} serving on 3 of 3 hosts"));
    // A host that starts afterwards, with its configured (older) file and no history of
    // its own, serves what the others serve.
    let dir = scratch("deploys-late");
    let late = admin_host(&dir, &on_postgres(config.clone()), &url);
    assert!(
        version_answering(&client, &late, 1_000)
            .await
            .ends_with(&version)
    );
    dirs.push(dir);
    drop(late);
    drop(hosts);
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A plugin file replaced on a host while that host was down is a deploy: when it starts,
/// it publishes the file, and the other hosts serve it too.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_replaced_while_its_host_was_down_is_deployed_to_every_host() {
    let cluster = LocalCluster::shared().unwrap();
    let url = cluster.database("replaced").unwrap();
    let client = reqwest::Client::new();
    let original = std::fs::read(guests::CAPACITY_BOOKER).unwrap();
    // Each host serves its own copy of the file.
    let dirs: Vec<PathBuf> = (0..2)
        .map(|i| scratch(&format!("replaced-host{i}")))
        .collect();
    let configs: Vec<Config> = dirs
        .iter()
        .map(|dir| {
            std::fs::write(dir.join("booker.wasm"), &original).unwrap();
            let mut config = booker_config();
            config.plugins.get_mut("booker").unwrap().path = dir.join("booker.wasm");
            on_postgres(config)
        })
        .collect();
    let a = admin_host(&dirs[0], &configs[0], &url);
    let mut b = admin_host(&dirs[1], &configs[1], &url);
    let before = version_answering(&client, &b, 1).await;
    assert_eq!(version_answering(&client, &a, 2).await, before);
    b.kill();
    let replaced =
        followup_tests::component::with_custom_section(&original, "followup-test-replaced", b"1");
    std::fs::write(dirs[1].join("booker.wasm"), &replaced).unwrap();
    let b = admin_host(&dirs[1], &configs[1], &url);
    let after = version_answering(&client, &b, 3).await;
    assert_ne!(after, before, "b serves its new file");
    let started = std::time::Instant::now();
    let mut n = 4;
    while version_answering(&client, &a, n).await != after {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a never followed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        n += 1;
    }
    drop((a, b));
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The candidates a host lists for `booker` (`null` without one).
async fn candidate_on(client: &reqwest::Client, host: &Host) -> serde_json::Value {
    let list: serde_json::Value = client
        .get(format!("{}/plugins", host.admin.as_ref().unwrap()))
        .bearer_auth("t")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["plugins"][0]["candidate"].clone()
}

/// Waits (up to 20 s) until `host` lists a candidate for which `wanted` holds.
async fn until_candidate(
    client: &reqwest::Client,
    host: &Host,
    wanted: impl Fn(&serde_json::Value) -> bool,
) {
    let give_up = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let candidate = candidate_on(client, host).await;
        if wanted(&candidate) {
            return;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "the other host lists {candidate}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A canary deployed through one host runs on every host, each work order on the same
/// version whichever host books it, and an abort through another host ends it everywhere.
#[tokio::test(flavor = "multi_thread")]
async fn a_canary_deployed_through_one_host_runs_on_every_host() {
    let cluster = LocalCluster::shared().unwrap();
    let url = cluster.database("canary").unwrap();
    let (hosts, dirs) = hosts("canary", &booker_config(), &url, 2);
    let client = reqwest::Client::new();
    let deployed = client
        .post(format!(
            "{}/plugins/booker?mode=canary&percent=50",
            hosts[0].admin.as_ref().unwrap()
        ))
        .bearer_auth("t")
        .body(std::fs::read(guests::BOOKER_VARIANT).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(deployed.status(), 200);
    let canary = deployed.json::<serde_json::Value>().await.unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string();
    until_candidate(&client, &hosts[1], |c| {
        c["mode"] == "canary" && c["version"] == canary.as_str() && c["percent"] == 50
    })
    .await;
    // Each work order booked on both hosts (two bookings of it) meets the same version.
    let tuesday = example("book-job.minimal.json");
    let wednesday = tuesday.replace("2024-06-18", "2024-06-19");
    let mut versions = BTreeSet::new();
    for i in 0..40 {
        let mut answered = Vec::new();
        for (host, body) in [(&hosts[0], &tuesday), (&hosts[1], &wednesday)] {
            let request = client
                .post(format!("{}/workorders/WO-canary-{i}/followup", host.base))
                .header("content-type", "application/json")
                .body(body.clone());
            let answer = try_send(request).await.unwrap();
            assert_eq!(answer.status, 200, "{}", answer.text);
            answered.push(answer.plugin);
        }
        assert_eq!(answered[0], answered[1], "WO-canary-{i}");
        versions.insert(answered[0].clone());
    }
    assert_eq!(versions.len(), 2, "both versions book: {versions:?}");
    // Aborted through the other host: ended on both.
    let aborted = client
        .post(format!(
            "{}/plugins/booker/abort",
            hosts[1].admin.as_ref().unwrap()
        ))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(aborted.status(), 200);
    until_candidate(&client, &hosts[0], serde_json::Value::is_null).await;
    drop(hosts);
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}
