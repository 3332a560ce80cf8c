//! The OpenAPI 3.1 description of what the host serves, built from the route table (a
//! running [`App`]'s, or a [`Config`]'s before it runs), never kept as a file: one `POST`
//! operation per route with its kind's request and answer, the `x-access-token` security
//! scheme where the route checks tokens, and every status the active status mode can
//! answer with, each with the Standard Response Object.
//!
//! Nothing here restates the contract: the record schemas come from the codec's own tables
//! (`contract::codec::schema`, the same `record!` lists the decoder is made of) and the
//! statuses from [`ErrorKind::status`], so the document cannot say other than the host does.

use crate::App;
use crate::config::{Config, StatusMode, TokenMode};
use crate::contract::codec::schema::{Definitions, Describe, reference};
use crate::contract::types::{AppointmentSearchResponse, BookJob, BookJobResponse};
use crate::contract::{RouteKind, Template};
use crate::error::ErrorKind;
use crate::http::login::{MAX_PASSWORD_BYTES, MAX_USERNAME_BYTES};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The path parameter `{0}` stands for.
pub const WORK_ORDER_ID: &str = "WorkOrderID";

/// The security scheme of `x-access-token`.
const ACCESS_TOKEN: &str = "accessToken";

/// What the WorkOrderID segment may hold once percent-decoded: at least one character
/// that is not white space, and none of the control or text-disguising characters the
/// route refuses (`contract::route`).
const WORK_ORDER_ID_PATTERN: &str = concat!(
    r"^[^\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]*",
    r"[^\s\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]",
    r"[^\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]*$",
);

/// One route as the document shows it.
#[derive(Debug, Clone)]
pub struct Operation {
    pub name: String,
    pub kind: RouteKind,
    pub template: Template,
    /// The route checks `x-access-token` (its token mode is not `off`).
    pub token: bool,
}

impl Operation {
    /// The routes a host started with `config` serves.
    pub fn of_config(config: &Config) -> anyhow::Result<Vec<Operation>> {
        config
            .routes
            .iter()
            .map(|route| {
                let mode = &route.token.as_ref().unwrap_or(&config.token).mode;
                Ok(Operation {
                    name: route.name.clone().unwrap_or_else(|| route.path.clone()),
                    kind: route.kind,
                    template: Template::parse(&route.path, route.kind)?,
                    token: route.kind != RouteKind::Authentication && *mode != TokenMode::Off,
                })
            })
            .collect()
    }

    /// The routes `app` serves.
    pub fn of_app(app: &App) -> Vec<Operation> {
        app.routes
            .routes()
            .iter()
            .map(|route| Operation {
                name: route.name.clone(),
                kind: route.kind,
                template: route.template().clone(),
                token: route.kind != RouteKind::Authentication
                    && route.token.config.mode != TokenMode::Off,
            })
            .collect()
    }

    /// Every way a request to this route can fail, in the handler's order
    /// (`http::serve`): before the body, reading it, then the plugin and its answer.
    pub fn failures(&self) -> Vec<ErrorKind> {
        use ErrorKind::*;
        let mut kinds = vec![HeadersTooLarge];
        if self.template.has_work_order_id() {
            // A WorkOrderID holding `/` makes a path no route serves.
            kinds.push(NotFound);
        }
        kinds.push(MethodNotAllowed);
        if self.token {
            kinds.push(InvalidLogon);
        }
        kinds.extend([
            UnsupportedMediaType,
            PayloadTooLarge,
            RequestTimeout,
            InvalidRequest,
        ]);
        match self.kind {
            RouteKind::BookJob | RouteKind::AppointmentSearch => kinds.extend([
                // The plugin's `booking-error`s (`ApiError::from_booking`).
                RequestRefused,
                SlotUnavailable,
                Conflict,
                InvalidLogon,
                UpstreamFailure,
                BookingFailed,
            ]),
            // The throttle, then the plugin's `auth-error`s.
            RouteKind::Authentication => {
                kinds.extend([LogonThrottled, InvalidLogon, UpstreamFailure])
            }
        }
        kinds.extend([
            PluginTimeout,
            PluginMemoryLimit,
            PluginStackOverflow,
            PluginOutOfFuel,
            PluginTrap,
            PluginBadResult,
            PluginResponseTooLarge,
            PluginBusy,
            PluginUnavailable,
        ]);
        if self.kind == RouteKind::BookJob {
            // The idempotency journal.
            kinds.push(StoreUnavailable);
        }
        kinds.push(Internal);
        let mut seen = Vec::new();
        kinds.retain(|k| {
            let new = !seen.contains(k);
            seen.push(*k);
            new
        });
        kinds
    }

    /// The statuses this route answers with in `mode`, 200 included.
    pub fn statuses(&self, mode: StatusMode) -> Vec<u16> {
        let mut statuses: Vec<u16> = self
            .failures()
            .into_iter()
            .map(|k| k.status(mode).as_u16())
            .chain([200])
            .collect();
        statuses.sort_unstable();
        statuses.dedup();
        statuses
    }
}

/// The document for `operations` answered in `mode`.
pub fn document(operations: &[Operation], mode: StatusMode) -> Value {
    let mut defs = Definitions::new();
    defs.insert("ErrorBody".into(), error_body());
    defs.insert("InvalidParam".into(), invalid_param());
    let mut paths = Map::new();
    for op in operations {
        let operation = operation(op, mode, &mut defs);
        paths.insert(
            op.template.path(WORK_ORDER_ID),
            json!({ "post": operation }),
        );
    }
    let mode_name = match mode {
        StatusMode::Documented => "documented",
        StatusMode::Http => "http",
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "followup",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "ServicePower ServiceMobility's Followup WorkOrder (Book Job), Appointment \
                 Search and Authentication interfaces as this host serves them, in status mode \
                 `{mode_name}`. Every failure answers the Standard Response Object (ErrorBody); \
                 its `type` says what happened."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {
                ACCESS_TOKEN: {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-access-token",
                    "description": "The JWT ServiceMobility forwards (HS256).",
                },
            },
        },
    })
}

/// The document a host started with `config` serves.
pub fn of_config(config: &Config) -> anyhow::Result<Value> {
    Ok(document(&Operation::of_config(config)?, config.status_mode))
}

/// The document `app` serves.
pub fn of_app(app: &App) -> Value {
    document(&Operation::of_app(app), app.status_mode)
}

fn operation(op: &Operation, mode: StatusMode, defs: &mut Definitions) -> Value {
    let (summary, request, answer) = match op.kind {
        RouteKind::BookJob => (
            "Book a follow-up job (Followup WorkOrder interface)",
            BookJob::describe(defs),
            BookJobResponse::describe(defs),
        ),
        RouteKind::AppointmentSearch => {
            let job = BookJob::describe(defs);
            defs.insert(
                "AppointmentSearch".into(),
                json!({
                    "description": "An Appointment Search Object: a Book Job Object whose \
                                    TimeConstraints give the window to search.",
                    "allOf": [job],
                }),
            );
            (
                "Search open appointment slots (Appointment Search interface)",
                reference("AppointmentSearch"),
                AppointmentSearchResponse::describe(defs),
            )
        }
        RouteKind::Authentication => {
            defs.insert("Credentials".into(), credentials());
            defs.insert("Token".into(), token());
            (
                "Log on for a token (Authentication interface)",
                reference("Credentials"),
                reference("Token"),
            )
        }
    };
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({
            "description": "Answered",
            "content": { "application/json": { "schema": answer } },
        }),
    );
    let mut by_status: BTreeMap<u16, Vec<&'static str>> = BTreeMap::new();
    for kind in op.failures() {
        let codes = by_status.entry(kind.status(mode).as_u16()).or_default();
        if !codes.contains(&kind.code()) {
            codes.push(kind.code());
        }
    }
    for (status, codes) in by_status {
        let mut response = json!({
            "description": format!("type {}", codes.join(", ")),
            "content": { "application/json": { "schema": {
                "allOf": [
                    reference("ErrorBody"),
                    { "properties": {
                        "type": { "enum": codes },
                        "status": { "const": status },
                    } },
                ],
            } } },
        });
        let mut headers = Map::new();
        if status == 405 {
            headers.insert(
                "Allow".into(),
                json!({ "required": true, "schema": { "type": "string", "const": "POST" } }),
            );
        }
        if status == 429 {
            headers.insert(
                "Retry-After".into(),
                json!({
                    "description": "Seconds until a logon may be tried again.",
                    "required": true,
                    "schema": { "type": "integer", "minimum": 0 },
                }),
            );
        }
        if !headers.is_empty() {
            response["headers"] = Value::Object(headers);
        }
        responses.insert(status.to_string(), response);
    }
    let mut operation = json!({
        "operationId": format!("{}-{}", op.kind.label(), op.name),
        "summary": summary,
        "description": format!("Route `{}`, served by the plugin's {}.", op.name, op.kind.export()),
        "requestBody": {
            "required": true,
            "content": { "application/json": { "schema": request } },
        },
        "responses": responses,
        "security": if op.token { json!([{ ACCESS_TOKEN: [] }]) } else { json!([]) },
    });
    if op.template.has_work_order_id() {
        operation["parameters"] = json!([{
            "name": WORK_ORDER_ID,
            "in": "path",
            "required": true,
            "description": "The work order, one path segment (percent-encoded).",
            "schema": { "type": "string", "pattern": WORK_ORDER_ID_PATTERN },
        }]);
    }
    operation
}

/// The Standard Response Object (`error::ErrorBody`).
fn error_body() -> Value {
    json!({
        "type": "object",
        "description": "The Standard Response Object.",
        "properties": {
            "type": { "type": "string", "description": "What happened, a stable code." },
            "title": { "type": "string" },
            "status": { "type": "integer" },
            "detail": { "type": "string", "description": "Ends with the request id." },
            "invalidParams": {
                "type": "array",
                "items": reference("InvalidParam"),
            },
        },
        "required": ["type", "title", "status", "detail"],
        "additionalProperties": false,
    })
}

/// One entry of `invalidParams` (`contract::Problem`).
fn invalid_param() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": { "type": "string" },
            "reason": { "type": "string" },
            "path": { "type": "string", "description": "JSON path, e.g. $.RequiredParts[0].Qty" },
            "value": { "type": "string" },
        },
        "required": ["name", "reason", "path", "value"],
        "additionalProperties": false,
    })
}

/// The Authentication Object (`http::login::credentials`). JSON Schema counts characters
/// and the host bytes, so the schema's bounds are the byte limits over four (the longest
/// a character is in UTF-8): every string it allows is accepted.
fn credentials() -> Value {
    json!({
        "type": "object",
        "properties": {
            "username": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_USERNAME_BYTES / 4,
                "description": format!("At most {MAX_USERNAME_BYTES} bytes of UTF-8."),
            },
            "password": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_PASSWORD_BYTES / 4,
                "description": format!("At most {MAX_PASSWORD_BYTES} bytes of UTF-8."),
            },
        },
        "required": ["username", "password"],
        // Other keys are ignored: a newer ServiceMobility may send more.
        "additionalProperties": true,
    })
}

/// The answer to a logon: a token minted by the host.
fn token() -> Value {
    json!({
        "type": "object",
        "properties": {
            "token": {
                "type": "string",
                "description": "An HS256 JWT, to send as x-access-token.",
                "pattern": r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
            },
        },
        "required": ["token"],
        "additionalProperties": false,
    })
}
