//! DeltaForge's pipeline spec: environment expansion, YAML parsing and
//! validation of `deltaforge/v1` `Pipeline` documents.
//!
//! ```yaml
//! apiVersion: deltaforge/v1
//! kind: Pipeline
//! metadata: { name: orders-cdc, tenant: acme }
//! spec:
//!   source: { type: postgres, config: { id: pg-orders, dsn: "${PG_DSN}" } }
//!   processors: []
//!   sinks:
//!     - type: file
//!       config: { id: out, path: ./out/orders.jsonl, required: true }
//!   batch: { max_events: 2000, max_bytes: 3145728, max_ms: 100, respect_source_tx: true }
//!   commit_policy: all        # all | required | quorum(2) | { quorum: 2 }
//! ```
//!
//! This crate owns the spec's syntax and its structural rules; it turns
//! text into [`PipelineSpec`]s or into a complete list of [`ConfigError`]s,
//! each naming the origin, the pipeline, the field path and a fix.
//! Component configs are checked only through the caller's [`Catalog`].
//!
//! It is pure and offline: it must never open a connection, start a
//! component, write a file, or read anything but the spec files it is
//! pointed at; environment variables are read only through the lookup
//! function it is given. It must never print or log secret values: use
//! [`redact`] before displaying a document.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod env;
mod error;
mod load;
mod spec;
mod validate;

pub use deltaforge_common::redact::{is_secret_key, redact, redact_dsn};
pub use env::{expand_env, expand_env_with_access, EnvAccess};
pub use error::{ConfigError, ConfigErrors};
pub use load::{check_unique, load_path, parse_str, parse_str_with_env_access};
pub use spec::{Catalog, ComponentSpec, PipelineSpec, SinkSpec, SourceSpec};
pub use validate::{
    API_VERSION, BATCH_KEYS, COMPONENT_KEYS, DEFAULT_TENANT, DLQ_KEYS, KIND, MAX_BATCH_EVENTS, MAX_BATCH_MS,
    MAX_DLQ_CAPACITY, MAX_INFLIGHT, METADATA_KEYS, MIN_BATCH_BYTES, PIPELINE_NAME_PATTERN, SINK_COMMON_KEYS, SPEC_KEYS,
    TOP_KEYS,
};

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;
