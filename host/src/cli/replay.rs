//! `followup plugin replay`: a candidate run over a plugin's recorded bookings, read from
//! the store a host configuration names — while that host keeps serving, if it runs.

use crate::config::{Config, StoreBackend};
use crate::replay::{self, Options, Report};
use crate::runtime::PluginRuntime;
use crate::storage::{self, SharedStorage, TapeQuery};
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::sync::Arc;

/// What `followup plugin replay` was asked.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    pub file: PathBuf,
    pub plugin: String,
    pub config: PathBuf,
    pub query: TapeQuery,
    pub options: Options,
}

/// Opens the store `config` names for reading: a SQLite file without taking its lock
/// (the host that owns it may be serving), or the shared PostgreSQL database.
fn open_store(config: &Config) -> anyhow::Result<SharedStorage> {
    Ok(match config.store.backend {
        StoreBackend::Sqlite => Arc::new(
            storage::sqlite::ReadOnly::open(&config.store.path)
                .with_context(|| format!("store {}", config.store.path.display()))?,
        ),
        StoreBackend::Postgres => Arc::new(
            storage::pipeline::Pipeline::new(storage::postgres::PgDisk::open(
                &config.store.postgres()?,
            )?)
            .context("store")?,
        ),
        StoreBackend::Memory => bail!(
            "the configuration's store is in memory: its tapes live only in the running host; \
             replay through its admin API (POST /plugins/NAME/replay)"
        ),
    })
}

/// Runs the replay; the report.
pub async fn replay(request: ReplayRequest) -> anyhow::Result<Report> {
    let config = Config::load(&request.config)?;
    let name = request.plugin.clone();
    let Some(manifest) = config.plugins.get(&name).cloned() else {
        bail!("{} configures no plugin {name}", request.config.display());
    };
    let bytes = std::fs::read(&request.file)
        .with_context(|| format!("cannot read {}", request.file.display()))?;
    // Fuel is metered (never limited beyond max_fuel) to report it.
    let mut rt = config.runtime;
    rt.fuel = true;
    let runtime = PluginRuntime::with_cache(&rt, config.cache_dir.clone())?;
    let (store, candidate) = {
        let runtime = runtime.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let store = open_store(&config)?;
            let candidate =
                crate::plugin::loader::load_bytes(&runtime, &name, &manifest, Arc::from(bytes))?;
            Ok((store, candidate))
        })
        .await
        .context("loading panicked")??
    };
    let tapes = {
        let (store, name, query) = (store.clone(), request.plugin.clone(), request.query);
        tokio::task::spawn_blocking(move || store.tapes(&name, query))
            .await
            .context("reading tapes panicked")??
    };
    if tapes.is_empty() {
        bail!(
            "the store holds no recorded bookings of {} (is record = true under its [plugins.{}]?)",
            request.plugin,
            request.plugin
        );
    }
    Ok(replay::replay(&runtime, &candidate, &store, tapes, &request.options).await)
}
