//! Event values (the sources' JSON, see their value tables) as fields of
//! PostgreSQL's `COPY … (FORMAT text)`, by the **target** column's type,
//! so that PostgreSQL's own input functions parse them exactly (numeric,
//! time zones, uuid, arrays, bit strings…):
//!
//! | target type | from |
//! |---|---|
//! | `boolean` | `true`/`false`, or 0/1 (MySQL `TINYINT(1)`) |
//! | integers, `real`, `double precision`, `numeric` | numbers and exact decimal strings, unchanged; a decimal with more fraction digits than the column's scale is refused (PostgreSQL would round it) |
//! | `bytea` | base64 (the sources' binary form) → `\x` hex; a geometry's `wkb` |
//! | `json`/`jsonb` | the JSON value's text |
//! | `bit(n)`/`varbit` | a number (MySQL `BIT`) as `n` binary digits, or the bit string |
//! | arrays | a JSON array as an array literal, element by element |
//! | everything else | strings as they are, other JSON as its text |
//!
//! A value that cannot be converted is an error naming the column (never
//! the value: it could be secret); the sink refuses that event.
//! This module is pure.

use std::fmt::Write as _;

use base64::Engine as _;
use deltaforge_table_core::types::check_decimal_scale;
use deltaforge_table_core::ColumnType;
use serde_json::Value;

/// Appends `value` as a COPY text field for a column of type `ty`.
pub fn push_field(out: &mut String, ty: &ColumnType, value: &Value) -> Result<(), String> {
    if value.is_null() {
        out.push_str("\\N");
        return Ok(());
    }
    let text = to_text(ty, value)?;
    escape_into(out, &text);
    Ok(())
}

/// COPY text escaping: backslash, newline, carriage return, tab.
fn escape_into(out: &mut String, text: &str) {
    for ch in text.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
}

fn base64_bytes(s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD.decode(s).map_err(|_| "is not base64 binary".to_string())
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("\\x");
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The text PostgreSQL's input function of `ty` reads as `value` (not null).
pub fn to_text(ty: &ColumnType, value: &Value) -> Result<String, String> {
    Ok(match (ty, value) {
        (ColumnType::Bool, Value::Bool(b)) => if *b { "t" } else { "f" }.into(),
        (ColumnType::Bool, Value::Number(n)) => if n.as_f64() == Some(0.0) { "f" } else { "t" }.into(),
        (ColumnType::Decimal(Some((_, scale))), Value::String(s)) => {
            check_decimal_scale(s, *scale)?;
            s.clone()
        }
        (ColumnType::Bytes, Value::String(s)) => hex(&base64_bytes(s)?),
        (ColumnType::Bytes | ColumnType::Geometry, Value::Object(m)) if m.contains_key("wkb") => {
            let wkb = base64_bytes(m["wkb"].as_str().ok_or("has a `wkb` that is not a string")?)?;
            match ty {
                ColumnType::Bytes => hex(&wkb),
                _ => hex(&wkb)[2..].to_string(),
            }
        }
        (ColumnType::Json, v) => v.to_string(),
        (ColumnType::Bit(len), Value::Number(n)) => {
            let bits = n.as_u64().ok_or("is not an unsigned bit value")?;
            let width = len.unwrap_or(64 - bits.leading_zeros().min(63)) as usize;
            if width < 64 && bits >> width != 0 {
                return Err(format!("does not fit bit({width})"));
            }
            format!("{bits:0width$b}")
        }
        (ColumnType::Array(inner), Value::Array(items)) => array_literal(inner, items)?,
        (_, Value::String(s)) => s.clone(),
        (_, Value::Bool(b)) => b.to_string(),
        (_, Value::Number(n)) => n.to_string(),
        (_, v) => v.to_string(),
    })
}

/// `{a,"b c",NULL,{1,2}}`: every element quoted, `"` and `\` escaped.
fn array_literal(inner: &ColumnType, items: &[Value]) -> Result<String, String> {
    let mut s = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        match item {
            Value::Null => s.push_str("NULL"),
            Value::Array(nested) => s.push_str(&array_literal(inner, nested)?),
            v => {
                s.push('"');
                for ch in to_text(inner, v)?.chars() {
                    if ch == '"' || ch == '\\' {
                        s.push('\\');
                    }
                    s.push(ch);
                }
                s.push('"');
            }
        }
    }
    s.push('}');
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(ty: ColumnType, v: Value) -> Result<String, String> {
        let mut s = String::new();
        push_field(&mut s, &ty, &v).map(|_| s)
    }

    #[test]
    fn conversions() {
        assert_eq!(field(ColumnType::Int32, json!(null)).unwrap(), "\\N");
        assert_eq!(field(ColumnType::Bool, json!(1)).unwrap(), "t");
        assert_eq!(field(ColumnType::Bytes, json!("AAH/")).unwrap(), "\\\\x0001ff");
        assert_eq!(field(ColumnType::Text(None), json!("a\tb\\c\nd")).unwrap(), "a\\tb\\\\c\\nd");
        assert_eq!(field(ColumnType::Json, json!({"a": [1, "x"]})).unwrap(), r#"{"a":[1,"x"]}"#);
        assert_eq!(field(ColumnType::Bit(Some(8)), json!(5)).unwrap(), "00000101");
        assert!(field(ColumnType::Bit(Some(2)), json!(5)).is_err());
        assert_eq!(field(ColumnType::UInt64, json!(18446744073709551615u64)).unwrap(), "18446744073709551615");
        assert_eq!(
            field(ColumnType::Array(Box::new(ColumnType::Text(None))), json!(["a\"b", null, "c"])).unwrap(),
            r#"{"a\\"b",NULL,"c"}"#
        );
        assert_eq!(
            to_text(&ColumnType::Array(Box::new(ColumnType::Int32)), &json!([[1, 2], [3, 4]])).unwrap(),
            r#"{{"1","2"},{"3","4"}}"#
        );
        assert_eq!(field(ColumnType::Bytes, json!({"srid": 0, "wkb": "AQ=="})).unwrap(), "\\\\x01");
        assert!(field(ColumnType::Bytes, json!("not base64!")).unwrap_err().contains("base64"));
    }

    #[test]
    fn decimals_are_never_rounded() {
        assert_eq!(field(ColumnType::Decimal(Some((10, 2))), json!("12.50")).unwrap(), "12.50");
        assert_eq!(field(ColumnType::Decimal(Some((10, 2))), json!("12.5000")).unwrap(), "12.5000");
        assert!(field(ColumnType::Decimal(Some((10, 2))), json!("12.505")).is_err());
        assert_eq!(
            field(ColumnType::Decimal(None), json!("1.000000000000000000001")).unwrap(),
            "1.000000000000000000001"
        );
    }
}
