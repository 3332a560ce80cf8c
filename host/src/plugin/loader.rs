//! Bytes → checked component → `InstancePre`.
//!
//! Strategy, cheapest check first so a bad upload costs little and says exactly why:
//! 1. the bytes are a component, and the WIT version it was built for (the SDK's stamp,
//!    else the version in its export names) is compatible with this host's;
//! 2. it compiles;
//! 3. it imports nothing but WASI and this host's services;
//! 4. it pre-instantiates against the linker (every import satisfied);
//! 5. it exports `followup` and/or `appointments`.

use super::{LoadedPlugin, PluginIdent};
use crate::config::PluginManifest;
use crate::contract::bindings::exported;
use crate::runtime::PluginRuntime;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The version of the `servicemobility:booking` WIT package this host implements.
pub const HOST_WIT_VERSION: &str = crate::contract::bindings::WIT_VERSION;

/// The custom section in which the guest SDK stamps the WIT version.
pub const VERSION_SECTION: &str = "servicemobility:booking-api-version";

const PACKAGE: &str = "servicemobility:booking/";
const KV: &str = "servicemobility:booking/kv@";

/// Longest text of a refusal, in bytes. A reason goes to the log and back to whoever
/// asked; parts of it come from the candidate itself (its first bytes, its names, a
/// compiler's error chain), so without a bound a candidate could make it as long as it
/// likes.
pub const MAX_REASON_BYTES: usize = 1024;

/// Why a component was refused. Its text is one line of at most [`MAX_REASON_BYTES`]
/// bytes (see [`crate::text::one_line`]), whatever the candidate holds: line-based log readers see one
/// record per refusal.
#[derive(Debug)]
pub enum LoadError {
    Read {
        name: String,
        path: String,
        source: std::io::Error,
    },
    NotAComponent(PluginIdent, String),
    IncompatibleWit(PluginIdent, String),
    NoExports(PluginIdent),
    Compile(PluginIdent, String),
    ForbiddenImport(PluginIdent, String),
    Secret(String),
    NotGranted(PluginIdent, String, &'static str),
    Link(PluginIdent, String),
}

impl LoadError {
    /// The reason as written, before it is made one bounded line.
    fn text(&self) -> String {
        match self {
            LoadError::Read { name, path, source } => {
                format!("plugin {name}: cannot read {path}: {source}")
            }
            LoadError::NotAComponent(ident, why) => {
                format!("plugin {ident}: not a WebAssembly component ({why})")
            }
            LoadError::IncompatibleWit(ident, version) => format!(
                "plugin {ident}: built for WIT servicemobility:booking@{version}, which this \
                 host (@{HOST_WIT_VERSION}) cannot serve; rebuild it with a compatible \
                 followup-sdk"
            ),
            LoadError::NoExports(ident) => format!(
                "plugin {ident}: exports none of servicemobility:booking/followup, \
                 servicemobility:booking/appointments and servicemobility:booking/authentication"
            ),
            LoadError::Compile(ident, why) => format!("plugin {ident}: does not compile: {why}"),
            LoadError::ForbiddenImport(ident, import) => {
                format!("plugin {ident}: imports {import}, which this host does not provide")
            }
            LoadError::Secret(why) => why.clone(),
            LoadError::NotGranted(ident, import, how) => {
                format!("plugin {ident}: imports {import}, which it is not granted ({how})")
            }
            LoadError::Link(ident, why) => {
                format!("plugin {ident}: cannot be instantiated: {why}")
            }
        }
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::text::one_line(&self.text(), MAX_REASON_BYTES))
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
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
        version: PluginIdent::version_of(&hash),
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
    let find = |(interface, function)| crate::runtime::Export::find(&pre, interface, function);
    let book = find(exported::BOOK);
    let search = find(exported::SEARCH);
    let login = find(exported::AUTHENTICATE);
    if book.is_none() && search.is_none() && login.is_none() {
        return Err(LoadError::NoExports(ident));
    }
    Ok(LoadedPlugin {
        prepared: crate::runtime::Prepared {
            ident: Arc::new(ident),
            pre,
            book,
            search,
            login,
            limits: manifest.limits,
            config: Arc::new(manifest.values(name).map_err(LoadError::Secret)?),
            kv: manifest.kv,
            http: manifest.http.clone().map(Arc::new),
            slots: tokio::sync::Semaphore::new(manifest.limits.max_concurrency as usize),
            reuse_instances: manifest.reuse_instances.max(1),
            warm: Default::default(),
            conduct: Default::default(),
            record: manifest
                .recording()
                .map_err(|e| LoadError::Secret(format!("plugin {name}: {e}")))?
                .map(Arc::new),
        },
        wit_version,
        hash,
        bytes,
        #[cfg(feature = "native-baseline")]
        native: None,
    })
}

/// The SHA-256 of a component, in hex. A plugin's version is `sha256:` and its first 12
/// digits: it changes with every rebuild that changes the code, and is the same on every
/// host.
pub fn content_hash(bytes: &[u8]) -> String {
    crate::text::hex(&Sha256::digest(bytes))
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

    #[test]
    fn a_reason_is_one_visible_line() {
        assert_eq!(
            crate::text::one_line("short and plain", 64),
            "short and plain"
        );
        assert_eq!(
            crate::text::one_line("expected=[\n    0x0,\r\n]\t\u{1b}[31m\u{2028}", 64),
            "expected=[\\n    0x0,\\r\\n]\\t\\u{1b}[31m\\u{2028}"
        );
    }

    #[test]
    fn a_long_reason_is_cut_whole_and_marked() {
        let cut = crate::text::one_line(&"é".repeat(100), 11);
        assert_eq!(cut, "éééé…");
        // An escape is kept whole or not at all.
        let cut = crate::text::one_line(&"ab\n".repeat(10), 10);
        assert_eq!(cut, "ab\\nab…");
        assert!(cut.len() <= 10);
        // Exactly at the bound: nothing is cut.
        assert_eq!(crate::text::one_line("0123456789", 10), "0123456789");
    }

    #[test]
    fn every_refusal_is_one_line_within_the_bound() {
        let ident = PluginIdent {
            name: "p".into(),
            version: "sha256:0123456789ab".into(),
        };
        let chain = "error one\n\nCaused by:\n    0: ".repeat(1000);
        for err in [
            LoadError::NotAComponent(ident.clone(), chain.clone()),
            LoadError::Compile(ident.clone(), chain.clone()),
            LoadError::IncompatibleWit(ident.clone(), chain.clone()),
            LoadError::Link(ident, chain.clone()),
            LoadError::Secret(chain),
        ] {
            let text = err.to_string();
            assert!(!text.contains('\n'), "{text}");
            assert!(text.len() <= MAX_REASON_BYTES, "{}", text.len());
            assert!(text.ends_with('…'), "{text}");
        }
        // Bad magic: wasmparser writes the bytes it found over several lines.
        let ident = PluginIdent {
            name: "p".into(),
            version: "sha256:0123456789ab".into(),
        };
        let refused = LoadError::NotAComponent(ident, scan(b"garbage!").unwrap_err());
        assert!(!refused.to_string().contains('\n'), "{refused}");
        assert!(refused.to_string().contains("\\n"), "{refused}");
    }
}
