//! Row decoding: from a TABLE_MAP event (wire types and optional metadata)
//! plus the catalogue schema of the table to a [`TableDecoder`], and from
//! `mysql_async`'s binlog values to JSON.
//!
//! Value mapping (the contract consumers see):
//!
//! | MySQL type | JSON |
//! |---|---|
//! | TINYINT…BIGINT (signed/unsigned) | number, exact (BIGINT UNSIGNED up to 18446744073709551615) |
//! | DECIMAL(p,s) | string, exact (`"-12.500"`) |
//! | FLOAT / DOUBLE | number (FLOAT printed from its shortest f32 form: `1.1`, not `1.100000023841858`) |
//! | BIT(n) | unsigned number of the bits |
//! | ENUM | its label (`""` for the invalid index 0) |
//! | SET | its labels joined by `,` as MySQL prints them (`"a,c"`) |
//! | CHAR/VARCHAR/TEXT | string, decoded by charset (utf8/utf8mb3/utf8mb4/ascii as UTF-8, latin1 byte-per-char; others as UTF-8, invalid bytes replaced) |
//! | BINARY/VARBINARY/BLOB | base64 (standard alphabet, padded) |
//! | DATE | `"2024-02-29"` |
//! | TIME(fsp) | `"-838:59:59"`, `"12:34:56.789"` (fsp digits) |
//! | DATETIME(fsp) | `"2024-02-29T13:45:01.123456"` (no zone: a wall-clock value) |
//! | TIMESTAMP(fsp) | `"2024-02-29T13:45:01.123Z"` (UTC) |
//! | YEAR | number (`2024`; `0` for YEAR 0000) |
//! | JSON (MySQL binary, MariaDB LONGTEXT+json_valid) | the JSON value itself |
//! | GEOMETRY | `{"srid": N, "wkb": "<base64 WKB>"}` |
//! | NULL | null |
//!
//! Zero and partly-zero dates (allowed without `NO_ZERO_DATE`) are emitted
//! as MySQL prints them, with zero fields — `"0000-00-00"`,
//! `"0000-00-00T00:00:00"`, `"2024-00-00"`, and a zero TIMESTAMP as
//! `"0000-00-00T00:00:00Z"` — never as null (so they stay distinct from NULL)
//! and never with a panic.
//!
//! The module must never allocate column names per row: a decoder holds
//! them once and every row shares them.

use std::sync::Arc;

use base64::Engine as _;
use mysql_async::binlog::events::{OptionalMetaExtractor, OptionalMetadataField, RowsEventData, TableMapEvent};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType;
use mysql_async::Value as MyValue;
use serde_json::{Number, Value};

use deltaforge_common::time::{push_datetime, push_fraction, push_unix_seconds};
use deltaforge_core::{Columns, Op, Row};

use crate::schema::TableSchema;

/// Text character sets the decoder distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// UTF-8 (and ASCII, and unknown sets, decoded lossily).
    Utf8,
    /// ISO-8859-1: one byte per char.
    Latin1,
}

/// How one column's values are mapped.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Integer of `bits` width.
    Int {
        /// Width in bits (8, 16, 24, 32, 64).
        bits: u8,
        /// Declared UNSIGNED.
        unsigned: bool,
    },
    /// FLOAT.
    Float,
    /// DOUBLE.
    Double,
    /// DECIMAL.
    Decimal,
    /// BIT(n).
    Bit,
    /// ENUM with its labels.
    Enum(Arc<[String]>),
    /// SET with its labels.
    Set(Arc<[String]>),
    /// Text in a charset.
    Text(Charset),
    /// Binary string.
    Binary,
    /// MariaDB JSON (text).
    JsonText,
    /// MySQL binary JSON.
    Json,
    /// Geometry (SRID + WKB).
    Geometry,
    /// DATE.
    Date,
    /// TIME(fsp).
    Time(u8),
    /// DATETIME(fsp).
    DateTime(u8),
    /// TIMESTAMP(fsp).
    Timestamp(u8),
    /// YEAR.
    Year,
    /// Anything else, passed through as text.
    Other,
}

/// Decodes the rows of one table as described by one TABLE_MAP event.
#[derive(Debug, Clone)]
pub struct TableDecoder {
    /// Database.
    pub db: Arc<str>,
    /// Table.
    pub table: Arc<str>,
    /// Column names shared by every row.
    pub columns: Columns,
    /// Value mapping per column.
    pub kinds: Vec<Kind>,
    /// Schema version decoded with.
    pub version: Option<u64>,
    /// True when the catalogue schema matched the TABLE_MAP column count.
    pub schema_matched: bool,
    /// Primary-key column names, when known.
    pub key_columns: Option<Columns>,
}

fn latin1_collation(id: u16) -> bool {
    matches!(id, 5 | 8 | 15 | 31 | 47 | 48 | 49 | 94)
}

/// Optional metadata of a TABLE_MAP event gathered in column order.
#[derive(Default)]
struct TmeMeta {
    names: Vec<String>,
    unsigned: Vec<Option<bool>>,
    charsets: Vec<Option<u16>>,
    enum_labels: Vec<Vec<String>>,
    set_labels: Vec<Vec<String>>,
    primary_key: Vec<usize>,
}

/// Reads what the TABLE_MAP's optional metadata says; an unreadable block
/// gives empty lists (shorter than the column count: callers use `get`).
fn tme_meta(tme: &TableMapEvent<'_>, types: &[ColumnType]) -> TmeMeta {
    let mut meta = TmeMeta::default();
    let n = types.len();
    let Ok(ex) = OptionalMetaExtractor::new(tme.iter_optional_meta()) else { return meta };
    meta.primary_key = ex.iter_primary_key().filter_map(|r| r.ok().map(|i| i as usize)).collect();
    meta.names = ex.iter_column_name().filter_map(|r| r.ok().map(|c| c.name().into_owned())).collect();
    let mut sign = ex.iter_signedness();
    let mut cs = ex.iter_charset();
    let mut es = ex.iter_enum_and_set_charset();
    for ty in types.iter().take(n) {
        meta.unsigned.push(if ty.is_numeric_type() { sign.next() } else { None });
        // The server counts GEOMETRY (a BLOB inside) among the character
        // columns of the charset metadata; `is_character_type` does not.
        meta.charsets.push(if ty.is_character_type() || *ty == ColumnType::MYSQL_TYPE_GEOMETRY {
            cs.next().and_then(Result::ok)
        } else if ty.is_enum_or_set_type() {
            es.next().and_then(Result::ok)
        } else {
            None
        });
    }
    for field in tme.iter_optional_meta().flatten() {
        match field {
            OptionalMetadataField::EnumStrValue(v) => {
                for e in v.iter_values().flatten() {
                    meta.enum_labels.push(e.values().iter().map(|x| x.value().into_owned()).collect());
                }
            }
            OptionalMetadataField::SetStrValue(v) => {
                for s in v.iter_values().flatten() {
                    meta.set_labels.push(s.values().iter().map(|x| x.value().into_owned()).collect());
                }
            }
            _ => {}
        }
    }
    meta
}

impl TableDecoder {
    /// Builds a decoder from a TABLE_MAP event and, when known, the
    /// catalogue schema (`version`) of the table.
    ///
    /// Column names come from the TABLE_MAP's optional metadata when it has
    /// them (`binlog_row_metadata=FULL`: exact for the event even on replay
    /// across a DDL), else from the schema, else `col_N`. Signedness,
    /// charsets and labels come from the schema column when its name (or,
    /// without names, its count) matches, else from the TABLE_MAP.
    pub fn build(tme: &TableMapEvent<'_>, schema: Option<&TableSchema>, version: Option<u64>) -> Result<Self, String> {
        let n = tme.columns_count() as usize;
        let mut types = Vec::with_capacity(n);
        for i in 0..n {
            let ty = tme
                .get_column_type(i)
                .map_err(|e| format!("column {i}: {e}"))?
                .ok_or_else(|| format!("column {i}: no type in the TABLE_MAP event"))?;
            types.push(ty);
        }
        let meta = tme_meta(tme, &types);
        let schema_cols = schema.map(|s| s.columns.as_slice()).unwrap_or(&[]);
        let names_from_tme = meta.names.len() == n;
        let schema_matched = schema_cols.len() == n
            && (!names_from_tme || schema_cols.iter().zip(&meta.names).all(|(c, m)| c.name.eq_ignore_ascii_case(m)));
        let names: Vec<Arc<str>> = (0..n)
            .map(|i| {
                if names_from_tme {
                    Arc::from(meta.names[i].as_str())
                } else if schema_cols.len() == n {
                    Arc::from(schema_cols[i].name.as_str())
                } else {
                    Arc::from(format!("col_{}", i + 1).as_str())
                }
            })
            .collect();
        let (mut enum_i, mut set_i) = (0, 0);
        let mut kinds = Vec::with_capacity(n);
        for (i, ty) in types.iter().enumerate() {
            let col = if schema_matched { schema_cols.get(i) } else { None };
            let col_meta = tme.get_column_metadata(i).unwrap_or(&[]);
            let fsp = col_meta.first().copied().unwrap_or(0).min(6);
            use ColumnType::*;
            let kind = match ty {
                MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG | MYSQL_TYPE_LONGLONG => {
                    let bits = match ty {
                        MYSQL_TYPE_TINY => 8,
                        MYSQL_TYPE_SHORT => 16,
                        MYSQL_TYPE_INT24 => 24,
                        MYSQL_TYPE_LONG => 32,
                        _ => 64,
                    };
                    let unsigned = col.map(|c| c.unsigned).or(meta.unsigned.get(i).copied().flatten()).unwrap_or(false);
                    Kind::Int { bits, unsigned }
                }
                MYSQL_TYPE_FLOAT => Kind::Float,
                MYSQL_TYPE_DOUBLE => Kind::Double,
                MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => Kind::Decimal,
                MYSQL_TYPE_BIT => Kind::Bit,
                MYSQL_TYPE_ENUM => {
                    let labels = meta.enum_labels.get(enum_i).cloned().or_else(|| col.map(|c| c.labels.clone()));
                    enum_i += 1;
                    Kind::Enum(labels.unwrap_or_default().into())
                }
                MYSQL_TYPE_SET => {
                    let labels = meta.set_labels.get(set_i).cloned().or_else(|| col.map(|c| c.labels.clone()));
                    set_i += 1;
                    Kind::Set(labels.unwrap_or_default().into())
                }
                MYSQL_TYPE_YEAR => Kind::Year,
                MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => Kind::Date,
                MYSQL_TYPE_TIME => Kind::Time(0),
                MYSQL_TYPE_TIME2 => Kind::Time(fsp),
                MYSQL_TYPE_DATETIME => Kind::DateTime(0),
                MYSQL_TYPE_DATETIME2 => Kind::DateTime(fsp),
                MYSQL_TYPE_TIMESTAMP => Kind::Timestamp(0),
                MYSQL_TYPE_TIMESTAMP2 => Kind::Timestamp(fsp),
                MYSQL_TYPE_JSON => Kind::Json,
                MYSQL_TYPE_GEOMETRY => Kind::Geometry,
                MYSQL_TYPE_STRING
                | MYSQL_TYPE_VAR_STRING
                | MYSQL_TYPE_VARCHAR
                | MYSQL_TYPE_BLOB
                | MYSQL_TYPE_TINY_BLOB
                | MYSQL_TYPE_MEDIUM_BLOB
                | MYSQL_TYPE_LONG_BLOB => {
                    if col.is_some_and(|c| c.json) {
                        Kind::JsonText
                    } else {
                        match (meta.charsets.get(i).copied().flatten(), col) {
                            (Some(63), _) => Kind::Binary,
                            (_, Some(c)) => match c.charset.as_deref() {
                                None => Kind::Binary,
                                Some(cs) if cs.eq_ignore_ascii_case("binary") => Kind::Binary,
                                Some(cs) if cs.eq_ignore_ascii_case("latin1") => Kind::Text(Charset::Latin1),
                                Some(_) => Kind::Text(Charset::Utf8),
                            },
                            (Some(id), None) if latin1_collation(id) => Kind::Text(Charset::Latin1),
                            (Some(_), None) => Kind::Text(Charset::Utf8),
                            (None, None) => {
                                if matches!(
                                    ty,
                                    MYSQL_TYPE_BLOB
                                        | MYSQL_TYPE_TINY_BLOB
                                        | MYSQL_TYPE_MEDIUM_BLOB
                                        | MYSQL_TYPE_LONG_BLOB
                                ) {
                                    Kind::Binary
                                } else {
                                    Kind::Text(Charset::Utf8)
                                }
                            }
                        }
                    }
                }
                _ => Kind::Other,
            };
            kinds.push(kind);
        }
        let key_names: Vec<Arc<str>> = match (schema_matched, schema) {
            (true, Some(s)) => s
                .primary_key
                .iter()
                .filter_map(|k| schema_cols.iter().position(|c| &c.name == k).map(|i| names[i].clone()))
                .collect(),
            _ => meta.primary_key.iter().filter_map(|i| names.get(*i).cloned()).collect(),
        };
        let key_columns = (!key_names.is_empty()).then(|| Columns::from(key_names));
        Ok(TableDecoder {
            key_columns,
            db: Arc::from(tme.database_name().as_ref()),
            table: Arc::from(tme.table_name().as_ref()),
            columns: names.into(),
            kinds,
            version,
            schema_matched,
        })
    }

    /// Decodes one row image (which must be a full image).
    pub fn row(&self, row: &BinlogRow) -> Result<Row, String> {
        if row.len() != self.kinds.len() {
            return Err(format!(
                "row image of {}.{} has {} of {} columns; set binlog_row_image=FULL on the server",
                self.db,
                self.table,
                row.len(),
                self.kinds.len()
            ));
        }
        let mut values = Vec::with_capacity(self.kinds.len());
        for (i, kind) in self.kinds.iter().enumerate() {
            let v = match row.as_ref(i) {
                None => Value::Null,
                Some(v) => {
                    value(kind, v).map_err(|e| format!("{}.{} column {}: {e}", self.db, self.table, self.columns[i]))?
                }
            };
            values.push(v);
        }
        Ok(Row::new(self.columns.clone(), values))
    }
}

/// One decoded row change: `(op, before, after)`.
pub type DecodedRow = (Op, Option<Row>, Option<Row>);

/// Decodes every row of a rows event (v1 or v2, MySQL or MariaDB) into
/// `(op, before, after)`.
pub fn decode_rows(
    dec: &TableDecoder,
    tme: &TableMapEvent<'_>,
    rows: &RowsEventData<'_>,
) -> Result<Vec<DecodedRow>, String> {
    let op = match rows {
        RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => Op::Create,
        RowsEventData::UpdateRowsEventV1(_)
        | RowsEventData::UpdateRowsEvent(_)
        | RowsEventData::PartialUpdateRowsEvent(_) => Op::Update,
        RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => Op::Delete,
    };
    let mut out = Vec::new();
    for row in rows.rows(tme) {
        let (before, after) = row.map_err(|e| e.to_string())?;
        let before = before.map(|r| dec.row(&r)).transpose()?;
        let after = after.map(|r| dec.row(&r)).transpose()?;
        out.push((op, before, after));
    }
    Ok(out)
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Maps one binlog value.
pub fn value(kind: &Kind, v: &BinlogValue<'_>) -> Result<Value, String> {
    match v {
        BinlogValue::Value(v) => plain(kind, v),
        BinlogValue::Jsonb(j) => serde_json::Value::try_from(j.clone()).map_err(|e| format!("binary JSON: {e}")),
        BinlogValue::JsonDiff(_) => {
            Err("partial JSON update (binlog_row_value_options=PARTIAL_JSON) is not supported; \
             set binlog_row_value_options='' on the server"
                .into())
        }
    }
}

fn int_value(bits: u8, unsigned: bool, raw: u64) -> Value {
    let mask = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
    let u = raw & mask;
    if unsigned {
        Value::Number(u.into())
    } else {
        let shift = 64 - bits as u32;
        Value::Number((((u << shift) as i64) >> shift).into())
    }
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)
}

fn plain(kind: &Kind, v: &MyValue) -> Result<Value, String> {
    Ok(match (kind, v) {
        (_, MyValue::NULL) => Value::Null,
        (Kind::Int { bits, unsigned }, MyValue::Int(i)) => int_value(*bits, *unsigned, *i as u64),
        (Kind::Int { bits, unsigned }, MyValue::UInt(u)) => int_value(*bits, *unsigned, *u),
        (Kind::Enum(labels), MyValue::Int(i)) => enum_label(labels, *i as u64),
        (Kind::Enum(labels), MyValue::UInt(u)) => enum_label(labels, *u),
        (_, MyValue::Int(i)) => Value::Number((*i).into()),
        (_, MyValue::UInt(u)) => Value::Number((*u).into()),
        (_, MyValue::Float(f)) => float(f.to_string().parse::<f64>().unwrap_or(*f as f64)),
        (_, MyValue::Double(d)) => float(*d),
        (Kind::Timestamp(fsp), MyValue::Bytes(b)) => timestamp(b, *fsp)?,
        (Kind::Year, MyValue::Bytes(b)) => {
            let y: u64 = std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).ok_or("bad YEAR value")?;
            Value::Number(if y == 1900 { 0 } else { y }.into())
        }
        (Kind::Bit, MyValue::Bytes(b)) => Value::Number(b.iter().fold(0u64, |acc, x| (acc << 8) | *x as u64).into()),
        (Kind::Set(labels), MyValue::Bytes(b)) => {
            let mut out = Vec::new();
            for (i, label) in labels.iter().enumerate() {
                if b.get(i / 8).is_some_and(|byte| byte & (1 << (i % 8)) != 0) {
                    out.push(label.as_str());
                }
            }
            Value::String(out.join(","))
        }
        (Kind::Decimal, MyValue::Bytes(b)) => Value::String(String::from_utf8_lossy(b).into_owned()),
        (Kind::Text(Charset::Latin1), MyValue::Bytes(b)) => Value::String(b.iter().map(|c| *c as char).collect()),
        (Kind::Text(_), MyValue::Bytes(b)) | (Kind::Other, MyValue::Bytes(b)) => {
            Value::String(String::from_utf8_lossy(b).into_owned())
        }
        (Kind::JsonText, MyValue::Bytes(b)) => {
            serde_json::from_slice(b).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned()))
        }
        (Kind::Geometry, MyValue::Bytes(b)) => {
            let (srid, wkb) =
                if b.len() >= 4 { (u32::from_le_bytes([b[0], b[1], b[2], b[3]]), &b[4..]) } else { (0, &b[..]) };
            serde_json::json!({"srid": srid, "wkb": B64.encode(wkb)})
        }
        (_, MyValue::Bytes(b)) => Value::String(B64.encode(b)),
        (Kind::Date, MyValue::Date(y, m, d, ..)) => Value::String(format!("{y:04}-{m:02}-{d:02}")),
        (Kind::DateTime(fsp), MyValue::Date(y, mo, d, h, mi, s, us)) => {
            Value::String(datetime_text((*y, *mo, *d, *h, *mi, *s), *us, *fsp, ""))
        }
        (_, MyValue::Date(y, mo, d, h, mi, s, us)) => {
            Value::String(datetime_text((*y, *mo, *d, *h, *mi, *s), *us, 6, ""))
        }
        (kind, MyValue::Time(neg, days, h, m, s, us)) => {
            let fsp = if let Kind::Time(f) = kind { *f } else { 6 };
            let hours = *days as u64 * 24 + *h as u64;
            Value::String(format!("{}{hours:02}:{m:02}:{s:02}{}", if *neg { "-" } else { "" }, frac(*us, fsp)))
        }
    })
}

fn enum_label(labels: &[String], idx: u64) -> Value {
    if idx == 0 {
        return Value::String(String::new());
    }
    match labels.get(idx as usize - 1) {
        Some(l) => Value::String(l.clone()),
        None => Value::Number(idx.into()),
    }
}

fn frac(us: u32, fsp: u8) -> String {
    let mut out = String::new();
    push_fraction(&mut out, us, fsp);
    out
}

/// `YYYY-MM-DDTHH:MM:SS`, the fraction and `suffix`, written without
/// `format!` (a datetime column is decoded once per row).
fn datetime_text((y, mo, d, h, mi, s): (u16, u8, u8, u8, u8, u8), us: u32, fsp: u8, suffix: &str) -> String {
    let mut out = String::with_capacity(27);
    push_datetime(&mut out, y.into(), mo.into(), d.into(), h.into(), mi.into(), s.into());
    push_fraction(&mut out, us, fsp);
    out.push_str(suffix);
    out
}

fn timestamp(b: &[u8], fsp: u8) -> Result<Value, String> {
    let s = std::str::from_utf8(b).map_err(|_| "bad TIMESTAMP value")?;
    let (secs, us) = match s.split_once('.') {
        Some((a, f)) => (a, f.parse::<u32>().map_err(|_| "bad TIMESTAMP fraction")?),
        None => (s, 0),
    };
    let secs: i64 = secs.parse().map_err(|_| "bad TIMESTAMP seconds")?;
    if secs == 0 && us == 0 {
        return Ok(Value::String(format!("0000-00-00T00:00:00{}Z", frac(0, fsp))));
    }
    let mut out = String::with_capacity(28);
    push_unix_seconds(&mut out, secs);
    push_fraction(&mut out, us, fsp);
    out.push('Z');
    Ok(Value::String(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_exact() {
        assert_eq!(
            plain(&Kind::Int { bits: 64, unsigned: true }, &MyValue::Int(-1)).unwrap(),
            json!(18446744073709551615u64)
        );
        assert_eq!(plain(&Kind::Int { bits: 64, unsigned: true }, &MyValue::UInt(u64::MAX)).unwrap(), json!(u64::MAX));
        assert_eq!(plain(&Kind::Int { bits: 8, unsigned: true }, &MyValue::Int(-1)).unwrap(), json!(255));
        assert_eq!(plain(&Kind::Int { bits: 8, unsigned: false }, &MyValue::UInt(255)).unwrap(), json!(-1));
        assert_eq!(plain(&Kind::Int { bits: 24, unsigned: false }, &MyValue::Int(-8388608)).unwrap(), json!(-8388608));
        assert_eq!(plain(&Kind::Int { bits: 24, unsigned: true }, &MyValue::Int(-1)).unwrap(), json!(16777215));
        assert_eq!(plain(&Kind::Int { bits: 64, unsigned: false }, &MyValue::Int(i64::MIN)).unwrap(), json!(i64::MIN));
    }

    #[test]
    fn temporal() {
        assert_eq!(timestamp(b"0", 0).unwrap(), json!("0000-00-00T00:00:00Z"));
        assert_eq!(timestamp(b"1709214301.123456", 3).unwrap(), json!("2024-02-29T13:45:01.123Z"));
        assert_eq!(timestamp(b"1709214301", 0).unwrap(), json!("2024-02-29T13:45:01Z"));
        assert_eq!(plain(&Kind::Time(0), &MyValue::Time(true, 34, 22, 59, 59, 0)).unwrap(), json!("-838:59:59"));
        assert_eq!(plain(&Kind::Time(3), &MyValue::Time(false, 0, 1, 2, 3, 450000)).unwrap(), json!("01:02:03.450"));
        assert_eq!(
            plain(&Kind::DateTime(6), &MyValue::Date(2024, 2, 29, 13, 45, 1, 5)).unwrap(),
            json!("2024-02-29T13:45:01.000005")
        );
        assert_eq!(
            plain(&Kind::DateTime(0), &MyValue::Date(0, 0, 0, 0, 0, 0, 0)).unwrap(),
            json!("0000-00-00T00:00:00")
        );
        assert_eq!(plain(&Kind::Date, &MyValue::Date(0, 0, 0, 0, 0, 0, 0)).unwrap(), json!("0000-00-00"));
        assert_eq!(plain(&Kind::Year, &MyValue::Bytes(b"1900".to_vec())).unwrap(), json!(0));
        assert_eq!(plain(&Kind::Year, &MyValue::Bytes(b"2155".to_vec())).unwrap(), json!(2155));
    }

    #[test]
    fn strings_and_sets() {
        let labels: Arc<[String]> = vec!["a".to_string(), "b".to_string(), "c".to_string()].into();
        assert_eq!(plain(&Kind::Set(labels.clone()), &MyValue::Bytes(vec![0b101])).unwrap(), json!("a,c"));
        assert_eq!(plain(&Kind::Enum(labels), &MyValue::Int(2)).unwrap(), json!("b"));
        assert_eq!(plain(&Kind::Text(Charset::Latin1), &MyValue::Bytes(vec![0xe9])).unwrap(), json!("é"));
        assert_eq!(plain(&Kind::Binary, &MyValue::Bytes(vec![0, 255])).unwrap(), json!("AP8="));
        assert_eq!(plain(&Kind::Bit, &MyValue::Bytes(vec![1, 2])).unwrap(), json!(258));
        assert_eq!(plain(&Kind::Float, &MyValue::Float(1.1)).unwrap(), json!(1.1));
        assert_eq!(
            plain(&Kind::JsonText, &MyValue::Bytes(br#"{"a":[1,{"b":null}]}"#.to_vec())).unwrap(),
            json!({"a": [1, {"b": null}]})
        );
        assert_eq!(plain(&Kind::Decimal, &MyValue::Bytes(b"-1.50".to_vec())).unwrap(), json!("-1.50"));
    }
}

/// The fractional-seconds precision in a `COLUMN_TYPE` such as `datetime(3)`.
fn declared_fsp(column_type: &str) -> u8 {
    column_type
        .split_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .and_then(|(n, _)| n.trim().parse::<u8>().ok())
        .unwrap_or(0)
        .min(6)
}

impl Kind {
    /// The value mapping of a catalogue column, for rows read by the
    /// snapshot (the binlog path builds kinds from TABLE_MAP events).
    pub fn from_column(c: &crate::schema::ColumnInfo) -> Kind {
        let labels = || -> Arc<[String]> { c.labels.clone().into() };
        match c.data_type.as_str() {
            "tinyint" => Kind::Int { bits: 8, unsigned: c.unsigned },
            "smallint" => Kind::Int { bits: 16, unsigned: c.unsigned },
            "mediumint" => Kind::Int { bits: 24, unsigned: c.unsigned },
            "int" | "integer" => Kind::Int { bits: 32, unsigned: c.unsigned },
            "bigint" => Kind::Int { bits: 64, unsigned: c.unsigned },
            "float" => Kind::Float,
            "double" | "real" => Kind::Double,
            "decimal" | "numeric" => Kind::Decimal,
            "bit" => Kind::Bit,
            "enum" => Kind::Enum(labels()),
            "set" => Kind::Set(labels()),
            "year" => Kind::Year,
            "date" => Kind::Date,
            "time" => Kind::Time(declared_fsp(&c.column_type)),
            "datetime" => Kind::DateTime(declared_fsp(&c.column_type)),
            "timestamp" => Kind::Timestamp(declared_fsp(&c.column_type)),
            "json" => Kind::JsonText,
            _ if c.json => Kind::JsonText,
            "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring" | "multipolygon"
            | "geometrycollection" => Kind::Geometry,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Kind::Binary,
            _ => match c.charset.as_deref() {
                None => Kind::Binary,
                Some(cs) if cs.eq_ignore_ascii_case("binary") => Kind::Binary,
                // The snapshot connection receives text in utf8mb4.
                Some(_) => Kind::Text(Charset::Utf8),
            },
        }
    }
}

/// Maps a value read by the snapshot (binary protocol, session time zone
/// UTC, utf8mb4) to the JSON the binlog path produces for the same value,
/// so that a chunk row and a streamed row compare equal.
pub fn snapshot_value(kind: &Kind, v: &MyValue) -> Result<Value, String> {
    Ok(match (kind, v) {
        (_, MyValue::NULL) => Value::Null,
        (Kind::Int { .. } | Kind::Year, MyValue::Int(i)) => Value::Number((*i).into()),
        (Kind::Int { .. } | Kind::Year, MyValue::UInt(u)) => Value::Number((*u).into()),
        (Kind::Year, MyValue::Bytes(b)) => Value::Number(
            std::str::from_utf8(b).ok().and_then(|s| s.parse::<u64>().ok()).ok_or("bad YEAR value")?.into(),
        ),
        (Kind::Enum(_) | Kind::Set(_) | Kind::Text(_), MyValue::Bytes(b)) => {
            Value::String(String::from_utf8_lossy(b).into_owned())
        }
        (Kind::Timestamp(fsp), MyValue::Date(y, mo, d, h, mi, s, us)) => {
            Value::String(datetime_text((*y, *mo, *d, *h, *mi, *s), *us, *fsp, "Z"))
        }
        (Kind::Timestamp(fsp), MyValue::Bytes(b)) if b.starts_with(b"0000-00-00") => {
            Value::String(format!("0000-00-00T00:00:00{}Z", frac(0, *fsp)))
        }
        _ => plain(kind, v)?,
    })
}

#[cfg(test)]
mod snapshot_value_tests {
    use super::*;

    fn col(data_type: &str, column_type: &str) -> crate::schema::ColumnInfo {
        crate::schema::ColumnInfo {
            name: "c".into(),
            data_type: data_type.into(),
            column_type: column_type.into(),
            unsigned: column_type.contains("unsigned"),
            nullable: true,
            charset: None,
            json: false,
            labels: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn snapshot_values_match_the_binlog_forms() {
        let k = Kind::from_column(&col("bigint", "bigint(20) unsigned"));
        assert_eq!(snapshot_value(&k, &MyValue::UInt(u64::MAX)).unwrap(), serde_json::json!(u64::MAX));
        let k = Kind::from_column(&col("datetime", "datetime(3)"));
        assert_eq!(
            snapshot_value(&k, &MyValue::Date(2024, 1, 2, 3, 4, 5, 678_000)).unwrap(),
            serde_json::json!("2024-01-02T03:04:05.678")
        );
        let k = Kind::from_column(&col("timestamp", "timestamp"));
        assert_eq!(
            snapshot_value(&k, &MyValue::Date(2024, 1, 2, 3, 4, 5, 0)).unwrap(),
            serde_json::json!("2024-01-02T03:04:05Z")
        );
        let k = Kind::from_column(&col("enum", "enum('a','b')"));
        assert_eq!(snapshot_value(&k, &MyValue::Bytes(b"b".to_vec())).unwrap(), serde_json::json!("b"));
        let k = Kind::from_column(&col("decimal", "decimal(12,2)"));
        assert_eq!(snapshot_value(&k, &MyValue::Bytes(b"1.50".to_vec())).unwrap(), serde_json::json!("1.50"));
        let k = Kind::from_column(&col("varbinary", "varbinary(4)"));
        assert_eq!(snapshot_value(&k, &MyValue::Bytes(vec![0, 1])).unwrap(), serde_json::json!("AAE="));
        assert_eq!(snapshot_value(&k, &MyValue::NULL).unwrap(), Value::Null);
    }
}
