//! A plugin that traps, loops or answers garbage costs one request a clear error; the
//! host keeps serving.

use crate::support::{Server, example};

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

#[tokio::test]
async fn a_looping_plugin_does_not_stall_other_requests() {
    let server = Server::start().await;
    let body = example("book-job.minimal.json");
    // Two runaway calls would hold both workers of a 2-core machine if guests did not
    // yield; bookings in between must still be answered.
    let loops = async {
        tokio::join!(
            server.post("/looper/WO-1", &body),
            server.post("/looper/WO-2", &body)
        )
    };
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
    let ((a, b), answers) = tokio::join!(loops, bookings);
    a.assert_error(500, "plugin-timeout");
    b.assert_error(500, "plugin-timeout");
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
