//! Host implementations of the WIT imports every plugin gets: logging and configuration.
//! They are plain Rust and are tested without Wasm.

use super::bindings::{config, log, types};
use super::state::PluginState;

impl types::Host for PluginState {}

impl log::Host for PluginState {
    fn log(&mut self, level: log::Level, message: String) {
        let (plugin, version, request_id) = (
            self.ident.name.as_str(),
            self.ident.version.as_str(),
            &*self.request_id,
        );
        match level {
            log::Level::Trace => tracing::trace!(plugin, version, request_id, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, version, request_id, "{message}"),
            log::Level::Info => tracing::info!(plugin, version, request_id, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, version, request_id, "{message}"),
            log::Level::Error => tracing::error!(plugin, version, request_id, "{message}"),
        }
    }
}

impl config::Host for PluginState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}
