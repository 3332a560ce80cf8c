//! The `x-access-token` check. ServiceMobility forwards the JWT that authorised its own
//! API call; it has already validated it, so the default mode only decodes it: three
//! base64url segments, a JSON header naming HS256, a JSON payload with an `exp` in the
//! future (within a leeway). `verify` mode also checks the HS256 signature with a shared
//! secret, `nbf`, and optionally `iss`, `aud` and required claims. Every failure is 401
//! "Invalid Logon"; the reason goes to the log and the body, never the token itself.

use crate::config::{TokenConfig, TokenMode};
use crate::contract::types::TokenClaims;
use crate::error::{ApiError, ErrorKind};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use std::sync::PoisonError;

/// A [`TokenConfig`] ready to check tokens: the secret read from the environment once.
#[derive(Clone)]
pub struct TokenPolicy {
    pub config: TokenConfig,
    verifier: Option<(jsonwebtoken::DecodingKey, jsonwebtoken::Validation)>,
    /// Tokens that passed, with their claims.
    accepted: std::sync::Arc<Accepted>,
}

/// Tokens that passed every check that does not depend on the time, with their claims:
/// ServiceMobility forwards the same token with every booking its user makes, and its
/// base64, JSON and signature need checking once. Keyed by the token's exact text, so a
/// token that differs in any byte is checked afresh; `exp` is checked on every use.
#[derive(Default)]
struct Accepted {
    tokens: std::sync::Mutex<std::collections::HashMap<Box<str>, TokenClaims>>,
}

/// Tokens remembered at most; past that the memory starts again (a host sees a few
/// users' tokens at a time, a flood of distinct ones only costs the checks it did before).
const ACCEPTED_TOKENS: usize = 1024;

impl Accepted {
    fn get(&self, token: &str) -> Option<TokenClaims> {
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        tokens.get(token).cloned()
    }

    fn keep(&self, token: &str, claims: &TokenClaims) {
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        if tokens.len() >= ACCEPTED_TOKENS {
            tokens.clear();
        }
        tokens.insert(token.into(), claims.clone());
    }
}

impl std::fmt::Debug for TokenPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TokenPolicy")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TokenPolicy {
    /// Resolves the secret of `verify` mode from the environment.
    pub fn new(config: &TokenConfig) -> anyhow::Result<TokenPolicy> {
        let verifier = match config.mode {
            TokenMode::Verify => {
                let var = config
                    .secret_env
                    .as_deref()
                    .ok_or_else(|| anyhow::anyhow!("token mode \"verify\" needs secret_env"))?;
                let secret = std::env::var(var).unwrap_or_default();
                if secret.is_empty() {
                    anyhow::bail!(
                        "token mode \"verify\": environment variable {var} is unset or empty"
                    );
                }
                super::hs256::install();
                Some((
                    jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
                    validation(config),
                ))
            }
            TokenMode::Off | TokenMode::Decode => None,
        };
        Ok(TokenPolicy {
            config: config.clone(),
            verifier,
            accepted: Default::default(),
        })
    }
}

/// What `verify` mode checks besides the signature. The algorithm is pinned to HS256.
fn validation(config: &TokenConfig) -> jsonwebtoken::Validation {
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.leeway = config.leeway_seconds;
    v.validate_exp = true;
    v.validate_nbf = true;
    let mut required: Vec<&str> = vec!["exp"];
    required.extend(config.required_claims.iter().map(String::as_str));
    if let Some(iss) = &config.issuer {
        v.set_issuer(&[iss]);
        required.push("iss");
    }
    match &config.audience {
        Some(aud) => {
            v.set_audience(&[aud]);
            required.push("aud");
        }
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&required);
    v
}

fn refuse(reason: &str) -> ApiError {
    ApiError::new(ErrorKind::InvalidLogon, format!("x-access-token {reason}"))
}

/// Checks `token` (the header's value, if any) at `now` (seconds since the Unix epoch).
pub fn check(
    policy: &TokenPolicy,
    token: Option<&[u8]>,
    now: i64,
) -> Result<Option<TokenClaims>, ApiError> {
    let config = &policy.config;
    if config.mode == TokenMode::Off {
        return Ok(None);
    }
    let token = token.ok_or_else(|| refuse("is missing"))?;
    if token.len() > config.max_bytes {
        return Err(refuse("is too long"));
    }
    let token = std::str::from_utf8(token)
        .map_err(|_| refuse("is not text"))?
        .trim();
    if token.is_empty() {
        return Err(refuse("is empty"));
    }
    let leeway = i64::try_from(config.leeway_seconds).unwrap_or(i64::MAX);
    let expired = |exp: i64| exp.saturating_add(leeway) <= now;
    if let Some(claims) = policy.accepted.get(token) {
        // Every accepted token has an `exp`; `nbf` was already reached when it passed.
        return match claims.exp {
            Some(exp) if !expired(exp) => Ok(Some(claims)),
            _ => Err(refuse("has expired")),
        };
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refuse("is not a JWT (three dot-separated segments)"));
    };
    let header = segment_json(header, "header")?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(refuse("header must name alg HS256"));
    }
    if signature.is_empty()
        || URL_SAFE_NO_PAD
            .decode(signature.trim_end_matches('='))
            .is_err()
    {
        return Err(refuse("signature is not base64url"));
    }
    let raw = segment_text(payload, "payload")?;
    // A claim given twice (two `exp`) would be the last one here and maybe the first one
    // to whoever issued or relays the token: refused, like a body with a repeated key.
    let claims: Value = super::json::parse_without_repeats(raw.as_bytes())
        .ok_or_else(|| refuse("payload is not JSON, or gives a claim more than once"))?;
    let Value::Object(map) = &claims else {
        return Err(refuse("payload is not a JSON object"));
    };
    let exp = map
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or_else(|| refuse("payload has no numeric exp"))?;
    if expired(exp) {
        return Err(refuse("has expired"));
    }
    if let Some((key, validation)) = &policy.verifier {
        jsonwebtoken::decode::<Value>(token, key, validation).map_err(|e| refuse(&rejected(&e)))?;
    }
    let text = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_string);
    let claims = TokenClaims {
        name: text("name"),
        email: text("email"),
        exp: Some(exp),
        iat: map.get("iat").and_then(Value::as_i64),
        raw,
    };
    policy.accepted.keep(token, &claims);
    Ok(Some(claims))
}

/// Why `verify` mode refused a token, in words that do not repeat the token.
fn rejected(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => "signature does not verify".into(),
        K::ExpiredSignature => "has expired".into(),
        K::ImmatureSignature => "is not valid yet (nbf)".into(),
        K::InvalidIssuer => "has the wrong issuer".into(),
        K::InvalidAudience => "has the wrong audience".into(),
        K::MissingRequiredClaim(claim) => format!("lacks the required claim {claim}"),
        K::InvalidAlgorithm => "header must name alg HS256".into(),
        other => format!("was refused ({other:?})"),
    }
}

fn segment_text(segment: &str, what: &str) -> Result<String, ApiError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .map_err(|_| refuse(&format!("{what} is not base64url")))?;
    String::from_utf8(bytes).map_err(|_| refuse(&format!("{what} is not UTF-8")))
}

fn segment_json(segment: &str, what: &str) -> Result<Value, ApiError> {
    let text = segment_text(segment, what)?;
    match super::json::parse_without_repeats(text.as_bytes()) {
        Some(v @ Value::Object(_)) => Ok(v),
        _ => Err(refuse(&format!(
            "{what} is not a JSON object, or gives a key more than once"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(payload), b64("sig"))
    }

    const NOW: i64 = 1_700_000_000;

    fn policy(config: TokenConfig) -> TokenPolicy {
        TokenPolicy::new(&config).unwrap()
    }

    fn decode(t: Option<&str>) -> Result<Option<TokenClaims>, ApiError> {
        check(&policy(TokenConfig::default()), t.map(str::as_bytes), NOW)
    }

    /// An accepted token is remembered by its exact text: it still expires, and a token
    /// that differs in one byte is checked in full.
    #[test]
    fn a_remembered_token_still_expires_and_only_its_exact_text_is_remembered() {
        let p = policy(TokenConfig::default());
        let t = token(r#"{"alg":"HS256"}"#, r#"{"exp":1700000100,"name":"A"}"#);
        let first = check(&p, Some(t.as_bytes()), NOW).unwrap().unwrap();
        let again = check(&p, Some(t.as_bytes()), NOW + 50).unwrap().unwrap();
        assert_eq!(again.name.as_deref(), Some("A"));
        assert_eq!(again.raw, first.raw);
        let late = check(&p, Some(t.as_bytes()), NOW + 1000).unwrap_err();
        assert!(late.detail.contains("expired"), "{}", late.detail);
        // The same payload with another header byte: a header that names another
        // algorithm is refused, not answered from memory.
        let other = token(r#"{"alg":"none"}"#, r#"{"exp":1700000100,"name":"A"}"#);
        assert!(check(&p, Some(other.as_bytes()), NOW).is_err());
        // Clones share what was accepted (every route of one policy).
        let clone = p.clone();
        assert!(clone.accepted.get(&t).is_some());
        // In verify mode only a verified token is remembered: one with a made-up signature
        // is checked, and refused, every time. (The secret is whatever PATH holds.)
        let verify = policy(TokenConfig {
            mode: TokenMode::Verify,
            secret_env: Some("PATH".into()),
            ..TokenConfig::default()
        });
        for _ in 0..2 {
            assert!(check(&verify, Some(t.as_bytes()), NOW).is_err(), "unsigned");
        }
        assert!(verify.accepted.get(&t).is_none());
    }

    #[test]
    fn a_well_formed_unexpired_token_yields_its_claims() {
        let t = token(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            r#"{"exp":1700000100,"iat":1699990000,"name":"R Morales","email":"r@example.com"}"#,
        );
        let claims = decode(Some(&t)).unwrap().unwrap();
        assert_eq!(claims.name.as_deref(), Some("R Morales"));
        assert_eq!(claims.exp, Some(1_700_000_100));
        assert_eq!(claims.iat, Some(1_699_990_000));
        assert!(claims.raw.contains("r@example.com"));
    }

    #[test]
    fn every_malformed_token_is_an_invalid_logon() {
        let good_header = r#"{"alg":"HS256"}"#;
        let cases = [
            (None, "missing"),
            (Some(String::new()), "empty"),
            (Some("abc.def".to_string()), "three"),
            (Some("a.b.c.d".to_string()), "three"),
            (Some("!!!.e30.c2ln".to_string()), "header is not base64url"),
            (
                Some(format!("{}.e30.c2ln", b64("[1]"))),
                "header is not a JSON object",
            ),
            (
                Some(token(r#"{"alg":"none"}"#, r#"{"exp":1800000000}"#)),
                "HS256",
            ),
            (Some(token(good_header, "not json")), "payload is not JSON"),
            (
                Some(token(good_header, r#"{"exp":1,"exp":1800000000}"#)),
                "gives a claim more than once",
            ),
            (
                Some(token(
                    r#"{"alg":"none","alg":"HS256"}"#,
                    r#"{"exp":1800000000}"#,
                )),
                "gives a key more than once",
            ),
            (
                Some(token(good_header, r#"{"name":"x"}"#)),
                "no numeric exp",
            ),
            (Some(token(good_header, r#"{"exp":1699999000}"#)), "expired"),
            (
                Some(format!(
                    "{}.{}.",
                    b64(good_header),
                    b64(r#"{"exp":1800000000}"#)
                )),
                "signature",
            ),
        ];
        for (t, reason) in cases {
            let err = decode(t.as_deref()).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidLogon, "{t:?}");
            assert!(err.detail.contains(reason), "{t:?}: {}", err.detail);
        }
    }

    #[test]
    fn expiry_allows_the_configured_leeway() {
        let t = token(r#"{"alg":"HS256"}"#, r#"{"exp":1699999950}"#);
        assert!(decode(Some(&t)).is_ok());
        let strict = TokenConfig {
            leeway_seconds: 0,
            ..TokenConfig::default()
        };
        assert!(check(&policy(strict), Some(t.as_bytes()), NOW).is_err());
    }

    #[test]
    fn verify_mode_needs_its_secret_in_the_environment() {
        let config = TokenConfig {
            mode: TokenMode::Verify,
            secret_env: Some("FOLLOWUP_TEST_SECRET_THAT_IS_NOT_SET".into()),
            ..TokenConfig::default()
        };
        let err = TokenPolicy::new(&config).unwrap_err().to_string();
        assert!(
            err.contains("FOLLOWUP_TEST_SECRET_THAT_IS_NOT_SET"),
            "{err}"
        );
        let none = TokenConfig {
            mode: TokenMode::Verify,
            ..TokenConfig::default()
        };
        assert!(TokenPolicy::new(&none).is_err());
    }

    #[test]
    fn off_mode_checks_nothing() {
        let off = TokenConfig {
            mode: TokenMode::Off,
            ..TokenConfig::default()
        };
        assert!(check(&policy(off), None, NOW).unwrap().is_none());
    }
}
