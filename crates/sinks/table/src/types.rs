//! Neutral column types: what a source column holds, read from the schema
//! registry's description of a table (the PostgreSQL source's
//! `type_name`/`type_modifier`, the MySQL source's `data_type`/`type`), and
//! from a target's own catalogue, so that each sink can map it to its
//! database's column type and convert the event's JSON values to it.
//!
//! It also compares two versions of a table ([`TableDef::changes`]): added,
//! dropped, widened and narrowed columns. This module is pure: it never
//! queries a database.

use serde_json::Value;

/// What a column holds, independent of the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    /// Boolean.
    Bool,
    /// 16-bit signed integer (also MySQL TINYINT/YEAR).
    Int16,
    /// 32-bit signed integer (also MySQL MEDIUMINT, unsigned SMALLINT).
    Int32,
    /// 64-bit signed integer (also unsigned INT).
    Int64,
    /// 64-bit unsigned integer (MySQL BIGINT UNSIGNED).
    UInt64,
    /// Single-precision float.
    Float32,
    /// Double-precision float.
    Float64,
    /// Exact decimal with optional precision and scale.
    Decimal(Option<(u32, u32)>),
    /// Text with an optional maximum length in characters.
    Text(Option<u32>),
    /// Binary string.
    Bytes,
    /// JSON document.
    Json,
    /// UUID.
    Uuid,
    /// Calendar date.
    Date,
    /// Time of day.
    Time,
    /// Time of day with a zone offset.
    TimeTz,
    /// Wall-clock timestamp without a zone.
    Timestamp,
    /// Instant (timestamp with time zone).
    TimestampTz,
    /// Interval / duration.
    Interval,
    /// Bit string of a fixed length (or varying when `None`).
    Bit(Option<u32>),
    /// Enumeration with its labels (empty when the labels are unknown).
    Enum(Vec<String>),
    /// MySQL SET with its labels.
    Set(Vec<String>),
    /// Spatial value (MySQL GEOMETRY as `{"srid", "wkb"}`).
    Geometry,
    /// Array of another type.
    Array(Box<ColumnType>),
    /// Anything else, kept as its text (`inet`, `money`, `xml`, …); the
    /// name is the source's own.
    Other(String),
}

/// One column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    /// Column name.
    pub name: String,
    /// What it holds.
    pub ty: ColumnType,
    /// Whether NULL is allowed (unknown counts as nullable).
    pub nullable: bool,
}

/// A table: columns in order and the key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableDef {
    /// Columns in order.
    pub columns: Vec<ColumnDef>,
    /// Primary-key (or replica-identity) columns; empty when none.
    pub key: Vec<String>,
}

/// One difference between two versions of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaChange {
    /// A new column.
    Add(ColumnDef),
    /// A column that is gone.
    Drop(String),
    /// A column whose type can hold more than before (e.g. int → bigint).
    Widen(ColumnDef),
    /// A column whose type can hold less, or something else (e.g. bigint →
    /// int, text → int): not followed automatically.
    Narrow {
        /// The column.
        column: String,
        /// Its type before.
        from: ColumnType,
        /// Its type now.
        to: ColumnType,
    },
}

fn paren_args(text: &str) -> Vec<u32> {
    let Some(start) = text.find('(') else { return Vec::new() };
    let end = text[start..].find(')').map(|e| start + e).unwrap_or(text.len());
    text[start + 1..end].split(',').filter_map(|p| p.trim().parse().ok()).collect()
}

/// A PostgreSQL type by its catalogue name (`int4`, `_text`, `numeric`…)
/// and `atttypmod` (-1 when none).
pub fn from_pg_name(name: &str, typmod: i32) -> ColumnType {
    if let Some(element) = name.strip_prefix('_') {
        return ColumnType::Array(Box::new(from_pg_name(element, typmod)));
    }
    match name {
        "bool" => ColumnType::Bool,
        "int2" => ColumnType::Int16,
        "int4" | "oid" => ColumnType::Int32,
        "int8" => ColumnType::Int64,
        "float4" => ColumnType::Float32,
        "float8" => ColumnType::Float64,
        "numeric" if typmod >= 4 => {
            let m = (typmod - 4) as u32;
            ColumnType::Decimal(Some((m >> 16, m & 0xffff)))
        }
        "numeric" => ColumnType::Decimal(None),
        "varchar" | "bpchar" if typmod >= 4 => ColumnType::Text(Some((typmod - 4) as u32)),
        "text" | "varchar" | "bpchar" | "name" | "char" | "citext" => ColumnType::Text(None),
        "bytea" => ColumnType::Bytes,
        "json" | "jsonb" => ColumnType::Json,
        "uuid" => ColumnType::Uuid,
        "date" => ColumnType::Date,
        "time" => ColumnType::Time,
        "timetz" => ColumnType::TimeTz,
        "timestamp" => ColumnType::Timestamp,
        "timestamptz" => ColumnType::TimestampTz,
        "interval" => ColumnType::Interval,
        "bit" => ColumnType::Bit((typmod > 0).then_some(typmod as u32)),
        "varbit" => ColumnType::Bit(None),
        "geometry" => ColumnType::Geometry,
        other => ColumnType::Other(other.to_string()),
    }
}

/// A MySQL/MariaDB type by `DATA_TYPE` and `COLUMN_TYPE`.
pub fn from_mysql(data_type: &str, column_type: &str, unsigned: bool, json: bool, labels: &[String]) -> ColumnType {
    let args = paren_args(column_type);
    match data_type.to_ascii_lowercase().as_str() {
        "tinyint" if column_type.starts_with("tinyint(1)") && !unsigned => ColumnType::Bool,
        "tinyint" => ColumnType::Int16,
        "smallint" if unsigned => ColumnType::Int32,
        "smallint" | "year" => ColumnType::Int16,
        "mediumint" => ColumnType::Int32,
        "int" | "integer" if unsigned => ColumnType::Int64,
        "int" | "integer" => ColumnType::Int32,
        "bigint" if unsigned => ColumnType::UInt64,
        "bigint" => ColumnType::Int64,
        "float" => ColumnType::Float32,
        "double" | "real" => ColumnType::Float64,
        "decimal" | "numeric" => {
            ColumnType::Decimal(Some((args.first().copied().unwrap_or(10), args.get(1).copied().unwrap_or(0))))
        }
        "char" | "varchar" => ColumnType::Text(args.first().copied()),
        "tinytext" | "text" | "mediumtext" | "longtext" if json => ColumnType::Json,
        "tinytext" | "text" | "mediumtext" | "longtext" => ColumnType::Text(None),
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => ColumnType::Bytes,
        "json" => ColumnType::Json,
        "date" => ColumnType::Date,
        "time" => ColumnType::Time,
        "datetime" => ColumnType::Timestamp,
        "timestamp" => ColumnType::TimestampTz,
        "bit" => ColumnType::Bit(Some(args.first().copied().unwrap_or(1))),
        "enum" => ColumnType::Enum(labels.to_vec()),
        "set" => ColumnType::Set(labels.to_vec()),
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring" | "multipolygon"
        | "geometrycollection" => ColumnType::Geometry,
        "uuid" => ColumnType::Uuid,
        other => ColumnType::Other(other.to_string()),
    }
}

impl TableDef {
    /// Reads the schema registry's description of a table, as the
    /// PostgreSQL source (`type_name`, `type_modifier`, `key`) or the MySQL
    /// source (`data_type`, `type`, `unsigned`, `primary_key`) writes it.
    pub fn from_registry(schema: &Value) -> Result<TableDef, String> {
        let columns = schema.get("columns").and_then(Value::as_array).ok_or("the schema has no `columns` list")?;
        let mut def = TableDef::default();
        for c in columns {
            let name = c.get("name").and_then(Value::as_str).ok_or("a column has no name")?.to_string();
            let ty = if let Some(data_type) = c.get("data_type").and_then(Value::as_str) {
                let labels: Vec<String> = c
                    .get("labels")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|l| l.as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                from_mysql(
                    data_type,
                    c.get("type").and_then(Value::as_str).unwrap_or(data_type),
                    c.get("unsigned").and_then(Value::as_bool).unwrap_or(false),
                    c.get("json").and_then(Value::as_bool).unwrap_or(false),
                    &labels,
                )
            } else {
                let type_name = c.get("type_name").and_then(Value::as_str).unwrap_or("text");
                let typmod = c.get("type_modifier").and_then(Value::as_i64).unwrap_or(-1) as i32;
                from_pg_name(type_name, typmod)
            };
            if c.get("key").and_then(Value::as_bool).unwrap_or(false) {
                def.key.push(name.clone());
            }
            let nullable = c.get("nullable").and_then(Value::as_bool).unwrap_or(true);
            def.columns.push(ColumnDef { name, ty, nullable });
        }
        if let Some(pk) = schema.get("primary_key").and_then(Value::as_array) {
            def.key = pk.iter().filter_map(|k| k.as_str().map(str::to_string)).collect();
        }
        Ok(def)
    }

    /// A best-effort definition from one row's JSON values, for a table
    /// the registry has no schema of yet (a snapshot of a table no change
    /// was streamed for): integers as `Int64`, other numbers and strings as
    /// text (exact: the target parses nothing), booleans, objects and
    /// arrays as JSON.
    pub fn infer(row: &deltaforge_core::Row, key: &[String]) -> TableDef {
        let columns = row
            .iter()
            .map(|(name, v)| ColumnDef {
                name: name.to_string(),
                ty: match v {
                    Value::Bool(_) => ColumnType::Bool,
                    Value::Number(n) if n.is_i64() => ColumnType::Int64,
                    Value::Object(_) | Value::Array(_) => ColumnType::Json,
                    _ => ColumnType::Text(None),
                },
                nullable: !key.iter().any(|k| k == name),
            })
            .collect();
        TableDef { columns, key: key.to_vec() }
    }

    /// A column by name.
    pub fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// What changed from `self` (the older version) to `new`.
    pub fn changes(&self, new: &TableDef) -> Vec<SchemaChange> {
        let mut out = Vec::new();
        for old in &self.columns {
            match new.column(&old.name) {
                None => out.push(SchemaChange::Drop(old.name.clone())),
                Some(now) if now.ty == old.ty => {}
                Some(now) if widens(&old.ty, &now.ty) => out.push(SchemaChange::Widen(now.clone())),
                Some(now) => out.push(SchemaChange::Narrow {
                    column: old.name.clone(),
                    from: old.ty.clone(),
                    to: now.ty.clone(),
                }),
            }
        }
        for now in &new.columns {
            if self.column(&now.name).is_none() {
                out.push(SchemaChange::Add(now.clone()));
            }
        }
        out
    }
}

/// The error of a narrowing change under `schema_changes: follow` (the
/// same text for every table sink; the README documents it).
pub fn narrowing_error(source: &str, target: &impl std::fmt::Display, column: &str, from: &str, to: &str) -> String {
    format!(
        "schema change not followed: column {column} of source table {source} changed from {from} to {to}, \
         which is narrower; the target {target} keeps {from}. Alter the target column yourself (or accept the \
         wider type), then restart the pipeline; or set `schema_changes: ignore` to write rows as they come"
    )
}

/// Refuses a decimal text with more (non-zero) fraction digits than
/// `scale`, which a `numeric(p, s)` / `DECIMAL(p, s)` column would round
/// silently.
pub fn check_decimal_scale(text: &str, scale: u32) -> Result<(), String> {
    let Some((_, fraction)) = text.split_once('.') else { return Ok(()) };
    let fraction = fraction.split(['e', 'E']).next().unwrap_or("");
    if fraction.trim_end_matches('0').len() > scale as usize {
        return Err(format!("has more fraction digits than the target's scale {scale}"));
    }
    Ok(())
}

fn int_rank(t: &ColumnType) -> Option<u8> {
    Some(match t {
        ColumnType::Int16 => 1,
        ColumnType::Int32 => 2,
        ColumnType::Int64 => 3,
        ColumnType::UInt64 => 4,
        _ => return None,
    })
}

/// Whether every value of `from` fits `to` unchanged.
pub fn widens(from: &ColumnType, to: &ColumnType) -> bool {
    use ColumnType::*;
    if let (Some(a), Some(b)) = (int_rank(from), int_rank(to)) {
        return a <= b && !(from == &Int64 && to == &UInt64);
    }
    match (from, to) {
        (Float32, Float64) => true,
        (Int16 | Int32, Float64) => true,
        (Int16 | Int32 | Int64 | UInt64, Decimal(None)) => true,
        (Decimal(Some(_)), Decimal(None)) => true,
        (Decimal(Some((p1, s1))), Decimal(Some((p2, s2)))) => s2 >= s1 && p2 - s2 >= p1.saturating_sub(*s1),
        (Text(_), Text(None)) => true,
        (Text(Some(a)), Text(Some(b))) => b >= a,
        (Enum(a), Enum(b)) | (Set(a), Set(b)) => a.iter().all(|l| b.contains(l)),
        (Enum(_) | Set(_), Text(None)) => true,
        (Timestamp, Timestamp) | (TimestampTz, TimestampTz) => true,
        (Bit(Some(a)), Bit(Some(b))) => b >= a,
        (Bit(_), Bit(None)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pg_names_and_modifiers() {
        assert_eq!(from_pg_name("numeric", (12 << 16 | 3) + 4), ColumnType::Decimal(Some((12, 3))));
        assert_eq!(from_pg_name("numeric", -1), ColumnType::Decimal(None));
        assert_eq!(from_pg_name("varchar", 14), ColumnType::Text(Some(10)));
        assert_eq!(from_pg_name("_int4", -1), ColumnType::Array(Box::new(ColumnType::Int32)));
        assert_eq!(from_pg_name("bit", 8), ColumnType::Bit(Some(8)));
        assert_eq!(from_pg_name("mood", -1), ColumnType::Other("mood".into()));
    }

    #[test]
    fn mysql_types() {
        assert_eq!(from_mysql("bigint", "bigint(20) unsigned", true, false, &[]), ColumnType::UInt64);
        assert_eq!(from_mysql("decimal", "decimal(30,10)", false, false, &[]), ColumnType::Decimal(Some((30, 10))));
        assert_eq!(from_mysql("longtext", "longtext", false, true, &[]), ColumnType::Json);
        assert_eq!(from_mysql("tinyint", "tinyint(1)", false, false, &[]), ColumnType::Bool);
        assert_eq!(from_mysql("datetime", "datetime(6)", false, false, &[]), ColumnType::Timestamp);
        assert_eq!(from_mysql("timestamp", "timestamp(3)", false, false, &[]), ColumnType::TimestampTz);
        assert_eq!(from_mysql("bit", "bit(12)", false, false, &[]), ColumnType::Bit(Some(12)));
    }

    #[test]
    fn registry_schemas_of_both_sources() {
        let pg = json!({"columns": [
            {"name": "id", "type_oid": 20, "type_name": "int8", "type_modifier": -1, "key": true},
            {"name": "v", "type_oid": 25, "type_name": "text", "type_modifier": -1, "key": false}]});
        let def = TableDef::from_registry(&pg).unwrap();
        assert_eq!(def.key, vec!["id"]);
        assert_eq!(def.columns[1].ty, ColumnType::Text(None));
        let my = json!({"columns": [
            {"name": "id", "data_type": "int", "type": "int(10) unsigned", "unsigned": true, "nullable": false},
            {"name": "e", "data_type": "enum", "type": "enum('a','b')", "unsigned": false, "labels": ["a", "b"]}],
            "primary_key": ["id"]});
        let def = TableDef::from_registry(&my).unwrap();
        assert_eq!(def.key, vec!["id"]);
        assert_eq!(def.columns[0].ty, ColumnType::Int64);
        assert!(!def.columns[0].nullable);
        assert_eq!(def.columns[1].ty, ColumnType::Enum(vec!["a".into(), "b".into()]));
        assert!(TableDef::from_registry(&json!({})).is_err());
    }

    #[test]
    fn changes_are_classified() {
        let col = |n: &str, ty| ColumnDef { name: n.into(), ty, nullable: true };
        let old = TableDef {
            columns: vec![
                col("id", ColumnType::Int32),
                col("a", ColumnType::Text(Some(5))),
                col("b", ColumnType::Int64),
            ],
            key: vec!["id".into()],
        };
        let new = TableDef {
            columns: vec![
                col("id", ColumnType::Int64),
                col("a", ColumnType::Text(Some(3))),
                col("c", ColumnType::Bool),
            ],
            key: vec!["id".into()],
        };
        let changes = old.changes(&new);
        assert_eq!(changes[0], SchemaChange::Widen(col("id", ColumnType::Int64)));
        assert!(matches!(&changes[1], SchemaChange::Narrow { column, .. } if column == "a"));
        assert_eq!(changes[2], SchemaChange::Drop("b".into()));
        assert_eq!(changes[3], SchemaChange::Add(col("c", ColumnType::Bool)));
        assert!(widens(&ColumnType::Decimal(Some((10, 2))), &ColumnType::Decimal(Some((12, 2)))));
        assert!(!widens(&ColumnType::Decimal(Some((10, 2))), &ColumnType::Decimal(Some((10, 3)))));
        assert!(!widens(&ColumnType::Int64, &ColumnType::Int32));
    }
}
