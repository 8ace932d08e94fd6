//! Event values (the sources' JSON) as MySQL statement parameters, by the
//! **target** column's type:
//!
//! | target | from |
//! |---|---|
//! | integers, `BOOLEAN` | numbers; `true`/`false` as 1/0 |
//! | `FLOAT`/`DOUBLE` | numbers (`NaN`/`Infinity` are refused: MySQL has none) |
//! | `DECIMAL(p,s)` | exact decimal text; more fraction digits than `s` are refused (MySQL would round) |
//! | `BLOB`/`BINARY` | base64 → bytes; a geometry's `wkb` |
//! | `DATETIME`/`TIMESTAMP` | ISO text → `YYYY-MM-DD hh:mm:ss.ffffff` (a trailing `Z` dropped: the session is UTC) |
//! | `BIT(n)` | a number, or a PostgreSQL bit string (`'0101'`) |
//! | `JSON` | the JSON value's text (PostgreSQL arrays too) |
//! | everything else | strings as they are, other JSON as its text |
//!
//! MySQL's strict mode (set by the session) refuses what does not fit
//! (too long, out of range) instead of truncating. Errors name the column
//! problem, never the value. This module is pure.

use base64::Engine as _;
use deltaforge_table_core::types::check_decimal_scale;
use deltaforge_table_core::ColumnType;
use mysql_async::Value as My;
use serde_json::Value;

fn base64_bytes(s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD.decode(s).map_err(|_| "is not base64 binary".to_string())
}

fn datetime(s: &str) -> Result<String, String> {
    if s.contains("infinity") || s.contains("BC") {
        return Err("is a date MySQL cannot hold".into());
    }
    Ok(s.trim_end_matches('Z').replacen('T', " ", 1))
}

/// The parameter for `value` in a column of type `ty`.
pub fn to_param(ty: &ColumnType, value: &Value) -> Result<My, String> {
    use ColumnType as T;
    Ok(match (ty, value) {
        (_, Value::Null) => My::NULL,
        (T::Json | T::Array(_), v) => My::Bytes(v.to_string().into_bytes()),
        (_, Value::Bool(b)) => My::Int(i64::from(*b)),
        (T::Float32 | T::Float64, Value::String(_)) => return Err("is not a number MySQL can hold".into()),
        (T::Float32 | T::Float64, Value::Number(n)) => My::Double(n.as_f64().unwrap_or(f64::NAN)),
        (T::Decimal(Some((_, scale))), Value::String(s)) => {
            let numeric = s.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c));
            if !numeric || !s.chars().any(|c| c.is_ascii_digit()) {
                return Err("is not a decimal MySQL can hold".into());
            }
            check_decimal_scale(s, *scale)?;
            My::Bytes(s.clone().into_bytes())
        }
        (T::Decimal(_), Value::String(s)) => My::Bytes(s.clone().into_bytes()),
        (_, Value::Number(n)) if n.is_u64() => My::UInt(n.as_u64().expect("checked")),
        (_, Value::Number(n)) if n.is_i64() => My::Int(n.as_i64().expect("checked")),
        (_, Value::Number(n)) => My::Bytes(n.to_string().into_bytes()),
        (T::Bytes | T::Geometry, Value::String(s)) => My::Bytes(base64_bytes(s)?),
        (T::Bytes | T::Geometry, Value::Object(m)) if m.contains_key("wkb") => {
            My::Bytes(base64_bytes(m["wkb"].as_str().ok_or("has a `wkb` that is not a string")?)?)
        }
        (T::Timestamp | T::TimestampTz, Value::String(s)) => My::Bytes(datetime(s)?.into_bytes()),
        (T::Bit(_), Value::String(s)) if s.chars().all(|c| c == '0' || c == '1') && s.len() <= 64 => {
            My::UInt(u64::from_str_radix(s, 2).map_err(|_| "is not a bit string".to_string())?)
        }
        (_, Value::String(s)) => My::Bytes(s.clone().into_bytes()),
        (_, v) => My::Bytes(v.to_string().into_bytes()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conversions() {
        assert_eq!(to_param(&ColumnType::Int64, &json!(null)).unwrap(), My::NULL);
        assert_eq!(to_param(&ColumnType::UInt64, &json!(18446744073709551615u64)).unwrap(), My::UInt(u64::MAX));
        assert_eq!(to_param(&ColumnType::Bytes, &json!("AAH/")).unwrap(), My::Bytes(vec![0, 1, 255]));
        assert_eq!(
            to_param(&ColumnType::TimestampTz, &json!("2024-02-29T13:45:00.500000Z")).unwrap(),
            My::Bytes(b"2024-02-29 13:45:00.500000".to_vec())
        );
        assert_eq!(to_param(&ColumnType::Bit(Some(8)), &json!("00000101")).unwrap(), My::UInt(5));
        assert_eq!(to_param(&ColumnType::Json, &json!([1, "a"])).unwrap(), My::Bytes(br#"[1,"a"]"#.to_vec()));
        assert!(to_param(&ColumnType::Float64, &json!("NaN")).is_err());
        assert!(to_param(&ColumnType::Decimal(Some((10, 2))), &json!("1.005")).is_err());
        assert!(to_param(&ColumnType::Decimal(Some((10, 2))), &json!("NaN")).is_err());
        assert!(to_param(&ColumnType::Timestamp, &json!("infinity")).is_err());
        let e = to_param(&ColumnType::Float64, &json!("secret-ish")).unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }
}
