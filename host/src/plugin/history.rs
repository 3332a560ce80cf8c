//! The versions each plugin has served, kept for rollback and kept across restarts.
//!
//! On disk (`versions_dir`, default `data/versions`), one folder per plugin name holds each
//! kept component as `<sha256>.wasm` and a journal `served`, one line per version set
//! serving: `<unix seconds> <sha256> <how>`, `how` being `config` (the file the config
//! names, as found at start), `file` (the watched file changed), `api` or `rollback`.
//! A component is written through a temporary file, synced and renamed before its journal
//! line is appended, so a journal line never names a component that is not whole; a
//! component read back is used only when its SHA-256 matches its name.
//!
//! At start the journal decides what serves: the file the config names, unless that file
//! is unchanged since the journal last recorded it and a later deploy or rollback replaced
//! it, in which case that later version serves again. The newest deliberate act wins: a
//! version deployed through the API survives a restart, and a file replaced while the host
//! was down is served. The configured file is recorded (`config`) as soon as it serves
//! from start, so even a host that never swapped keeps a version to fall back on: when the
//! configured file is refused at a later start, the newest kept version that loads serves
//! instead ([`History::kept`], [`History::component`]; see `App::with_runtime`). Such a
//! fallback is not recorded, since no one chose it.
//!
//! Without a directory the same bookkeeping lives in memory only.

use crate::files::write_atomically;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// Earlier versions kept per plugin for rollback (besides the one serving).
pub const KEPT_VERSIONS: usize = 5;

/// Journal lines kept when the journal is compacted.
const JOURNAL_LINES: usize = 64;

/// Trigger a version came to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The file the config names, as found at start.
    Config,
    /// The watched plugin file changed.
    File,
    /// An upload through the admin API (or `followup plugin deploy`).
    Api,
    /// A rollback through the admin API.
    Rollback,
    /// Deployed by another host sharing the store (`docs/scale-out.md`).
    Shared,
}

impl Trigger {
    pub fn label(self) -> &'static str {
        match self {
            Trigger::Config => "config",
            Trigger::File => "file",
            Trigger::Api => "api",
            Trigger::Rollback => "rollback",
            Trigger::Shared => "shared",
        }
    }

    fn parse(text: &str) -> Option<Trigger> {
        [
            Trigger::Config,
            Trigger::File,
            Trigger::Api,
            Trigger::Rollback,
            Trigger::Shared,
        ]
        .into_iter()
        .find(|h| h.label() == text)
    }

    /// Whether the version came from the file the config names.
    fn is_file(self) -> bool {
        matches!(self, Trigger::Config | Trigger::File)
    }
}

/// One journal line: a version set serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// Unix seconds.
    pub at: u64,
    /// The component's SHA-256 in hex.
    pub hash: String,
    pub how: Trigger,
}

#[derive(Debug, Default)]
struct Plugin {
    journal: Vec<Served>,
    /// Components kept in memory when there is no directory.
    bytes: HashMap<String, Arc<[u8]>>,
}

#[derive(Debug)]
pub struct History {
    dir: Option<PathBuf>,
    plugins: Mutex<HashMap<String, Plugin>>,
}

impl History {
    /// History kept in `dir` (created if missing), or in memory only.
    pub fn open(dir: Option<PathBuf>) -> anyhow::Result<History> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!(
                    "cannot create the versions directory {}: {e}",
                    dir.display()
                )
            })?;
        }
        Ok(History {
            dir,
            plugins: Mutex::default(),
        })
    }

    fn with<T>(&self, name: &str, f: impl FnOnce(&mut Plugin) -> T) -> T {
        let mut plugins = self.plugins.lock().unwrap_or_else(PoisonError::into_inner);
        let plugin = plugins.entry(name.to_string()).or_insert_with(|| Plugin {
            journal: self
                .dir
                .as_deref()
                .map(|d| read_journal(&d.join(name).join("served")))
                .unwrap_or_default(),
            bytes: HashMap::new(),
        });
        f(plugin)
    }

    /// The version to serve at start instead of the configured file (whose SHA-256 is
    /// `file_hash`), if a deploy or rollback replaced that very file before the restart.
    pub fn resume(&self, name: &str, file_hash: &str) -> Option<(String, Arc<[u8]>)> {
        let last = self.with(name, |p| {
            let last_file = p.journal.iter().rev().find(|s| s.how.is_file())?;
            let last = p.journal.last()?;
            (last_file.hash == file_hash && !last.how.is_file()).then(|| last.hash.clone())
        })?;
        let bytes = self.component(name, &last)?;
        Some((last, bytes))
    }

    /// The configured file's SHA-256 as last recorded serving `name` (at a start or by the
    /// watcher): a different file now means it was replaced while the host was down.
    pub fn last_file(&self, name: &str) -> Option<String> {
        self.with(name, |p| {
            p.journal
                .iter()
                .rev()
                .find(|s| s.how.is_file())
                .map(|s| s.hash.clone())
        })
    }

    /// Records that `next` (SHA-256 `next_hash`) replaced `previous` as the version serving
    /// `name`. Both are kept; versions beyond the newest [`KEPT_VERSIONS`] + 1 are removed.
    pub fn record(
        &self,
        name: &str,
        previous: (&str, &Arc<[u8]>),
        next: (&str, &Arc<[u8]>),
        how: Trigger,
    ) -> std::io::Result<()> {
        self.append(name, Some(previous), next, how)
    }

    /// Records that the configured file (SHA-256 `hash`) serves `name` from start, unless
    /// the journal's last line already names it. Its bytes are kept from then on, so a host
    /// that never swapped still has a version to fall back on when its file is refused at
    /// a later start.
    pub fn record_start(&self, name: &str, hash: &str, bytes: &Arc<[u8]>) -> std::io::Result<()> {
        self.append(name, None, (hash, bytes), Trigger::Config)
    }

    fn append(
        &self,
        name: &str,
        previous: Option<(&str, &Arc<[u8]>)>,
        next: (&str, &Arc<[u8]>),
        how: Trigger,
    ) -> std::io::Result<()> {
        let now = crate::clock::unix_seconds();
        let dir = self.dir.as_ref().map(|d| d.join(name));
        self.with(name, |plugin| {
            let last = plugin.journal.last().map(|s| s.hash.clone());
            let mut lines = Vec::new();
            // A version serving without a line of its own: one that came back from the
            // versions directory because the configured file was refused at start, or whose
            // line could not be written then.
            if let Some(previous) = previous
                && last.as_deref() != Some(previous.0)
            {
                lines.push(Served {
                    at: now,
                    hash: previous.0.to_string(),
                    how: Trigger::Config,
                });
            }
            if previous.is_some() || last.as_deref() != Some(next.0) {
                lines.push(Served {
                    at: now,
                    hash: next.0.to_string(),
                    how,
                });
            }
            // Components are written even when the journal already names them, so that a
            // kept copy removed by hand comes back.
            let components = previous.into_iter().chain([next]);
            match &dir {
                Some(dir) => {
                    std::fs::create_dir_all(dir)?;
                    for (hash, bytes) in components {
                        let path = dir.join(format!("{hash}.wasm"));
                        if !path.exists() {
                            write_atomically(&path, bytes)?;
                        }
                    }
                    if !lines.is_empty() {
                        append_journal(&dir.join("served"), &lines)?;
                    }
                }
                None => {
                    for (hash, bytes) in components {
                        plugin.bytes.insert(hash.to_string(), bytes.clone());
                    }
                }
            }
            if lines.is_empty() {
                return Ok(());
            }
            plugin.journal.extend(lines);
            let kept = kept_hashes(&plugin.journal);
            plugin.bytes.retain(|h, _| kept.contains(h));
            if let Some(dir) = &dir {
                remove_unkept(dir, &kept);
                if plugin.journal.len() > 2 * JOURNAL_LINES {
                    let start = plugin.journal.len() - JOURNAL_LINES;
                    plugin.journal.drain(..start);
                    let text = journal_text(&plugin.journal);
                    write_atomically(&dir.join("served"), text.as_bytes())?;
                }
            }
            Ok(())
        })
    }

    /// The versions of `name` kept for rollback, newest first (the one serving first).
    pub fn kept(&self, name: &str) -> Vec<Served> {
        self.with(name, |p| {
            let kept = kept_hashes(&p.journal);
            kept.iter()
                .filter_map(|h| p.journal.iter().rev().find(|s| &s.hash == h).cloned())
                .collect()
        })
    }

    /// The kept component of `name` whose version (`sha256:` and a prefix of its hash of
    /// at least 12 digits, as listed) is `version`.
    pub fn find(&self, name: &str, version: &str) -> Option<(String, Arc<[u8]>)> {
        let prefix = version.strip_prefix("sha256:")?;
        if prefix.len() < 12 {
            return None;
        }
        let hash = self
            .kept(name)
            .into_iter()
            .find(|s| s.hash.starts_with(prefix))?
            .hash;
        let bytes = self.component(name, &hash)?;
        Some((hash, bytes))
    }

    /// The kept component of `name` whose SHA-256 is `hash`, checked against it: `None`
    /// when it is not kept or damaged.
    pub fn component(&self, name: &str, hash: &str) -> Option<Arc<[u8]>> {
        let Some(dir) = &self.dir else {
            return self.with(name, |p| p.bytes.get(hash).cloned());
        };
        let path = dir.join(name).join(format!("{hash}.wasm"));
        let bytes = std::fs::read(&path).ok()?;
        if super::loader::content_hash(&bytes) != hash {
            tracing::warn!(path = %path.display(), "kept version is damaged; ignored");
            return None;
        }
        Some(Arc::from(bytes))
    }
}

/// The newest [`KEPT_VERSIONS`] + 1 distinct versions of a journal, newest first.
fn kept_hashes(journal: &[Served]) -> Vec<String> {
    let mut kept: Vec<String> = Vec::new();
    for served in journal.iter().rev() {
        if !kept.contains(&served.hash) {
            kept.push(served.hash.clone());
            if kept.len() == KEPT_VERSIONS + 1 {
                break;
            }
        }
    }
    kept
}

fn remove_unkept(dir: &Path, kept: &[String]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if path.extension().is_some_and(|e| e == "wasm") && !kept.iter().any(|h| h == stem) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Reads a journal, skipping lines it cannot parse (a torn last line after a crash).
fn read_journal(path: &Path) -> Vec<Served> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let at = parts.next()?.parse().ok()?;
            let hash = parts.next()?;
            let how = Trigger::parse(parts.next()?)?;
            (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Served {
                at,
                hash: hash.to_string(),
                how,
            })
        })
        .collect()
}

fn journal_text(lines: &[Served]) -> String {
    lines
        .iter()
        .map(|s| format!("{} {} {}\n", s.at, s.hash, s.how.label()))
        .collect()
}

fn append_journal(path: &Path, lines: &[Served]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(journal_text(lines).as_bytes())?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::PluginIdent;
    use crate::plugin::loader::content_hash;

    fn component(tag: &str) -> (String, Arc<[u8]>) {
        let bytes: Arc<[u8]> = Arc::from(format!("component {tag}").into_bytes());
        (content_hash(&bytes), bytes)
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("followup-history-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn swap(h: &History, from: &(String, Arc<[u8]>), to: &(String, Arc<[u8]>), how: Trigger) {
        h.record("p", (&from.0, &from.1), (&to.0, &to.1), how)
            .unwrap();
    }

    #[test]
    fn an_api_deploy_survives_a_restart_until_the_file_changes() {
        let dir = temp_dir("resume");
        let (v1, v2, v3) = (component("1"), component("2"), component("3"));
        let h = History::open(Some(dir.clone())).unwrap();
        assert!(h.resume("p", &v1.0).is_none());
        swap(&h, &v1, &v2, Trigger::Api);

        // Restart with the config file still holding v1: v2 serves again.
        let h = History::open(Some(dir.clone())).unwrap();
        let (hash, bytes) = h.resume("p", &v1.0).unwrap();
        assert_eq!((hash, bytes), v2);
        // The file was replaced by v3 while the host was down: the file wins.
        assert!(h.resume("p", &v3.0).is_none());

        // Rollback to v1 is possible after the restart, by listed version.
        let version = PluginIdent::version_of(&v1.0);
        assert_eq!(h.find("p", &version).unwrap(), v1);
        assert!(h.find("p", "sha256:0000000000000").is_none());
        assert!(h.find("p", "sha256:").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_the_newest_versions_are_kept() {
        let dir = temp_dir("prune");
        let h = History::open(Some(dir.clone())).unwrap();
        let versions: Vec<_> = (0..10).map(|i| component(&i.to_string())).collect();
        for pair in versions.windows(2) {
            swap(&h, &pair[0], &pair[1], Trigger::File);
        }
        let kept = h.kept("p");
        assert_eq!(kept.len(), KEPT_VERSIONS + 1);
        assert_eq!(kept[0].hash, versions[9].0);
        assert_eq!(kept[KEPT_VERSIONS].hash, versions[4].0);
        let files = std::fs::read_dir(dir.join("p"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "wasm")
            })
            .count();
        assert_eq!(files, KEPT_VERSIONS + 1);
        assert!(
            h.find("p", &PluginIdent::version_of(&versions[3].0))
                .is_none()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_component_or_torn_line_is_not_trusted() {
        let dir = temp_dir("damage");
        let (v1, v2) = (component("1"), component("2"));
        let h = History::open(Some(dir.clone())).unwrap();
        swap(&h, &v1, &v2, Trigger::Api);
        std::fs::write(dir.join("p").join(format!("{}.wasm", v2.0)), b"garbage").unwrap();
        let mut journal = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("p/served"))
            .unwrap();
        journal.write_all(b"17 abc").unwrap();
        let h = History::open(Some(dir.clone())).unwrap();
        assert_eq!(h.kept("p").len(), 2);
        assert!(h.resume("p", &v1.0).is_none(), "damaged v2 must not serve");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_configured_version_is_kept_from_start_and_recorded_once() {
        let dir = temp_dir("start");
        let (v1, v2) = (component("1"), component("2"));
        let h = History::open(Some(dir.clone())).unwrap();
        h.record_start("p", &v1.0, &v1.1).unwrap();
        let h = History::open(Some(dir.clone())).unwrap();
        h.record_start("p", &v1.0, &v1.1).unwrap();
        let lines = || {
            std::fs::read_to_string(dir.join("p/served"))
                .unwrap()
                .lines()
                .count()
        };
        assert_eq!(lines(), 1);
        assert_eq!(h.kept("p")[0].how, Trigger::Config);
        assert_eq!(h.component("p", &v1.0).unwrap(), v1.1);

        // A kept copy removed by hand comes back at the next start.
        std::fs::remove_file(dir.join("p").join(format!("{}.wasm", v1.0))).unwrap();
        h.record_start("p", &v1.0, &v1.1).unwrap();
        assert_eq!(h.component("p", &v1.0).unwrap(), v1.1);
        assert_eq!(lines(), 1);

        // The journal's semantics stay: a deploy survives a restart (no second line for
        // v1 when it is replaced), and a file changed while the host was down wins.
        swap(&h, &v1, &v2, Trigger::Api);
        assert_eq!(lines(), 2);
        let h = History::open(Some(dir.clone())).unwrap();
        assert_eq!(h.resume("p", &v1.0).unwrap(), v2);
        assert!(h.resume("p", &component("3").0).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn in_memory_history_keeps_rollback_targets() {
        let h = History::open(None).unwrap();
        let (v1, v2) = (component("1"), component("2"));
        swap(&h, &v1, &v2, Trigger::Api);
        assert_eq!(h.find("p", &PluginIdent::version_of(&v1.0)).unwrap(), v1);
    }
}
