//! The OpenAPI description against the decoder and the handler: every key the decoder
//! reads is a property of its record's schema and the reverse, every route is named, and
//! every status a route can answer with in either mode is listed with the error body.

use crate::admin::Admin;
use crate::support::{Server, example_json};
use followup_host::config::{Config, StatusMode};
use followup_host::contract::codec::schema::{Definitions, Describe, Record};
use followup_host::contract::types::*;
use followup_host::contract::{Problem, RouteKind, decode};
use followup_host::error::{ApiError, ErrorKind};
use followup_host::openapi::{self, Operation};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// One record of the contract: its name, the keys its decoder reads, its decoder.
struct Entry {
    name: &'static str,
    keys: &'static [&'static str],
    decode: fn(&Value) -> Result<(), Vec<Problem>>,
}

macro_rules! entries {
    ($($ty:ty),* $(,)?) => {
        vec![$(Entry {
            name: <$ty as Record>::NAME,
            keys: <$ty as Record>::KEYS,
            decode: |v| decode::<$ty>(v).map(|_| ()),
        }),*]
    };
}

/// Every record `record!` maps.
fn records() -> Vec<Entry> {
    entries!(
        Period,
        TimeConstraint,
        Phone,
        Contact,
        Address,
        Account,
        Location,
        FlexViewItem,
        FlexViewGroup,
        Asset,
        ProdAttrs,
        SupersededPart,
        RequiredPart,
        BookJob,
    )
}

/// The schemas the requests refer to, as the document holds them.
fn request_definitions() -> Definitions {
    let mut defs = Definitions::new();
    BookJob::describe(&mut defs);
    defs
}

fn property_names(schema: &Value) -> BTreeSet<String> {
    schema["properties"]
        .as_object()
        .expect("a record schema has properties")
        .keys()
        .cloned()
        .collect()
}

#[test]
fn every_key_the_decoder_reads_is_a_property_of_its_schema_and_the_reverse() {
    let defs = request_definitions();
    let records = records();
    for (name, schema) in &defs {
        let entry = records
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name} is described but not in this test's list"));
        let keys: BTreeSet<String> = entry.keys.iter().map(|k| k.to_string()).collect();
        assert_eq!(property_names(schema), keys, "{name}");
    }
    for entry in &records {
        assert!(
            defs.contains_key(entry.name),
            "{} is decoded but no request schema reaches it",
            entry.name
        );
    }
}

/// A value the property's schema refuses, and so the decoder must too.
fn wrong_value_for(property: &Value) -> Value {
    let allows_boolean = property["type"]
        .as_array()
        .is_some_and(|t| t.contains(&json!("boolean")));
    if allows_boolean {
        json!("yes")
    } else {
        json!(true)
    }
}

#[test]
fn every_property_of_a_schema_is_read_by_the_decoder() {
    // A key the decoder did not read would be kept as an extension, without a problem.
    let defs = request_definitions();
    for entry in records() {
        for (key, property) in defs[entry.name]["properties"].as_object().unwrap() {
            let body = json!({ key.as_str(): wrong_value_for(property) });
            let problems = (entry.decode)(&body)
                .expect_err(&format!("{}.{key}: a wrong value is refused", entry.name));
            let path = format!("$.{key}");
            assert!(
                problems.iter().any(|p| p.path.starts_with(&path)),
                "{}.{key}: {problems:?}",
                entry.name
            );
            // And `null` is absent, as the schema says.
            let body = json!({ key.as_str(): null });
            assert!((entry.decode)(&body).is_ok(), "{}.{key}: null", entry.name);
        }
    }
}

/// Every key of `value` is a property of `schema` (following references), at every level.
fn assert_described(defs: &Definitions, schema: &Value, value: &Value, at: &str) {
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => &defs[r.trim_start_matches("#/components/schemas/")],
        None => schema,
    };
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        for s in any {
            if s.get("$ref").is_some() {
                assert_described(defs, s, value, at);
            }
        }
        return;
    }
    match value {
        Value::Object(map) => {
            let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
                return; // FlexAttrs: keys are the customer's IDs.
            };
            for (key, v) in map {
                let property = properties
                    .get(key)
                    .unwrap_or_else(|| panic!("{at}.{key} is not in the schema"));
                assert_described(defs, property, v, &format!("{at}.{key}"));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                assert_described(defs, &schema["items"], item, &format!("{at}[{i}]"));
            }
        }
        _ => {}
    }
}

#[test]
fn the_spec_examples_decode_and_every_key_in_them_is_described() {
    let defs = request_definitions();
    for name in [
        "book-job.full.json",
        "book-job.minimal.json",
        "appointment-search.request.json",
    ] {
        let example = example_json(name);
        decode::<BookJob>(&example).unwrap_or_else(|p| panic!("{name}: {p:?}"));
        assert_described(&defs, &defs["BookJob"], &example, "$");
    }
    let mut defs = Definitions::new();
    let booked = BookJobResponse::describe(&mut defs);
    let example = example_json("book-job.response.json");
    decode::<BookJobResponse>(&example).unwrap();
    assert_described(&defs, &booked, &example, "$");
    let search = AppointmentSearchResponse::describe(&mut defs);
    let example = example_json("appointment-search.response.json");
    decode::<AppointmentSearchResponse>(&example).unwrap();
    assert_described(&defs, &search, &example, "$");
}

#[test]
fn the_answers_schemas_hold_every_key_the_encoder_writes() {
    let mut defs = Definitions::new();
    let booked = BookJobResponse::describe(&mut defs);
    let answer = BookJobResponse {
        order_num: "FU-1".into(),
        ordered_parts: vec![OrderedPart {
            part_order_num: "PO-1".into(),
            parts: vec!["W1".into()],
        }],
    };
    let written = followup_host::contract::encode::<BookJobResponse>(&answer).unwrap();
    assert_described(&defs, &booked, &written, "$");
    let schema = &defs["BookJobResponse"];
    assert_eq!(
        property_names(schema),
        written
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(
        property_names(&defs["OrderedPart"]),
        BTreeSet::from(["PartOrderNum".to_string(), "Parts".to_string()])
    );
}

fn example_config(mode: StatusMode) -> Config {
    let mut config = Config::example("capacity_booker.wasm".into());
    config.status_mode = mode;
    config
}

#[test]
fn the_document_names_every_route_and_every_status_of_both_modes() {
    for mode in [StatusMode::Documented, StatusMode::Http] {
        let config = example_config(mode);
        let document = openapi::of_config(&config).unwrap();
        assert_eq!(document["openapi"], "3.1.0");
        let operations = Operation::of_config(&config).unwrap();
        assert_eq!(operations.len(), config.routes.len());
        let kinds: BTreeSet<&str> = operations.iter().map(|o| o.kind.label()).collect();
        assert_eq!(kinds.len(), 3, "the example serves every kind");
        for op in &operations {
            let path = op.template.path(openapi::WORK_ORDER_ID);
            let post = &document["paths"][&path]["post"];
            assert!(post.is_object(), "{path} in {mode:?}");
            let listed: Vec<u16> = post["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|s| s.parse().unwrap())
                .collect();
            assert_eq!(listed, op.statuses(mode), "{path} in {mode:?}");
            for (status, response) in post["responses"].as_object().unwrap() {
                let schema = &response["content"]["application/json"]["schema"];
                if status != "200" {
                    assert_eq!(
                        schema["allOf"][0]["$ref"], "#/components/schemas/ErrorBody",
                        "{path} {status}"
                    );
                }
            }
            let security = post["security"].as_array().unwrap();
            assert_eq!(
                security.is_empty(),
                op.kind == RouteKind::Authentication,
                "{path}"
            );
        }
        let statuses: BTreeSet<u16> = operations.iter().flat_map(|o| o.statuses(mode)).collect();
        match mode {
            StatusMode::Documented => assert_eq!(statuses, BTreeSet::from([200, 401, 500])),
            StatusMode::Http => {
                for status in [
                    400, 401, 404, 405, 408, 409, 413, 415, 422, 429, 431, 500, 502, 503, 504,
                ] {
                    assert!(statuses.contains(&status), "{status}");
                }
            }
        }
    }
}

#[test]
fn in_http_mode_a_rules_refusal_is_422_and_400_means_the_schema() {
    let refusal = ApiError::from_booking(BookingError::InvalidRequest(InvalidRequestError {
        message: "no slot".into(),
        params: Vec::new(),
    }));
    assert_eq!(refusal.kind, ErrorKind::RequestRefused);
    assert_eq!(refusal.kind.code(), "invalid-request");
    assert_eq!(refusal.kind.status(StatusMode::Http).as_u16(), 422);
    assert_eq!(refusal.kind.status(StatusMode::Documented).as_u16(), 500);
    assert_eq!(
        ErrorKind::InvalidRequest.status(StatusMode::Http).as_u16(),
        400
    );
}

#[tokio::test]
async fn the_admin_api_serves_the_document_of_the_running_routes_without_a_token() {
    let server = Server::with_config("status_mode = \"http\"").await;
    let admin = Admin::start(&server).await;
    let (status, text) = admin.call(None, "/openapi.json", None).await;
    assert_eq!(status, 200, "{text}");
    let document: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(document, openapi::of_app(&server.app));
    for route in server.app.routes.routes() {
        let path = route.template().path(openapi::WORK_ORDER_ID);
        assert!(document["paths"][&path]["post"].is_object(), "{path}");
    }
}
