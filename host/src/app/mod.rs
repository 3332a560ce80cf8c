//! The app: everything a request needs, shared by all requests — the runtime, the routes,
//! the plugin versions serving, the store and its journal, the limits and metrics — and
//! how it is built from the configuration ([`start`]) and changed by deploys ([`deploy`]).

pub mod deploy;
pub mod promote;
pub mod shared;
pub mod start;

use crate::config;
use crate::config::Config;
use crate::config::{InputLimits, PluginManifest, StatusMode};
use crate::http::auth::TokenPolicy;
use crate::http::routes::{Route, RouteKind, RouteTable};
use crate::journal;
use crate::metrics;
use crate::plugin;
use crate::plugin::LoadedPlugin;
use crate::plugin::history::History;
use crate::runtime::PluginRuntime;
use crate::storage;
use anyhow::{Context, bail};
use start::{Applied, Sample, check_serves, converge_at_start, load_configured, read_samples};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

/// Everything a request needs, shared by all requests.
pub struct App {
    pub runtime: Arc<PluginRuntime>,
    pub routes: RouteTable,
    /// The version serving each plugin name (hot-swappable).
    pub plugins: plugin::registry::Registry,
    /// Limits, config and grants per plugin name; a new version runs under the same.
    manifests: BTreeMap<String, PluginManifest>,
    /// Requests each new version of a plugin must answer before it serves.
    samples: HashMap<String, Vec<Sample>>,
    /// The versions each plugin served, for rollback and restarts.
    pub history: History,
    /// Serialises swaps, so that the registry and the history agree.
    swapping: Mutex<()>,
    /// Plugins serving a kept version because their configured file was refused at start.
    degraded: Mutex<BTreeMap<String, plugin::Degraded>>,
    /// Plugins' key-value data and the idempotency journal.
    pub storage: storage::SharedStorage,
    /// The idempotency journal: bookings that happen once.
    pub journal: Arc<journal::Journal>,
    /// The shared versions this host applied (a store several hosts share).
    shared_applied: Applied,
    /// Candidate versions in shadow or canary beside the serving ones.
    pub candidates: crate::promote::Candidates,
    pub status_mode: StatusMode,
    pub max_body_bytes: usize,
    pub limits: InputLimits,
    pub metrics: metrics::Metrics,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("routes", &self.routes)
            .field("plugins", &self.plugins)
            .field("status_mode", &self.status_mode)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Builds the runtime, then loads every plugin and route of `config`.
    pub fn new(config: &Config) -> anyhow::Result<App> {
        let runtime = PluginRuntime::with_cache(&config.runtime, config.cache_dir.clone())?;
        App::with_runtime(config, runtime)
    }

    /// Loads every plugin and route of `config` into an existing runtime.
    ///
    /// Each plugin serves the file its manifest names, unless the versions directory says
    /// a deploy or rollback replaced that very file before a restart (see
    /// [`plugin::history`]). A configured file that cannot be read, fails the loader or
    /// cannot serve the plugin's routes is never trusted: the newest kept version that can
    /// serves instead, and the plugin is reported as [degraded](App::degraded). Refuses to
    /// start only when a plugin has no version that can serve.
    pub fn with_runtime(config: &Config, runtime: Arc<PluginRuntime>) -> anyhow::Result<App> {
        if config.runtime != *runtime.config() {
            bail!("the config's [runtime] settings differ from those the runtime was built with");
        }
        let versions_dir =
            (!config.versions_dir.as_os_str().is_empty()).then(|| config.versions_dir.clone());
        let history = History::open(versions_dir)?;
        let storage: storage::SharedStorage = match config.store.backend {
            config::StoreBackend::Sqlite => Arc::new(
                storage::sqlite::SqliteStorage::open(&config.store.path)
                    .with_context(|| format!("store {}", config.store.path.display()))?,
            ),
            config::StoreBackend::Postgres => Arc::new(
                storage::pipeline::Pipeline::new(storage::postgres::PgDisk::open(
                    &config.store.postgres()?,
                )?)
                .context("store")?,
            ),
            config::StoreBackend::Memory => Arc::new(storage::memory::MemoryStorage::new()),
        };
        let mut plugins = HashMap::new();
        let mut samples = HashMap::new();
        let mut degraded = BTreeMap::new();
        for (name, manifest) in &config.plugins {
            let routes: Vec<(&str, RouteKind)> = config
                .routes
                .iter()
                .filter(|r| r.plugin == *name)
                .map(|r| (r.path.as_str(), r.kind))
                .collect();
            let start = load_configured(&runtime, &history, name, manifest, &routes)?;
            let loaded = start.loaded;
            tracing::info!(
                plugin = %loaded.ident,
                wit = loaded.wit_version,
                book = loaded.book.is_some(),
                search = loaded.search.is_some(),
                authenticate = loaded.login.is_some(),
                "plugin loaded"
            );
            if let Some(note) = start.degraded {
                degraded.insert(name.clone(), note);
            }
            plugins.insert(name.clone(), Arc::new(loaded));
            samples.insert(name.clone(), read_samples(name, manifest)?);
        }
        // A store several hosts share decides which version serves.
        let mut adopted = Vec::new();
        let mut applied = HashMap::new();
        if let Some(versions) = storage.versions() {
            let file_hashes: HashMap<String, String> = config
                .plugins
                .iter()
                .filter_map(|(name, m)| {
                    let bytes = std::fs::read(&m.path).ok()?;
                    Some((name.clone(), plugin::loader::content_hash(&bytes)))
                })
                .collect();
            let load = |name: &str, bytes: Arc<[u8]>, hash: String| {
                let loaded = plugin::loader::load_hashed(
                    &runtime,
                    name,
                    &config.plugins[name],
                    bytes,
                    hash,
                )?;
                for r in config.routes.iter().filter(|r| r.plugin == name) {
                    check_serves(&loaded, &r.path, r.kind)?;
                }
                Ok(loaded)
            };
            (adopted, applied) =
                converge_at_start(versions, &history, &mut plugins, &file_hashes, load)
                    .context("the shared plugin versions")?;
        }
        let mut routes = Vec::new();
        for r in &config.routes {
            let plugin = &plugins[&r.plugin];
            check_serves(plugin, &r.path, r.kind)?;
            let name = r.name.clone().unwrap_or_else(|| r.path.clone());
            let logon = r.logon();
            let token = match logon {
                // An authentication route hands tokens out; it checks none.
                Some(_) => TokenPolicy::new(&config::TokenConfig::off()),
                None => TokenPolicy::new(r.token.as_ref().unwrap_or(&config.token)),
            }
            .with_context(|| format!("route {}", r.path))?;
            let mut route = Route::new(name, &r.path, r.kind, r.plugin.clone(), token)
                .with_context(|| format!("route {}", r.path))?;
            if let Some(logon) = logon {
                let logon = crate::http::login::Logon::new(logon)
                    .with_context(|| format!("route {}", r.path))?;
                route = route.with_logon(logon);
            }
            routes.push(route);
        }
        // Only now that the host will start: a version that never served is not recorded.
        // A fallback is not recorded either; it is no deliberate act, and the journal's
        // last line stays the one that decides what serves at the next start.
        for (name, loaded) in &plugins {
            if degraded.contains_key(name) || adopted.contains(name) {
                continue;
            }
            if let Err(e) = history.record_start(name, &loaded.hash, &loaded.bytes) {
                // The host still serves; what it costs is the fallback at a later start.
                tracing::error!(plugin = %loaded.ident, "cannot record the version in the versions directory: {e}");
            }
        }
        Ok(App {
            runtime,
            routes: RouteTable::new(routes),
            plugins: plugin::registry::Registry::new(plugins),
            manifests: config.plugins.clone(),
            samples,
            history,
            swapping: Mutex::default(),
            degraded: Mutex::new(degraded),
            storage: storage.clone(),
            shared_applied: tokio::sync::Mutex::new(applied),
            candidates: Default::default(),
            journal: Arc::new(journal::Journal::new(
                storage,
                config.plugins.keys(),
                std::time::Duration::from_secs(
                    config.store.journal_retention_hours.saturating_mul(3600),
                ),
                config.store.claim_ttl(),
            )),
            status_mode: config.status_mode,
            max_body_bytes: config.max_body_bytes,
            limits: config.limits,
            metrics: metrics::Metrics::default(),
        })
    }

    /// Serves plugin `name` with `rules` compiled into the host instead of its component
    /// (builds with the `native-baseline` feature only):
    /// the native baseline the benchmarks compare the sandbox with (see
    /// [`dispatch::native`]). The plugin keeps its routes, grants, config and limits; its
    /// version reads `native`. A later deploy of `name` serves the component again.
    #[cfg(feature = "native-baseline")]
    pub fn with_native(
        self,
        name: &str,
        rules: crate::dispatch::native::NativeRules,
    ) -> anyhow::Result<App> {
        let Some(current) = self.plugins.get(name) else {
            bail!("no plugin {name} is configured");
        };
        let c = &*current;
        let native = LoadedPlugin {
            prepared: crate::runtime::Prepared {
                ident: Arc::new(plugin::PluginIdent {
                    name: name.to_string(),
                    version: "native".into(),
                }),
                pre: c.pre.clone(),
                book: c.book.clone(),
                search: c.search.clone(),
                login: c.login.clone(),
                limits: c.limits,
                config: c.config.clone(),
                kv: c.kv,
                http: c.http.clone(),
                slots: tokio::sync::Semaphore::new(c.limits.max_concurrency as usize),
                reuse_instances: c.reuse_instances,
                warm: Default::default(),
                conduct: Default::default(),
                record: c.record.clone(),
            },
            wit_version: c.wit_version.clone(),
            hash: c.hash.clone(),
            bytes: c.bytes.clone(),
            native: Some(rules),
        };
        let _ = self.plugins.replace(name, Arc::new(native));
        Ok(self)
    }

    /// The plugin version currently serving `name`.
    pub fn plugin(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins.get(name)
    }

    /// The plugins serving a kept version because their configured file was refused at
    /// start, by name; a successful deploy or rollback of a plugin removes its note.
    pub fn degraded(&self) -> Vec<plugin::Degraded> {
        self.degraded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Every plugin name with the file its manifest names.
    pub fn plugin_files(&self) -> Vec<(String, PathBuf)> {
        self.manifests
            .iter()
            .map(|(name, m)| (name.clone(), m.path.clone()))
            .collect()
    }
}

impl App {
    /// Removes journal records past their retention, now and then every hour.
    pub fn prune_journal_periodically(&self) -> tokio::task::JoinHandle<()> {
        self.journal.prune_periodically()
    }
}
