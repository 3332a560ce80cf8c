//! The followup host: serves ServiceMobility's Followup WorkOrder and Appointment Search
//! interfaces for many routes, each answered by a customer's sandboxed WebAssembly plugin.
//!
//! # Layout
//! - [`config`]: the TOML configuration and its defaults;
//! - [`http`]: the HTTP surface (routes, token check, request handling);
//! - [`error`]: the Standard Response Object and the one status mapping;
//! - [`metrics`]: failure counters per plugin version and error type;
//! - [`contract`]: the contract's records and their JSON mapping (shared with the SDK);
//! - [`plugin`]: loading and checking components;
//! - [`runtime`]: the engine, the sandbox and one plugin call;
//! - [`cli`]: the `followup` command line.

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
use crate::plugin::LoadedPlugin;
use crate::runtime::PluginRuntime;
use anyhow::{Context, bail};
use axum::Router;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Everything a request needs, shared by all requests.
pub struct App {
    pub runtime: Arc<PluginRuntime>,
    pub routes: RouteTable,
    plugins: HashMap<String, Arc<LoadedPlugin>>,
    pub status_mode: StatusMode,
    pub max_body_bytes: usize,
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
        let runtime = PluginRuntime::new(&config.runtime)?;
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
            let serves = match r.kind {
                RouteKind::BookJob => plugin.book.is_some(),
                RouteKind::AppointmentSearch => plugin.search.is_some(),
            };
            if !serves {
                bail!(
                    "route {}: plugin {} does not export {}",
                    r.path,
                    plugin.ident,
                    match r.kind {
                        RouteKind::BookJob => "servicemobility:booking/followup (book)",
                        RouteKind::AppointmentSearch =>
                            "servicemobility:booking/appointments (search)",
                    }
                );
            }
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
            plugins,
            status_mode: config.status_mode,
            max_body_bytes: config.max_body_bytes,
            metrics: metrics::Metrics::default(),
        })
    }

    /// The plugin currently serving `name`.
    pub fn plugin(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins.get(name).cloned()
    }
}

/// The router: every path goes to the one handler, which matches configured routes itself
/// so that unknown paths and wrong methods get the contract's error body too.
pub fn app(state: Arc<App>) -> Router {
    Router::new().fallback(http::handle).with_state(state)
}

/// Serves `state` on `listener` until `shutdown` completes, then lets in-flight requests
/// finish.
pub async fn run(
    listener: TcpListener,
    state: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("HTTP server failed")
}
