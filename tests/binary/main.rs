//! The `followup` binary as operators run it: a process started from its command line,
//! configured by a file, killed, restarted, and driven by its own subcommands.
//!
//! Cargo hands integration tests the path of their own package's binaries only, so this
//! package builds the host's `main` once more as `followup-cli` (same source, same
//! library).

mod cluster;
mod crash;
mod logon;
mod logs;
mod newcomer;
mod plugin_cli;
mod scaffold;
mod support;
mod tokens;
mod traces;
