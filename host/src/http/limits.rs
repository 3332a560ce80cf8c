//! Limits on what a request may carry, checked before any work is done on it: header
//! count and size, slow clients, JSON nesting depth and string length.

use crate::contract::Problem;
use crate::error::{ApiError, ErrorKind};
use axum::http::HeaderMap;
use serde::Deserialize;
use std::time::Duration;

/// `[limits]` in the config. Every field has a default.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputLimits {
    /// Headers a request may have. Default 64 (ServiceMobility sends a handful).
    pub max_headers: usize,
    /// Total bytes of header names and values. Default 16 KiB (a JWT is under 2 KiB).
    pub max_header_bytes: usize,
    /// Time a client has to send its request headers once it connected or finished the
    /// previous request. Default 5 s: slow clients cannot hold connections open.
    pub header_timeout_ms: u64,
    /// Time a client has to send the whole body. Default 10 s.
    pub body_timeout_ms: u64,
    /// Deepest nesting of JSON objects and arrays. Default 32 (the contract nests 6 deep).
    pub max_json_depth: usize,
    /// Longest JSON string, in bytes as sent. Default 64 KiB.
    pub max_json_string_bytes: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        InputLimits {
            max_headers: 64,
            max_header_bytes: 16 << 10,
            header_timeout_ms: 5_000,
            body_timeout_ms: 10_000,
            max_json_depth: 32,
            max_json_string_bytes: 64 << 10,
        }
    }
}

impl InputLimits {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    /// Refuses requests with too many or too large headers.
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if headers.len() > self.max_headers {
            return Err(ApiError::new(
                ErrorKind::HeadersTooLarge,
                format!(
                    "{} headers, more than the {} allowed",
                    headers.len(),
                    self.max_headers
                ),
            ));
        }
        let bytes: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        if bytes > self.max_header_bytes {
            return Err(ApiError::new(
                ErrorKind::HeadersTooLarge,
                format!(
                    "{bytes} bytes of headers, more than the {} allowed",
                    self.max_header_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Scans raw JSON for nesting deeper than `max_json_depth` and strings longer than
    /// `max_json_string_bytes`, without parsing it: a hostile body is refused before the
    /// parser allocates for it. Malformed JSON passes here and is refused by the parser.
    pub fn check_json_shape(&self, body: &[u8]) -> Result<(), ApiError> {
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        let mut string_start = 0usize;
        for (at, byte) in body.iter().enumerate() {
            if in_string {
                if escaped {
                    escaped = false;
                } else if *byte == b'\\' {
                    escaped = true;
                } else if *byte == b'"' {
                    in_string = false;
                    continue;
                }
                if at + 1 - string_start > self.max_json_string_bytes {
                    return Err(shape_problem(format!(
                        "has a string longer than {} bytes (starting at byte {string_start})",
                        self.max_json_string_bytes
                    )));
                }
                continue;
            }
            match byte {
                b'"' => {
                    in_string = true;
                    string_start = at + 1;
                }
                b'{' | b'[' => {
                    depth += 1;
                    if depth > self.max_json_depth {
                        return Err(shape_problem(format!(
                            "nests deeper than {} levels (at byte {at})",
                            self.max_json_depth
                        )));
                    }
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        Ok(())
    }
}

fn shape_problem(reason: String) -> ApiError {
    ApiError::invalid(vec![Problem {
        name: "$".into(),
        reason,
        path: "$".into(),
        value: String::new(),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn limits() -> InputLimits {
        InputLimits {
            max_json_depth: 3,
            max_json_string_bytes: 5,
            max_headers: 2,
            max_header_bytes: 20,
            ..InputLimits::default()
        }
    }

    #[test]
    fn nesting_at_the_limit_passes_and_one_deeper_fails() {
        assert!(limits().check_json_shape(br#"{"a":[{"b":1}]}"#).is_ok());
        let err = limits()
            .check_json_shape(br#"{"a":[{"b":[1]}]}"#)
            .unwrap_err();
        assert!(
            err.invalid_params[0].reason.contains("deeper than 3"),
            "{err:?}"
        );
        // Brackets inside strings do not count.
        assert!(limits().check_json_shape(br#"{"a":"[[["}"#).is_ok());
    }

    #[test]
    fn strings_at_the_limit_pass_and_one_longer_fails() {
        assert!(limits().check_json_shape(br#"{"abcde":"12345"}"#).is_ok());
        let err = limits().check_json_shape(br#"{"a":"123456"}"#).unwrap_err();
        assert!(
            err.invalid_params[0].reason.contains("longer than 5"),
            "{err:?}"
        );
        // An escaped quote does not end the string.
        assert!(limits().check_json_shape(br#"{"a":"1\"3456"}"#).is_err());
        assert!(limits().check_json_shape(br#"{"a":"1\"3"}"#).is_ok());
    }

    #[test]
    fn header_count_and_size_are_bounded() {
        let mut h = HeaderMap::new();
        h.insert("a", HeaderValue::from_static("1"));
        h.insert("b", HeaderValue::from_static("2"));
        assert!(limits().check_headers(&h).is_ok());
        h.insert("c", HeaderValue::from_static("3"));
        assert_eq!(
            limits().check_headers(&h).unwrap_err().kind,
            ErrorKind::HeadersTooLarge
        );
        let mut big = HeaderMap::new();
        big.insert("x", HeaderValue::from_static("0123456789012345678"));
        assert!(limits().check_headers(&big).is_ok());
        big.insert("x", HeaderValue::from_static("01234567890123456789"));
        assert!(limits().check_headers(&big).is_err());
    }
}
