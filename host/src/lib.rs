//! The followup host: serves ServiceMobility's Followup WorkOrder and Appointment Search
//! interfaces for many routes, each answered by a customer's sandboxed WebAssembly plugin.
//!
//! # Layout
//! - [`admin`]: the admin API (plugins, deploy, rollback, health, metrics);
//! - [`authoring`]: `followup plugin check|run` for plugin authors;
//! - [`scaffold`]: `followup plugin new`, plugin projects from templates;
//! - [`config`]: the TOML configuration and its defaults;
//! - [`http`]: the HTTP surface (routes, token check, request handling);
//! - [`journal`]: bookings that happen once (the idempotency journal);
//! - [`files`]: files written whole or not at all;
//! - [`logging`]: the host's log, which plugins cannot forge;
//! - [`error`]: the Standard Response Object and the one status mapping;
//! - [`metrics`]: failure counters per plugin version and error type;
//! - [`contract`]: the contract's records and their JSON mapping (shared with the SDK);
//! - [`dispatch`]: one operation on a plugin: decode, call, check, encode;
//! - [`plugin`]: loading and checking components;
//! - [`runtime`]: the engine, the sandbox and one plugin call;
//! - [`store`]: plugins' key-value data and the idempotency journal (SQLite);
//! - [`text`]: bounding and escaping text from plugins and clients;
//! - [`watch`]: watching plugin files for new versions;
//! - [`cli`]: the `followup` command line.

pub mod admin;
pub mod authoring;
pub mod cli;
pub mod config;
pub mod contract;
pub mod dispatch;
pub mod error;
pub mod files;
pub mod http;
pub mod journal;
pub mod logging;
pub mod metrics;
pub mod plugin;
pub mod runtime;
pub mod scaffold;
pub mod store;
pub mod text;
pub mod watch;

use crate::config::Config;
use crate::error::StatusMode;
use crate::http::auth::TokenPolicy;
use crate::http::routes::{Route, RouteKind, RouteTable};
use crate::plugin::history::{History, Trigger};
use crate::plugin::{LoadedPlugin, PluginIdent};
use crate::runtime::PluginRuntime;
use anyhow::{Context, bail};
use axum::Router;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::net::TcpListener;

/// Everything a request needs, shared by all requests.
pub struct App {
    pub runtime: Arc<PluginRuntime>,
    pub routes: RouteTable,
    /// The version serving each plugin name (hot-swappable).
    pub plugins: plugin::registry::Registry,
    /// Limits, config and grants per plugin name; a new version runs under the same.
    manifests: BTreeMap<String, plugin::manifest::PluginManifest>,
    /// Requests each new version of a plugin must answer before it serves.
    samples: HashMap<String, Vec<Sample>>,
    /// The versions each plugin served, for rollback and restarts.
    pub history: History,
    /// Serialises swaps, so that the registry and the history agree.
    swapping: Mutex<()>,
    /// Plugins serving a kept version because their configured file was refused at start.
    degraded: Mutex<BTreeMap<String, plugin::Degraded>>,
    /// Plugins' key-value data and the idempotency journal.
    pub store: store::SharedStore,
    /// The idempotency journal: bookings that happen once.
    pub journal: Arc<journal::Journal>,
    pub status_mode: StatusMode,
    pub max_body_bytes: usize,
    pub limits: http::limits::InputLimits,
    pub metrics: metrics::Metrics,
}

/// An admission sample: a request read from a file named in the plugin's manifest.
#[derive(Debug, Clone)]
struct Sample {
    file: String,
    json: serde_json::Value,
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
        let store: store::SharedStore = match config.store.backend {
            config::StoreBackend::Sqlite => Arc::new(
                store::sqlite::SqliteStore::open(&config.store.path)
                    .with_context(|| format!("store {}", config.store.path.display()))?,
            ),
            config::StoreBackend::Memory => Arc::new(store::memory::MemoryStore::new()),
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
                "plugin loaded"
            );
            if let Some(note) = start.degraded {
                degraded.insert(name.clone(), note);
            }
            plugins.insert(name.clone(), Arc::new(loaded));
            samples.insert(name.clone(), read_samples(name, manifest)?);
        }
        let mut routes = Vec::new();
        for r in &config.routes {
            let plugin = &plugins[&r.plugin];
            check_serves(plugin, &r.path, r.kind)?;
            let name = r.name.clone().unwrap_or_else(|| r.path.clone());
            let token = TokenPolicy::new(r.token.as_ref().unwrap_or(&config.token))
                .with_context(|| format!("route {}", r.path))?;
            routes.push(
                Route::new(name, &r.path, r.kind, r.plugin.clone(), token)
                    .with_context(|| format!("route {}", r.path))?,
            );
        }
        // Only now that the host will start: a version that never served is not recorded.
        // A fallback is not recorded either; it is no deliberate act, and the journal's
        // last line stays the one that decides what serves at the next start.
        for (name, loaded) in &plugins {
            if degraded.contains_key(name) {
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
            store: store.clone(),
            journal: Arc::new(journal::Journal::new(
                store,
                config.plugins.keys(),
                std::time::Duration::from_secs(
                    config.store.journal_retention_hours.saturating_mul(3600),
                ),
            )),
            status_mode: config.status_mode,
            max_body_bytes: config.max_body_bytes,
            limits: config.limits,
            metrics: metrics::Metrics::default(),
        })
    }

    /// Serves plugin `name` with `rules` compiled into the host instead of its component:
    /// the native baseline the benchmarks compare the sandbox with (see
    /// [`dispatch::native`]). The plugin keeps its routes, grants, config and limits; its
    /// version reads `native`. A later deploy of `name` serves the component again.
    pub fn with_native(
        self,
        name: &str,
        rules: dispatch::native::NativeRules,
    ) -> anyhow::Result<App> {
        let Some(current) = self.plugins.get(name) else {
            bail!("no plugin {name} is configured");
        };
        let c = &*current;
        let native = LoadedPlugin {
            prepared: runtime::Prepared {
                ident: Arc::new(PluginIdent {
                    name: name.to_string(),
                    version: "native".into(),
                }),
                pre: c.pre.clone(),
                book: c.book.clone(),
                search: c.search.clone(),
                limits: c.limits,
                config: c.config.clone(),
                kv: c.kv,
                http: c.http.clone(),
                slots: tokio::sync::Semaphore::new(c.limits.max_concurrency as usize),
                reuse_instances: c.reuse_instances,
                warm: Default::default(),
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

    /// Admits `bytes` as the new version of plugin `name`, then makes it the serving one.
    ///
    /// The admission gate, in order: the name is configured; the component passes the
    /// loader's checks (a component, a compatible WIT version, compiles, imports only what
    /// is granted, pre-instantiates); it exports every interface the plugin's routes need;
    /// it answers each of the plugin's sample requests without error. A refused candidate
    /// changes nothing; the refusal is logged and counted. Requests in flight finish on the
    /// version they started with. The version already serving is not swapped again.
    pub async fn deploy(
        &self,
        name: &str,
        bytes: Arc<[u8]>,
        trigger: Trigger,
    ) -> Result<Arc<PluginIdent>, DeployError> {
        let outcome = self.admit(name, bytes, trigger).await;
        match &outcome {
            Ok(ident) => {
                tracing::info!(plugin = %ident, trigger = trigger.label(), "serving");
                let mut degraded = self.degraded.lock().unwrap_or_else(PoisonError::into_inner);
                if degraded.remove(name).is_some() {
                    tracing::info!(plugin = %ident, "no longer serving a fallback for a refused file");
                }
            }
            Err(e @ DeployError::UnknownPlugin(_)) => {
                tracing::warn!(trigger = trigger.label(), "refused: {e}");
            }
            Err(e) => {
                self.metrics.count_rejected(name, trigger);
                tracing::warn!(
                    plugin = name,
                    trigger = trigger.label(),
                    "candidate refused: {e}"
                );
            }
        }
        outcome
    }

    async fn admit(
        &self,
        name: &str,
        bytes: Arc<[u8]>,
        trigger: Trigger,
    ) -> Result<Arc<PluginIdent>, DeployError> {
        let manifest = self
            .manifests
            .get(name)
            .ok_or_else(|| DeployError::UnknownPlugin(name.to_string()))?
            .clone();
        let current = self
            .plugin(name)
            .ok_or_else(|| DeployError::UnknownPlugin(name.to_string()))?;
        let hash = plugin::loader::content_hash(&bytes);
        if hash == current.hash {
            return Ok(current.ident.clone());
        }
        // Compiling takes ~100 ms per 250 KB on 2 cores: off the async workers.
        let runtime = self.runtime.clone();
        let owned = name.to_string();
        let candidate = tokio::task::spawn_blocking(move || {
            plugin::loader::load_hashed(&runtime, &owned, &manifest, bytes, hash)
        })
        .await
        .map_err(|e| DeployError::CannotServe(format!("loading panicked: {e}")))??;
        for route in self.routes.routes().iter().filter(|r| r.plugin == name) {
            check_serves(&candidate, &route.name, route.kind)
                .map_err(|e| DeployError::CannotServe(e.to_string()))?;
        }
        self.run_samples(name, &candidate).await?;

        let candidate = Arc::new(candidate);
        let ident = candidate.ident.clone();
        let _one_swap = self.swapping.lock().unwrap_or_else(PoisonError::into_inner);
        let previous = self
            .plugins
            .replace(name, candidate.clone())
            .map_err(|_| DeployError::UnknownPlugin(name.to_string()))?;
        if let Err(e) = self.history.record(
            name,
            (&previous.hash, &previous.bytes),
            (&candidate.hash, &candidate.bytes),
            trigger,
        ) {
            // The swap stands: the error costs rollback across a restart, not service.
            tracing::error!(plugin = %ident, "cannot record the version in the versions directory: {e}");
        }
        self.metrics.count_swap(name, trigger);
        tracing::info!(plugin = %ident, replaced = %previous.ident, "swapped");
        Ok(ident)
    }

    /// Runs every sample request of plugin `name` through `candidate`, once per kind of
    /// route the plugin serves, exactly as a request on that route would run.
    async fn run_samples(&self, name: &str, candidate: &LoadedPlugin) -> Result<(), DeployError> {
        let samples = self
            .samples
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut kinds: Vec<&Route> = Vec::new();
        for route in self.routes.routes().iter().filter(|r| r.plugin == name) {
            if !kinds.iter().any(|r| r.kind == route.kind) {
                kinds.push(route);
            }
        }
        for (i, sample) in samples.iter().enumerate() {
            for route in &kinds {
                let work_order_id =
                    (route.kind == RouteKind::BookJob).then(|| "SAMPLE".to_string());
                let ctx = contract::types::RequestContext {
                    idempotency_key: http::idempotency_key(
                        &route.name,
                        work_order_id.as_deref(),
                        &sample.json,
                    ),
                    work_order_id,
                    route: route.name.clone(),
                    request_id: format!("admission-sample-{i}"),
                    claims: None,
                };
                // Samples run with the store, but their writes are never committed.
                let services = runtime::Services {
                    kv: candidate
                        .kv
                        .then(|| store::kv::KvSession::new(self.store.clone(), name, true)),
                };
                dispatch::answer(
                    &self.runtime,
                    candidate,
                    route.kind,
                    &ctx,
                    &sample.json,
                    services,
                )
                .await
                .map_err(|e| DeployError::SampleFailed {
                    plugin: candidate.ident.to_string(),
                    sample: sample.file.clone(),
                    route: route.name.clone(),
                    kind: e.kind.code(),
                    detail: e.summary(),
                })?;
            }
        }
        Ok(())
    }

    /// Serves plugin `name` with an earlier version again (`version` as listed, `sha256:`
    /// and at least 12 hex digits); it goes through the same admission gate.
    pub async fn rollback(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Arc<PluginIdent>, DeployError> {
        if !self.manifests.contains_key(name) {
            return Err(DeployError::UnknownPlugin(name.to_string()));
        }
        let (_, bytes) = self
            .history
            .find(name, version)
            .ok_or_else(|| DeployError::UnknownVersion(name.to_string(), version.to_string()))?;
        self.deploy(name, bytes, Trigger::Rollback).await
    }
}

/// The version a plugin serves at start.
struct Start {
    loaded: LoadedPlugin,
    /// Set when the configured file was refused and a kept version serves instead.
    degraded: Option<plugin::Degraded>,
}

/// Loads the version plugin `name` serves at start: its configured file, or the version
/// that replaced that file before a restart; when the file is refused, the newest kept
/// version that passes the same checks. Each must load and export what the plugin's
/// `routes` (path and kind) need.
fn load_configured(
    runtime: &PluginRuntime,
    history: &History,
    name: &str,
    manifest: &plugin::manifest::PluginManifest,
    routes: &[(&str, RouteKind)],
) -> anyhow::Result<Start> {
    let candidate = |bytes: Arc<[u8]>, hash: String| -> anyhow::Result<LoadedPlugin> {
        let loaded = plugin::loader::load_hashed(runtime, name, manifest, bytes, hash)?;
        for (route, kind) in routes {
            check_serves(&loaded, route, *kind)?;
        }
        Ok(loaded)
    };
    // Versions found not to serve, so that the fallback does not load them again.
    let mut tried: Vec<String> = Vec::new();
    let refusal = match std::fs::read(&manifest.path) {
        Err(source) => anyhow::Error::from(plugin::loader::LoadError::Read {
            name: name.to_string(),
            path: manifest.path.display().to_string(),
            source,
        }),
        Ok(bytes) => {
            let hash = plugin::loader::content_hash(&bytes);
            if let Some((kept_hash, kept)) = history.resume(name, &hash) {
                let version = kept_hash[..12].to_string();
                match candidate(kept, kept_hash.clone()) {
                    Ok(loaded) => {
                        tracing::info!(plugin = %loaded.ident, "serving the version deployed before the restart");
                        return Ok(Start {
                            loaded,
                            degraded: None,
                        });
                    }
                    Err(e) => {
                        tracing::warn!(
                            plugin = name,
                            version,
                            "the version deployed before the restart does not load ({e}); serving {}",
                            manifest.path.display()
                        );
                        tried.push(kept_hash);
                    }
                }
            }
            tried.push(hash.clone());
            match candidate(Arc::from(bytes), hash) {
                Ok(loaded) => {
                    return Ok(Start {
                        loaded,
                        degraded: None,
                    });
                }
                Err(e) => e,
            }
        }
    };
    let reason = text::one_line(&refusal.to_string(), plugin::loader::MAX_REASON_BYTES);
    // A refused file is a refused candidate, whether it was published while the host ran
    // (and refused by the watcher) or while it was down: the newest kept version that
    // serves takes its place, as it would have kept serving without the restart.
    let kept = history.kept(name);
    for served in &kept {
        if tried.contains(&served.hash) {
            continue;
        }
        tried.push(served.hash.clone());
        // `None`: damaged, and already logged as such.
        let Some(bytes) = history.component(name, &served.hash) else {
            continue;
        };
        match candidate(bytes, served.hash.clone()) {
            Ok(loaded) => {
                tracing::error!(
                    plugin = name,
                    refused = %manifest.path.display(),
                    reason,
                    serving = loaded.ident.version,
                    "configured plugin file refused at start; serving the newest kept version that loads instead"
                );
                let degraded = plugin::Degraded {
                    plugin: name.to_string(),
                    version: loaded.ident.version.clone(),
                    file: manifest.path.clone(),
                    reason,
                };
                return Ok(Start {
                    loaded,
                    degraded: Some(degraded),
                });
            }
            Err(e) => tracing::warn!(
                plugin = name,
                version = &served.hash[..12],
                "kept version cannot serve either: {e}"
            ),
        }
    }
    bail!(
        "plugin {name}: the configured file {} is refused ({reason}), and no kept version \
         can serve instead ({})",
        manifest.path.display(),
        match kept.len() {
            0 => "none is kept".to_string(),
            1 => "the one kept does not".to_string(),
            n => format!("none of the {n} kept does"),
        }
    )
}

/// Reads and checks the sample requests of plugin `name`: each must be a Book Job.
fn read_samples(
    name: &str,
    manifest: &plugin::manifest::PluginManifest,
) -> anyhow::Result<Vec<Sample>> {
    manifest
        .samples
        .iter()
        .map(|path| {
            let file = path.display().to_string();
            let text = std::fs::read(path)
                .with_context(|| format!("plugin {name}: cannot read sample {file}"))?;
            let json = http::parse_body(&text, &http::limits::InputLimits::default())
                .map_err(|e| anyhow::anyhow!("plugin {name}: sample {file}: {}", e.summary()))?;
            contract::decode::<contract::types::BookJob>(&json).map_err(|problems| {
                anyhow::anyhow!(
                    "plugin {name}: sample {file} is not a valid Book Job: {}",
                    error::ApiError::invalid(problems).summary()
                )
            })?;
            Ok(Sample { file, json })
        })
        .collect()
}

/// Why a candidate version was not deployed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("no plugin named {0} is configured")]
    UnknownPlugin(String),
    #[error(transparent)]
    Rejected(#[from] plugin::loader::LoadError),
    #[error("{0}")]
    CannotServe(String),
    #[error("plugin {plugin}: sample {sample} on route {route} failed with {kind}: {detail}")]
    SampleFailed {
        plugin: String,
        sample: String,
        route: String,
        kind: &'static str,
        detail: String,
    },
    #[error("plugin {0} has no kept version {1}")]
    UnknownVersion(String, String),
}

impl App {
    /// Removes journal records past their retention, now and then every hour.
    pub fn prune_journal_periodically(&self) -> tokio::task::JoinHandle<()> {
        self.journal.prune_periodically()
    }
}

/// Whether `plugin` exports what a route of `kind` needs.
fn check_serves(plugin: &LoadedPlugin, route: &str, kind: RouteKind) -> anyhow::Result<()> {
    let serves = match kind {
        RouteKind::BookJob => plugin.book.is_some(),
        RouteKind::AppointmentSearch => plugin.search.is_some(),
    };
    if !serves {
        bail!(
            "route {route}: plugin {} does not export {}",
            plugin.ident,
            match kind {
                RouteKind::BookJob => "servicemobility:booking/followup (book)",
                RouteKind::AppointmentSearch => "servicemobility:booking/appointments (search)",
            }
        );
    }
    Ok(())
}

/// The router: every path goes to the one handler, which matches configured routes itself
/// so that unknown paths and wrong methods get the contract's error body too.
pub fn app(state: Arc<App>) -> Router {
    Router::new().fallback(http::handle).with_state(state)
}

/// Serves `state` on `listener` until `shutdown` completes, then lets in-flight requests
/// finish (for at most [`SHUTDOWN_GRACE`]).
///
/// Each connection is served by hyper with the request limits: a client has
/// `header_timeout_ms` to send its headers (so a slow client cannot hold a connection), and
/// hyper's own caps on header count and size sit above the handler's checks, so that a
/// request just over a limit still gets the contract's error body.
pub async fn run(
    listener: TcpListener,
    state: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use hyper::server::conn::http1;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let limits = state.limits;
    let router = app(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout())
        .max_headers(limits.max_headers.saturating_mul(2).saturating_add(16))
        // hyper refuses buffers under 8 KiB.
        .max_buf_size((limits.max_header_bytes.saturating_mul(2) + 1024).max(8192));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(e) => {
                        // Out of file descriptors, typically: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(router.clone());
                let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!("connection ended: {e}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: connections still open after {SHUTDOWN_GRACE:?}, closing them");
    }
    Ok(())
}

/// Longest wait for in-flight requests at shutdown.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);
