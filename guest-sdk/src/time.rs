//! Contract date-times (`2024-06-18T17:00:00.000Z`) as milliseconds since the Unix epoch.

use crate::{BookJob, Period};
use std::fmt;

/// An instant in UTC, to the millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

const MINUTE: i64 = 60_000;
const DAY: i64 = 24 * 60 * MINUTE;

impl Timestamp {
    /// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z`; anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        crate::json::parse_datetime(text).map(Timestamp)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn plus_minutes(self, minutes: i64) -> Self {
        Timestamp(self.0 + minutes * MINUTE)
    }

    /// Minutes from `self` to `later` (negative when `later` is earlier).
    pub fn minutes_until(self, later: Timestamp) -> i64 {
        (later.0 - self.0).div_euclid(MINUTE)
    }

    /// Days since 1970-01-01 of this instant seen at `offset_minutes` from UTC.
    pub fn local_day(self, offset_minutes: i64) -> i64 {
        (self.0 + offset_minutes * MINUTE).div_euclid(DAY)
    }

    /// Minutes since local midnight at `offset_minutes` from UTC.
    pub fn local_minute_of_day(self, offset_minutes: i64) -> i64 {
        (self.0 + offset_minutes * MINUTE).rem_euclid(DAY) / MINUTE
    }

    /// ISO weekday (1 = Monday … 7 = Sunday) at `offset_minutes` from UTC.
    pub fn local_weekday(self, offset_minutes: i64) -> u8 {
        // 1970-01-01 was a Thursday (ISO 4).
        ((self.local_day(offset_minutes) + 3).rem_euclid(7) + 1) as u8
    }

    /// Local midnight (at `offset_minutes` from UTC) of day number `day`.
    pub fn from_local_day(day: i64, offset_minutes: i64) -> Self {
        Timestamp(day * DAY - offset_minutes * MINUTE)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::json::format_datetime(self.0))
    }
}

/// A parsed `Period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Slot {
    /// Parses both ends of a period; `None` if either is absent or not a date-time.
    pub fn from_period(period: &Period) -> Option<Self> {
        Some(Slot {
            start: Timestamp::parse(period.start.as_deref()?)?,
            end: Timestamp::parse(period.end.as_deref()?)?,
        })
    }

    pub fn minutes(&self) -> i64 {
        self.start.minutes_until(self.end)
    }

    /// The slot as an open slot in a search's answer: a `TimeConstraints` entry of type
    /// `1001` with this period.
    pub fn offered(self, id: Option<String>, desc: Option<String>) -> crate::TimeConstraint {
        crate::TimeConstraint {
            id,
            desc,
            type_: Some("1001".into()),
            period: Some(self.to_period()),
            delete: None,
            extensions: None,
        }
    }

    /// The slot as a `Period` record.
    pub fn to_period(self) -> Period {
        Period {
            start: Some(self.start.to_string()),
            end: Some(self.end.to_string()),
            extensions: None,
        }
    }
}

impl BookJob {
    /// The first `TimeConstraints` entry with a parsable period: the slot being booked,
    /// or the first availability window of a search.
    pub fn slot(&self) -> Option<Slot> {
        self.time_constraints
            .iter()
            .flatten()
            .find_map(|tc| tc.period.as_ref().and_then(Slot::from_period))
    }

    /// Every parsable `TimeConstraints` period, in order.
    pub fn slots(&self) -> Vec<Slot> {
        self.time_constraints
            .iter()
            .flatten()
            .filter_map(|tc| tc.period.as_ref().and_then(Slot::from_period))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_and_without_milliseconds() {
        let a = Timestamp::parse("2024-06-18T17:00:00.000Z").unwrap();
        let b = Timestamp::parse("2024-06-18T17:00:00Z").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.millis(), 1_718_730_000_000);
        assert_eq!(
            Timestamp::parse("2024-06-18T17:00:00.5Z").unwrap().millis(),
            a.millis() + 500
        );
        // Milliseconds are the first three digits of any fraction.
        for (fraction, millis) in [
            (".25", 250),
            (".042", 42),
            (".123456789", 123),
            (".0009", 0),
        ] {
            let text = format!("2024-06-18T17:00:00{fraction}Z");
            assert_eq!(
                Timestamp::parse(&text).unwrap().millis(),
                a.millis() + millis,
                "{text}"
            );
        }
        assert_eq!(a.to_string(), "2024-06-18T17:00:00.000Z");
    }

    #[test]
    fn refuses_what_is_not_a_contract_date_time() {
        for bad in [
            "",
            "2024-06-18",
            "2024-06-18T17:00:00",
            "2024-06-18T17:00:00+02:00",
            "2024-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-06-18T24:00:00Z",
            "2024-06-18T17:00:00.Z",
            "2024-06-18 17:00:00Z",
            "２024-06-18T17:00:00Z",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad}");
        }
        assert!(Timestamp::parse("2024-02-29T23:59:59.999Z").is_some());
    }

    #[test]
    fn local_calendar_follows_the_offset() {
        // Tuesday 2024-06-18 02:00 UTC is Monday 22:00 in New York (UTC-4 in June).
        let t = Timestamp::parse("2024-06-18T02:00:00Z").unwrap();
        assert_eq!(t.local_weekday(0), 2);
        assert_eq!(t.local_weekday(-240), 1);
        assert_eq!(t.local_minute_of_day(-240), 22 * 60);
        let midnight = Timestamp::from_local_day(t.local_day(-240), -240);
        assert_eq!(midnight.to_string(), "2024-06-17T04:00:00.000Z");
    }

    #[test]
    fn date_math_round_trips_over_centuries() {
        for millis in [0, 951_782_400_000, -2_208_988_800_000, 4_102_444_800_000] {
            let text = Timestamp(millis).to_string();
            assert_eq!(Timestamp::parse(&text), Some(Timestamp(millis)), "{text}");
        }
    }
}
