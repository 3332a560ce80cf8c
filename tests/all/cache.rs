//! The precompiled cache on disk: a restart loads instead of compiling, and a damaged
//! entry is recompiled, never trusted.

use followup_host::config::PluginManifest;
use followup_host::config::RuntimeConfig;
use followup_host::plugin::loader;
use followup_host::runtime::PluginRuntime;
use followup_tests::guests;
use std::path::Path;

fn start(dir: &Path) -> std::sync::Arc<PluginRuntime> {
    let rt = RuntimeConfig {
        max_instances: 4,
        ..RuntimeConfig::default()
    };
    PluginRuntime::with_cache(&rt, dir.to_path_buf()).unwrap()
}

fn load(runtime: &PluginRuntime) {
    let manifest = PluginManifest::new(guests::CAPACITY_BOOKER).with_kv();
    loader::load_file(runtime, "capacity-booker", &manifest).unwrap();
}

#[test]
fn a_restart_loads_from_the_cache_and_a_damaged_entry_is_recompiled() {
    let dir = std::env::temp_dir().join(format!("followup-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    let first = start(&dir);
    load(&first);
    assert_eq!(first.compile_stats(), (1, 0));
    let artefacts: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(artefacts.len(), 1, "{artefacts:?}");

    // A restart: no compile.
    let second = start(&dir);
    load(&second);
    assert_eq!(second.compile_stats(), (0, 1));

    // A damaged artefact fails its checksum and is compiled again.
    let mut bytes = std::fs::read(&artefacts[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&artefacts[0], &bytes).unwrap();
    let third = start(&dir);
    load(&third);
    assert_eq!(third.compile_stats(), (1, 0));

    // ... and the rewritten entry serves the next restart.
    let fourth = start(&dir);
    load(&fourth);
    assert_eq!(fourth.compile_stats(), (0, 1));
    let _ = std::fs::remove_dir_all(&dir);
}
