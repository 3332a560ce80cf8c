//! Instances: fresh per request by default; with `reuse_instances = N`, an instance serves
//! at most N requests of one route, is never shared between routes, and is dropped after a
//! failure.

use crate::support::Server;
use followup_host::config::{Config, PluginManifest, RouteConfig};

/// Echo's `count` mode answers how many calls the instance serving it has seen.
fn count(id: &str) -> String {
    format!(
        r#"{{"Account":{{"AccountNum":"A"}},"Location":{{"LocationNum":"L"}},
        "OriginalOrderNum":"{id}","OrderType":"count",
        "TimeConstraints":[{{"Period":{{"Start":"2024-06-18T13:00:00.000Z","End":"2024-06-18T17:00:00.000Z"}}}}]}}"#
    )
}

fn panics(id: &str) -> String {
    count(id).replace("\"count\"", "\"panic\"")
}

/// Plugin `echo-warm` (reuse 3) behind two routes, `/warm-a/{0}` and `/warm-b/{0}`.
async fn warm_server() -> Server {
    let echo = PluginManifest::new(followup_tests::guests::ECHO).with_reuse(3);
    let config = Config::default()
        .with_plugin("echo-warm", echo)
        .with_route(RouteConfig::book_job("/warm-a/{0}", "echo-warm").named("warm-a"))
        .with_route(RouteConfig::book_job("/warm-b/{0}", "echo-warm").named("warm-b"));
    Server::of(config).await
}

/// The `calls=N` answers of requests sent one after another to `path`.
async fn calls(server: &Server, path: &str, ids: std::ops::Range<u32>) -> Vec<String> {
    let mut seen = Vec::new();
    for i in ids {
        let answer = server
            .post(&format!("{path}/WO-{i}"), &count(&format!("{path}-{i}")))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        seen.push(answer.json["OrderNum"].as_str().unwrap().to_string());
    }
    seen
}

#[tokio::test]
async fn a_fresh_instance_serves_every_request_by_default() {
    let server = Server::start().await;
    assert_eq!(
        calls(&server, "/echo", 0..4).await,
        ["calls=1", "calls=1", "calls=1", "calls=1"]
    );
}

#[tokio::test]
async fn a_warm_instance_serves_at_most_n_requests_of_its_route() {
    let server = warm_server().await;
    assert_eq!(
        calls(&server, "/warm-a", 0..7).await,
        [
            "calls=1", "calls=2", "calls=3", "calls=1", "calls=2", "calls=3", "calls=1"
        ]
    );
}

#[tokio::test]
async fn routes_never_share_an_instance() {
    let server = warm_server().await;
    let mut seen = Vec::new();
    for i in 0..2 {
        seen.extend(calls(&server, "/warm-a", i * 10..i * 10 + 1).await);
        seen.extend(calls(&server, "/warm-b", i * 10..i * 10 + 1).await);
    }
    // Each route counts on its own instance: a, b, a, b.
    assert_eq!(seen, ["calls=1", "calls=1", "calls=2", "calls=2"]);
}

#[tokio::test]
async fn an_instance_that_failed_is_never_used_again() {
    let server = warm_server().await;
    assert_eq!(
        calls(&server, "/warm-a", 0..2).await,
        ["calls=1", "calls=2"]
    );
    let failed = server.post("/warm-a/WO-p", &panics("p")).await;
    assert_eq!(failed.status, 500, "{}", failed.text);
    assert_eq!(failed.error_type(), "plugin-trap", "{}", failed.text);
    // The next request gets a new instance, not the one that trapped.
    assert_eq!(
        calls(&server, "/warm-a", 10..12).await,
        ["calls=1", "calls=2"]
    );
    assert_eq!(
        server.app.plugin("echo-warm").unwrap().warm.idle_count(),
        1,
        "one idle instance, of route warm-a"
    );
    // ... which the admin API's metrics report.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}/metrics", listener.local_addr().unwrap());
    let router = followup_host::admin::router(server.app.clone(), "t".into());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let metrics = server
        .client
        .get(admin)
        .bearer_auth("t")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let idle = metrics
        .lines()
        .find(|l| l.starts_with("followup_plugin_idle_instances{plugin=\"echo-warm\""))
        .unwrap_or_else(|| panic!("no idle gauge in\n{metrics}"));
    assert!(idle.ends_with(" 1"), "{idle}");
}
