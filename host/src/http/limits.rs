//! Limits on what a request may carry, checked before any work is done on it: header
//! count and size, slow clients, JSON nesting depth and string length; and the bounds on
//! what the host reads of a body it refused unread (see [`DRAIN_MAX_BYTES`]).

use crate::config::InputLimits;
use crate::contract::Problem;
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

    /// Scans raw JSON for nesting deeper than `max_json_depth` and strings longer than
    /// `max_json_string_bytes`, without parsing it: a hostile body is refused before the
    /// parser allocates for it. Malformed JSON passes here and is refused by the parser.
    pub fn check_json_shape(&self, body: &[u8]) -> Result<(), ApiError> {
        // Most of a body is string content: jump through it with memchr to the next quote
        // or backslash, and between strings to the next byte that matters, instead of
        // looking at every byte in one branchy loop.
        let mut depth = 0usize;
        let mut at = 0usize;
        while let Some(skip) = body
            .get(at..)
            .and_then(|rest| rest.iter().position(|b| STRUCTURAL[usize::from(*b)]))
        {
            at += skip;
            match body[at] {
                b'"' => {
                    let start = at + 1;
                    at = self.string_end(body, start)?;
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
                _ => depth = depth.saturating_sub(1),
            }
            at += 1;
        }
        Ok(())
    }

    /// The index of the quote that ends the string whose content starts at `start` (or the
    /// body's length when it never ends), refusing a string over `max_json_string_bytes`.
    fn string_end(&self, body: &[u8], start: usize) -> Result<usize, ApiError> {
        let too_long = || {
            shape_problem(format!(
                "has a string longer than {} bytes (starting at byte {start})",
                self.max_json_string_bytes
            ))
        };
        let mut at = start;
        loop {
            let Some(found) = memchr::memchr2(b'"', b'\\', &body[at..]) else {
                if body.len() - start > self.max_json_string_bytes {
                    return Err(too_long());
                }
                return Ok(body.len());
            };
            at += found;
            // A backslash counts with the byte it escapes.
            if at - start + usize::from(body[at] == b'\\') > self.max_json_string_bytes {
                return Err(too_long());
            }
            if body[at] == b'"' {
                return Ok(at);
            }
            // A backslash escapes the next byte, whatever it is.
            at += 2;
            if at > body.len() {
                return Ok(body.len());
            }
        }
    }
}

/// The bytes that matter between strings: quotes and brackets.
const STRUCTURAL: [bool; 256] = {
    let mut table = [false; 256];
    table[b'"' as usize] = true;
    table[b'{' as usize] = true;
    table[b'[' as usize] = true;
    table[b'}' as usize] = true;
    table[b']' as usize] = true;
    table
};

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

    /// The shape check byte by byte, as simply as it can be written: the reference the fast
    /// scan must agree with.
    fn reference(l: &InputLimits, body: &[u8]) -> bool {
        let (mut depth, mut in_string, mut escaped, mut start) = (0usize, false, false, 0);
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
                if at + 1 - start > l.max_json_string_bytes {
                    return false;
                }
                continue;
            }
            match byte {
                b'"' => (in_string, start) = (true, at + 1),
                b'{' | b'[' => {
                    depth += 1;
                    if depth > l.max_json_depth {
                        return false;
                    }
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        true
    }

    #[test]
    fn the_fast_scan_agrees_with_the_byte_by_byte_reference() {
        // Every body of up to 7 bytes over the alphabet that matters, and longer random
        // ones (a fixed xorshift sequence), for a few limits.
        let alphabet = b"\"\\{}[]a";
        let mut bodies: Vec<Vec<u8>> = vec![vec![]];
        let mut frontier = bodies.clone();
        for _ in 0..7 {
            frontier = frontier
                .iter()
                .flat_map(|b| alphabet.iter().map(move |c| [b.as_slice(), &[*c]].concat()))
                .collect();
            bodies.extend(frontier.iter().cloned());
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let len = (x % 64) as usize;
            let body = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            bodies.push(body);
        }
        for (depth, string) in [(0, 0), (1, 1), (2, 3), (3, 5), (64, 64)] {
            let l = InputLimits {
                max_json_depth: depth,
                max_json_string_bytes: string,
                ..InputLimits::default()
            };
            for body in &bodies {
                assert_eq!(
                    l.check_json_shape(body).is_ok(),
                    reference(&l, body),
                    "{:?} with depth {depth}, string {string}",
                    String::from_utf8_lossy(body)
                );
            }
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
