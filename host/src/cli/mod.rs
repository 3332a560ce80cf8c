//! The `followup` command line. `main` only parses arguments and calls in here.

pub mod check;
#[path = "../../../guest-sdk/src/password.rs"]
pub mod password;
pub mod replay;
pub mod run;
pub mod scaffold;

use crate::config::{self, Config, LogFormat};
use crate::{App, run};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Serve ServiceMobility follow-up bookings through sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "followup", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// The log's lines: text or json (one JSON object per line). Overrides the config's
    /// `log_format`.
    #[arg(long, global = true, value_parser = <LogFormat as std::str::FromStr>::from_str)]
    pub log_format: Option<LogFormat>,
}

impl Cli {
    /// The log format: `--log-format`, else `serve --config FILE`'s `log_format`, else text.
    /// Read before anything is logged, so that every line, start-up included, has it.
    pub fn log_format(&self) -> LogFormat {
        if let Some(format) = self.log_format {
            return format;
        }
        /// Only the one key: the whole file is read, and its errors reported, later.
        #[derive(serde::Deserialize)]
        struct Peek {
            #[serde(default)]
            log_format: LogFormat,
        }
        match &self.command {
            Command::Serve {
                config: Some(path), ..
            } => std::fs::read_to_string(path)
                .ok()
                .and_then(|text| toml::from_str::<Peek>(&text).ok())
                .map_or(LogFormat::Text, |peek| peek.log_format),
            _ => LogFormat::Text,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the configured routes. Without --config, serves the example plugin on
    /// POST /workorders/{0}/followup and POST /appointments/search.
    Serve {
        /// TOML configuration (see followup.example.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on, overriding the config's `listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Manage the plugins of a running host through its admin API.
    Plugin {
        #[command(subcommand)]
        action: PluginAction,
        /// The admin API's address.
        #[arg(long, global = true, default_value = "http://127.0.0.1:8081")]
        admin: String,
        /// Environment variable holding the admin token.
        #[arg(long, global = true, default_value = "FOLLOWUP_ADMIN_TOKEN")]
        token_env: String,
    },
    /// Print an HS256 token for local testing, signed with the secret in an environment
    /// variable (the same one `[token] secret_env` names).
    Token {
        /// Environment variable holding the secret.
        #[arg(long)]
        secret_env: String,
        /// Lifetime: seconds, or a number with s, m, h or d (default 1h).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// `name` claim.
        #[arg(long)]
        name: Option<String>,
        /// `email` claim.
        #[arg(long)]
        email: Option<String>,
        /// `iss` claim.
        #[arg(long)]
        issuer: Option<String>,
        /// `aud` claim.
        #[arg(long)]
        audience: Option<String>,
    },
    /// Print the OpenAPI 3.1 description (JSON) of the routes a host started with this
    /// configuration serves, in its status mode; the admin API serves the same as
    /// GET /openapi.json.
    Openapi {
        /// TOML configuration (default: the built-in example, every route of it).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print a user entry for a plugin's `users` value: `USERNAME:` and the Argon2id hash
    /// of the password (PHC string format). The password is read from the environment
    /// variable --password-env names, else from the first line of standard input.
    HashPassword {
        /// The username (no `:`, `,`, `$` or spaces).
        username: String,
        /// Environment variable holding the password.
        #[arg(long)]
        password_env: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PluginAction {
    /// List the plugins, the versions serving them and the versions still draining.
    List,
    /// Upload a component as the new version of a plugin (checked before it serves).
    Deploy {
        name: String,
        /// The component (`.wasm`).
        file: PathBuf,
        /// Run it beside the serving version on live bookings' tapes, with no effect,
        /// instead of serving it (see `GET /plugins/NAME/shadow`).
        #[arg(long, conflicts_with = "canary")]
        shadow: bool,
        /// Let it book this percent of work orders (by a hash of the WorkOrderID) beside
        /// the serving version; rolled back by the host when it is worse.
        #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=100))]
        canary: Option<u8>,
    },
    /// Make a plugin's candidate (shadow or canary) the serving version, through the gate.
    Promote { name: String },
    /// Drop a plugin's candidate (shadow or canary).
    Abort { name: String },
    /// Serve a plugin with one of its earlier versions (`sha256:…`, see `list`).
    Rollback { name: String, version: String },
    /// Create a plugin project from a template: it builds, has a test and a README.
    New {
        /// The plugin's name (lower-case letters, digits, '-').
        name: String,
        #[arg(long, value_enum, default_value = "rust")]
        lang: scaffold::Lang,
        /// Where to create the project's directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Rust only: the followup-sdk directory (default: the one beside this build).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Describe a component without a host: what it exports (which routes it can serve),
    /// the WIT version it was built for, what it asks for, and whether a host would load
    /// it. Exits 1 when it would be refused.
    Check {
        /// The component (`.wasm`).
        file: PathBuf,
        /// A host config whose `[plugins.NAME]` grants to judge by (default: grant what it
        /// asks for).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Which `[plugins.NAME]` of the config.
        #[arg(long)]
        plugin: Option<String>,
    },
    /// Run a plugin's recorded bookings through a candidate component, with every host
    /// call answered from the recordings (nothing is committed, nothing leaves the host),
    /// and report which answers changed. Reads the store the config names, also while its
    /// host serves. Exits 1 when more bookings differ or fail than --max-diff allows.
    Replay {
        /// The candidate component (`.wasm`).
        file: PathBuf,
        /// The plugin whose bookings to replay.
        #[arg(long)]
        plugin: String,
        /// The host config that names the store (and the plugin's limits and grants).
        #[arg(long)]
        config: PathBuf,
        /// Only the newest N recorded bookings.
        #[arg(long)]
        last: Option<u32>,
        /// Only bookings recorded within this long: seconds, or a number with s, m, h or d.
        #[arg(long)]
        since: Option<String>,
        /// A JSON path of the answer to leave out of the comparison (repeatable).
        #[arg(long)]
        ignore: Vec<String>,
        /// Bookings that may differ or fail before the replay fails.
        #[arg(long, default_value_t = 0)]
        max_diff: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run one request through exactly the production path and limits, print the answer
    /// and a report (wall time, fuel, peak memory, log, host calls, headroom against each
    /// limit). Uses a temporary store. Exits 1 unless every answer is 200.
    Run {
        /// The component (`.wasm`).
        file: PathBuf,
        /// A Book Job (JSON) to book.
        #[arg(long)]
        book_job: Option<PathBuf>,
        /// The WorkOrderID of the booking.
        #[arg(long, default_value = "WO-RUN-1")]
        work_order_id: String,
        /// An Appointment Search (JSON) to answer.
        #[arg(long)]
        search: Option<PathBuf>,
        /// A host config whose `[plugins.NAME]` (limits, config, grants) to run under.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Which `[plugins.NAME]` of the config.
        #[arg(long)]
        plugin: Option<String>,
    },
}

/// Runs the command line.
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, listen } => serve(config, listen).await,
        Command::Plugin {
            action,
            admin,
            token_env,
        } => plugin(action, &admin, &token_env).await,
        Command::Token {
            secret_env,
            ttl,
            name,
            email,
            issuer,
            audience,
        } => {
            let secret = std::env::var(&secret_env).unwrap_or_default();
            anyhow::ensure!(
                !secret.is_empty(),
                "environment variable {secret_env} is unset or empty"
            );
            let now = crate::clock::unix_seconds();
            let mut claims = serde_json::json!({
                "iat": now,
                "exp": now + parse_ttl(&ttl)?,
            });
            for (key, value) in [
                ("name", name),
                ("email", email),
                ("iss", issuer),
                ("aud", audience),
            ] {
                if let Some(v) = value {
                    claims[key] = serde_json::Value::String(v);
                }
            }
            crate::http::hs256::install();
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
            )?;
            println!("{token}");
            Ok(())
        }
        Command::Openapi { config } => {
            let config = match &config {
                Some(path) => Config::load(path)?,
                None => Config::example(config::locate_example_plugin()),
            };
            let document = crate::openapi::of_config(&config)?;
            println!("{}", serde_json::to_string_pretty(&document)?);
            Ok(())
        }
        Command::HashPassword {
            username,
            password_env,
        } => {
            println!("{}", hash_password(&username, password_env.as_deref())?);
            Ok(())
        }
    }
}

/// `followup hash-password`: the `username:PHC-string` entry for a plugin's `users`.
fn hash_password(username: &str, password_env: Option<&str>) -> anyhow::Result<String> {
    anyhow::ensure!(
        !username.is_empty()
            && !username
                .chars()
                .any(|c| matches!(c, ':' | ',' | '$') || c.is_whitespace() || c.is_control()),
        "the username must be non-empty, without ':', ',', '$', spaces or control characters"
    );
    let password = match password_env {
        Some(var) => std::env::var(var).unwrap_or_default(),
        None => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the password from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    anyhow::ensure!(
        !password.is_empty(),
        "the password is empty (give it on standard input or in --password-env)"
    );
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).context("no random salt")?;
    let phc = password::hash(&password, &salt).map_err(anyhow::Error::msg)?;
    Ok(format!("{username}:{phc}"))
}

/// `followup plugin …`: authoring commands run here; the others call the admin API.
async fn plugin(action: PluginAction, admin: &str, token_env: &str) -> anyhow::Result<()> {
    let (path, body) = match action {
        PluginAction::New {
            name,
            lang,
            dir,
            sdk,
        } => {
            let made = scaffold::new_plugin(&name, lang, &dir, sdk.as_deref())?;
            println!(
                "created {} ({lang:?}); next: its README.md, then\n  \
                 followup plugin run {} --config host.toml --book-job samples/book-job.json",
                made.display(),
                scaffold::component_path(&name, lang)
            );
            return Ok(());
        }
        PluginAction::Check {
            file,
            config,
            plugin,
        } => {
            let (report, ok) = tokio::task::spawn_blocking(move || {
                check::check(&file, config.as_deref(), plugin.as_deref())
            })
            .await??;
            print!("{report}");
            anyhow::ensure!(ok, "this host would refuse the component");
            return Ok(());
        }
        PluginAction::Run {
            file,
            book_job,
            work_order_id,
            search,
            config,
            plugin,
        } => {
            let request = run::RunRequest {
                book_job,
                search,
                work_order_id,
                config,
                plugin,
            };
            let (report, ok) = run::run(&file, request).await?;
            print!("{report}");
            anyhow::ensure!(ok, "not every request was answered 200");
            return Ok(());
        }
        PluginAction::Replay {
            file,
            plugin,
            config,
            last,
            since,
            ignore,
            max_diff,
            json,
        } => {
            let since = since
                .map(|s| {
                    crate::clock::parse_seconds(&s)
                        .map(|t| crate::clock::unix_seconds().saturating_sub(t))
                        .map_err(|e| anyhow::anyhow!("--since {e}"))
                })
                .transpose()?;
            let options = crate::replay::Options {
                ignore: ignore
                    .iter()
                    .map(|p| p.parse())
                    .collect::<Result<_, String>>()
                    .map_err(|e| anyhow::anyhow!(e))?,
                max_diff,
            };
            let report = replay::replay(replay::ReplayRequest {
                file,
                plugin,
                config,
                query: crate::storage::TapeQuery { last, since },
                options,
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.text());
            }
            let s = report.summary;
            anyhow::ensure!(
                report.passed,
                "{} of {} bookings differ or failed; --max-diff allows {}",
                s.differs + s.failed,
                s.total,
                max_diff
            );
            return Ok(());
        }
        PluginAction::List => ("/plugins".to_string(), None),
        PluginAction::Deploy {
            name,
            file,
            shadow,
            canary,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let mode = match (shadow, canary) {
                (true, _) => "?mode=shadow".to_string(),
                (false, Some(percent)) => format!("?mode=canary&percent={percent}"),
                (false, None) => String::new(),
            };
            (format!("/plugins/{name}{mode}"), Some(bytes))
        }
        PluginAction::Promote { name } => (format!("/plugins/{name}/promote"), Some(Vec::new())),
        PluginAction::Abort { name } => (format!("/plugins/{name}/abort"), Some(Vec::new())),
        PluginAction::Rollback { name, version } => (
            format!("/plugins/{name}/rollback/{version}"),
            Some(Vec::new()),
        ),
    };
    let token = std::env::var(token_env).unwrap_or_default();
    anyhow::ensure!(
        !token.is_empty(),
        "environment variable {token_env} is unset or empty"
    );
    let (status, text) = admin_request(admin, &path, &token, body)?;
    println!("{text}");
    anyhow::ensure!(status == 200, "the admin API answered {status}");
    Ok(())
}

/// One request to the admin API over plain HTTP/1.1 (it listens on loopback): GET without
/// a body, POST with one. The status and the body.
fn admin_request(
    base: &str,
    path: &str,
    token: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<(u16, String)> {
    use std::io::Read;
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("--admin must be an http:// address"))?
        .trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(authority)
        .with_context(|| format!("cannot reach the admin API at {base}"))?;
    let method = if body.is_some() { "POST" } else { "GET" };
    let body = body.unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/wasm\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("not an HTTP answer from {base}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// `3600`, `90s`, `30m`, `1h`, `2d` → seconds.
pub fn parse_ttl(text: &str) -> anyhow::Result<u64> {
    crate::clock::parse_seconds(text).map_err(|e| anyhow::anyhow!("--ttl {e}"))
}

/// The example's authentication route serves only when its signing secret is set (as
/// `scripts/run` does): without one, the example still starts, without that route. A
/// configuration file of the operator's is never changed: there, a missing secret stops
/// the host.
fn keep_example_logon(config: &mut Config) {
    config.routes.retain(|route| match route.logon() {
        Some(logon)
            if std::env::var(&logon.secret_env)
                .unwrap_or_default()
                .is_empty() =>
        {
            tracing::warn!(
                route = route.path,
                "the example's authentication route is off: set {} to a secret of 32 bytes \
                 or more to serve it",
                logon.secret_env
            );
            false
        }
        _ => true,
    });
}

async fn serve(config_path: Option<PathBuf>, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let mut config = match &config_path {
        Some(path) => Config::load(path)?,
        None => {
            let plugin = config::locate_example_plugin();
            if !plugin.exists() {
                anyhow::bail!(
                    "the example plugin is not built: {} is missing.\n\
                     help: run `cargo build --release --target wasm32-wasip2 -p capacity-booker` \
                     from the repository root (after `rustup target add wasm32-wasip2`)",
                    plugin.display()
                );
            }
            let mut example = Config::example(plugin);
            keep_example_logon(&mut example);
            example
        }
    };
    if let Some(addr) = listen {
        config.listen = addr;
    }
    let app = tokio::task::spawn_blocking(move || App::new(&config).map(|app| (app, config)))
        .await
        .context("loading plugins panicked")??;
    let (app, config) = app;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    for route in app.routes.routes() {
        tracing::info!(route = route.name, plugin = route.plugin, kind = ?route.kind, "serving");
    }
    // One line on stdout that scripts and tests can wait for.
    println!("followup listening on http://{addr}");
    let app = Arc::new(app);
    let _pruning = app.prune_journal_periodically();
    let _following = app.follow_shared_versions();
    let _watcher = if config.watch.enabled {
        Some(crate::watch::watch(app.clone(), config.watch.debounce())?)
    } else {
        None
    };
    let admin_token = std::env::var(&config.admin.token_env).unwrap_or_default();
    if admin_token.is_empty() {
        tracing::info!(
            "admin API off: set {} to a token to enable it",
            config.admin.token_env
        );
    } else {
        let admin = tokio::net::TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| format!("cannot listen on {} (admin)", config.admin.listen))?;
        println!("followup admin API on http://{}", admin.local_addr()?);
        let router = crate::admin::router(app.clone(), Arc::from(admin_token));
        tokio::spawn(async move {
            let served = axum::serve(admin, router)
                .with_graceful_shutdown(shutdown_signal())
                .await;
            if let Err(e) = served {
                tracing::error!("admin API failed: {e}");
            }
        });
    }
    std::io::stdout().flush().ok();
    run(listener, app, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttls_accept_plain_seconds_and_units() {
        assert_eq!(parse_ttl("3600").unwrap(), 3600);
        assert_eq!(parse_ttl("90s").unwrap(), 90);
        assert_eq!(parse_ttl("30m").unwrap(), 1800);
        assert_eq!(parse_ttl("1h").unwrap(), 3600);
        assert_eq!(parse_ttl("2d").unwrap(), 172_800);
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("99999999999999999999d").is_err());
    }
}
