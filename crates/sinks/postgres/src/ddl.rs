//! The target's schema: reading a table's columns and key from the
//! catalogue, creating a missing table from the source schema, following
//! added, dropped and widened columns, and the progress tables.
//!
//! Every statement here runs inside the batch's transaction (PostgreSQL
//! DDL is transactional), so a crash never leaves a column added for rows
//! that were not written. Names are always quoted ([`quote`]); nothing
//! here ever puts a row value into SQL.

use deltaforge_table_core::types::from_pg_name;
use deltaforge_table_core::{ColumnDef, ColumnType, SchemaChange, TableDef, TargetName};
use tokio_postgres::Transaction;

/// A quoted identifier (`"a""b"`).
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"`.
pub fn qualified(t: &TargetName) -> String {
    format!("{}.{}", quote(&t.schema), quote(&t.table))
}

/// The PostgreSQL column type for a neutral type.
pub fn pg_type(ty: &ColumnType) -> String {
    match ty {
        ColumnType::Bool => "boolean".into(),
        ColumnType::Int16 => "smallint".into(),
        ColumnType::Int32 => "integer".into(),
        ColumnType::Int64 => "bigint".into(),
        ColumnType::UInt64 => "numeric(20,0)".into(),
        ColumnType::Float32 => "real".into(),
        ColumnType::Float64 => "double precision".into(),
        ColumnType::Decimal(Some((p, s))) if *p >= 1 && *p <= 1000 => format!("numeric({p},{s})"),
        ColumnType::Decimal(_) => "numeric".into(),
        ColumnType::Text(Some(n)) if *n >= 1 && *n <= 10_485_760 => format!("varchar({n})"),
        ColumnType::Text(_) | ColumnType::Enum(_) | ColumnType::Set(_) => "text".into(),
        ColumnType::Bytes | ColumnType::Geometry => "bytea".into(),
        ColumnType::Json => "jsonb".into(),
        ColumnType::Uuid => "uuid".into(),
        ColumnType::Date => "date".into(),
        ColumnType::Time => "time".into(),
        ColumnType::TimeTz => "timetz".into(),
        ColumnType::Timestamp => "timestamp".into(),
        ColumnType::TimestampTz => "timestamptz".into(),
        ColumnType::Interval => "interval".into(),
        ColumnType::Bit(Some(n)) if *n >= 1 => format!("bit({n})"),
        ColumnType::Bit(_) => "varbit".into(),
        ColumnType::Array(inner) => match inner.as_ref() {
            ColumnType::Array(_) => pg_type(inner),
            other => format!("{}[]", pg_type(other)),
        },
        ColumnType::Other(name) => match name.as_str() {
            "inet" | "cidr" | "macaddr" | "macaddr8" | "money" | "xml" | "tsvector" | "point" | "int4range"
            | "int8range" | "numrange" | "tsrange" | "tstzrange" | "daterange" => name.clone(),
            _ => "text".into(),
        },
    }
}

/// A target table as the catalogue describes it.
#[derive(Debug, Clone)]
pub struct TargetTable {
    /// Columns with their types.
    pub def: TableDef,
}

/// Reads a table's columns and primary key; `None` when it does not exist.
pub async fn describe(tx: &Transaction<'_>, t: &TargetName) -> Result<Option<TargetTable>, tokio_postgres::Error> {
    let name = qualified(t);
    let exists = tx.query_one("SELECT to_regclass($1)::oid", &[&name]).await?;
    let Some(oid) = exists.get::<_, Option<u32>>(0) else { return Ok(None) };
    let rows = tx
        .query(
            "SELECT a.attname::text, t.typname::text, a.atttypmod, a.attnotnull \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid],
        )
        .await?;
    let mut def = TableDef::default();
    for r in rows {
        let (name, typname, typmod, notnull): (String, String, i32, bool) = (r.get(0), r.get(1), r.get(2), r.get(3));
        def.columns.push(ColumnDef { name, ty: from_pg_name(&typname, typmod), nullable: !notnull });
    }
    let keys = tx
        .query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.n",
            &[&oid],
        )
        .await?;
    def.key = keys.iter().map(|r| r.get(0)).collect();
    Ok(Some(TargetTable { def }))
}

/// `CREATE TABLE` for a source table (columns, types, NOT NULL, key).
pub fn create_table_sql(t: &TargetName, def: &TableDef, key: &[String]) -> String {
    let mut cols: Vec<String> = def
        .columns
        .iter()
        .map(|c| {
            let not_null = if !c.nullable || key.contains(&c.name) { " NOT NULL" } else { "" };
            format!("{} {}{not_null}", quote(&c.name), pg_type(&c.ty))
        })
        .collect();
    if !key.is_empty() {
        cols.push(format!("PRIMARY KEY ({})", key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ")));
    }
    format!("CREATE TABLE IF NOT EXISTS {} ({})", qualified(t), cols.join(", "))
}

/// The `ALTER TABLE` for one followed change; `None` for a narrowing one.
pub fn alter_sql(t: &TargetName, change: &SchemaChange) -> Option<String> {
    let table = qualified(t);
    Some(match change {
        SchemaChange::Add(c) => {
            format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {} {}", quote(&c.name), pg_type(&c.ty))
        }
        SchemaChange::Drop(name) => format!("ALTER TABLE {table} DROP COLUMN IF EXISTS {}", quote(name)),
        SchemaChange::Widen(c) => {
            let ty = pg_type(&c.ty);
            format!("ALTER TABLE {table} ALTER COLUMN {} TYPE {ty} USING {}::{ty}", quote(&c.name), quote(&c.name))
        }
        SchemaChange::Narrow { .. } => return None,
    })
}

/// The audit table of `mode: append`.
pub fn create_append_table_sql(t: &TargetName) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (seq bigserial PRIMARY KEY, event_id text NOT NULL, op char(1) NOT NULL, \
         source_db text NOT NULL, source_table text NOT NULL, position jsonb, ts_ms bigint, tx_id text, \
         before jsonb, after jsonb, applied_at timestamptz NOT NULL DEFAULT now())",
        qualified(t)
    )
}

/// The progress table and, when asked for, its apply log.
pub fn progress_tables_sql(progress: &str, log: Option<&str>) -> Vec<String> {
    let mut out = vec![format!(
        "CREATE TABLE IF NOT EXISTS {} (pipeline text NOT NULL, sink_id text NOT NULL, source_id text NOT NULL, \
         batch_seq bigint NOT NULL, position jsonb, rejected jsonb NOT NULL DEFAULT '[]', \
         applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (pipeline, sink_id))",
        quote(progress)
    )];
    if let Some(log) = log {
        out.push(format!(
            "CREATE TABLE IF NOT EXISTS {} (pipeline text NOT NULL, sink_id text NOT NULL, batch_seq bigint NOT NULL, \
             source_id text NOT NULL, first_event text NOT NULL, last_event text NOT NULL, events integer NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (pipeline, sink_id, batch_seq))",
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
        assert_eq!(pg_type(&ColumnType::UInt64), "numeric(20,0)");
        assert_eq!(pg_type(&ColumnType::Array(Box::new(ColumnType::Array(Box::new(ColumnType::Int32))))), "integer[]");
        assert_eq!(pg_type(&ColumnType::Decimal(Some((65, 30)))), "numeric(65,30)");
        assert_eq!(pg_type(&ColumnType::Other("mood".into())), "text");
        let t = TargetName { schema: "r".into(), table: "we\"ird".into() };
        let def = TableDef {
            columns: vec![
                ColumnDef { name: "id".into(), ty: ColumnType::Int64, nullable: true },
                ColumnDef { name: "v".into(), ty: ColumnType::Json, nullable: true },
            ],
            key: vec!["id".into()],
        };
        assert_eq!(
            create_table_sql(&t, &def, &def.key),
            r#"CREATE TABLE IF NOT EXISTS "r"."we""ird" ("id" bigint NOT NULL, "v" jsonb, PRIMARY KEY ("id"))"#
        );
        let narrow = SchemaChange::Narrow { column: "v".into(), from: ColumnType::Int64, to: ColumnType::Int16 };
        assert_eq!(alter_sql(&t, &narrow), None);
        assert!(alter_sql(&t, &SchemaChange::Drop("v".into())).unwrap().ends_with("DROP COLUMN IF EXISTS \"v\""));
    }
}
