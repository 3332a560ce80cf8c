//! Recorded bookings replayed through candidate versions: the bookings a changed rule
//! changes, named with the paths that changed; an unchanged rebuild that changes nothing;
//! the admission gate that replays; and a forwarding plugin whose replay calls nobody.

use crate::admin::{Admin, TOKEN};
use crate::outbound::{back_end, forwarder};
use crate::support::{Server, example, example_booker, example_json};
use followup_host::DeployError;
use followup_host::config::{Config, Limits, RouteConfig};
use followup_host::plugin::history::Trigger;
use followup_host::replay::{Options, Outcome};
use followup_host::storage::TapeQuery;
use followup_host::tape::Tape;
use followup_tests::component::with_custom_section;
use followup_tests::guests;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bookings recorded by the first test.
const BOOKINGS: usize = 1_000;

/// The example plugin as `booker`, open on Saturdays, recording its bookings without the
/// account's contacts; candidates replay its last `replay_last` bookings.
fn recorded_booker(replay_last: u32) -> Config {
    let mut booker = example_booker()
        .with_limits(Limits {
            max_concurrency: 64,
            ..Limits::default()
        })
        .with_value("closed_weekdays", "7")
        .recorded(&["$.Account.Contacts"]);
    booker.replay_last = replay_last;
    Config::default()
        .with_plugin("booker", booker)
        .with_route(RouteConfig::book_job("/booker/{0}", "booker").named("booker"))
}

/// Booking `i`: a two-hour slot on one of the thirteen days from Tuesday 2024-06-18, at
/// one of five local start times (UTC−4); every tenth names a contact.
fn booking(i: usize) -> (String, bool) {
    let day = 18 + i % 13;
    let hour = [8, 9, 10, 13, 14][(i / 13) % 5];
    let start = format!("2024-06-{day:02}T{:02}:00:00.000Z", hour + 4);
    let end = format!("2024-06-{day:02}T{:02}:00:00.000Z", hour + 6);
    let mut job = example_json("book-job.minimal.json");
    job["TimeConstraints"][0]["Period"] = json!({"Start": start, "End": end});
    if i.is_multiple_of(10) {
        job["Account"]["Contacts"] = json!([{"Name": "R Morales", "Phone": "555-0100"}]);
    }
    // 2024-06-22 and 2024-06-29 are Saturdays.
    let saturday_morning = (day == 22 || day == 29) && hour < 12;
    (job.to_string(), saturday_morning)
}

/// Books `count` bookings through `server`, 32 at a time; the statuses by WorkOrderID.
async fn book_all(server: &Arc<Server>, count: usize) -> Vec<(String, u16)> {
    let mut done = Vec::new();
    for chunk in (0..count).collect::<Vec<_>>().chunks(32) {
        let mut tasks = tokio::task::JoinSet::new();
        for &i in chunk {
            let server = server.clone();
            tasks.spawn(async move {
                let (body, _) = booking(i);
                let answer = server.post(&format!("/booker/WO-{i}"), &body).await;
                (format!("WO-{i}"), answer.status)
            });
        }
        done.extend(tasks.join_all().await);
    }
    done
}

/// Waits until the store holds `count` tapes of `plugin` (a refused booking's tape is kept
/// off its answer's path).
async fn tapes(server: &Server, plugin: &str, count: usize) -> Vec<Tape> {
    let give_up = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = server
            .app
            .storage
            .tapes(plugin, TapeQuery::default())
            .unwrap();
        if rows.len() >= count || Instant::now() > give_up {
            assert_eq!(rows.len(), count, "tapes kept");
            return rows
                .iter()
                .map(|r| serde_json::from_slice(&r.tape).unwrap())
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_replay_names_exactly_the_bookings_a_changed_rule_changes() {
    let server = Arc::new(Server::of(recorded_booker(200)).await);
    let answers = book_all(&server, BOOKINGS).await;
    let booked: BTreeSet<&str> = answers
        .iter()
        .filter(|(_, s)| *s == 200)
        .map(|(w, _)| w.as_str())
        .collect();
    // Sundays are closed: those bookings are refused, and recorded too.
    assert!(
        booked.len() > 800 && booked.len() < BOOKINGS,
        "{}",
        booked.len()
    );
    let kept = tapes(&server, "booker", BOOKINGS).await;
    let contacts = kept
        .iter()
        .filter(|t| t.request["Account"].get("Contacts").is_some())
        .count();
    assert_eq!(contacts, 0, "redacted paths are not kept");
    let refused_tape = kept.iter().find(|t| t.answer.status != 200).unwrap();
    assert_eq!(
        refused_tape.answer.error_type.as_deref(),
        Some("slot-unavailable")
    );
    assert!(
        kept.iter()
            .any(|t| t.calls.iter().any(|c| matches!(c, followup_host::tape::HostCall::KvGet { key, .. } if key == "sequence/order"))),
        "the sequence read is on the tape"
    );
    let changed: BTreeSet<String> = (0..BOOKINGS)
        .filter(|&i| booking(i).1 && booked.contains(format!("WO-{i}").as_str()))
        .map(|i| format!("WO-{i}"))
        .collect();
    assert!(changed.len() > 50, "{}", changed.len());

    // The variant refuses Saturday mornings: exactly those bookings differ, at the status
    // and the error type; every other one answers as recorded, order numbers included.
    let variant: Arc<[u8]> = std::fs::read(guests::BOOKER_VARIANT).unwrap().into();
    let all = TapeQuery {
        last: Some(BOOKINGS as u32),
        since: None,
    };
    let report = server
        .app
        .replay("booker", variant.clone(), all, &Options::default())
        .await
        .unwrap();
    assert_eq!(report.summary.total, BOOKINGS as u64);
    assert_eq!(report.summary.failed, 0, "{}", report.text());
    let differs: BTreeSet<String> = report
        .bookings
        .iter()
        .filter(|b| b.outcome == Outcome::Differs)
        .map(|b| b.work_order_id.clone().unwrap())
        .collect();
    assert_eq!(differs, changed);
    assert_eq!(report.summary.differs, changed.len() as u64);
    for b in report
        .bookings
        .iter()
        .filter(|b| b.outcome == Outcome::Differs)
    {
        assert_eq!(b.paths, ["status", "error_type"]);
        assert_eq!(b.error_type.as_deref(), Some("slot-unavailable"));
    }
    assert!(!report.passed);
    let first = &report.first_differences[0];
    assert_eq!(first.recorded.status, 200);
    assert!(first.recorded.body["OrderNum"].is_string());
    assert!(
        first.candidate.body["detail"]
            .as_str()
            .unwrap()
            .contains("Saturday morning")
    );
    assert!(report.replayed.wall_us.is_some() && report.recorded.wall_us.is_some());

    // The example rebuilt with other bytes: nothing differs, order numbers included.
    let example = std::fs::read(guests::CAPACITY_BOOKER).unwrap();
    let rebuilt: Arc<[u8]> = with_custom_section(&example, "rebuilt", b"2").into();
    let report = server
        .app
        .replay("booker", rebuilt.clone(), all, &Options::default())
        .await
        .unwrap();
    assert_eq!(
        (
            report.summary.same,
            report.summary.differs,
            report.summary.failed
        ),
        (BOOKINGS as u64, 0, 0),
        "{}",
        report.text()
    );
    assert!(report.passed);

    // Ignoring the paths that changed: nothing differs but the status change itself.
    let admin = Admin::start(&server).await;
    let (status, text) = admin
        .call(
            Some(variant.to_vec()),
            "/plugins/booker/replay?last=1000&ignore=%24.OrderNum&max_diff=1000",
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["summary"]["total"], BOOKINGS);
    assert_eq!(answer["summary"]["differs"], changed.len());
    assert_eq!(answer["passed"], true);
    let listed = answer["bookings"].as_array().unwrap();
    assert!(listed.iter().any(|b| b["outcome"] == "differs"
        && b["work_order_id"].is_string()
        && b["paths"][0] == "status"
        && b["error_type"] == "slot-unavailable"));
    let (status, text) = admin
        .call(
            Some(variant.to_vec()),
            "/plugins/booker/replay?last=x",
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 400, "{text}");

    // The gate replays the last 200 bookings: the variant is refused, the rebuild serves.
    let refused = server
        .app
        .deploy("booker", variant, Trigger::Api)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, DeployError::ReplayDiffers(_)),
        "{refused}"
    );
    let reason = refused.to_string();
    assert!(
        reason.contains("replaying 200 recorded bookings"),
        "{reason}"
    );
    assert!(reason.contains("status, error_type"), "{reason}");
    let serving = server
        .app
        .deploy("booker", rebuilt, Trigger::Api)
        .await
        .unwrap();
    assert_eq!(server.app.plugin("booker").unwrap().ident, serving);
    // Replays committed nothing: the sequence is where the bookings left it.
    let sequence = server.app.storage.get("booker", "sequence/order").unwrap();
    assert_eq!(sequence, Some(booked.len().to_string().into_bytes()));
}

#[tokio::test]
async fn replaying_a_forwarding_plugin_sends_nothing_to_its_back_end() {
    let (origin, seen) = back_end().await;
    let mut config = forwarder(Config::default(), "acme", &origin, &origin);
    let manifest = config.plugins.get_mut("acme").unwrap();
    manifest.record = true;
    let server = Server::of(config).await;
    let body = example("book-job.full.json");
    for wo in ["WO-1", "WO-2", "WO-taken", "WO-3"] {
        server.post(&format!("/acme/{wo}"), &body).await;
    }
    let kept = tapes(&server, "acme", 4).await;
    assert_eq!(seen.lock().unwrap().len(), 4);
    let exchanges: Vec<_> = kept
        .iter()
        .flat_map(|t| &t.calls)
        .filter_map(|c| match c {
            followup_host::tape::HostCall::Http(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(exchanges.len(), 4, "every exchange is on a tape");
    assert!(exchanges.iter().all(|e| e.method == "POST"));
    let statuses: BTreeSet<u16> = exchanges.iter().filter_map(|e| e.status).collect();
    assert_eq!(statuses, BTreeSet::from([201, 409]));

    let rebuilt: Arc<[u8]> = with_custom_section(
        &std::fs::read(guests::REST_FORWARDER).unwrap(),
        "rebuilt",
        b"",
    )
    .into();
    let report = server
        .app
        .replay("acme", rebuilt, TapeQuery::default(), &Options::default())
        .await
        .unwrap();
    assert_eq!(
        (report.summary.total, report.summary.same),
        (4, 4),
        "{}",
        report.text()
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        4,
        "the replay called the back end"
    );
}
