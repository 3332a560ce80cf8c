//! The `followup` binary: parses arguments, sets up logging, and hands over to the library.

use clap::Parser;
use followup_host::cli::{self, Cli};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let traces = followup_host::logging::init(
        "info,wasmtime=warn,cranelift=warn",
        cli.log_format(),
        runtime.handle(),
    );
    let result = runtime.block_on(cli::main(cli));
    // The runtime still runs: the exporter sends the last spans on it.
    if let Some(traces) = traces {
        traces.shutdown();
    }
    result
}
