//! Plugins: a customer's component, checked, compiled and ready to instantiate.

pub mod history;
pub mod loader;
#[cfg(feature = "native-baseline")]
pub mod native;
pub mod registry;

pub use crate::runtime::Prepared;
use std::path::PathBuf;
use std::sync::Arc;

pub use crate::contract::PluginIdent;

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

/// A plugin version as the host keeps it: what the runtime calls ([`Prepared`], which this
/// dereferences to, so that `plugin.limits` reads as it says), and what only loading,
/// rollback and the native baseline need.
pub struct LoadedPlugin {
    /// Compiled, pre-instantiated, with its limits and grants.
    pub prepared: Prepared,
    /// The WIT package version the component was built for.
    pub wit_version: String,
    /// The component's SHA-256 in hex (the version is its first 12 digits).
    pub hash: String,
    /// The component itself, kept for rollback once this version is replaced.
    pub bytes: Arc<[u8]>,
    /// The same rules compiled into the host, when an embedding program registered them
    /// ([`crate::App::with_native`]): requests call them directly instead of the
    /// component (the native baseline of the benchmarks).
    #[cfg(feature = "native-baseline")]
    pub native: Option<native::NativeRules>,
}

impl std::ops::Deref for LoadedPlugin {
    type Target = Prepared;
    fn deref(&self) -> &Prepared {
        &self.prepared
    }
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
