//! Builders: a configuration written in Rust, checked like a parsed file and, where a
//! program needs a file (a test starting the real binary, `plugin new`), written as TOML.
//!
//! ```
//! # use followup_host::config::{Config, PluginManifest, RouteConfig};
//! let config = Config::default()
//!     .with_plugin("booker", PluginManifest::new("booker.wasm").with_kv())
//!     .with_route(RouteConfig::book_job("/workorders/{0}/followup", "booker"))
//!     .checked()
//!     .unwrap();
//! assert!(config.to_toml().unwrap().contains("[plugins.booker]"));
//! ```
//!
//! Paths are used as given: a built configuration has no file to resolve them against.

use crate::config::{
    Config, HttpGrant, Limits, PluginManifest, RouteConfig, TokenConfig, TokenMode,
};
use crate::contract::RouteKind;
use anyhow::Context;
use std::path::PathBuf;

impl Config {
    /// Adds (or replaces) plugin `name`.
    pub fn with_plugin(mut self, name: impl Into<String>, manifest: PluginManifest) -> Self {
        self.plugins.insert(name.into(), manifest);
        self
    }

    /// Adds a route after the others (routes match in order).
    pub fn with_route(mut self, route: RouteConfig) -> Self {
        self.routes.push(route);
        self
    }

    /// Sets how every route without a token policy of its own checks `x-access-token`.
    pub fn with_token(mut self, token: TokenConfig) -> Self {
        self.token = token;
        self
    }

    /// The configuration, refused for the same reasons a file would be (unknown plugins,
    /// bad templates, two routes on one path, limits over the runtime's).
    pub fn checked(self) -> anyhow::Result<Config> {
        self.check()?;
        Ok(self)
    }

    /// The configuration as a TOML file that [`Config::parse`] reads back as it is.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string(self).context("the configuration cannot be written as TOML")
    }
}

impl PluginManifest {
    /// The component at `path`, with every limit at its default and nothing granted.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        PluginManifest {
            path: path.into(),
            limits: Limits::default(),
            config: Default::default(),
            secrets: Default::default(),
            http: None,
            kv: false,
            reuse_instances: 0,
            samples: Vec::new(),
            record: false,
            redact: Vec::new(),
            record_max_bytes: 256 << 10,
            replay_last: 0,
            max_replay_diff: 0,
            canary: Default::default(),
            unknown: Default::default(),
        }
    }

    /// Records the plugin's bookings (`record = true`), leaving out `redact`.
    pub fn recorded(mut self, redact: &[&str]) -> Self {
        self.record = true;
        self.redact = redact.iter().map(|p| p.to_string()).collect();
        self
    }

    /// Grants the key-value store.
    pub fn with_kv(mut self) -> Self {
        self.kv = true;
        self
    }

    /// A value the plugin reads through the `config` service.
    pub fn with_value(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.insert(key.into(), value.into());
        self
    }

    /// A configuration value read from environment variable `var` when the plugin loads.
    pub fn with_secret(mut self, key: impl Into<String>, var: impl Into<String>) -> Self {
        self.secrets.insert(key.into(), var.into());
        self
    }

    /// Grants outbound HTTP.
    pub fn with_http(mut self, grant: HttpGrant) -> Self {
        self.http = Some(grant);
        self
    }

    /// The limits the plugin runs under (`Limits { timeout_ms: 200, ..Limits::default() }`).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Warm instance reuse: up to `requests` per instance.
    pub fn with_reuse(mut self, requests: u32) -> Self {
        self.reuse_instances = requests;
        self
    }

    /// A sample every new version must answer before it serves.
    pub fn with_sample(mut self, path: impl Into<PathBuf>) -> Self {
        self.samples.push(path.into());
        self
    }
}

impl HttpGrant {
    /// Calls to `origins` (`https://api.example.com`), with the default limits.
    pub fn allowing<S: Into<String>>(origins: impl IntoIterator<Item = S>) -> Self {
        HttpGrant {
            allow: origins.into_iter().map(Into::into).collect(),
            ..HttpGrant::default()
        }
    }
}

impl RouteConfig {
    /// A route of `kind` on `path`, served by `plugin`, named after its path.
    pub fn new(path: impl Into<String>, kind: RouteKind, plugin: impl Into<String>) -> Self {
        RouteConfig {
            name: None,
            path: path.into(),
            kind,
            plugin: plugin.into(),
            token: None,
            secret_env: None,
            ttl_seconds: None,
            issuer: None,
            audience: None,
            window_seconds: None,
            max_failures_per_user: None,
            max_failures_per_client: None,
        }
    }

    /// An Authentication route that signs the tokens it hands out with the secret in the
    /// environment variable `secret_env`.
    pub fn authentication(
        path: impl Into<String>,
        plugin: impl Into<String>,
        secret_env: impl Into<String>,
    ) -> Self {
        RouteConfig {
            secret_env: Some(secret_env.into()),
            ..RouteConfig::new(path, RouteKind::Authentication, plugin)
        }
    }

    /// An Authentication route's throttling: `per_user` failed logons per username and
    /// `per_client` per client address within `window_seconds`.
    pub fn throttled(mut self, per_user: u32, per_client: u32, window_seconds: u64) -> Self {
        self.max_failures_per_user = Some(per_user);
        self.max_failures_per_client = Some(per_client);
        self.window_seconds = Some(window_seconds);
        self
    }

    /// A Followup WorkOrder route (`{0}` in `path` is the WorkOrderID).
    pub fn book_job(path: impl Into<String>, plugin: impl Into<String>) -> Self {
        RouteConfig::new(path, RouteKind::BookJob, plugin)
    }

    /// An Appointment Search route.
    pub fn appointment_search(path: impl Into<String>, plugin: impl Into<String>) -> Self {
        RouteConfig::new(path, RouteKind::AppointmentSearch, plugin)
    }

    /// The route's (tenant's) name, handed to the plugin.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// A token policy of the route's own.
    pub fn with_token(mut self, token: TokenConfig) -> Self {
        self.token = Some(token);
        self
    }
}

impl TokenConfig {
    /// No check: no claims reach the plugin.
    pub fn off() -> Self {
        TokenConfig {
            mode: TokenMode::Off,
            ..TokenConfig::default()
        }
    }

    /// HS256 signatures checked with the secret in environment variable `secret_env`.
    pub fn verify(secret_env: impl Into<String>) -> Self {
        TokenConfig {
            mode: TokenMode::Verify,
            secret_env: Some(secret_env.into()),
            ..TokenConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreBackend;
    use std::path::Path;

    /// Everything a builder can set survives the trip through TOML.
    #[test]
    fn a_built_config_reads_back_as_it_was_written() {
        let mut config = Config::default()
            .with_token(TokenConfig::verify("SECRET_VAR"))
            .with_plugin(
                "booker",
                PluginManifest::new("/plugins/booker.wasm")
                    .with_kv()
                    .with_value("now", "2024-06-17T12:00:00Z")
                    .with_value("quote", "a \"quoted\" value\nover two lines")
                    .with_secret("api_key", "BOOKER_KEY")
                    .with_http(HttpGrant::allowing(["http://127.0.0.1:9000"]))
                    .with_limits(Limits {
                        timeout_ms: 200,
                        max_fuel: None,
                        ..Limits::default()
                    })
                    .with_reuse(4)
                    .with_sample("/samples/book.json"),
            )
            .with_plugin(
                "other",
                PluginManifest::new("/plugins/other.wasm").with_limits(Limits {
                    max_memory_bytes: 16 << 20,
                    ..Limits::default()
                }),
            )
            .with_route(RouteConfig::book_job("/wo/{0}/followup", "booker").named("acme"))
            .with_route(
                RouteConfig::appointment_search("/search", "other").with_token(TokenConfig::off()),
            );
        config.store.backend = StoreBackend::Memory;
        config.cache_dir = "/var/cache/followup".into();
        let config = config.checked().unwrap();
        let text = config.to_toml().unwrap();
        let back = Config::parse(&text, Path::new("")).unwrap();
        assert_eq!(back.to_toml().unwrap(), text, "{text}");
        let booker = &back.plugins["booker"];
        assert_eq!(booker.config["quote"], "a \"quoted\" value\nover two lines");
        assert_eq!(booker.limits.timeout_ms, 200);
        assert_eq!(booker.secrets["api_key"], "BOOKER_KEY");
        assert_eq!(
            booker.http.as_ref().unwrap().allow,
            ["http://127.0.0.1:9000"]
        );
        assert!(booker.kv && booker.unknown.is_empty());
        assert_eq!(back.plugins["other"].limits.max_memory_bytes, 16 << 20);
        assert_eq!(back.routes[0].name.as_deref(), Some("acme"));
        assert_eq!(back.routes[1].token, Some(TokenConfig::off()));
        assert_eq!(back.token.secret_env.as_deref(), Some("SECRET_VAR"));
        assert_eq!(back.store.backend, StoreBackend::Memory);
    }

    /// A built config is refused for what a file would be refused for.
    #[test]
    fn a_built_config_is_checked() {
        let err = Config::default()
            .with_route(RouteConfig::book_job("/wo/{0}", "missing"))
            .checked()
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("not under [plugins]"),
            "{err:#}"
        );
        let err = Config::default()
            .with_plugin("p", PluginManifest::new("p.wasm"))
            .with_route(RouteConfig::book_job("/wo/x", "p"))
            .checked()
            .unwrap_err();
        assert!(format!("{err:#}").contains("{0}"), "{err:#}");
    }

    /// An empty file and the default configuration are the same.
    #[test]
    fn the_default_is_an_empty_file() {
        let empty = Config::parse("", Path::new("")).unwrap();
        assert_eq!(
            empty.to_toml().unwrap(),
            Config::default().to_toml().unwrap()
        );
    }
}
