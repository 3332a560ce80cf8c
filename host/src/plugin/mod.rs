//! Plugins: a customer's component, checked, compiled and ready to instantiate.

pub mod history;
pub mod loader;
pub mod manifest;
pub mod registry;

use crate::runtime::bindings::{appointments, followup};
use crate::runtime::sandbox::Limits;
use crate::runtime::state::PluginState;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use wasmtime::component::InstancePre;

/// Names a plugin version in logs and error bodies: `name@version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginIdent {
    pub name: String,
    /// `sha256:` and the first 12 hex digits of the component's hash.
    pub version: String,
}

impl std::fmt::Display for PluginIdent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// A plugin serving a kept version because its configured file was refused at start; the
/// note stands until a deploy or rollback of the plugin succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Degraded {
    pub plugin: String,
    /// The version serving instead (`sha256:` and 12 hex digits).
    pub version: String,
    /// The configured file that was refused.
    pub file: PathBuf,
    /// Why it was refused: one line of at most [`loader::MAX_REASON_BYTES`] bytes.
    pub reason: String,
}

/// A plugin version compiled once and pre-instantiated once; every request instantiates
/// it afresh in its own `Store` (see [`crate::runtime::PluginRuntime`]).
pub struct LoadedPlugin {
    pub ident: Arc<PluginIdent>,
    /// The WIT package version the component was built for.
    pub wit_version: String,
    pub pre: InstancePre<PluginState>,
    /// Present when the component exports the `followup` interface (book-job routes).
    pub book: Option<followup::GuestIndices>,
    /// Present when the component exports the `appointments` interface (search routes).
    pub search: Option<appointments::GuestIndices>,
    pub limits: Limits,
    pub config: Arc<HashMap<String, String>>,
    /// Whether the plugin may use the key-value store.
    pub kv: bool,
    /// The origins the plugin may call over HTTP, and the limits of those calls.
    pub http: Option<Arc<crate::runtime::outbound::HttpGrant>>,
    /// Bounds the calls of this plugin in flight (`max_concurrency`).
    pub slots: tokio::sync::Semaphore,
    /// The component's SHA-256 in hex (the version is its first 12 digits).
    pub hash: String,
    /// The component itself, kept for rollback once this version is replaced.
    pub bytes: Arc<[u8]>,
    /// The same rules compiled into the host, when an embedding program registered them
    /// ([`crate::App::with_native`]): requests call them directly instead of the
    /// component (the native baseline of the benchmarks).
    pub native: Option<crate::runtime::native::NativeRules>,
    /// Requests one instance may serve (`reuse_instances`; 1: a fresh instance each).
    pub reuse_instances: u32,
    /// Idle instances kept for reuse, per route; empty unless `reuse_instances` > 1.
    pub warm: crate::runtime::WarmPool,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("ident", &self.ident)
            .field("wit_version", &self.wit_version)
            .field("book", &self.book.is_some())
            .field("search", &self.search.is_some())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}
