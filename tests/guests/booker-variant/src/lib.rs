//! The example plugin's rules with one rule changed: Saturday mornings (local time, before
//! noon) are refused, where the example books them when Saturdays are open. The
//! candidate a replay must catch: every other booking answers exactly as the example's.

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
