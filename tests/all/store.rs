//! Bookings that change the store: capacity that cannot be oversold, order numbers without
//! gaps, and retries that never book twice.

use crate::support::{Server, example, example_booker};
use followup_host::config::{Config, Limits, RouteConfig};
use std::collections::BTreeSet;

/// The example plugin as `capped` on `/capped/{0}/followup`, with `capacity` bookings a
/// day.
fn capped(capacity: u32) -> Config {
    let booker = example_booker()
        .with_limits(Limits {
            max_concurrency: 64,
            ..Limits::default()
        })
        .with_value("daily_capacity", capacity.to_string());
    Config::default()
        .with_plugin("capped", booker)
        .with_route(RouteConfig::book_job("/capped/{0}/followup", "capped").named("capped"))
}

/// The count of `outcome` in `followup_requests_total` for `route`.
fn outcomes(server: &Server, route: &str, outcome: &str) -> u64 {
    let mut text = String::new();
    server.app.metrics.render(&mut text);
    text.lines()
        .filter(|l| {
            l.starts_with(&format!("followup_requests_total{{route=\"{route}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn fifty_concurrent_bookings_for_a_slot_with_capacity_three_book_exactly_three() {
    let server = std::sync::Arc::new(Server::of(capped(3)).await);
    let body = example("book-job.minimal.json");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (server, body) = (server.clone(), body.clone());
        tasks.spawn(async move {
            server
                .post(&format!("/capped/WO-{i}/followup"), &body)
                .await
        });
    }
    let answers = tasks.join_all().await;
    let booked: Vec<String> = answers
        .iter()
        .filter(|a| a.status == 200)
        .map(|a| a.json["OrderNum"].as_str().unwrap().to_string())
        .collect();
    for refused in answers.iter().filter(|a| a.status != 200) {
        refused.assert_error(500, "slot-unavailable");
        assert!(refused.text.contains("fully booked"), "{}", refused.text);
    }
    assert_eq!(booked.len(), 3, "{booked:?}");
    let numbers: BTreeSet<&str> = booked.iter().map(String::as_str).collect();
    assert_eq!(
        numbers,
        BTreeSet::from(["FU-00000001", "FU-00000002", "FU-00000003"]),
        "unique and gap-free"
    );
    let store = &server.app.storage;
    assert_eq!(
        store.get("capped", "sequence/order").unwrap().unwrap(),
        b"3"
    );
    assert_eq!(
        store
            .get("capped", "capacity/default/2024-06-18")
            .unwrap()
            .unwrap(),
        b"3",
        "refused bookings left no trace"
    );
}

#[tokio::test]
async fn the_same_booking_sent_forty_times_runs_the_plugin_once() {
    let server = std::sync::Arc::new(Server::of(capped(100)).await);
    let body = example("book-job.full.json");
    let path = "/capped/WO-2024-118734/followup";

    // 20 at once...
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (server, body) = (server.clone(), body.clone());
        tasks.spawn(async move {
            let response = server.request(path, &body).send().await.unwrap();
            let replayed = response.headers().contains_key("x-followup-replayed");
            let status = response.status().as_u16();
            let json: serde_json::Value = response.json().await.unwrap();
            (status, replayed, json)
        });
    }
    let mut answers = tasks.join_all().await;
    // ... then 20 in a row.
    for _ in 0..20 {
        let response = server.request(path, &body).send().await.unwrap();
        let replayed = response.headers().contains_key("x-followup-replayed");
        answers.push((
            response.status().as_u16(),
            replayed,
            response.json().await.unwrap(),
        ));
    }
    assert!(
        answers.iter().all(|(status, ..)| *status == 200),
        "{answers:?}"
    );
    let first = &answers[0].2;
    assert!(
        answers.iter().all(|(_, _, json)| json == first),
        "{answers:?}"
    );
    assert_eq!(first["OrderNum"], "FU-00000001");
    assert_eq!(
        answers.iter().filter(|(_, replayed, _)| !replayed).count(),
        1
    );
    assert_eq!(outcomes(&server, "capped", "ok"), 1, "the plugin ran once");
    assert_eq!(outcomes(&server, "capped", "replayed"), 39);
    assert_eq!(
        server
            .app
            .storage
            .get("capped", "sequence/order")
            .unwrap()
            .unwrap(),
        b"1"
    );

    // A different body for the same work order is a different booking.
    let other = crate::support::with(
        crate::support::example_json("book-job.full.json"),
        "/UserName",
        serde_json::json!("someone else"),
    );
    let second = server.post(path, &other).await;
    assert_eq!(second.json["OrderNum"], "FU-00000002", "{}", second.text);
}

#[tokio::test]
async fn a_failed_booking_is_not_recorded_and_its_retry_runs_again() {
    let server = Server::of(capped(1)).await;
    let body = example("book-job.minimal.json");
    assert_eq!(
        server.post("/capped/WO-1/followup", &body).await.status,
        200
    );
    // The day is full: refused, twice, each time by the plugin (never replayed).
    for _ in 0..2 {
        let refused = server.post("/capped/WO-2/followup", &body).await;
        refused.assert_error(500, "slot-unavailable");
    }
    assert_eq!(outcomes(&server, "capped", "slot-unavailable"), 2);
    assert_eq!(outcomes(&server, "capped", "replayed"), 0);
    let key = followup_host::journal::idempotency_key(
        "capped",
        Some("WO-2"),
        &serde_json::from_str(&body).unwrap(),
    );
    assert_eq!(server.app.storage.recorded(&key).unwrap(), None);
}
