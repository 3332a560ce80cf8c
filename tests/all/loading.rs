//! What the host refuses to load, and why it says so.

use crate::support::{runtime, shared_runtime_config, standard};
use followup_host::App;
use followup_host::config::{Config, HttpGrant, PluginManifest, RouteConfig};
use followup_host::plugin::loader::{self, LoadError};
use followup_tests::{component, guests};
use std::path::PathBuf;
use std::sync::Arc;

fn manifest() -> PluginManifest {
    PluginManifest::new("unused.wasm")
}

fn load(bytes: &[u8]) -> Result<(), LoadError> {
    loader::load_bytes(&runtime(), "candidate", &manifest(), Arc::from(bytes)).map(|_| ())
}

#[test]
fn every_guest_loads_and_reports_its_exports() {
    // Granted everything the examples use.
    let granted = PluginManifest::new("unused.wasm")
        .with_kv()
        .with_http(HttpGrant::allowing(["http://127.0.0.1:1"]));
    for path in guests::ALL {
        let bytes = std::fs::read(path).unwrap();
        let plugin = loader::load_bytes(&runtime(), "g", &granted, Arc::from(bytes)).unwrap();
        assert_eq!(plugin.wit_version, loader::HOST_WIT_VERSION);
        assert!(plugin.book.is_some(), "{path}");
        assert_eq!(
            plugin.search.is_some(),
            [guests::CAPACITY_BOOKER, guests::REST_FORWARDER].contains(path),
            "{path}"
        );
    }
}

#[test]
fn a_plugin_built_for_another_wit_major_is_refused_before_compiling() {
    let bytes = std::fs::read(guests::ECHO).unwrap();
    let patched = component::restamp(&bytes, loader::HOST_WIT_VERSION, "1.0.0");
    let err = load(&patched).unwrap_err();
    assert!(
        matches!(err, LoadError::IncompatibleWit(_, ref v) if v == "1.0.0"),
        "{err}"
    );
    assert!(err.to_string().contains("cannot serve"), "{err}");
}

#[test]
fn garbage_and_core_modules_are_not_components() {
    assert!(matches!(load(b"hello"), Err(LoadError::NotAComponent(..))));
    assert!(matches!(
        load(b"\0asm\x01\0\0\0"),
        Err(LoadError::NotAComponent(..))
    ));
}

#[test]
fn a_candidate_cannot_make_its_refusal_long_or_multi_line() {
    // Its own version stamp, over many lines and far longer than any reason may be.
    let bytes = std::fs::read(guests::ECHO).unwrap();
    let stamp = format!("9.0.0\n{}", "forged log line\n".repeat(100_000));
    let stamped = component::with_custom_section(&bytes, loader::VERSION_SECTION, stamp.as_bytes());
    // Bad magic: the bytes expected and found are written over several lines.
    let garbage = b"garbage, and then some more of it".repeat(100_000);
    for (case, bytes) in [("stamp", &stamped[..]), ("garbage", &garbage[..])] {
        let text = load(bytes).unwrap_err().to_string();
        assert!(!text.contains(['\n', '\r']), "{case}: {text}");
        assert!(
            text.len() <= loader::MAX_REASON_BYTES,
            "{case}: {}",
            text.len()
        );
        assert!(
            text.starts_with("plugin candidate@sha256:"),
            "{case}: {text}"
        );
    }
    let text = load(&stamped).unwrap_err().to_string();
    assert!(text.contains("9.0.0\\nforged log line\\n"), "{text}");
    assert!(text.ends_with('…'), "{text}");
}

#[test]
fn a_route_needs_a_plugin_that_exports_its_interface() {
    let mut config = standard(Config::default())
        .with_plugin("trap-search", PluginManifest::new(guests::TRAP))
        .with_route(RouteConfig::appointment_search("/search2", "trap-search"))
        .checked()
        .unwrap();
    config.runtime = shared_runtime_config();
    let err = App::with_runtime(&config, runtime()).unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("does not export servicemobility:booking/appointments"),
        "{message}"
    );
}

#[test]
fn a_missing_component_file_is_named() {
    let mut m = manifest();
    m.path = PathBuf::from("/nonexistent/plugin.wasm");
    let err = loader::load_file(&runtime(), "gone", &m).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/plugin.wasm"),
        "{err}"
    );
}

#[test]
fn a_plugin_calling_an_ungranted_host_is_refused_before_it_runs() {
    // The plugin is granted no outbound HTTP: a component that imports it does not load,
    // so it can never reach any host.
    let bytes = std::fs::read(guests::HTTP_CALLER).unwrap();
    let err = load(&bytes).unwrap_err();
    assert!(matches!(err, LoadError::NotGranted(..)), "{err}");
    let message = err.to_string();
    assert!(message.contains("imports wasi:http/"), "{message}");
    assert!(message.contains("[plugins.NAME.http] allow"), "{message}");
    assert!(message.contains("plugin candidate@sha256:"), "{message}");
}

#[test]
fn a_plugin_using_the_store_needs_the_grant() {
    let bytes = std::fs::read(guests::CAPACITY_BOOKER).unwrap();
    let err = load(&bytes).unwrap_err();
    assert!(matches!(err, LoadError::NotGranted(..)), "{err}");
    assert!(
        err.to_string().contains("servicemobility:booking/kv"),
        "{err}"
    );
    assert!(err.to_string().contains("kv = true"), "{err}");
}

#[test]
fn an_unset_secret_refuses_the_plugin_and_is_named() {
    let mut m = manifest();
    m.secrets.insert(
        "api_key".into(),
        "FOLLOWUP_TEST_SURELY_UNSET_VARIABLE".into(),
    );
    let err = loader::load_bytes(
        &runtime(),
        "p",
        &m,
        Arc::from(std::fs::read(guests::ECHO).unwrap()),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("FOLLOWUP_TEST_SURELY_UNSET_VARIABLE, which is unset"),
        "{err}"
    );
}
