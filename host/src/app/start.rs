//! Start-up: the version each plugin serves when the host starts (its configured file, the
//! version a deploy left serving, or — when the file is refused — the newest kept version
//! that serves; with a store several hosts share, the version they serve), and the sample
//! requests its later versions must answer.

use crate::contract;
use crate::error;
use crate::http::routes::RouteKind;
use crate::plugin;
use crate::plugin::LoadedPlugin;
use crate::plugin::PluginIdent;
use crate::plugin::history::{History, Trigger};
use crate::runtime::PluginRuntime;
use crate::storage::{SharedVersion, SharedVersions};
use crate::text;
use anyhow::{Context, bail};
use std::collections::HashMap;
use std::sync::Arc;

/// What this host applied of the shared versions: the generation per plugin. Held while
/// a version is published or followed (`app/shared.rs`), so that the two never interleave.
pub type Applied = tokio::sync::Mutex<HashMap<String, u64>>;

/// An admission sample: a request read from a file named in the plugin's manifest.
#[derive(Debug, Clone)]
pub struct Sample {
    pub file: String,
    pub json: serde_json::Value,
}

/// The version a plugin serves at start.
pub struct Start {
    pub loaded: LoadedPlugin,
    /// Set when the configured file was refused and a kept version serves instead.
    pub degraded: Option<plugin::Degraded>,
}

/// Loads the version plugin `name` serves at start: its configured file, or the version
/// that replaced that file before a restart; when the file is refused, the newest kept
/// version that passes the same checks. Each must load and export what the plugin's
/// `routes` (path and kind) need.
pub fn load_configured(
    runtime: &PluginRuntime,
    history: &History,
    name: &str,
    manifest: &crate::config::PluginManifest,
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
                let version = PluginIdent::version_of(&kept_hash);
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
                version = PluginIdent::version_of(&served.hash),
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
pub fn read_samples(
    name: &str,
    manifest: &crate::config::PluginManifest,
) -> anyhow::Result<Vec<Sample>> {
    manifest
        .samples
        .iter()
        .map(|path| {
            let file = path.display().to_string();
            let text = std::fs::read(path)
                .with_context(|| format!("plugin {name}: cannot read sample {file}"))?;
            let json = crate::http::json::parse_body(&text, &crate::config::InputLimits::default())
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

/// Whether `plugin` exports what a route of `kind` needs.
pub fn check_serves(plugin: &LoadedPlugin, route: &str, kind: RouteKind) -> anyhow::Result<()> {
    if !plugin.serves(kind) {
        bail!(
            "route {route}: plugin {} does not export {}",
            plugin.ident,
            kind.export()
        );
    }
    Ok(())
}

/// Brings the versions a starting host loaded in line with the shared store: a plugin the
/// store knows serves the store's version, unless this host's configured file changed
/// since this host last served it (a deploy); one the store does not know is published.
/// `file_hashes`: each configured file's SHA-256, as read at start. The names of the
/// plugins now serving the store's version instead of what this host loaded, and the
/// generation applied per plugin.
pub fn converge_at_start(
    versions: &dyn SharedVersions,
    history: &History,
    plugins: &mut HashMap<String, Arc<LoadedPlugin>>,
    file_hashes: &HashMap<String, String>,
    load: impl Fn(&str, Arc<[u8]>, String) -> anyhow::Result<LoadedPlugin>,
) -> anyhow::Result<(Vec<String>, HashMap<String, u64>)> {
    let published: HashMap<String, SharedVersion> = versions
        .serving()?
        .into_iter()
        .map(|v| (v.plugin.clone(), v))
        .collect();
    let mut adopted = Vec::new();
    let mut applied = HashMap::new();
    let mut names: Vec<String> = plugins.keys().cloned().collect();
    names.sort();
    for name in names {
        let loaded = plugins[&name].clone();
        let file = file_hashes.get(&name);
        let replaced_while_down = file.is_some_and(|f| {
            *f == loaded.hash && history.last_file(&name).is_some_and(|last| last != *f)
        });
        let publish =
            |how: Trigger| versions.publish(&name, &loaded.hash, &loaded.bytes, how.label());
        match published.get(&name) {
            None => {
                applied.insert(name.clone(), publish(Trigger::Config)?);
            }
            Some(v) if v.hash == loaded.hash => {
                applied.insert(name.clone(), v.generation);
            }
            Some(_) if replaced_while_down => {
                tracing::info!(plugin = %loaded.ident, "the configured file changed while the host was down: deploying it to every host");
                applied.insert(name.clone(), publish(Trigger::File)?);
            }
            Some(v) => {
                let adopt = versions
                    .component(&name, &v.hash)?
                    .ok_or_else(|| anyhow::anyhow!("the store holds no component for it"))
                    .and_then(|bytes| load(&name, Arc::from(bytes), v.hash.clone()));
                match adopt {
                    Ok(shared) => {
                        tracing::info!(plugin = %shared.ident, "serving the version the other hosts serve");
                        if let Err(e) = history.record(
                            &name,
                            (&loaded.hash, &loaded.bytes),
                            (&shared.hash, &shared.bytes),
                            Trigger::Shared,
                        ) {
                            tracing::error!(plugin = %shared.ident, "cannot record the version in the versions directory: {e}");
                        }
                        plugins.insert(name.clone(), Arc::new(shared));
                        adopted.push(name.clone());
                    }
                    Err(e) => tracing::error!(
                        plugin = %loaded.ident,
                        shared = PluginIdent::version_of(&v.hash),
                        "cannot serve the version the other hosts serve; serving this host's: {e}"
                    ),
                }
                applied.insert(name.clone(), v.generation);
            }
        }
    }
    Ok((adopted, applied))
}
