//! The admin API: authentication, listing, deploy through the admission gate, rollback,
//! health and metrics.

use crate::support::{Server, example};
use followup_host::plugin::loader::MAX_REASON_BYTES;
use followup_tests::guests;
use serde_json::Value;

pub(crate) const TOKEN: &str = "admin-t0ken-for-tests";

/// The admin API of a test server, on its own listener.
pub(crate) struct Admin {
    base: String,
    client: reqwest::Client,
}

impl Admin {
    pub(crate) async fn start(server: &Server) -> Admin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = followup_host::admin::router(server.app.clone(), TOKEN.into());
        tokio::spawn(async move { axum_serve(listener, router).await });
        Admin {
            base,
            client: reqwest::Client::new(),
        }
    }

    pub(crate) async fn call(
        &self,
        post: Option<Vec<u8>>,
        path: &str,
        token: Option<&str>,
    ) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        let mut request = match post {
            Some(body) => self.client.post(url).body(body),
            None => self.client.get(url),
        };
        if let Some(t) = token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }
}

impl Admin {
    /// The entry of plugin `name` in `GET /plugins`.
    pub(crate) async fn listed(&self, name: &str) -> Value {
        let (status, text) = self.call(None, "/plugins", Some(TOKEN)).await;
        assert_eq!(status, 200, "{text}");
        let listed: Value = serde_json::from_str(&text).unwrap();
        listed["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {text}"))
            .clone()
    }
}

async fn axum_serve(listener: tokio::net::TcpListener, router: axum::Router) {
    let _ = axum::serve(listener, router).await;
}

#[tokio::test]
async fn the_admin_api_lists_deploys_rolls_back_and_reports() {
    let server = Server::start().await;
    let admin = Admin::start(&server).await;

    assert_eq!(admin.call(None, "/healthz", None).await.0, 200);
    assert_eq!(admin.call(None, "/readyz", None).await.0, 200);
    assert_eq!(admin.call(None, "/plugins", None).await.0, 401);
    assert_eq!(admin.call(None, "/plugins", Some("wrong")).await.0, 401);
    assert_eq!(
        admin
            .call(Some(vec![]), "/plugins/echo", Some("wrong"))
            .await
            .0,
        401
    );

    let echo_v1 = admin.listed("echo").await["version"]
        .as_str()
        .unwrap()
        .to_string();

    // A candidate that cannot serve the plugin's routes is refused with the reason.
    let echo = std::fs::read(guests::ECHO).unwrap();
    let (status, text) = admin
        .call(Some(echo), "/plugins/capacity-booker", Some(TOKEN))
        .await;
    assert_eq!(status, 422, "{text}");
    assert!(
        text.contains("does not export servicemobility:booking/appointments"),
        "{text}"
    );

    // A good one is deployed and answers at once.
    let hostile = std::fs::read(guests::HOSTILE).unwrap();
    let (status, text) = admin
        .call(Some(hostile), "/plugins/echo", Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{text}");
    let body = example("book-job.minimal.json");
    server
        .post("/echo/WO-1", &body)
        .await
        .assert_error(500, "booking-failed");

    // The replaced version is listed as a rollback target.
    let (_, text) = admin.call(None, "/plugins", Some(TOKEN)).await;
    let listed: Value = serde_json::from_str(&text).unwrap();
    let echo = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "echo")
        .unwrap();
    assert_eq!(
        echo["rollback_to"][0]["version"],
        echo_v1.as_str(),
        "{text}"
    );
    assert_eq!(echo["rollback_to"][0]["served_by"], "config", "{text}");

    // Rollback by version.
    let path = format!("/plugins/echo/rollback/{echo_v1}");
    let (status, text) = admin.call(Some(vec![]), &path, Some(TOKEN)).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(server.post("/echo/WO-1", &body).await.status, 200);
    let (status, _) = admin
        .call(
            Some(vec![]),
            "/plugins/echo/rollback/sha256:0123456789ab",
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 404);

    // Failures are counted per plugin version and type.
    server
        .post("/trap/WO-1", &body)
        .await
        .assert_error(500, "plugin-trap");
    let (status, text) = admin.call(None, "/metrics", Some(TOKEN)).await;
    assert_eq!(status, 200);
    let has = |prefix: &str, suffix: &str| {
        text.lines()
            .any(|l| l.starts_with(prefix) && l.ends_with(suffix))
    };
    assert!(
        text.lines().any(
            |l| l.starts_with("followup_plugin_failures_total{plugin=\"trap\"")
                && l.contains("type=\"plugin-trap\"")
                && l.ends_with(" 1")
        ),
        "{text}"
    );
    // Requests by route, plugin version and outcome, with their latency.
    let trap = server.app.plugin("trap").unwrap().ident.clone();
    let labels = format!(
        "route=\"trap\",plugin=\"trap\",version=\"{}\"",
        trap.version
    );
    assert!(
        has(
            &format!("followup_requests_total{{{labels},outcome=\"plugin-trap\"}}"),
            " 1"
        ),
        "{text}"
    );
    assert!(
        has(
            &format!("followup_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}}"),
            " 1"
        ),
        "{text}"
    );
    assert!(
        has(
            &format!("followup_request_duration_seconds_count{{{labels}}}"),
            " 1"
        ),
        "{text}"
    );
    // Two answers from the echo route's versions: one each.
    assert!(
        text.lines()
            .filter(|l| l.starts_with("followup_requests_total{route=\"echo\""))
            .count()
            == 2,
        "{text}"
    );
    // Swaps and refusals by trigger, component loads by source, versions serving.
    assert!(
        has(
            "followup_swaps_total{plugin=\"echo\",trigger=\"api\"}",
            " 1"
        ),
        "{text}"
    );
    assert!(
        has(
            "followup_swaps_total{plugin=\"echo\",trigger=\"rollback\"}",
            " 1"
        ),
        "{text}"
    );
    assert!(
        has(
            "followup_rejected_candidates_total{plugin=\"capacity-booker\",trigger=\"api\"}",
            " 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("followup_component_loads_total{source=\"memory\"}"),
        "{text}"
    );
    assert!(
        has(
            &format!(
                "followup_plugin_serving{{plugin=\"trap\",version=\"{}\"}}",
                trap.version
            ),
            " 1"
        ),
        "{text}"
    );
}

/// `len` bytes that no parser mistakes for WebAssembly (xorshift, fixed seed).
fn random_bytes(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn a_refused_upload_is_answered_with_one_bounded_line() {
    let server = Server::start().await;
    let admin = Admin::start(&server).await;
    let echo = std::fs::read(guests::ECHO).unwrap();
    let cases = [
        // wasmparser writes the magic bytes it expected and found over several lines.
        ("a few MB of random bytes", random_bytes(3 << 20)),
        ("a truncated component", echo[..echo.len() / 3].to_vec()),
        ("a core module", b"\0asm\x01\0\0\0".to_vec()),
    ];
    for (case, bytes) in cases {
        let (status, text) = admin.call(Some(bytes), "/plugins/echo", Some(TOKEN)).await;
        assert_eq!(status, 422, "{case}: {text}");
        let detail = serde_json::from_str::<Value>(&text).unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            detail.contains("not a WebAssembly component"),
            "{case}: {detail}"
        );
        assert!(!detail.contains(['\n', '\r']), "{case}: {detail}");
        assert!(
            detail.len() <= MAX_REASON_BYTES,
            "{case}: {} bytes",
            detail.len()
        );
    }
    assert_eq!(
        server
            .app
            .metrics
            .rejected_count("echo", followup_host::plugin::history::Trigger::Api),
        3
    );
}
