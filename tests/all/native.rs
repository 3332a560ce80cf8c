//! The native baseline: the example plugin's rules compiled into the host, behind the same
//! HTTP path as its component — same answers, same store and journal — and the in-memory
//! store the load comparison runs on.

use crate::support::{Answer, Server, app, example, test_config};
use capacity_booker::CapacityBooker;
use followup_host::dispatch::native::NativeRules;

fn rules() -> NativeRules {
    NativeRules::booking::<CapacityBooker>().with_search::<CapacityBooker>()
}

/// A server whose capacity-booker is called natively, on the store `extra` configures.
async fn native_server(extra: &str) -> Server {
    let app = app(test_config(extra)).await;
    Server::serving(app.with_native("capacity-booker", rules()).unwrap()).await
}

/// Status and body, with the error detail's request id and plugin version taken out: what
/// must not depend on whether the rules ran natively or in the sandbox.
fn comparable(answer: &Answer) -> (u16, serde_json::Value) {
    let mut json = answer.json.clone();
    if let Some(detail) = json.get_mut("detail") {
        let mut text = detail.as_str().unwrap_or("").to_string();
        if let Some(at) = text.find(" (request ") {
            text.truncate(at);
        }
        if let Some(at) = text.find("capacity-booker@") {
            let version = at + "capacity-booker".len();
            let end = text[version..]
                .find([' ', ':'])
                .map_or(text.len(), |e| version + e);
            text.replace_range(version..end, "");
        }
        *detail = text.into();
    }
    (answer.status, json)
}

#[tokio::test]
async fn native_rules_answer_what_the_component_answers() {
    let native = native_server("").await;
    let sandboxed = Server::start().await;
    let full = example("book-job.full.json");
    let search = example("appointment-search.request.json");
    let past = full.replace("2024-06-18", "2024-06-10");
    let cases: Vec<(&str, String)> = vec![
        ("/workorders/WO-1/followup", full.clone()),
        (
            "/workorders/WO-2/followup",
            example("book-job.minimal.json"),
        ),
        ("/workorders/WO-3/followup", past),
        ("/workorders/WO-4/followup", "{\"Account\": 7}".into()),
        ("/appointments/search", search),
    ];
    for (path, body) in &cases {
        let n = native.post(path, body).await;
        let s = sandboxed.post(path, body).await;
        assert_eq!(comparable(&n), comparable(&s), "{path}: {}", n.text);
        if n.status == 200 {
            assert_eq!(n.plugin, "capacity-booker@native");
        }
    }
}

#[tokio::test]
async fn native_rules_book_through_the_hosts_store_and_journal() {
    let server = native_server("").await;
    let full = example("book-job.full.json");
    let first = server.post("/workorders/WO-1/followup", &full).await;
    let second = server.post("/workorders/WO-2/followup", &full).await;
    assert_eq!(first.json["OrderNum"], "FU-00000001", "{}", first.text);
    assert_eq!(second.json["OrderNum"], "FU-00000002", "{}", second.text);
    // The sequence lives in the host's store, in the plugin's namespace.
    let stored = server.app.storage.get("capacity-booker", "sequence/order");
    assert_eq!(stored.unwrap().as_deref(), Some(&b"2"[..]));
    // A retry is answered from the journal without running the rules again.
    let retry = server
        .request("/workorders/WO-1/followup", &full)
        .send()
        .await
        .unwrap();
    assert_eq!(retry.headers()["x-followup-replayed"], "true");
    let body: serde_json::Value = retry.json().await.unwrap();
    assert_eq!(body["OrderNum"], "FU-00000001");
}

#[tokio::test]
async fn the_memory_store_books_exactly_once_and_leaves_no_file() {
    let config = test_config("[store]\nbackend = \"memory\"\n");
    let file = config.store.path.clone();
    let server = Server::serving(app(config).await).await;
    let full = example("book-job.full.json");
    let mut numbers = Vec::new();
    for id in ["WO-1", "WO-2", "WO-1"] {
        let answer = server
            .post(&format!("/workorders/{id}/followup"), &full)
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        numbers.push(answer.json["OrderNum"].as_str().unwrap().to_string());
    }
    assert_eq!(numbers, ["FU-00000001", "FU-00000002", "FU-00000001"]);
    assert!(!file.exists(), "{} was created", file.display());
}
