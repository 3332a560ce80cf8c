//! The example plugin's rules with one rule changed: Saturday mornings (local time, before
//! noon) are refused, where the example books them when Saturdays are open. The
//! candidate a replay must catch: every other booking answers exactly as the example's.
//!
//! With the config value `fail_percent` = N it also traps on about N % of work orders
//! (by a hash of the WorkOrderID): the canary the host must roll back.

#[path = "../../../../plugins/capacity-booker/src/rules.rs"]
pub mod rules;

use followup_sdk::time::Timestamp;
use followup_sdk::*;
use rules::Rules;

pub fn wall_clock() -> Timestamp {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
}

pub struct Variant;

impl BookingPlugin for Variant {
    fn book(ctx: RequestContext, job: BookJob) -> Result<BookJobResponse, BookingError> {
        let fail_percent: u64 = config::get("fail_percent")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let id = ctx.work_order_id.as_deref().unwrap_or("");
        let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        if hash % 100 < fail_percent {
            panic!("this variant fails work order {id}");
        }
        let rules = Rules::from_config(config::get, wall_clock());
        let off = rules.utc_offset_minutes;
        if let Some(slot) = job.slot()
            && slot.start.local_weekday(off) == 6
            && slot.start.local_minute_of_day(off) < 12 * 60
        {
            return Err(BookingError::slot_unavailable(format!(
                "slot starting {} is on a Saturday morning, which is no longer booked",
                slot.start
            )));
        }
        rules.book(&ctx, &job)
    }
}

followup_sdk::export_plugin!(Variant: book);
