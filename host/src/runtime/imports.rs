//! Host implementations of the WIT imports: logging and configuration (every plugin), and
//! the key-value store (when granted). They are plain Rust and are tested without Wasm; the
//! store's semantics live in [`crate::storage::kv`].

use super::state::PluginState;
use crate::contract::bindings::{config, kv, log, types};
use crate::storage::kv::KvError;

impl types::Host for PluginState {}

impl log::Host for PluginState {
    /// Lines go to the call's capture (within its byte budget) and reach the host log,
    /// tagged with plugin, version and request id, when the call ends.
    fn log(&mut self, level: log::Level, message: String) {
        self.host_calls.log += 1;
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
        self.host_calls.config += 1;
        let value = self.config.get(&key);
        if let Some(recorder) = &self.services.recorder {
            recorder.config(&key, value);
        }
        value.cloned()
    }

    fn get_all(&mut self) -> Vec<(String, String)> {
        self.host_calls.config += 1;
        let mut all: Vec<(String, String)> = self
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // In key order, so that a plugin sees the same list on every host.
        all.sort_unstable();
        if let Some(recorder) = &self.services.recorder {
            recorder.config_all(&all);
        }
        all
    }
}

impl From<KvError> for kv::KvError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::Denied(m) => kv::KvError::Denied(m),
            KvError::TooLarge(m) => kv::KvError::TooLarge(m),
            KvError::NotANumber(m) => kv::KvError::NotANumber(m),
            KvError::Unavailable(m) => kv::KvError::Unavailable(m),
        }
    }
}

impl PluginState {
    /// Runs `op` on the call's key-value session, in a `followup.kv` span when traces are
    /// on. A plugin that imports the store is only loaded when granted it, so a missing
    /// session means a search or a host without a store.
    fn kv<T>(
        &mut self,
        operation: &'static str,
        op: impl FnOnce(&mut crate::storage::kv::KvSession) -> Result<T, KvError>,
    ) -> Result<T, kv::KvError> {
        self.host_calls.kv += 1;
        // Keys and values are the plugin's data: the span names the operation only.
        let span = otel_span!(
            parent: &self.span,
            "followup.kv",
            db.system.name = "followup-kv",
            db.operation.name = operation,
            error.type = tracing::field::Empty,
        );
        let _in = span.enter();
        let session = self.services.kv.as_mut().ok_or_else(|| {
            kv::KvError::Denied("the key-value store is not available to this call".into())
        });
        let result = session.and_then(|kv| Ok(op(kv)?));
        if let Err(e) = &result {
            span.record("error.type", kv_error_type(e));
        }
        result
    }
}

/// The `error.type` of a failed key-value call: the WIT error's case.
fn kv_error_type(e: &kv::KvError) -> &'static str {
    match e {
        kv::KvError::Denied(_) => "denied",
        kv::KvError::TooLarge(_) => "too-large",
        kv::KvError::NotANumber(_) => "not-a-number",
        kv::KvError::Unavailable(_) => "unavailable",
    }
}

impl kv::Host for PluginState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, kv::KvError> {
        self.kv("get", |kv| kv.get(&key))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), kv::KvError> {
        self.kv("set", |kv| kv.set(&key, value))
    }

    fn delete(&mut self, key: String) -> Result<bool, kv::KvError> {
        self.kv("delete", |kv| kv.delete(&key))
    }

    fn list_keys(&mut self, prefix: String, limit: u32) -> Result<Vec<String>, kv::KvError> {
        self.kv("list-keys", |kv| kv.list(&prefix, limit))
    }

    fn increment(&mut self, key: String, delta: i64) -> Result<i64, kv::KvError> {
        self.kv("increment", |kv| kv.increment(&key, delta))
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, kv::KvError> {
        self.kv("compare-and-swap", |kv| {
            kv.compare_and_swap(&key, expected, new)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;
    use crate::contract::PluginIdent;
    use crate::runtime::output::GuestOutput;
    use crate::runtime::sandbox::Limiter;
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
            output: GuestOutput::new(log_budget, 1_000),
            fuel_granted: None,
            services: Default::default(),
            http: Default::default(),
            outbound: Default::default(),
            host_calls: Default::default(),
            runaway: None,
            past_grace: false,
            span: tracing::Span::none(),
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
        let mut two = state(&[("b", "2"), ("a", "1")], 100);
        assert_eq!(
            config::Host::get_all(&mut two),
            [("a".into(), "1".into()), ("b".into(), "2".into())]
        );
    }

    #[test]
    fn log_lines_are_captured_within_the_budget() {
        let mut s = state(&[], 12 + crate::runtime::sandbox::LOG_ENTRY_BYTES);
        log::Host::log(&mut s, log::Level::Warn, "careful".into());
        log::Host::log(&mut s, log::Level::Info, "this one is too long".into());
        let (lines, dropped) = s.output.take();
        assert_eq!(lines.len(), 1);
        assert_eq!(
            (lines[0].source, lines[0].text.as_str()),
            ("warn", "careful")
        );
        assert_eq!((dropped.bytes, dropped.entries), (20, 1));
    }
}
