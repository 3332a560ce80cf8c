//! Untrusted bytes to JSON: the body parsed into a `serde_json::Value` that refuses a key
//! given twice in one object, nesting deeper than `max_json_depth` and strings longer than
//! `max_json_string_bytes`.

use crate::contract::{self, Problem};
use crate::error::ApiError;
use serde_json::Value;

/// Parses the body as a JSON object within `limits`' shape. This and [`contract::decode`]
/// are everything that touches untrusted bytes before a plugin runs (and what the fuzz
/// target drives).
pub fn parse_body(body: &[u8], limits: &crate::config::InputLimits) -> Result<Value, ApiError> {
    let shape = unique_keys::Shape {
        depth: limits.max_json_depth,
        string_bytes: limits.max_json_string_bytes,
    };
    parse_json(body, shape)
}

/// Parses one JSON text that gives no key twice in one object: `None` when it is not JSON
/// or repeats a key. For small untrusted texts that are refused without detail (a token's
/// segments): a claim given twice could be read one way here and another way elsewhere.
pub fn parse_without_repeats(text: &[u8]) -> Option<Value> {
    unique_keys::from_slice(text, unique_keys::Shape::ANY).ok()
}

/// Parses the body as a JSON object, with the position of a syntax error and the path of a
/// key given twice in one object or of a value beyond the shape's limits.
fn parse_json(body: &[u8], shape: unique_keys::Shape) -> Result<Value, ApiError> {
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
    let value = unique_keys::from_slice(body, shape).map_err(|e| match e {
        unique_keys::Refused::Found(found) => {
            let (name, path) = (found.name().to_string(), found.path());
            let (reason, value) = match found.what {
                unique_keys::What::Duplicate { value } => (
                    "is given more than once in the same object; send each key once".into(),
                    contract::codec::value_text(&value),
                ),
                unique_keys::What::TooDeep => (
                    format!("nests deeper than {} levels", shape.depth),
                    String::new(),
                ),
                unique_keys::What::TooLong { bytes, key } => (
                    format!(
                        "has a {} of {bytes} bytes, longer than the {} allowed",
                        if key { "key" } else { "string" },
                        shape.string_bytes
                    ),
                    String::new(),
                ),
            };
            ApiError::invalid(vec![Problem {
                name,
                reason,
                path,
                value,
            }])
        }
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

/// JSON parsing that refuses an object with the same key twice, and values beyond a shape.
///
/// `serde_json` keeps the last of a repeated key; ServiceMobility, a customer's system or a
/// plugin's own parser may keep the first, and then the host would check, key and book one
/// request while the others act on another. The checks ride on the one parse: a visitor
/// builds the same [`Value`] `serde_json` would, notices the map entry that is already
/// taken, counts its depth before it allocates for an object or array, and measures each
/// string before it copies it (a key once it is read). The path to what it found is built
/// only when there is one, a segment per level as the error travels out of the nesting, so
/// a body within its limits costs what `serde_json::from_slice` costs. Nothing is allocated
/// past the limits but `serde_json`'s buffer for a string with escapes and a key's copy,
/// which the body's size bounds.
mod unique_keys {
    use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
    use serde_json::map::Entry;
    use serde_json::{Map, Number, Value};
    use std::fmt::{self, Write as _};

    /// The most a body may nest and the longest string (or key) it may hold, in bytes of
    /// UTF-8 once its escapes are decoded.
    #[derive(Debug, Clone, Copy)]
    pub struct Shape {
        pub depth: usize,
        pub string_bytes: usize,
    }

    impl Shape {
        /// No limit of its own: `serde_json`'s nesting limit (128) still holds.
        pub const ANY: Shape = Shape {
            depth: usize::MAX,
            string_bytes: usize::MAX,
        };
    }

    /// Why a body did not parse.
    #[derive(Debug)]
    pub enum Refused {
        /// Not JSON, or more than one JSON value.
        Syntax(serde_json::Error),
        Found(Box<Found>),
    }

    /// What refused a body that is JSON, and where.
    #[derive(Debug)]
    pub struct Found {
        pub what: What,
        /// From the value out to the body.
        segments: Vec<Segment>,
    }

    #[derive(Debug)]
    pub enum What {
        /// A key given twice in one object (the last segment of the path); the value given
        /// the second time.
        Duplicate { value: Value },
        /// An object or array nested deeper than the shape allows.
        TooDeep,
        /// A string (or an object's key) longer than the shape allows.
        TooLong { bytes: usize, key: bool },
    }

    #[derive(Debug)]
    enum Segment {
        Key(String),
        Index(usize),
    }

    impl Found {
        /// The key nearest to what was found (`Qty` of `$.RequiredParts[1].Qty`,
        /// `RequiredParts` of `$.RequiredParts[1]`), or `$` for the body itself.
        pub fn name(&self) -> &str {
            self.segments
                .iter()
                .find_map(|segment| match segment {
                    Segment::Key(key) => Some(key.as_str()),
                    Segment::Index(_) => None,
                })
                .unwrap_or("$")
        }

        /// The JSON path of what was found, as the contract's decoder writes paths
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
    /// keys and what lies beyond `shape`.
    pub fn from_slice(bytes: &[u8], shape: Shape) -> Result<Value, Refused> {
        // The reader of a `&str` skips the UTF-8 check the byte reader makes of every
        // string, a call each (3 % of a booking's CPU); one check of the whole text costs
        // a fraction of that. Bytes that are not UTF-8 go to the byte reader, whose error
        // says where.
        match std::str::from_utf8(bytes) {
            Ok(text) => parse(serde_json::Deserializer::from_str(text), shape),
            Err(_) => parse(serde_json::Deserializer::from_slice(bytes), shape),
        }
    }

    fn parse<'de, R: serde_json::de::Read<'de>>(
        mut de: serde_json::Deserializer<R>,
        shape: Shape,
    ) -> Result<Value, Refused> {
        let mut walk = Walk {
            shape,
            depth: 0,
            found: None,
        };
        let parsed = Seed(&mut walk)
            .deserialize(&mut de)
            .and_then(|value| de.end().map(|()| value));
        parsed.map_err(|e| match walk.found {
            Some(found) => Refused::Found(found),
            None => Refused::Syntax(e),
        })
    }

    /// The state of one parse.
    struct Walk {
        shape: Shape,
        /// Objects and arrays open around the value being parsed.
        depth: usize,
        found: Option<Box<Found>>,
    }

    impl Walk {
        /// Records what refused the body, at the current value, and the error that ends
        /// the parse.
        fn refuse<E: de::Error>(&mut self, what: What) -> E {
            self.found = Some(Box::new(Found {
                what,
                segments: Vec::new(),
            }));
            E::custom("refused")
        }

        fn string<E: de::Error>(&mut self, s: &str, key: bool) -> Result<(), E> {
            if s.len() > self.shape.string_bytes {
                return Err(self.refuse(What::TooLong {
                    bytes: s.len(),
                    key,
                }));
            }
            Ok(())
        }

        /// Enters an object or array: refused when it nests too deep.
        fn enter<E: de::Error>(&mut self) -> Result<(), E> {
            self.depth += 1;
            if self.depth > self.shape.depth {
                return Err(self.refuse(What::TooDeep));
            }
            Ok(())
        }

        /// Adds `segment` to the path of what was found inside the current value.
        fn on_the_way_out(&mut self, segment: impl FnOnce() -> Segment) {
            if let Some(found) = self.found.as_deref_mut() {
                found.segments.push(segment());
            }
        }
    }

    /// Deserialises one value; on finding what refuses the body it records it and fails.
    struct Seed<'a>(&'a mut Walk);

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

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
            self.0.string(v, false)?;
            Ok(Value::String(v.to_owned()))
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
            self.0.string(&v, false)?;
            Ok(Value::String(v))
        }

        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let walk = self.0;
            walk.enter()?;
            let mut items = Vec::new();
            loop {
                match seq.next_element_seed(Seed(&mut *walk)) {
                    Ok(Some(item)) => items.push(item),
                    Ok(None) => {
                        walk.depth -= 1;
                        return Ok(Value::Array(items));
                    }
                    Err(e) => {
                        walk.on_the_way_out(|| Segment::Index(items.len()));
                        return Err(e);
                    }
                }
            }
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let walk = self.0;
            walk.enter()?;
            let mut object = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                // Measured once read: the copy is bounded by the body's size, as
                // serde_json's buffer for an escaped string is.
                walk.string(&key, true)?;
                let value = match map.next_value_seed(Seed(&mut *walk)) {
                    Ok(value) => value,
                    Err(e) => {
                        walk.on_the_way_out(|| Segment::Key(key));
                        return Err(e);
                    }
                };
                match object.entry(key) {
                    Entry::Vacant(slot) => {
                        slot.insert(value);
                    }
                    Entry::Occupied(slot) => {
                        let err = walk.refuse(What::Duplicate { value });
                        walk.on_the_way_out(|| Segment::Key(slot.key().clone()));
                        return Err(err);
                    }
                }
            }
            walk.depth -= 1;
            Ok(Value::Object(object))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use unique_keys::Shape;

    fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
        super::parse_json(body, Shape::ANY)
    }

    fn shaped(depth: usize, string_bytes: usize, body: &str) -> Result<Value, ApiError> {
        super::parse_json(
            body.as_bytes(),
            Shape {
                depth,
                string_bytes,
            },
        )
    }

    /// The one problem of a refused body: (path, reason).
    fn refused(depth: usize, string_bytes: usize, body: &str) -> (String, String) {
        let err = shaped(depth, string_bytes, body).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidRequest);
        assert_eq!(err.invalid_params.len(), 1, "{err:?}");
        let p = &err.invalid_params[0];
        (p.path.clone(), p.reason.clone())
    }

    #[test]
    fn nesting_at_the_limit_passes_and_one_deeper_fails_at_its_path() {
        assert!(shaped(3, 64, r#"{"a":[{"b":1}]}"#).is_ok());
        let (path, reason) = refused(3, 64, r#"{"a":[{"b":[1]}]}"#);
        assert_eq!(path, "$.a[0].b");
        assert!(reason.contains("deeper than 3"), "{reason}");
        assert_eq!(refused(1, 64, r#"{"x":1,"y":{}}"#).0, "$.y");
        // Brackets inside strings do not count.
        assert!(shaped(1, 64, r#"{"a":"[[[{{{"}"#).is_ok());
        // Far deeper than the parser's own limit: refused at the shape's, without recursing
        // further.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(refused(32, 64, &deep).1.contains("deeper than 32"));
        let deep = format!("{}{}", r#"{"a":"#.repeat(100_000), "}".repeat(100_000));
        assert!(refused(32, 64, &deep).0.starts_with("$.a.a.a"));
    }

    #[test]
    fn strings_and_keys_at_the_limit_pass_and_one_longer_fails_at_its_path() {
        assert!(shaped(8, 5, r#"{"abcde":"12345"}"#).is_ok());
        let (path, reason) = refused(8, 5, r#"{"a":"123456"}"#);
        assert_eq!(path, "$.a");
        assert!(
            reason.contains("string of 6 bytes, longer than the 5"),
            "{reason}"
        );
        assert_eq!(refused(8, 5, r#"{"p":[1,{"x":"123456"}]}"#).0, "$.p[1].x");
        // A key too long is refused at the object holding it.
        let (path, reason) = refused(8, 5, r#"{"p":{"abcdef":1}}"#);
        assert_eq!(path, "$.p");
        assert!(reason.contains("key of 6 bytes"), "{reason}");
        // Lengths are of the decoded text: an escape counts as what it stands for.
        assert!(shaped(8, 5, r#"{"a":"1\"3"}"#).is_ok());
        assert!(shaped(8, 5, r#"{"a":"1\"3456"}"#).is_err());
        assert!(shaped(8, 4, r#"{"a":"\u00e9\u00e9"}"#).is_ok());
        assert!(shaped(8, 5, r#"{"a":"\u00e9\u00e9\u00e9"}"#).is_err());
    }

    /// A random JSON tree (a fixed xorshift sequence) of objects, arrays, strings and
    /// numbers, with its deepest nesting and longest string or key.
    fn random_tree(x: &mut u64, depth: usize) -> (Value, usize, usize) {
        let mut next = |m: u64| {
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            *x % m
        };
        let text = |n: u64| -> String {
            (0..n)
                .map(|i| ['a', 'é', '"', '\\', '\n', '[', '{', '東'][(i * 7 + n) as usize % 8])
                .collect()
        };
        match if depth > 5 { next(2) } else { next(4) } {
            0 => (Value::from(next(1000)), 0, 0),
            1 => {
                let s = text(next(12));
                let len = s.len();
                (Value::String(s), 0, len)
            }
            kind => {
                let n = next(4);
                let seeds: Vec<u64> = (0..n).map(|_| next(u64::MAX)).collect();
                let (mut deepest, mut longest) = (0, 0);
                let mut items = Vec::new();
                let mut object = serde_json::Map::new();
                for (i, seed) in seeds.into_iter().enumerate() {
                    let mut y = seed | 1;
                    let (item, d, l) = random_tree(&mut y, depth + 1);
                    deepest = deepest.max(d);
                    longest = longest.max(l);
                    if kind == 2 {
                        items.push(item);
                    } else {
                        let key = format!("{}{i}", text(y % 9));
                        longest = longest.max(key.len());
                        object.insert(key, item);
                    }
                }
                let value = if kind == 2 {
                    Value::Array(items)
                } else {
                    Value::Object(object)
                };
                (value, deepest + 1, longest)
            }
        }
    }

    #[test]
    fn the_shape_is_refused_exactly_when_the_tree_exceeds_it() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut checked = 0;
        while checked < 3_000 {
            let (tree, depth, longest) = random_tree(&mut x, 0);
            if !tree.is_object() {
                continue;
            }
            checked += 1;
            let body = serde_json::to_string(&tree).unwrap();
            for (d, s) in [
                (depth, longest),
                (depth - 1, longest),
                (depth, longest.max(1) - 1),
            ] {
                let within = depth <= d && longest <= s;
                match shaped(d, s, &body) {
                    Ok(parsed) => {
                        assert!(within, "{body} passed {d}/{s}");
                        assert_eq!(parsed, tree);
                    }
                    Err(e) => assert!(!within, "{body} refused at {d}/{s}: {e:?}"),
                }
            }
        }
    }

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
