//! The admin API, on its own listener (loopback by default): list plugins and the versions
//! serving them, deploy a new version (serving, in shadow or as a canary), promote or abort
//! a candidate, roll back, replay recorded bookings through a candidate, health and
//! readiness, metrics.
//!
//! Every endpoint but `/healthz`, `/readyz` and `/openapi.json` needs
//! `Authorization: Bearer <token>`, the token coming from the environment
//! (`[admin] token_env`), compared in constant time. `/openapi.json` describes only what
//! the public listener already answers to anyone who asks (the routes, their schemas and
//! statuses), so it is open like the health checks: a client generator or a test harness
//! needs no admin token.

pub use crate::config::AdminConfig;
use crate::contract::PluginIdent;
use crate::metrics::escape;
use crate::plugin::history::Trigger;
use crate::plugin::loader::MAX_REASON_BYTES;
use crate::promote::Mode;
use crate::text::one_line;
use crate::{App, DeployError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::sync::Arc;

/// Largest component the admin API accepts. Components are a few hundred KB to a few MB.
const MAX_UPLOAD_BYTES: usize = 64 << 20;

struct Admin {
    app: Arc<App>,
    token: Arc<str>,
}

/// The admin router for `app`, guarded by `token`.
pub fn router(app: Arc<App>, token: Arc<str>) -> Router {
    let state = Arc::new(Admin { app, token });
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/plugins", get(list))
        .route("/plugins/{name}", post(deploy))
        .route("/plugins/{name}/rollback/{version}", post(rollback))
        .route("/plugins/{name}/replay", post(replay))
        .route("/plugins/{name}/promote", post(promote))
        .route("/plugins/{name}/abort", post(abort))
        .route("/plugins/{name}/shadow", get(shadow))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
        .with_state(state)
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn refused(status: StatusCode, kind: &str, detail: String) -> Response {
    answer(
        status,
        json!({ "type": kind, "title": kind, "status": status.as_u16(), "detail": detail }),
    )
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timing.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// The refusal for a request without the right token, if it lacks it.
fn unauthorised(admin: &Admin, headers: &HeaderMap) -> Option<Response> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if same(given.as_bytes(), admin.token.as_bytes()) && !given.is_empty() {
        None
    } else {
        Some(refused(
            StatusCode::UNAUTHORIZED,
            "invalid-logon",
            "the admin API needs Authorization: Bearer <token>".into(),
        ))
    }
}

/// The OpenAPI description of the routes this host serves, in its status mode.
async fn openapi(State(admin): State<Arc<Admin>>) -> Response {
    answer(StatusCode::OK, crate::openapi::of_app(&admin.app))
}

/// Ready while every route has a plugin and the store answers (a database that is
/// unreachable makes every booking answer `store-unavailable`, so a load balancer should
/// send them elsewhere). A plugin serving a kept version because its configured file was
/// refused at start still serves, so it does not make the host unready; it is listed under
/// `degraded` for whoever watches readiness.
async fn readyz(State(admin): State<Arc<Admin>>) -> Response {
    let storage = admin.app.storage.clone();
    let store = if storage.waits_on_io() {
        tokio::task::spawn_blocking(move || storage.ping())
            .await
            .unwrap_or_else(|e| Err(crate::storage::StorageError(e.to_string())))
    } else {
        storage.ping()
    };
    let missing: Vec<&str> = admin
        .app
        .routes
        .routes()
        .iter()
        .filter(|r| admin.app.plugin(&r.plugin).is_none())
        .map(|r| r.name.as_str())
        .collect();
    let degraded: Vec<_> = admin
        .app
        .degraded()
        .iter()
        .map(|d| {
            json!({
                "plugin": d.plugin,
                "version": d.version,
                "refused_file": d.file.display().to_string(),
                "reason": d.reason,
            })
        })
        .collect();
    match store {
        Ok(()) if missing.is_empty() => answer(
            StatusCode::OK,
            json!({ "ready": true, "degraded": degraded }),
        ),
        Ok(()) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "ready": false, "routes_without_plugin": missing, "degraded": degraded }),
        ),
        Err(e) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "ready": false, "store": e.to_string(), "routes_without_plugin": missing, "degraded": degraded }),
        ),
    }
}

async fn list(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorised(&admin, &headers) {
        return r;
    }
    let degraded = admin.app.degraded();
    // With a shared store: the live hosts and what each serves.
    let hosts = match admin.app.live_hosts().await {
        None => None,
        Some(Ok(hosts)) => Some(hosts),
        Some(Err(e)) => {
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                e.to_string(),
            );
        }
    };
    let rollbacks = admin.app.candidates.rollbacks();
    let plugins: Vec<_> = admin
        .app
        .plugins
        .versions()
        .into_iter()
        .filter_map(|ident| admin.app.plugin(&ident.name))
        .map(|p| {
            let kept: Vec<_> = admin
                .app
                .history
                .kept(&p.ident.name)
                .into_iter()
                .filter(|s| s.hash != p.hash)
                .map(|s| json!({ "version": PluginIdent::version_of(&s.hash), "served_by": s.how.label(), "at": s.at }))
                .collect();
            // Set while the version serving is a fallback for a configured file refused at
            // start; null otherwise.
            let fallback = degraded.iter().find(|d| d.plugin == p.ident.name).map(|d| {
                json!({ "refused_file": d.file.display().to_string(), "reason": d.reason })
            });
            // "sha256:… serving on 3 of 3 hosts", when the store is shared.
            let serving_on = hosts.as_ref().map(|hosts| {
                let on = hosts
                    .iter()
                    .filter(|h| h.serving.get(&p.ident.name) == Some(&p.hash))
                    .count();
                format!("{} serving on {on} of {} hosts", p.ident.version, hosts.len())
            });
            // A candidate in shadow or canary, with its figures; the canary rollbacks.
            let candidate = admin.app.candidates.get(&p.ident.name).map(|c| {
                let mut view = json!({
                    "version": c.plugin.ident.version,
                    "mode": c.mode.label(),
                    "since": c.since,
                });
                match c.mode {
                    Mode::Shadow => view["runs"] = json!(c.shadow.counts()),
                    Mode::Canary { percent } => {
                        view["percent"] = json!(percent);
                        view["window"] = json!(c.figures());
                    }
                }
                view
            });
            let rolled_back = rollbacks.get(&p.ident.name).map(|(n, last)| {
                json!({ "count": n, "last": last })
            });
            json!({
                "name": p.ident.name,
                "version": p.ident.version,
                "candidate": candidate,
                "canary_rollbacks": rolled_back,
                "wit": p.wit_version,
                "book": p.book.is_some(),
                "search": p.search.is_some(),
                "authenticate": p.login.is_some(),
                "rollback_to": kept,
                "degraded": fallback,
                "serving_on": serving_on,
            })
        })
        .collect();
    let draining: Vec<_> = admin
        .app
        .plugins
        .draining()
        .into_iter()
        .map(|d| json!({ "name": d.ident.name, "version": d.ident.version, "in_flight": d.in_flight }))
        .collect();
    let hosts: Option<Vec<_>> = hosts.map(|hosts| {
        hosts
            .iter()
            .map(|h| {
                let serving: serde_json::Map<String, serde_json::Value> = h
                    .serving
                    .iter()
                    .map(|(name, hash)| (name.clone(), json!(PluginIdent::version_of(hash))))
                    .collect();
                json!({ "id": h.id, "seen_seconds_ago": h.seen_seconds_ago, "serving": serving })
            })
            .collect()
    });
    answer(
        StatusCode::OK,
        json!({ "plugins": plugins, "draining": draining, "hosts": hosts }),
    )
}

async fn deploy(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = unauthorised(&admin, &headers) {
        return r;
    }
    let mode = match deploy_mode(query.as_deref().unwrap_or("")) {
        Ok(mode) => mode,
        Err(e) => return refused(StatusCode::BAD_REQUEST, "invalid-request", e),
    };
    let bytes = Arc::from(&body[..]);
    swap_answer(match mode {
        None => admin.app.deploy(&name, bytes, Trigger::Api).await,
        Some(mode) => admin.app.stage(&name, bytes, mode).await,
    })
}

/// `mode=shadow`, or `mode=canary&percent=N`; nothing: a deploy that serves.
fn deploy_mode(query: &str) -> Result<Option<Mode>, String> {
    let (mut mode, mut percent) = (None, None);
    for (key, value) in crate::text::query_pairs(query)? {
        match (key, value.as_str()) {
            ("mode", m) => mode = Some(m.to_string()),
            ("percent", p) => {
                percent = Some(
                    p.parse::<u8>()
                        .ok()
                        .filter(|p| (1..=100).contains(p))
                        .ok_or_else(|| format!("percent must be 1 to 100, not {p:?}"))?,
                )
            }
            (other, _) => return Err(format!("unknown query parameter {other:?}")),
        }
    }
    match (mode.as_deref(), percent) {
        (None, None) | (Some("serve"), None) => Ok(None),
        (Some("shadow"), None) => Ok(Some(Mode::Shadow)),
        (Some("canary"), Some(percent)) => Ok(Some(Mode::Canary { percent })),
        (Some("canary"), None) => Err("mode=canary needs percent=1..100".into()),
        (_, Some(_)) => Err("percent goes with mode=canary".into()),
        (Some(other), None) => Err(format!("mode must be shadow or canary, not {other:?}")),
    }
}

async fn promote(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = unauthorised(&admin, &headers) {
        return r;
    }
    swap_answer(admin.app.promote(&name).await)
}

async fn abort(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = unauthorised(&admin, &headers) {
        return r;
    }
    swap_answer(admin.app.abort(&name).await)
}

/// A shadow's counts and its latest runs that did not answer the same.
async fn shadow(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = unauthorised(&admin, &headers) {
        return r;
    }
    match admin.app.candidates.get(&name) {
        Some(c) if c.mode == Mode::Shadow => answer(
            StatusCode::OK,
            json!({
                "plugin": name,
                "version": c.plugin.ident.version,
                "since": c.since,
                "runs": c.shadow.counts(),
                "latest": c.shadow.latest(),
            }),
        ),
        _ => refused(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("plugin {name} has no candidate in shadow"),
        ),
    }
}

async fn rollback(
    State(admin): State<Arc<Admin>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = unauthorised(&admin, &headers) {
        return r;
    }
    swap_answer(admin.app.rollback(&name, &version).await)
}

/// Replays the plugin's recorded bookings through the component in the body (see
/// [`crate::replay`]): the report, whether or not it passed.
async fn replay(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = unauthorised(&admin, &headers) {
        return r;
    }
    let (selection, options) = match crate::replay::parse_query(query.as_deref().unwrap_or("")) {
        Ok(parsed) => parsed,
        Err(e) => return refused(StatusCode::BAD_REQUEST, "invalid-request", e),
    };
    let reason = |e: DeployError| one_line(&e.to_string(), MAX_REASON_BYTES);
    match admin
        .app
        .replay(&name, Arc::from(&body[..]), selection, &options)
        .await
    {
        Ok(report) => answer(
            StatusCode::OK,
            serde_json::to_value(&report).unwrap_or_default(),
        ),
        Err(e @ DeployError::UnknownPlugin(_)) => {
            refused(StatusCode::NOT_FOUND, "not-found", reason(e))
        }
        Err(e) => refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "replay-refused",
            reason(e),
        ),
    }
}

/// The version now serving, or why nothing changed as one line of at most
/// [`MAX_REASON_BYTES`]: a refusal can carry the candidate's own text (a sample's failure
/// quotes the plugin's answer).
fn swap_answer(outcome: Result<Arc<PluginIdent>, DeployError>) -> Response {
    let reason = |e: DeployError| one_line(&e.to_string(), MAX_REASON_BYTES);
    match outcome {
        Ok(ident) => answer(
            StatusCode::OK,
            json!({ "name": ident.name, "version": ident.version }),
        ),
        Err(
            e @ (DeployError::UnknownVersion(..)
            | DeployError::UnknownPlugin(_)
            | DeployError::NoCandidate(_)),
        ) => refused(StatusCode::NOT_FOUND, "not-found", reason(e)),
        Err(e) => refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "deploy-refused",
            reason(e),
        ),
    }
}

async fn metrics(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorised(&admin, &headers) {
        return r;
    }
    let app = &admin.app;
    let mut text = String::new();
    app.metrics.render(&mut text);
    app.runtime.render_metrics(&mut text);
    text.push_str(
        "# HELP followup_plugin_serving The version serving each plugin (always 1).\n\
         # TYPE followup_plugin_serving gauge\n",
    );
    for ident in app.plugins.versions() {
        text.push_str(&format!(
            "followup_plugin_serving{{plugin=\"{}\",version=\"{}\"}} 1\n",
            escape(&ident.name),
            escape(&ident.version)
        ));
    }
    text.push_str(
        "# HELP followup_plugin_degraded Plugins serving a kept version because their \
         configured file was refused at start (1 each).\n\
         # TYPE followup_plugin_degraded gauge\n",
    );
    for d in app.degraded() {
        text.push_str(&format!(
            "followup_plugin_degraded{{plugin=\"{}\",version=\"{}\"}} 1\n",
            escape(&d.plugin),
            escape(&d.version)
        ));
    }
    text.push_str(
        "# HELP followup_plugin_idle_instances Warm instances waiting for their route's next \
         request (plugins with reuse_instances).\n\
         # TYPE followup_plugin_idle_instances gauge\n",
    );
    for ident in app.plugins.versions() {
        if let Some(plugin) = app.plugin(&ident.name)
            && plugin.reuse_instances > 1
        {
            text.push_str(&format!(
                "followup_plugin_idle_instances{{plugin=\"{}\",version=\"{}\"}} {}\n",
                escape(&plugin.ident.name),
                escape(&plugin.ident.version),
                plugin.warm.idle_count()
            ));
        }
    }
    text.push_str(
        "# HELP followup_shadow_runs_total Live bookings replayed through a shadow candidate, by \
         outcome (skipped: every shadow run was busy).\n\
         # TYPE followup_shadow_runs_total counter\n",
    );
    for (name, c) in app.candidates.all() {
        if c.mode != Mode::Shadow {
            continue;
        }
        let counts = c.shadow.counts();
        for (outcome, n) in [
            ("same", counts.same),
            ("differs", counts.differs),
            ("failed", counts.failed),
            ("skipped", counts.skipped),
        ] {
            text.push_str(&format!(
                "followup_shadow_runs_total{{plugin=\"{}\",version=\"{}\",outcome=\"{outcome}\"}} {n}\n",
                escape(&name),
                escape(&c.plugin.ident.version)
            ));
        }
    }
    text.push_str(
        "# HELP followup_canary_rollbacks_total Canaries the host rolled back by itself.\n\
         # TYPE followup_canary_rollbacks_total counter\n",
    );
    for (name, (n, _)) in app.candidates.rollbacks() {
        text.push_str(&format!(
            "followup_canary_rollbacks_total{{plugin=\"{}\"}} {n}\n",
            escape(&name)
        ));
    }
    text.push_str(
        "# HELP followup_plugin_draining_requests Requests still running on replaced versions.\n\
         # TYPE followup_plugin_draining_requests gauge\n",
    );
    for d in app.plugins.draining() {
        text.push_str(&format!(
            "followup_plugin_draining_requests{{plugin=\"{}\",version=\"{}\"}} {}\n",
            escape(&d.ident.name),
            escape(&d.ident.version),
            d.in_flight
        ));
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
        assert!(same(b"", b""));
    }
}
