//! What the operator says about one plugin (`[plugins.NAME]` in the config): where its
//! component is, the limits it runs under, and the configuration values it may read.
//! Everything not granted here is denied.

use crate::runtime::sandbox::Limits;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
pub struct PluginManifest {
    /// Path of the component (`.wasm`); relative paths are resolved against the config
    /// file's directory.
    pub path: PathBuf,
    /// Resource limits; see [`Limits`] for each default.
    #[serde(flatten)]
    pub limits: Limits,
    /// Values the plugin reads through the `config` host service. Default: none.
    #[serde(default)]
    pub config: HashMap<String, String>,
    /// Grants the key-value store (namespaced to this plugin). Default: false.
    #[serde(default)]
    pub kv: bool,
    /// Requests (Book Job JSON files, relative to the config file) every new version must
    /// answer without error before it serves: the admission gate runs each through every
    /// kind of route the plugin serves. Default: none.
    #[serde(default)]
    pub samples: Vec<PathBuf>,
    /// Keys that are neither the above nor a limit: refused by the config check (serde
    /// cannot deny unknown fields through a flattened struct).
    #[serde(flatten)]
    pub unknown: BTreeMap<String, toml::Value>,
}
