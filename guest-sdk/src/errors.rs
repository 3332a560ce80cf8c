//! Constructors for [`BookingError`], so a rule reads as what it refuses.

use crate::{BookingError, InvalidParam, InvalidRequestError};

impl BookingError {
    /// The request breaks a rule at one JSON path, e.g. `$.TimeConstraints[0].Period.Start`.
    pub fn invalid(path: &str, reason: impl Into<String>, value: impl Into<String>) -> Self {
        let reason = reason.into();
        let name = path
            .rsplit('.')
            .next()
            .map(|tail| tail.split('[').next().unwrap_or(tail))
            .filter(|n| !n.is_empty() && *n != "$")
            .unwrap_or("$")
            .to_string();
        BookingError::InvalidRequest(InvalidRequestError {
            message: format!("{path} {reason}"),
            params: vec![InvalidParam {
                name,
                reason,
                path: path.to_string(),
                value: value.into(),
            }],
        })
    }

    /// The requested slot cannot be booked.
    pub fn slot_unavailable(message: impl Into<String>) -> Self {
        BookingError::SlotUnavailable(message.into())
    }

    /// The customer's system failed or could not be reached.
    pub fn upstream(message: impl Into<String>) -> Self {
        BookingError::UpstreamFailure(message.into())
    }

    /// Anything else; the message is for the operator.
    pub fn internal(message: impl Into<String>) -> Self {
        BookingError::Internal(message.into())
    }
}
