//! Small, dependency-light helpers that every DeltaForge component may use
//! without depending on the config crate or on each other:
//!
//! - [`redact`]: the one set of rules for hiding secrets (DSN/URL
//!   passwords and tokens, secret-named keys) in anything shown to a user:
//!   the REST API, logs and every error message.
//! - [`table_pattern`]: the one `db.table` wildcard pattern that sources
//!   and processors select tables with.
//! - [`time`]: calendar arithmetic for formatting timestamps on hot paths.
//! - [`synthetic`]: the deterministic synthetic rows of the datagen source
//!   and the benchmarks.
//!
//! This crate must never depend on another DeltaForge crate: it sits at the
//! bottom of the dependency graph.

pub mod redact;
pub mod synthetic;
pub mod table_pattern;
pub mod time;

pub use redact::{is_secret_key, is_secret_param, redact, redact_dsn, scrub_secrets, scrub_values};
pub use table_pattern::TablePattern;
