//! The harness's shared helpers, the one place tests take them from:
//!
//! - [`spec`]: the pipeline-spec builder;
//! - [`storage`]: reading the SQLite storage file (the only SQL of the harness);
//! - [`sinks`]: reading back each sink (file, Kafka, Redis, NATS);
//! - [`http_recorder`]: the HTTP server the `http` sink posts to;
//! - `common.rs`, re-exported here: the binary under test ([`BIN`],
//!   [`start`], [`RunArgs`]), unique names, datagen's expected keys, and — re-exported from the
//!   `deltaforge-testkit` crate — starting the servers, SQL clients,
//!   waiting, the API client, metrics parsing and the TCP fault proxy.
//!
//! The `disruptive` binary has a support module of its own
//! (`tests/disruptive/support.rs`) that includes the files of this directory
//! it uses, so that neither binary compiles helpers it does not use.

mod common;
pub mod http_recorder;
pub mod sinks;
pub mod spec;
pub mod storage;

pub use common::*;
pub use deltaforge_testkit::{
    fault_proxy, free_port, http, http_json, http_raw, mariadb_command, mariadb_sql, metric_value, pg_cleanup,
    pg_command, pg_lsn, pg_sql, pg_tls_ca, service, service_env, unique_suffix, wait_for, Deltaforge, Rng,
};
pub use sinks::read_jsonl;
pub use spec::Pipeline;
