//! Authentication routes: ServiceMobility's Authentication REST API Interface. A small
//! body (`{"username","password"}`) is read and checked, the route's throttle decides
//! whether this username and client may try now, the plugin's `authenticate` vouches for
//! the credentials, and the host signs an HS256 token from the identity it returns.
//!
//! The password goes to the plugin and nowhere else: error bodies name what is wrong with
//! `username` or `password` but never their values, the throttle keys on the username
//! alone, and no log line, metric or journal entry is written from the body.

use crate::config::LogonConfig;
use crate::contract::bindings::authentication::{Credentials, Identity};
use crate::contract::{PluginIdent, Problem};
use crate::error::{ApiError, ErrorKind};
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The largest logon body read: the Authentication Object is two short strings.
pub const MAX_BODY_BYTES: usize = 4096;
/// The longest username accepted, in bytes.
pub const MAX_USERNAME_BYTES: usize = 256;
/// The longest password accepted, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The shortest signing secret accepted: HS256 wants a key of at least 256 bits.
pub const MIN_SECRET_BYTES: usize = 32;
/// Usernames (and client addresses) whose failures one route tracks at most; beyond it
/// the one whose last failure is oldest is forgotten.
const MAX_TRACKED: usize = 100_000;

/// An authentication route's signing key, token settings and throttle.
pub struct Logon {
    key: jsonwebtoken::EncodingKey,
    pub settings: LogonConfig,
    pub throttle: Throttle,
}

impl std::fmt::Debug for Logon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Logon")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Logon {
    /// Reads the signing secret from the environment variable the route names.
    pub fn new(settings: LogonConfig) -> anyhow::Result<Logon> {
        let var = &settings.secret_env;
        let secret = std::env::var(var).unwrap_or_default();
        if secret.is_empty() {
            anyhow::bail!("environment variable {var} (secret_env) is unset or empty");
        }
        if secret.len() < MIN_SECRET_BYTES {
            anyhow::bail!(
                "the secret in {var} has {} bytes; an HS256 signing secret needs at least \
                 {MIN_SECRET_BYTES}",
                secret.len()
            );
        }
        super::hs256::install();
        Ok(Logon {
            key: jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
            throttle: Throttle::new(
                Duration::from_secs(settings.window_seconds),
                settings.max_failures_per_user,
                settings.max_failures_per_client,
            ),
            settings,
        })
    }

    /// The token for `identity`, issued at `now` (seconds since the Unix epoch), as the
    /// answer's body: `{"token": "…"}`. Claims the host sets are never taken from the
    /// plugin's `extra`.
    pub fn mint(
        &self,
        identity: &Identity,
        now: u64,
        plugin: &Arc<PluginIdent>,
    ) -> Result<Vec<u8>, ApiError> {
        let bad = |why: String| {
            ApiError::new(
                ErrorKind::PluginBadResult,
                format!("plugin {plugin} returned an unusable identity: {why}"),
            )
            .for_plugin(plugin)
        };
        if identity.subject.is_empty() {
            return Err(bad("its subject is empty".into()));
        }
        let mut claims = match identity.extra.as_deref().map(str::trim) {
            None | Some("") => Map::new(),
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => map,
                Ok(_) => return Err(bad("extra is not a JSON object".into())),
                Err(e) => return Err(bad(format!("extra is not JSON: {e}"))),
            },
        };
        for key in [
            "sub", "name", "email", "iat", "exp", "nbf", "iss", "aud", "jti",
        ] {
            claims.remove(key);
        }
        claims.insert("sub".into(), identity.subject.clone().into());
        if let Some(name) = &identity.name {
            claims.insert("name".into(), name.clone().into());
        }
        if let Some(email) = &identity.email {
            claims.insert("email".into(), email.clone().into());
        }
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), (now + self.settings.ttl_seconds).into());
        if let Some(iss) = &self.settings.issuer {
            claims.insert("iss".into(), iss.clone().into());
        }
        if let Some(aud) = &self.settings.audience {
            claims.insert("aud".into(), aud.clone().into());
        }
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        let token = jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| {
            ApiError::new(ErrorKind::Internal, format!("cannot sign the token: {e}"))
        })?;
        Ok(serde_json::to_vec(&serde_json::json!({ "token": token })).unwrap_or_default())
    }
}

/// Reads the Authentication Object. Unknown keys are ignored (a newer ServiceMobility may
/// send more); a problem names the key, never the value sent.
pub fn credentials(body: &[u8]) -> Result<Credentials, ApiError> {
    let problem = |name: &str, reason: &str| Problem {
        name: name.to_string(),
        reason: reason.to_string(),
        path: if name == "$" {
            "$".to_string()
        } else {
            format!("$.{name}")
        },
        value: String::new(),
    };
    // A key given twice could be read as the first by a proxy and as the last here.
    let Some(Value::Object(mut object)) = super::json::parse_without_repeats(body) else {
        return Err(ApiError::invalid(vec![problem(
            "$",
            "must be a JSON object with username and password, each given once",
        )]));
    };
    let mut problems = Vec::new();
    let mut field = |name: &str, max: usize| match object.remove(name) {
        Some(Value::String(s)) if s.is_empty() => {
            problems.push(problem(name, "must not be empty"));
            None
        }
        Some(Value::String(s)) if s.len() > max => {
            problems.push(problem(name, &format!("must be at most {max} bytes")));
            None
        }
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            problems.push(problem(name, "must be a string"));
            None
        }
        None => {
            problems.push(problem(name, "is required"));
            None
        }
    };
    let username = field("username", MAX_USERNAME_BYTES);
    let password = field("password", MAX_PASSWORD_BYTES);
    match (username, password) {
        (Some(username), Some(password)) if problems.is_empty() => {
            Ok(Credentials { username, password })
        }
        _ => Err(ApiError::invalid(problems)),
    }
}

/// Failed logons per username and per client address, in a sliding window: a username or
/// client with its limit of failures within the window is refused without asking the
/// plugin until the oldest of them leaves the window. A refused attempt is not counted as
/// a failure, so waiting always ends the refusal.
pub struct Throttle {
    window: Duration,
    per_user: u32,
    per_client: u32,
    users: Mutex<Failures<String>>,
    clients: Mutex<Failures<IpAddr>>,
}

impl Throttle {
    pub fn new(window: Duration, per_user: u32, per_client: u32) -> Throttle {
        Throttle {
            window,
            per_user,
            per_client,
            users: Mutex::default(),
            clients: Mutex::default(),
        }
    }

    /// `Err(wait)` when `username` or `client` has used up its failures at `now`.
    pub fn admit(
        &self,
        username: &str,
        client: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), Duration> {
        let user_wait =
            lock(&self.users).wait(&user_key(username), self.per_user, self.window, now);
        let client_wait =
            client.and_then(|c| lock(&self.clients).wait(&c, self.per_client, self.window, now));
        match user_wait.max(client_wait) {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// Counts a failed logon.
    pub fn failed(&self, username: &str, client: Option<IpAddr>, now: Instant) {
        if self.per_user > 0 {
            lock(&self.users).add(user_key(username), self.per_user, self.window, now);
        }
        if let Some(client) = client
            && self.per_client > 0
        {
            lock(&self.clients).add(client, self.per_client, self.window, now);
        }
    }

    /// A successful logon clears the username's failures (its client's stay counted).
    pub fn succeeded(&self, username: &str) {
        lock(&self.users).by_key.remove(&user_key(username));
    }
}

/// Usernames are counted case-insensitively, so that `Alice` and `alice` share a budget.
fn user_key(username: &str) -> String {
    username.trim().to_lowercase()
}

/// The recent failures of each key, at most `limit` instants a key.
struct Failures<K> {
    by_key: HashMap<K, VecDeque<Instant>>,
}

impl<K> Default for Failures<K> {
    fn default() -> Self {
        Failures {
            by_key: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> Failures<K> {
    fn wait(&self, key: &K, limit: u32, window: Duration, now: Instant) -> Option<Duration> {
        if limit == 0 {
            return None;
        }
        let recent = self.by_key.get(key)?;
        if recent.len() < limit as usize {
            return None;
        }
        let oldest = *recent.front()?;
        let free_at = oldest + window;
        (free_at > now).then(|| free_at - now)
    }

    fn add(&mut self, key: K, limit: u32, window: Duration, now: Instant) {
        if !self.by_key.contains_key(&key) && self.by_key.len() >= MAX_TRACKED {
            self.by_key
                .retain(|_, recent| recent.back().is_some_and(|last| *last + window > now));
            if self.by_key.len() >= MAX_TRACKED {
                let oldest = self
                    .by_key
                    .iter()
                    .min_by_key(|(_, recent)| recent.back().copied())
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    self.by_key.remove(&oldest);
                }
            }
        }
        let recent = self.by_key.entry(key).or_default();
        while recent.front().is_some_and(|t| *t + window <= now) {
            recent.pop_front();
        }
        if recent.len() >= limit as usize {
            recent.pop_front();
        }
        recent.push_back(now);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Failure counts hold no invariant a panicking holder could break.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_name_the_problem_never_the_value() {
        let secret = "hunter2-секрет";
        for body in [
            format!(r#"{{"username":"ann","password":{}}}"#, 7),
            format!(r#"{{"username":"{secret}"}}"#),
            format!(r#"{{"username":["{secret}"],"password":"{secret}"}}"#),
            format!(r#"{{"username":"","password":"{secret}"}}"#),
            format!(r#"["{secret}"]"#),
            format!(r#"{{"username":"ann","password":"{secret}","password":"x"}}"#),
            format!(r#"{{"username":"ann","password":"{}"}}"#, "x".repeat(2000)),
        ] {
            let err = credentials(body.as_bytes()).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidRequest, "{body}");
            assert!(!err.invalid_params.is_empty(), "{body}");
            let shown = format!("{} {:?}", err.detail, err.invalid_params);
            assert!(!shown.contains(secret), "{shown}");
            assert!(!shown.contains("xxxx"), "{shown}");
        }
        let ok = credentials(br#"{"username":"ann","password":"pw","extra":1}"#).unwrap();
        assert_eq!((ok.username.as_str(), ok.password.as_str()), ("ann", "pw"));
    }

    #[test]
    fn the_throttle_refuses_after_the_limit_until_the_window_moves_on() {
        let throttle = Throttle::new(Duration::from_secs(300), 5, 50);
        let t0 = Instant::now();
        let client = Some(IpAddr::from([127, 0, 0, 1]));
        for i in 0..5 {
            assert!(throttle.admit("Ann", client, t0).is_ok(), "attempt {i}");
            throttle.failed("Ann", client, t0 + Duration::from_secs(i));
        }
        let wait = throttle
            .admit("ann", client, t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(290));
        // Another user from the same client is not refused.
        assert!(
            throttle
                .admit("bob", client, t0 + Duration::from_secs(10))
                .is_ok()
        );
        // Once the oldest failure leaves the window, one more attempt is allowed.
        assert!(
            throttle
                .admit("ann", client, t0 + Duration::from_secs(300))
                .is_ok()
        );
    }

    #[test]
    fn the_client_limit_spans_usernames_and_success_clears_only_the_user() {
        let throttle = Throttle::new(Duration::from_secs(60), 100, 3);
        let now = Instant::now();
        let client = Some(IpAddr::from([10, 0, 0, 9]));
        for user in ["a", "b", "c"] {
            throttle.failed(user, client, now);
        }
        assert!(throttle.admit("d", client, now).is_err());
        assert!(
            throttle
                .admit("d", Some(IpAddr::from([10, 0, 0, 8])), now)
                .is_ok()
        );
        assert!(throttle.admit("d", None, now).is_ok());
        throttle.succeeded("a");
        assert!(
            throttle.admit("a", client, now).is_err(),
            "the client stays counted"
        );
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let throttle = Throttle::new(Duration::from_secs(60), 0, 0);
        let now = Instant::now();
        for _ in 0..100 {
            throttle.failed("ann", Some(IpAddr::from([1, 1, 1, 1])), now);
        }
        assert!(
            throttle
                .admit("ann", Some(IpAddr::from([1, 1, 1, 1])), now)
                .is_ok()
        );
    }
}
