//! Test guest: panics on every call (a Rust panic is a Wasm trap).

use followup_sdk::*;

pub struct Trap;

impl BookingPlugin for Trap {
    fn book(_ctx: RequestContext, job: BookJob) -> Result<BookJobResponse, BookingError> {
        panic!(
            "booking rule bug: unexpected order type {:?}",
            job.order_type
        );
    }
}

followup_sdk::export_plugin!(Trap: book);
