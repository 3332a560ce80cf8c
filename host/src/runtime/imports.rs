//! Host implementations of the WIT imports every plugin gets: logging and configuration.
//! They are plain Rust and are tested without Wasm.

use super::bindings::{config, log, types};
use super::state::PluginState;

impl types::Host for PluginState {}

impl log::Host for PluginState {
    /// Lines go to the call's capture (within its byte budget) and reach the host log,
    /// tagged with plugin, version and request id, when the call ends.
    fn log(&mut self, level: log::Level, message: String) {
        let source = match level {
            log::Level::Trace => "trace",
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        self.output.log(source, &message);
    }
}

impl config::Host for PluginState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::PluginIdent;
    use crate::runtime::output::GuestOutput;
    use crate::runtime::sandbox::{Limiter, Limits};
    use std::collections::HashMap;
    use std::sync::Arc;

    fn state(config: &[(&str, &str)], log_budget: usize) -> PluginState {
        PluginState {
            wasi: wasmtime_wasi::WasiCtx::builder().build(),
            table: wasmtime::component::ResourceTable::new(),
            limiter: Limiter::new(&Limits::default()),
            ident: Arc::new(PluginIdent {
                name: "p".into(),
                version: "sha256:0".into(),
            }),
            request_id: Arc::from("r"),
            config: Arc::new(
                config
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<HashMap<_, _>>(),
            ),
            output: GuestOutput::new(log_budget),
            fuel_granted: None,
        }
    }

    #[test]
    fn config_answers_only_what_the_operator_set() {
        let mut s = state(&[("open", "08:00")], 100);
        assert_eq!(
            config::Host::get(&mut s, "open".into()).as_deref(),
            Some("08:00")
        );
        assert_eq!(config::Host::get(&mut s, "OPEN".into()), None);
        assert_eq!(config::Host::get(&mut s, "secret".into()), None);
    }

    #[test]
    fn log_lines_are_captured_within_the_budget() {
        let mut s = state(&[], 12);
        log::Host::log(&mut s, log::Level::Warn, "careful".into());
        log::Host::log(&mut s, log::Level::Info, "this one is too long".into());
        let (lines, dropped) = s.output.take();
        assert_eq!(lines.len(), 1);
        assert_eq!(
            (lines[0].source, lines[0].text.as_str()),
            ("warn", "careful")
        );
        assert_eq!(dropped, 20);
    }
}
