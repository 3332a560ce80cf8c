//! Candidates beside the serving version: a shadow that runs on live bookings and changes
//! nothing, a canary that books its share of work orders, and a failing canary the host
//! rolls back by itself without losing a booking it answered.

use crate::admin::{Admin, TOKEN};
use crate::support::{Server, example_booker, example_json};
use followup_host::config::{Config, Limits, RouteConfig};
use followup_host::promote::Mode;
use followup_tests::guests;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The example plugin as `booker`, open on Saturdays, with key order numbers (so that two
/// hosts given the same bookings hold the same store), and `extra` config values.
fn booker(extra: &[(&str, &str)]) -> Config {
    let mut manifest = example_booker()
        .with_limits(Limits {
            max_concurrency: 64,
            ..Limits::default()
        })
        .with_value("closed_weekdays", "7")
        .with_value("order_numbers", "key")
        .with_value("daily_capacity", "100000");
    for (k, v) in extra {
        manifest = manifest.with_value(*k, *v);
    }
    Config::default()
        .with_plugin("booker", manifest)
        .with_route(RouteConfig::book_job("/booker/{0}", "booker").named("booker"))
}

/// Booking `i` of work order `wo`: a two-hour slot on one of the thirteen days from
/// Tuesday 2024-06-18 at one of five local start times (UTC−4).
fn booking(i: usize) -> String {
    let day = 18 + i % 13;
    let hour = [8, 9, 10, 13, 14][(i / 13) % 5];
    let mut job = example_json("book-job.minimal.json");
    job["TimeConstraints"][0]["Period"] = json!({
        "Start": format!("2024-06-{day:02}T{:02}:00:00.000Z", hour + 4),
        "End": format!("2024-06-{day:02}T{:02}:00:00.000Z", hour + 6),
    });
    job.to_string()
}

/// One answer: status, the version that answered, whether replayed, the body.
type Answered = (u16, String, bool, Value);

async fn post(server: &Server, wo: &str, body: &str) -> Answered {
    let response = server
        .request(&format!("/booker/{wo}"), body)
        .send()
        .await
        .unwrap();
    let header = |n: &str| {
        response
            .headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (version, replayed) = (header("x-followup-plugin"), header("x-followup-replayed"));
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, version, replayed == "true", body)
}

/// Books work orders `WO-0`… with bookings `0..count`, 32 at a time; the answers in order.
async fn book_all(server: &Arc<Server>, count: usize) -> Vec<Answered> {
    let mut all = Vec::new();
    for chunk in (0..count).collect::<Vec<_>>().chunks(32) {
        let mut tasks = tokio::task::JoinSet::new();
        for &i in chunk {
            let server = server.clone();
            tasks.spawn(async move { (i, post(&server, &format!("WO-{i}"), &booking(i)).await) });
        }
        let mut done = tasks.join_all().await;
        done.sort_by_key(|(i, _)| *i);
        all.extend(done.into_iter().map(|(_, a)| a));
    }
    all
}

/// What a store holds for `booker`: its keys and values, and the journal's answer to each
/// booking.
type Held = (BTreeMap<String, Vec<u8>>, Vec<Option<Vec<u8>>>);

/// Everything the store holds for `booker`, for `count` bookings.
fn store_of(server: &Server, count: usize) -> Held {
    let storage = &server.app.storage;
    let kv = storage
        .list("booker", "", 1_000)
        .unwrap()
        .into_iter()
        .map(|k| {
            let v = storage.get("booker", &k).unwrap().unwrap();
            (k, v)
        })
        .collect();
    let journal = (0..count)
        .map(|i| {
            let body: Value = serde_json::from_str(&booking(i)).unwrap();
            let key =
                followup_host::journal::idempotency_key("booker", Some(&format!("WO-{i}")), &body);
            storage.recorded(&key).unwrap().map(|r| r.response)
        })
        .collect();
    (kv, journal)
}

#[tokio::test]
async fn a_shadow_runs_on_live_bookings_and_changes_nothing() {
    const COUNT: usize = 2_000;
    let shadowed = Arc::new(Server::of(booker(&[])).await);
    let plain = Arc::new(Server::of(booker(&[])).await);
    let variant: Arc<[u8]> = std::fs::read(guests::BOOKER_VARIANT).unwrap().into();
    shadowed
        .app
        .stage("booker", variant, Mode::Shadow)
        .await
        .unwrap();
    let with = book_all(&shadowed, COUNT).await;
    let without = book_all(&plain, COUNT).await;
    // The live answers are the serving version's, as without the shadow (an error body
    // names its own request id: its type is compared).
    let answers = |all: &[Answered]| -> Vec<(u16, Value)> {
        all.iter()
            .map(|a| match a.0 {
                200 => (a.0, a.3.clone()),
                _ => (a.0, a.3["type"].clone()),
            })
            .collect()
    };
    assert_eq!(answers(&with), answers(&without));
    assert!(with.iter().all(|a| !a.1.is_empty() && a.1 == with[0].1));
    // Every booking that ran is counted once: same, differs, failed or skipped.
    let candidate = shadowed.app.candidates.get("booker").unwrap();
    let give_up = Instant::now() + Duration::from_secs(30);
    let counts = loop {
        let c = candidate.shadow.counts();
        if c.same + c.differs + c.failed + c.skipped == COUNT as u64 || Instant::now() > give_up {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        counts.same + counts.differs + counts.failed + counts.skipped,
        COUNT as u64,
        "{counts:?}"
    );
    assert_eq!(counts.failed, 0, "{counts:?}");
    assert!(counts.same > 0, "{counts:?}");
    // Store and journal are exactly as without the shadow.
    assert_eq!(store_of(&shadowed, COUNT), store_of(&plain, COUNT));
    // Bookings that find the shadow free are all replayed: the Saturday mornings the
    // variant refuses differ.
    let saturdays: Vec<usize> = (COUNT..COUNT + 200)
        .filter(|&i| {
            // 2024-06-22 and 2024-06-29 are Saturdays; 8, 9 and 10 o'clock are mornings.
            let day = 18 + i % 13;
            (day == 22 || day == 29) && (i / 13) % 5 < 3
        })
        .take(3)
        .collect();
    assert_eq!(saturdays.len(), 3);
    for (n, &i) in saturdays.iter().enumerate() {
        let give_up = Instant::now() + Duration::from_secs(10);
        while candidate.shadow.running.available_permits() == 0 {
            assert!(Instant::now() < give_up, "the shadow stayed busy");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let answer = post(&shadowed, &format!("WO-{i}"), &booking(i)).await;
        assert_eq!(answer.0, 200, "{:?}", answer.3);
        while candidate.shadow.counts().differs < counts.differs + n as u64 + 1 {
            assert!(Instant::now() < give_up, "{:?}", candidate.shadow.counts());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let counts = candidate.shadow.counts();

    let admin = Admin::start(&shadowed).await;
    let (status, text) = admin
        .call(None, "/plugins/booker/shadow", Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{text}");
    let view: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(view["runs"]["differs"], counts.differs);
    let latest = view["latest"].as_array().unwrap();
    assert!(!latest.is_empty());
    assert_eq!(latest[0]["outcome"], "differs");
    assert_eq!(latest[0]["paths"], json!(["status", "error_type"]));
    let (_, metrics) = admin.call(None, "/metrics", Some(TOKEN)).await;
    assert!(
        metrics.contains(&format!(
            "followup_shadow_runs_total{{plugin=\"booker\",version=\"{}\",outcome=\"differs\"}} {}",
            candidate.plugin.ident.version, counts.differs
        )),
        "{metrics}"
    );
    let listed = admin.listed("booker").await;
    assert_eq!(listed["candidate"]["mode"], "shadow");

    // Promoted, it serves; then there is nothing left to abort.
    let (status, text) = admin
        .call(Some(Vec::new()), "/plugins/booker/promote", Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        shadowed.app.plugin("booker").unwrap().ident,
        candidate.plugin.ident
    );
    let (status, _) = admin
        .call(Some(Vec::new()), "/plugins/booker/abort", Some(TOKEN))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_canary_books_its_share_of_work_orders_and_keeps_each_on_one_version() {
    const COUNT: usize = 2_000;
    let server = Arc::new(Server::of(booker(&[])).await);
    let serving = server.app.plugin("booker").unwrap().ident.to_string();
    let admin = Admin::start(&server).await;
    let variant = std::fs::read(guests::BOOKER_VARIANT).unwrap();
    let (status, text) = admin
        .call(
            Some(variant),
            "/plugins/booker?mode=canary&percent=10",
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let candidate = server.app.candidates.get("booker").unwrap();
    let canary = candidate.plugin.ident.to_string();
    let first = book_all(&server, COUNT).await;
    let by_canary: BTreeSet<usize> = (0..COUNT).filter(|&i| first[i].1 == canary).collect();
    assert!(
        first.iter().all(|a| a.1 == canary || a.1 == serving),
        "every answer names a version"
    );
    let share = by_canary.len() as f64 / COUNT as f64 * 100.0;
    assert!((7.0..=13.0).contains(&share), "{share} %");
    // Another booking of each work order goes to the same version; a retry of the first is
    // answered from the journal exactly as before.
    for i in (0..COUNT).step_by(7) {
        let wo = format!("WO-{i}");
        let again = post(&server, &wo, &booking(i + 1)).await;
        assert_eq!(again.1, first[i].1, "{wo} changed version");
        let retry = post(&server, &wo, &booking(i)).await;
        assert_eq!(retry.0, first[i].0, "{wo}");
        if first[i].0 == 200 {
            assert!(retry.2, "{wo}: a booked retry is answered from the journal");
            assert_eq!(retry.3, first[i].3, "{wo}");
        } else {
            assert_eq!(
                retry.1, first[i].1,
                "{wo}: a refused retry runs on the same version"
            );
        }
    }
    let listed = admin.listed("booker").await;
    assert_eq!(listed["candidate"]["mode"], "canary");
    assert_eq!(listed["candidate"]["percent"], 10);
    assert!(
        listed["candidate"]["window"]["candidate"]["requests"]
            .as_u64()
            .unwrap()
            > 100
    );
    assert!(
        listed["candidate"]["window"]["serving"]["requests"]
            .as_u64()
            .unwrap()
            > 1000
    );
    // Aborted, every work order goes to the serving version again.
    let (status, _) = admin
        .call(Some(Vec::new()), "/plugins/booker/abort", Some(TOKEN))
        .await;
    assert_eq!(status, 200);
    let i = *by_canary.iter().next().unwrap();
    let after = post(&server, &format!("WO-{i}"), &booking(i + 2)).await;
    assert_eq!(after.1, serving);
}

#[tokio::test]
async fn a_canary_failing_a_fifth_of_its_bookings_is_rolled_back_and_loses_none() {
    let server = Arc::new(Server::of(booker(&[("fail_percent", "20")])).await);
    let serving = server.app.plugin("booker").unwrap().ident.to_string();
    let variant: Arc<[u8]> = std::fs::read(guests::BOOKER_VARIANT).unwrap().into();
    let canary = server
        .app
        .stage("booker", variant, Mode::Canary { percent: 50 })
        .await
        .unwrap()
        .to_string();
    let mut answered_by_canary = Vec::new();
    let mut sent = 0;
    while server.app.candidates.get("booker").is_some() {
        assert!(sent < 1_000, "the failing canary was never rolled back");
        let wo = format!("WO-{sent}");
        let answer = post(&server, &wo, &booking(sent)).await;
        if answer.1 == canary && answer.0 == 200 {
            answered_by_canary.push((wo, sent, answer.3));
        }
        sent += 1;
    }
    assert!(!answered_by_canary.is_empty());
    let admin = Admin::start(&server).await;
    let listed = admin.listed("booker").await;
    assert_eq!(listed["candidate"], Value::Null);
    assert_eq!(listed["canary_rollbacks"]["count"], 1);
    let reason = listed["canary_rollbacks"]["last"]["reason"]
        .as_str()
        .unwrap();
    assert!(reason.contains("bookings failed"), "{reason}");
    let (_, metrics) = admin.call(None, "/metrics", Some(TOKEN)).await;
    assert!(
        metrics.contains("followup_canary_rollbacks_total{plugin=\"booker\"} 1"),
        "{metrics}"
    );
    // Every booking the canary answered stands: a retry gets the same answer.
    for (wo, i, body) in &answered_by_canary {
        let retry = post(&server, wo, &booking(*i)).await;
        assert!(retry.2, "{wo} was not in the journal");
        assert_eq!(&retry.3, body);
    }
    // New bookings go to the serving version.
    let after = post(&server, "WO-after", &booking(0)).await;
    assert_eq!(after.1, serving);
}
