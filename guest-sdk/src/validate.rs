//! The recommended Book Job validation profile ("strict but tolerant", §5 of the contract
//! reference). The host has already checked JSON types; these are the booking rules on
//! which fields must be present, answered exactly like a type error (`invalid-request`
//! with one `invalidParams` entry per problem).

use crate::time::Slot;
use crate::{BookJob, BookingError, InvalidParam, InvalidRequestError};

fn blank(s: &Option<String>) -> bool {
    s.as_deref().is_none_or(|s| s.trim().is_empty())
}

/// Checks the profile: an `Account` with `AccountNum` or `Name`, a `Location` with
/// `LocationNum` or `Address`, a non-empty `OriginalOrderNum`, and at least one
/// `TimeConstraints` entry whose `Period` parses with `Start < End`.
pub fn profile(job: &BookJob) -> Result<(), BookingError> {
    let mut params = Vec::new();
    let mut add = |name: &str, path: &str, reason: &str, value: String| {
        params.push(InvalidParam {
            name: name.into(),
            reason: reason.into(),
            path: path.into(),
            value,
        })
    };

    match &job.account {
        None => add("Account", "$.Account", "is required", String::new()),
        Some(a) if blank(&a.account_num) && blank(&a.name) => add(
            "Account",
            "$.Account",
            "needs AccountNum (managed account) or Name (ad-hoc account)",
            String::new(),
        ),
        Some(_) => {}
    }
    match &job.location {
        None => add("Location", "$.Location", "is required", String::new()),
        Some(l) if blank(&l.location_num) && l.address.is_none() => add(
            "Location",
            "$.Location",
            "needs LocationNum (managed location) or Address (ad-hoc location)",
            String::new(),
        ),
        Some(_) => {}
    }
    if blank(&job.original_order_num) {
        add(
            "OriginalOrderNum",
            "$.OriginalOrderNum",
            "is required and must not be empty",
            job.original_order_num.clone().unwrap_or_default(),
        );
    }
    check_slots(job, &mut add);

    if params.is_empty() {
        Ok(())
    } else {
        let message = format!("{} properties are invalid", params.len());
        Err(BookingError::InvalidRequest(InvalidRequestError {
            message,
            params,
        }))
    }
}

fn check_slots(job: &BookJob, add: &mut impl FnMut(&str, &str, &str, String)) {
    let entries = job.time_constraints.as_deref().unwrap_or_default();
    if entries.is_empty() {
        add(
            "TimeConstraints",
            "$.TimeConstraints",
            "at least one slot with Period.Start and Period.End is required",
            String::new(),
        );
        return;
    }
    for (i, tc) in entries.iter().enumerate() {
        let Some(period) = &tc.period else {
            add(
                "Period",
                &format!("$.TimeConstraints[{i}].Period"),
                "is required",
                String::new(),
            );
            continue;
        };
        let mut complete = true;
        for (name, value) in [("Start", &period.start), ("End", &period.end)] {
            if blank(value) {
                complete = false;
                add(
                    name,
                    &format!("$.TimeConstraints[{i}].Period.{name}"),
                    "is required",
                    value.clone().unwrap_or_default(),
                );
            }
        }
        if !complete {
            continue;
        }
        match Slot::from_period(period) {
            Some(slot) if slot.start < slot.end => {}
            Some(_) => add(
                "End",
                &format!("$.TimeConstraints[{i}].Period.End"),
                "must be after Period.Start",
                period.end.clone().unwrap_or_default(),
            ),
            None => add(
                "Period",
                &format!("$.TimeConstraints[{i}].Period"),
                "Start and End must be UTC ISO-8601 date-times",
                String::new(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json;

    fn job(text: &str) -> BookJob {
        json::decode_text::<BookJob>(text).unwrap()
    }

    fn paths(err: BookingError) -> Vec<String> {
        match err {
            BookingError::InvalidRequest(e) => e.params.into_iter().map(|p| p.path).collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    const MINIMAL: &str = r#"{"Account":{"AccountNum":"A"},"Location":{"LocationNum":"L"},
        "OriginalOrderNum":"WO-1","TimeConstraints":[{"Period":{
        "Start":"2024-06-18T13:00:00.000Z","End":"2024-06-18T17:00:00.000Z"}}]}"#;

    #[test]
    fn the_minimal_example_passes() {
        assert!(profile(&job(MINIMAL)).is_ok());
        let ad_hoc = r#"{"Account":{"Name":"Okafor"},"Location":{"Address":{}},
            "OriginalOrderNum":"WO-1","TimeConstraints":[{"Period":{
            "Start":"2024-06-18T13:00:00Z","End":"2024-06-18T17:00:00Z"}}]}"#;
        assert!(profile(&job(ad_hoc)).is_ok());
    }

    #[test]
    fn an_empty_job_names_every_missing_field() {
        assert_eq!(
            paths(profile(&job("{}")).unwrap_err()),
            [
                "$.Account",
                "$.Location",
                "$.OriginalOrderNum",
                "$.TimeConstraints"
            ]
        );
    }

    #[test]
    fn slots_need_both_ends_in_order() {
        let t = r#"{"Account":{"AccountNum":"A"},"Location":{"LocationNum":"L"},
            "OriginalOrderNum":"WO-1","TimeConstraints":[
            {"Period":{"Start":"2024-06-18T13:00:00Z"}},
            {"Period":{"Start":"2024-06-18T13:00:00Z","End":"2024-06-18T12:00:00Z"}},
            {"Desc":"no period"}]}"#;
        assert_eq!(
            paths(profile(&job(t)).unwrap_err()),
            [
                "$.TimeConstraints[0].Period.End",
                "$.TimeConstraints[1].Period.End",
                "$.TimeConstraints[2].Period"
            ]
        );
    }

    #[test]
    fn blank_identifiers_do_not_count() {
        let t = MINIMAL
            .replace(r#""AccountNum":"A""#, r#""AccountNum":"  ""#)
            .replace(r#""OriginalOrderNum":"WO-1""#, r#""OriginalOrderNum":"""#);
        assert_eq!(
            paths(profile(&job(&t)).unwrap_err()),
            ["$.Account", "$.OriginalOrderNum"]
        );
    }
}
