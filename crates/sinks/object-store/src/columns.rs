//! Arrow column builders fed from event values, one per Parquet column.
//!
//! Owns the value conversion of [`crate::layout`]'s types into Arrow
//! arrays, in two steps so that a row is appended whole or not at all:
//! [`ColumnBuilder::convert`] checks a value (a value the column type cannot
//! hold exactly is an error saying why, never NULL or a truncation) and
//! [`ColumnBuilder::push`] appends it. Never does I/O.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder, Float64Builder, Int16Builder,
    Int32Builder, Int64Builder, Int8Builder, StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
    UInt16Builder, UInt32Builder, UInt64Builder, UInt8Builder,
};
use arrow_array::ArrayRef;
use arrow_schema::{DataType, TimeUnit};
use base64::Engine as _;
use serde_json::Value;

use crate::layout::{date_days, decimal_value, time_micros, timestamp_micros};

/// One column being built.
pub enum ColumnBuilder {
    /// Boolean.
    Bool(BooleanBuilder),
    /// Signed integers.
    I8(Int8Builder),
    /// Signed integers.
    I16(Int16Builder),
    /// Signed integers.
    I32(Int32Builder),
    /// Signed integers.
    I64(Int64Builder),
    /// Unsigned integers.
    U8(UInt8Builder),
    /// Unsigned integers.
    U16(UInt16Builder),
    /// Unsigned integers.
    U32(UInt32Builder),
    /// Unsigned integers.
    U64(UInt64Builder),
    /// Floats.
    F32(Float32Builder),
    /// Doubles.
    F64(Float64Builder),
    /// Decimals with their precision and scale.
    Decimal(Decimal128Builder, u8, i8),
    /// Days since the epoch.
    Date(Date32Builder),
    /// Microseconds since midnight.
    Time(Time64MicrosecondBuilder),
    /// Microseconds since the epoch.
    Timestamp(TimestampMicrosecondBuilder),
    /// Bytes (the event carries base64).
    Binary(BinaryBuilder),
    /// Text; other JSON values as their JSON text.
    Text(StringBuilder),
}

/// A value converted for its column, not yet appended.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer, a decimal's unscaled value, days, or microseconds.
    Int(i128),
    /// A float32.
    F32(f32),
    /// A float64.
    F64(f64),
    /// Decoded bytes.
    Bytes(Vec<u8>),
    /// Text: the event's own value, read again when pushed.
    Text,
}

impl ColumnBuilder {
    /// A builder for a column of type `t` (types the layout never produces
    /// become text).
    pub fn new(t: &DataType) -> Self {
        match t {
            DataType::Boolean => ColumnBuilder::Bool(BooleanBuilder::new()),
            DataType::Int8 => ColumnBuilder::I8(Int8Builder::new()),
            DataType::Int16 => ColumnBuilder::I16(Int16Builder::new()),
            DataType::Int32 => ColumnBuilder::I32(Int32Builder::new()),
            DataType::Int64 => ColumnBuilder::I64(Int64Builder::new()),
            DataType::UInt8 => ColumnBuilder::U8(UInt8Builder::new()),
            DataType::UInt16 => ColumnBuilder::U16(UInt16Builder::new()),
            DataType::UInt32 => ColumnBuilder::U32(UInt32Builder::new()),
            DataType::UInt64 => ColumnBuilder::U64(UInt64Builder::new()),
            DataType::Float32 => ColumnBuilder::F32(Float32Builder::new()),
            DataType::Float64 => ColumnBuilder::F64(Float64Builder::new()),
            DataType::Decimal128(p, s) => ColumnBuilder::Decimal(
                Decimal128Builder::new()
                    .with_precision_and_scale(*p, *s)
                    .expect("the layout checks precision and scale"),
                *p,
                *s,
            ),
            DataType::Date32 => ColumnBuilder::Date(Date32Builder::new()),
            DataType::Time64(TimeUnit::Microsecond) => ColumnBuilder::Time(Time64MicrosecondBuilder::new()),
            DataType::Timestamp(TimeUnit::Microsecond, tz) => {
                ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::new().with_timezone_opt(tz.clone()))
            }
            DataType::Binary => ColumnBuilder::Binary(BinaryBuilder::new()),
            _ => ColumnBuilder::Text(StringBuilder::new()),
        }
    }

    /// Converts a value for this column without appending it: `Ok` with
    /// the cell to [`push`](Self::push), or `Err` saying why the column
    /// type cannot hold the value exactly (never quoting the value, which
    /// may be personal data). `None` and JSON null are NULL.
    pub fn convert(&self, v: Option<&Value>) -> Result<Cell, String> {
        let v = match v {
            None | Some(Value::Null) => return Ok(Cell::Null),
            Some(v) => v,
        };
        let ranged = |what: &str| format!("not an integer in the range of {what}");
        match self {
            ColumnBuilder::Bool(_) => v.as_bool().map(Cell::Bool).ok_or_else(|| "not a boolean".into()),
            ColumnBuilder::I8(_) => int_in(v, i8::MIN.into(), i8::MAX.into()).ok_or_else(|| ranged("int8")),
            ColumnBuilder::I16(_) => int_in(v, i16::MIN.into(), i16::MAX.into()).ok_or_else(|| ranged("int16")),
            ColumnBuilder::I32(_) => int_in(v, i32::MIN.into(), i32::MAX.into()).ok_or_else(|| ranged("int32")),
            ColumnBuilder::I64(_) => int_in(v, i64::MIN.into(), i64::MAX.into()).ok_or_else(|| ranged("int64")),
            ColumnBuilder::U8(_) => int_in(v, 0, u8::MAX.into()).ok_or_else(|| ranged("uint8")),
            ColumnBuilder::U16(_) => int_in(v, 0, u16::MAX.into()).ok_or_else(|| ranged("uint16")),
            ColumnBuilder::U32(_) => int_in(v, 0, u32::MAX.into()).ok_or_else(|| ranged("uint32")),
            ColumnBuilder::U64(_) => int_in(v, 0, u64::MAX.into()).ok_or_else(|| ranged("uint64")),
            ColumnBuilder::F32(_) => float32(v).map(Cell::F32).ok_or_else(|| "not a number a float32 holds".into()),
            ColumnBuilder::F64(_) => float(v).map(Cell::F64).ok_or_else(|| "not a number".into()),
            ColumnBuilder::Decimal(_, precision, scale) => decimal_value(v, *scale)
                .filter(|d| d.unsigned_abs() < 10u128.pow(u32::from(*precision)))
                .map(Cell::Int)
                .ok_or_else(|| {
                    format!(
                        "not exactly a decimal({},{}) (NaN or infinity, more than {} fraction digits, or more than {} digits)",
                        precision, scale, scale, precision
                    )
                }),
            ColumnBuilder::Date(_) => date_days(v)
                .map(|d| Cell::Int(d.into()))
                .ok_or_else(|| "not a calendar date (a zero date or infinity has no DATE value)".into()),
            ColumnBuilder::Time(_) => time_micros(v)
                .map(|t| Cell::Int(t.into()))
                .ok_or_else(|| "not a time of day within 00:00:00-23:59:59.999999 at microsecond precision".into()),
            ColumnBuilder::Timestamp(_) => timestamp_micros(v).map(|t| Cell::Int(t.into())).ok_or_else(|| {
                "not a timestamp TIMESTAMP(MICROS) holds (infinity, a zero date, or digits below a microsecond)".into()
            }),
            ColumnBuilder::Binary(_) => v
                .as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .map(Cell::Bytes)
                .ok_or_else(|| "not base64-encoded bytes".into()),
            ColumnBuilder::Text(_) => Ok(Cell::Text),
        }
    }

    /// Appends a cell [`convert`](Self::convert) made for this column from
    /// `v` (text cells are read from `v` again, without a copy).
    pub fn push(&mut self, cell: Cell, v: Option<&Value>) {
        // The conversions above checked every range, so the casts are exact.
        match (self, cell) {
            (b, Cell::Null) => b.append_null(),
            (ColumnBuilder::Bool(b), Cell::Bool(x)) => b.append_value(x),
            (ColumnBuilder::I8(b), Cell::Int(x)) => b.append_value(x as i8),
            (ColumnBuilder::I16(b), Cell::Int(x)) => b.append_value(x as i16),
            (ColumnBuilder::I32(b), Cell::Int(x)) => b.append_value(x as i32),
            (ColumnBuilder::I64(b), Cell::Int(x)) => b.append_value(x as i64),
            (ColumnBuilder::U8(b), Cell::Int(x)) => b.append_value(x as u8),
            (ColumnBuilder::U16(b), Cell::Int(x)) => b.append_value(x as u16),
            (ColumnBuilder::U32(b), Cell::Int(x)) => b.append_value(x as u32),
            (ColumnBuilder::U64(b), Cell::Int(x)) => b.append_value(x as u64),
            (ColumnBuilder::F32(b), Cell::F32(x)) => b.append_value(x),
            (ColumnBuilder::F64(b), Cell::F64(x)) => b.append_value(x),
            (ColumnBuilder::Decimal(b, _, _), Cell::Int(x)) => b.append_value(x),
            (ColumnBuilder::Date(b), Cell::Int(x)) => b.append_value(x as i32),
            (ColumnBuilder::Time(b), Cell::Int(x)) => b.append_value(x as i64),
            (ColumnBuilder::Timestamp(b), Cell::Int(x)) => b.append_value(x as i64),
            (ColumnBuilder::Binary(b), Cell::Bytes(x)) => b.append_value(x),
            (ColumnBuilder::Text(b), Cell::Text) => match v {
                Some(Value::String(s)) => b.append_value(s),
                Some(Value::Null) | None => b.append_null(),
                Some(other) => {
                    // Written straight into the column's buffer: no String per value.
                    let _ = write!(b, "{other}");
                    b.append_value("");
                }
            },
            (b, _) => b.append_null(), // a cell of another column: never made by `convert`
        }
    }

    /// Appends NULL.
    pub fn append_null(&mut self) {
        match self {
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::I8(b) => b.append_null(),
            ColumnBuilder::I16(b) => b.append_null(),
            ColumnBuilder::I32(b) => b.append_null(),
            ColumnBuilder::I64(b) => b.append_null(),
            ColumnBuilder::U8(b) => b.append_null(),
            ColumnBuilder::U16(b) => b.append_null(),
            ColumnBuilder::U32(b) => b.append_null(),
            ColumnBuilder::U64(b) => b.append_null(),
            ColumnBuilder::F32(b) => b.append_null(),
            ColumnBuilder::F64(b) => b.append_null(),
            ColumnBuilder::Decimal(b, _, _) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::Time(b) => b.append_null(),
            ColumnBuilder::Timestamp(b) => b.append_null(),
            ColumnBuilder::Binary(b) => b.append_null(),
            ColumnBuilder::Text(b) => b.append_null(),
        }
    }

    /// The column built so far; the builder starts over empty.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::I8(b) => Arc::new(b.finish()),
            ColumnBuilder::I16(b) => Arc::new(b.finish()),
            ColumnBuilder::I32(b) => Arc::new(b.finish()),
            ColumnBuilder::I64(b) => Arc::new(b.finish()),
            ColumnBuilder::U8(b) => Arc::new(b.finish()),
            ColumnBuilder::U16(b) => Arc::new(b.finish()),
            ColumnBuilder::U32(b) => Arc::new(b.finish()),
            ColumnBuilder::U64(b) => Arc::new(b.finish()),
            ColumnBuilder::F32(b) => Arc::new(b.finish()),
            ColumnBuilder::F64(b) => Arc::new(b.finish()),
            ColumnBuilder::Decimal(b, _, _) => Arc::new(b.finish()),
            ColumnBuilder::Date(b) => Arc::new(b.finish()),
            ColumnBuilder::Time(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b) => Arc::new(b.finish()),
            ColumnBuilder::Binary(b) => Arc::new(b.finish()),
            ColumnBuilder::Text(b) => Arc::new(b.finish()),
        }
    }
}

/// An integer value within `min..=max`.
fn int_in(v: &Value, min: i128, max: i128) -> Option<Cell> {
    int(v).filter(|i| (min..=max).contains(i)).map(Cell::Int)
}

/// A float32 value: exact text is parsed as f32 (PostgreSQL prints the
/// shortest text of a float4); a finite number must stay finite.
fn float32(v: &Value) -> Option<f32> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_f64().map(|f| f as f32).filter(|f| f.is_finite()),
        _ => None,
    }
}

/// An integer value as i128 (numbers, or exact text such as MySQL BIGINT
/// UNSIGNED written as a string by some processors).
fn int(v: &Value) -> Option<i128> {
    match v {
        Value::Number(n) => n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from)),
        Value::String(s) => s.parse().ok(),
        Value::Bool(b) => Some(i128::from(*b)),
        _ => None,
    }
}

/// A float value: numbers, and PostgreSQL's `"NaN"` / `"Infinity"` texts.
fn float(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, Decimal128Array, Int16Array, StringArray};
    use serde_json::json;

    fn push(b: &mut ColumnBuilder, v: Value) -> Result<(), String> {
        let cell = b.convert(Some(&v))?;
        b.push(cell, Some(&v));
        Ok(())
    }

    #[test]
    fn builds_typed_columns_and_refuses_values_a_column_cannot_hold() {
        let mut d = ColumnBuilder::new(&DataType::Decimal128(5, 2));
        push(&mut d, json!("12.5")).unwrap();
        push(&mut d, json!("-999.99")).unwrap();
        for bad in [json!("NaN"), json!("1.234"), json!("1000.00"), json!("Infinity")] {
            let why = push(&mut d, bad).unwrap_err();
            assert!(why.contains("decimal(5,2)"), "{why}");
        }
        d.push(Cell::Null, None);
        let a = d.finish();
        let a = a.as_any().downcast_ref::<Decimal128Array>().unwrap();
        assert_eq!(a.len(), 3, "refused values are not appended");
        assert_eq!((a.value(0), a.value(1)), (1250, -99999));
        assert!(a.is_null(2));
        assert_eq!(a.precision(), 5);

        let mut i = ColumnBuilder::new(&DataType::Int16);
        push(&mut i, json!(-3)).unwrap();
        assert!(push(&mut i, json!(70000)).unwrap_err().contains("int16"));
        let mut u = ColumnBuilder::new(&DataType::UInt8);
        assert!(push(&mut u, json!(-1)).is_err());
        let a = i.finish();
        assert_eq!(a.as_any().downcast_ref::<Int16Array>().unwrap().values().to_vec(), vec![-3]);

        let mut ts = ColumnBuilder::new(&DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())));
        push(&mut ts, json!("2024-02-29T13:45:00.123456Z")).unwrap();
        assert!(push(&mut ts, json!("infinity")).is_err());
        assert!(push(&mut ts, json!("2024-02-29T13:45:00.1234567Z")).unwrap_err().contains("microsecond"));
        let mut date = ColumnBuilder::new(&DataType::Date32);
        assert!(push(&mut date, json!("0000-00-00")).is_err());
        let mut f = ColumnBuilder::new(&DataType::Float32);
        push(&mut f, json!("0.1")).unwrap();
        assert!(push(&mut f, json!(1e300)).is_err());
        let mut bin = ColumnBuilder::new(&DataType::Binary);
        assert!(push(&mut bin, json!("not base64!")).is_err());

        let mut t = ColumnBuilder::new(&DataType::Utf8);
        push(&mut t, json!({"a": 1})).unwrap();
        push(&mut t, json!(42)).unwrap();
        push(&mut t, json!("x")).unwrap();
        let a = t.finish();
        let a = a.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(a.iter().collect::<Vec<_>>(), [Some(r#"{"a":1}"#), Some("42"), Some("x")]);
    }
}
