//! The plugin registry: plugin name → the version serving it, swapped atomically.
//!
//! A request takes the current version (`get`) at its start and holds that `Arc` until it
//! ends, so it finishes on the version it started with even if a new one is installed
//! meanwhile. A replaced version is freed when its last request ends; until then it is
//! listed as draining, with the number of its calls still in flight.

use super::{LoadedPlugin, PluginIdent};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// A replaced version that may still be serving requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draining {
    pub ident: PluginIdent,
    /// Requests that hold the version (and so will finish on it).
    pub in_flight: usize,
}

#[derive(Debug, Default)]
pub struct Registry {
    current: HashMap<String, ArcSwap<LoadedPlugin>>,
    retired: Mutex<Vec<Weak<LoadedPlugin>>>,
}

impl Registry {
    /// A registry serving `plugins`; the set of names is fixed, their versions are not.
    pub fn new(plugins: impl IntoIterator<Item = (String, Arc<LoadedPlugin>)>) -> Self {
        Registry {
            current: plugins
                .into_iter()
                .map(|(name, plugin)| (name, ArcSwap::new(plugin)))
                .collect(),
            retired: Mutex::default(),
        }
    }

    /// The version serving `name` now.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.current.get(name).map(ArcSwap::load_full)
    }

    /// Installs `next` as the version serving `name`; requests already running keep the
    /// version they took. Returns the replaced version, or `next` back when `name` is not
    /// a configured plugin.
    pub fn replace(
        &self,
        name: &str,
        next: Arc<LoadedPlugin>,
    ) -> Result<Arc<LoadedPlugin>, Arc<LoadedPlugin>> {
        let Some(slot) = self.current.get(name) else {
            return Err(next);
        };
        let previous = slot.swap(next);
        tracing::info!(plugin = %previous.ident, "replaced; draining");
        let mut retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        retired.retain(|w| w.strong_count() > 0);
        retired.push(Arc::downgrade(&previous));
        Ok(previous)
    }

    /// Replaced versions still held by requests.
    pub fn draining(&self) -> Vec<Draining> {
        let mut retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        retired.retain(|w| w.strong_count() > 0);
        retired
            .iter()
            .filter_map(Weak::upgrade)
            .map(|plugin| Draining {
                ident: (*plugin.ident).clone(),
                // One count is the `Arc` upgraded here.
                in_flight: Arc::strong_count(&plugin) - 1,
            })
            .filter(|d| d.in_flight > 0)
            .collect()
    }

    /// Every plugin name with the version serving it.
    pub fn versions(&self) -> Vec<PluginIdent> {
        let mut all: Vec<PluginIdent> = self
            .current
            .values()
            .map(|slot| (*slot.load().ident).clone())
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}
