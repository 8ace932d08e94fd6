//! Table schemas as `information_schema` describes them: loading, the JSON
//! form stored in the schema registry, and reading that form back.
//!
//! The binlog's TABLE_MAP event carries the wire types (and, with
//! `binlog_row_metadata=FULL`, names and signedness); this module adds what
//! only the catalogue knows: declared types, charsets by name, ENUM/SET
//! labels, MariaDB JSON columns (LONGTEXT with a `json_valid` check) and the
//! primary key. It only reads the catalogue; it must never alter anything on
//! the server.

use std::collections::HashMap;

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

/// Parses the labels of `enum('a','b''c')` / `set(...)`.
pub fn parse_labels(column_type: &str) -> Vec<String> {
    let Some(start) = column_type.find('(') else { return Vec::new() };
    let inner = &column_type[start + 1..column_type.rfind(')').unwrap_or(column_type.len())];
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
