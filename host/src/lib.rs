//! The followup host: serves ServiceMobility's Followup WorkOrder and Appointment Search
//! interfaces for many routes, each answered by a customer's sandboxed WebAssembly plugin.
//!
//! # Layout
//! - [`admin`]: the admin API (plugins, deploy, rollback, health, metrics);
//! - [`config`]: the TOML configuration and its defaults;
//! - [`http`]: the HTTP surface (routes, token check, request handling);
//! - [`journal`]: bookings that happen once (the idempotency journal);
//! - [`files`]: files written whole or not at all;
//! - [`logging`]: the host's log, which plugins cannot forge;
//! - [`error`]: the Standard Response Object and the one status mapping;
//! - [`metrics`]: failure counters per plugin version and error type;
//! - [`contract`]: the contract's records and their JSON mapping (shared with the SDK);
//! - [`dispatch`]: one operation on a plugin: decode, call, check, encode;
//! - [`plugin`]: loading and checking components;
//! - [`runtime`]: the engine, the sandbox and one plugin call;
//! - [`store`]: plugins' key-value data and the idempotency journal (SQLite);
//! - [`text`]: bounding and escaping text from plugins and clients;
//! - [`watch`]: watching plugin files for new versions;
//! - [`cli`]: the `followup` command line, with `plugin check|run|new` for plugin authors.

pub mod admin;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod contract;
pub mod dispatch;
pub mod error;
pub mod files;
pub mod http;
pub mod journal;
pub mod logging;
pub mod metrics;
pub mod plugin;
pub mod runtime;
pub mod server;
pub mod storage;
pub mod text;
pub mod watch;
pub use app::App;
pub use app::deploy::DeployError;
pub use server::{SHUTDOWN_GRACE, app, run};
