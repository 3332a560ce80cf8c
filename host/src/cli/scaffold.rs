//! `followup plugin new`: a working plugin project from a template, per language. Each
//! template builds, has a test and a README, and runs with `followup plugin run` as
//! generated.

use crate::config::{Limits, PluginManifest};
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The languages a plugin can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Js,
    Python,
}

/// One file of a template: its path in the project and its text with `{{…}}` holes.
type Template = (&'static str, &'static str);

const RUST: &[Template] = &[
    (
        "Cargo.toml",
        include_str!("../../templates/rust/Cargo.toml.tmpl"),
    ),
    (
        "src/lib.rs",
        include_str!("../../templates/rust/src/lib.rs.tmpl"),
    ),
    (
        "samples/book-job.json",
        include_str!("../../templates/rust/samples/book-job.json.tmpl"),
    ),
    (
        "README.md",
        include_str!("../../templates/rust/README.md.tmpl"),
    ),
];

/// The sample every template ships, and the WIT package for the languages that bind to it
/// at build time.
const SAMPLE: Template = (
    "samples/book-job.json",
    include_str!("../../templates/rust/samples/book-job.json.tmpl"),
);
const WIT: Template = ("wit/booking.wit", include_str!("../../../wit/booking.wit"));

const PYTHON: &[Template] = &[
    (
        "rules.py",
        include_str!("../../templates/python/rules.py.tmpl"),
    ),
    ("app.py", include_str!("../../templates/python/app.py.tmpl")),
    (
        "test_rules.py",
        include_str!("../../templates/python/test_rules.py.tmpl"),
    ),
    (
        "requirements.txt",
        include_str!("../../templates/python/requirements.txt.tmpl"),
    ),
    (
        "build.sh",
        include_str!("../../templates/python/build.sh.tmpl"),
    ),
    (
        "README.md",
        include_str!("../../templates/python/README.md.tmpl"),
    ),
    SAMPLE,
    WIT,
];

const JS: &[Template] = &[
    (
        "package.json",
        include_str!("../../templates/js/package.json.tmpl"),
    ),
    (
        "build.mjs",
        include_str!("../../templates/js/build.mjs.tmpl"),
    ),
    (
        "src/rules.js",
        include_str!("../../templates/js/src/rules.js.tmpl"),
    ),
    (
        "src/app.js",
        include_str!("../../templates/js/src/app.js.tmpl"),
    ),
    (
        "test/rules.test.mjs",
        include_str!("../../templates/js/test/rules.test.mjs.tmpl"),
    ),
    (
        "README.md",
        include_str!("../../templates/js/README.md.tmpl"),
    ),
    SAMPLE,
    WIT,
];

/// The SDK beside this binary's sources, for Rust projects made on a developer machine.
fn default_sdk() -> Option<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../guest-sdk")
        .canonicalize()
        .ok()
}

/// Where a new project's component will be, relative to the project.
pub fn component_path(name: &str, lang: Lang) -> String {
    match lang {
        Lang::Rust => format!(
            "target/wasm32-wasip2/release/{}.wasm",
            name.replace('-', "_")
        ),
        Lang::Js | Lang::Python => format!("{name}.wasm"),
    }
}

/// The project's `host.toml`: the `[plugins.NAME]` table `followup plugin run` reads and an
/// operator copies into the host's config, with every limit written out as production
/// enforces it.
pub fn host_toml(name: &str, lang: Lang, wasm: &str) -> anyhow::Result<String> {
    let mut text = String::from(
        "# How the followup host runs this plugin: `followup plugin run` reads it (and an operator\n\
         # copies the [plugins] table into the host's config).\n",
    );
    let mut manifest = PluginManifest::new(wasm);
    if lang != Lang::Rust {
        text.push_str(
            "# The interpreter inside the component needs more time and memory than compiled\n\
             # rules. It is built for the world booker-no-kv, so it needs no grant; rules that\n\
             # keep state build for booker and add kv = true here.\n",
        );
        manifest = manifest.with_limits(Limits {
            timeout_ms: 2000,
            max_memory_bytes: 128 << 20,
            ..Limits::default()
        });
    }
    let manifest = manifest
        .with_value("order_prefix", "FU-")
        .with_value("min_slot_minutes", "60");
    let plugins = BTreeMap::from([("plugins", BTreeMap::from([(name, manifest)]))]);
    text.push_str(&toml::to_string(&plugins).context("host.toml")?);
    Ok(text)
}

/// Writes a new project `name` in `lang` under `parent`; its directory.
pub fn new_plugin(
    name: &str,
    lang: Lang,
    parent: &Path,
    sdk: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!(
            "{name:?}: a plugin name is lower-case letters, digits and '-', starting with a letter"
        );
    }
    let dir = parent.join(name);
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    let wasm = component_path(name, lang);
    let (files, sdk) = match lang {
        Lang::Rust => {
            let sdk = sdk.map(Path::to_path_buf).or_else(default_sdk).context(
                "cannot find followup-sdk; pass --sdk PATH (the guest-sdk directory of the followup repository)",
            )?;
            (RUST, sdk.display().to_string())
        }
        Lang::Python => (PYTHON, String::new()),
        Lang::Js => (JS, String::new()),
    };
    let host = host_toml(name, lang, &wasm)?;
    for (path, text) in files.iter().copied().chain([("host.toml", host.as_str())]) {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let text = text
            .replace("{{name}}", name)
            .replace("{{wasm}}", &wasm)
            .replace("{{sdk}}", &sdk);
        std::fs::write(&target, text)
            .with_context(|| format!("cannot write {}", target.display()))?;
        if path.ends_with(".sh") {
            make_executable(&target)?;
        }
    }
    Ok(dir)
}

#[cfg(unix)]
fn make_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_holes_filled() {
        let parent = std::env::temp_dir().join(format!("followup-scaffold-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&parent);
        assert!(new_plugin("Bad_Name", Lang::Rust, &parent, None).is_err());
        let dir = new_plugin("acme-rules", Lang::Rust, &parent, Some(Path::new("/sdk"))).unwrap();
        let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("name = \"acme-rules\""));
        assert!(cargo.contains("path = \"/sdk\""));
        let host = std::fs::read_to_string(dir.join("host.toml")).unwrap();
        assert!(host.contains("target/wasm32-wasip2/release/acme_rules.wasm"));
        // What `plugin run` reads: a config with the one plugin and its values.
        let config = crate::config::Config::parse(&host, &dir).unwrap();
        let manifest = &config.plugins["acme-rules"];
        assert_eq!(
            manifest.path,
            dir.join("target/wasm32-wasip2/release/acme_rules.wasm")
        );
        assert_eq!(manifest.config["order_prefix"], "FU-");
        let py = new_plugin("acme-py", Lang::Python, &parent, None).unwrap();
        let host = std::fs::read_to_string(py.join("host.toml")).unwrap();
        let config = crate::config::Config::parse(&host, &py).unwrap();
        assert!(!config.plugins["acme-py"].kv, "no grant: {host}");
        assert_eq!(config.plugins["acme-py"].limits.timeout_ms, 2000);
        assert!(
            !std::fs::read_to_string(dir.join("src/lib.rs"))
                .unwrap()
                .contains("{{")
        );
        assert!(
            new_plugin("acme-rules", Lang::Rust, &parent, None).is_err(),
            "not over a project"
        );
        let _ = std::fs::remove_dir_all(&parent);
    }
}
