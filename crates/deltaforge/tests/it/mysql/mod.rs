//! The MySQL/MariaDB source: DDL mid-stream, every column type, setup errors,
//! snapshot resume keys of every kind.

mod ddl;
mod snapshot_keys;
mod types;
