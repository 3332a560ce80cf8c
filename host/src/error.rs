//! The one error type of the HTTP surface and its one response: the Standard Response
//! Object (`type`, `title`, `status`, `detail`, `invalidParams`). Every outcome's status
//! is chosen in [`ErrorKind::status`], for both status modes, and nowhere else.

use crate::config::StatusMode;
use crate::contract::PluginIdent;
use crate::contract::Problem;
use crate::contract::types::BookingError;
use crate::runtime::{FailureKind, PluginFailure};
use crate::text::cut;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Every way a request can fail. The `type` of the error body is [`ErrorKind::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidLogon,
    LogonThrottled,
    /// The body does not match the contract's schema (or could not be read).
    InvalidRequest,
    /// A body that matches the schema, refused by the booking rules (the plugin's
    /// `invalid-request`): the same `type`, so that clients of the documented mode see no
    /// change, but never 400 in `http` mode, where 400 means "not the schema".
    RequestRefused,
    UnsupportedMediaType,
    PayloadTooLarge,
    HeadersTooLarge,
    RequestTimeout,
    NotFound,
    MethodNotAllowed,
    SlotUnavailable,
    Conflict,
    UpstreamFailure,
    BookingFailed,
    PluginTimeout,
    PluginMemoryLimit,
    PluginStackOverflow,
    PluginOutOfFuel,
    PluginTrap,
    PluginBadResult,
    PluginResponseTooLarge,
    PluginBusy,
    PluginUnavailable,
    StoreUnavailable,
    Internal,
}

impl ErrorKind {
    /// The stable `type` of the error body.
    pub fn code(self) -> &'static str {
        use ErrorKind::*;
        match self {
            InvalidLogon => "invalid-logon",
            LogonThrottled => "logon-throttled",
            InvalidRequest | RequestRefused => "invalid-request",
            UnsupportedMediaType => "unsupported-media-type",
            PayloadTooLarge => "payload-too-large",
            HeadersTooLarge => "headers-too-large",
            RequestTimeout => "request-timeout",
            NotFound => "not-found",
            MethodNotAllowed => "method-not-allowed",
            SlotUnavailable => "slot-unavailable",
            Conflict => "conflict",
            UpstreamFailure => "upstream-failure",
            BookingFailed => "booking-failed",
            PluginTimeout => "plugin-timeout",
            PluginMemoryLimit => "plugin-memory-limit",
            PluginStackOverflow => "plugin-stack-overflow",
            PluginOutOfFuel => "plugin-out-of-fuel",
            PluginTrap => "plugin-trap",
            PluginBadResult => "plugin-bad-result",
            PluginResponseTooLarge => "plugin-response-too-large",
            PluginBusy => "plugin-busy",
            PluginUnavailable => "plugin-unavailable",
            StoreUnavailable => "store-unavailable",
            Internal => "internal",
        }
    }

    fn title(self) -> &'static str {
        use ErrorKind::*;
        match self {
            InvalidLogon => "Invalid Logon",
            LogonThrottled => "Too many failed logons",
            InvalidRequest | RequestRefused => "Request failed validation",
            UnsupportedMediaType => "Content-Type must be application/json",
            PayloadTooLarge => "Request body too large",
            HeadersTooLarge => "Request headers too large",
            RequestTimeout => "Request not received in time",
            NotFound => "No such route",
            MethodNotAllowed => "Method not allowed",
            SlotUnavailable => "Slot unavailable",
            Conflict => "Booking conflict",
            UpstreamFailure => "Customer system failed",
            BookingFailed => "Booking failed",
            PluginTimeout => "Booking rule timed out",
            PluginMemoryLimit => "Booking rule exceeded its memory limit",
            PluginStackOverflow => "Booking rule overflowed its stack",
            PluginOutOfFuel => "Booking rule exceeded its instruction budget",
            PluginTrap => "Booking rule crashed",
            PluginBadResult => "Booking rule returned an invalid answer",
            PluginResponseTooLarge => "Booking rule answered too much",
            PluginBusy => "Booking rule busy",
            PluginUnavailable => "Booking rule unavailable",
            StoreUnavailable => "Booking store unavailable",
            Internal => "Internal error",
        }
    }

    /// The one place where an outcome becomes a status.
    pub fn status(self, mode: StatusMode) -> StatusCode {
        use ErrorKind::*;
        if self == InvalidLogon {
            return StatusCode::UNAUTHORIZED;
        }
        if mode == StatusMode::Documented {
            // The Authentication interface documents 401 for a logon refused: a throttled
            // one is refused too, and says why and when to try again.
            return match self {
                LogonThrottled => StatusCode::UNAUTHORIZED,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
        }
        match self {
            InvalidLogon => StatusCode::UNAUTHORIZED,
            LogonThrottled => StatusCode::TOO_MANY_REQUESTS,
            InvalidRequest => StatusCode::BAD_REQUEST,
            RequestRefused => StatusCode::UNPROCESSABLE_ENTITY,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            SlotUnavailable | Conflict => StatusCode::CONFLICT,
            UpstreamFailure
            | PluginTrap
            | PluginBadResult
            | PluginMemoryLimit
            | PluginStackOverflow
            | PluginResponseTooLarge => StatusCode::BAD_GATEWAY,
            PluginBusy | PluginUnavailable | StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            PluginTimeout | PluginOutOfFuel => StatusCode::GATEWAY_TIMEOUT,
            BookingFailed | Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A failed request, rendered as the Standard Response Object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub detail: String,
    pub invalid_params: Vec<Problem>,
    /// Filled in by the handler so that the body names the request.
    pub request_id: Option<String>,
    /// The plugin version the failure belongs to, for its counters.
    pub plugin: Option<Arc<PluginIdent>>,
    pub mode: StatusMode,
    /// Seconds after which the request may succeed, sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        ApiError {
            kind,
            detail: detail.into(),
            invalid_params: Vec::new(),
            request_id: None,
            plugin: None,
            mode: StatusMode::Documented,
            retry_after: None,
        }
    }

    /// An invalid request with one entry per problem.
    pub fn invalid(problems: Vec<Problem>) -> Self {
        let detail = match problems.as_slice() {
            [one] => format!("{} {}", one.path, one.reason),
            many => format!("{} properties are invalid", many.len()),
        };
        ApiError {
            invalid_params: problems,
            ..ApiError::new(ErrorKind::InvalidRequest, detail)
        }
    }

    /// The detail and every invalid parameter on one line, for logs and operators.
    pub fn summary(&self) -> String {
        let mut text = self.detail.clone();
        if self.invalid_params.len() > 1 {
            let params: Vec<String> = self
                .invalid_params
                .iter()
                .map(|p| format!("{} {}", p.path, p.reason))
                .collect();
            text = format!("{text}: {}", params.join("; "));
        }
        text
    }

    /// The plugin refused the booking with a `booking-error`. Its texts are the plugin's,
    /// so they are cut to fixed bounds (see [`RefusalBounds`]): a refusal costs the host a
    /// few kilobytes whatever the plugin hands over.
    pub fn from_booking(err: BookingError) -> Self {
        let detail = |m: &str| cut(m, REFUSAL.detail);
        match err {
            BookingError::InvalidRequest(e) => {
                let total = e.params.len();
                let mut invalid_params: Vec<Problem> = e
                    .params
                    .into_iter()
                    .take(REFUSAL.params)
                    .map(|p| Problem {
                        name: cut(&p.name, REFUSAL.field),
                        reason: cut(&p.reason, REFUSAL.field),
                        path: cut(&p.path, REFUSAL.field),
                        value: cut(&p.value, REFUSAL.field),
                    })
                    .collect();
                // Collecting in place can keep the plugin's whole list allocated.
                invalid_params.shrink_to_fit();
                let mut message = detail(&e.message);
                if total > invalid_params.len() {
                    message.push_str(&format!(
                        " ({} invalid parameters, the first {} shown)",
                        total,
                        invalid_params.len()
                    ));
                }
                ApiError {
                    invalid_params,
                    ..ApiError::new(ErrorKind::RequestRefused, message)
                }
            }
            BookingError::SlotUnavailable(m) => {
                ApiError::new(ErrorKind::SlotUnavailable, detail(&m))
            }
            BookingError::Conflict(m) => ApiError::new(ErrorKind::Conflict, detail(&m)),
            BookingError::Unauthorized(m) => ApiError::new(ErrorKind::InvalidLogon, detail(&m)),
            BookingError::UpstreamFailure(m) => {
                ApiError::new(ErrorKind::UpstreamFailure, detail(&m))
            }
            BookingError::Internal(m) => ApiError::new(ErrorKind::BookingFailed, detail(&m)),
        }
    }

    /// Holds the error body to `max_bytes` (a plugin's `max_response_bytes`): trailing
    /// invalid parameters are left out, then the detail is cut, until it fits.
    pub fn within(mut self, max_bytes: usize) -> Self {
        // What the body adds around the detail and the parameters: keys, title, status,
        // the request id appended to the detail, and a marker.
        const FRAME: usize = 320;
        let param_len = |p: &Problem| serde_json::to_vec(p).map_or(0, |v| v.len()) + 1;
        let mut size =
            FRAME + self.detail.len() + self.invalid_params.iter().map(param_len).sum::<usize>();
        let mut dropped = 0;
        while size > max_bytes {
            let Some(p) = self.invalid_params.pop() else {
                break;
            };
            size -= param_len(&p);
            dropped += 1;
        }
        if dropped > 0 {
            self.detail = format!(
                "{} ({dropped} more invalid parameters left out)",
                self.detail
            );
            size += 48;
        }
        if size > max_bytes {
            let room = max_bytes.saturating_sub(FRAME + 48).max(64);
            self.detail = cut(&self.detail, room);
        }
        self
    }
    /// Attributes the error to a plugin version (for its counters).
    pub fn for_plugin(mut self, plugin: &Arc<PluginIdent>) -> Self {
        self.plugin = Some(plugin.clone());
        self
    }

    pub fn with_mode(mut self, mode: StatusMode) -> Self {
        self.mode = mode;
        self
    }

    pub fn with_request_id(mut self, id: &str) -> Self {
        self.request_id = Some(id.to_string());
        self
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status(self.mode)
    }
}

impl From<PluginFailure> for ApiError {
    fn from(f: PluginFailure) -> Self {
        let kind = match f.kind {
            FailureKind::Timeout => ErrorKind::PluginTimeout,
            FailureKind::MemoryLimit => ErrorKind::PluginMemoryLimit,
            FailureKind::StackOverflow => ErrorKind::PluginStackOverflow,
            FailureKind::OutOfFuel => ErrorKind::PluginOutOfFuel,
            FailureKind::Trap => ErrorKind::PluginTrap,
            FailureKind::BadResult => ErrorKind::PluginBadResult,
            FailureKind::ResponseTooLarge => ErrorKind::PluginResponseTooLarge,
            FailureKind::Busy => ErrorKind::PluginBusy,
            FailureKind::Unavailable => ErrorKind::PluginUnavailable,
        };
        ApiError {
            plugin: Some(f.plugin.clone()),
            ..ApiError::new(kind, f.to_string())
        }
    }
}

/// How much of a plugin's refusal the host keeps.
#[derive(Debug, Clone, Copy)]
pub struct RefusalBounds {
    /// Bytes of the refusal's message (the body's `detail`).
    pub detail: usize,
    /// Entries of `invalidParams`.
    pub params: usize,
    /// Bytes of each entry's `name`, `reason`, `path` and `value`.
    pub field: usize,
}

/// The bounds on every plugin refusal: a message of 1 KiB, 100 invalid parameters of at
/// most 256 bytes per field — about 100 KiB at worst, and never more than the plugin's
/// `max_response_bytes` (see [`ApiError::within`]).
pub const REFUSAL: RefusalBounds = RefusalBounds {
    detail: 1024,
    params: 100,
    field: 256,
};

/// The wire shape of the Standard Response Object.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(
        rename = "invalidParams",
        skip_serializing_if = "Vec::is_empty",
        default
    )]
    pub invalid_params: Vec<Problem>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self.request_id {
            Some(id) => format!("{} (request {id})", self.detail),
            None => self.detail.clone(),
        };
        let body = ErrorBody {
            kind: self.kind.code().to_string(),
            title: self.kind.title().to_string(),
            status: status.as_u16(),
            detail,
            invalid_params: self.invalid_params,
        };
        // Serialising plain strings and numbers cannot fail.
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (status, bytes).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.kind == ErrorKind::MethodNotAllowed {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plugin failure's span and its error body name the same `type`.
    #[test]
    fn a_plugin_failure_keeps_its_code_as_an_error() {
        use FailureKind::*;
        for kind in [
            Timeout,
            MemoryLimit,
            StackOverflow,
            OutOfFuel,
            Trap,
            ResponseTooLarge,
            BadResult,
            Busy,
            Unavailable,
        ] {
            let failure = PluginFailure {
                kind,
                plugin: Arc::new(PluginIdent {
                    name: "p".into(),
                    version: "v".into(),
                }),
                cause: String::new(),
            };
            assert_eq!(ApiError::from(failure).kind.code(), kind.code());
        }
    }
}
