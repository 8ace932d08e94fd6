//! The PostgreSQL source: large transactions, the snapshot over TLS, every
//! column type, DDL and setup errors.

mod large_tx;
mod snapshot_tls;
mod types;
