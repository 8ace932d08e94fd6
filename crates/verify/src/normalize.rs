//! Value equality across type mappings: a table sink stores a source
//! column in its own database's type, and reading it back gives that
//! type's JSON form. Equal data must compare equal: `true` and `1`, the
//! decimals `7`, `"7"` and `"7.00"`, the timestamps
//! `"2024-02-29T13:45:00.100000Z"` and `"2024-02-29 13:45:00.1"`, a JSON
//! document and its text. Different data stays different.
//!
//! Pure functions; no I/O.

use serde_json::Value;

/// Whether a source value and a sink value hold the same data.
pub fn same(a: &Value, b: &Value) -> bool {
    a == b || canonical(a) == canonical(b)
}

/// The canonical form [`same`] compares.
pub fn canonical(v: &Value) -> Value {
    match v {
        Value::Bool(b) => Value::String(if *b { "1" } else { "0" }.into()),
        Value::Number(n) => Value::String(decimal(&n.to_string()).unwrap_or_else(|| n.to_string())),
        Value::String(s) => {
            if let Some(d) = decimal(s) {
                return Value::String(d);
            }
            if let Some(t) = timestamp(s) {
                return Value::String(t);
            }
            match s.trim_start().chars().next() {
                Some('{' | '[') => {
                    serde_json::from_str::<Value>(s).map(|j| canonical(&j)).unwrap_or_else(|_| v.clone())
                }
                _ => v.clone(),
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), canonical(v))).collect()),
        Value::Null => Value::Null,
    }
}

/// A plain decimal number's text without trailing fraction zeros (`7.00`
/// → `7`, `-0.50` → `-0.5`, `1e3` is not plain); `None` when not a
/// decimal.
fn decimal(s: &str) -> Option<String> {
    let body = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let frac = frac.trim_end_matches('0');
    let neg = s.starts_with('-') && !(int == "0" && frac.is_empty());
    Some(format!("{}{int}{}{frac}", if neg { "-" } else { "" }, if frac.is_empty() { "" } else { "." }))
}

/// A timestamp `YYYY-MM-DD[T ]HH:MM:SS[.f…][Z|+00:00]` as
/// `YYYY-MM-DD HH:MM:SS[.f]` without trailing fraction zeros; `None` when
/// not one (or with another offset than UTC).
fn timestamp(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let shape = b.len() >= 19
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b'T' || b[10] == b' ')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape {
        return None;
    }
    let rest = &s[19..];
    let rest = rest.strip_suffix('Z').or_else(|| rest.strip_suffix("+00:00")).unwrap_or(rest);
    let frac = match rest.strip_prefix('.') {
        Some(f) if f.bytes().all(|c| c.is_ascii_digit()) => f.trim_end_matches('0'),
        None if rest.is_empty() => "",
        _ => return None,
    };
    Some(format!("{} {}{}{frac}", &s[..10], &s[11..19], if frac.is_empty() { "" } else { "." }))
}

#[cfg(test)]
mod tests {
    use super::same;
    use serde_json::json;

    #[test]
    fn equal_data_in_other_types_is_the_same() {
        assert!(same(&json!(true), &json!(1)));
        assert!(same(&json!(false), &json!(0)));
        assert!(same(&json!("7.00"), &json!(7)));
        assert!(same(&json!("7"), &json!("7.000")));
        assert!(same(&json!("-0.50"), &json!("-0.5")));
        assert!(same(&json!(2.5), &json!("2.50")));
        assert!(same(&json!("2024-02-29T13:45:00.100000Z"), &json!("2024-02-29 13:45:00.1")));
        assert!(same(&json!("2024-02-29T13:45:00.000000"), &json!("2024-02-29 13:45:00")));
        assert!(same(&json!({"k": [1, "v"]}), &json!("{\"k\": [1, \"v\"]}")));
        assert!(same(&json!(null), &json!(null)));
    }

    #[test]
    fn different_data_stays_different() {
        assert!(!same(&json!(true), &json!(2)));
        assert!(!same(&json!("7.01"), &json!(7)));
        assert!(!same(&json!("70"), &json!(7)));
        assert!(!same(&json!("2024-02-29T13:45:00.1Z"), &json!("2024-02-29 13:45:00.2")));
        assert!(!same(&json!("2024-02-29T13:45:00+01:00"), &json!("2024-02-29 13:45:00")));
        assert!(!same(&json!("fixture"), &json!("tampered")));
        assert!(!same(&json!(null), &json!(0)));
        assert!(!same(&json!("1"), &json!(null)));
    }
}
