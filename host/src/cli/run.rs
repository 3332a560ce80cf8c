//! `followup plugin run`: one request through a component under the production limits,
//! in a throwaway host, with a report of what the call used against every budget.

use crate::app::App;
use crate::config::{Config, RouteConfig, RuntimeConfig, TokenConfig};
use crate::runtime::{CallStats, PluginRuntime};
use anyhow::{Context, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::check::{inspect, manifest_for};

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
    let mut config = Config::default()
        .with_token(TokenConfig::off())
        .with_plugin(name.clone(), manifest.clone());
    if inspection.book {
        config = config.with_route(RouteConfig::book_job("/run/{0}", name.clone()).named("run"));
    }
    if inspection.search {
        config = config.with_route(
            RouteConfig::appointment_search("/run-search", name.clone()).named("run-search"),
        );
    }
    config.watch.enabled = false;
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
        let max = crate::storage::kv::MAX_READ_BYTES;
        line(
            out,
            "kv read",
            s.kv_read_bytes as f64,
            Some(max as f64),
            format!("{} bytes held of {max} per call", s.kv_read_bytes),
        )?;
        let max = crate::storage::kv::MAX_WRITTEN_BYTES;
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
