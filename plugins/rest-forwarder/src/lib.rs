//! REST forwarder: books in the customer's own system. Each Book Job becomes one REST call
//! to the customer's back end, and its answer (or failure) becomes the contract's answer;
//! appointment searches are answered from the back end's slot endpoint.
//!
//! Configuration (`[plugins.NAME.config]`, secrets under `[plugins.NAME.secrets]`):
//! - `base_url` (required): e.g. `https://fsm.acme.example` (its origin must be granted
//!   under `[plugins.NAME.http] allow`);
//! - `book_path` (`/bookings/{0}`; `{0}` is the WorkOrderID) and `slots_path` (`/slots`);
//! - `book_body`: a JSON template of the request body (below); default
//!   `{"workOrderId":"$ctx.work_order_id","start":"$slot.start","end":"$slot.end","job":"$job"}`;
//! - `order_number_pointer` (`/orderNumber`) and `parts_orders_pointer` (`/partsOrders`):
//!   where the back end's answer holds the order number and the parts orders
//!   (`[{"number": "...", "parts": ["..."]}]`);
//! - `api_key` (a secret): sent as `Authorization: Bearer <key>`.
//!
//! In the template, a string value is replaced when it is `$job` (the whole Book Job, as the
//! contract's JSON), `$job/POINTER` (a JSON pointer into it, e.g. `$job/Account/AccountNum`),
//! `$slot.start`, `$slot.end`, `$ctx.work_order_id`, `$ctx.route` or
//! `$ctx.idempotency_key`; other values are sent as written.
//!
//! Every booking call carries the host's idempotency key as `Idempotency-Key`, so a retry
//! never books twice in the back end either.
//!
//! The back end's answers map to the contract: 2xx with an order number → 200; 409 →
//! `slot-unavailable`; 400 and 422 → `invalid-request`; any other status, an answer that is
//! not the expected JSON, a timeout or a refused call → `upstream-failure` saying which.

use followup_sdk::http::{HttpError, Method, Request, Response};
use followup_sdk::serde_json::{self, Value, json};
use followup_sdk::time::Slot;
use followup_sdk::*;

/// The forwarder's settings, read from the plugin's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub base_url: String,
    pub book_path: String,
    pub slots_path: String,
    pub book_body: Value,
    pub order_number_pointer: String,
    pub parts_orders_pointer: String,
    pub api_key: Option<String>,
}

impl Settings {
    /// Reads the settings through `get` (the host's config service in production).
    pub fn from_config(get: impl Fn(&str) -> Option<String>) -> Result<Settings, BookingError> {
        let base_url = get("base_url")
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| BookingError::internal("rest-forwarder: base_url is not configured"))?;
        let book_body = match get("book_body") {
            Some(text) => serde_json::from_str(&text).map_err(|e| {
                BookingError::internal(format!("rest-forwarder: book_body is not JSON: {e}"))
            })?,
            None => json!({
                "workOrderId": "$ctx.work_order_id",
                "start": "$slot.start",
                "end": "$slot.end",
                "job": "$job",
            }),
        };
        Ok(Settings {
            base_url: base_url.trim().trim_end_matches('/').to_string(),
            book_path: get("book_path").unwrap_or_else(|| "/bookings/{0}".into()),
            slots_path: get("slots_path").unwrap_or_else(|| "/slots".into()),
            book_body,
            order_number_pointer: get("order_number_pointer")
                .unwrap_or_else(|| "/orderNumber".into()),
            parts_orders_pointer: get("parts_orders_pointer")
                .unwrap_or_else(|| "/partsOrders".into()),
            api_key: get("api_key").filter(|k| !k.is_empty()),
        })
    }

    fn request(&self, method: Method, path: &str) -> Request {
        let request = Request::new(method, format!("{}{path}", self.base_url));
        match &self.api_key {
            Some(key) => request.header("authorization", &format!("Bearer {key}")),
            None => request,
        }
    }

    /// The back-end request for a booking.
    pub fn book_request(
        &self,
        ctx: &RequestContext,
        job: &BookJob,
    ) -> Result<Request, BookingError> {
        let slot = job.slot().ok_or_else(|| {
            BookingError::invalid("$.TimeConstraints", "has no bookable slot", "")
        })?;
        let job_json = json::encode::<BookJob>(job)
            .map_err(|e| BookingError::internal(format!("cannot encode the Book Job: {e:?}")))?;
        let body = fill(&self.book_body, ctx, &job_json, Some(slot));
        let work_order = ctx.work_order_id.as_deref().unwrap_or("");
        let path = self.book_path.replace("{0}", &encode_segment(work_order));
        Ok(self
            .request(Method::Post, &path)
            .header("idempotency-key", &ctx.idempotency_key)
            .json(&body))
    }

    /// The contract's answer for the back end's answer to a booking.
    pub fn book_answer(
        &self,
        sent: Result<Response, HttpError>,
    ) -> Result<BookJobResponse, BookingError> {
        let (response, body) = checked(sent)?;
        let order_num = body
            .pointer(&self.order_number_pointer)
            .and_then(|v| match v {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .ok_or_else(|| {
                BookingError::upstream(format!(
                    "the back end answered {} without an order number at {}: {}",
                    response.status,
                    self.order_number_pointer,
                    snippet(&response.body)
                ))
            })?;
        let ordered_parts = body
            .pointer(&self.parts_orders_pointer)
            .and_then(Value::as_array)
            .map(|orders| {
                orders
                    .iter()
                    .map(|o| OrderedPart {
                        part_order_num: o["number"].as_str().unwrap_or_default().to_string(),
                        parts: o["parts"]
                            .as_array()
                            .map(|p| {
                                p.iter()
                                    .filter_map(|x| x.as_str().map(String::from))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(BookJobResponse {
            order_num,
            ordered_parts,
        })
    }

    /// The back-end request for an appointment search: the requested windows and the job.
    pub fn search_request(
        &self,
        ctx: &RequestContext,
        query: &AppointmentSearch,
    ) -> Result<Request, BookingError> {
        let job_json = json::encode::<BookJob>(query)
            .map_err(|e| BookingError::internal(format!("cannot encode the query: {e:?}")))?;
        let windows: Vec<Value> = query
            .slots()
            .into_iter()
            .map(|s| json!({ "start": s.start.to_string(), "end": s.end.to_string() }))
            .collect();
        Ok(self
            .request(Method::Post, &self.slots_path)
            .header("x-request-id", &ctx.request_id)
            .json(&json!({ "windows": windows, "job": job_json })))
    }

    /// The contract's answer for the back end's slots: `{"slots": [{"id", "start", "end",
    /// "description"}]}`.
    pub fn search_answer(
        &self,
        sent: Result<Response, HttpError>,
    ) -> Result<AppointmentSearchResponse, BookingError> {
        let (response, body) = checked(sent)?;
        let slots = body["slots"].as_array().ok_or_else(|| {
            BookingError::upstream(format!(
                "the back end answered {} without a slots list: {}",
                response.status,
                snippet(&response.body)
            ))
        })?;
        let time_constraints: Vec<TimeConstraint> = slots
            .iter()
            .filter_map(|s| {
                let slot = Slot {
                    start: time::Timestamp::parse(s["start"].as_str()?)?,
                    end: time::Timestamp::parse(s["end"].as_str()?)?,
                };
                Some(slot.offered(
                    s["id"].as_str().map(String::from),
                    s["description"].as_str().map(String::from),
                ))
            })
            .collect();
        Ok(AppointmentSearchResponse {
            status_msg: Some(format!(
                "{} open slots from the back end",
                time_constraints.len()
            )),
            time_constraints,
        })
    }
}

/// A 2xx answer with a JSON body, or the contract's error for anything else.
fn checked(sent: Result<Response, HttpError>) -> Result<(Response, Value), BookingError> {
    let response = sent.map_err(|e| match e {
        HttpError::Timeout(m) => {
            BookingError::upstream(format!("the back end did not answer in time ({m})"))
        }
        HttpError::Denied(m) => {
            BookingError::upstream(format!("the host refused the call to the back end: {m}"))
        }
        other => BookingError::upstream(format!("the back end could not be reached: {other}")),
    })?;
    let message = || back_end_message(&response.body);
    match response.status {
        200..=299 => {}
        409 => {
            return Err(BookingError::slot_unavailable(format!(
                "the back end refused the slot: {}",
                message()
            )));
        }
        400 | 422 => {
            return Err(BookingError::invalid(
                "$",
                format!(
                    "was refused by the back end ({}): {}",
                    response.status,
                    message()
                ),
                "",
            ));
        }
        status => {
            return Err(BookingError::upstream(format!(
                "the back end answered {status}: {}",
                message()
            )));
        }
    }
    let body: Value = serde_json::from_slice(&response.body).map_err(|e| {
        BookingError::upstream(format!(
            "the back end answered {} with something that is not JSON ({e}): {}",
            response.status,
            snippet(&response.body)
        ))
    })?;
    Ok((response, body))
}

/// The back end's own explanation: a JSON `message` or `error`, else the start of the text.
fn back_end_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            ["message", "error", "detail"]
                .iter()
                .find_map(|k| v[*k].as_str().map(String::from))
        })
        .unwrap_or_else(|| snippet(body))
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    if out.is_empty() {
        "(empty body)".into()
    } else {
        out
    }
}

/// Percent-encodes a path segment.
fn encode_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `template` with its placeholders replaced (see the crate docs).
pub fn fill(template: &Value, ctx: &RequestContext, job: &Value, slot: Option<Slot>) -> Value {
    match template {
        Value::String(s) => match s.as_str() {
            "$job" => job.clone(),
            "$slot.start" => slot.map_or(Value::Null, |s| s.start.to_string().into()),
            "$slot.end" => slot.map_or(Value::Null, |s| s.end.to_string().into()),
            "$ctx.work_order_id" => ctx.work_order_id.clone().map_or(Value::Null, Value::from),
            "$ctx.route" => ctx.route.clone().into(),
            "$ctx.idempotency_key" => ctx.idempotency_key.clone().into(),
            other => match other.strip_prefix("$job/") {
                Some(pointer) => job
                    .pointer(&format!("/{pointer}"))
                    .cloned()
                    .unwrap_or(Value::Null),
                None => template.clone(),
            },
        },
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| fill(v, ctx, job, slot)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), fill(v, ctx, job, slot)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The plugin: reads its settings per request (a fresh instance serves each request).
pub struct RestForwarder;

impl BookingPlugin for RestForwarder {
    fn book(ctx: RequestContext, job: BookJob) -> Result<BookJobResponse, BookingError> {
        let settings = Settings::from_config(config::get)?;
        let request = settings.book_request(&ctx, &job)?;
        let answer = settings.book_answer(request.send());
        log::outcome(&answer);
        answer
    }
}

impl SearchPlugin for RestForwarder {
    fn search(
        ctx: RequestContext,
        query: AppointmentSearch,
    ) -> Result<AppointmentSearchResponse, BookingError> {
        let settings = Settings::from_config(config::get)?;
        let request = settings.search_request(&ctx, &query)?;
        settings.search_answer(request.send())
    }
}

followup_sdk::export_plugin!(RestForwarder: book, search);

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        Settings::from_config(|k| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string())
        })
        .unwrap()
    }

    fn ctx() -> RequestContext {
        RequestContext {
            work_order_id: Some("WO 7/1".into()),
            route: "acme".into(),
            request_id: "r-1".into(),
            idempotency_key: "k".repeat(64),
            claims: None,
        }
    }

    fn job() -> BookJob {
        json::decode_text::<BookJob>(
            r#"{"Account":{"AccountNum":"ACC-1"},"TimeConstraints":[{"Period":{"Start":"2024-06-18T13:00:00Z","End":"2024-06-18T17:00:00Z"}}]}"#,
        )
        .unwrap()
    }

    fn answer(status: u16, body: &str) -> Result<Response, HttpError> {
        Ok(Response {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        })
    }

    #[test]
    fn the_request_follows_the_template_and_carries_the_key() {
        let s = settings(&[
            ("base_url", "http://127.0.0.1:9000/"),
            ("api_key", "secret"),
            (
                "book_body",
                r#"{"account":"$job/Account/AccountNum","from":"$slot.start","wo":"$ctx.work_order_id","fixed":3}"#,
            ),
        ]);
        let r = s.book_request(&ctx(), &job()).unwrap();
        assert_eq!(r.url, "http://127.0.0.1:9000/bookings/WO%207%2F1");
        assert!(
            r.headers
                .contains(&("idempotency-key".into(), "k".repeat(64)))
        );
        assert!(
            r.headers
                .contains(&("authorization".into(), "Bearer secret".into()))
        );
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body,
            json!({"account":"ACC-1","from":"2024-06-18T13:00:00.000Z","wo":"WO 7/1","fixed":3})
        );
    }

    #[test]
    fn back_end_answers_map_to_the_contract() {
        let s = settings(&[("base_url", "http://b")]);
        let ok = s
            .book_answer(answer(
                201,
                r#"{"orderNumber":"ACME-1","partsOrders":[{"number":"PO-1","parts":["P1"]}]}"#,
            ))
            .unwrap();
        assert_eq!(ok.order_num, "ACME-1");
        assert_eq!(ok.ordered_parts[0].parts, vec!["P1"]);
        let kind = |r: Result<BookJobResponse, BookingError>| match r.unwrap_err() {
            BookingError::SlotUnavailable(_) => "slot-unavailable",
            BookingError::InvalidRequest(_) => "invalid-request",
            BookingError::UpstreamFailure(_) => "upstream-failure",
            _ => "other",
        };
        assert_eq!(
            kind(s.book_answer(answer(409, r#"{"message":"taken"}"#))),
            "slot-unavailable"
        );
        assert_eq!(kind(s.book_answer(answer(422, "bad"))), "invalid-request");
        assert_eq!(kind(s.book_answer(answer(503, "down"))), "upstream-failure");
        assert_eq!(
            kind(s.book_answer(answer(200, "<html>"))),
            "upstream-failure"
        );
        assert_eq!(kind(s.book_answer(answer(200, "{}"))), "upstream-failure");
        assert_eq!(
            kind(s.book_answer(Err(HttpError::Timeout("t".into())))),
            "upstream-failure"
        );
        assert!(
            Settings::from_config(|_| None).is_err(),
            "base_url is required"
        );
    }
}
