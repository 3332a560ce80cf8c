//! What the operator says about one plugin (`[plugins.NAME]` in the config): where its
//! component is, the limits it runs under, and the configuration values it may read.
//! Everything not granted here is denied.

use crate::runtime::outbound::HttpGrant;
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
    /// Configuration values taken from the environment: key → the name of the environment
    /// variable holding the value (API keys, passwords). Read through the `config` service
    /// like the values above; never logged. An unset variable refuses the plugin. Default:
    /// none.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Grants outbound HTTP (`wasi:http/outgoing-handler`) to the origins listed. Default:
    /// none (a plugin that imports it is refused).
    #[serde(default)]
    pub http: Option<HttpGrant>,
    /// Grants the key-value store (namespaced to this plugin). Default: false.
    #[serde(default)]
    pub kv: bool,
    /// Warm instance reuse, opt-in: an instance serves up to this many requests of one
    /// route before it is dropped (and is dropped at once after any trap or limit hit).
    /// Faster, but a request can see what an earlier request of the same route left in
    /// the instance's memory; see docs/sandbox.md. Default 0 or 1: a fresh instance for
    /// every request.
    #[serde(default)]
    pub reuse_instances: u32,
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

impl PluginManifest {
    /// The values the plugin reads through the `config` service: `config`, then `secrets`
    /// resolved from the environment (a secret wins over a plain value of the same key).
    pub fn values(&self, name: &str) -> Result<HashMap<String, String>, String> {
        let mut values = self.config.clone();
        for (key, var) in &self.secrets {
            let value = std::env::var(var).map_err(|_| {
                format!(
                    "plugin {name}: secret {key:?} names environment variable {var}, which is unset or not UTF-8"
                )
            })?;
            values.insert(key.clone(), value);
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_the_environment_and_win_over_plain_values() {
        let m: PluginManifest = toml::from_str(
            "path = \"p.wasm\"\n[config]\nkey = \"plain\"\nother = \"kept\"\n\
             [secrets]\nkey = \"PATH\"\n",
        )
        .unwrap();
        let values = m.values("p").unwrap();
        assert_eq!(values["key"], std::env::var("PATH").unwrap());
        assert_eq!(values["other"], "kept");
        let missing: PluginManifest =
            toml::from_str("path = \"p.wasm\"\n[secrets]\nk = \"FOLLOWUP_UNSET_FOR_TEST\"\n")
                .unwrap();
        let err = missing.values("p").unwrap_err();
        assert!(err.contains("FOLLOWUP_UNSET_FOR_TEST"), "{err}");
    }
}
