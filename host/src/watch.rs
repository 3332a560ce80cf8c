//! Watching plugin files: a component renamed over a plugin's configured path, or written
//! there and closed, becomes a candidate version and goes through the same admission gate
//! as an upload.
//!
//! The directories holding the configured files are watched (not the files: a rename
//! replaces the file, and its watch with it). Only two events count: a rename onto the
//! path (the atomic way to publish a file) and the close of a file opened for writing
//! there. A file still being written has neither, so it is never read; a writer that closes
//! early or a damaged file is refused by the admission gate and the serving version stays.
//! Changes to one path within `debounce_ms` of each other are loaded once.

use crate::app::App;
use crate::metrics::Trigger;
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{RecursiveMode, Watcher as _};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Watches the plugin files of an [`App`] while it lives; dropping it stops the watching.
pub struct PluginWatcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PluginWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for PluginWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginWatcher").finish_non_exhaustive()
    }
}

/// Starts watching every configured plugin file of `app`. Must be called within a tokio
/// runtime.
pub fn watch(app: Arc<App>, debounce: Duration) -> anyhow::Result<PluginWatcher> {
    // The canonical path of each file → the plugins it serves (one file may serve several).
    let mut files: HashMap<PathBuf, Vec<String>> = HashMap::new();
    for (name, path) in app.plugin_files() {
        files.entry(canonical(&path)?).or_default().push(name);
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                for path in published(&event) {
                    let _ = tx.send(path.clone());
                }
            }
            Err(e) => tracing::warn!("watching plugin files: {e}"),
        })?;
    let mut dirs: Vec<&Path> = files.keys().filter_map(|p| p.parent()).collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", dir.display()))?;
        tracing::info!(dir = %dir.display(), "watching plugin files");
    }
    let task = tokio::spawn(run(app, files, rx, debounce));
    Ok(PluginWatcher {
        _watcher: watcher,
        task,
    })
}

/// The configured path with its directory resolved (the file itself may not exist yet).
fn canonical(path: &Path) -> anyhow::Result<PathBuf> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("plugin path {} names no file", path.display()))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| anyhow::anyhow!("plugin directory {}: {e}", dir.display()))?;
    Ok(dir.join(name))
}

/// The paths an event says were published whole: renamed onto, or closed after writing.
fn published(event: &notify::Event) -> &[PathBuf] {
    match event.kind {
        EventKind::Modify(ModifyKind::Name(RenameMode::To))
        | EventKind::Access(AccessKind::Close(AccessMode::Write)) => &event.paths,
        _ => &[],
    }
}

async fn run(
    app: Arc<App>,
    files: HashMap<PathBuf, Vec<String>>,
    mut changes: mpsc::UnboundedReceiver<PathBuf>,
    debounce: Duration,
) {
    let mut due: HashMap<PathBuf, Instant> = HashMap::new();
    loop {
        let next = due.values().min().copied();
        tokio::select! {
            changed = changes.recv() => match changed {
                Some(path) if files.contains_key(&path) => {
                    due.insert(path, Instant::now() + debounce);
                }
                Some(_) => {}
                None => return,
            },
            () = async { tokio::time::sleep_until(next.unwrap_or_else(Instant::now)).await },
                if next.is_some() => {
                let now = Instant::now();
                let ready: Vec<PathBuf> = due
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(p, _)| p.clone())
                    .collect();
                for path in ready {
                    due.remove(&path);
                    load(&app, &path, &files[&path]).await;
                }
            }
        }
    }
}

/// Deploys the file at `path` as the new version of each plugin it serves.
async fn load(app: &App, path: &Path, plugins: &[String]) {
    let owned = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || std::fs::read(owned))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    let bytes = match read {
        Ok(bytes) => Arc::<[u8]>::from(bytes),
        // Removed again, or renamed away: nothing to load, the serving version stays.
        Err(e) => {
            tracing::info!(path = %path.display(), "changed plugin file not read: {e}");
            return;
        }
    };
    for name in plugins {
        // The outcome is logged and counted by `deploy`.
        let _ = app.deploy(name, bytes.clone(), Trigger::File).await;
    }
}
