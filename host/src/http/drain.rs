//! Bodies the host does not use: a request refused before its body was read has its small
//! body read and discarded, so that the connection can carry the client's next request; a
//! larger or late one is not read, and the answer says `Connection: close` (see the module
//! doc of [`super`]).

use super::limits;
use crate::config::InputLimits;
use axum::body::Body;
use axum::http::{HeaderMap, header};
use http_body::Body as _;

/// Reads and discards the body of a request refused before its body was read, so that the
/// connection can carry the client's next request; `true` when the body ended within
/// [`limits::DRAIN_MAX_BYTES`] and [`InputLimits::drain_timeout`]. `false` (the
/// answer must close the connection) when it is announced or turns out larger, is late,
/// fails, or is held back by a client that sent `Expect: 100-continue`: hyper answers that
/// expectation as soon as the body is read, which would invite the very body the host is
/// refusing, so such a client gets its answer at once instead, with `Connection: close`
/// (RFC 9110, section 10.1.1).
pub async fn drain(mut body: Body, headers: &HeaderMap, limits: &InputLimits) -> bool {
    if body.is_end_stream() {
        return true;
    }
    if expects_continue(headers) {
        return false;
    }
    let drained = body.size_hint().lower() <= limits::DRAIN_MAX_BYTES
        && tokio::time::timeout(
            limits.drain_timeout(),
            discard(&mut body, limits::DRAIN_MAX_BYTES),
        )
        .await
        .unwrap_or(false);
    if !drained {
        linger(body, headers, limits);
    }
    drained
}

/// Goes on reading and discarding what is left of a body the host will not read to its end,
/// for at most [`InputLimits::drain_timeout`] and [`limits::LINGER_MAX_BYTES`],
/// while the answer that closes the connection goes out; hyper closes the connection once
/// the body ends or is let go. Not for a client waiting for `100 Continue` (see [`drain`]).
pub fn linger(body: Body, headers: &HeaderMap, limits: &InputLimits) {
    if body.is_end_stream() || expects_continue(headers) {
        return;
    }
    let timeout = limits.drain_timeout();
    tokio::spawn(async move {
        let mut body = body;
        let _ = tokio::time::timeout(timeout, discard(&mut body, limits::LINGER_MAX_BYTES)).await;
    });
}

/// Reads `body` to its end, keeping nothing; `false` when it is longer than `max` bytes or
/// fails.
async fn discard(body: &mut Body, max: u64) -> bool {
    let mut left = max;
    while let Some(frame) = http_body_util::BodyExt::frame(body).await {
        let Ok(frame) = frame else {
            return false;
        };
        if let Some(data) = frame.data_ref() {
            let Some(rest) = left.checked_sub(data.len() as u64) else {
                return false;
            };
            left = rest;
        }
    }
    true
}

/// Whether the client waits for `100 Continue` before it sends its body.
fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_an_expectation_of_100_continue_holds_the_body_back() {
        let mut h = HeaderMap::new();
        assert!(!expects_continue(&h));
        h.insert(header::EXPECT, HeaderValue::from_static("100-Continue"));
        assert!(expects_continue(&h));
        h.insert(header::EXPECT, HeaderValue::from_static("something-else"));
        assert!(!expects_continue(&h));
    }

    #[tokio::test]
    async fn discarding_stops_past_its_bound() {
        assert!(discard(&mut Body::from("12345"), 5).await);
        assert!(!discard(&mut Body::from("123456"), 5).await);
        assert!(discard(&mut Body::empty(), 0).await);
    }

    #[tokio::test]
    async fn an_empty_or_small_body_is_drained_and_a_large_one_is_not() {
        let limits = InputLimits::default();
        let h = HeaderMap::new();
        assert!(drain(Body::empty(), &h, &limits).await);
        assert!(drain(Body::from("x".repeat(64 << 10)), &h, &limits).await);
        assert!(!drain(Body::from("x".repeat((64 << 10) + 1)), &h, &limits).await);
        let mut expecting = HeaderMap::new();
        expecting.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        assert!(!drain(Body::from("{}"), &expecting, &limits).await);
        // An empty body needs no 100 Continue.
        assert!(drain(Body::empty(), &expecting, &limits).await);
    }
}
