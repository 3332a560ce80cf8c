//! The followup host: serves ServiceMobility's Followup WorkOrder and Appointment Search
//! interfaces for many routes, each answered by a customer's sandboxed WebAssembly plugin.
//!
//! # Layout
//! - [`admin`]: the admin API (plugins, deploy, rollback, health, metrics);
//! - [`config`]: the TOML configuration and its defaults;
//! - [`http`]: the HTTP surface (routes, token check, request handling);
//! - [`error`]: the Standard Response Object and the one status mapping;
//! - [`metrics`]: failure counters per plugin version and error type;
//! - [`contract`]: the contract's records and their JSON mapping (shared with the SDK);
//! - [`plugin`]: loading and checking components;
//! - [`runtime`]: the engine, the sandbox and one plugin call;
//! - [`cli`]: the `followup` command line.

pub mod admin;
pub mod cli;
pub mod config;
pub mod contract;
pub mod error;
pub mod http;
pub mod metrics;
pub mod plugin;
pub mod runtime;

use crate::config::Config;
use crate::error::StatusMode;
use crate::http::auth::TokenPolicy;
use crate::http::routes::{Route, RouteKind, RouteTable};
use crate::plugin::{LoadedPlugin, PluginIdent};
use crate::runtime::PluginRuntime;
use anyhow::{Context, bail};
use axum::Router;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::net::TcpListener;

/// Everything a request needs, shared by all requests.
pub struct App {
    pub runtime: Arc<PluginRuntime>,
    pub routes: RouteTable,
    /// The version serving each plugin name (hot-swappable).
    pub plugins: plugin::registry::Registry,
    /// Limits, config and grants per plugin name; a new version runs under the same.
    manifests: std::collections::BTreeMap<String, plugin::manifest::PluginManifest>,
    /// The components each plugin name served before, newest last, for rollback.
    history: Mutex<HashMap<String, VecDeque<Arc<[u8]>>>>,
    pub status_mode: StatusMode,
    pub max_body_bytes: usize,
    pub limits: http::limits::InputLimits,
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

    /// Loads every plugin and route of `config` into an existing runtime. Refuses to start
    /// when a plugin does not load or cannot serve the kind of route that names it.
    pub fn with_runtime(config: &Config, runtime: Arc<PluginRuntime>) -> anyhow::Result<App> {
        if config.runtime != *runtime.config() {
            bail!("the config's [runtime] settings differ from those the runtime was built with");
        }
        let mut plugins = HashMap::new();
        for (name, manifest) in &config.plugins {
            let loaded = plugin::loader::load_file(&runtime, name, manifest)?;
            tracing::info!(
                plugin = %loaded.ident,
                wit = loaded.wit_version,
                book = loaded.book.is_some(),
                search = loaded.search.is_some(),
                "plugin loaded"
            );
            plugins.insert(name.clone(), Arc::new(loaded));
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
        Ok(App {
            runtime,
            routes: RouteTable::new(routes),
            plugins: plugin::registry::Registry::new(plugins),
            manifests: config.plugins.clone(),
            history: Mutex::default(),
            status_mode: config.status_mode,
            max_body_bytes: config.max_body_bytes,
            limits: config.limits,
            metrics: metrics::Metrics::default(),
        })
    }

    /// The plugin version currently serving `name`.
    pub fn plugin(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins.get(name)
    }

    /// Admits `bytes` as the new version of plugin `name`, then makes it the serving one.
    ///
    /// The admission gate, in order: the name is configured; the component passes the
    /// loader's checks (a component, a compatible WIT version, compiles, imports only what
    /// is granted, pre-instantiates); it exports every interface the plugin's routes need.
    /// A refused candidate changes nothing. Requests in flight finish on the version they
    /// started with.
    pub fn deploy(&self, name: &str, bytes: &[u8]) -> Result<Arc<PluginIdent>, DeployError> {
        let manifest = self
            .manifests
            .get(name)
            .ok_or_else(|| DeployError::UnknownPlugin(name.to_string()))?;
        let candidate = plugin::loader::load_bytes(&self.runtime, name, manifest, bytes)?;
        for route in self.routes.routes().iter().filter(|r| r.plugin == name) {
            check_serves(&candidate, &route.name, route.kind)
                .map_err(|e| DeployError::CannotServe(e.to_string()))?;
        }
        let ident = candidate.ident.clone();
        let previous = self
            .plugins
            .replace(name, Arc::new(candidate))
            .map_err(|_| DeployError::UnknownPlugin(name.to_string()))?;
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        let versions = history.entry(name.to_string()).or_default();
        versions.push_back(previous.bytes.clone());
        while versions.len() > KEPT_VERSIONS {
            versions.pop_front();
        }
        tracing::info!(plugin = %ident, replaced = %previous.ident, "deployed");
        Ok(ident)
    }

    /// Serves plugin `name` with an earlier version again (`version` as in its ident,
    /// `sha256:…`); it goes through the same admission gate.
    pub fn rollback(&self, name: &str, version: &str) -> Result<Arc<PluginIdent>, DeployError> {
        let bytes = {
            let history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
            history
                .get(name)
                .and_then(|versions| {
                    versions.iter().rev().find(|b| {
                        let hash = plugin::loader::content_hash(b);
                        version
                            .strip_prefix("sha256:")
                            .is_some_and(|v| hash.starts_with(v) && !v.is_empty())
                    })
                })
                .cloned()
                .ok_or_else(|| DeployError::UnknownVersion(name.to_string(), version.to_string()))?
        };
        self.deploy(name, &bytes)
    }
}

/// Earlier versions kept per plugin for rollback.
pub const KEPT_VERSIONS: usize = 5;

/// Why a candidate version was not deployed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("no plugin named {0} is configured")]
    UnknownPlugin(String),
    #[error(transparent)]
    Rejected(#[from] plugin::loader::LoadError),
    #[error("{0}")]
    CannotServe(String),
    #[error("plugin {0} has no earlier version {1}")]
    UnknownVersion(String, String),
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
