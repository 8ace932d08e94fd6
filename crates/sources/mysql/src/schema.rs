//! Table schemas: as `information_schema` describes them (loading), as a
//! TABLE_MAP event with full optional metadata describes them
//! ([`from_table_map`]), the JSON form stored in the schema registry, and the
//! [`Layout`] both are compared by.
//!
//! With `binlog_row_metadata=FULL` every TABLE_MAP event states its table's
//! layout at the event's own position: names, wire types with their
//! precision/scale/length/fsp, signedness, nullability, charsets, ENUM/SET
//! labels, geometry types and the primary key. That is the only description
//! that is right for an event replayed after later DDLs, so the source builds
//! its decoding schema from it whenever it is present. The catalogue still
//! supplies what the binlog cannot say: MariaDB JSON columns (LONGTEXT with a
//! `json_valid` check), display widths and the exact spelling of types; it
//! is the only source when the metadata is MINIMAL. This module only reads
//! the catalogue; it must never alter anything on the server.

use std::collections::HashMap;

use mysql_async::binlog::events::{OptionalMetaExtractor, OptionalMetadataField, TableMapEvent};
use mysql_async::consts::{ColumnType, GeometryType};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use serde_json::{json, Value};

/// One column as the catalogue describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// `DATA_TYPE`, lower case (`int`, `varchar`, `enum`, ...).
    pub data_type: String,
    /// `COLUMN_TYPE`, e.g. `int(10) unsigned`, `enum('a','b')`.
    pub column_type: String,
    /// Declared UNSIGNED.
    pub unsigned: bool,
    /// NULL allowed.
    pub nullable: bool,
    /// Character set name; `None` for non-text and binary columns.
    pub charset: Option<String>,
    /// A JSON column (MySQL `json`, or MariaDB LONGTEXT checked by `json_valid`).
    pub json: bool,
    /// ENUM or SET labels, in declaration order.
    pub labels: Vec<String>,
}

/// One table's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    /// Database.
    pub db: String,
    /// Table.
    pub table: String,
    /// Columns in ordinal order.
    pub columns: Vec<ColumnInfo>,
    /// Primary key column names, in key order.
    pub primary_key: Vec<String>,
}

impl TableSchema {
    /// The description stored in the schema registry.
    pub fn to_json(&self) -> Value {
        json!({
            "columns": self.columns.iter().map(|c| json!({
                "name": c.name,
                "data_type": c.data_type,
                "type": c.column_type,
                "unsigned": c.unsigned,
                "nullable": c.nullable,
                "charset": c.charset,
                "json": c.json,
                "labels": c.labels,
            })).collect::<Vec<_>>(),
            "primary_key": self.primary_key,
        })
    }

    /// Reads a description written by [`to_json`](Self::to_json).
    pub fn from_json(db: &str, table: &str, v: &Value) -> Option<Self> {
        let columns = v
            .get("columns")?
            .as_array()?
            .iter()
            .map(|c| {
                Some(ColumnInfo {
                    name: c.get("name")?.as_str()?.to_string(),
                    data_type: c.get("data_type")?.as_str()?.to_string(),
                    column_type: c.get("type")?.as_str()?.to_string(),
                    unsigned: c.get("unsigned")?.as_bool()?,
                    nullable: c.get("nullable").and_then(Value::as_bool).unwrap_or(true),
                    charset: c.get("charset").and_then(Value::as_str).map(str::to_string),
                    json: c.get("json").and_then(Value::as_bool).unwrap_or(false),
                    labels: c
                        .get("labels")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(|l| l.as_str().map(str::to_string)).collect())
                        .unwrap_or_default(),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let primary_key = v
            .get("primary_key")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|k| k.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        Some(TableSchema { db: db.to_string(), table: table.to_string(), columns, primary_key })
    }
}

/// What a TABLE_MAP event with full metadata can state about one column,
/// normalised so that the catalogue's and the binlog's description of the
/// same column compare equal (display widths, ZEROFILL and the spelling of
/// synonyms are dropped; lengths, precision, scale and fsp are kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnLayout {
    /// Column name.
    pub name: String,
    /// Canonical type: `int`, `decimal(10,2)`, `varchar(20)`, `datetime(6)`, `enum`, ...
    pub ty: String,
    /// UNSIGNED (numeric types only).
    pub unsigned: bool,
    /// NULL allowed.
    pub nullable: bool,
    /// Character set of text, ENUM and SET columns (`utf8` spelled `utf8mb3`).
    pub charset: Option<String>,
    /// A JSON column.
    pub json: bool,
    /// ENUM/SET labels.
    pub labels: Vec<String>,
}

/// A table's layout: its columns and primary key as [`ColumnLayout`]s. Two
/// schemas with equal layouts decode every row identically; a change of
/// layout is what makes a new schema version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Columns in ordinal order.
    pub columns: Vec<ColumnLayout>,
    /// Primary key column names, in key order.
    pub primary_key: Vec<String>,
}

fn is_numeric(data_type: &str) -> bool {
    matches!(
        data_type,
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "decimal" | "float" | "double" | "real"
    )
}

fn is_text_blob(data_type: &str) -> bool {
    matches!(data_type, "tinytext" | "text" | "mediumtext" | "longtext")
}

/// The type without what the binlog cannot know (display width, ZEROFILL,
/// FLOAT(M,D)) and without UNSIGNED (compared on its own).
fn canonical_type(data_type: &str, column_type: &str) -> String {
    let dt = data_type.to_ascii_lowercase();
    match dt.as_str() {
        "tinyint" | "smallint" | "mediumint" | "int" | "bigint" | "year" | "float" | "double" | "enum" | "set" => dt,
        "integer" => "int".into(),
        "real" => "double".into(),
        "geomcollection" => "geometrycollection".into(),
        _ => column_type.to_ascii_lowercase().replace(" unsigned", "").replace(" zerofill", "").trim().to_string(),
    }
}

fn canonical_charset(data_type: &str, charset: Option<&str>) -> Option<String> {
    let text_like =
        matches!(data_type, "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set");
    let cs = charset?.to_ascii_lowercase();
    if !text_like || cs == "binary" {
        return None;
    }
    Some(if cs == "utf8" { "utf8mb3".into() } else { cs })
}

impl TableSchema {
    /// The layout this schema describes (see [`Layout`]).
    pub fn layout(&self) -> Layout {
        Layout {
            columns: self
                .columns
                .iter()
                .map(|c| {
                    let dt = c.data_type.to_ascii_lowercase();
                    ColumnLayout {
                        name: c.name.clone(),
                        ty: canonical_type(&dt, &c.column_type),
                        unsigned: c.unsigned && is_numeric(&dt),
                        nullable: c.nullable,
                        charset: canonical_charset(&dt, c.charset.as_deref()),
                        json: c.json,
                        labels: if dt == "enum" || dt == "set" { c.labels.clone() } else { Vec::new() },
                    }
                })
                .collect(),
            primary_key: self.primary_key.clone(),
        }
    }

    /// Marks the LONGTEXT/TEXT columns that are JSON. The binlog cannot say
    /// so (MariaDB logs JSON as LONGTEXT; its `json_valid` check lives only
    /// in the catalogue), so the flag is taken from the first of `hints` that
    /// has a column of the same name and type.
    pub fn apply_json_hints(&mut self, hints: &[&TableSchema]) {
        for c in self.columns.iter_mut().filter(|c| is_text_blob(&c.data_type)) {
            let ty = canonical_type(&c.data_type, &c.column_type);
            let hint = hints.iter().find_map(|h| {
                h.columns
                    .iter()
                    .find(|x| x.name == c.name && canonical_type(&x.data_type, &x.column_type) == ty)
                    .map(|x| x.json)
            });
            if let Some(json) = hint {
                c.json = json;
            }
        }
    }
}

/// Character set and maximum bytes per character of each collation id, as
/// the server lists them (the TABLE_MAP metadata names collations by id;
/// byte lengths of CHAR/VARCHAR become character lengths through the
/// maximum).
#[derive(Debug, Clone)]
pub struct Collations(HashMap<u16, (String, u8)>);

impl Default for Collations {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Collations {
    /// The common collations with their MySQL/MariaDB ids: enough when the
    /// server's own list cannot be read.
    pub fn builtin() -> Self {
        let mut m = HashMap::new();
        let mut put = |ids: &[u16], cs: &str, max: u8| {
            for id in ids {
                m.insert(*id, (cs.to_string(), max));
            }
        };
        put(&[63], "binary", 1);
        put(&[5, 8, 15, 31, 47, 48, 49, 94], "latin1", 1);
        put(&[11, 65], "ascii", 1);
        put(&[33, 83, 223], "utf8mb3", 3);
        put(&(192..=215).collect::<Vec<_>>(), "utf8mb3", 3);
        put(&[45, 46], "utf8mb4", 4);
        put(&(224..=247).collect::<Vec<_>>(), "utf8mb4", 4);
        put(&(255..=323).collect::<Vec<_>>(), "utf8mb4", 4);
        put(&[35, 90], "ucs2", 2);
        put(&(128..=151).collect::<Vec<_>>(), "ucs2", 2);
        put(&[54, 55], "utf16", 4);
        put(&(101..=124).collect::<Vec<_>>(), "utf16", 4);
        put(&[60, 61], "utf32", 4);
        put(&(160..=183).collect::<Vec<_>>(), "utf32", 4);
        Collations(m)
    }

    /// The server's collations (`information_schema`), over the built-in
    /// list. MariaDB 10.10+ lists the ids of its UCA-14 collations only in
    /// `COLLATION_CHARACTER_SET_APPLICABILITY`, so both tables are read.
    pub async fn load(conn: &mut Conn) -> Result<Self, mysql_async::Error> {
        let mut out = Self::builtin();
        let rows: Vec<(Option<u64>, String, u64)> = conn
            .query(
                "SELECT c.ID, c.CHARACTER_SET_NAME, s.MAXLEN FROM information_schema.COLLATIONS c \
                 JOIN information_schema.CHARACTER_SETS s USING (CHARACTER_SET_NAME)",
            )
            .await?;
        let mut add = |rows: Vec<(Option<u64>, String, u64)>| {
            for (id, cs, max) in rows {
                if let (Some(id), Ok(max)) = (id.and_then(|i| u16::try_from(i).ok()), u8::try_from(max)) {
                    out.0.insert(id, (cs.to_ascii_lowercase(), max));
                }
            }
        };
        add(rows);
        // Absent before MariaDB 10.10 and on MySQL (no ID column): optional.
        if let Ok(rows) = conn
            .query::<(Option<u64>, String, u64), _>(
                "SELECT a.ID, a.CHARACTER_SET_NAME, s.MAXLEN FROM information_schema.COLLATION_CHARACTER_SET_APPLICABILITY a \
                 JOIN information_schema.CHARACTER_SETS s USING (CHARACTER_SET_NAME)",
            )
            .await
        {
            add(rows);
        }
        Ok(out)
    }

    /// Character set name and maximum bytes per character of `id`.
    pub fn get(&self, id: u16) -> Option<(&str, u8)> {
        self.0.get(&id).map(|(cs, max)| (cs.as_str(), *max))
    }
}

fn quote_labels(kind: &str, labels: &[String]) -> String {
    let quoted: Vec<String> = labels.iter().map(|l| format!("'{}'", l.replace('\'', "''"))).collect();
    format!("{kind}({})", quoted.join(","))
}

fn geometry_name(g: Option<GeometryType>) -> &'static str {
    match g {
        Some(GeometryType::GEOM_POINT) => "point",
        Some(GeometryType::GEOM_LINESTRING) => "linestring",
        Some(GeometryType::GEOM_POLYGON) => "polygon",
        Some(GeometryType::GEOM_MULTIPOINT) => "multipoint",
        Some(GeometryType::GEOM_MULTILINESTRING) => "multilinestring",
        Some(GeometryType::GEOM_MULTIPOLYGON) => "multipolygon",
        Some(GeometryType::GEOM_GEOMETRYCOLLECTION) => "geometrycollection",
        Some(GeometryType::GEOM_GEOMETRY) | None => "geometry",
    }
}

fn with_fsp(name: &str, fsp: u8) -> String {
    if fsp == 0 {
        name.to_string()
    } else {
        format!("{name}({fsp})")
    }
}

/// The schema a TABLE_MAP event describes, when it carries full optional
/// metadata (`binlog_row_metadata=FULL`: column names, and ENUM/SET labels
/// when there are such columns); `Ok(None)` when it does not, and the
/// catalogue must be used. Types are spelled as `information_schema` spells
/// them without display widths (`int unsigned`, `decimal(10,2)`,
/// `varchar(20)`, `datetime(6)`); no column is marked JSON unless its wire
/// type is JSON (see [`TableSchema::apply_json_hints`]). An error means a
/// malformed event or optional metadata this reader does not know.
pub fn from_table_map(tme: &TableMapEvent<'_>, collations: &Collations) -> Result<Option<TableSchema>, String> {
    let n = tme.columns_count() as usize;
    let mut types = Vec::with_capacity(n);
    for i in 0..n {
        let ty = tme
            .get_column_type(i)
            .map_err(|e| format!("column {i}: {e}"))?
            .ok_or_else(|| format!("column {i}: no type in the TABLE_MAP event"))?;
        types.push(ty);
    }
    let ex = OptionalMetaExtractor::new(tme.iter_optional_meta())
        .map_err(|e| format!("TABLE_MAP optional metadata: {e}"))?;
    let names = ex
        .iter_column_name()
        .map(|r| r.map(|c| c.name().into_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("TABLE_MAP column names: {e}"))?;
    if names.len() != n {
        return Ok(None);
    }
    let (mut enums, mut sets, mut geoms) = (Vec::new(), Vec::new(), Vec::new());
    for field in tme.iter_optional_meta() {
        match field.map_err(|e| format!("TABLE_MAP optional metadata: {e}"))? {
            OptionalMetadataField::EnumStrValue(v) => {
                for e in v.iter_values() {
                    let e = e.map_err(|e| format!("TABLE_MAP ENUM values: {e}"))?;
                    enums.push(e.values().iter().map(|x| x.value().into_owned()).collect::<Vec<_>>());
                }
            }
            OptionalMetadataField::SetStrValue(v) => {
                for s in v.iter_values() {
                    let s = s.map_err(|e| format!("TABLE_MAP SET values: {e}"))?;
                    sets.push(s.values().iter().map(|x| x.value().into_owned()).collect::<Vec<_>>());
                }
            }
            OptionalMetadataField::GeometryType(g) => {
                // An unknown geometry code is read as plain GEOMETRY.
                geoms.extend(g.iter_geometry_types().map(Result::ok));
            }
            _ => {}
        }
    }
    let count = |f: fn(&ColumnType) -> bool| types.iter().filter(|t| f(t)).count();
    if enums.len() < count(ColumnType::is_enum_type) || sets.len() < count(ColumnType::is_set_type) {
        return Ok(None);
    }
    let mut sign = ex.iter_signedness();
    let mut charsets = ex.iter_charset();
    let mut enum_set_charsets = ex.iter_enum_and_set_charset();
    let (mut enums, mut sets, mut geoms) = (enums.into_iter(), sets.into_iter(), geoms.into_iter());
    let nulls = tme.null_bitmask();
    let mut columns = Vec::with_capacity(n);
    for (i, (ty, name)) in types.iter().zip(names).enumerate() {
        let meta = tme.get_column_metadata(i).unwrap_or(&[]);
        let m = |k: usize| meta.get(k).copied().unwrap_or(0);
        // YEAR has a signedness bit (MariaDB sets it) but is never UNSIGNED
        // in the catalogue.
        let unsigned = ty.is_numeric_type() && sign.next().unwrap_or(false) && *ty != ColumnType::MYSQL_TYPE_YEAR;
        // The server counts GEOMETRY (a BLOB inside) among the character
        // columns of the charset metadata; `is_character_type` does not.
        let collation = if ty.is_character_type() || *ty == ColumnType::MYSQL_TYPE_GEOMETRY {
            charsets.next().transpose().map_err(|e| format!("column {name}: charset: {e}"))?
        } else if ty.is_enum_or_set_type() {
            enum_set_charsets.next().transpose().map_err(|e| format!("column {name}: charset: {e}"))?
        } else {
            None
        };
        let binary = collation == Some(63);
        let (charset, maxlen) = match collation {
            None | Some(63) => (None, 1u16),
            Some(id) => match collations.get(id) {
                Some((cs, max)) => (Some(cs.to_string()), u16::from(max.max(1))),
                // Named by id so that it still decodes (as UTF-8) and compares.
                None => (Some(format!("collation_{id}")), 1),
            },
        };
        let mut labels = Vec::new();
        let mut json = false;
        use ColumnType::*;
        let (data_type, column_type): (String, String) = match ty {
            MYSQL_TYPE_TINY => ("tinyint".into(), "tinyint".into()),
            MYSQL_TYPE_SHORT => ("smallint".into(), "smallint".into()),
            MYSQL_TYPE_INT24 => ("mediumint".into(), "mediumint".into()),
            MYSQL_TYPE_LONG => ("int".into(), "int".into()),
            MYSQL_TYPE_LONGLONG => ("bigint".into(), "bigint".into()),
            MYSQL_TYPE_FLOAT => ("float".into(), "float".into()),
            MYSQL_TYPE_DOUBLE => ("double".into(), "double".into()),
            MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => ("decimal".into(), format!("decimal({},{})", m(0), m(1))),
            // Metadata: bits beyond whole bytes, then whole bytes.
            MYSQL_TYPE_BIT => ("bit".into(), format!("bit({})", u32::from(m(1)) * 8 + u32::from(m(0)))),
            MYSQL_TYPE_YEAR => ("year".into(), "year".into()),
            MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => ("date".into(), "date".into()),
            MYSQL_TYPE_TIME => ("time".into(), "time".into()),
            MYSQL_TYPE_TIME2 => ("time".into(), with_fsp("time", m(0))),
            MYSQL_TYPE_DATETIME => ("datetime".into(), "datetime".into()),
            MYSQL_TYPE_DATETIME2 => ("datetime".into(), with_fsp("datetime", m(0))),
            MYSQL_TYPE_TIMESTAMP => ("timestamp".into(), "timestamp".into()),
            MYSQL_TYPE_TIMESTAMP2 => ("timestamp".into(), with_fsp("timestamp", m(0))),
            MYSQL_TYPE_JSON => {
                json = true;
                ("json".into(), "json".into())
            }
            MYSQL_TYPE_GEOMETRY => {
                let g = geometry_name(geoms.next().flatten());
                (g.into(), g.into())
            }
            MYSQL_TYPE_ENUM => {
                labels = enums.next().unwrap_or_default();
                ("enum".into(), quote_labels("enum", &labels))
            }
            MYSQL_TYPE_SET => {
                labels = sets.next().unwrap_or_default();
                ("set".into(), quote_labels("set", &labels))
            }
            MYSQL_TYPE_STRING => {
                // Metadata: real type with the length's bits 8-9 folded in
                // (XOR 0x30), then the length's low byte; the length is in bytes.
                let len = ((u16::from(m(0) & 0x30) ^ 0x30) << 4) | u16::from(m(1));
                if binary {
                    ("binary".into(), format!("binary({len})"))
                } else {
                    ("char".into(), format!("char({})", len / maxlen))
                }
            }
            MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => {
                let len = u16::from_le_bytes([m(0), m(1)]);
                if binary {
                    ("varbinary".into(), format!("varbinary({len})"))
                } else {
                    ("varchar".into(), format!("varchar({})", len / maxlen))
                }
            }
            MYSQL_TYPE_BLOB | MYSQL_TYPE_TINY_BLOB | MYSQL_TYPE_MEDIUM_BLOB | MYSQL_TYPE_LONG_BLOB => {
                // Metadata: bytes of the length prefix, 1 (TINY) to 4 (LONG).
                let size = match m(0) {
                    1 => "tiny",
                    3 => "medium",
                    4 => "long",
                    _ => "",
                };
                let t = format!("{size}{}", if binary || charset.is_none() { "blob" } else { "text" });
                (t.clone(), t)
            }
            other => {
                let t = format!("{other:?}").trim_start_matches("MYSQL_TYPE_").to_ascii_lowercase();
                (t.clone(), t)
            }
        };
        let column_type = if unsigned { format!("{column_type} unsigned") } else { column_type };
        columns.push(ColumnInfo {
            name,
            data_type,
            column_type,
            unsigned,
            nullable: nulls.get(i).map(|b| *b).unwrap_or(true),
            charset,
            json,
            labels,
        });
    }
    let mut primary_key = Vec::new();
    for k in ex.iter_primary_key() {
        let k = k.map_err(|e| format!("TABLE_MAP primary key: {e}"))? as usize;
        let c = columns.get(k).ok_or_else(|| format!("TABLE_MAP primary key names column {k} of {n}"))?;
        primary_key.push(c.name.clone());
    }
    Ok(Some(TableSchema {
        db: tme.database_name().into_owned(),
        table: tme.table_name().into_owned(),
        columns,
        primary_key,
    }))
}

/// Parses the labels of `enum('a','b''c')` / `set(...)`.
pub fn parse_labels(column_type: &str) -> Vec<String> {
    let Some(start) = column_type.find('(') else { return Vec::new() };
    // A `)` only before the `(` (not a type the server prints) closes nothing.
    let end = column_type.rfind(')').filter(|e| *e > start).unwrap_or(column_type.len());
    let inner = &column_type[start + 1..end];
    let mut labels = Vec::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut label = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(n) = chars.next() {
                        label.push(n);
                    }
                }
                other => label.push(other),
            }
        }
        labels.push(label);
    }
    labels
}

fn text(row: &Row, i: usize) -> Option<String> {
    match row.as_ref(i)? {
        mysql_async::Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        mysql_async::Value::NULL => None,
        other => Some(other.as_sql(true)),
    }
}

const SYSTEM_DBS: &str = "('mysql','information_schema','performance_schema','sys')";

/// Loads the schemas of every table `keep(db, table)` accepts, or of the one
/// table `only` names.
pub async fn load(
    conn: &mut Conn,
    mariadb: bool,
    only: Option<(&str, &str)>,
    keep: &(dyn Fn(&str, &str) -> bool + Sync),
) -> Result<HashMap<(String, String), TableSchema>, mysql_async::Error> {
    let filter = match only {
        Some(_) => "TABLE_SCHEMA = ? AND TABLE_NAME = ?".to_string(),
        None => format!("TABLE_SCHEMA NOT IN {SYSTEM_DBS}"),
    };
    let params: mysql_async::Params = match only {
        Some((d, t)) => (d, t).into(),
        None => mysql_async::Params::Empty,
    };
    let cols: Vec<Row> = conn
        .exec(
            format!(
                "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME, IS_NULLABLE \
                 FROM information_schema.COLUMNS WHERE {filter} ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION"
            ),
            params.clone(),
        )
        .await?;
    let mut out: HashMap<(String, String), TableSchema> = HashMap::new();
    for row in &cols {
        let (Some(db), Some(table), Some(name)) = (text(row, 0), text(row, 1), text(row, 2)) else { continue };
        if !keep(&db, &table) {
            continue;
        }
        let data_type = text(row, 3).unwrap_or_default().to_ascii_lowercase();
        let column_type = text(row, 4).unwrap_or_default();
        let labels = if data_type == "enum" || data_type == "set" { parse_labels(&column_type) } else { Vec::new() };
        let info = ColumnInfo {
            name,
            unsigned: column_type.to_ascii_lowercase().contains("unsigned"),
            json: data_type == "json",
            data_type,
            column_type,
            nullable: text(row, 6).is_some_and(|v| v.eq_ignore_ascii_case("YES")),
            charset: text(row, 5),
            labels,
        };
        out.entry((db.clone(), table.clone()))
            .or_insert_with(|| TableSchema { db, table, columns: Vec::new(), primary_key: Vec::new() })
            .columns
            .push(info);
    }
    if out.is_empty() {
        return Ok(out);
    }
    let pk_filter = filter.clone();
    let pks: Vec<Row> = conn
        .exec(
            format!(
                "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
                 WHERE CONSTRAINT_NAME = 'PRIMARY' AND {pk_filter} ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION"
            ),
            params.clone(),
        )
        .await?;
    for row in &pks {
        if let (Some(db), Some(table), Some(col)) = (text(row, 0), text(row, 1), text(row, 2)) {
            if let Some(t) = out.get_mut(&(db, table)) {
                t.primary_key.push(col);
            }
        }
    }
    if mariadb {
        // MariaDB's JSON is LONGTEXT with a CHECK (json_valid(`col`)).
        let check_filter = match only {
            Some(_) => "CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?".to_string(),
            None => format!("CONSTRAINT_SCHEMA NOT IN {SYSTEM_DBS}"),
        };
        let checks: Vec<Row> = conn
            .exec(
                format!(
                    "SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
                     WHERE {check_filter}"
                ),
                params,
            )
            .await?;
        for row in &checks {
            let (Some(db), Some(table), Some(clause)) = (text(row, 0), text(row, 1), text(row, 2)) else { continue };
            let Some(t) = out.get_mut(&(db, table)) else { continue };
            let lower = clause.to_ascii_lowercase();
            if let Some(rest) = lower.trim().strip_prefix("json_valid(") {
                let col = rest.trim_end_matches(')').trim().trim_matches('`');
                for c in t.columns.iter_mut() {
                    if c.name.eq_ignore_ascii_case(col)
                        && matches!(c.data_type.as_str(), "longtext" | "text" | "mediumtext")
                    {
                        c.json = true;
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(parse_labels("enum('a','b''c','d,e')"), vec!["a", "b'c", "d,e"]);
        assert_eq!(parse_labels("set('x','y')"), vec!["x", "y"]);
        assert!(parse_labels("int(11)").is_empty());
    }

    #[test]
    fn json_round_trip() {
        let t = TableSchema {
            db: "d".into(),
            table: "t".into(),
            columns: vec![ColumnInfo {
                name: "e".into(),
                data_type: "enum".into(),
                column_type: "enum('a','b')".into(),
                unsigned: false,
                nullable: true,
                charset: Some("utf8mb4".into()),
                json: false,
                labels: vec!["a".into(), "b".into()],
            }],
            primary_key: vec!["e".into()],
        };
        assert_eq!(TableSchema::from_json("d", "t", &t.to_json()), Some(t));
    }
}
