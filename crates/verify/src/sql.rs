//! [`SqlReader`]: a read-only SQL connection of either side of a
//! comparison (a PostgreSQL or MySQL/MariaDB source, a table sink's
//! target), for what verify computes in SQL: the catalogue's column types
//! and per-range row hashes ([`crate::hashing`]). The connections are the
//! sources' plain readers; every query runs in a `READ ONLY` transaction.
//!
//! This module owns the dialects' quoting and the catalogue query; it must
//! never write.

use async_trait::async_trait;
use deltaforge_source_mysql::plain_read as my;
use deltaforge_source_postgres::snapshot::plain as pg;

use crate::error::VerifyError;

/// Which SQL a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// MySQL / MariaDB.
    Mysql,
}

impl Dialect {
    /// A quoted identifier.
    pub fn ident(self, name: &str) -> String {
        match self {
            Dialect::Postgres => format!("\"{}\"", name.replace('"', "\"\"")),
            Dialect::Mysql => format!("`{}`", name.replace('`', "``")),
        }
    }

    /// A quoted `schema.table` (`db.table`).
    pub fn table(self, schema: &str, table: &str) -> String {
        format!("{}.{}", self.ident(schema), self.ident(table))
    }

    /// A string literal.
    pub fn literal(self, text: &str) -> String {
        match self {
            Dialect::Postgres => format!("'{}'", text.replace('\'', "''")),
            Dialect::Mysql => format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''")),
        }
    }

    /// The query listing a table's columns and their type names, in order.
    pub fn columns_sql(self, schema: &str, table: &str) -> String {
        let (s, t) = (self.literal(schema), self.literal(table));
        match self {
            Dialect::Postgres => format!(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = {s} AND table_name = {t} ORDER BY ordinal_position"
            ),
            Dialect::Mysql => format!(
                "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = {s} AND TABLE_NAME = {t} ORDER BY ORDINAL_POSITION"
            ),
        }
    }
}

/// A read-only SQL connection.
#[async_trait]
pub trait SqlReader: Send {
    /// Its dialect.
    fn dialect(&self) -> Dialect;

    /// One query's rows as text (`None`: NULL), in a read-only transaction.
    async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, VerifyError>;

    /// A table's columns with their type names (`schema.table` split).
    async fn columns(&mut self, schema: &str, table: &str) -> Result<Vec<(String, String)>, VerifyError> {
        let sql = self.dialect().columns_sql(schema, table);
        Ok(self
            .query(&sql)
            .await?
            .into_iter()
            .filter_map(|r| Some((r.first()?.clone()?, r.get(1)?.clone()?.to_ascii_lowercase())))
            .collect())
    }
}

#[async_trait]
impl SqlReader for pg::PlainReader {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, VerifyError> {
        Ok(self.read_only_query(sql).await?)
    }
}

#[async_trait]
impl SqlReader for my::PlainReader {
    fn dialect(&self) -> Dialect {
        Dialect::Mysql
    }

    async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, VerifyError> {
        Ok(self.read_only_query(sql).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::Dialect;

    #[test]
    fn quoting_per_dialect() {
        assert_eq!(Dialect::Postgres.table("a\"b", "t"), r#""a""b"."t""#);
        assert_eq!(Dialect::Mysql.table("d", "t`x"), "`d`.`t``x`");
        assert_eq!(Dialect::Mysql.literal("a'b\\"), r"'a''b\\'");
        assert_eq!(Dialect::Postgres.literal("a'b\\"), r"'a''b\'");
    }
}
