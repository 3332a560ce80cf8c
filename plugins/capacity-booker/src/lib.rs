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
//!   journal with the same number). With `order_numbers = "key"` it is derived from the
//!   booking's idempotency key instead: no shared counter, so bookings never contend for
//!   it (several hosts, or the highest throughput), at the price of numbers that are
//!   unique per booking but not consecutive;
//! - required parts are grouped into parts orders by ship-to location and urgency; a part's
//!   `SupersededParts` replace it in the order.
//!
//! Search (`search`): open slots of `slot_minutes` inside business hours, within the
//! requested windows, skipping the past and closed days.
//!
//! Logon (`authenticate`, for an authentication route): the username and password must
//! match an entry of the config value `users`, comma-separated `username:PHC-string`
//! entries with Argon2id hashes as `followup hash-password USERNAME` prints them; the
//! token's subject is the username. Passwords never appear in the configuration.
//!
//! Configuration (`[plugins.capacity-booker.config]`), all optional:
//! `utc_offset_minutes` (0), `open` ("08:00"), `close` ("18:00"), `closed_weekdays`
//! ("6,7": ISO numbers, Monday = 1), `closed_dates` (comma-separated `YYYY-MM-DD`),
//! `min_slot_minutes` (60), `slot_minutes` (240), `max_slots` (10), `order_prefix` ("FU-"),
//! `daily_capacity` (unlimited), `order_numbers` (`sequence` or `key`), and `now` (an ISO-8601 instant that replaces the clock, for demos and reproducible tests).

#[path = "rules.rs"]
mod rules;

pub use rules::*;

use followup_sdk::time::Timestamp;
use followup_sdk::*;

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

impl AuthPlugin for CapacityBooker {
    fn authenticate(_ctx: RequestContext, credentials: Credentials) -> Result<Identity, AuthError> {
        let users = password::Users::parse(&config::get("users").unwrap_or_default())
            .map_err(|e| AuthError::Internal(format!("config value users: {e}")))?;
        if !users.check(&credentials.username, &credentials.password) {
            return Err(AuthError::InvalidLogon(
                "unknown user or wrong password".into(),
            ));
        }
        Ok(Identity {
            subject: credentials.username,
            name: None,
            email: None,
            extra: None,
        })
    }
}

followup_sdk::export_plugin!(CapacityBooker: book, search, authenticate);

#[cfg(test)]
mod tests {
    use super::*;
    use followup_sdk::time::Slot;
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
    fn order_numbers_from_the_key_need_no_store() {
        kv::reset();
        let r = Rules {
            order_numbers: OrderNumbers::Key,
            ..new_york()
        };
        let j = job("2024-06-18T13:00:00Z", "2024-06-18T17:00:00Z", "[]");
        let a = r.book(&ctx("key-1"), &j).unwrap();
        assert_eq!(a.order_num, r.book(&ctx("key-1"), &j).unwrap().order_num);
        assert_ne!(a.order_num, r.book(&ctx("key-2"), &j).unwrap().order_num);
        assert!(
            a.order_num.starts_with("FU-") && a.order_num.len() == 13,
            "{a:?}"
        );
        assert_eq!(kv::get("sequence/order").unwrap(), None);
        assert_eq!(
            rules(&[("order_numbers", "key")]).order_numbers,
            OrderNumbers::Key
        );
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
