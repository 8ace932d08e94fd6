//! Snapshots of PostgreSQL and MySQL/MariaDB tables. Each scenario is
//! written once over [`Db`], which holds the SQL dialect differences, and
//! runs as one test per database.

mod large;
mod modes;

use std::process::Command;

use crate::support::{mariadb_command, mariadb_sql, pg_command, pg_sql, service};

/// The source database a snapshot scenario runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    /// PostgreSQL (`scripts/services/postgres.sh`), source type `postgres`.
    Postgres,
    /// MariaDB (`scripts/services/mariadb.sh`), source type `mysql`.
    Mysql,
}

impl Db {
    /// Starts (idempotently) the server; returns its URL.
    pub fn start(self) -> String {
        service(match self {
            Db::Postgres => "postgres",
            Db::Mysql => "mariadb",
        })
    }

    /// The pipeline's source `type`.
    pub fn source_type(self) -> &'static str {
        match self {
            Db::Postgres => "postgres",
            Db::Mysql => "mysql",
        }
    }

    /// Runs SQL through the command-line client; rows one a line, columns
    /// separated by [`Db::column_separator`].
    pub fn sql(self, url: &str, sql: &str) -> String {
        match self {
            Db::Postgres => pg_sql(url, sql),
            Db::Mysql => mariadb_sql(url, sql),
        }
    }

    /// The command-line client, ready for more arguments or a piped stdin.
    pub fn command(self, url: &str) -> Command {
        match self {
            Db::Postgres => pg_command(url),
            Db::Mysql => mariadb_command(url),
        }
    }

    /// What separates the columns of [`Db::sql`]'s rows.
    pub fn column_separator(self) -> char {
        match self {
            Db::Postgres => '|',
            Db::Mysql => '\t',
        }
    }

    /// Runs a script through the client's stdin (each statement its own
    /// transaction); returns whether it succeeded.
    pub fn script(self, url: &str, sql: &str) -> bool {
        use std::io::Write as _;
        let mut child = self
            .command(url)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
        child.wait().unwrap().success()
    }
}

/// A number from the environment variable `name`, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
