//! Test support shared by the integration tests: the paths of the guests that
//! `tests/build.rs` builds from source.

/// Components built from `plugins/*` and `tests/guests/*` for `wasm32-wasip2`.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));

    /// Every guest the host loads; `HTTP_CALLER` is the one it must refuse.
    pub const ALL: &[&str] = &[CAPACITY_BOOKER, TRAP, LOOPER, ECHO, HOSTILE];
}
