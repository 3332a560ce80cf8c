//! The admission gate: a candidate version serves only after it loads, exports what its
//! routes need and answers the plugin's samples; then it is swapped in and recorded.

use super::App;
use super::start::check_serves;
use crate::contract;
use crate::dispatch;
use crate::http::routes::{Route, RouteKind};
use crate::plugin;
use crate::plugin::history::Trigger;
use crate::plugin::{LoadedPlugin, PluginIdent};
use crate::replay;
use crate::runtime;
use crate::storage;
use std::sync::{Arc, PoisonError};

impl App {
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
        let current = self
            .plugin(name)
            .ok_or_else(|| DeployError::UnknownPlugin(name.to_string()))?;
        if plugin::loader::content_hash(&bytes) == current.hash {
            return Ok(current.ident.clone());
        }
        let candidate = self.admit_candidate(name, bytes, trigger).await?;
        self.swap(name, candidate, trigger).await
    }

    /// Loads `bytes` as a version of plugin `name` and runs the gate's checks on it: the
    /// loader's, the routes', the samples and (for an operator's deploy) the replay.
    pub(super) async fn admit_candidate(
        &self,
        name: &str,
        bytes: Arc<[u8]>,
        trigger: Trigger,
    ) -> Result<LoadedPlugin, DeployError> {
        let manifest = self
            .manifests
            .get(name)
            .ok_or_else(|| DeployError::UnknownPlugin(name.to_string()))?
            .clone();
        let hash = plugin::loader::content_hash(&bytes);
        let candidate = self.load_candidate(name, bytes, hash).await?;
        for route in self.routes.routes().iter().filter(|r| r.plugin == name) {
            check_serves(&candidate, &route.name, route.kind)
                .map_err(|e| DeployError::CannotServe(e.to_string()))?;
        }
        self.run_samples(name, &candidate).await?;
        // A new version from an operator replays recorded bookings; a rollback returns to
        // a version that served, and a version followed from another host replayed there.
        if manifest.replay_last > 0 && matches!(trigger, Trigger::Api | Trigger::File) {
            let query = storage::TapeQuery {
                last: Some(manifest.replay_last),
                since: None,
            };
            let options = replay::Options {
                ignore: Vec::new(),
                max_diff: manifest.max_replay_diff,
            };
            let report = self.replay_candidate(&candidate, query, &options).await?;
            if !report.passed {
                return Err(DeployError::ReplayDiffers(Box::new(report)));
            }
        }
        Ok(candidate)
    }

    /// Makes `candidate`, which passed the gate, the serving version of `name`: published
    /// to the other hosts first when the store is shared, then swapped in and recorded.
    async fn swap(
        &self,
        name: &str,
        candidate: LoadedPlugin,
        trigger: Trigger,
    ) -> Result<Arc<PluginIdent>, DeployError> {
        let candidate = Arc::new(candidate);
        let ident = candidate.ident.clone();
        // With a shared store, published to every host before it serves here (a version
        // followed from another host was published there, and its follower holds the lock).
        let mut applied = match trigger {
            Trigger::Shared => None,
            _ => Some(self.shared_applied.lock().await),
        };
        if let Some(applied) = applied.as_deref_mut() {
            self.publish(name, &candidate, trigger, applied).await?;
        }
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

    /// Loads `bytes` (known by `hash`) as a candidate version of `name`, under the plugin's
    /// manifest, through the loader's checks.
    async fn load_candidate(
        &self,
        name: &str,
        bytes: Arc<[u8]>,
        hash: String,
    ) -> Result<LoadedPlugin, DeployError> {
        let manifest = self
            .manifests
            .get(name)
            .ok_or_else(|| DeployError::UnknownPlugin(name.to_string()))?
            .clone();
        // Compiling takes ~100 ms per 250 KB on 2 cores: off the async workers.
        let runtime = self.runtime.clone();
        let owned = name.to_string();
        Ok(tokio::task::spawn_blocking(move || {
            plugin::loader::load_hashed(&runtime, &owned, &manifest, bytes, hash)
        })
        .await
        .map_err(|e| DeployError::CannotServe(format!("loading panicked: {e}")))??)
    }

    /// Replays plugin `name`'s recorded bookings that `query` selects through `bytes`
    /// without serving it (see [`crate::replay`]): nothing is committed, nothing leaves the
    /// host.
    pub async fn replay(
        &self,
        name: &str,
        bytes: Arc<[u8]>,
        query: storage::TapeQuery,
        options: &replay::Options,
    ) -> Result<replay::Report, DeployError> {
        let hash = plugin::loader::content_hash(&bytes);
        let candidate = self.load_candidate(name, bytes, hash).await?;
        self.replay_candidate(&candidate, query, options).await
    }

    async fn replay_candidate(
        &self,
        candidate: &LoadedPlugin,
        query: storage::TapeQuery,
        options: &replay::Options,
    ) -> Result<replay::Report, DeployError> {
        let storage = self.storage.clone();
        let name = candidate.ident.name.clone();
        let tapes = tokio::task::spawn_blocking(move || storage.tapes(&name, query))
            .await
            .map_err(|e| DeployError::CannotServe(format!("reading tapes panicked: {e}")))?
            .map_err(|e| DeployError::CannotServe(format!("cannot read the tapes: {e}")))?;
        Ok(replay::replay(&self.runtime, candidate, &self.storage, tapes, options).await)
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
                    idempotency_key: crate::journal::idempotency_key(
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
                        .then(|| storage::kv::KvSession::new(self.storage.clone(), name, true)),
                    ..Default::default()
                };
                // Served like a request: runaways make way for it, and it for none.
                let _serving = self.runtime.arrive();
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
    #[error("{}", replay_refusal(.0))]
    ReplayDiffers(Box<replay::Report>),
    #[error("plugin {0} has no candidate in shadow or canary")]
    NoCandidate(String),
}

/// Why a candidate's replay refused it: the totals and the first bookings that changed.
fn replay_refusal(report: &replay::Report) -> String {
    let s = &report.summary;
    let mut text = format!(
        "plugin {}@{}: replaying {} recorded bookings, {} differ and {} failed (max_replay_diff {})",
        report.plugin, report.candidate, s.total, s.differs, s.failed, report.max_diff
    );
    for b in report
        .bookings
        .iter()
        .filter(|b| b.outcome != replay::Outcome::Same)
        .take(3)
    {
        text.push_str(&format!(
            "; {} {}: {}",
            b.route,
            b.work_order_id.as_deref().unwrap_or("-"),
            if b.paths.is_empty() {
                b.error_type.clone().unwrap_or_default()
            } else {
                b.paths.join(", ")
            }
        ));
    }
    text
}
