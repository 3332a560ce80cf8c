//! What plugin authors run on their own machine: `followup plugin check` (what a component
//! exports, which WIT version it was built for, what it asks for, and whether this host
//! would load it) and `followup plugin run` (one request through exactly the production
//! path and limits, with a report of what it used).

use crate::config::{Config, HttpGrant, PluginManifest, RouteConfig, RuntimeConfig};
use crate::http::routes::RouteKind;
use crate::plugin::loader::{self, HOST_WIT_VERSION};
use crate::runtime::PluginRuntime;
use anyhow::{Context, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a component is and what it asks for, read without running it.
#[derive(Clone)]
pub struct Inspection {
    pub file: PathBuf,
    pub size: usize,
    pub version: String,
    pub wit_version: String,
    pub book: bool,
    pub search: bool,
    pub authenticate: bool,
    pub imports: Vec<String>,
    /// The component, so a verdict needs no second read.
    pub bytes: Arc<[u8]>,
    pub hash: String,
}

impl Inspection {
    fn wants_kv(&self) -> bool {
        self.imports
            .iter()
            .any(|i| i.starts_with("servicemobility:booking/kv@"))
    }

    fn wants_http(&self) -> bool {
        self.imports.iter().any(|i| i.starts_with("wasi:http/"))
    }
}

/// Reads, compiles and describes `file`; a component the host cannot even compile or that
/// is built for another WIT version is an error naming why.
pub fn inspect(runtime: &PluginRuntime, file: &Path) -> anyhow::Result<Inspection> {
    let bytes: Arc<[u8]> = std::fs::read(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .into();
    // A manifest granting everything: this only looks, the verdict is made below.
    let manifest = PluginManifest::new("inspected.wasm")
        .with_kv()
        .with_http(HttpGrant::default());
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin")
        .to_string();
    let plugin = loader::load_bytes(runtime, &name, &manifest, bytes.clone())?;
    let component = runtime.compile(&plugin.hash, &bytes)?;
    let mut imports: Vec<String> = component
        .component_type()
        .imports(runtime.engine())
        .map(|(name, _)| name.to_string())
        .collect();
    imports.sort();
    Ok(Inspection {
        file: file.to_path_buf(),
        size: bytes.len(),
        version: plugin.ident.version.clone(),
        wit_version: plugin.wit_version.clone(),
        book: plugin.book.is_some(),
        search: plugin.search.is_some(),
        authenticate: plugin.login.is_some(),
        imports,
        bytes,
        hash: plugin.hash.clone(),
    })
}

/// The manifest a component runs under: the config's `[plugins.NAME]` (its path replaced
/// by `file`) when given, else one that grants what the component asks for.
pub fn manifest_for(
    file: &Path,
    config: Option<&Config>,
    plugin: Option<&str>,
    inspection: &Inspection,
) -> anyhow::Result<(String, PluginManifest)> {
    if let Some(config) = config {
        let name = match plugin {
            Some(name) => name.to_string(),
            None if config.plugins.len() == 1 => {
                config.plugins.keys().next().cloned().unwrap_or_default()
            }
            None => bail!(
                "the config has {} plugins; say which with --plugin ({})",
                config.plugins.len(),
                config
                    .plugins
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut manifest = config
            .plugins
            .get(&name)
            .cloned()
            .with_context(|| format!("the config has no [plugins.{name}]"))?;
        manifest.path = file.to_path_buf();
        return Ok((name, manifest));
    }
    let name = plugin.map(String::from).unwrap_or_else(|| {
        file.file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("plugin")
            .replace('_', "-")
    });
    let mut manifest = PluginManifest::new(file);
    if inspection.wants_kv() {
        manifest = manifest.with_kv();
    }
    if inspection.wants_http() {
        manifest = manifest.with_http(HttpGrant::default());
    }
    Ok((name, manifest))
}

/// `followup plugin check`: the report, and whether the host would load the component.
pub fn check(
    file: &Path,
    config: Option<&Path>,
    plugin: Option<&str>,
) -> anyhow::Result<(String, bool)> {
    let config = config.map(Config::load).transpose()?;
    let runtime = PluginRuntime::new(&RuntimeConfig {
        max_instances: 8,
        ..RuntimeConfig::default()
    })?;
    let mut out = String::new();
    let inspection = match inspect(&runtime, file) {
        Ok(i) => i,
        Err(e) => {
            writeln!(out, "{}: refused: {e:#}", file.display())?;
            return Ok((out, false));
        }
    };
    let i = &inspection;
    writeln!(
        out,
        "component  {} ({} bytes, version {})",
        i.file.display(),
        i.size,
        i.version
    )?;
    writeln!(
        out,
        "wit        servicemobility:booking@{} (this host: @{HOST_WIT_VERSION}, compatible)",
        i.wit_version
    )?;
    writeln!(out, "exports")?;
    if i.book {
        writeln!(
            out,
            "  servicemobility:booking/followup (book): serves book-job routes"
        )?;
    }
    if i.search {
        writeln!(
            out,
            "  servicemobility:booking/appointments (search): serves appointment-search routes"
        )?;
    }
    if i.authenticate {
        writeln!(
            out,
            "  servicemobility:booking/authentication (authenticate): serves authentication routes"
        )?;
    }
    writeln!(out, "asks for")?;
    for import in &i.imports {
        let what = if import.starts_with("servicemobility:booking/kv@") {
            "the key-value store: needs kv = true"
        } else if import.starts_with("wasi:http/") {
            "outbound HTTP: needs [plugins.NAME.http] allow = [origins]"
        } else if import.starts_with("servicemobility:booking/") {
            "host service, always granted"
        } else if import.starts_with("wasi:") {
            "standard WASI, provided (no files, environment or sockets)"
        } else {
            "not provided by this host"
        };
        writeln!(out, "  {import:<44} {what}")?;
    }
    let (name, manifest) = manifest_for(file, config.as_ref(), plugin, i)?;
    let grants = |m: &PluginManifest| {
        let mut g = Vec::new();
        if m.kv {
            g.push("kv = true".to_string());
        }
        if let Some(http) = &m.http {
            g.push(format!("http allow {:?}", http.allow));
        }
        if g.is_empty() {
            "nothing".to_string()
        } else {
            g.join(", ")
        }
    };
    let verdict = loader::load_hashed(&runtime, &name, &manifest, i.bytes.clone(), i.hash.clone());
    let routes: Vec<&RouteConfig> = config
        .iter()
        .flat_map(|c| c.routes.iter().filter(|r| r.plugin == name))
        .collect();
    let mut ok = verdict.is_ok();
    match verdict {
        Ok(_) => writeln!(
            out,
            "verdict    loads as plugin {name} when granted {}",
            grants(&manifest)
        )?,
        Err(e) => writeln!(out, "verdict    refused: {e}")?,
    }
    for route in routes {
        let serves = match route.kind {
            RouteKind::BookJob => i.book,
            RouteKind::AppointmentSearch => i.search,
            RouteKind::Authentication => i.authenticate,
        };
        if !serves {
            ok = false;
            writeln!(
                out,
                "           cannot serve route {} ({:?}): the export is missing",
                route.path, route.kind
            )?;
        }
    }
    Ok((out, ok))
}
