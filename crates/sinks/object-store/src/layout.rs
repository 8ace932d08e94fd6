//! Column types of a Parquet file, from the schema a source registered for
//! the table (the schema registry), and the conversion of event values.
//!
//! | source type | Arrow / Parquet |
//! |---|---|
//! | PG `int2`/`int4`/`int8`, MySQL `tinyint`…`bigint` (signed/unsigned) | `Int8`…`Int64`, `UInt8`…`UInt64` (INT(bits, signed)) |
//! | PG `numeric(p,s)`, MySQL `decimal(p,s)`, p ≤ 38 | `Decimal128(p, s)` (DECIMAL) |
//! | PG `numeric` without precision, p > 38 | UTF8 (exact text) |
//! | PG `timestamptz`, MySQL `timestamp` | TIMESTAMP(MICROS, UTC) |
//! | PG `timestamp`, MySQL `datetime` | TIMESTAMP(MICROS, not UTC-adjusted) |
//! | `date` | DATE |
//! | PG `time` | TIME(MICROS) (MySQL `time` spans ±838 h: UTF8) |
//! | `bool` | BOOLEAN; `float4`/`float` FLOAT; `float8`/`double` DOUBLE |
//! | `bytea`, MySQL binary/blob types | BINARY |
//! | `uuid` | UTF8 (the canonical text, readable by every engine) |
//! | text, JSON and every other type | UTF8 |
//!
//! A table with no registered schema (or a source that records no types)
//! gets UTF8 columns. A value its column cannot hold exactly (PostgreSQL
//! `NaN` numerics, `infinity` timestamps, MySQL zero dates, digits beyond
//! a decimal's scale or a timestamp's microseconds) makes its event a
//! per-event error (dead-lettered, or failing the batch without a
//! dead-letter queue), never a NULL or a truncation. Every file starts with `__id` (the
//! idempotency key), `__op` and `__ts_ms`. This module never does I/O.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use serde_json::Value;

/// Flat-layout columns every Parquet file starts with.
pub const META_COLUMNS: [&str; 3] = ["__id", "__op", "__ts_ms"];

/// Prefix of before-image columns (`include_before`).
pub const BEFORE_PREFIX: &str = "__before_";

/// The typed columns of one table schema version.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Table column names and types, in order.
    pub columns: Vec<(String, DataType)>,
}

impl Layout {
    /// The layout described by a registered schema (`{"columns": [...]}` as
    /// the PostgreSQL or MySQL source writes it), or `None` when it has no
    /// column list.
    pub fn from_schema(schema: &Value) -> Option<Layout> {
        let columns = schema.get("columns")?.as_array()?;
        let columns = columns
            .iter()
            .map(|c| match c {
                Value::String(name) => Some((name.clone(), DataType::Utf8)),
                Value::Object(_) => Some((c.get("name")?.as_str()?.to_string(), column_type(c))),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Layout { columns })
    }

    /// A layout of text columns named like a row (no registered types).
    pub fn untyped(names: &[Arc<str>]) -> Layout {
        Layout { columns: names.iter().map(|n| (n.to_string(), DataType::Utf8)).collect() }
    }

    /// The Arrow schema of a file: meta columns, the table's, and the
    /// before image's when asked. Every table column is nullable (deletes
    /// carry only their key, TOAST values may be missing).
    pub fn arrow_schema(&self, include_before: bool) -> Schema {
        let mut fields = vec![
            Field::new(META_COLUMNS[0], DataType::Utf8, false),
            Field::new(META_COLUMNS[1], DataType::Utf8, false),
            Field::new(META_COLUMNS[2], DataType::Int64, false),
        ];
        fields.extend(self.columns.iter().map(|(n, t)| Field::new(n, t.clone(), true)));
        if include_before {
            fields.extend(self.columns.iter().map(|(n, t)| Field::new(format!("{BEFORE_PREFIX}{n}"), t.clone(), true)));
        }
        Schema::new(fields)
    }
}

/// The Arrow type of one described column.
fn column_type(c: &Value) -> DataType {
    let text = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
    if c.get("type_oid").is_some() || c.get("type_name").is_some() {
        return postgres_type(&text("type_name"), c.get("type_modifier").and_then(Value::as_i64).unwrap_or(-1));
    }
    if c.get("data_type").is_some() {
        let unsigned = c.get("unsigned").and_then(Value::as_bool).unwrap_or(false);
        let json = c.get("json").and_then(Value::as_bool).unwrap_or(false);
        return mysql_type(&text("data_type"), &text("type"), unsigned, json);
    }
    DataType::Utf8
}

fn postgres_type(name: &str, typmod: i64) -> DataType {
    match name {
        "int2" => DataType::Int16,
        "int4" => DataType::Int32,
        "int8" => DataType::Int64,
        "oid" => DataType::UInt32,
        "float4" => DataType::Float32,
        "float8" => DataType::Float64,
        "bool" => DataType::Boolean,
        "numeric" if typmod >= 4 => {
            let precision = ((typmod - 4) >> 16) & 0xffff;
            let scale = (typmod - 4) & 0xffff;
            decimal(precision, scale)
        }
        "date" => DataType::Date32,
        "time" => DataType::Time64(TimeUnit::Microsecond),
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamptz" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "bytea" => DataType::Binary,
        _ => DataType::Utf8,
    }
}

fn mysql_type(data_type: &str, column_type: &str, unsigned: bool, json: bool) -> DataType {
    let int = |s: DataType, u: DataType| if unsigned { u } else { s };
    match data_type {
        _ if json => DataType::Utf8,
        "tinyint" => int(DataType::Int8, DataType::UInt8),
        "smallint" => int(DataType::Int16, DataType::UInt16),
        "mediumint" | "int" | "integer" => int(DataType::Int32, DataType::UInt32),
        "bigint" => int(DataType::Int64, DataType::UInt64),
        "year" => DataType::Int16,
        "bit" => DataType::UInt64,
        "float" => DataType::Float32,
        "double" | "real" => DataType::Float64,
        "decimal" | "numeric" => {
            let args = column_type.split_once('(').and_then(|(_, a)| a.split_once(')')).map(|(a, _)| a);
            let mut nums = args.unwrap_or("").split(',').map(|n| n.trim().parse::<i64>().ok());
            match (nums.next().flatten(), nums.next().flatten()) {
                (Some(p), s) => decimal(p, s.unwrap_or(0)),
                _ => decimal(10, 0),
            }
        }
        "date" => DataType::Date32,
        "datetime" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => DataType::Binary,
        _ => DataType::Utf8,
    }
}

fn decimal(precision: i64, scale: i64) -> DataType {
    if (1..=38).contains(&precision) && (0..=precision).contains(&scale) {
        DataType::Decimal128(precision as u8, scale as i8)
    } else {
        DataType::Utf8
    }
}

/// Parses an exact decimal text (`"-12.5"`) into its unscaled value at
/// `scale` (`-1250` at scale 2); `None` for NaN, infinities, or more
/// fraction digits than the scale holds.
pub fn parse_decimal(text: &str, scale: i8) -> Option<i128> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let frac = frac.trim_end_matches('0');
    if int.is_empty() && frac.is_empty() || frac.len() > scale.max(0) as usize {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut v: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        v = v.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    for _ in frac.len()..scale.max(0) as usize {
        v = v.checked_mul(10)?;
    }
    Some(if neg { -v } else { v })
}

/// A decimal column's value: a string or number (`"12.340"`, `12`).
pub fn decimal_value(v: &Value, scale: i8) -> Option<i128> {
    match v {
        Value::String(s) => parse_decimal(s, scale),
        Value::Number(n) => parse_decimal(&n.to_string(), scale),
        _ => None,
    }
}

/// Microseconds since the epoch of a timestamp text: with a zone
/// (`…Z`, `…+02:00`) as that instant, without as wall-clock UTC.
pub fn timestamp_micros(v: &Value) -> Option<i64> {
    let s = v.as_str()?;
    let t = match chrono::DateTime::parse_from_rfc3339(s) {
        Ok(t) => t.to_utc(),
        Err(_) => chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
            .ok()?
            .and_utc(),
    };
    // Digits below a microsecond would be truncated: not exact.
    (t.timestamp_subsec_nanos() % 1000 == 0).then(|| t.timestamp_micros())
}

/// Days since the epoch of a `YYYY-MM-DD` text.
pub fn date_days(v: &Value) -> Option<i32> {
    let d = chrono::NaiveDate::parse_from_str(v.as_str()?, "%Y-%m-%d").ok()?;
    Some((d - chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days() as i32)
}

/// Microseconds since midnight of a `HH:MM:SS[.ffffff]` text.
pub fn time_micros(v: &Value) -> Option<i64> {
    let t = chrono::NaiveTime::parse_from_str(v.as_str()?, "%H:%M:%S%.f").ok()?;
    use chrono::Timelike as _;
    if t.nanosecond() % 1000 != 0 || t.nanosecond() >= 1_000_000_000 {
        return None; // below a microsecond, or a leap second: not exact
    }
    Some(i64::from(t.num_seconds_from_midnight()) * 1_000_000 + i64::from(t.nanosecond() / 1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn postgres_schema_types() {
        let s = json!({"columns": [
            {"name": "id", "type_oid": 20, "type_name": "int8", "type_modifier": -1},
            {"name": "n", "type_oid": 21, "type_name": "int2", "type_modifier": -1},
            {"name": "price", "type_oid": 1700, "type_name": "numeric", "type_modifier": (12 << 16) + 3 + 4},
            {"name": "free", "type_oid": 1700, "type_name": "numeric", "type_modifier": -1},
            {"name": "at", "type_oid": 1184, "type_name": "timestamptz", "type_modifier": -1},
            {"name": "u", "type_oid": 2950, "type_name": "uuid", "type_modifier": -1},
            {"name": "b", "type_oid": 17, "type_name": "bytea", "type_modifier": -1},
        ]});
        let l = Layout::from_schema(&s).unwrap();
        let types: Vec<DataType> = l.columns.iter().map(|c| c.1.clone()).collect();
        assert_eq!(
            types,
            vec![
                DataType::Int64,
                DataType::Int16,
                DataType::Decimal128(12, 3),
                DataType::Utf8,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                DataType::Utf8,
                DataType::Binary,
            ]
        );
    }

    #[test]
    fn mysql_schema_types() {
        let col = |dt: &str, ty: &str, unsigned: bool| json!({"name": "c", "data_type": dt, "type": ty, "unsigned": unsigned});
        let s = json!({"columns": [
            col("int", "int(11) unsigned", true), col("bigint", "bigint", false), col("decimal", "decimal(10,2)", false),
            col("datetime", "datetime(6)", false), col("timestamp", "timestamp", false), col("varbinary", "varbinary(8)", false),
            col("tinyint", "tinyint(4)", false), col("time", "time", false),
        ]});
        let types: Vec<DataType> = Layout::from_schema(&s).unwrap().columns.into_iter().map(|c| c.1).collect();
        assert_eq!(
            types,
            vec![
                DataType::UInt32,
                DataType::Int64,
                DataType::Decimal128(10, 2),
                DataType::Timestamp(TimeUnit::Microsecond, None),
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                DataType::Binary,
                DataType::Int8,
                DataType::Utf8,
            ]
        );
    }

    #[test]
    fn untyped_schemas_are_text() {
        let l = Layout::from_schema(&json!({"columns": ["id", "name"]})).unwrap();
        assert_eq!(l.columns, vec![("id".into(), DataType::Utf8), ("name".into(), DataType::Utf8)]);
        assert!(Layout::from_schema(&json!({"x": 1})).is_none());
        let s = l.arrow_schema(true);
        let names: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["__id", "__op", "__ts_ms", "id", "name", "__before_id", "__before_name"]);
    }

    #[test]
    fn values_convert() {
        assert_eq!(parse_decimal("-12.5", 2), Some(-1250));
        assert_eq!(parse_decimal("12.340", 2), Some(1234));
        assert_eq!(parse_decimal("12.345", 2), None);
        assert_eq!(parse_decimal("NaN", 2), None);
        assert_eq!(parse_decimal("7", 0), Some(7));
        assert_eq!(decimal_value(&json!(3), 1), Some(30));
        assert_eq!(timestamp_micros(&json!("1970-01-01T00:00:01.5Z")), Some(1_500_000));
        assert_eq!(timestamp_micros(&json!("1970-01-01T00:00:01.000002")), Some(1_000_002));
        assert_eq!(timestamp_micros(&json!("0000-00-00T00:00:00Z")), None);
        assert_eq!(date_days(&json!("1970-01-11")), Some(10));
        assert_eq!(time_micros(&json!("00:01:00.5")), Some(60_500_000));
    }
}
