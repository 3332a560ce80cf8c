//! The capacity-booker rules as plain Rust, without the component's exports: the plugin
//! (`lib.rs`) exports them, and the wasi:http peer of the load comparison
//! (`plugins/capacity-booker-http`) compiles this same file into its own component.

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
    pub order_numbers: OrderNumbers,
}

/// Where follow-up order numbers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderNumbers {
    /// The next number of a gap-free sequence in the key-value store (`FU-00000001`).
    Sequence,
    /// Ten digits derived from the booking's idempotency key (`FU-4821937731`): the same
    /// booking always gets the same number, and no counter is shared.
    Key,
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
            order_numbers: OrderNumbers::Sequence,
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
            order_numbers: match get("order_numbers").as_deref().map(str::trim) {
                Some("key") => OrderNumbers::Key,
                _ => d.order_numbers,
            },
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
        self.book_with(ctx, job, &mut kv::increment)
    }

    /// [`Rules::book`] with the counters behind `increment` (the key-value store's
    /// `increment` in a plugin): for a program that embeds these rules without the store.
    pub fn book_with(
        &self,
        ctx: &RequestContext,
        job: &BookJob,
        increment: &mut dyn FnMut(&str, i64) -> Result<i64, kv::KvError>,
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
            let taken = increment(&format!("capacity/{area}/{day}"), 1).map_err(store)?;
            if taken > capacity {
                // The failed booking's writes are dropped: the count stays at capacity.
                return Err(BookingError::slot_unavailable(format!(
                    "service area {area} is fully booked on {day} ({capacity} bookings)"
                )));
            }
        }
        let key = &ctx.idempotency_key;
        let order_num = match self.order_numbers {
            OrderNumbers::Sequence => {
                let number = increment("sequence/order", 1).map_err(store)?;
                format!("{}{number:08}", self.order_prefix)
            }
            OrderNumbers::Key => format!("{}{}", self.order_prefix, short_id(key, "order")),
        };
        Ok(BookJobResponse {
            order_num,
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
