//! The host's TOML configuration, every type of it: listener, status mode, limits, token
//! checks, runtime, store, plugins and routes. Every setting has a documented default;
//! unknown keys are refused so that a typo never silently falls back to a default.
//!
//! This module only says what the settings are (and checks that they fit together); the
//! layer each section configures enforces it. It sits just above the contract: every other
//! layer reads its own section from here. Programs that write a configuration (tests,
//! `plugin run`, `plugin new`) build it with the builders in [`build`] and, where a file is
//! needed, write it with [`Config::to_toml`].

pub mod build;
pub mod http;
pub mod plugin;
pub mod runtime;

pub use http::{
    InputLimits, LogonConfig, MAX_TOKEN_TTL_SECONDS, StatusMode, TokenConfig, TokenMode,
};
pub use plugin::{CanaryConfig, HttpGrant, Limits, Origin, PluginManifest, RecordPolicy};
pub use runtime::RuntimeConfig;

use crate::contract::{RouteKind, Template};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where `cargo build --release --target wasm32-wasip2 -p capacity-booker` puts the
/// example plugin, relative to the repository root.
pub const EXAMPLE_PLUGIN: &str = "target/wasm32-wasip2/release/capacity_booker.wasm";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to serve on. Default `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `documented` (default: only 200, 401 and 500) or `http` (precise statuses).
    #[serde(default)]
    pub status_mode: StatusMode,
    /// The host log's lines: `text` (default) or `json` (one JSON object per line; the
    /// `--log-format` option overrides it).
    #[serde(default)]
    pub log_format: LogFormat,
    /// Largest request body accepted. Default 1 MiB.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// The admin API's listener and token.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Limits on headers, slow clients and JSON shape.
    #[serde(default)]
    pub limits: InputLimits,
    /// How `x-access-token` is checked. Default: `decode`.
    #[serde(default)]
    pub token: TokenConfig,
    /// Host-wide runtime settings.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Where compiled plugins are kept so that restarts skip compiling (relative to the
    /// config file). Default `data/cache`.
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
    /// Where the versions each plugin served are kept for rollback, across restarts
    /// (relative to the config file). Default `data/versions`; `""` keeps them in memory.
    #[serde(default = "default_versions_dir")]
    pub versions_dir: PathBuf,
    /// The store: plugins' key-value data and the idempotency journal.
    #[serde(default)]
    pub store: StoreConfig,
    /// Watching the plugin files for new versions.
    #[serde(default)]
    pub watch: WatchConfig,
    /// Plugins by name.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginManifest>,
    /// Routes, matched in order.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// How the host log writes a line (`log_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `TIME LEVEL target: message key=value …`, every value escaped.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the event's
    /// fields (`request_id`, `plugin`, …) as keys of their own.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("{s:?} is not a log format (text or json)")),
        }
    }
}

/// One route (`[[routes]]`): a path template served by a plugin.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The route's (tenant's) name, handed to the plugin. Default: the path template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Path template; `{0}` stands for the WorkOrderID and must be a whole segment.
    pub path: String,
    /// `book-job`, `appointment-search` or `authentication`.
    pub kind: RouteKind,
    /// Name of the plugin (a key of `[plugins]`) that serves the route.
    pub plugin: String,
    /// How this route checks `x-access-token`, replacing the global `[token]` (e.g. a
    /// tenant with its own secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenConfig>,
    /// `authentication` routes: the environment variable holding the HS256 secret the
    /// host signs tokens with (at least 32 bytes). Required there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// `authentication` routes: how long a minted token lives. Default 3600 s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// `authentication` routes: the `iss` of minted tokens, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// `authentication` routes: the `aud` of minted tokens, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// `authentication` routes: the window failed logons are counted in. Default 300 s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<u64>,
    /// `authentication` routes: failed logons of one username within the window before
    /// its logons are refused until the window moves on. Default 5; 0 counts none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_failures_per_user: Option<u32>,
    /// `authentication` routes: failed logons from one client address within the window
    /// before its logons are refused. Default 50; 0 counts none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_failures_per_client: Option<u32>,
}

impl RouteConfig {
    /// The settings of an `authentication` route with their defaults; `None` for other
    /// kinds.
    pub fn logon(&self) -> Option<LogonConfig> {
        (self.kind == RouteKind::Authentication).then(|| LogonConfig {
            secret_env: self.secret_env.clone().unwrap_or_default(),
            ttl_seconds: self.ttl_seconds.unwrap_or(3600),
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            window_seconds: self.window_seconds.unwrap_or(300),
            max_failures_per_user: self.max_failures_per_user.unwrap_or(5),
            max_failures_per_client: self.max_failures_per_client.unwrap_or(50),
        })
    }

    /// The keys set that only an `authentication` route takes.
    fn logon_keys(&self) -> Vec<&'static str> {
        [
            ("secret_env", self.secret_env.is_some()),
            ("ttl_seconds", self.ttl_seconds.is_some()),
            ("issuer", self.issuer.is_some()),
            ("audience", self.audience.is_some()),
            ("window_seconds", self.window_seconds.is_some()),
            (
                "max_failures_per_user",
                self.max_failures_per_user.is_some(),
            ),
            (
                "max_failures_per_client",
                self.max_failures_per_client.is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }

    fn check_logon(&self) -> anyhow::Result<()> {
        let Some(logon) = self.logon() else {
            if let Some(key) = self.logon_keys().first() {
                bail!("{key} applies to authentication routes only");
            }
            return Ok(());
        };
        if self.token.is_some() {
            bail!("an authentication route checks no x-access-token: it hands them out");
        }
        if logon.secret_env.is_empty() {
            bail!(
                "an authentication route needs secret_env, the variable holding its signing secret"
            );
        }
        if !(1..=MAX_TOKEN_TTL_SECONDS).contains(&logon.ttl_seconds) {
            bail!("ttl_seconds must be between 1 and {MAX_TOKEN_TTL_SECONDS} (7 days)");
        }
        if !(1..=86_400).contains(&logon.window_seconds) {
            bail!("window_seconds must be between 1 and 86400");
        }
        Ok(())
    }
}

/// /// `[watch]`: a component renamed over (or written and closed at) a plugin's configured
/// path is deployed like an upload through the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// Default `true`.
    pub enabled: bool,
    /// Quiet time after the last change of a file before it is loaded. Default 5 ms.
    pub debounce_ms: u64,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            enabled: true,
            debounce_ms: 5,
        }
    }
}

impl WatchConfig {
    pub fn debounce(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.debounce_ms)
    }
}

/// `[store]`: where bookings and plugins' data are kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite` (default): durable, in the file at `path`. `postgres`: durable, in the
    /// PostgreSQL database several hosts share (`docs/scale-out.md`). `memory`: the same
    /// semantics in this process's memory, lost when it stops — for development and
    /// benchmarks.
    pub backend: StoreBackend,
    /// The SQLite file (relative to the config file). Default `data/followup.db`.
    pub path: PathBuf,
    /// How long a completed booking is answered from the journal. Default 168 (7 days).
    pub journal_retention_hours: u64,
    /// PostgreSQL: the environment variable holding the connection string (a libpq URL
    /// such as `postgres://followup@db:5432/followup`; never in this file). Default
    /// `FOLLOWUP_DATABASE_URL`.
    pub url_env: String,
    /// PostgreSQL: most connections this host holds. Default 16.
    pub pool_size: usize,
    /// PostgreSQL: longest a statement runs, and the bound on waiting for a connection:
    /// past it a booking answers `store-unavailable`. Default 2000.
    pub statement_timeout_ms: u64,
    /// PostgreSQL: how long a host's claim on a running booking lasts without renewal (it
    /// is renewed while the booking runs): what a duplicate waits at most when the host
    /// running the booking dies. Default 10.
    pub claim_seconds: u64,
}

/// Which backend holds the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Sqlite,
    Postgres,
    Memory,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Sqlite,
            path: PathBuf::from("data/followup.db"),
            journal_retention_hours: 168,
            url_env: "FOLLOWUP_DATABASE_URL".into(),
            pool_size: 16,
            statement_timeout_ms: 2000,
            claim_seconds: 10,
        }
    }
}

/// Every default, no plugin and no route: what an empty file parses to.
impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            status_mode: Default::default(),
            log_format: Default::default(),
            max_body_bytes: default_max_body(),
            admin: Default::default(),
            limits: Default::default(),
            token: Default::default(),
            runtime: Default::default(),
            cache_dir: default_cache_dir(),
            versions_dir: default_versions_dir(),
            store: Default::default(),
            watch: Default::default(),
            plugins: Default::default(),
            routes: Default::default(),
        }
    }
}

fn default_versions_dir() -> PathBuf {
    PathBuf::from("data/versions")
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_cache_dir() -> PathBuf {
    PathBuf::from("data/cache")
}

fn default_max_body() -> usize {
    1 << 20
}

impl Config {
    /// Reads a config file; relative plugin paths are resolved against its directory.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).with_context(|| format!("config {}", path.display()))
    }

    /// Parses config text; relative plugin paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> anyhow::Result<Config> {
        let mut config: Config = toml::from_str(text)?;
        if config.cache_dir.is_relative() {
            config.cache_dir = base.join(&config.cache_dir);
        }
        if config.store.path.is_relative() {
            config.store.path = base.join(&config.store.path);
        }
        if config.versions_dir.is_relative() && !config.versions_dir.as_os_str().is_empty() {
            config.versions_dir = base.join(&config.versions_dir);
        }
        for manifest in config.plugins.values_mut() {
            if manifest.path.is_relative() {
                manifest.path = base.join(&manifest.path);
            }
            for sample in &mut manifest.samples {
                if sample.is_relative() {
                    *sample = base.join(&*sample);
                }
            }
        }
        config.check()?;
        Ok(config)
    }

    /// The configuration used when none is given: the example plugin on
    /// `POST /workorders/{0}/followup` and `POST /appointments/search`.
    pub fn example(plugin_path: PathBuf) -> Config {
        let text = include_str!("../../../followup.example.toml");
        let mut config = Config::parse(text, Path::new("."))
            .expect("the built-in example config is valid (tested)");
        if let Some(manifest) = config.plugins.get_mut("capacity-booker") {
            manifest.path = plugin_path;
        }
        config
    }

    /// Refuses configurations that cannot serve: unknown plugins, bad templates, two
    /// routes on one path.
    fn check(&self) -> anyhow::Result<()> {
        for (name, manifest) in &self.plugins {
            if let Some(key) = manifest.unknown.keys().next() {
                bail!("[plugins.{name}] has an unknown key {key:?}");
            }
            let limits = &manifest.limits;
            if limits.max_fuel.is_some() && !self.runtime.fuel {
                bail!("[plugins.{name}] sets max_fuel, which needs fuel = true under [runtime]");
            }
            if limits.max_memory_bytes > self.runtime.max_memory_bytes {
                bail!(
                    "[plugins.{name}] max_memory_bytes {} exceeds [runtime] max_memory_bytes {}",
                    limits.max_memory_bytes,
                    self.runtime.max_memory_bytes
                );
            }
            if let Some(grant) = &manifest.http {
                grant
                    .check()
                    .map_err(|e| anyhow::anyhow!("[plugins.{name}.http] {e}"))?;
            }
            manifest
                .recording()
                .map_err(|e| anyhow::anyhow!("[plugins.{name}] {e}"))?;
            manifest
                .canary
                .check()
                .map_err(|e| anyhow::anyhow!("[plugins.{name}.canary] {e}"))?;
            if limits.max_concurrency == 0 || limits.timeout_ms == 0 {
                bail!("[plugins.{name}] max_concurrency and timeout_ms must be at least 1");
            }
        }
        let mut seen = BTreeMap::new();
        for route in &self.routes {
            let template = Template::parse(&route.path, route.kind)
                .with_context(|| format!("route {}", route.path))?;
            route
                .check_logon()
                .with_context(|| format!("route {}", route.path))?;
            if !self.plugins.contains_key(&route.plugin) {
                bail!(
                    "route {} names plugin {:?}, which is not under [plugins]",
                    route.path,
                    route.plugin
                );
            }
            if let Some(other) = seen.insert(template.shape(), &route.path) {
                bail!("routes {other} and {} match the same paths", route.path);
            }
        }
        if self.max_body_bytes == 0 {
            bail!("max_body_bytes must be at least 1");
        }
        let store = &self.store;
        if store.pool_size == 0 || store.statement_timeout_ms == 0 || store.claim_seconds == 0 {
            bail!("[store] pool_size, statement_timeout_ms and claim_seconds must be at least 1");
        }
        Ok(())
    }
}

impl StoreConfig {
    /// The PostgreSQL connection options, with the connection string from the environment.
    pub fn postgres(&self) -> anyhow::Result<crate::storage::postgres::PgOptions> {
        let url = std::env::var(&self.url_env).map_err(|_| {
            anyhow::anyhow!(
                "[store] backend = \"postgres\" reads the connection string from the \
                 environment variable {}, which is not set",
                self.url_env
            )
        })?;
        Ok(crate::storage::postgres::PgOptions {
            url,
            pool_size: self.pool_size,
            statement_timeout: std::time::Duration::from_millis(self.statement_timeout_ms),
        })
    }

    pub fn claim_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.claim_seconds)
    }
}

/// Finds the example plugin: under the working directory (the repository root), else
/// beside the running binary's `target/` directory.
pub fn locate_example_plugin() -> PathBuf {
    let from_cwd = PathBuf::from(EXAMPLE_PLUGIN);
    if from_cwd.exists() {
        return from_cwd;
    }
    // target/release/followup → target/wasm32-wasip2/release/capacity_booker.wasm
    let beside_exe = std::env::current_exe().ok().and_then(|exe| {
        let target = exe.parent()?.parent()?;
        Some(target.join("wasm32-wasip2/release/capacity_booker.wasm"))
    });
    match beside_exe {
        Some(path) if path.exists() => path,
        _ => from_cwd,
    }
}

/// `[admin]` in the config.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Where the admin API listens. Default `127.0.0.1:8081` (loopback only).
    pub listen: SocketAddr,
    /// Environment variable holding the bearer token. Default `FOLLOWUP_ADMIN_TOKEN`; when
    /// it is unset or empty the admin API is not started.
    pub token_env: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            token_env: "FOLLOWUP_ADMIN_TOKEN".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_with_its_three_routes() {
        let config = Config::example(PathBuf::from("x.wasm"));
        let kinds: Vec<RouteKind> = config.routes.iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [
                RouteKind::BookJob,
                RouteKind::AppointmentSearch,
                RouteKind::Authentication
            ]
        );
        let logon = config.routes[2].logon().unwrap();
        assert_eq!(logon.secret_env, "FOLLOWUP_TOKEN_SECRET");
        assert_eq!(
            (
                logon.window_seconds,
                logon.max_failures_per_user,
                logon.max_failures_per_client
            ),
            (300, 5, 50)
        );
        assert_eq!(
            config.plugins["capacity-booker"].path,
            PathBuf::from("x.wasm")
        );
        assert_eq!(config.listen, default_listen());
        assert_eq!(config.status_mode, StatusMode::Documented);
    }

    #[test]
    fn logon_keys_belong_to_authentication_routes_only() {
        let base = Path::new("/etc/followup");
        let plugin = "[plugins.p]\npath = \"p.wasm\"\n";
        let route = |kind: &str, extra: &str| {
            format!("{plugin}[[routes]]\npath = \"/a\"\nkind = \"{kind}\"\nplugin = \"p\"\n{extra}")
        };
        let refused = |text: String| Config::parse(&text, base).unwrap_err();
        let err = refused(route("appointment-search", "secret_env = \"S\"\n"));
        assert!(format!("{err:#}").contains("secret_env applies to authentication routes only"));
        let err = refused(route("authentication", ""));
        assert!(format!("{err:#}").contains("needs secret_env"), "{err:#}");
        let err = refused(route(
            "authentication",
            "secret_env = \"S\"\nttl_seconds = 0\n",
        ));
        assert!(format!("{err:#}").contains("ttl_seconds"), "{err:#}");
        let err = refused(route(
            "authentication",
            "secret_env = \"S\"\n[routes.token]\nmode = \"off\"\n",
        ));
        assert!(
            format!("{err:#}").contains("checks no x-access-token"),
            "{err:#}"
        );
        let err = refused(format!(
            "{plugin}[[routes]]\npath = \"/a/{{0}}\"\nkind = \"authentication\"\nplugin = \"p\"\nsecret_env = \"S\"\n"
        ));
        assert!(format!("{err:#}").contains("takes no {0}"), "{err:#}");
        let ok = Config::parse(&route("authentication", "secret_env = \"S\"\n"), base).unwrap();
        let logon = ok.routes[0].logon().unwrap();
        assert_eq!((logon.ttl_seconds, logon.window_seconds), (3600, 300));
        assert_eq!(
            Config::parse(&ok.to_toml().unwrap(), base).unwrap().routes[0].logon(),
            Some(logon)
        );
    }

    #[test]
    fn unknown_keys_and_plugins_are_refused() {
        let base = Path::new("/etc/followup");
        let typo = "listen = \"127.0.0.1:1\"\nstatus_mod = \"http\"\n";
        assert!(Config::parse(typo, base).is_err());
        let missing = "[[routes]]\npath = \"/a/{0}\"\nkind = \"book-job\"\nplugin = \"nope\"\n";
        let err = Config::parse(missing, base).unwrap_err();
        assert!(format!("{err:#}").contains("not under [plugins]"));
    }

    #[test]
    fn plugin_limits_are_checked() {
        let base = Path::new(".");
        let typo = "[plugins.p]\npath = \"p.wasm\"\ntimout_ms = 5\n";
        let err = Config::parse(typo, base).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown key \"timout_ms\""),
            "{err:#}"
        );
        let fuel = "[plugins.p]\npath = \"p.wasm\"\nmax_fuel = 1000\n";
        assert!(format!("{:#}", Config::parse(fuel, base).unwrap_err()).contains("fuel = true"));
        let ok = format!("[runtime]\nfuel = true\n{fuel}");
        assert_eq!(
            Config::parse(&ok, base).unwrap().plugins["p"]
                .limits
                .max_fuel,
            Some(1000)
        );
        let big = "[plugins.p]\npath = \"p.wasm\"\nmax_memory_bytes = 1000000000000\n";
        assert!(Config::parse(big, base).is_err());
    }

    #[test]
    fn relative_plugin_paths_follow_the_config_file() {
        let text = "[plugins.p]\npath = \"p.wasm\"\n";
        let config = Config::parse(text, Path::new("/etc/followup")).unwrap();
        assert_eq!(
            config.plugins["p"].path,
            PathBuf::from("/etc/followup/p.wasm")
        );
    }

    #[test]
    fn duplicate_routes_are_refused() {
        let text = "[plugins.p]\npath = \"p.wasm\"\n\
            [[routes]]\npath = \"/a/{0}\"\nkind = \"book-job\"\nplugin = \"p\"\n\
            [[routes]]\npath = \"/a/{0}/\"\nkind = \"book-job\"\nplugin = \"p\"\n";
        let err = Config::parse(text, Path::new(".")).unwrap_err();
        assert!(format!("{err:#}").contains("match the same paths"));
    }
}
