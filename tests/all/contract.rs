//! JSON ↔ WIT ↔ JSON: what the host decodes is exactly what the plugin sees, and what the
//! plugin answers is exactly what leaves.

use crate::support::{Server, example_json};
use followup_host::contract::types::{AppointmentSearchResponse, BookJob, BookJobResponse};
use followup_host::contract::{decode, encode};
use serde_json::{Value, json};

/// The Book Job as the echo plugin saw it, encoded back to JSON by the SDK.
async fn through_the_plugin(server: &Server, body: &Value) -> Value {
    let answer = server.post("/echo/WO-1", &body.to_string()).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    serde_json::from_str(answer.json["OrderNum"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn every_example_request_round_trips_through_the_plugin() {
    let server = Server::start().await;
    for name in [
        "book-job.full.json",
        "book-job.minimal.json",
        "appointment-search.request.json",
    ] {
        let sent = example_json(name);
        assert_eq!(through_the_plugin(&server, &sent).await, sent, "{name}");
    }
}

#[tokio::test]
async fn unknown_keys_reach_the_plugin_at_every_level() {
    let server = Server::start().await;
    let mut sent = example_json("book-job.full.json");
    sent["PriorityCode"] = json!({"Level": 2, "Reasons": ["VIP"]});
    sent["Location"]["Integrations"] = json!({"crm": "ok"});
    sent["Location"]["Edited"] = json!(true);
    sent["Account"]["LoyaltyTier"] = json!("gold");
    sent["RequiredParts"][0]["Distance"] = json!(12.5);
    sent["TimeConstraints"][0]["Period"]["TimeZone"] = json!("America/New_York");
    assert_eq!(through_the_plugin(&server, &sent).await, sent);
}

#[tokio::test]
async fn loose_spellings_are_normalised_not_lost() {
    let server = Server::start().await;
    let mut sent = example_json("book-job.full.json");
    sent["Location"]["Address"]["Lat"] = json!("38.9339");
    sent["Location"]["Address"]["Lon"] = json!("");
    sent["RequiredParts"][0]["Qty:"] = sent["RequiredParts"][0]["Qty"].take();
    sent["RequiredParts"][0]
        .as_object_mut()
        .unwrap()
        .remove("Qty");
    sent["UserName"] = Value::Null;
    sent["TimeConstraints"][0]["Period"]["Start"] = json!("2024-06-18T17:00:00Z");

    let seen = through_the_plugin(&server, &sent).await;
    let mut expected = example_json("book-job.full.json");
    expected["Location"]["Address"]["Lat"] = json!(38.9339);
    expected["Location"]["Address"]
        .as_object_mut()
        .unwrap()
        .remove("Lon");
    expected.as_object_mut().unwrap().remove("UserName");
    expected["TimeConstraints"][0]["Period"]["Start"] = json!("2024-06-18T17:00:00Z");
    assert_eq!(seen, expected);
}

#[test]
fn response_examples_round_trip_through_the_wit_types() {
    let booked = example_json("book-job.response.json");
    let record = decode::<BookJobResponse>(&booked).unwrap();
    assert_eq!(record.order_num, "WO-2024-121907");
    assert_eq!(encode::<BookJobResponse>(&record).unwrap(), booked);

    let slots = example_json("appointment-search.response.json");
    let record = decode::<AppointmentSearchResponse>(&slots).unwrap();
    assert_eq!(record.time_constraints.len(), 3);
    assert_eq!(encode::<AppointmentSearchResponse>(&record).unwrap(), slots);
}

#[test]
fn every_type_error_is_reported_at_once_with_its_path() {
    let mut doc = example_json("book-job.full.json");
    doc["Assets"][0]["IsComponent"] = json!("no");
    doc["Assets"][0]["FlexView"][0]["Items"][1]["Label"] = json!(7);
    doc["RequiredParts"][0]["SupersededParts"][0]["ProdAttrs"]["IsBatch"] = json!(0);
    doc["RequiredParts"][0]["EstimatedDelivery"] = json!("next week");
    doc["TimeConstraints"] = json!({});
    let problems = decode::<BookJob>(&doc).unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "$.Assets[0].FlexView[0].Items[1].Label",
            "$.Assets[0].IsComponent",
            "$.RequiredParts[0].EstimatedDelivery",
            "$.RequiredParts[0].SupersededParts[0].ProdAttrs.IsBatch",
            "$.TimeConstraints",
        ]
    );
    assert_eq!(problems[1].name, "IsComponent");
    assert_eq!(problems[1].value, "no");
    assert_eq!(problems[1].reason, "must be a boolean");
}

#[test]
fn an_empty_estimated_delivery_is_accepted() {
    let mut doc = example_json("book-job.full.json");
    doc["RequiredParts"][0]["EstimatedDelivery"] = json!("");
    let job = decode::<BookJob>(&doc).unwrap();
    let parts = job.required_parts.unwrap();
    assert_eq!(parts[0].estimated_delivery.as_deref(), Some(""));
}

#[test]
fn numbers_round_trip_exactly_in_fields_and_extensions() {
    // Found by the fuzzer: without exact float parsing, the last digit of a number in an
    // unknown key changed on the way back.
    let doc = json!({
        "RequiredParts": [{ "Qty": 1.1111111111111109e46, "Price": 0.30000000000000004 }],
        "Reqarts": [{ "Qty": 1.1111111111111109e46 }],
        "Location": { "Address": { "Lat": 38.933_900_000_000_01 } },
    });
    let text = doc.to_string();
    let parsed: Value = serde_json::from_str(&text).unwrap();
    let job = decode::<BookJob>(&parsed).unwrap();
    let back = encode::<BookJob>(&job).unwrap();
    assert_eq!(back.to_string(), text);
}
