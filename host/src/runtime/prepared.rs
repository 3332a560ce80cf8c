//! A plugin version as the runtime calls it: compiled once and pre-instantiated once, with
//! its limits, grants and instance slots. Every call instantiates it afresh in its own
//! `Store` (or takes a warm instance, see [`super::warm`]).

use super::deadline::Conduct;
use super::state::PluginState;
use super::warm::WarmPool;
use crate::config::{HttpGrant, Limits};
use crate::contract::PluginIdent;
use crate::contract::bindings::{appointments, authentication, followup};
use std::collections::HashMap;
use std::sync::Arc;
use wasmtime::component::InstancePre;

pub struct Prepared {
    pub ident: Arc<PluginIdent>,
    pub pre: InstancePre<PluginState>,
    /// Present when the component exports the `followup` interface (book-job routes).
    pub book: Option<followup::GuestIndices>,
    /// Present when the component exports the `appointments` interface (search routes).
    pub search: Option<appointments::GuestIndices>,
    /// Present when the component exports the `authentication` interface (logon routes).
    pub login: Option<authentication::GuestIndices>,
    pub limits: Limits,
    pub config: Arc<HashMap<String, String>>,
    /// Whether the plugin may use the key-value store.
    pub kv: bool,
    /// The origins the plugin may call over HTTP, and the limits of those calls.
    pub http: Option<Arc<HttpGrant>>,
    /// Bounds the calls of this plugin in flight (`max_concurrency`).
    pub slots: tokio::sync::Semaphore,
    /// Requests one instance may serve (`reuse_instances`; 1: a fresh instance each).
    pub reuse_instances: u32,
    /// Idle instances kept for reuse, per route; empty unless `reuse_instances` > 1.
    pub warm: WarmPool,
    /// Whether this version's calls have been running away lately.
    pub conduct: Arc<Conduct>,
    /// How its bookings are recorded, when they are.
    pub record: Option<Arc<crate::config::RecordPolicy>>,
}

impl Prepared {
    /// Whether this version exports what a route of `kind` calls.
    pub fn serves(&self, kind: crate::contract::RouteKind) -> bool {
        use crate::contract::RouteKind;
        match kind {
            RouteKind::BookJob => self.book.is_some(),
            RouteKind::AppointmentSearch => self.search.is_some(),
            RouteKind::Authentication => self.login.is_some(),
        }
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("ident", &self.ident)
            .field("book", &self.book.is_some())
            .field("search", &self.search.is_some())
            .field("login", &self.login.is_some())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}
