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
