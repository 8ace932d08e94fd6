//! This binary's helpers: the files of `tests/it/support` that it uses
//! (not the HTTP recorder) and the testkit functions it needs, so that it
//! compiles no helper it does not use. See `tests/it/support/mod.rs`.

#[path = "../it/support/common.rs"]
mod common;
#[path = "../it/support/sinks.rs"]
pub mod sinks;
#[path = "../it/support/spec.rs"]
pub mod spec;
#[path = "../it/support/storage.rs"]
pub mod storage;

pub use common::*;
pub use deltaforge_testkit::{
    free_port, http, mariadb_sql, metric_value, pg_command, pg_sql, service, service_action, unique_suffix, wait_for,
    Deltaforge,
};
pub use sinks::read_jsonl;
pub use spec::Pipeline;
