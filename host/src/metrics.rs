//! Counters the host keeps about its plugins: failures by plugin version and error type.

use crate::plugin::PluginIdent;
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// Counted only on failures, so a mutex-protected map costs the success path nothing.
#[derive(Debug, Default)]
pub struct Metrics {
    failures: Mutex<BTreeMap<(String, String, &'static str), u64>>,
}

/// One counter: plugin name, version, error type, count.
pub type FailureCount = (String, String, &'static str, u64);

impl Metrics {
    /// Counts one failure of `plugin` with error type `kind`.
    pub fn count_failure(&self, plugin: &PluginIdent, kind: &'static str) {
        let mut map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        *map.entry((plugin.name.clone(), plugin.version.clone(), kind))
            .or_default() += 1;
    }

    /// Every failure counter, ordered by plugin, version and type.
    pub fn failures(&self) -> Vec<FailureCount> {
        let map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .map(|((name, version, kind), n)| (name.clone(), version.clone(), *kind, *n))
            .collect()
    }

    /// The count for one plugin name and error type, over all its versions.
    pub fn failure_count(&self, plugin: &str, kind: &str) -> u64 {
        self.failures()
            .iter()
            .filter(|(name, _, k, _)| name == plugin && *k == kind)
            .map(|(.., n)| n)
            .sum()
    }
}
