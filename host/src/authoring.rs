//! What plugin authors run on their own machine: `followup plugin check` (what a component
//! exports, which WIT version it was built for, what it asks for, and whether this host
//! would load it) and `followup plugin run` (one request through exactly the production
//! path and limits, with a report of what it used).

use crate::app::App;
use crate::config::{Config, RouteConfig};
use crate::http::routes::RouteKind;
use crate::plugin::loader::{self, HOST_WIT_VERSION};
use crate::plugin::manifest::PluginManifest;
use crate::runtime::sandbox::RuntimeConfig;
use crate::runtime::{CallStats, PluginRuntime};
use anyhow::{Context, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What a component is and what it asks for, read without running it.
#[derive(Clone)]
pub struct Inspection {
    pub file: PathBuf,
    pub size: usize,
    pub version: String,
    pub wit_version: String,
    pub book: bool,
    pub search: bool,
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
    let manifest: PluginManifest =
        toml::from_str("path = \"inspected.wasm\"\nkv = true\n[http]\nallow = []\n")?;
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
        imports,
        bytes,
        hash: plugin.hash.clone(),
    })
}

/// The manifest a component runs under: the config's `[plugins.NAME]` (its path replaced
/// by `file`) when given, else one that grants what the component asks for.
fn manifest_for(
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
    let mut text = format!("path = {:?}\n", file.display().to_string());
    if inspection.wants_kv() {
        text.push_str("kv = true\n");
    }
    if inspection.wants_http() {
        text.push_str("[http]\nallow = []\n");
    }
    Ok((name, toml::from_str(&text)?))
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

/// What `followup plugin run` sends.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub book_job: Option<PathBuf>,
    pub search: Option<PathBuf>,
    pub work_order_id: String,
    pub config: Option<PathBuf>,
    pub plugin: Option<String>,
}

/// `followup plugin run`: the answers and the report; `true` when every request got 200.
pub async fn run(file: &Path, request: RunRequest) -> anyhow::Result<(String, bool)> {
    if request.book_job.is_none() && request.search.is_none() {
        bail!("give --book-job FILE.json and/or --search FILE.json");
    }
    let base = request.config.as_deref().map(Config::load).transpose()?;
    // One runtime for looking and running, so the component compiles once. Fuel is
    // metered (never limited beyond max_fuel) to report it.
    let mut rt = base
        .as_ref()
        .map_or_else(RuntimeConfig::default, |b| b.runtime);
    rt.fuel = true;
    rt.max_instances = rt.max_instances.min(8);
    // Compiled components are kept (the config's cache, else one in the temporary
    // directory), so running the same build again skips compiling.
    let cache = base.as_ref().map_or_else(
        || std::env::temp_dir().join("followup-run-cache"),
        |b| b.cache_dir.clone(),
    );
    let runtime = PluginRuntime::with_cache(&rt, cache)?;
    let inspection = {
        let (runtime, file) = (runtime.clone(), file.to_path_buf());
        tokio::task::spawn_blocking(move || inspect(&runtime, &file))
            .await
            .context("inspecting panicked")??
    };
    let (name, manifest) =
        manifest_for(file, base.as_ref(), request.plugin.as_deref(), &inspection)?;

    // The production path: the host's own App with the component as the only plugin, on
    // a temporary store.
    let scratch = std::env::temp_dir().join(format!("followup-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let mut text = format!(
        "[token]\nmode = \"off\"\n[watch]\nenabled = false\n\
         [plugins.{name:?}]\npath = \"replaced.wasm\"\n"
    );
    if inspection.book {
        text.push_str(&format!(
            "[[routes]]\nname = \"run\"\npath = \"/run/{{0}}\"\nkind = \"book-job\"\nplugin = {name:?}\n"
        ));
    }
    if inspection.search {
        text.push_str(&format!(
            "[[routes]]\nname = \"run-search\"\npath = \"/run-search\"\nkind = \"appointment-search\"\nplugin = {name:?}\n"
        ));
    }
    let mut config = Config::parse(&text, Path::new("."))?;
    config.plugins.insert(name.clone(), manifest.clone());
    config.runtime = rt;
    config.status_mode = base.as_ref().map_or(config.status_mode, |b| b.status_mode);
    config.store.path = scratch.join("followup.db");
    config.versions_dir = PathBuf::new();
    let app = tokio::task::spawn_blocking(move || App::with_runtime(&config, runtime))
        .await
        .context("loading panicked")??;
    let app = Arc::new(app);
    let stats: Arc<Mutex<Vec<CallStats>>> = Arc::default();
    let seen = stats.clone();
    app.runtime.observe(move |s| {
        seen.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(s.clone())
    });

    let mut out = String::new();
    let mut all_ok = true;
    let plugin = app.plugin(&name).context("the plugin did not load")?;
    let sends = [
        (
            &request.book_job,
            format!("/run/{}", request.work_order_id),
            "book",
        ),
        (&request.search, "/run-search".to_string(), "search"),
    ];
    for (source, path, what) in sends {
        let Some(source) = source else { continue };
        let body =
            std::fs::read(source).with_context(|| format!("cannot read {}", source.display()))?;
        if (what == "book" && !inspection.book) || (what == "search" && !inspection.search) {
            bail!("{} does not export {what}", file.display());
        }
        let http_request = http::Request::builder()
            .method("POST")
            .uri(&path)
            .header("content-type", "application/json")
            .header(crate::http::REQUEST_ID, format!("run-{what}"))
            .body(axum::body::Body::from(body))?;
        stats.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let response = crate::http::handle(axum::extract::State(app.clone()), http_request).await;
        let status = response.status().as_u16();
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        all_ok &= status == 200;
        writeln!(out, "{what} {path} → {status}")?;
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(json) => writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?,
            Err(_) => writeln!(out, "{}", String::from_utf8_lossy(&bytes))?,
        }
        let calls = stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match calls.last() {
            Some(s) => report(&mut out, s, bytes.len(), &plugin)?,
            None => writeln!(out, "(the plugin was not called)")?,
        }
        writeln!(out)?;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok((out, all_ok))
}

/// The report of one call: what it used against each limit, with a warning above 80 %.
fn report(
    out: &mut String,
    s: &CallStats,
    response_bytes: usize,
    plugin: &crate::plugin::LoadedPlugin,
) -> anyhow::Result<()> {
    let mut warnings = Vec::new();
    let mut line = |out: &mut String,
                    what: &str,
                    used: f64,
                    limit: Option<f64>,
                    shown: String|
     -> anyhow::Result<()> {
        match limit {
            Some(limit) if limit > 0.0 => {
                let share = 100.0 * used / limit;
                writeln!(out, "  {what:<13} {shown} ({share:.0} % of the limit)")?;
                if share > 80.0 {
                    warnings.push(format!("{what} at {share:.0} % of its limit"));
                }
            }
            _ => writeln!(out, "  {what:<13} {shown}")?,
        }
        Ok(())
    };
    let l = &s.limits;
    writeln!(out, "report for {} (request {}):", s.plugin, s.request_id)?;
    if let Some(failure) = &s.failure {
        writeln!(out, "  failed        {failure}")?;
    }
    line(
        out,
        "wall time",
        s.wall.as_secs_f64() * 1e3,
        Some(l.timeout_ms as f64),
        format!(
            "{:.2} ms of timeout_ms {}",
            s.wall.as_secs_f64() * 1e3,
            l.timeout_ms
        ),
    )?;
    let fuel = s.fuel_used.unwrap_or(0);
    line(
        out,
        "fuel used",
        fuel as f64,
        l.max_fuel.map(|f| f as f64),
        match l.max_fuel {
            Some(max) => format!("{fuel} of max_fuel {max}"),
            None => format!("{fuel} (no max_fuel)"),
        },
    )?;
    line(
        out,
        "peak memory",
        s.peak_memory_bytes as f64,
        Some(l.max_memory_bytes as f64),
        format!(
            "{:.1} MiB of max_memory_bytes {:.0} MiB",
            s.peak_memory_bytes as f64 / 1048576.0,
            l.max_memory_bytes as f64 / 1048576.0
        ),
    )?;
    let entry = crate::runtime::sandbox::LOG_ENTRY_BYTES;
    let log_cost = s.log_bytes + s.log_lines * entry;
    line(
        out,
        "log",
        log_cost as f64 + s.log_dropped_bytes as f64,
        Some(l.max_log_bytes as f64),
        format!(
            "{} bytes ({} with {entry} per entry; {} dropped) of max_log_bytes {}",
            s.log_bytes, log_cost, s.log_dropped_bytes, l.max_log_bytes
        ),
    )?;
    line(
        out,
        "log entries",
        (s.log_lines as u64 + s.log_dropped_entries) as f64,
        Some(l.max_log_entries as f64),
        format!(
            "{} ({} dropped) of max_log_entries {}",
            s.log_lines, s.log_dropped_entries, l.max_log_entries
        ),
    )?;
    line(
        out,
        "resources",
        s.host_resources as f64,
        Some(l.max_host_resources as f64),
        format!(
            "{} host resources held at the end of max_host_resources {}",
            s.host_resources, l.max_host_resources
        ),
    )?;
    if plugin.kv {
        let max = crate::store::kv::MAX_READ_BYTES;
        line(
            out,
            "kv read",
            s.kv_read_bytes as f64,
            Some(max as f64),
            format!("{} bytes held of {max} per call", s.kv_read_bytes),
        )?;
        let max = crate::store::kv::MAX_WRITTEN_BYTES;
        line(
            out,
            "kv written",
            s.kv_written_bytes as f64,
            Some(max as f64),
            format!("{} bytes of {max} per call", s.kv_written_bytes),
        )?;
    }
    if plugin.http.is_some() {
        let max = crate::runtime::sandbox::HTTP_BODY_BUFFER_BYTES;
        line(
            out,
            "http buffers",
            s.http_body_buffer_bytes as f64,
            Some(max as f64),
            format!(
                "{} bytes of outgoing body buffers of {max} per call",
                s.http_body_buffer_bytes
            ),
        )?;
    }
    line(
        out,
        "response",
        response_bytes as f64,
        Some(l.max_response_bytes as f64),
        format!(
            "{response_bytes} bytes of max_response_bytes {} (lifted from the plugin: at \
             most {} bytes)",
            l.max_response_bytes,
            l.lift_budget()
        ),
    )?;
    let h = s.host_calls;
    line(
        out,
        "host calls",
        f64::from(h.http),
        plugin.http.as_ref().map(|g| f64::from(g.max_calls)),
        format!(
            "log {}, config {}, kv {}, http {}",
            h.log, h.config, h.kv, h.http
        ),
    )?;
    for w in warnings {
        writeln!(out, "warning: {w}")?;
    }
    Ok(())
}
