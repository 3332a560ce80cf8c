//! Test guest: never returns (a runaway booking rule).

use followup_sdk::*;

pub struct Looper;

impl BookingPlugin for Looper {
    fn book(_ctx: RequestContext, job: BookJob) -> Result<BookJobResponse, BookingError> {
        let mut n: u64 = job.order_type.map_or(1, |t| t.len() as u64);
        loop {
            n = std::hint::black_box(n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
}

followup_sdk::export_plugin!(Looper: book);
