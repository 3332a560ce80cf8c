//! The contract, the host's lowest layer: the one `bindgen!` of the WIT package
//! ([`bindings`]), the records and their JSON mapping shared with the guest SDK (one source
//! file, compiled into both), the idempotency key (shared the same way), the kinds of
//! operation a route serves and the endpoint templates they are served on, and the name of
//! a plugin version. Every other layer builds on these; this module imports none of them.

pub mod bindings;

/// The WIT records (`BookJob`, `BookJobResponse`, …).
pub mod types {
    pub use crate::contract::bindings::types::*;
}

#[path = "../../../guest-sdk/src/codec.rs"]
pub mod codec;

pub use codec::{Problem, decode, encode, parse_datetime, to_vec};

#[path = "../../../guest-sdk/src/idempotency.rs"]
pub mod idempotency;

pub mod route;
pub use route::{RouteKind, Template};

/// Names a plugin version in logs and error bodies: `name@version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginIdent {
    pub name: String,
    /// `sha256:` and the first 12 hex digits of the component's hash.
    pub version: String,
}

impl PluginIdent {
    /// The version of a component whose content hash (hex SHA-256) is `hash`: `sha256:`
    /// and its first 12 hex digits, as every log line, header and admin answer shows it.
    pub fn version_of(hash: &str) -> String {
        format!("sha256:{}", hash.get(..12).unwrap_or(hash))
    }
}

impl std::fmt::Display for PluginIdent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}
