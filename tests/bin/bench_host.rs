//! `followup-bench-host CONFIG [--native PLUGIN]... [--shadow PLUGIN]...`: the followup
//! host, with the example plugin's rules (capacity-booker) also compiled in, for the load
//! comparison in `scripts/load`.
//!
//! It serves `CONFIG` exactly as `followup serve --config CONFIG` does (same `App`, same
//! HTTP path); each plugin named by `--native` is answered by the capacity-booker rules
//! called directly instead of its component — the native baseline. Each plugin named by
//! `--shadow` gets its own component rebuilt (another hash, the same code) as a shadow
//! candidate: what a shadow costs the live bookings. Logging follows
//! `RUST_LOG` (default `warn`, so that per-booking log lines do not weigh on the figures).

use anyhow::Context;
use followup_host::App;
use followup_host::config::Config;
use followup_host::dispatch::native::NativeRules;
use std::sync::Arc;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let config_path = args
        .next()
        .context("usage: followup-bench-host CONFIG [--native PLUGIN]...")?;
    let mut natives = Vec::new();
    let mut shadows = Vec::new();
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--native", Some(name)) => natives.push(name),
            ("--shadow", Some(name)) => shadows.push(name),
            _ => anyhow::bail!(
                "unexpected argument {arg:?}; usage: followup-bench-host CONFIG [--native PLUGIN]..."
            ),
        }
    }
    let config = Config::load(config_path.as_ref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let traces = followup_host::logging::init(
        "warn",
        followup_host::config::LogFormat::Text,
        runtime.handle(),
    );
    let result = runtime.block_on(async move {
        let mut app = App::new(&config)?;
        let rules = NativeRules::booking::<capacity_booker::CapacityBooker>()
            .with_search::<capacity_booker::CapacityBooker>();
        for name in &natives {
            app = app.with_native(name, rules)?;
        }
        for name in &shadows {
            let serving = app.plugin(name).context("no such plugin")?;
            let rebuilt = followup_tests::component::with_custom_section(
                &serving.bytes,
                "followup-bench-shadow",
                b"",
            );
            app.stage(name, rebuilt.into(), followup_host::promote::Mode::Shadow)
                .await?;
        }
        let app = Arc::new(app);
        if !shadows.is_empty() {
            // What the shadows did so far, every second, for `scripts/load` to report.
            let watched = app.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    for (name, c) in watched.candidates.all() {
                        eprintln!("shadow runs of {name}: {:?}", c.shadow.counts());
                    }
                }
            });
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        println!("followup listening on http://{}", listener.local_addr()?);
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        followup_host::run(listener, app, shutdown).await
    });
    if let Some(traces) = traces {
        traces.shutdown();
    }
    result
}
