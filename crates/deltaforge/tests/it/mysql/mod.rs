//! The MySQL/MariaDB source: DDL mid-stream, every column type, setup errors.

mod ddl;
mod types;
