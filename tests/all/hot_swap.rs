//! Swapping the version behind a plugin name while requests are in flight.

use crate::support::{Server, example, runtime};
use followup_host::plugin::loader;
use followup_host::plugin::manifest::PluginManifest;
use followup_tests::guests;
use std::sync::Arc;
use std::time::Duration;

fn manifest(path: &str, config: &str) -> PluginManifest {
    toml::from_str(&format!("path = {path:?}\n[config]\n{config}")).unwrap()
}

#[tokio::test]
async fn a_request_started_on_v1_finishes_on_v1_while_v2_serves_new_ones() {
    let extra = format!(
        "[plugins.swappable]\npath = {:?}\n[plugins.swappable.config]\nbehaviour = \"slow\"\n\
         sleep_ms = \"300\"\ntag = \"v1\"\n\
         [[routes]]\npath = \"/swap/{{0}}\"\nkind = \"book-job\"\nplugin = \"swappable\"\n",
        guests::HOSTILE
    );
    let server = Server::with_config(&extra).await;
    let body = example("book-job.minimal.json");
    let v1 = server.app.plugin("swappable").unwrap();

    let slow = tokio::spawn(crate::support::send(server.request("/swap/WO-1", &body)));
    tokio::time::sleep(Duration::from_millis(100)).await;

    let v2 = loader::load_file(
        &runtime(),
        "swappable",
        &manifest(
            guests::CAPACITY_BOOKER,
            "now = \"2024-06-17T12:00:00Z\"\nutc_offset_minutes = \"-240\"",
        ),
    )
    .unwrap();
    let previous = server
        .app
        .plugins
        .replace("swappable", Arc::new(v2))
        .unwrap();
    assert_eq!(previous.ident, v1.ident);
    drop((previous, v1));

    // The old version drains: the slow request still holds it.
    let draining = server.app.plugins.draining();
    assert_eq!(draining.len(), 1, "{draining:?}");
    assert_eq!(draining[0].in_flight, 1);

    // New requests are served by v2 at once.
    let fresh = server.post("/swap/WO-2", &body).await;
    assert_eq!(fresh.status, 200, "{}", fresh.text);
    assert!(fresh.json["OrderNum"].as_str().unwrap().starts_with("FU-"));

    // The request started before the swap finishes on v1.
    let slow = slow.await.unwrap();
    assert_eq!(slow.status, 200, "{}", slow.text);
    assert_eq!(slow.json["OrderNum"], "SLOW-v1");
    assert!(server.app.plugins.draining().is_empty());
}

#[tokio::test]
async fn deploy_admits_a_new_version_refuses_a_broken_one_and_rolls_back() {
    let server = Server::start().await;
    let body = example("book-job.minimal.json");
    let booked = |answer: &crate::support::Answer| {
        answer.json["OrderNum"].as_str().unwrap_or("").to_string()
    };
    let v1 = server.app.plugin("capacity-booker").unwrap().ident.clone();
    let before = server.post("/workorders/WO-1/followup", &body).await;
    assert!(booked(&before).starts_with("FU-"), "{}", before.text);

    // The echo guest books but does not search: refused for a plugin that serves the
    // appointments route, and v1 keeps serving.
    let echo = std::fs::read(guests::ECHO).unwrap();
    let refused = server.app.deploy("capacity-booker", &echo).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("does not export servicemobility:booking/appointments"),
        "{refused}"
    );
    let garbage = server
        .app
        .deploy("capacity-booker", b"not wasm")
        .unwrap_err();
    assert!(
        garbage.to_string().contains("not a WebAssembly component"),
        "{garbage}"
    );
    assert!(server.app.deploy("nobody", &echo).is_err());
    assert_eq!(server.app.plugin("capacity-booker").unwrap().ident, v1);

    // The echo plugin's route takes a new version: its answers change.
    let hostile = std::fs::read(guests::HOSTILE).unwrap();
    let echo_v1 = server.app.plugin("echo").unwrap().ident.clone();
    let v2 = server.app.deploy("echo", &hostile).unwrap();
    assert_ne!(v2, echo_v1);
    let after = server.post("/echo/WO-1", &body).await;
    // The hostile guest without a `behaviour` answers that it has none.
    after.assert_error(500, "booking-failed");

    // Rolling back to the first version restores its answers.
    let back = server.app.rollback("echo", &echo_v1.version).unwrap();
    assert_eq!(back.version, echo_v1.version);
    let restored = server.post("/echo/WO-1", &body).await;
    assert_eq!(restored.status, 200, "{}", restored.text);
    assert!(server.app.rollback("echo", "sha256:000000000000").is_err());
}
