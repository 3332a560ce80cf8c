//! Capacity booker: the example booking rules a field-service customer would write.
//!
//! Run with `followup serve` (it serves this plugin by default); see the README beside
//! this crate.
//!
//! Booking (`book`):
//! - the request must satisfy the recommended validation profile;
//! - the slot must not be in the past, on a closed weekday or date, outside business
//!   hours, or shorter than the minimum length;
//! - each service area (the Location's `ServiceAreaID`, else `default`) takes at most
//!   `daily_capacity` bookings per local day, counted in the key-value store
//!   (`capacity/AREA/YYYY-MM-DD`); a full day answers `slot-unavailable`;
//! - the follow-up `OrderNum` is the next number of a sequence in the key-value store
//!   (`sequence/order`): unique and gap-free, since a booking's store writes happen once,
//!   with its answer, or not at all (a retry of the same booking is answered by the host's
//!   journal with the same number);
//! - required parts are grouped into parts orders by ship-to location and urgency; a part's
//!   `SupersededParts` replace it in the order.
//!
//! Search (`search`): open slots of `slot_minutes` inside business hours, within the
//! requested windows, skipping the past and closed days.
//!
//! Configuration (`[plugins.capacity-booker.config]`), all optional:
//! `utc_offset_minutes` (0), `open` ("08:00"), `close` ("18:00"), `closed_weekdays`
//! ("6,7": ISO numbers, Monday = 1), `closed_dates` (comma-separated `YYYY-MM-DD`),
//! `min_slot_minutes` (60), `slot_minutes` (240), `max_slots` (10), `order_prefix` ("FU-"),
//! `daily_capacity` (unlimited), and `now` (an ISO-8601 instant that replaces the clock, for demos and reproducible tests).

use followup_sdk::time::{Slot, Timestamp};
use followup_sdk::*;
use std::collections::BTreeMap;

/// The booking rules' settings, read from the plugin's configuration.
#[derive(Debug, Clone)]
pub struct Rules {
    pub now: Timestamp,
    pub utc_offset_minutes: i64,
    /// Business hours as minutes since local midnight.
    pub open: i64,
    pub close: i64,
    pub closed_weekdays: Vec<u8>,
    /// Closed dates as local day numbers (days since 1970-01-01).
    pub closed_days: Vec<i64>,
    pub min_slot_minutes: i64,
    pub slot_minutes: i64,
    pub max_slots: usize,
    pub order_prefix: String,
    /// Bookings per service area and local day; `None`: unlimited.
    pub daily_capacity: Option<i64>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            now: Timestamp(0),
            utc_offset_minutes: 0,
            open: 8 * 60,
            close: 18 * 60,
            closed_weekdays: vec![6, 7],
            closed_days: Vec::new(),
            min_slot_minutes: 60,
            slot_minutes: 240,
            max_slots: 10,
            order_prefix: "FU-".into(),
            daily_capacity: None,
        }
    }
}

fn clock_minutes(text: &str) -> Option<i64> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..=24).contains(&h) && (0..60).contains(&m) && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}

impl Rules {
    /// Reads the settings through `get` (the host's config service in production).
    pub fn from_config(get: impl Fn(&str) -> Option<String>, wall_clock: Timestamp) -> Self {
        let d = Rules::default();
        let parsed = |key: &str| get(key).and_then(|v| v.trim().parse::<i64>().ok());
        let utc_offset_minutes = parsed("utc_offset_minutes").unwrap_or(d.utc_offset_minutes);
        let list = |key: &str| -> Option<Vec<String>> {
            get(key).map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
        };
        Rules {
            now: get("now")
                .and_then(|v| Timestamp::parse(v.trim()))
                .unwrap_or(wall_clock),
            utc_offset_minutes,
            open: get("open")
                .and_then(|v| clock_minutes(&v))
                .unwrap_or(d.open),
            close: get("close")
                .and_then(|v| clock_minutes(&v))
                .unwrap_or(d.close),
            closed_weekdays: list("closed_weekdays")
                .map(|l| l.iter().filter_map(|s| s.parse().ok()).collect())
                .unwrap_or(d.closed_weekdays),
            closed_days: list("closed_dates")
                .unwrap_or_default()
                .iter()
                .filter_map(|date| Timestamp::parse(&format!("{date}T00:00:00Z")))
                .map(|t| t.local_day(0))
                .collect(),
            min_slot_minutes: parsed("min_slot_minutes").unwrap_or(d.min_slot_minutes),
            slot_minutes: parsed("slot_minutes")
                .filter(|m| *m > 0)
                .unwrap_or(d.slot_minutes),
            max_slots: parsed("max_slots")
                .and_then(|m| usize::try_from(m).ok())
                .unwrap_or(d.max_slots),
            order_prefix: get("order_prefix").unwrap_or(d.order_prefix),
            daily_capacity: parsed("daily_capacity").filter(|c| *c >= 0),
        }
    }

    fn is_closed_day(&self, at: Timestamp) -> bool {
        let off = self.utc_offset_minutes;
        self.closed_weekdays.contains(&at.local_weekday(off))
            || self.closed_days.contains(&at.local_day(off))
    }

    /// Why `slot` cannot be booked, if it cannot.
    pub fn refuse(&self, slot: Slot) -> Option<String> {
        let off = self.utc_offset_minutes;
        if slot.start < self.now {
            return Some(format!("slot starting {} is in the past", slot.start));
        }
        if self.is_closed_day(slot.start) {
            return Some(format!(
                "slot starting {} falls on a closed day",
                slot.start
            ));
        }
        let start = slot.start.local_minute_of_day(off);
        let same_day = slot.start.local_day(off) == slot.end.local_day(off)
            || slot.end.local_minute_of_day(off) == 0
                && slot.end.local_day(off) == slot.start.local_day(off) + 1;
        let end = if same_day {
            start + slot.minutes()
        } else {
            i64::MAX
        };
        if start < self.open || end > self.close {
            return Some(format!(
                "slot {}–{} is outside business hours {:02}:{:02}–{:02}:{:02}",
                slot.start,
                slot.end,
                self.open / 60,
                self.open % 60,
                self.close / 60,
                self.close % 60
            ));
        }
        if slot.minutes() < self.min_slot_minutes {
            return Some(format!(
                "slot of {} minutes is shorter than the minimum of {} minutes",
                slot.minutes(),
                self.min_slot_minutes
            ));
        }
        None
    }

    /// A slot as a person reads it: `Mon 2024-06-17 08:00–12:00 (UTC-04:00)`.
    pub fn describe(&self, slot: Slot) -> String {
        const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        let off = self.utc_offset_minutes;
        let local = |t: Timestamp| t.plus_minutes(off).to_string();
        let (start, end) = (local(slot.start), local(slot.end));
        let weekday = DAYS[usize::from(slot.start.local_weekday(off) - 1)];
        let sign = if off < 0 { '-' } else { '+' };
        format!(
            "{weekday} {} {}–{} (UTC{sign}{:02}:{:02})",
            &start[..10],
            &start[11..16],
            &end[11..16],
            off.abs() / 60,
            off.abs() % 60
        )
    }

    /// Books `job`: the follow-up order number and the parts orders.
    pub fn book(
        &self,
        ctx: &RequestContext,
        job: &BookJob,
    ) -> Result<BookJobResponse, BookingError> {
        validate::profile(job)?;
        let slot = job.slot().ok_or_else(|| {
            BookingError::invalid("$.TimeConstraints", "has no bookable slot", "")
        })?;
        if let Some(reason) = self.refuse(slot) {
            return Err(BookingError::slot_unavailable(reason));
        }
        let store = |e: kv::KvError| BookingError::internal(format!("key-value store: {e:?}"));
        if let Some(capacity) = self.daily_capacity {
            let area = job
                .location
                .as_ref()
                .and_then(|l| l.service_area_id.as_deref())
                .filter(|a| !a.is_empty())
                .unwrap_or("default");
            let day = Timestamp::from_local_day(slot.start.local_day(self.utc_offset_minutes), 0);
            let day = &day.to_string()[..10];
            let taken = kv::increment(&format!("capacity/{area}/{day}"), 1).map_err(store)?;
            if taken > capacity {
                // The failed booking's writes are dropped: the count stays at capacity.
                return Err(BookingError::slot_unavailable(format!(
                    "service area {area} is fully booked on {day} ({capacity} bookings)"
                )));
            }
        }
        let number = kv::increment("sequence/order", 1).map_err(store)?;
        let key = &ctx.idempotency_key;
        Ok(BookJobResponse {
            order_num: format!("{}{number:08}", self.order_prefix),
            ordered_parts: parts_orders(key, job.required_parts.as_deref().unwrap_or_default()),
        })
    }

    /// The open slots inside the query's windows.
    pub fn search(
        &self,
        query: &AppointmentSearch,
    ) -> Result<AppointmentSearchResponse, BookingError> {
        let windows = query.slots();
        if windows.is_empty() {
            return Err(BookingError::invalid(
                "$.TimeConstraints",
                "at least one availability window with Period.Start and Period.End is required",
                "",
            ));
        }
        let off = self.utc_offset_minutes;
        let mut found = Vec::new();
        'windows: for window in windows {
            let mut day = window.start.local_day(off);
            while Timestamp::from_local_day(day, off) < window.end {
                let midnight = Timestamp::from_local_day(day, off);
                let mut start = midnight.plus_minutes(self.open);
                loop {
                    let end = start.plus_minutes(self.slot_minutes);
                    if end > midnight.plus_minutes(self.close) {
                        break;
                    }
                    let slot = Slot { start, end };
                    if start >= window.start && end <= window.end && self.refuse(slot).is_none() {
                        if found.len() == self.max_slots {
                            break 'windows;
                        }
                        found.push(slot);
                    }
                    start = end;
                }
                day += 1;
            }
        }
        let status_msg = Some(match found.len() {
            0 => "no open slots within the requested window".to_string(),
            1 => "1 open slot found".to_string(),
            n => format!("{n} open slots found"),
        });
        let time_constraints = found
            .into_iter()
            .map(|slot| {
                slot.offered(
                    Some(format!("SLOT-{}", slot.start.millis() / 60_000)),
                    Some(self.describe(slot)),
                )
            })
            .collect();
        Ok(AppointmentSearchResponse {
            status_msg,
            time_constraints,
        })
    }
}

/// FNV-1a: a stable hash with no dependencies, enough to derive readable identifiers.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn short_id(key: &str, purpose: &str) -> String {
    format!("{:010}", fnv1a(&[key, purpose]) % 10_000_000_000)
}

/// Groups required parts into parts orders by (ship-to location, urgency). A part with
/// `SupersededParts` is ordered as its replacements.
pub fn parts_orders(key: &str, parts: &[RequiredPart]) -> Vec<OrderedPart> {
    let mut groups: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for part in parts {
        let group = (
            part.ship_to_location.clone().unwrap_or_default(),
            part.urgency.clone().unwrap_or_default(),
        );
        let replacements: Vec<String> = part
            .superseded_parts
            .iter()
            .flatten()
            .filter_map(|s| s.prod_num.clone())
            .filter(|p| !p.trim().is_empty())
            .collect();
        let numbers = if replacements.is_empty() {
            part.prod_num
                .clone()
                .into_iter()
                .filter(|p| !p.trim().is_empty())
                .collect()
        } else {
            replacements
        };
        let entry = groups.entry(group).or_default();
        for number in numbers {
            if !entry.contains(&number) {
                entry.push(number);
            }
        }
    }
    groups
        .into_iter()
        .filter(|(_, parts)| !parts.is_empty())
        .map(|((ship_to, urgency), parts)| OrderedPart {
            part_order_num: format!(
                "PO-{}",
                short_id(key, &format!("parts/{ship_to}/{urgency}"))
            ),
            parts,
        })
        .collect()
}

fn wall_clock() -> Timestamp {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
}

/// The plugin: reads its settings per request (a fresh instance serves each request).
pub struct CapacityBooker;

impl BookingPlugin for CapacityBooker {
    fn book(ctx: RequestContext, job: BookJob) -> Result<BookJobResponse, BookingError> {
        let rules = Rules::from_config(config::get, wall_clock());
        let answer = rules.book(&ctx, &job);
        log::outcome(&answer);
        answer
    }
}

impl SearchPlugin for CapacityBooker {
    fn search(
        _ctx: RequestContext,
        query: AppointmentSearch,
    ) -> Result<AppointmentSearchResponse, BookingError> {
        Rules::from_config(config::get, wall_clock()).search(&query)
    }
}

followup_sdk::export_plugin!(CapacityBooker: book, search);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn rules(pairs: &[(&str, &str)]) -> Rules {
        let config: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Rules::from_config(|k| config.get(k).cloned(), Timestamp(0))
    }

    fn new_york() -> Rules {
        rules(&[
            ("now", "2024-06-17T12:00:00Z"),
            ("utc_offset_minutes", "-240"),
            ("closed_dates", "2024-07-04"),
        ])
    }

    fn slot(start: &str, end: &str) -> Slot {
        Slot {
            start: Timestamp::parse(start).unwrap(),
            end: Timestamp::parse(end).unwrap(),
        }
    }

    fn ctx(key: &str) -> RequestContext {
        RequestContext {
            work_order_id: Some("WO-1".into()),
            route: "r".into(),
            request_id: "q".into(),
            idempotency_key: key.into(),
            claims: None,
        }
    }

    fn job(start: &str, end: &str, parts: &str) -> BookJob {
        let text = format!(
            r#"{{"Account":{{"AccountNum":"A"}},"Location":{{"LocationNum":"L"}},
            "OriginalOrderNum":"WO-1","RequiredParts":{parts},
            "TimeConstraints":[{{"Period":{{"Start":"{start}","End":"{end}"}}}}]}}"#
        );
        json::decode_text::<BookJob>(&text).unwrap()
    }

    #[test]
    fn books_an_open_weekday_slot() {
        let r = new_york();
        assert_eq!(
            r.refuse(slot("2024-06-18T13:00:00Z", "2024-06-18T17:00:00Z")),
            None
        );
    }

    #[test]
    fn refuses_past_closed_and_out_of_hours_slots() {
        let r = new_york();
        let cases = [
            (
                ("2024-06-10T13:00:00Z", "2024-06-10T17:00:00Z"),
                "in the past",
            ),
            (
                ("2024-06-22T13:00:00Z", "2024-06-22T17:00:00Z"),
                "closed day",
            ),
            (
                ("2024-07-04T13:00:00Z", "2024-07-04T17:00:00Z"),
                "closed day",
            ),
            (
                ("2024-06-18T11:00:00Z", "2024-06-18T13:00:00Z"),
                "business hours",
            ),
            (
                ("2024-06-18T20:00:00Z", "2024-06-18T23:00:00Z"),
                "business hours",
            ),
            (
                ("2024-06-18T20:00:00Z", "2024-06-19T13:00:00Z"),
                "business hours",
            ),
            (
                ("2024-06-18T13:00:00Z", "2024-06-18T13:30:00Z"),
                "shorter than",
            ),
        ];
        for ((start, end), reason) in cases {
            let why = r.refuse(slot(start, end)).unwrap_or_default();
            assert!(why.contains(reason), "{start}: {why:?}");
        }
    }

    #[test]
    fn order_numbers_come_from_a_gap_free_sequence() {
        kv::reset();
        let r = new_york();
        let j = job("2024-06-18T13:00:00Z", "2024-06-18T17:00:00Z", "[]");
        let a = r.book(&ctx("key-1"), &j).unwrap();
        let b = r.book(&ctx("key-2"), &j).unwrap();
        assert_eq!(a.order_num, "FU-00000001");
        assert_eq!(b.order_num, "FU-00000002");
        assert!(a.ordered_parts.is_empty());
    }

    #[test]
    fn a_full_day_of_a_service_area_is_unavailable() {
        kv::reset();
        let r = Rules {
            daily_capacity: Some(2),
            ..new_york()
        };
        let j = job("2024-06-18T13:00:00Z", "2024-06-18T17:00:00Z", "[]");
        assert!(r.book(&ctx("a"), &j).is_ok());
        assert!(r.book(&ctx("b"), &j).is_ok());
        let full = r.book(&ctx("c"), &j).unwrap_err();
        assert!(
            matches!(full, BookingError::SlotUnavailable(ref m) if m.contains("fully booked on 2024-06-18")),
            "{full:?}"
        );
        // Another day has its own capacity.
        let next_day = job("2024-06-19T13:00:00Z", "2024-06-19T17:00:00Z", "[]");
        assert!(r.book(&ctx("d"), &next_day).is_ok());
    }

    #[test]
    fn parts_are_grouped_and_superseded_parts_replace_the_original() {
        let parts = r#"[
            {"ProdNum":"P1","ShipToLocation":"1002","Urgency":"1001"},
            {"ProdNum":"P2","ShipToLocation":"1002","Urgency":"1001",
             "SupersededParts":[{"ProdNum":"P2-NEW"}]},
            {"ProdNum":"P3","ShipToLocation":"1001","Urgency":"1001"},
            {"ProdNum":"P1","ShipToLocation":"1002","Urgency":"1001"}]"#;
        let j = job("2024-06-18T13:00:00Z", "2024-06-18T17:00:00Z", parts);
        let answer = new_york().book(&ctx("k"), &j).unwrap();
        let orders: Vec<(String, Vec<String>)> = answer
            .ordered_parts
            .into_iter()
            .map(|o| (o.part_order_num, o.parts))
            .collect();
        assert_eq!(orders.len(), 2);
        assert_eq!(orders[0].1, ["P3"]);
        assert_eq!(orders[1].1, ["P1", "P2-NEW"]);
        assert_ne!(orders[0].0, orders[1].0);
    }

    #[test]
    fn refuses_a_job_without_a_slot_with_its_path() {
        let mut j = job("2024-06-18T13:00:00Z", "2024-06-18T17:00:00Z", "[]");
        j.time_constraints = Some(vec![]);
        match new_york().book(&ctx("k"), &j) {
            Err(BookingError::InvalidRequest(e)) => {
                assert_eq!(e.params[0].path, "$.TimeConstraints")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn searches_open_slots_inside_the_window() {
        let r = new_york();
        let q = job("2024-06-21T12:00:00Z", "2024-06-24T22:00:00Z", "[]");
        let answer = r.search(&q).unwrap();
        let starts: Vec<String> = answer
            .time_constraints
            .iter()
            .map(|t| t.period.as_ref().unwrap().start.clone().unwrap())
            .collect();
        // Friday morning and afternoon, the weekend closed, Monday morning and afternoon.
        assert_eq!(
            starts,
            [
                "2024-06-21T12:00:00.000Z",
                "2024-06-21T16:00:00.000Z",
                "2024-06-24T12:00:00.000Z",
                "2024-06-24T16:00:00.000Z"
            ]
        );
        assert_eq!(answer.status_msg.as_deref(), Some("4 open slots found"));
        assert_eq!(
            answer.time_constraints[0].desc.as_deref(),
            Some("Fri 2024-06-21 08:00–12:00 (UTC-04:00)")
        );
    }

    #[test]
    fn search_stops_at_max_slots() {
        let r = rules(&[("now", "2024-06-17T00:00:00Z"), ("max_slots", "3")]);
        let q = job("2024-06-17T00:00:00Z", "2024-07-17T00:00:00Z", "[]");
        assert_eq!(r.search(&q).unwrap().time_constraints.len(), 3);
    }
}
