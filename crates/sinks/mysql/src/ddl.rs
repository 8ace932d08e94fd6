//! The MySQL/MariaDB target's schema: column types for neutral types,
//! reading a table from `information_schema`, `CREATE TABLE` / `ALTER
//! TABLE` statements and the progress tables.
//!
//! MySQL commits implicitly around DDL, so the session runs these before
//! the batch's transaction (see `session`), and each is guarded by a look
//! at the catalogue so that running it again after a crash is a no-op.
//! Names are always quoted ([`quote`]); no row value ever enters SQL text.

use deltaforge_table_core::types::from_mysql;
use deltaforge_table_core::{ColumnDef, ColumnType, SchemaChange, TableDef, TargetName};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

/// A quoted identifier (`` `a``b` ``).
pub fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `` `db`.`table` ``.
pub fn qualified(t: &TargetName) -> String {
    format!("{}.{}", quote(&t.schema), quote(&t.table))
}

fn labels(l: &[String]) -> String {
    l.iter().map(|s| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))).collect::<Vec<_>>().join(",")
}

/// The MySQL column type for a neutral type; `key` when the column is part
/// of the primary key (indexable types only).
pub fn mysql_type(ty: &ColumnType, key: bool) -> String {
    match ty {
        ColumnType::Bool => "BOOLEAN".into(),
        ColumnType::Int16 => "SMALLINT".into(),
        ColumnType::Int32 => "INT".into(),
        ColumnType::Int64 => "BIGINT".into(),
        ColumnType::UInt64 => "BIGINT UNSIGNED".into(),
        ColumnType::Float32 => "FLOAT".into(),
        ColumnType::Float64 => "DOUBLE".into(),
        ColumnType::Decimal(Some((p, s))) if *p <= 65 && *s <= 30 && s <= p => format!("DECIMAL({p},{s})"),
        ColumnType::Decimal(_) => "DECIMAL(65,30)".into(),
        ColumnType::Text(Some(n)) if *n <= 16_383 => format!("VARCHAR({n})"),
        ColumnType::Text(_) | ColumnType::Other(_) | ColumnType::Interval | ColumnType::TimeTz if key => {
            "VARCHAR(255)".into()
        }
        ColumnType::Text(_) | ColumnType::Other(_) => "LONGTEXT".into(),
        ColumnType::Interval | ColumnType::TimeTz => "VARCHAR(64)".into(),
        ColumnType::Bytes | ColumnType::Geometry if key => "VARBINARY(255)".into(),
        ColumnType::Bytes | ColumnType::Geometry => "LONGBLOB".into(),
        ColumnType::Json | ColumnType::Array(_) => "JSON".into(),
        ColumnType::Uuid => "CHAR(36)".into(),
        ColumnType::Date => "DATE".into(),
        ColumnType::Time => "TIME(6)".into(),
        // Zoned instants are stored as UTC wall-clock values (the session
        // runs in UTC): DATETIME has no 2038 limit, unlike TIMESTAMP.
        ColumnType::Timestamp | ColumnType::TimestampTz => "DATETIME(6)".into(),
        ColumnType::Bit(Some(n)) if *n >= 1 && *n <= 64 => format!("BIT({n})"),
        ColumnType::Bit(_) => "VARCHAR(255)".into(),
        ColumnType::Enum(l) if !l.is_empty() => format!("ENUM({})", labels(l)),
        ColumnType::Set(l) if !l.is_empty() => format!("SET({})", labels(l)),
        ColumnType::Enum(_) | ColumnType::Set(_) => "VARCHAR(255)".into(),
    }
}

/// Reads a table's columns and primary key; `None` when it does not exist.
pub async fn describe(conn: &mut Conn, t: &TargetName) -> Result<Option<TableDef>, mysql_async::Error> {
    let cols: Vec<(String, String, String, String)> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (&t.schema, &t.table),
        )
        .await?;
    if cols.is_empty() {
        return Ok(None);
    }
    let mut def = TableDef::default();
    for (name, data_type, column_type, nullable) in cols {
        let labels = enum_labels(&column_type);
        let ty = from_mysql(&data_type, &column_type, column_type.contains("unsigned"), data_type == "json", &labels);
        def.columns.push(ColumnDef { name, ty, nullable: nullable == "YES" });
    }
    def.key = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
            (&t.schema, &t.table),
        )
        .await?;
    Ok(Some(def))
}

/// The labels of `enum('a','b')` / `set('a','b')`.
fn enum_labels(column_type: &str) -> Vec<String> {
    let Some(inner) = column_type.split_once('(').and_then(|(_, r)| r.rsplit_once(')')).map(|(i, _)| i) else {
        return Vec::new();
    };
    if !(column_type.starts_with("enum") || column_type.starts_with("set")) {
        return Vec::new();
    }
    inner.split("','").map(|l| l.trim_matches('\'').replace("''", "'")).collect()
}

/// `CREATE TABLE` for a source table.
pub fn create_table_sql(t: &TargetName, def: &TableDef, key: &[String]) -> String {
    let mut cols: Vec<String> = def
        .columns
        .iter()
        .map(|c| {
            let in_key = key.contains(&c.name);
            let not_null = if !c.nullable || in_key { " NOT NULL" } else { " NULL" };
            format!("{} {}{not_null}", quote(&c.name), mysql_type(&c.ty, in_key))
        })
        .collect();
    if !key.is_empty() {
        cols.push(format!("PRIMARY KEY ({})", key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ")));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        qualified(t),
        cols.join(", ")
    )
}

/// The `ALTER TABLE` of one followed change; `None` for a narrowing one.
pub fn alter_sql(t: &TargetName, change: &SchemaChange) -> Option<String> {
    let table = qualified(t);
    Some(match change {
        SchemaChange::Add(c) => {
            format!("ALTER TABLE {table} ADD COLUMN {} {} NULL", quote(&c.name), mysql_type(&c.ty, false))
        }
        SchemaChange::Drop(name) => format!("ALTER TABLE {table} DROP COLUMN {}", quote(name)),
        SchemaChange::Widen(c) => {
            format!("ALTER TABLE {table} MODIFY COLUMN {} {} NULL", quote(&c.name), mysql_type(&c.ty, false))
        }
        SchemaChange::Narrow { .. } => return None,
    })
}

/// The audit table of `mode: append`.
pub fn create_append_table_sql(t: &TargetName) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (seq BIGINT AUTO_INCREMENT PRIMARY KEY, event_id VARCHAR(512) NOT NULL, \
         op CHAR(1) NOT NULL, source_db VARCHAR(255) NOT NULL, source_table VARCHAR(255) NOT NULL, position JSON, \
         ts_ms BIGINT, tx_id VARCHAR(255), `before` JSON, `after` JSON, \
         applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        qualified(t)
    )
}

/// The progress table and, when asked for, its apply log.
pub fn progress_tables_sql(progress: &str, log: Option<&str>) -> Vec<String> {
    let mut out = vec![format!(
        "CREATE TABLE IF NOT EXISTS {} (pipeline VARCHAR(191) NOT NULL, sink_id VARCHAR(191) NOT NULL, \
         source_id VARCHAR(255) NOT NULL, batch_seq BIGINT NOT NULL, position LONGTEXT, rejected LONGTEXT NOT NULL, \
         applied_at DATETIME(6) NOT NULL, PRIMARY KEY (pipeline, sink_id)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        quote(progress)
    )];
    if let Some(log) = log {
        out.push(format!(
            "CREATE TABLE IF NOT EXISTS {} (pipeline VARCHAR(191) NOT NULL, sink_id VARCHAR(191) NOT NULL, \
             batch_seq BIGINT NOT NULL, source_id VARCHAR(255) NOT NULL, first_event VARCHAR(512) NOT NULL, \
             last_event VARCHAR(512) NOT NULL, events INT NOT NULL, applied_at DATETIME(6) NOT NULL, \
             PRIMARY KEY (pipeline, sink_id, batch_seq)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            quote(log)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_statements() {
        assert_eq!(mysql_type(&ColumnType::UInt64, false), "BIGINT UNSIGNED");
        assert_eq!(mysql_type(&ColumnType::Decimal(None), false), "DECIMAL(65,30)");
        assert_eq!(mysql_type(&ColumnType::Text(None), true), "VARCHAR(255)");
        assert_eq!(mysql_type(&ColumnType::Enum(vec!["a'b".into(), "c".into()]), false), "ENUM('a''b','c')");
        assert_eq!(enum_labels("enum('a''b','c')"), vec!["a'b".to_string(), "c".into()]);
        let t = TargetName { schema: "r".into(), table: "we`ird".into() };
        let def = TableDef {
            columns: vec![ColumnDef { name: "id".into(), ty: ColumnType::Text(None), nullable: true }],
            key: vec!["id".into()],
        };
        assert!(create_table_sql(&t, &def, &def.key)
            .starts_with("CREATE TABLE IF NOT EXISTS `r`.`we``ird` (`id` VARCHAR(255) NOT NULL, PRIMARY KEY (`id`))"));
        let narrow = SchemaChange::Narrow { column: "v".into(), from: ColumnType::Int64, to: ColumnType::Int16 };
        assert_eq!(alter_sql(&t, &narrow), None);
    }
}
