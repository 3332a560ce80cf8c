//! What the operator says about the HTTP surface: the status mode, how `x-access-token` is
//! checked (`[token]`, or a route's own), and the limits on what a request may carry
//! (`[limits]`). `http/` enforces them.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Which statuses the host answers with (`status_mode` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatusMode {
    /// Only what the interface documents: 200, 401, and 500 for every other failure; the
    /// body's `type` says what it was. ServiceMobility relays our status to its caller.
    #[default]
    Documented,
    /// Precise HTTP statuses (400, 404, 405, 409, 413, 415, 502, 503, 504, …).
    Http,
}

/// How tokens are checked (`[token]` in the config).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    pub mode: TokenMode,
    /// Clock skew allowed on `exp` and `nbf`. Default 60 s.
    pub leeway_seconds: u64,
    /// Longest token accepted. Default 8 KiB.
    pub max_bytes: usize,
    /// `verify` mode: the environment variable holding the HS256 secret. Required there;
    /// the secret itself never appears in the config or the log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// `verify` mode: the required `iss`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// `verify` mode: the required `aud` (one of them, when the token lists several).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// `verify` mode: claims that must be present besides `exp`.
    pub required_claims: Vec<String>,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            mode: TokenMode::Decode,
            leeway_seconds: 60,
            max_bytes: 8 << 10,
            secret_env: None,
            issuer: None,
            audience: None,
            required_claims: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenMode {
    /// No check; no claims reach the plugin.
    Off,
    /// Structure, algorithm and `exp` (the default).
    #[default]
    Decode,
    /// The HS256 signature with the secret from `secret_env`, `exp`, `nbf`, and the
    /// configured `issuer`, `audience` and `required_claims`.
    Verify,
}

/// What an `authentication` route is configured with (the keys on its `[[routes]]` entry),
/// defaults filled in: how the host mints tokens and throttles failed logons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogonConfig {
    /// The environment variable holding the HS256 signing secret.
    pub secret_env: String,
    /// Lifetime of a minted token (its `exp` is `iat` plus this).
    pub ttl_seconds: u64,
    /// `iss` of minted tokens.
    pub issuer: Option<String>,
    /// `aud` of minted tokens.
    pub audience: Option<String>,
    /// The window failed logons are counted in.
    pub window_seconds: u64,
    /// Failed logons per username within the window; 0: not counted.
    pub max_failures_per_user: u32,
    /// Failed logons per client address within the window; 0: not counted.
    pub max_failures_per_client: u32,
}

/// The longest lifetime a minted token may have: 7 days.
pub const MAX_TOKEN_TTL_SECONDS: u64 = 7 * 86_400;

/// `[limits]` in the config. Every field has a default.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
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
    /// Longest JSON string or key, in bytes of UTF-8 once its escapes are decoded. Default
    /// 64 KiB.
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
}
