//! A plugin that traps, loops or answers garbage costs one request a clear error; the
//! host keeps serving.

use crate::support::{
    Answer, HOSTILE_TIMEOUT_MS, HUGE_RESPONSE_TIMEOUT_MS, Server, example, hostile, send, served,
};
use followup_host::config::{Config, Limits, RuntimeConfig, StatusMode};
use std::time::{Duration, Instant};

async fn good_booking_still_succeeds(server: &Server) {
    let answer = server
        .post(
            "/workorders/WO-1/followup",
            &example("book-job.minimal.json"),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[tokio::test]
async fn a_trapping_plugin_costs_one_request() {
    let server = Server::with_config("status_mode = \"http\"").await;
    let answer = server
        .post("/trap/WO-1", &example("book-job.minimal.json"))
        .await;
    answer.assert_error(502, "plugin-trap");
    let detail = answer.json["detail"].as_str().unwrap();
    assert!(detail.contains("plugin trap@sha256:"), "{detail}");
    assert!(detail.contains("trapped"), "{detail}");
    assert!(detail.contains("(request "), "{detail}");
    good_booking_still_succeeds(&server).await;
    // The same plugin serves the next request from a fresh instance.
    let again = server
        .post("/trap/WO-2", &example("book-job.minimal.json"))
        .await;
    again.assert_error(502, "plugin-trap");
}

#[tokio::test]
async fn a_looping_plugin_is_stopped_at_its_deadline() {
    let server = Server::start().await;
    let answer = server
        .post("/looper/WO-1", &example("book-job.minimal.json"))
        .await;
    answer.assert_error(500, "plugin-timeout");
    let detail = answer.json["detail"].as_str().unwrap();
    assert!(detail.contains("plugin looper@sha256:"), "{detail}");
    assert!(detail.contains("timed out after 200 ms"), "{detail}");
    good_booking_still_succeeds(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_plugin_does_not_stall_other_requests() {
    let server = Server::start().await;
    let body = example("book-job.minimal.json");
    // Eight runaway calls would hold every worker of a 2-core machine if guests did not
    // yield; bookings in between must still be answered.
    let mut loops = tokio::task::JoinSet::new();
    for i in 0..8 {
        loops.spawn(send(server.request(&format!("/looper/WO-{i}"), &body)));
    }
    let loops = async { loops.join_all().await };
    let bookings = async {
        let mut answers = Vec::new();
        for i in 0..5 {
            answers.push(
                server
                    .post(&format!("/workorders/WO-{i}/followup"), &body)
                    .await,
            );
        }
        answers
    };
    let (looped, answers) = tokio::join!(loops, bookings);
    for answer in looped {
        answer.assert_error(500, "plugin-timeout");
    }
    for answer in answers {
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
}

#[tokio::test]
async fn a_malformed_answer_is_refused_before_it_leaves() {
    let server = Server::with_config("status_mode = \"http\"").await;
    let body = example("book-job.minimal.json").replace(
        "\"OriginalOrderNum\"",
        "\"OrderType\": \"bad-result\", \"OriginalOrderNum\"",
    );
    let answer = server.post("/echo/WO-1", &body).await;
    answer.assert_error(502, "plugin-bad-result");
    let detail = answer.json["detail"].as_str().unwrap();
    assert!(detail.contains("plugin echo@sha256:"), "{detail}");
    assert!(detail.contains("OrderNum is empty"), "{detail}");
    good_booking_still_succeeds(&server).await;
}

/// Sends a booking to the hostile plugin `behaviour`; the answer and how long it took.
async fn provoke(server: &Server, behaviour: &str) -> (Answer, Duration) {
    let started = Instant::now();
    let answer = server
        .post(
            &format!("/hostile/{behaviour}/WO-1"),
            &example("book-job.minimal.json"),
        )
        .await;
    (answer, started.elapsed())
}

/// Every hostile behaviour costs exactly its own request: the right error type, an answer
/// within the deadline plus 50 ms, and a good plugin answering right after.
#[tokio::test]
async fn each_hostile_behaviour_gets_its_error_type_and_the_host_keeps_serving() {
    let server = Server::with_config("status_mode = \"http\"").await;
    let cases: &[(&str, u16, &str, &str)] = &[
        ("loop", 504, "plugin-timeout", "timed out after 200 ms"),
        (
            "host-call-loop",
            504,
            "plugin-timeout",
            "timed out after 200 ms",
        ),
        ("sleep", 504, "plugin-timeout", "timed out after 200 ms"),
        ("memory-bomb", 502, "plugin-memory-limit", "memory limit"),
        ("recursion", 502, "plugin-stack-overflow", "Wasm stack"),
        ("panic", 502, "plugin-trap", "trapped"),
        ("unreachable", 502, "plugin-trap", "unreachable"),
        (
            "huge-response",
            502,
            "plugin-response-too-large",
            "over its max_response_bytes",
        ),
        // What the sandbox denies fails inside the guest, which reports what it saw.
        ("read-file", 500, "booking-failed", "denied"),
        ("read-env", 500, "booking-failed", "env vars 0, args 0"),
        ("open-socket", 500, "booking-failed", "denied"),
    ];
    for (behaviour, status, kind, says) in cases {
        let (answer, took) = provoke(&server, behaviour).await;
        answer.assert_error(*status, kind);
        let detail = answer.json["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{behaviour}: {detail}");
        if kind.starts_with("plugin-") {
            assert!(
                detail.contains(&format!("plugin hostile-{behaviour}@sha256:")),
                "{behaviour}: {detail}"
            );
            assert!(detail.contains("(request "), "{behaviour}: {detail}");
        }
        let deadline = match *behaviour {
            "huge-response" => HUGE_RESPONSE_TIMEOUT_MS,
            _ => HOSTILE_TIMEOUT_MS,
        };
        let bound = Duration::from_millis(deadline + 50);
        assert!(took < bound, "{behaviour} answered after {took:?}");
        assert_eq!(
            server
                .app
                .metrics
                .failure_count(&format!("hostile-{behaviour}"), kind),
            1
        );
        good_booking_still_succeeds(&server).await;
    }
}

#[tokio::test]
async fn a_log_flood_is_truncated_not_fatal() {
    let server = Server::start().await;
    let (answer, _) = provoke(&server, "log-flood").await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.json["OrderNum"], "FU-FLOOD");
}

#[tokio::test]
async fn a_socket_to_a_listening_local_server_is_still_refused() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let sock = hostile("open-socket", Limits::default()).with_value("socket", target);
    let server = Server::of(served(Config::default(), "sock", sock)).await;
    let answer = server
        .post("/sock/WO-1", &example("book-job.minimal.json"))
        .await;
    answer.assert_error(500, "booking-failed");
    assert!(
        answer.json["detail"].as_str().unwrap().contains("denied"),
        "{}",
        answer.text
    );
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "the guest reached the listener");
}

#[tokio::test]
async fn an_instruction_budget_stops_a_loop_deterministically() {
    let config = Config {
        status_mode: StatusMode::Http,
        runtime: RuntimeConfig {
            fuel: true,
            max_instances: 16,
            ..RuntimeConfig::default()
        },
        ..Config::default()
    };
    let fuel = hostile(
        "loop",
        Limits {
            max_fuel: Some(1_000_000),
            timeout_ms: 5000,
            ..Limits::default()
        },
    );
    let server = Server::of(served(config, "fuel", fuel)).await;
    let answer = server
        .post("/fuel/WO-1", &example("book-job.minimal.json"))
        .await;
    answer.assert_error(504, "plugin-out-of-fuel");
    assert!(
        answer.json["detail"]
            .as_str()
            .unwrap()
            .contains("budget 1000000")
    );
}

#[tokio::test]
async fn a_plugin_over_its_concurrency_queues_then_is_busy() {
    let config = Config {
        status_mode: StatusMode::Http,
        runtime: RuntimeConfig {
            queue_timeout_ms: 50,
            max_instances: 16,
            ..RuntimeConfig::default()
        },
        ..Config::default()
    };
    let narrow = hostile(
        "loop",
        Limits {
            max_concurrency: 1,
            timeout_ms: 300,
            ..Limits::default()
        },
    );
    let server = Server::of(served(config, "narrow", narrow)).await;
    let body = example("book-job.minimal.json");
    let (first, second) = tokio::join!(server.post("/narrow/WO-1", &body), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        server.post("/narrow/WO-2", &body).await
    });
    first.assert_error(504, "plugin-timeout");
    second.assert_error(503, "plugin-busy");
    good_booking_still_succeeds(&server).await;
}
