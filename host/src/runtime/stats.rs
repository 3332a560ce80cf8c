//! What one plugin call used against its limits, told to an observer (`followup plugin
//! run` reports from it).

use super::state;
use crate::contract::PluginIdent;
use std::sync::Arc;
use std::time::Duration;

/// Told about every plugin call.
pub type Observer = Box<dyn Fn(&CallStats) + Send + Sync>;

/// What one plugin call used, against its limits.
#[derive(Debug, Clone)]
pub struct CallStats {
    pub plugin: Arc<PluginIdent>,
    pub request_id: String,
    pub wall: Duration,
    /// With fuel metering on.
    pub fuel_used: Option<u64>,
    pub peak_memory_bytes: usize,
    pub log_lines: usize,
    /// Bytes kept of what the guest logged or printed, and bytes and entries dropped over
    /// the budget.
    pub log_bytes: usize,
    pub log_dropped_bytes: u64,
    pub log_dropped_entries: u64,
    pub host_calls: state::HostCalls,
    /// Host resources the instance still held when the call ended.
    pub host_resources: usize,
    /// Bytes of key-value reads and listings the call's session held, and bytes written.
    pub kv_read_bytes: usize,
    pub kv_written_bytes: usize,
    /// Bytes of outgoing request bodies the call had the host buffer at most.
    pub http_body_buffer_bytes: usize,
    pub limits: crate::config::Limits,
    /// The failure's detail, when the call failed.
    pub failure: Option<String>,
}
