//! The one `bindgen!` of the host: Rust types and call glue for the `servicemobility:booking`
//! WIT package. Import policy lives here: host services are plain synchronous functions
//! (they never block), and exports are called asynchronously so that a guest's epoch
//! deadline can yield to the tokio scheduler.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "booker-scheduler",
    exports: { default: async },
});

pub use exports::servicemobility::booking::{appointments, followup};
pub use servicemobility::booking::types;
pub use servicemobility::booking::{config, kv, log};
