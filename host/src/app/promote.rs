//! Candidates beside the serving versions (see [`crate::promote`]): deployed in shadow or
//! as a canary through the admission gate, promoted (through the gate again) or aborted,
//! and used by the booking path: a canary's work orders go to it, and every live booking
//! of a plugin with a shadow leaves its tape for the shadow to replay.

use super::App;
use super::deploy::DeployError;
use crate::contract::PluginIdent;
use crate::contract::types::RequestContext;
use crate::error::{ApiError, ErrorKind};
use crate::http::routes::Route;
use crate::journal::Booked;
use crate::plugin::LoadedPlugin;
use crate::plugin::history::Trigger;
use crate::promote::{Candidate, Latest, Mode};
use crate::replay::{self, Outcome};
use crate::storage::SharedCandidate;
use crate::tape::Tape;
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

/// Whether an answer counts as a failed booking in a canary's judgement: the plugin
/// failed, or a back end or the store did.
fn failed(kind: ErrorKind) -> bool {
    replay::failure(kind) || matches!(kind, ErrorKind::UpstreamFailure | ErrorKind::BookingFailed)
}

impl App {
    /// Deploys `bytes` as plugin `name`'s candidate in `mode`, through the admission gate
    /// (loader, routes, samples, replay); it does not serve, and replaces any candidate
    /// before it.
    pub async fn stage(
        &self,
        name: &str,
        bytes: Arc<[u8]>,
        mode: Mode,
    ) -> Result<Arc<PluginIdent>, DeployError> {
        if let Mode::Canary { percent } = mode
            && !(1..=100).contains(&percent)
        {
            return Err(DeployError::CannotServe(format!(
                "a canary's percent must be 1 to 100, not {percent}"
            )));
        }
        let outcome = self.admit_candidate(name, bytes, Trigger::Api).await;
        let candidate = match outcome {
            Ok(candidate) => candidate,
            Err(e) => {
                if !matches!(e, DeployError::UnknownPlugin(_)) {
                    self.metrics.count_rejected(name, Trigger::Api);
                }
                tracing::warn!(plugin = name, mode = mode.label(), "candidate refused: {e}");
                return Err(e);
            }
        };
        let ident = candidate.ident.clone();
        if self.plugin(name).is_some_and(|p| p.hash == candidate.hash) {
            return Err(DeployError::CannotServe(format!(
                "plugin {ident} is the version serving; a candidate must differ"
            )));
        }
        // With a shared store, every host runs it: published before it runs here.
        if self.storage.versions().is_some() {
            let (plugin, hash, bytes) = (
                name.to_string(),
                candidate.hash.clone(),
                candidate.bytes.clone(),
            );
            let percent = match mode {
                Mode::Canary { percent } => percent,
                Mode::Shadow => 0,
            };
            self.blocking_versions(move |v| v.stage(&plugin, &hash, &bytes, mode.label(), percent))
                .await
                .map_err(|e| {
                    DeployError::CannotServe(format!(
                        "cannot publish the candidate to the other hosts: {e}"
                    ))
                })?;
        }
        self.run_candidate(name, candidate, mode);
        tracing::info!(plugin = %ident, mode = mode.label(), ?mode, "candidate deployed");
        Ok(ident)
    }

    /// Runs `candidate` beside plugin `name`'s serving version, in place of any before it.
    pub(super) fn run_candidate(&self, name: &str, candidate: LoadedPlugin, mode: Mode) {
        let canary = self
            .manifests
            .get(name)
            .map(|m| m.canary)
            .unwrap_or_default();
        self.candidates.stage(
            name,
            Arc::new(Candidate::new(Arc::new(candidate), mode, canary)),
        );
    }

    /// Ends candidate `hash` of plugin `name` on the other hosts too, when the store is
    /// shared.
    async fn end_shared_candidate(&self, name: &str, hash: &str) -> Result<(), DeployError> {
        if self.storage.versions().is_none() {
            return Ok(());
        }
        let (plugin, hash) = (name.to_string(), hash.to_string());
        self.blocking_versions(move |v| v.unstage(&plugin, &hash))
            .await
            .map(drop)
            .map_err(|e| {
                DeployError::CannotServe(format!(
                    "cannot end the candidate on the other hosts: {e}"
                ))
            })
    }

    /// Makes plugin `name`'s candidate the serving version, through the gate as any
    /// deploy; the candidate stays when the gate refuses it.
    pub async fn promote(&self, name: &str) -> Result<Arc<PluginIdent>, DeployError> {
        let candidate = self
            .candidates
            .get(name)
            .ok_or_else(|| DeployError::NoCandidate(name.to_string()))?;
        let ident = self
            .deploy(name, candidate.plugin.bytes.clone(), Trigger::Api)
            .await?;
        // Only this candidate: another deployed meanwhile stays.
        if self
            .candidates
            .get(name)
            .is_some_and(|c| Arc::ptr_eq(&c, &candidate))
        {
            self.candidates.remove(name);
        }
        // It serves everywhere already; a host that missed the end drops it at its next look.
        if let Err(e) = self
            .end_shared_candidate(name, &candidate.plugin.hash)
            .await
        {
            tracing::warn!(plugin = %ident, "{e}");
        }
        tracing::info!(plugin = %ident, mode = candidate.mode.label(), "candidate promoted");
        Ok(ident)
    }

    /// Drops plugin `name`'s candidate, on every host when the store is shared.
    pub async fn abort(&self, name: &str) -> Result<Arc<PluginIdent>, DeployError> {
        let candidate = self
            .candidates
            .get(name)
            .ok_or_else(|| DeployError::NoCandidate(name.to_string()))?;
        self.end_shared_candidate(name, &candidate.plugin.hash)
            .await?;
        self.candidates.remove(name);
        tracing::info!(plugin = %candidate.plugin.ident, mode = candidate.mode.label(), "candidate aborted");
        Ok(candidate.plugin.ident.clone())
    }

    /// Books `json` on `route` (a book-job route) through the version whose turn it is:
    /// the canary for its share of work orders, else `serving`. A shadow gets the tape.
    /// The version that ran, and the answer.
    pub async fn book(
        &self,
        route: &Route,
        serving: Arc<LoadedPlugin>,
        ctx: &RequestContext,
        json: &Value,
    ) -> (Arc<PluginIdent>, Result<Booked, ApiError>) {
        let Some(candidate) = self.candidates.get(&route.plugin) else {
            let booked = self.journal.book(&self.runtime, &serving, ctx, json).await;
            return (serving.ident.clone(), booked);
        };
        match candidate.mode {
            Mode::Shadow => {
                // A booking that finds the shadow's runs busy is not even taped.
                let Ok(permit) = candidate.shadow.running.clone().try_acquire_owned() else {
                    candidate.shadow.skipped();
                    let booked = self.journal.book(&self.runtime, &serving, ctx, json).await;
                    return (serving.ident.clone(), booked);
                };
                let mut tape = None;
                let booked = self
                    .journal
                    .book_taped(&self.runtime, &serving, ctx, json, &mut tape)
                    .await;
                if let Some(tape) = tape {
                    self.shadow(&candidate, tape, permit);
                }
                (serving.ident.clone(), booked)
            }
            Mode::Canary { .. } => {
                let by_candidate = candidate.books(ctx.work_order_id.as_deref());
                let plugin = if by_candidate {
                    candidate.plugin.clone()
                } else {
                    serving
                };
                let started = Instant::now();
                let booked = self.journal.book(&self.runtime, &plugin, ctx, json).await;
                let counted = match &booked {
                    Ok(Booked::Ran(_)) => Some(false),
                    // Answered from the journal, or refused before any plugin ran.
                    Ok(Booked::Replayed(_)) => None,
                    Err(e) if e.kind == ErrorKind::InvalidRequest => None,
                    Err(e) => Some(failed(e.kind)),
                };
                if let Some(failed) = counted
                    && let Some(reason) = candidate.observe(by_candidate, failed, started.elapsed())
                {
                    self.roll_back_canary(&route.plugin, &candidate, reason);
                }
                (plugin.ident.clone(), booked)
            }
        }
    }

    /// Rolls back a canary the window judged worse than the serving version, on every
    /// host when the store is shared.
    fn roll_back_canary(&self, name: &str, candidate: &Arc<Candidate>, reason: String) {
        if !self.candidates.roll_back(name, candidate, reason.clone()) {
            return;
        }
        tracing::warn!(
            plugin = %candidate.plugin.ident,
            "canary rolled back: {reason}"
        );
        if self.storage.versions().is_some() {
            let (storage, plugin, hash) = (
                self.storage.clone(),
                name.to_string(),
                candidate.plugin.hash.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let ended = storage
                    .versions()
                    .map(|v| v.unstage(&plugin, &hash))
                    .transpose();
                if let Err(e) = ended {
                    tracing::error!(
                        plugin,
                        "cannot end the rolled-back canary on the other hosts: {e}"
                    );
                }
            });
        }
    }

    /// Follows the candidates the other hosts deployed or ended: called by the follower
    /// of the shared versions with what the store holds.
    pub(super) async fn follow_candidates(&self, shared: Vec<SharedCandidate>) {
        for name in self.manifests.keys() {
            let local = self.candidates.get(name);
            let Some(wanted) = shared.iter().find(|c| c.plugin == *name) else {
                self.candidates.forget_generation(name);
                // A candidate staged here is in the store before it runs: one missing
                // there was ended by another host.
                if let Some(local) = local
                    && self.candidates.remove(name).is_some()
                {
                    tracing::info!(plugin = %local.plugin.ident, "candidate ended on another host");
                }
                continue;
            };
            if !self.candidates.new_generation(name, wanted.generation) {
                continue;
            }
            let mode = match wanted.mode.as_str() {
                "canary" => Mode::Canary {
                    percent: wanted.percent,
                },
                _ => Mode::Shadow,
            };
            if local
                .as_ref()
                .is_some_and(|l| l.plugin.hash == wanted.hash && l.mode == mode)
            {
                continue;
            }
            let (plugin, hash) = (name.clone(), wanted.hash.clone());
            let bytes = self
                .blocking_versions(move |v| v.component(&plugin, &hash))
                .await;
            let candidate = match bytes {
                Ok(Some(bytes)) => self
                    .admit_candidate(name, Arc::from(bytes), Trigger::Shared)
                    .await
                    .map_err(|e| e.to_string()),
                Ok(None) => Err("the store holds no component for it".into()),
                Err(e) => Err(e.to_string()),
            };
            match candidate {
                Ok(candidate) => {
                    tracing::info!(plugin = %candidate.ident, mode = mode.label(), by = wanted.by, "running the candidate another host deployed");
                    self.run_candidate(name, candidate, mode);
                }
                Err(e) => tracing::error!(
                    plugin = name,
                    by = wanted.by,
                    "cannot run the candidate another host deployed: {e}"
                ),
            }
        }
    }

    /// Replays a live booking's tape through plugin `candidate`'s shadow, off the answer's
    /// path, in the run slot `permit` holds (kept a while after, see
    /// [`crate::promote::SHADOW_REST`]).
    fn shadow(
        &self,
        candidate: &Arc<Candidate>,
        tape: Tape,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let (runtime, storage, candidate) = (
            self.runtime.clone(),
            self.storage.clone(),
            candidate.clone(),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let (booking, difference, _, _) = replay::replay_tape(
                &runtime,
                &candidate.plugin,
                &storage,
                tape,
                &replay::Options::default(),
            )
            .await;
            let took = started.elapsed();
            let latest = (booking.outcome != Outcome::Same).then(|| Latest {
                at: crate::clock::unix_seconds(),
                outcome: booking.outcome,
                error_type: booking.error_type.clone(),
                work_order_id: difference
                    .is_none()
                    .then(|| booking.work_order_id.clone())
                    .flatten(),
                difference,
            });
            candidate.shadow.ran(booking.outcome, latest);
            // Rest before the next run, so that a shadow never takes more than its share
            // of the CPU from live bookings.
            tokio::time::sleep(took * crate::promote::SHADOW_REST).await;
            drop(permit);
        });
    }
}
