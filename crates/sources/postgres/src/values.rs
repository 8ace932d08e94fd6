//! Mapping of pgoutput text-format column values to JSON, by type OID.
//!
//! The replication session pins `DateStyle=ISO`, `IntervalStyle=iso_8601`
//! and `TimeZone=UTC`, so the server's text output is already close to ISO
//! 8601; this module finishes the job:
//!
//! | PostgreSQL type | JSON |
//! |---|---|
//! | `int2`, `int4`, `int8`, `oid` | number |
//! | `numeric` | string, exact (`"12.340"`, `"NaN"`) |
//! | `float4`, `float8` | number; `"NaN"`, `"Infinity"`, `"-Infinity"` as strings |
//! | `bool` | `true` / `false` |
//! | text types, `uuid`, `inet`, `cidr`, `macaddr`, `money`, `bit`, enums, other types | string as PostgreSQL prints it |
//! | `bytea` | base64 (standard alphabet, padded) |
//! | `date` | `"2024-02-29"` |
//! | `time` / `timetz` | `"13:45:00.000001"` / `"13:45:00+02"` |
//! | `timestamp` | `"2024-02-29T13:45:00.123456"` (always 6 fraction digits) |
//! | `timestamptz` | `"2024-02-29T13:45:00.123456Z"` (UTC, 6 fraction digits) |
//! | `interval` | ISO 8601 duration, `"P1Y2M3DT4H5M6.5S"` |
//! | `json`, `jsonb` | the JSON value itself |
//! | arrays of the types above | JSON arrays (nested for several dimensions) |
//! | NULL | `null` |
//! | unchanged TOAST value | `{"__deltaforge_unchanged_toast": true}` |
//!
//! `infinity`/`-infinity` dates and timestamps, and BC dates, stay strings
//! as PostgreSQL prints them. Types this module does not know (enums,
//! domains, composites, extension types, arrays of those) are strings.
//!
//! This module is pure: it must never query the server (type OIDs come from
//! the relation message) and it must never fail: a value it cannot
//! interpret falls back to the server's text.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

/// The JSON key of the marker that stands for an unchanged TOAST value
/// (PostgreSQL did not send the value because the update did not touch it).
pub const UNCHANGED_TOAST_KEY: &str = "__deltaforge_unchanged_toast";

/// The marker object for an unchanged TOAST value:
/// `{"__deltaforge_unchanged_toast": true}`.
pub fn unchanged_toast() -> Value {
    let mut m = Map::new();
    m.insert(UNCHANGED_TOAST_KEY.to_string(), Value::Bool(true));
    Value::Object(m)
}

/// Built-in type OIDs this module interprets.
pub mod oid {
    #![allow(missing_docs)]
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const XML: u32 = 142;
    pub const CIDR: u32 = 650;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const MACADDR8: u32 = 774;
    pub const MONEY: u32 = 790;
    pub const MACADDR: u32 = 829;
    pub const INET: u32 = 869;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const BIT: u32 = 1560;
    pub const VARBIT: u32 = 1562;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

/// The element type of a built-in array type, if `type_oid` is one.
pub fn array_element(type_oid: u32) -> Option<u32> {
    use oid::*;
    Some(match type_oid {
        1000 => BOOL,
        1001 => BYTEA,
        1002 => CHAR,
        1003 => NAME,
        1005 => INT2,
        1007 => INT4,
        1009 => TEXT,
        1014 => BPCHAR,
        1015 => VARCHAR,
        1016 => INT8,
        1021 => FLOAT4,
        1022 => FLOAT8,
        1028 => OID,
        1040 => MACADDR,
        1041 => INET,
        651 => CIDR,
        775 => MACADDR8,
        791 => MONEY,
        143 => XML,
        199 => JSON,
        3807 => JSONB,
        1115 => TIMESTAMP,
        1182 => DATE,
        1183 => TIME,
        1185 => TIMESTAMPTZ,
        1187 => INTERVAL,
        1231 => NUMERIC,
        1270 => TIMETZ,
        1561 => BIT,
        1563 => VARBIT,
        2951 => UUID,
        _ => return None,
    })
}

/// The name of a built-in type, for schema descriptions.
pub fn builtin_type_name(type_oid: u32) -> Option<&'static str> {
    use oid::*;
    Some(match type_oid {
        BOOL => "bool",
        BYTEA => "bytea",
        CHAR => "char",
        NAME => "name",
        INT8 => "int8",
        INT2 => "int2",
        INT4 => "int4",
        TEXT => "text",
        OID => "oid",
        JSON => "json",
        XML => "xml",
        CIDR => "cidr",
        FLOAT4 => "float4",
        FLOAT8 => "float8",
        MACADDR8 => "macaddr8",
        MONEY => "money",
        MACADDR => "macaddr",
        INET => "inet",
        BPCHAR => "bpchar",
        VARCHAR => "varchar",
        DATE => "date",
        TIME => "time",
        TIMESTAMP => "timestamp",
        TIMESTAMPTZ => "timestamptz",
        INTERVAL => "interval",
        TIMETZ => "timetz",
        BIT => "bit",
        VARBIT => "varbit",
        NUMERIC => "numeric",
        UUID => "uuid",
        JSONB => "jsonb",
        1000 => "_bool",
        1001 => "_bytea",
        1005 => "_int2",
        1007 => "_int4",
        1009 => "_text",
        1014 => "_bpchar",
        1015 => "_varchar",
        1016 => "_int8",
        1021 => "_float4",
        1022 => "_float8",
        1182 => "_date",
        1115 => "_timestamp",
        1185 => "_timestamptz",
        1187 => "_interval",
        1231 => "_numeric",
        2951 => "_uuid",
        199 => "_json",
        3807 => "_jsonb",
        1041 => "_inet",
        _ => return None,
    })
}

/// Converts one text-format value of type `type_oid` to JSON.
pub fn to_json(type_oid: u32, text: &str) -> Value {
    use oid::*;
    match type_oid {
        INT2 | INT4 | INT8 | OID => match text.parse::<i64>() {
            Ok(n) => Value::Number(n.into()),
            Err(_) => Value::String(text.to_string()),
        },
        FLOAT4 | FLOAT8 => match text.parse::<f64>().ok().and_then(Number::from_f64) {
            Some(n) => Value::Number(n),
            // NaN, Infinity, -Infinity: JSON has no numbers for them.
            None => Value::String(text.to_string()),
        },
        BOOL => match text {
            "t" | "true" => Value::Bool(true),
            "f" | "false" => Value::Bool(false),
            other => Value::String(other.to_string()),
        },
        BYTEA => match decode_bytea(text) {
            Some(bytes) => Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
            None => Value::String(text.to_string()),
        },
        JSON | JSONB => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())),
        TIMESTAMP => Value::String(timestamp(text, false)),
        TIMESTAMPTZ => Value::String(timestamp(text, true)),
        TIME => Value::String(time_of_day(text)),
        other => match array_element(other) {
            Some(elem) => match parse_array(text) {
                Some(arr) => arr.into_json(elem),
                None => Value::String(text.to_string()),
            },
            // numeric, text types, date, interval, uuid, network types,
            // enums and unknown types: PostgreSQL's own text.
            None => Value::String(text.to_string()),
        },
    }
}

/// `\x0a0b…` (hex output) or the legacy escape format to bytes.
fn decode_bytea(text: &str) -> Option<Vec<u8>> {
    if let Some(hex) = text.strip_prefix("\\x") {
        // Pairs of ASCII hex digits only (slicing a string two bytes at a
        // time would cut a multi-byte character in half).
        let hex = hex.as_bytes();
        if hex.len() % 2 != 0 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        return hex.chunks_exact(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect();
    }
    // Escape format: backslash-octal and doubled backslashes.
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if b.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
            } else {
                let oct = text.get(i + 1..i + 4)?;
                out.push(u8::from_str_radix(oct, 8).ok()?);
                i += 4;
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Pads a fraction of seconds to microseconds: `05` → `05.000000`,
/// `05.12` → `05.120000`.
fn micros(secs: &str) -> String {
    let mut out = String::with_capacity(secs.len() + 7);
    push_micros(&mut out, secs);
    out
}

/// Appends `secs` with its fraction padded to microseconds (see [`micros`]);
/// built in place because every timestamp of every row passes here.
fn push_micros(out: &mut String, secs: &str) {
    match secs.split_once('.') {
        Some((s, f)) if f.len() <= 6 && f.bytes().all(|b| b.is_ascii_digit()) => {
            out.push_str(s);
            out.push('.');
            out.push_str(f);
            out.extend(std::iter::repeat_n('0', 6 - f.len()));
        }
        Some(_) => out.push_str(secs),
        None => {
            out.push_str(secs);
            out.push_str(".000000");
        }
    }
}

/// `HH:MM:SS[.f]` with microseconds.
fn time_of_day(text: &str) -> String {
    if text.len() >= 8 && text.as_bytes()[2] == b':' {
        micros(text)
    } else {
        text.to_string()
    }
}

/// `YYYY-MM-DD HH:MM:SS[.f][+00]` → `YYYY-MM-DDTHH:MM:SS.ffffff[Z]`.
/// Infinities and BC dates are returned unchanged.
fn timestamp(text: &str, tz: bool) -> String {
    let Some((date, rest)) = text.split_once(' ') else { return text.to_string() };
    if rest.ends_with("BC") || date.len() < 10 {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 10);
    out.push_str(date);
    out.push('T');
    if !tz {
        push_micros(&mut out, rest);
        return out;
    }
    // With TimeZone=UTC the offset is "+00"; keep any other offset explicit.
    let split = rest.find(['+', '-']).unwrap_or(rest.len());
    let (time, offset) = rest.split_at(split);
    push_micros(&mut out, time);
    match offset {
        "" | "+00" | "+00:00" | "-00" => out.push('Z'),
        o if o.len() == 3 => {
            out.push_str(o);
            out.push_str(":00");
        }
        o => out.push_str(o),
    }
    out
}

/// A parsed array literal (possibly nested).
#[derive(Debug, PartialEq)]
enum ArrayNode {
    Null,
    Item(String),
    List(Vec<ArrayNode>),
}

impl ArrayNode {
    fn into_json(self, elem: u32) -> Value {
        match self {
            ArrayNode::Null => Value::Null,
            ArrayNode::Item(s) => to_json(elem, &s),
            ArrayNode::List(items) => Value::Array(items.into_iter().map(|n| n.into_json(elem)).collect()),
        }
    }
}

/// Parses PostgreSQL's array output: `{1,2,NULL}`, `{{a,b},{c,d}}`,
/// `{"with space","q\"uote"}`, optionally prefixed by bounds `[0:1]=`.
fn parse_array(text: &str) -> Option<ArrayNode> {
    let text = if text.starts_with('[') { text.split_once('=')?.1 } else { text };
    let chars: Vec<char> = text.chars().collect();
    let mut pos = 0;
    let node = parse_list(&chars, &mut pos, 1)?;
    (pos == chars.len()).then_some(node)
}

/// Most array dimensions PostgreSQL allows (`MAXDIM`): a deeper literal is
/// not one the server prints, and is kept as text rather than recursed into.
const MAX_ARRAY_DIMS: usize = 6;

fn parse_list(c: &[char], pos: &mut usize, depth: usize) -> Option<ArrayNode> {
    if c.get(*pos) != Some(&'{') || depth > MAX_ARRAY_DIMS {
        return None;
    }
    *pos += 1;
    let mut items = Vec::new();
    if c.get(*pos) == Some(&'}') {
        *pos += 1;
        return Some(ArrayNode::List(items));
    }
    loop {
        match c.get(*pos)? {
            '{' => items.push(parse_list(c, pos, depth + 1)?),
            '"' => {
                *pos += 1;
                let mut s = String::new();
                loop {
                    match c.get(*pos)? {
                        '\\' => {
                            s.push(*c.get(*pos + 1)?);
                            *pos += 2;
                        }
                        '"' => {
                            *pos += 1;
                            break;
                        }
                        ch => {
                            s.push(*ch);
                            *pos += 1;
                        }
                    }
                }
                items.push(ArrayNode::Item(s));
            }
            _ => {
                let mut s = String::new();
                while let Some(&ch) = c.get(*pos) {
                    if ch == ',' || ch == '}' {
                        break;
                    }
                    if ch == '\\' {
                        s.push(*c.get(*pos + 1)?);
                        *pos += 2;
                        continue;
                    }
                    s.push(ch);
                    *pos += 1;
                }
                items.push(if s.eq_ignore_ascii_case("NULL") { ArrayNode::Null } else { ArrayNode::Item(s) });
            }
        }
        match c.get(*pos)? {
            ',' => *pos += 1,
            '}' => {
                *pos += 1;
                return Some(ArrayNode::List(items));
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::oid::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars() {
        assert_eq!(to_json(INT2, "-32768"), json!(-32768));
        assert_eq!(to_json(INT8, "9223372036854775807"), json!(9223372036854775807i64));
        assert_eq!(to_json(NUMERIC, "12345678901234567890.000123"), json!("12345678901234567890.000123"));
        assert_eq!(to_json(NUMERIC, "NaN"), json!("NaN"));
        assert_eq!(to_json(FLOAT8, "1.5"), json!(1.5));
        assert_eq!(to_json(FLOAT4, "NaN"), json!("NaN"));
        assert_eq!(to_json(FLOAT8, "-Infinity"), json!("-Infinity"));
        assert_eq!(to_json(BOOL, "t"), json!(true));
        assert_eq!(to_json(BOOL, "f"), json!(false));
        assert_eq!(to_json(BYTEA, "\\xdeadbeef"), json!("3q2+7w=="));
        assert_eq!(to_json(BYTEA, "\\x"), json!(""));
        assert_eq!(to_json(JSONB, "{\"a\": [1, null]}"), json!({"a": [1, null]}));
        assert_eq!(
            to_json(UUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
        );
        assert_eq!(to_json(99999, "happy"), json!("happy"));
    }

    #[test]
    fn times() {
        assert_eq!(to_json(TIMESTAMP, "2024-02-29 13:45:00"), json!("2024-02-29T13:45:00.000000"));
        assert_eq!(to_json(TIMESTAMP, "2024-02-29 13:45:00.5"), json!("2024-02-29T13:45:00.500000"));
        assert_eq!(to_json(TIMESTAMPTZ, "2024-02-29 13:45:00.123456+00"), json!("2024-02-29T13:45:00.123456Z"));
        assert_eq!(to_json(TIMESTAMPTZ, "2024-02-29 13:45:00+05:30"), json!("2024-02-29T13:45:00.000000+05:30"));
        assert_eq!(to_json(TIMESTAMPTZ, "2024-02-29 13:45:00.1234-08"), json!("2024-02-29T13:45:00.123400-08:00"));
        assert_eq!(to_json(TIMESTAMPTZ, "0044-03-15 12:00:00+00 BC"), json!("0044-03-15 12:00:00+00 BC"));
        assert_eq!(to_json(TIMESTAMPTZ, "infinity"), json!("infinity"));
        assert_eq!(to_json(DATE, "2024-02-29"), json!("2024-02-29"));
        assert_eq!(to_json(TIME, "13:45:00.25"), json!("13:45:00.250000"));
        assert_eq!(to_json(INTERVAL, "P1Y2M3DT4H5M6.5S"), json!("P1Y2M3DT4H5M6.5S"));
    }

    #[test]
    fn arrays() {
        assert_eq!(to_json(1007, "{1,2,NULL}"), json!([1, 2, null]));
        assert_eq!(to_json(1007, "{{1,2},{3,4}}"), json!([[1, 2], [3, 4]]));
        assert_eq!(to_json(1009, "{\"a b\",\"q\\\"uote\",plain,\"NULL\"}"), json!(["a b", "q\"uote", "plain", "NULL"]));
        assert_eq!(to_json(1009, "{}"), json!([]));
        assert_eq!(to_json(1007, "[0:1]={5,6}"), json!([5, 6]));
        assert_eq!(to_json(3807, "{\"{\\\"a\\\": 1}\"}"), json!([{"a": 1}]));
        assert_eq!(to_json(1001, "{\"\\\\x0102\"}"), json!(["AQI="]));
        assert_eq!(to_json(1007, "{1,2"), json!("{1,2"));
    }

    #[test]
    fn toast_marker() {
        assert_eq!(unchanged_toast(), json!({"__deltaforge_unchanged_toast": true}));
    }
}
