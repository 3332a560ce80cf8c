//! Warm instances (`reuse_instances = N`): an instance that served a call without failing
//! goes back to a pool of its plugin version for its route, and serves up to N calls.

use super::state::PluginState;
use std::collections::HashMap;
use std::sync::Mutex;
use wasmtime::Store;
use wasmtime::component::Instance;

/// An instance kept for reuse with its `Store`.
pub struct Warm {
    pub store: Store<PluginState>,
    pub instance: Instance,
    /// Calls it has served.
    pub served: u32,
}

/// Idle warm instances of one plugin version, per route: an instance only ever serves the
/// route it was created for (tenants never share one), and goes with its version when the
/// plugin is swapped.
#[derive(Default)]
pub struct WarmPool {
    idle: Mutex<HashMap<String, Vec<Warm>>>,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl WarmPool {
    pub fn take(&self, route: &str) -> Option<Warm> {
        lock(&self.idle).get_mut(route)?.pop()
    }

    /// Keeps `warm` for `route`, unless `max` instances of the route already wait (each
    /// idle instance holds a slot of the pooling allocator).
    pub fn put(&self, route: &str, warm: Warm, max: usize) {
        let mut idle = lock(&self.idle);
        let list = match idle.get_mut(route) {
            Some(list) => list,
            None => idle.entry(route.to_string()).or_default(),
        };
        if list.len() < max {
            list.push(warm);
        }
    }

    /// Idle instances, all routes together.
    pub fn idle_count(&self) -> usize {
        lock(&self.idle).values().map(Vec::len).sum()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // What the mutex guards holds no invariant a panicking holder could break.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
