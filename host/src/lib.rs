//! The followup host: serves ServiceMobility's Followup WorkOrder and Appointment Search
//! interfaces for many routes, each answered by a customer's sandboxed WebAssembly plugin.
//!
//! # Layout
//! From the top down; every dependency points down (`docs/architecture.md`).
//! - [`cli`]: the `followup` command line, with `plugin check|run|new` for plugin authors;
//! - [`server`]: the router and the accept loop;
//! - [`app`]: the [`App`], a composition of the parts below, and its admission gate;
//! - [`admin`], [`metrics`], [`watch`]: the admin API, failure counters, plugin files
//!   watched for new versions;
//! - [`openapi`]: the OpenAPI 3.1 description of the routes, from the route table;
//! - [`http`]: the HTTP surface (routes, token check, limits, the handler);
//! - [`journal`]: bookings that happen once (the idempotency journal);
//! - [`dispatch`]: one operation on a plugin: decode, call, check, encode;
//! - [`error`]: the Standard Response Object and the one status mapping;
//! - [`plugin`]: loading, registering and keeping plugin versions;
//! - [`runtime`]: the engine, the sandbox and one plugin call;
//! - [`storage`]: plugins' key-value data and the journal records (SQLite, memory), with
//!   commits ordered in memory and durable in groups;
//! - [`config`]: every type of the configuration file, and builders;
//! - [`contract`]: the WIT records and their JSON mapping (shared with the SDK), the
//!   operation kinds and endpoint templates, plugin versions' names;
//! - [`text`], [`clock`], [`files`], [`logging`], [`telemetry`]: bounding and escaping
//!   text, the clock, files written whole, the host's log, its traces.

// First, so that its `otel_span!` is in scope in every module declared after it.
#[macro_use]
pub mod telemetry;
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
pub mod jsonpath;
pub mod logging;
pub mod metrics;
pub mod openapi;
pub mod plugin;
pub mod promote;
pub mod replay;
pub mod runtime;
pub mod server;
pub mod storage;
pub mod tape;
pub mod text;
pub mod watch;
pub use app::App;
pub use app::deploy::DeployError;
pub use server::{SHUTDOWN_GRACE, app, run};
