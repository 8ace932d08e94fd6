//! Structural validation of one parsed pipeline document, and the
//! cross-pipeline uniqueness checks.
//!
//! This module owns the shape of a `deltaforge/v1` `Pipeline` document: the
//! allowed keys at every structural level, the batch limits, the commit
//! policy syntax and the sink common keys. It walks the parsed
//! `serde_json::Value` itself so that every error names its field path, and
//! it collects every error instead of stopping at the first.
//!
//! Component configs are checked only through the [`Catalog`]; this module
//! must never know about a concrete source, sink or processor, and must
//! never open a connection, a file or a socket.
//!
//! The work is split by concern, and the submodules depend on each other in
//! one direction only (this facade re-exports and defines nothing):
//!
//! - [`schema`]: the fixed vocabulary (supported `apiVersion`/`kind`,
//!   allowed keys per level, batch limits); a leaf.
//! - [`naming`]: pipeline-name rules and "did you mean" suggestions; a leaf.
//! - [`collect`]: the error collector every check writes to, with the
//!   helpers shared by all sections (field paths, value descriptions).
//! - [`identity`]: the cross-pipeline uniqueness checks.
//! - [`components`], [`sinks`], [`batch`], [`policy`]: one section of
//!   `spec` each.
//! - [`document`]: one whole document, from the top-level keys down,
//!   calling the section checks in order.

mod batch;
mod collect;
mod components;
mod document;
mod identity;
mod naming;
mod policy;
mod schema;
mod sinks;

pub(crate) use document::check_document;
pub(crate) use identity::{check_identities, Identity};
pub use schema::{
    API_VERSION, BATCH_KEYS, COMPONENT_KEYS, DEFAULT_TENANT, DLQ_KEYS, KIND, MAX_BATCH_EVENTS, MAX_BATCH_MS,
    MAX_DLQ_CAPACITY, MAX_INFLIGHT, METADATA_KEYS, MIN_BATCH_BYTES, PIPELINE_NAME_PATTERN, SINK_COMMON_KEYS, SPEC_KEYS,
    TOP_KEYS,
};
