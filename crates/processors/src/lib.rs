//! DeltaForge's built-in processors: the steps that run on every batch
//! between the source and the sinks, in the order a pipeline declares them.
//!
//! | `type:` | module | what it does |
//! |---|---|---|
//! | `filter` | [`filter`] | keep or drop events by op, table pattern and field predicates |
//! | `mask` | [`mask`] | drop, replace, HMAC-hash or truncate columns of chosen tables |
//! | `flatten` | [`flatten`] | lift nested JSON objects into `parent__child` columns |
//! | `javascript` | [`javascript`] | a sandboxed user function `process(events)` (QuickJS) |
//! | `outbox` | [`outbox`] | turn transactional-outbox rows into routed messages |
//!
//! ```yaml
//! spec:
//!   processors:
//!     - type: filter
//!       config: { ops: [c, u], include: [shop.orders] }
//!     - type: mask
//!       config:
//!         hmac_secret: "${MASK_SECRET}"
//!         rules:
//!           - { table: shop.customers, columns: { email: hash, ssn: drop } }
//! ```
//!
//! Every processor config accepts an optional `name` (default: its type),
//! used in metrics labels and error messages, and rejects unknown keys.
//! Each follows the component contract of [`deltaforge_core::component`]:
//! its config implements [`ComponentConfig`](deltaforge_core::ComponentConfig)
//! (offline checks; the registry calls them while validating a spec) and
//! its constructor returns a
//! [`BuildError`](deltaforge_core::component::BuildError). The registry
//! wraps each built processor with [`metered`] ([`Metered`]), which
//! records `deltaforge_processor_events_in_total`,
//! `deltaforge_processor_events_out_total`,
//! `deltaforge_processor_errors_total` and the
//! `deltaforge_processor_seconds` histogram, labelled `{pipeline, processor}`.
//!
//! This crate owns the transformations only. It must never do I/O (no
//! files, network or storage: a processor is a pure function of its batch
//! and its config), never reorder events of different transactions (the
//! checkpoint relies on source order), and never log column values or the
//! HMAC secret (they may be personal data or secrets).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
mod bench;
pub mod filter;
pub mod flatten;
pub mod javascript;
pub mod mask;
mod metered;
pub mod outbox;
#[cfg(test)]
pub(crate) mod testutil;
mod value;

#[cfg(test)]
mod tests;

pub use deltaforge_common::TablePattern;
pub use filter::{FilterConfig, FilterProcessor};
pub use flatten::{FlattenConfig, FlattenProcessor};
pub use javascript::{JavascriptConfig, JavascriptProcessor};
pub use mask::{MaskConfig, MaskProcessor};
pub use metered::{metered, Metered};
pub use outbox::{OutboxConfig, OutboxProcessor};
