//! The `followup` command line. `main` only parses arguments and calls in here.

use crate::config::{self, Config};
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
}

/// Runs the command line.
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, listen } => serve(config, listen).await,
    }
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
            Config::example(plugin)
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
    std::io::stdout().flush().ok();
    run(listener, Arc::new(app), shutdown_signal()).await
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
