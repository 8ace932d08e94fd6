//! Shared value helpers: loose comparison of JSON values (numbers against
//! numeric strings, because sources encode decimals as strings), text
//! rendering of values for hashing and regexes, field paths into events,
//! and the processor error constructor.
//!
//! Pure functions only; they must never log values (personal data).

use std::cmp::Ordering;

use deltaforge_core::{Event, ProcessorError};
use serde_json::Value;

/// A number as compared: integers exactly, everything else as `f64`.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

fn num_of_number(n: &serde_json::Number) -> Num {
    if let Some(i) = n.as_i64() {
        Num::Int(i as i128)
    } else if let Some(u) = n.as_u64() {
        Num::Int(u as i128)
    } else {
        Num::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// A numeric string (`"12.50"`, `"-3"`, `"1e3"`) as a number; not
/// `"inf"`/`"NaN"` and not strings with surrounding spaces.
fn num_of_str(s: &str) -> Option<Num> {
    if let Some(n) = short_decimal(s.as_bytes()) {
        return Some(n);
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')) {
        return None;
    }
    if let Ok(i) = s.parse::<i128>() {
        return Some(Num::Int(i));
    }
    s.parse::<f64>().ok().filter(|f| f.is_finite()).map(Num::Float)
}

/// Powers of ten exactly representable as `f64`.
const POW10: [f64; 16] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];

/// The common decimal forms, `-?D+` with at most 18 digits and `-?D+.D+`
/// with at most 15 digits in all, parsed without the general parsers
/// (sources send every decimal column this way). The results are exactly
/// those of [`num_of_str`]'s general path: an integer is the same `i128`,
/// and for a fraction `m / 10^k` with `m < 2^53` and `k <= 15` both
/// operands are exact `f64`s, so the one correctly rounded division gives
/// the correctly rounded value `str::parse::<f64>` returns. Anything else
/// is `None` and goes the general way.
fn short_decimal(b: &[u8]) -> Option<Num> {
    let (neg, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        _ => (false, b),
    };
    let (int, frac) = match digits.iter().position(|&c| c == b'.') {
        Some(dot) => (&digits[..dot], Some(&digits[dot + 1..])),
        None => (digits, None),
    };
    let all = int.len() + frac.map_or(0, <[u8]>::len);
    let limit = if frac.is_some() { 15 } else { 18 };
    if int.is_empty() || frac.is_some_and(<[u8]>::is_empty) || all > limit {
        return None;
    }
    let mut m: u64 = 0;
    for &c in int.iter().chain(frac.unwrap_or_default()) {
        if !c.is_ascii_digit() {
            return None;
        }
        m = m * 10 + u64::from(c - b'0');
    }
    Some(match frac {
        None => Num::Int(if neg { -(m as i128) } else { m as i128 }),
        Some(f) => {
            let x = m as f64 / POW10[f.len()];
            Num::Float(if neg { -x } else { x })
        }
    })
}

fn cmp_num(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
        (Num::Int(x), Num::Float(y)) => (x as f64).partial_cmp(&y),
        (Num::Float(x), Num::Int(y)) => x.partial_cmp(&(y as f64)),
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(&y),
    }
}

/// Both values as numbers when at least one is a JSON number and the other
/// is a number or a numeric string.
fn numeric_pair(a: &Value, b: &Value) -> Option<(Num, Num)> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => Some((num_of_number(x), num_of_number(y))),
        (Value::Number(x), Value::String(s)) => Some((num_of_number(x), num_of_str(s)?)),
        (Value::String(s), Value::Number(y)) => Some((num_of_str(s)?, num_of_number(y))),
        _ => None,
    }
}

/// Equality as the filter defines it: numerically when one side is a
/// number and the other a number or numeric string (`1 == 1.0 == "1.00"`),
/// JSON equality otherwise.
pub(crate) fn loose_eq(a: &Value, b: &Value) -> bool {
    match numeric_pair(a, b) {
        Some((x, y)) => cmp_num(x, y) == Some(Ordering::Equal),
        None => a == b,
    }
}

/// Ordering as the filter defines it: numeric (as [`loose_eq`]), or
/// lexicographic (bytewise) for two strings, so ISO-8601 timestamps order
/// by time; `None` (never matches) for anything else.
pub(crate) fn loose_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    if let Some((x, y)) = numeric_pair(a, b) {
        return cmp_num(x, y);
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x.as_str().cmp(y.as_str())),
        _ => None,
    }
}

/// The text of a scalar: strings as-is, numbers and booleans as JSON text;
/// `None` for null, arrays and objects.
pub(crate) fn scalar_text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Value::String(s) => Some(s.as_str().into()),
        Value::Number(n) => Some(n.to_string().into()),
        Value::Bool(b) => Some(if *b { "true" } else { "false" }.into()),
        _ => None,
    }
}

/// Which row image a field path reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Image {
    /// `after.col`.
    After,
    /// `before.col`.
    Before,
    /// `col`: the after image, or the before image when there is no after
    /// image (deletes).
    Current,
}

/// A parsed field path: `after.col`, `before.col.nested.key` or `col`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldPath {
    pub image: Image,
    pub column: String,
    pub nested: Vec<String>,
}

impl FieldPath {
    /// Parses a path; segments after the column walk into JSON objects.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.split('.');
        let first = parts.next().unwrap_or("");
        let (image, column) = match first {
            "after" => (Image::After, parts.next()),
            "before" => (Image::Before, parts.next()),
            _ => (Image::Current, Some(first)),
        };
        let column = column.filter(|c| !c.is_empty()).ok_or_else(|| {
            format!("field {text:?} names no column; write `after.COLUMN`, `before.COLUMN` or `COLUMN`")
        })?;
        let nested: Vec<String> = parts.map(str::to_string).collect();
        if nested.iter().any(String::is_empty) {
            return Err(format!("field {text:?} has an empty segment"));
        }
        Ok(FieldPath { image, column: column.to_string(), nested })
    }

    /// The value at the nested keys of this path inside a column value.
    pub(crate) fn walk<'a>(mut v: &'a Value, nested: &[String]) -> Option<&'a Value> {
        for key in nested {
            v = v.as_object()?.get(key)?;
        }
        Some(v)
    }
}

/// A processor error naming the processor and, when given, the event at
/// fault (its index in the processor's input goes to `event_index`, so a
/// dead-letter queue can set that event aside).
pub(crate) fn error(
    processor: &str,
    event: Option<(usize, &Event)>,
    message: impl std::fmt::Display,
) -> ProcessorError {
    match event {
        Some((i, e)) => ProcessorError::event(processor, i, format!("{}: {message}", describe(i, e))),
        None => ProcessorError::batch(processor, message.to_string()),
    }
}

/// `event #3 of the batch (id dg:42:0, table demo.orders)`.
pub(crate) fn describe(i: usize, e: &Event) -> String {
    format!("event #{i} of the batch (id {}, table {}.{})", e.idempotency_key(), e.source.db, e.source.table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_and_numeric_strings_compare_numerically() {
        assert!(loose_eq(&json!(1), &json!(1.0)));
        assert!(loose_eq(&json!("12.50"), &json!(12.5)));
        assert!(!loose_eq(&json!("12.50"), &json!("12.5")), "two strings compare as strings");
        assert!(!loose_eq(&json!("abc"), &json!(0)));
        assert_eq!(loose_cmp(&json!("9.99"), &json!(10)), Some(Ordering::Less));
        assert_eq!(loose_cmp(&json!(u64::MAX), &json!(u64::MAX - 1)), Some(Ordering::Greater), "exact for big ints");
        assert_eq!(loose_cmp(&json!("2026-01-02"), &json!("2026-01-10")), Some(Ordering::Less));
        assert_eq!(loose_cmp(&json!(true), &json!(1)), None);
        assert_eq!(loose_cmp(&json!("inf"), &json!(1)), None);
    }

    #[test]
    fn short_decimals_parse_as_the_general_path() {
        fn general(s: &str) -> Option<Num> {
            if let Ok(i) = s.parse::<i128>() {
                return Some(Num::Int(i));
            }
            s.parse::<f64>().ok().filter(|f| f.is_finite()).map(Num::Float)
        }
        let same = |a: Option<Num>, b: Option<Num>| match (a, b) {
            (Some(Num::Int(x)), Some(Num::Int(y))) => x == y,
            (Some(Num::Float(x)), Some(Num::Float(y))) => x.to_bits() == y.to_bits(),
            (None, None) => true,
            _ => false,
        };
        let mut cases: Vec<String> = [
            "0",
            "-0",
            "12",
            "-12",
            "007",
            "12.50",
            "-12.50",
            "0.1",
            "-0.0",
            "0.30000000000000004",
            "999999999999999",
            "99999999999999.9",
            "9.99999999999999",
            "123456789012345678",
            "1234567890123456789",
            "1.",
            ".5",
            "-",
            "-.5",
            "+1.5",
            "1e3",
            "1.2.3",
            "",
            "12a",
            "1-2",
            "4503599627370496.5",
            "0.000000000000001",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Datagen-like amounts and a spread of short fractions.
        for i in 0..20_000u64 {
            let cents = (i * 7919) % 100_000;
            cases.push(format!("{}.{:02}", cents / 100, cents % 100));
            cases.push(format!("-{}.{:03}", i / 7, i % 1000));
            cases.push(format!("{}.{}", i * 104_729 % 1_000_000_007, i % 97));
        }
        for c in &cases {
            if let Some(fast) = short_decimal(c.as_bytes()) {
                assert!(same(Some(fast), general(c)), "{c}");
            }
            let full = num_of_str(c);
            let want = if c.is_empty() || !c.bytes().all(|b| b.is_ascii_digit() || b"-+.eE".contains(&b)) {
                None
            } else {
                general(c)
            };
            assert!(same(full, want), "{c}");
        }
        assert!(matches!(short_decimal(b"12.50"), Some(Num::Float(x)) if x == 12.5));
        assert!(matches!(short_decimal(b"-7"), Some(Num::Int(-7))));
    }

    #[test]
    fn field_paths() {
        let p = FieldPath::parse("after.doc.customer.id").unwrap();
        assert_eq!((p.image, p.column.as_str(), p.nested.len()), (Image::After, "doc", 2));
        assert_eq!(FieldPath::parse("status").unwrap().image, Image::Current);
        assert!(FieldPath::parse("after").is_err());
        assert!(FieldPath::parse("after..x").is_err());
    }
}
