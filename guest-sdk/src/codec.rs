//! JSON ↔ WIT mapping of the contract's records.
//!
//! This one file is compiled into both the host and the guest SDK (each declares it as a
//! module beside a `types` module holding the WIT records), so a Book Job decodes the same
//! way whether the host receives it or a plugin forwards it.
//!
//! Decoding walks a parsed `serde_json::Value` once, collects every problem with the JSON
//! path of the offending value (not just the first), keeps unknown keys in `extensions`,
//! and is tolerant where the contract is loose: `Lat`/`Lon` as number or numeric string
//! (`""` meaning absent), the documented `Qty:` key typo, `null` meaning absent, and
//! date-times with or without fractional seconds. Encoding writes the contract's keys and
//! merges `extensions` back, so JSON → WIT → JSON is lossless for documented fields.

use super::types::*;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One problem found while decoding: an entry of the error body's `invalidParams` as it is
/// written on the wire.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// The offending key (or `$` for the whole body).
    pub name: String,
    pub reason: String,
    /// JSON path, e.g. `$.RequiredParts[0].Qty`.
    pub path: String,
    /// The offending value as text; strings unquoted, "" when absent.
    pub value: String,
}

/// Walks a JSON value, tracking the current path and collecting problems.
#[derive(Debug)]
pub struct Decoder {
    path: String,
    problems: Vec<Problem>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            path: String::from("$"),
            problems: Vec::new(),
        }
    }

    /// The problems found so far.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    pub fn into_problems(self) -> Vec<Problem> {
        self.problems
    }

    /// Records a problem at the current path.
    pub fn problem(&mut self, reason: impl Into<String>, value: &Value) {
        let name = last_segment(&self.path).to_string();
        self.problems.push(Problem {
            name,
            reason: reason.into(),
            path: self.path.clone(),
            value: value_text(value),
        });
    }

    /// Decodes `v` as `F`, with `key` appended to the path while doing so. `null` is absent.
    pub fn field<F: Field>(&mut self, key: &str, v: &Value) -> Option<F::Out> {
        if v.is_null() {
            return None;
        }
        let len = self.path.len();
        self.path.push('.');
        self.path.push_str(key);
        let out = F::decode(v, self);
        self.path.truncate(len);
        out
    }

    fn element<F: Field>(&mut self, index: usize, v: &Value) -> Option<F::Out> {
        let len = self.path.len();
        // Digits pushed by hand: a formatter call per element showed in the request
        // path's profile.
        self.path.push('[');
        push_decimal(&mut self.path, index);
        self.path.push(']');
        let out = F::decode(v, self);
        self.path.truncate(len);
        out
    }

    fn object<'v>(&mut self, v: &'v Value) -> Option<&'v Map<String, Value>> {
        match v {
            Value::Object(map) => Some(map),
            other => {
                self.problem("must be an object", other);
                None
            }
        }
    }
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut String, n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// Appends `key: value` to the extensions object being written (opened on its first
/// entry). Written straight from the parsed tree in its order, which is the order a map
/// built of the same entries would serialise in: no copy of the values, no formatter.
fn extension_entry(object: &mut Option<Vec<u8>>, key: &str, value: &Value) {
    let out = object.get_or_insert_with(|| vec![b'{']);
    if out.len() > 1 {
        out.push(b',');
    }
    // Writing JSON into a Vec cannot fail: the values come from a parse and their keys
    // are strings.
    let _ = serde_json::to_writer(&mut *out, key);
    out.push(b':');
    let _ = serde_json::to_writer(&mut *out, value);
}

/// The extensions object's text, closed.
fn close_extensions(mut object: Vec<u8>) -> String {
    object.push(b'}');
    // serde_json writes UTF-8 only.
    String::from_utf8(object).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn last_segment(path: &str) -> &str {
    let tail = path.rsplit('.').next().unwrap_or(path);
    match tail.find('[') {
        Some(0) | None => tail,
        Some(i) => &tail[..i],
    }
}

/// A value as the error body shows it: strings without quotes, anything else as JSON.
pub fn value_text(v: &Value) -> String {
    const MAX: usize = 200;
    let mut text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.len() > MAX {
        let mut cut = MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Why encoding a record failed: only plugin-supplied `extensions` can be malformed.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodeError(pub String);

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

/// Why writing a record failed.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteError {
    /// The record is not a valid answer (see [`EncodeError`]).
    Invalid(EncodeError),
    /// The JSON would exceed the writer's limit; writing stopped there.
    TooLarge,
}

impl From<EncodeError> for WriteError {
    fn from(e: EncodeError) -> Self {
        WriteError::Invalid(e)
    }
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Invalid(e) => e.fmt(f),
            WriteError::TooLarge => f.write_str("the JSON exceeds its size limit"),
        }
    }
}

impl std::error::Error for WriteError {}

/// Compact JSON written into a buffer that never grows past `limit` bytes: every write
/// checks first, so the first byte over the limit stops the encoding.
#[derive(Debug)]
pub struct JsonWriter {
    buf: Vec<u8>,
    limit: usize,
}

impl JsonWriter {
    pub fn new(limit: usize) -> Self {
        JsonWriter {
            buf: Vec::new(),
            limit,
        }
    }

    /// Bytes that may still be written.
    pub fn remaining(&self) -> usize {
        self.limit.saturating_sub(self.buf.len())
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    fn reserve(&mut self, len: usize) -> Result<(), WriteError> {
        if len > self.remaining() {
            return Err(WriteError::TooLarge);
        }
        Ok(())
    }

    /// Appends JSON text as it is.
    pub fn raw(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        self.reserve(bytes.len())?;
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// Appends a string, quoted and escaped exactly as `serde_json` does.
    pub fn string(&mut self, s: &str) -> Result<(), WriteError> {
        self.reserve(escaped_len(s))?;
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.buf, s);
        Ok(())
    }

    /// Appends the key of the `index`th entry of an object (with the comma before it).
    pub fn key(&mut self, index: usize, key: &str) -> Result<(), WriteError> {
        if index > 0 {
            self.raw(b",")?;
        }
        self.string(key)?;
        self.raw(b":")
    }

    /// Appends a finite number as `serde_json` prints it.
    pub fn number(&mut self, n: f64) -> Result<(), WriteError> {
        if !n.is_finite() {
            return Err(EncodeError(format!("{n} is not a JSON number")).into());
        }
        let mut text = Vec::with_capacity(24);
        let _ = serde_json::to_writer(&mut text, &n);
        self.raw(&text)
    }
}

/// The length of `s` as a JSON string: quotes, and the escapes `serde_json` writes (two
/// bytes for `"`, `\\` and the named control characters, six for the other controls).
fn escaped_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..0x20 => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// At most 200 bytes of plugin-supplied text for an error message, quoted, with control
/// characters escaped and a marker where it was cut: an error never echoes a whole answer.
pub fn preview(text: &str) -> String {
    const MAX: usize = 200;
    let mut cut = text.len().min(MAX);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = format!("{:?}", &text[..cut]);
    if cut < text.len() {
        let _ = write!(out, "… ({} bytes)", text.len());
    }
    out
}

/// Bytes extension values may still produce, shared by the whole walk.
struct Budget {
    left: std::cell::Cell<usize>,
    exceeded: std::cell::Cell<bool>,
}

impl Budget {
    fn take<E: serde::de::Error>(&self, n: usize) -> Result<(), E> {
        match self.left.get().checked_sub(n) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => {
                self.exceeded.set(true);
                Err(E::custom("the JSON exceeds its size limit"))
            }
        }
    }
}

/// The entries of a JSON object, each value written compactly, sorted by key, a repeated
/// key keeping its last value.
struct Entries<'b>(&'b Budget);

impl<'de> serde::de::DeserializeSeed<'de> for Entries<'_> {
    type Value = Vec<(String, Vec<u8>)>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Entries<'_> {
    type Value = Vec<(String, Vec<u8>)>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            // The key, quotes, colon and comma it will be written with.
            self.0.take(escaped_len(&key) + 2)?;
            let mut value = Vec::new();
            map.next_value_seed(Canonical(self.0, &mut value))?;
            entries.push((key, value));
        }
        // A stable sort keeps repeated keys in order; the last of each run wins.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut unique: Vec<(String, Vec<u8>)> = Vec::with_capacity(entries.len());
        for entry in entries {
            match unique.last_mut() {
                Some(last) if last.0 == entry.0 => *last = entry,
                _ => unique.push(entry),
            }
        }
        Ok(unique)
    }
}

/// One JSON value written compactly into the buffer, objects with sorted keys.
struct Canonical<'b, 'o>(&'b Budget, &'o mut Vec<u8>);

impl Canonical<'_, '_> {
    fn put<E: serde::de::Error>(self, bytes: &[u8]) -> Result<(), E> {
        self.0.take(bytes.len())?;
        self.1.extend_from_slice(bytes);
        Ok(())
    }
    fn put_json<T: serde::Serialize + ?Sized, E: serde::de::Error>(
        self,
        value: &T,
    ) -> Result<(), E> {
        let mut text = Vec::new();
        let _ = serde_json::to_writer(&mut text, value);
        self.put(&text)
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Canonical<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Canonical<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.put(b"null")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.put(if v { b"true" } else { b"false" })
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.put_json(&v)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.put_json(&v)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        // As `serde_json::Value` keeps it: a number when finite, else null.
        match serde_json::Number::from_f64(v) {
            Some(n) => self.put_json(&n),
            None => self.put(b"null"),
        }
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.0.take(escaped_len(v))?;
        let _ = serde_json::to_writer(&mut *self.1, v);
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Canonical(budget, out) = self;
        budget.take::<A::Error>(2)?;
        out.push(b'[');
        let mut first = true;
        loop {
            let at = out.len();
            if !first {
                budget.take::<A::Error>(1)?;
                out.push(b',');
            }
            if seq.next_element_seed(Canonical(budget, out))?.is_none() {
                out.truncate(at);
                break;
            }
            first = false;
        }
        out.push(b']');
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let Canonical(budget, out) = self;
        let entries = Entries(budget).visit_map(map)?;
        budget.take::<A::Error>(2)?;
        out.push(b'{');
        for (i, (key, value)) in entries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let _ = serde_json::to_writer(&mut *out, key);
            out.push(b':');
            out.extend_from_slice(value);
        }
        out.push(b'}');
        Ok(())
    }
}

/// How one JSON value maps to one WIT value.
pub trait Field {
    type Out;
    fn decode(v: &Value, d: &mut Decoder) -> Option<Self::Out>;
    /// Writes `out` as compact JSON, object keys in byte order.
    fn write(out: &Self::Out, w: &mut JsonWriter) -> Result<(), WriteError>;
}

/// A JSON string.
#[derive(Debug)]
pub struct Str;

impl Field for Str {
    type Out = String;
    fn decode(v: &Value, d: &mut Decoder) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            other => {
                d.problem("must be a string", other);
                None
            }
        }
    }
    fn write(out: &String, w: &mut JsonWriter) -> Result<(), WriteError> {
        w.string(out)
    }
}

/// A JSON boolean.
#[derive(Debug)]
pub struct Bool;

impl Field for Bool {
    type Out = bool;
    fn decode(v: &Value, d: &mut Decoder) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                d.problem("must be a boolean", other);
                None
            }
        }
    }
    fn write(out: &bool, w: &mut JsonWriter) -> Result<(), WriteError> {
        w.raw(if *out { b"true" } else { b"false" })
    }
}

/// A JSON number (`Qty`, `Price`).
#[derive(Debug)]
pub struct Num;

impl Field for Num {
    type Out = f64;
    fn decode(v: &Value, d: &mut Decoder) -> Option<f64> {
        match v.as_f64() {
            Some(n) => Some(n),
            None => {
                d.problem("must be a number", v);
                None
            }
        }
    }
    fn write(out: &f64, w: &mut JsonWriter) -> Result<(), WriteError> {
        w.number(*out)
    }
}

/// A coordinate (`Lat`, `Lon`): documented as a number, shown as `""` in the contract's
/// example, so a numeric string is accepted too and `""` means absent.
#[derive(Debug)]
pub struct Coord;

impl Field for Coord {
    type Out = f64;
    fn decode(v: &Value, d: &mut Decoder) -> Option<f64> {
        match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) if s.trim().is_empty() => None,
            Value::String(s) => match s.trim().parse::<f64>() {
                Ok(n) if n.is_finite() => Some(n),
                _ => {
                    d.problem("must be a number or a numeric string", v);
                    None
                }
            },
            other => {
                d.problem("must be a number or a numeric string", other);
                None
            }
        }
    }
    fn write(out: &f64, w: &mut JsonWriter) -> Result<(), WriteError> {
        w.number(*out)
    }
}

/// A UTC ISO-8601 date-time string (`2024-06-18T17:00:00.000Z`, milliseconds optional).
/// An empty string is kept: the contract allows it where a date is not known yet.
#[derive(Debug)]
pub struct DateTime;

impl Field for DateTime {
    type Out = String;
    fn decode(v: &Value, d: &mut Decoder) -> Option<String> {
        match v {
            Value::String(s) if s.is_empty() || parse_datetime(s).is_some() => Some(s.clone()),
            Value::String(_) => {
                d.problem(
                    "must be a UTC ISO-8601 date-time such as 2024-06-18T17:00:00.000Z",
                    v,
                );
                None
            }
            other => {
                d.problem("must be a date-time string", other);
                None
            }
        }
    }
    fn write(out: &String, w: &mut JsonWriter) -> Result<(), WriteError> {
        w.string(out)
    }
}

/// A JSON array of `F`.
#[derive(Debug)]
pub struct List<F>(std::marker::PhantomData<F>);

impl<F: Field> Field for List<F> {
    type Out = Vec<F::Out>;
    fn decode(v: &Value, d: &mut Decoder) -> Option<Vec<F::Out>> {
        let Value::Array(items) = v else {
            d.problem("must be an array", v);
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            if item.is_null() {
                d.element::<Str>(i, item);
                ok = false;
                continue;
            }
            match d.element::<F>(i, item) {
                Some(x) => out.push(x),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
    fn write(out: &Vec<F::Out>, w: &mut JsonWriter) -> Result<(), WriteError> {
        w.raw(b"[")?;
        for (i, item) in out.iter().enumerate() {
            if i > 0 {
                w.raw(b",")?;
            }
            F::write(item, w)?;
        }
        w.raw(b"]")
    }
}

/// `FlexAttrs`: `{ "<FlexFormID>": { "<FlexAttrID>": ["value", ...] } }`.
#[derive(Debug)]
pub struct FlexAttrs;

impl Field for FlexAttrs {
    type Out = Vec<FlexFormValues>;
    fn decode(v: &Value, d: &mut Decoder) -> Option<Vec<FlexFormValues>> {
        let forms = d.object(v)?;
        let mut out = Vec::with_capacity(forms.len());
        for (form_id, attrs) in forms {
            let len = d.path.len();
            d.path.push('.');
            d.path.push_str(form_id);
            if let Some(attrs) = d.object(attrs) {
                let attrs = attrs
                    .iter()
                    .filter_map(|(attr_id, values)| {
                        let values = d.field::<List<Str>>(attr_id, values)?;
                        Some(FlexAttr {
                            attr_id: attr_id.clone(),
                            values,
                        })
                    })
                    .collect();
                out.push(FlexFormValues {
                    form_id: form_id.clone(),
                    attrs,
                });
            }
            d.path.truncate(len);
        }
        Some(out)
    }
    fn write(out: &Vec<FlexFormValues>, w: &mut JsonWriter) -> Result<(), WriteError> {
        // As a JSON object: keys in byte order, a repeated form or attribute replaces the
        // earlier one.
        let forms: BTreeMap<&str, &FlexFormValues> =
            out.iter().map(|f| (f.form_id.as_str(), f)).collect();
        w.raw(b"{")?;
        for (i, (form_id, form)) in forms.into_iter().enumerate() {
            w.key(i, form_id)?;
            let attrs: BTreeMap<&str, &Vec<String>> = form
                .attrs
                .iter()
                .map(|a| (a.attr_id.as_str(), &a.values))
                .collect();
            w.raw(b"{")?;
            for (j, (attr_id, values)) in attrs.into_iter().enumerate() {
                w.key(j, attr_id)?;
                List::<Str>::write(values, w)?;
            }
            w.raw(b"}")?;
        }
        w.raw(b"}")
    }
}

/// Parses `extensions` text back into the keys it holds, each with its value already
/// written as compact JSON (keys in byte order, a repeated key's last value, as a parsed
/// `serde_json::Value` would print it). Its bytes count against `w`'s limit as they are
/// produced, so a huge text never becomes a huge tree.
fn extension_keys(text: &str, w: &JsonWriter) -> Result<Vec<(String, Vec<u8>)>, WriteError> {
    let not_an_object = || {
        WriteError::Invalid(EncodeError(format!(
            "extensions must be the JSON text of an object, got {}",
            preview(text)
        )))
    };
    if !text.trim_start().starts_with('{') {
        return Err(not_an_object());
    }
    let budget = Budget {
        left: std::cell::Cell::new(w.remaining()),
        exceeded: std::cell::Cell::new(false),
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let entries = match serde::de::DeserializeSeed::deserialize(Entries(&budget), &mut de)
        .and_then(|entries| de.end().map(|()| entries))
    {
        Ok(entries) => entries,
        Err(_) if budget.exceeded.get() => return Err(WriteError::TooLarge),
        Err(_) => return Err(not_an_object()),
    };
    Ok(entries)
}

/// Implements [`Field`] for a record whose fields are all optional, mapping each JSON key
/// (with optional aliases accepted on input) to a field and its codec. Keys not listed
/// are kept in `extensions`.
macro_rules! record {
    ($ty:ident { $($key:literal $(| $alias:literal)* => $field:ident : $codec:ty,)* }) => {
        impl Field for $ty {
            type Out = $ty;
            fn decode(v: &Value, d: &mut Decoder) -> Option<$ty> {
                let map = d.object(v)?;
                let mut out = $ty { $($field: None,)* extensions: None };
                // Keys the contract does not name, kept as the text of a JSON object.
                let mut unknown: Option<Vec<u8>> = None;
                for (key, value) in map {
                    match key.as_str() {
                        $($key $(| $alias)* => out.$field = d.field::<$codec>(key, value),)*
                        _ => extension_entry(&mut unknown, key, value),
                    }
                }
                out.extensions = unknown.map(close_extensions);
                Some(out)
            }
            fn write(out: &$ty, w: &mut JsonWriter) -> Result<(), WriteError> {
                let extensions = match &out.extensions {
                    Some(text) => extension_keys(text, w)?,
                    None => Vec::new(),
                };
                // Documented fields and extension keys merged in byte order; a documented
                // field that is set wins over an extension key of the same name.
                let mut keys: BTreeMap<&str, Option<&[u8]>> = extensions
                    .iter()
                    .map(|(k, v)| (k.as_str(), Some(v.as_slice())))
                    .collect();
                $(
                    if out.$field.is_some() {
                        keys.insert($key, None);
                    }
                )*
                w.raw(b"{")?;
                for (i, (key, extension)) in keys.into_iter().enumerate() {
                    w.key(i, key)?;
                    match (key, extension) {
                        (_, Some(bytes)) => w.raw(bytes)?,
                        $(($key, None) => {
                            if let Some(x) = &out.$field {
                                <$codec as Field>::write(x, w)?;
                            }
                        })*
                        (_, None) => {}
                    }
                }
                w.raw(b"}")
            }
        }

        #[cfg(not(target_arch = "wasm32"))]
        impl schema::Describe for $ty {
            fn describe(defs: &mut schema::Definitions) -> Value {
                schema::record::<$ty>(defs)
            }
        }

        #[cfg(not(target_arch = "wasm32"))]
        impl schema::Record for $ty {
            const NAME: &'static str = stringify!($ty);
            const KEYS: &'static [&'static str] = &[$($key, $($alias,)*)*];
            fn properties(defs: &mut schema::Definitions) -> Map<String, Value> {
                let mut properties = Map::new();
                $(
                    let field = schema::nullable(<$codec as schema::Describe>::describe(defs));
                    $(properties.insert($alias.to_string(), field.clone());)*
                    properties.insert($key.to_string(), field);
                )*
                properties
            }
        }
    };
}

record!(Period {
    "Start" => start: DateTime,
    "End" => end: DateTime,
});

record!(TimeConstraint {
    "ID" => id: Str,
    "Desc" => desc: Str,
    "Type" => type_: Str,
    "Period" => period: Period,
    "Delete" => delete: Bool,
});

record!(Phone {
    "PhoneNum" => phone_num: Str,
    "PhoneType" => phone_type: Str,
});

record!(Contact {
    "Email" => email: Str,
    "FirstName" => first_name: Str,
    "IsPrimary" => is_primary: Bool,
    "LastName" => last_name: Str,
    "Phones" => phones: List<Phone>,
});

record!(Address {
    "AddrLine1" => addr_line1: Str,
    "AddrLine2" => addr_line2: Str,
    "AddrLine3" => addr_line3: Str,
    "AddrLine4" => addr_line4: Str,
    "AddrType" => addr_type: Str,
    "City" => city: Str,
    "Country" => country: Str,
    "Intersection" => intersection: Str,
    "Lat" => lat: Coord,
    "Lon" => lon: Coord,
    "Region" => region: Str,
    "Zip" => zip: Str,
});

record!(Account {
    "AccountNum" => account_num: Str,
    "AccountType" => account_type: Str,
    "AccountsReceivable" => accounts_receivable: Str,
    "Addresses" => addresses: List<Address>,
    "Contacts" => contacts: List<Contact>,
    "FlexAttrs" => flex_attrs: FlexAttrs,
    "FlexForms" => flex_forms: List<Str>,
    "IsActive" => is_active: Bool,
    "Name" => name: Str,
    "Notes" => notes: Str,
    "PaymentSystemID" => payment_system_id: Str,
    "TaxExempt" => tax_exempt: Bool,
    "TierPricingID" => tier_pricing_id: Str,
    "Website" => website: Str,
});

record!(Location {
    "Address" => address: Address,
    "Contacts" => contacts: List<Contact>,
    "Email" => email: Str,
    "LanguageID" => language_id: Str,
    "LocationNum" => location_num: Str,
    "Name" => name: Str,
    "Notes" => notes: Str,
    "POReq" => po_req: Bool,
    "ServiceAreaID" => service_area_id: Str,
    "SigReq" => sig_req: Bool,
    "StorageLocationID" => storage_location_id: Str,
});

record!(FlexViewItem {
    "ID" => id: Str,
    "Label" => label: Str,
    "Value" => value: Str,
    "Delete" => delete: Bool,
});

record!(FlexViewGroup {
    "ID" => id: Str,
    "Title" => title: Str,
    "Items" => items: List<FlexViewItem>,
    "Delete" => delete: Bool,
});

record!(Asset {
    "AssetNum" => asset_num: Str,
    "Desc" => desc: Str,
    "FlexForms" => flex_forms: List<Str>,
    "FlexView" => flex_view: List<FlexViewGroup>,
    "InServiceDate" => in_service_date: DateTime,
    "IsComponent" => is_component: Bool,
    "LastServiceDate" => last_service_date: DateTime,
    "Location" => location: Str,
    "Mfg" => mfg: Str,
    "Model" => model: Str,
    "ProdNum" => prod_num: Str,
    "SerialNum" => serial_num: Str,
    "ServiceCodes" => service_codes: List<Str>,
    "ServiceCodesDesc" => service_codes_desc: List<Str>,
    "Status" => status: Str,
    "Type" => type_: Str,
    "Delete" => delete: Bool,
});

record!(ProdAttrs {
    "Desc" => desc: Str,
    "IsBatch" => is_batch: Bool,
    "IsInvCtrl" => is_inv_ctrl: Bool,
    "IsSerialized" => is_serialized: Bool,
    "ProdType" => prod_type: Str,
});

record!(SupersededPart {
    "ProdNum" => prod_num: Str,
    "PartStatus" => part_status: Str,
    "ProdAttrs" => prod_attrs: ProdAttrs,
    "Qty" | "Qty:" => qty: Num,
});

record!(RequiredPart {
    "EstimatedDelivery" => estimated_delivery: DateTime,
    "PartOrderNum" => part_order_num: Str,
    "PartStatus" => part_status: Str,
    "Price" => price: Num,
    "ProdAttrs" => prod_attrs: ProdAttrs,
    "ProdNum" => prod_num: Str,
    "Qty" | "Qty:" => qty: Num,
    "ShipToLocation" => ship_to_location: Str,
    "SupersededParts" => superseded_parts: List<SupersededPart>,
    "Urgency" => urgency: Str,
});

record!(BookJob {
    "Account" => account: Account,
    "Assets" => assets: List<Asset>,
    "FlexAttrs" => flex_attrs: FlexAttrs,
    "FlexForms" => flex_forms: List<Str>,
    "Location" => location: Location,
    "OrderType" => order_type: Str,
    "OriginalOrderNum" => original_order_num: Str,
    "RequiredParts" => required_parts: List<RequiredPart>,
    "TimeConstraints" => time_constraints: List<TimeConstraint>,
    "UserName" => user_name: Str,
});

impl Field for OrderedPart {
    type Out = OrderedPart;
    fn decode(v: &Value, d: &mut Decoder) -> Option<OrderedPart> {
        let map = d.object(v)?;
        let part_order_num = required::<Str>(d, map, "PartOrderNum")?;
        let parts = match map.get("Parts") {
            Some(p) if !p.is_null() => d.field::<List<Str>>("Parts", p)?,
            _ => Vec::new(),
        };
        Some(OrderedPart {
            part_order_num,
            parts,
        })
    }
    fn write(out: &OrderedPart, w: &mut JsonWriter) -> Result<(), WriteError> {
        w.raw(b"{")?;
        w.key(0, "PartOrderNum")?;
        Str::write(&out.part_order_num, w)?;
        w.key(1, "Parts")?;
        List::<Str>::write(&out.parts, w)?;
        w.raw(b"}")
    }
}

fn required<F: Field>(d: &mut Decoder, map: &Map<String, Value>, key: &str) -> Option<F::Out> {
    match map.get(key) {
        Some(v) if !v.is_null() => d.field::<F>(key, v),
        _ => {
            let len = d.path.len();
            d.path.push('.');
            d.path.push_str(key);
            d.problem("is required", &Value::Null);
            d.path.truncate(len);
            None
        }
    }
}

impl Field for BookJobResponse {
    type Out = BookJobResponse;
    fn decode(v: &Value, d: &mut Decoder) -> Option<BookJobResponse> {
        let map = d.object(v)?;
        let order_num = required::<Str>(d, map, "OrderNum")?;
        let ordered_parts = match map.get("OrderedParts") {
            Some(p) if !p.is_null() => d.field::<List<OrderedPart>>("OrderedParts", p)?,
            _ => Vec::new(),
        };
        Some(BookJobResponse {
            order_num,
            ordered_parts,
        })
    }
    fn write(out: &BookJobResponse, w: &mut JsonWriter) -> Result<(), WriteError> {
        if out.order_num.is_empty() {
            return Err(WriteError::Invalid(EncodeError(
                "OrderNum is empty; a successful booking must name the new order".into(),
            )));
        }
        w.raw(b"{")?;
        w.key(0, "OrderNum")?;
        Str::write(&out.order_num, w)?;
        if !out.ordered_parts.is_empty() {
            w.key(1, "OrderedParts")?;
            List::<OrderedPart>::write(&out.ordered_parts, w)?;
        }
        w.raw(b"}")
    }
}

impl Field for AppointmentSearchResponse {
    type Out = AppointmentSearchResponse;
    fn decode(v: &Value, d: &mut Decoder) -> Option<AppointmentSearchResponse> {
        let map = d.object(v)?;
        let status_msg = map
            .get("StatusMsg")
            .and_then(|s| d.field::<Str>("StatusMsg", s));
        let time_constraints = match map.get("TimeConstraints") {
            Some(t) if !t.is_null() => d.field::<List<TimeConstraint>>("TimeConstraints", t)?,
            _ => Vec::new(),
        };
        Some(AppointmentSearchResponse {
            status_msg,
            time_constraints,
        })
    }
    fn write(out: &AppointmentSearchResponse, w: &mut JsonWriter) -> Result<(), WriteError> {
        for (i, slot) in out.time_constraints.iter().enumerate() {
            let period = slot.period.as_ref();
            for (name, at) in [
                ("Start", period.and_then(|p| p.start.as_deref())),
                ("End", period.and_then(|p| p.end.as_deref())),
            ] {
                if let Some(at) = at.filter(|at| parse_datetime(at).is_none()) {
                    return Err(WriteError::Invalid(EncodeError(format!(
                        "TimeConstraints[{i}].Period.{name} {} is not a UTC ISO-8601 date-time",
                        preview(at)
                    ))));
                }
            }
        }
        w.raw(b"{")?;
        let mut keys = 0;
        if let Some(msg) = &out.status_msg {
            w.key(keys, "StatusMsg")?;
            Str::write(msg, w)?;
            keys += 1;
        }
        w.key(keys, "TimeConstraints")?;
        List::<TimeConstraint>::write(&out.time_constraints, w)?;
        w.raw(b"}")
    }
}

/// Decodes a whole request body (already parsed) as `F`, or every problem found.
pub fn decode<F: Field>(v: &Value) -> Result<F::Out, Vec<Problem>> {
    let mut d = Decoder::new();
    let out = F::decode(v, &mut d);
    match out {
        Some(out) if d.problems.is_empty() => Ok(out),
        _ => {
            if d.problems.is_empty() {
                d.problem("is invalid", v);
            }
            Err(d.problems)
        }
    }
}

/// Parses JSON text and decodes it as `F`, or every problem found (a syntax error is one
/// problem at `$`).
pub fn decode_text<F: Field>(text: &str) -> Result<F::Out, Vec<Problem>> {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => decode::<F>(&v),
        Err(e) => Err(vec![Problem {
            name: "$".into(),
            reason: format!("is not valid JSON: {e}"),
            path: "$".into(),
            value: String::new(),
        }]),
    }
}

/// Encodes a record as JSON.
pub fn encode<F: Field>(out: &F::Out) -> Result<Value, EncodeError> {
    let bytes = to_vec::<F>(out, usize::MAX).map_err(|e| match e {
        WriteError::Invalid(e) => e,
        WriteError::TooLarge => EncodeError("larger than memory allows".into()),
    })?;
    // Compact JSON this module wrote parses back.
    serde_json::from_slice(&bytes).map_err(|e| EncodeError(e.to_string()))
}

/// Encodes a record as compact JSON text of at most `limit` bytes, stopping as soon as
/// the limit is passed: an answer too large is refused without ever being held whole.
pub fn to_vec<F: Field>(out: &F::Out, limit: usize) -> Result<Vec<u8>, WriteError> {
    let mut w = JsonWriter::new(limit);
    F::write(out, &mut w)?;
    Ok(w.into_bytes())
}

/// Parses a contract date-time (`YYYY-MM-DDTHH:MM:SS[.fraction]Z`, UTC) into milliseconds
/// since the Unix epoch. Anything else (offsets, missing `Z`, impossible dates) is `None`.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' || *b.last()? != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(range)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut millis = 0;
    let rest = &s[19..s.len() - 1];
    if !rest.is_empty() {
        let frac = rest.strip_prefix('.')?;
        if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        // The first three digits, padded with zeros: no formatting on a path every
        // date-time of every request takes.
        let digits = frac.as_bytes();
        millis = (0..3).fold(0, |ms, i| {
            ms * 10 + digits.get(i).map_or(0, |d| i64::from(d - b'0'))
        });
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis)
}

/// Formats milliseconds since the Unix epoch as the contract writes date-times
/// (`2024-06-18T17:00:00.000Z`).
pub fn format_datetime(millis: i64) -> String {
    let days = millis.div_euclid(86_400_000);
    let rem = millis.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (h, rem) = (rem / 3_600_000, rem % 3_600_000);
    let (min, rem) = (rem / 60_000, rem % 60_000);
    let (s, ms) = (rem / 1000, rem % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{ms:03}Z")
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days-from-civil and its inverse: exact for the proleptic Gregorian
// calendar, no tables, no dependencies.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// JSON Schemas (draft 2020-12, as OpenAPI 3.1 holds them) of what this module reads and
/// writes. Records describe themselves from the same `record!` table their decoder is
/// made from, so a key the decoder accepts is a property of the schema and the reverse.
/// Host only: a plugin never describes the contract.
#[cfg(not(target_arch = "wasm32"))]
pub mod schema {
    use super::*;
    use serde_json::json;

    /// Named schemas, as an OpenAPI document's `components/schemas` holds them.
    pub type Definitions = BTreeMap<String, Value>;

    /// A codec that can say which JSON values it accepts (never `null`: a record's field
    /// adds that, see [`nullable`]).
    pub trait Describe {
        /// The schema, registering any record it refers to in `defs`.
        fn describe(defs: &mut Definitions) -> Value;
    }

    /// A record of the contract: an object whose documented keys are all optional and
    /// whose other keys are kept (`extensions`).
    pub trait Record: Describe {
        const NAME: &'static str;
        /// Every key the decoder reads into a field, aliases included.
        const KEYS: &'static [&'static str];
        /// One property per key in [`Record::KEYS`].
        fn properties(defs: &mut Definitions) -> Map<String, Value>;
    }

    /// A reference to a named schema.
    pub fn reference(name: &str) -> Value {
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    /// Registers `R` (once) and refers to it.
    pub fn record<R: Record>(defs: &mut Definitions) -> Value {
        if !defs.contains_key(R::NAME) {
            // Held before the fields are described, so a record that contains itself
            // would refer to itself instead of recursing.
            defs.insert(R::NAME.to_string(), Value::Null);
            let properties = R::properties(defs);
            defs.insert(
                R::NAME.to_string(),
                json!({
                    "type": "object",
                    "properties": properties,
                    // Keys the contract does not document are kept and handed on.
                    "additionalProperties": true,
                }),
            );
        }
        reference(R::NAME)
    }

    /// `schema` or `null`: a record's field reads `null` as absent.
    pub fn nullable(schema: Value) -> Value {
        match schema {
            Value::Object(mut map) if map.get("type").is_some_and(Value::is_string) => {
                let ty = map.remove("type").unwrap_or_default();
                map.insert("type".into(), json!([ty, "null"]));
                Value::Object(map)
            }
            Value::Object(mut map) if map.contains_key("anyOf") => {
                if let Some(Value::Array(any)) = map.get_mut("anyOf") {
                    any.push(json!({ "type": "null" }));
                }
                Value::Object(map)
            }
            other => json!({ "anyOf": [other, { "type": "null" }] }),
        }
    }

    /// What [`Coord`] reads from a string: blank (absent), or a decimal number with an
    /// optional exponent. Narrower than every string Rust parses as a finite `f64` (the
    /// digit counts are bounded so that no string it allows overflows), never wider.
    pub const COORD_PATTERN: &str = r"^[ \t\n\r]*(?:[+-]?(?:[0-9]{1,15}(?:\.[0-9]{0,15})?|\.[0-9]{1,15})(?:[eE][+-]?[0-9]{1,2})?)?[ \t\n\r]*$";

    /// What [`DateTime`] reads: `""`, or a UTC date-time on a day the calendar has
    /// (February 29th only in leap years), with up to nine fractional digits.
    pub const DATETIME_PATTERN: &str = concat!(
        r"^(?:|(?:[0-9]{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])",
        r"|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)",
        r"|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)",
        r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?Z)$",
    );

    impl Describe for Str {
        fn describe(_: &mut Definitions) -> Value {
            json!({ "type": "string" })
        }
    }

    impl Describe for Bool {
        fn describe(_: &mut Definitions) -> Value {
            json!({ "type": "boolean" })
        }
    }

    impl Describe for Num {
        fn describe(_: &mut Definitions) -> Value {
            json!({ "type": "number" })
        }
    }

    impl Describe for Coord {
        fn describe(_: &mut Definitions) -> Value {
            json!({ "anyOf": [
                { "type": "number" },
                { "type": "string", "pattern": COORD_PATTERN },
            ] })
        }
    }

    impl Describe for DateTime {
        fn describe(_: &mut Definitions) -> Value {
            json!({ "type": "string", "pattern": DATETIME_PATTERN })
        }
    }

    impl<F: Describe> Describe for List<F> {
        fn describe(defs: &mut Definitions) -> Value {
            json!({ "type": "array", "items": F::describe(defs) })
        }
    }

    impl Describe for FlexAttrs {
        fn describe(_: &mut Definitions) -> Value {
            json!({
                "type": "object",
                "description": "FlexFormID → FlexAttrID → values",
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": {
                        "type": ["array", "null"],
                        "items": { "type": "string" },
                    },
                },
            })
        }
    }

    /// The answers are written, not read: their schemas say exactly what the writer puts
    /// out (no `null`, no other keys).
    impl Describe for OrderedPart {
        fn describe(defs: &mut Definitions) -> Value {
            defs.insert(
                "OrderedPart".into(),
                json!({
                    "type": "object",
                    "properties": {
                        "PartOrderNum": { "type": "string" },
                        "Parts": { "type": "array", "items": { "type": "string" } },
                    },
                    "required": ["PartOrderNum", "Parts"],
                    "additionalProperties": false,
                }),
            );
            reference("OrderedPart")
        }
    }

    impl Describe for BookJobResponse {
        fn describe(defs: &mut Definitions) -> Value {
            let part = OrderedPart::describe(defs);
            defs.insert(
                "BookJobResponse".into(),
                json!({
                    "type": "object",
                    "properties": {
                        "OrderNum": { "type": "string", "minLength": 1 },
                        "OrderedParts": { "type": "array", "items": part },
                    },
                    "required": ["OrderNum"],
                    "additionalProperties": false,
                }),
            );
            reference("BookJobResponse")
        }
    }

    impl Describe for AppointmentSearchResponse {
        fn describe(defs: &mut Definitions) -> Value {
            let slot = TimeConstraint::describe(defs);
            defs.insert(
                "AppointmentSearchResponse".into(),
                json!({
                    "type": "object",
                    "properties": {
                        "StatusMsg": { "type": "string" },
                        "TimeConstraints": { "type": "array", "items": slot },
                    },
                    "required": ["TimeConstraints"],
                    "additionalProperties": false,
                }),
            );
            reference("AppointmentSearchResponse")
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn decimals_are_pushed_as_a_formatter_writes_them() {
        for n in [0, 7, 10, 99, 12_345, usize::MAX] {
            let mut out = String::from("$[");
            super::push_decimal(&mut out, n);
            assert_eq!(out, format!("$[{n}"));
        }
    }
}
