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
use std::fmt::Write as _;

/// One problem found while decoding, in the shape of the error body's `invalidParams`.
#[derive(Debug, Clone, PartialEq)]
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
        // Writing into a String cannot fail.
        let _ = write!(self.path, "[{index}]");
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

/// How one JSON value maps to one WIT value.
pub trait Field {
    type Out;
    fn decode(v: &Value, d: &mut Decoder) -> Option<Self::Out>;
    fn encode(out: &Self::Out) -> Result<Value, EncodeError>;
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
    fn encode(out: &String) -> Result<Value, EncodeError> {
        Ok(Value::String(out.clone()))
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
    fn encode(out: &bool) -> Result<Value, EncodeError> {
        Ok(Value::Bool(*out))
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
    fn encode(out: &f64) -> Result<Value, EncodeError> {
        number(*out)
    }
}

fn number(n: f64) -> Result<Value, EncodeError> {
    serde_json::Number::from_f64(n)
        .map(Value::Number)
        .ok_or_else(|| EncodeError(format!("{n} is not a JSON number")))
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
    fn encode(out: &f64) -> Result<Value, EncodeError> {
        number(*out)
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
    fn encode(out: &String) -> Result<Value, EncodeError> {
        Ok(Value::String(out.clone()))
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
    fn encode(out: &Vec<F::Out>) -> Result<Value, EncodeError> {
        out.iter()
            .map(F::encode)
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array)
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
    fn encode(out: &Vec<FlexFormValues>) -> Result<Value, EncodeError> {
        let mut forms = Map::new();
        for form in out {
            let mut attrs = Map::new();
            for attr in &form.attrs {
                let values = attr.values.iter().cloned().map(Value::String).collect();
                attrs.insert(attr.attr_id.clone(), Value::Array(values));
            }
            forms.insert(form.form_id.clone(), Value::Object(attrs));
        }
        Ok(Value::Object(forms))
    }
}

/// Parses `extensions` text back into the keys it holds.
fn extension_keys(text: &str) -> Result<Map<String, Value>, EncodeError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(EncodeError(format!(
            "extensions must be the JSON text of an object, got {text:?}"
        ))),
    }
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
                let mut unknown: Option<Map<String, Value>> = None;
                for (key, value) in map {
                    match key.as_str() {
                        $($key $(| $alias)* => out.$field = d.field::<$codec>(key, value),)*
                        _ => {
                            unknown.get_or_insert_with(Map::new).insert(key.clone(), value.clone());
                        }
                    }
                }
                out.extensions = unknown.map(|m| Value::Object(m).to_string());
                Some(out)
            }
            fn encode(out: &$ty) -> Result<Value, EncodeError> {
                let mut map = match &out.extensions {
                    Some(text) => extension_keys(text)?,
                    None => Map::new(),
                };
                $(
                    if let Some(x) = &out.$field {
                        map.insert($key.to_string(), <$codec as Field>::encode(x)?);
                    }
                )*
                Ok(Value::Object(map))
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
    fn encode(out: &OrderedPart) -> Result<Value, EncodeError> {
        let mut map = Map::new();
        map.insert("PartOrderNum".into(), Str::encode(&out.part_order_num)?);
        map.insert("Parts".into(), List::<Str>::encode(&out.parts)?);
        Ok(Value::Object(map))
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
    fn encode(out: &BookJobResponse) -> Result<Value, EncodeError> {
        if out.order_num.is_empty() {
            return Err(EncodeError(
                "OrderNum is empty; a successful booking must name the new order".into(),
            ));
        }
        let mut map = Map::new();
        map.insert("OrderNum".into(), Str::encode(&out.order_num)?);
        if !out.ordered_parts.is_empty() {
            map.insert(
                "OrderedParts".into(),
                List::<OrderedPart>::encode(&out.ordered_parts)?,
            );
        }
        Ok(Value::Object(map))
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
    fn encode(out: &AppointmentSearchResponse) -> Result<Value, EncodeError> {
        let mut map = Map::new();
        if let Some(msg) = &out.status_msg {
            map.insert("StatusMsg".into(), Str::encode(msg)?);
        }
        for (i, slot) in out.time_constraints.iter().enumerate() {
            let period = slot.period.as_ref();
            for (name, at) in [
                ("Start", period.and_then(|p| p.start.as_deref())),
                ("End", period.and_then(|p| p.end.as_deref())),
            ] {
                if let Some(at) = at.filter(|at| parse_datetime(at).is_none()) {
                    return Err(EncodeError(format!(
                        "TimeConstraints[{i}].Period.{name} {at:?} is not a UTC ISO-8601 date-time"
                    )));
                }
            }
        }
        map.insert(
            "TimeConstraints".into(),
            List::<TimeConstraint>::encode(&out.time_constraints)?,
        );
        Ok(Value::Object(map))
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
    F::encode(out)
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
        let padded = format!("{frac:0<3}");
        millis = padded[..3].parse::<i64>().ok()?;
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
