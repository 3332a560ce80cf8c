//! The one `Engine` of the host: compiler and runtime settings, and the epoch ticker
//! that drives deadlines.

use super::sandbox::pooling;
use crate::config::RuntimeConfig;
use std::time::Duration;
use wasmtime::{Config, Engine};

/// Builds the engine every plugin is compiled for and runs in.
pub fn build(rt: &RuntimeConfig) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config
        // Deadlines: a guest checks the epoch at loop headers and function entries, which
        // is how a runaway loop is interrupted without trusting the guest.
        .epoch_interruption(true)
        .consume_fuel(rt.fuel)
        .max_wasm_stack(rt.max_wasm_stack_bytes)
        // Guests run on fibers: their stack must hold the Wasm stack plus host frames.
        .async_stack_size(rt.max_wasm_stack_bytes + (1 << 20))
        .allocation_strategy(pooling(rt))
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    Ok(Engine::new(&config)?)
}

/// Advances the engine's epoch every `tick` on a dedicated thread. The thread holds only a
/// weak reference and ends once the engine is gone.
pub fn start_ticker(engine: &Engine, tick: Duration) -> anyhow::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("followup-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(tick);
            }
        })
        // Without a ticker no deadline fires: refuse to run rather than run unbounded.
        .map_err(|e| anyhow::anyhow!("cannot start the epoch ticker thread: {e}"))?;
    Ok(())
}
