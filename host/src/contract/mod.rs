//! The contract's records on the host side: the WIT types from the host's bindings and the
//! JSON mapping shared with the guest SDK (one source file, compiled into both).

/// The WIT records (`BookJob`, `BookJobResponse`, …).
pub mod types {
    pub use crate::runtime::bindings::types::*;
}

#[path = "../../../guest-sdk/src/codec.rs"]
pub mod codec;

pub use codec::{Problem, decode, encode, parse_datetime, to_vec};
