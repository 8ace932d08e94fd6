//! The fixed vocabulary of a `deltaforge/v1` `Pipeline` document: the
//! supported `apiVersion` and `kind`, the allowed keys at each structural
//! level, and the batch limits. The JSON Schema of the spec is built from
//! these constants too, so they are public.
//!
//! It is data only: it must never hold checking logic, so that every other
//! validation module can depend on it without a cycle.

/// The only supported `apiVersion`.
pub const API_VERSION: &str = "deltaforge/v1";
/// The only supported `kind`.
pub const KIND: &str = "Pipeline";
/// Tenant used when `metadata.tenant` is absent.
pub const DEFAULT_TENANT: &str = "default";
/// Keys of a sink's `config` that DeltaForge itself interprets; they are
/// removed before the sink's own config is checked and stored.
pub const SINK_COMMON_KEYS: &[&str] =
    &["id", "required", "timeout_ms", "retry_initial_ms", "retry_max_ms", "max_attempts"];

/// Largest `spec.batch.max_events`.
pub const MAX_BATCH_EVENTS: u64 = 1_000_000;
/// Smallest `spec.batch.max_bytes`.
pub const MIN_BATCH_BYTES: u64 = 1024;
/// Largest `spec.batch.max_ms`.
pub const MAX_BATCH_MS: u64 = 3_600_000;
/// Largest `spec.batch.max_inflight`.
pub const MAX_INFLIGHT: u64 = 64;
/// Largest `spec.dlq.capacity`.
pub const MAX_DLQ_CAPACITY: u64 = 100_000_000;
/// What a valid `metadata.name` matches, as a regular expression (the rule
/// the naming module implements by hand).
pub const PIPELINE_NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

/// Keys of the document itself.
pub const TOP_KEYS: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
/// Keys of `metadata`.
pub const METADATA_KEYS: &[&str] = &["name", "tenant"];
/// Keys of `spec`.
pub const SPEC_KEYS: &[&str] = &["source", "processors", "sinks", "batch", "commit_policy", "dlq"];
/// Keys of `spec.dlq`.
pub const DLQ_KEYS: &[&str] = &["enabled", "capacity", "overflow"];
/// Keys of a source, processor or sink entry.
pub const COMPONENT_KEYS: &[&str] = &["type", "config"];
/// Keys of `spec.batch`.
pub const BATCH_KEYS: &[&str] = &["max_events", "max_bytes", "max_ms", "respect_source_tx", "max_inflight"];
