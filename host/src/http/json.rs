//! Untrusted bytes to JSON: the body's shape checked against the limits, then parsed into a
//! `serde_json::Value` that refuses a key given twice in one object.

use crate::contract::{self, Problem};
use crate::error::ApiError;
use serde_json::Value;

/// Checks the body's shape against `limits`, then parses it as a JSON object. This and
/// [`contract::decode`] are everything that touches untrusted bytes before a plugin runs
/// (and what the fuzz target drives).
pub fn parse_body(body: &[u8], limits: &crate::config::InputLimits) -> Result<Value, ApiError> {
    limits.check_json_shape(body)?;
    parse_json(body)
}

/// Parses one JSON text that gives no key twice in one object: `None` when it is not JSON
/// or repeats a key. For small untrusted texts that are refused without detail (a token's
/// segments): a claim given twice could be read one way here and another way elsewhere.
pub fn parse_without_repeats(text: &[u8]) -> Option<Value> {
    unique_keys::from_slice(text).ok()
}

/// Parses the body as a JSON object, with the position of a syntax error and the path of a
/// key given twice in one object.
fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    let problem = |reason: String, value: &str| {
        ApiError::invalid(vec![Problem {
            name: "$".into(),
            reason,
            path: "$".into(),
            value: value.into(),
        }])
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(problem("the body is empty; send a JSON object".into(), ""));
    }
    let value = unique_keys::from_slice(body).map_err(|e| match e {
        unique_keys::Refused::Duplicate(duplicate) => ApiError::invalid(vec![Problem {
            path: duplicate.path(),
            reason: "is given more than once in the same object; send each key once".into(),
            value: contract::codec::value_text(&duplicate.value),
            name: duplicate.key,
        }]),
        unique_keys::Refused::Syntax(e) => problem(
            format!(
                "is not valid JSON: {e} (line {}, column {})",
                e.line(),
                e.column()
            ),
            "",
        ),
    })?;
    if !value.is_object() {
        let kind = match value {
            Value::Array(_) => "an array",
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            _ => "null",
        };
        return Err(problem(
            format!("must be a JSON object, not {kind}"),
            &contract::codec::value_text(&value),
        ));
    }
    Ok(value)
}

/// JSON parsing that refuses an object with the same key twice.
///
/// `serde_json` keeps the last of a repeated key; ServiceMobility, a customer's system or a
/// plugin's own parser may keep the first, and then the host would check, key and book one
/// request while the others act on another. The check rides on the one parse: a visitor
/// builds the same [`Value`] `serde_json` would and notices the map entry that is already
/// taken. The path to the duplicate is built only when there is one, a segment per level
/// as the error travels out of the nesting, so a body without duplicates costs what
/// `serde_json::from_slice` costs.
mod unique_keys {
    use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
    use serde_json::map::Entry;
    use serde_json::{Map, Number, Value};
    use std::fmt::{self, Write as _};

    /// Why a body did not parse.
    #[derive(Debug)]
    pub enum Refused {
        /// Not JSON, or more than one JSON value.
        Syntax(serde_json::Error),
        Duplicate(Box<Duplicate>),
    }

    /// A key given twice in one object.
    #[derive(Debug)]
    pub struct Duplicate {
        pub key: String,
        /// The value given the second time.
        pub value: Value,
        /// From the duplicate out to the body.
        segments: Vec<Segment>,
    }

    #[derive(Debug)]
    enum Segment {
        Key(String),
        Index(usize),
    }

    impl Duplicate {
        /// The JSON path of the duplicate, as the contract's decoder writes paths
        /// (`$.RequiredParts[1].Qty`).
        pub fn path(&self) -> String {
            let mut path = String::from("$");
            for segment in self.segments.iter().rev() {
                match segment {
                    Segment::Key(key) => {
                        path.push('.');
                        path.push_str(key);
                    }
                    // Writing into a String cannot fail.
                    Segment::Index(i) => {
                        let _ = write!(path, "[{i}]");
                    }
                }
            }
            path
        }
    }

    /// Parses one JSON text, as `serde_json::from_slice::<Value>` does, refusing duplicate
    /// keys.
    pub fn from_slice(bytes: &[u8]) -> Result<Value, Refused> {
        // The reader of a `&str` skips the UTF-8 check the byte reader makes of every
        // string, a call each (3 % of a booking's CPU); one check of the whole text costs
        // a fraction of that. Bytes that are not UTF-8 go to the byte reader, whose error
        // says where.
        match std::str::from_utf8(bytes) {
            Ok(text) => parse(serde_json::Deserializer::from_str(text)),
            Err(_) => parse(serde_json::Deserializer::from_slice(bytes)),
        }
    }

    fn parse<'de, R: serde_json::de::Read<'de>>(
        mut de: serde_json::Deserializer<R>,
    ) -> Result<Value, Refused> {
        let mut duplicate = None;
        let parsed = Seed(&mut duplicate)
            .deserialize(&mut de)
            .and_then(|value| de.end().map(|()| value));
        parsed.map_err(|e| match duplicate {
            Some(duplicate) => Refused::Duplicate(duplicate),
            None => Refused::Syntax(e),
        })
    }

    /// Deserialises one value; on finding a duplicate it records it here and fails.
    struct Seed<'a>(&'a mut Option<Box<Duplicate>>);

    impl Seed<'_> {
        /// Adds `segment` to the path of a duplicate found inside the current value.
        fn on_the_way_out(&mut self, segment: impl FnOnce() -> Segment) {
            if let Some(duplicate) = self.0.as_deref_mut() {
                duplicate.segments.push(segment());
            }
        }
    }

    impl<'de> DeserializeSeed<'de> for Seed<'_> {
        type Value = Value;

        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Seed<'_> {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }

        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }

        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::Number(v.into()))
        }

        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::Number(v.into()))
        }

        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            // As serde_json's own `Value`; JSON text has no NaN or infinity.
            Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
        }

        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }

        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }

        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }

        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Value, A::Error> {
            let mut items = Vec::new();
            loop {
                match seq.next_element_seed(Seed(&mut *self.0)) {
                    Ok(Some(item)) => items.push(item),
                    Ok(None) => return Ok(Value::Array(items)),
                    Err(e) => {
                        self.on_the_way_out(|| Segment::Index(items.len()));
                        return Err(e);
                    }
                }
            }
        }

        fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Value, A::Error> {
            let mut object = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = match map.next_value_seed(Seed(&mut *self.0)) {
                    Ok(value) => value,
                    Err(e) => {
                        self.on_the_way_out(|| Segment::Key(key));
                        return Err(e);
                    }
                };
                match object.entry(key) {
                    Entry::Vacant(slot) => {
                        slot.insert(value);
                    }
                    Entry::Occupied(slot) => {
                        let key = slot.key().clone();
                        *self.0 = Some(Box::new(Duplicate {
                            segments: vec![Segment::Key(key.clone())],
                            key,
                            value,
                        }));
                        return Err(de::Error::custom("duplicate key"));
                    }
                }
            }
            Ok(Value::Object(object))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn json_errors_name_the_position() {
        let err = parse_json(b"{\"a\": }").unwrap_err();
        assert!(err.invalid_params[0].reason.contains("line 1"), "{err:?}");
        let err = parse_json(b"[1,2]").unwrap_err();
        assert!(err.invalid_params[0].reason.contains("an array"));
        let err = parse_json(b"  \n").unwrap_err();
        assert!(err.invalid_params[0].reason.contains("empty"));
    }

    fn duplicate(body: &str) -> (String, String, String) {
        let err = parse_json(body.as_bytes()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidRequest);
        assert_eq!(err.invalid_params.len(), 1, "{err:?}");
        let p = &err.invalid_params[0];
        assert!(p.reason.contains("more than once"), "{err:?}");
        (p.name.clone(), p.path.clone(), p.value.clone())
    }

    #[test]
    fn a_key_given_twice_is_refused_with_its_path() {
        assert_eq!(
            duplicate(r#"{"A":1,"B":2,"A":3}"#),
            ("A".into(), "$.A".into(), "3".into())
        );
        assert_eq!(
            duplicate(r#"{"Account":{"Name":"x","Id":1,"Name":"y"}}"#).1,
            "$.Account.Name"
        );
        assert_eq!(
            duplicate(r#"{"RequiredParts":[{"Qty":1},{"Qty":1,"Part":"p","Qty":9}]}"#),
            ("Qty".into(), "$.RequiredParts[1].Qty".into(), "9".into())
        );
        assert_eq!(
            duplicate(r#"{"a":[[1],[2,{"b":{"c":0,"c":{}}}]]}"#).1,
            "$.a[1][1].b.c"
        );
        // Keys are compared as decoded: an escape does not hide a duplicate.
        assert_eq!(duplicate(r#"{"Qty":1,"\u0051ty":2}"#).1, "$.Qty");
        // The first duplicate is reported, even before a syntax error further on.
        assert_eq!(duplicate(r#"{"a":1,"a":2,"#).1, "$.a");
    }

    #[test]
    fn the_same_key_in_different_objects_is_no_duplicate() {
        let value =
            parse_json(br#"{"A":{"Name":1},"B":{"Name":2},"C":[{"Name":3},{"Name":4}]}"#).unwrap();
        assert_eq!(value["C"][1]["Name"], 4);
        // Keys differing only in case are different keys.
        assert!(parse_json(br#"{"qty":1,"Qty":2}"#).is_ok());
    }

    #[test]
    fn the_strict_parser_builds_what_serde_json_builds() {
        // (The contract's examples go through it in every booking of the integration tests.)
        let bodies: [&[u8]; 5] = [
            "{\"Name\":\"Müller\",\"Ort\":\"東京\",\"Notiz\":\"café \\u00e9\"}".as_bytes(),
            br#"{"Account":{"Name":"R Morales","Lat":"40.7","Lon":-73.9},"RequiredParts":[{"Part":"W1","Qty":2},{"Part":"W2","Qty:":1}],"TimeConstraints":[{"Period":{"Start":"2024-06-17T16:00:00.000Z","End":"2024-06-17T20:00:00Z"}}]}"#,
            br#"{"n":[0,-0,1.5,-2.25e-3,18446744073709551615,-9223372036854775808,1e308,0.1]}"#,
            br#"{"s":"a\"b\\c\u00e9\ud83d\ude00\n","t":true,"f":false,"z":null,"e":{},"a":[]}"#,
            b" {\"padded\" : [ 1 , 2 ] } \n",
        ];
        for body in bodies {
            let ours = parse_json(body).unwrap();
            let theirs: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(body));
            assert_eq!(ours.to_string(), theirs.to_string());
        }
        // Whatever serde_json refuses is refused, with its position: bytes that are not
        // UTF-8 too, inside a string or out.
        for body in [
            &b"{\"a\":\"\xff\"}"[..],
            b"{\"a\":1,\xc3}",
            b"{\"caf\xc3\xa9\":\"\xe9\"}",
        ] {
            let err = parse_json(body).unwrap_err();
            assert!(serde_json::from_slice::<Value>(body).is_err());
            assert!(err.invalid_params[0].reason.contains("line 1"), "{err:?}");
        }
        for body in [
            &b"{\"a\":1} {}"[..],
            b"{\"a\":1e400}",
            b"{\"a\":tru}",
            b"{\"a\"",
        ] {
            let err = parse_json(body).unwrap_err();
            assert!(serde_json::from_slice::<Value>(body).is_err());
            assert!(err.invalid_params[0].reason.contains("line 1"), "{err:?}");
        }
    }
}
