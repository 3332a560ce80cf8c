//! Plugin versions that every host of a shared store serves (`docs/scale-out.md`).
//!
//! The store keeps, per plugin, the version serving and its component. A deploy or
//! rollback on any host passes that host's admission gate, then is published (component
//! and pointer in one transaction); every other host follows: woken by the store's
//! notification, or by its own poll every [`POLL`], it loads the published version through
//! its own gate and serves it. At start a host serves what the store says, unless its
//! configured file changed while it was down, which is a deploy like any other
//! (`app/start.rs`). Candidates (shadow, canary) are shared the same way
//! (`app/promote.rs`). Each host also writes a heartbeat with what it serves, which
//! `GET /plugins` reports.

use super::App;
use super::deploy::DeployError;
use crate::plugin::history::Trigger;
use crate::plugin::{LoadedPlugin, PluginIdent};
use crate::storage::{SharedVersion, SharedVersions, StorageError};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// How often a host looks for deploys it was not told about, and says it is alive.
pub const POLL: Duration = Duration::from_secs(1);

/// A host not heard from for this long is no longer counted as live.
pub const LIVE_WITHIN: Duration = Duration::from_secs(10);

impl App {
    /// Publishes `candidate`, which passed this host's gate, as the version every host
    /// serves; `None` when the store is this host's alone. Called with `applied` held.
    pub(super) async fn publish(
        &self,
        name: &str,
        candidate: &LoadedPlugin,
        trigger: Trigger,
        applied: &mut HashMap<String, u64>,
    ) -> Result<(), DeployError> {
        if self.storage.versions().is_none() {
            return Ok(());
        }
        let storage = self.storage.clone();
        let (plugin, hash, bytes) = (
            name.to_string(),
            candidate.hash.clone(),
            candidate.bytes.clone(),
        );
        let generation = tokio::task::spawn_blocking(move || {
            let versions = storage.versions().expect("checked above");
            versions.publish(&plugin, &hash, &bytes, trigger.label())
        })
        .await
        .map_err(|e| DeployError::CannotServe(format!("publishing panicked: {e}")))?
        .map_err(|e| {
            DeployError::CannotServe(format!(
                "cannot publish the version to the other hosts: {e}"
            ))
        })?;
        applied.insert(name.to_string(), generation);
        Ok(())
    }

    /// Follows the versions the other hosts publish, and writes this host's heartbeat, for
    /// as long as the app lives; `None` when the store is this host's alone.
    pub fn follow_shared_versions(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let published = self.storage.versions()?.published();
        let app = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            loop {
                let _ = tokio::time::timeout(POLL, published.notified()).await;
                let Some(app) = app.upgrade() else {
                    return;
                };
                if let Err(e) = app.follow_once().await {
                    tracing::warn!("cannot follow the shared plugin versions: {e}");
                }
            }
        }))
    }

    /// One look at the shared versions: serves each newly published one, then says what
    /// this host serves.
    async fn follow_once(&self) -> Result<(), StorageError> {
        let published = self.blocking_versions(|v| v.serving()).await?;
        for version in published {
            if !self.manifests.contains_key(&version.plugin) {
                continue;
            }
            let mut applied = self.shared_applied.lock().await;
            if applied.get(&version.plugin) >= Some(&version.generation) {
                continue;
            }
            let current = self.plugin(&version.plugin);
            if current.is_none_or(|c| c.hash != version.hash) {
                self.follow(&version).await;
            }
            applied.insert(version.plugin.clone(), version.generation);
        }
        let candidates = self.blocking_versions(|v| v.candidates()).await?;
        self.follow_candidates(candidates).await;
        let serving: BTreeMap<String, String> = self
            .plugins
            .versions()
            .iter()
            .filter_map(|ident| Some((ident.name.clone(), self.plugin(&ident.name)?.hash.clone())))
            .collect();
        self.blocking_versions(move |v| v.heartbeat(&serving)).await
    }

    /// Serves a version another host published, through this host's gate. A refusal
    /// leaves this host on its version, which `GET /plugins` shows.
    async fn follow(&self, version: &SharedVersion) {
        let (plugin, hash) = (version.plugin.clone(), version.hash.clone());
        let bytes = self
            .blocking_versions(move |v| v.component(&plugin, &hash))
            .await;
        let outcome = match bytes {
            Ok(Some(bytes)) => self
                .deploy(&version.plugin, Arc::from(bytes), Trigger::Shared)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Ok(None) => Err("the store holds no component for it".into()),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => tracing::info!(
                plugin = version.plugin,
                version = PluginIdent::version_of(&version.hash),
                by = version.by,
                "serving the version another host deployed"
            ),
            Err(e) => tracing::error!(
                plugin = version.plugin,
                version = PluginIdent::version_of(&version.hash),
                by = version.by,
                "cannot serve the version another host deployed: {e}"
            ),
        }
    }

    pub(super) async fn blocking_versions<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn SharedVersions) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || {
            let versions = storage
                .versions()
                .ok_or_else(|| StorageError("the store keeps no shared versions".into()))?;
            f(versions)
        })
        .await
        .map_err(|e| StorageError(format!("store task failed: {e}")))?
    }

    /// The live hosts and what each serves, when the store is shared.
    pub async fn live_hosts(&self) -> Option<Result<Vec<crate::storage::LiveHost>, StorageError>> {
        self.storage.versions()?;
        Some(self.blocking_versions(|v| v.live_hosts(LIVE_WITHIN)).await)
    }
}
