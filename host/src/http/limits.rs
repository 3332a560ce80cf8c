//! Limits on what a request may carry, checked before any work is done on it: header
//! count and size, slow clients; and the bounds on what the host reads of a body it
//! refused unread (see [`DRAIN_MAX_BYTES`]). JSON nesting depth and string length are
//! checked as the body is parsed (see [`super::json`]).

use crate::config::InputLimits;
use crate::error::{ApiError, ErrorKind};
use axum::http::HeaderMap;
use std::time::Duration;

/// The most the host reads and discards of the body of a request it refused before
/// reading it (a 401, 404, 415, …), so that the connection can carry the client's next
/// request. A body announced or found larger is not read: the answer says
/// `Connection: close` instead. 64 KiB is many Book Jobs and a few milliseconds of reading.
pub const DRAIN_MAX_BYTES: u64 = 64 << 10;

/// The longest the host waits for such a body, unless `body_timeout_ms` is shorter. A
/// client sending a refused request cannot hold its connection longer than this: the
/// answer then says `Connection: close`.
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(1);

/// The most the host reads of a body it stopped reading (over `max_body_bytes`, too slow,
/// or too large to drain) while its answer, which closes the connection, goes out. Closing
/// a socket with unread data makes the kernel answer with a reset, which can destroy the
/// answer before the client has read it; reading on for a moment gives the answer time to
/// arrive. Bounded in time by [`InputLimits::drain_timeout`].
pub const LINGER_MAX_BYTES: u64 = 1 << 20;

impl InputLimits {
    /// How long the host waits for the rest of a body it will not use (see
    /// [`DRAIN_MAX_TIME`]).
    pub fn drain_timeout(&self) -> Duration {
        self.body_timeout().min(DRAIN_MAX_TIME)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn limits() -> InputLimits {
        InputLimits {
            max_headers: 2,
            max_header_bytes: 20,
            ..InputLimits::default()
        }
    }

    #[test]
    fn a_refused_body_is_awaited_at_most_a_second_and_never_longer_than_the_body_timeout() {
        assert_eq!(InputLimits::default().drain_timeout(), DRAIN_MAX_TIME);
        let quick = InputLimits {
            body_timeout_ms: 300,
            ..InputLimits::default()
        };
        assert_eq!(quick.drain_timeout(), Duration::from_millis(300));
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
