//! Bytes → checked component → `InstancePre`.
//!
//! Strategy, cheapest check first so a bad upload costs little and says exactly why:
//! 1. the bytes are a component, and the WIT version it was built for (the SDK's stamp,
//!    else the version in its export names) is compatible with this host's;
//! 2. it compiles;
//! 3. it imports nothing but WASI and this host's services;
//! 4. it pre-instantiates against the linker (every import satisfied);
//! 5. it exports `followup` and/or `appointments`.

use super::manifest::PluginManifest;
use super::{LoadedPlugin, PluginIdent};
use crate::runtime::PluginRuntime;
use crate::runtime::bindings::{appointments, followup};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The version of the `servicemobility:booking` WIT package this host implements.
pub const HOST_WIT_VERSION: &str = "0.1.0";

/// The custom section in which the guest SDK stamps the WIT version.
pub const VERSION_SECTION: &str = "servicemobility:booking-api-version";

const PACKAGE: &str = "servicemobility:booking/";
const KV: &str = "servicemobility:booking/kv@";

/// Why a component was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin {name}: cannot read {path}: {source}")]
    Read {
        name: String,
        path: String,
        source: std::io::Error,
    },
    #[error("plugin {0}: not a WebAssembly component ({1})")]
    NotAComponent(PluginIdent, String),
    #[error(
        "plugin {0}: built for WIT servicemobility:booking@{1}, which this host (@{HOST_WIT_VERSION}) cannot serve; rebuild it with a compatible followup-sdk"
    )]
    IncompatibleWit(PluginIdent, String),
    #[error(
        "plugin {0}: exports neither servicemobility:booking/followup nor servicemobility:booking/appointments"
    )]
    NoExports(PluginIdent),
    #[error("plugin {0}: does not compile: {1}")]
    Compile(PluginIdent, String),
    #[error("plugin {0}: imports {1}, which this host does not provide")]
    ForbiddenImport(PluginIdent, String),
    #[error("{0}")]
    Secret(String),
    #[error("plugin {0}: imports {1}, which it is not granted ({2})")]
    NotGranted(PluginIdent, String, &'static str),
    #[error("plugin {0}: cannot be instantiated: {1}")]
    Link(PluginIdent, String),
}

/// Reads, checks, compiles and pre-instantiates the plugin a manifest names.
pub fn load_file(
    runtime: &PluginRuntime,
    name: &str,
    manifest: &PluginManifest,
) -> Result<LoadedPlugin, LoadError> {
    let bytes = std::fs::read(&manifest.path).map_err(|source| LoadError::Read {
        name: name.to_string(),
        path: manifest.path.display().to_string(),
        source,
    })?;
    load_bytes(runtime, name, manifest, Arc::from(bytes))
}

/// Checks, compiles and pre-instantiates a component.
pub fn load_bytes(
    runtime: &PluginRuntime,
    name: &str,
    manifest: &PluginManifest,
    bytes: Arc<[u8]>,
) -> Result<LoadedPlugin, LoadError> {
    let hash = content_hash(&bytes);
    load_hashed(runtime, name, manifest, bytes, hash)
}

/// [`load_bytes`] for a caller that already has the component's [`content_hash`].
pub fn load_hashed(
    runtime: &PluginRuntime,
    name: &str,
    manifest: &PluginManifest,
    bytes: Arc<[u8]>,
    hash: String,
) -> Result<LoadedPlugin, LoadError> {
    let ident = PluginIdent {
        name: name.to_string(),
        version: format!("sha256:{}", &hash[..12]),
    };
    let scan = scan(&bytes).map_err(|e| LoadError::NotAComponent(ident.clone(), e))?;
    let wit_version = scan
        .stamped_version
        .or(scan.export_version)
        .ok_or_else(|| LoadError::NoExports(ident.clone()))?;
    if !compatible(&wit_version, HOST_WIT_VERSION) {
        return Err(LoadError::IncompatibleWit(ident, wit_version));
    }

    let engine = runtime.engine();
    let component = runtime
        .compile(&hash, &bytes)
        .map_err(|e| LoadError::Compile(ident.clone(), format!("{e:#}")))?;
    for (import, _) in component.component_type().imports(engine) {
        if !(import.starts_with("wasi:") || import.starts_with(PACKAGE)) {
            return Err(LoadError::ForbiddenImport(ident, import.to_string()));
        }
        if import.starts_with(KV) && !manifest.kv {
            return Err(LoadError::NotGranted(
                ident,
                import.to_string(),
                "set kv = true under its [plugins.NAME]",
            ));
        }
        if import.starts_with("wasi:http/") && manifest.http.is_none() {
            return Err(LoadError::NotGranted(
                ident,
                import.to_string(),
                "list the origins it may call under [plugins.NAME.http] allow",
            ));
        }
    }
    let pre = runtime
        .linker()
        .instantiate_pre(&component)
        .map_err(|e| LoadError::Link(ident.clone(), format!("{e:#}")))?;
    let book = followup::GuestIndices::new(&pre).ok();
    let search = appointments::GuestIndices::new(&pre).ok();
    if book.is_none() && search.is_none() {
        return Err(LoadError::NoExports(ident));
    }
    Ok(LoadedPlugin {
        ident: Arc::new(ident),
        wit_version,
        pre,
        book,
        search,
        limits: manifest.limits,
        config: Arc::new(manifest.values(name).map_err(LoadError::Secret)?),
        kv: manifest.kv,
        http: manifest.http.clone().map(Arc::new),
        slots: tokio::sync::Semaphore::new(manifest.limits.max_concurrency as usize),
        hash,
        bytes,
        native: None,
        reuse_instances: manifest.reuse_instances.max(1),
        warm: Default::default(),
    })
}

/// The SHA-256 of a component, in hex. A plugin's version is `sha256:` and its first 12
/// digits: it changes with every rebuild that changes the code, and is the same on every
/// host.
pub fn content_hash(bytes: &[u8]) -> String {
    crate::http::hex(&Sha256::digest(bytes))
}

#[derive(Debug, Default)]
struct Scan {
    stamped_version: Option<String>,
    export_version: Option<String>,
}

/// Reads the version stamp and the versions in the component's export names without
/// compiling anything.
fn scan(bytes: &[u8]) -> Result<Scan, String> {
    use wasmparser::{Encoding, Parser, Payload};
    let mut out = Scan::default();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| e.to_string())?;
        match payload {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding != Encoding::Component {
                    return Err("a core module; build it as a component (wasm32-wasip2)".into());
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::CustomSection(section) if section.name() == VERSION_SECTION => {
                let text = std::str::from_utf8(section.data())
                    .map_err(|_| format!("{VERSION_SECTION} is not UTF-8"))?;
                out.stamped_version = Some(text.trim().to_string());
            }
            Payload::ComponentExportSection(exports) if depth == 1 => {
                for export in exports {
                    let export = export.map_err(|e| e.to_string())?;
                    if let Some(rest) = export.name.name.strip_prefix(PACKAGE)
                        && let Some((_, version)) = rest.split_once('@')
                    {
                        out.export_version = Some(version.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Semver compatibility of a plugin's WIT version with the host's: same major version,
/// and for 0.x the same minor; the plugin's minor may not be newer than the host's.
pub fn compatible(plugin: &str, host: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64)> {
        let mut parts = v.split(['.', '-', '+']);
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    };
    match (parse(plugin), parse(host)) {
        (Some((0, pm)), Some((0, hm))) => pm == hm,
        (Some((pmaj, pm)), Some((hmaj, hm))) => pmaj == hmaj && pm <= hm,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_version_matches_the_wit_package() {
        let wit = include_str!("../../../wit/booking.wit");
        assert!(wit.contains(&format!(
            "package servicemobility:booking@{HOST_WIT_VERSION};"
        )));
    }

    #[test]
    fn compatibility_follows_semver() {
        assert!(compatible("0.1.0", "0.1.3"));
        assert!(compatible("0.1.9", "0.1.0"));
        assert!(!compatible("0.2.0", "0.1.0"));
        assert!(!compatible("1.0.0", "0.1.0"));
        assert!(compatible("1.2.0", "1.3.0"));
        assert!(!compatible("1.4.0", "1.3.0"));
        assert!(!compatible("2.0.0", "1.3.0"));
        assert!(!compatible("garbage", "0.1.0"));
    }

    #[test]
    fn a_core_module_is_not_a_component() {
        // The smallest core module: magic and version 1.
        let core = b"\0asm\x01\0\0\0";
        assert!(scan(core).unwrap_err().contains("core module"));
        assert!(scan(b"not wasm at all").is_err());
    }
}
