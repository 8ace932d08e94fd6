//! The validated pipeline spec ([`PipelineSpec`] and its parts) and the
//! [`Catalog`] through which component configs are checked.
//!
//! This module owns the spec's data types only; it must never parse,
//! expand or validate text (the `load` and `validate` modules do).

use deltaforge_common::redact;
use deltaforge_core::ConfigProblem;
use serde_json::{Map, Value};

/// One validated pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSpec {
    /// `metadata.name`: unique, used in REST routes.
    pub name: String,
    /// `metadata.tenant`, `"default"` when absent.
    pub tenant: String,
    /// `spec.source`.
    pub source: SourceSpec,
    /// `spec.processors`, in order.
    pub processors: Vec<ComponentSpec>,
    /// `spec.sinks`, in order (never empty).
    pub sinks: Vec<SinkSpec>,
    /// `spec.batch`, defaults filled in; `max_ms` becomes `max_wait`.
    pub batch: deltaforge_core::BatchConfig,
    /// `spec.commit_policy`, default `all`.
    pub commit_policy: deltaforge_core::CommitPolicy,
    /// `spec.dlq` when `enabled: true`: events rejected for their own fault
    /// are set aside in the dead-letter queue instead of stopping the pipeline.
    pub dlq: Option<deltaforge_core::DlqConfig>,
    /// The file path (or `<api>`, or the origin given to [`parse_str`]) it came from.
    pub origin: String,
    /// The whole document after environment expansion. It may hold
    /// secrets: pass it through [`redact`] before showing it.
    pub document: Value,
}

impl PipelineSpec {
    /// The document with secrets masked, for display.
    pub fn redacted_document(&self) -> Value {
        redact(&self.document)
    }
}

/// The pipeline's source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSpec {
    /// The source `type`, one of [`Catalog::source_types`].
    pub kind: String,
    /// `config.id`: the checkpoint key, unique across pipelines.
    pub id: String,
    /// The full config mapping, including `id`.
    pub config: Map<String, Value>,
}

/// A processor (or any component with just a type and a config).
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentSpec {
    /// The component `type`.
    pub kind: String,
    /// Its config mapping (empty when absent).
    pub config: Map<String, Value>,
}

/// One sink of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSpec {
    /// The sink `type`, one of [`Catalog::sink_types`].
    pub kind: String,
    /// `config.id`, unique within the pipeline.
    pub id: String,
    /// `config.required` (default `true`): whether the `required` commit
    /// policy waits for this sink.
    pub required: bool,
    /// From the optional `config` keys `timeout_ms`, `retry_initial_ms`,
    /// `retry_max_ms` and `max_attempts`; [`deltaforge_core::DeliveryConfig::default`] otherwise.
    pub delivery: deltaforge_core::DeliveryConfig,
    /// The sink's own config: the `config` mapping without the
    /// [`SINK_COMMON_KEYS`] (`id`, `required`, `timeout_ms`,
    /// `retry_initial_ms`, `retry_max_ms`, `max_attempts`).
    pub config: Map<String, Value>,
}

/// Validates one component's own config keys; implemented by the binary's
/// registry. Implementations must be offline (no connections, no files).
pub trait Catalog {
    /// Known source `type`s.
    fn source_types(&self) -> Vec<&'static str>;
    /// Known sink `type`s.
    fn sink_types(&self) -> Vec<&'static str>;
    /// Known processor `type`s.
    fn processor_types(&self) -> Vec<&'static str>;
    /// Checks a source config (including `id`). The problem's field is a
    /// path within the config, e.g. `rate` with "invalid type: string
    /// \"x\", expected u64"; an empty field points at the config itself.
    fn check_source(&self, kind: &str, config: &Map<String, Value>) -> Result<(), ConfigProblem>;
    /// Checks a sink config, without the [`SINK_COMMON_KEYS`]. Err as for [`Catalog::check_source`].
    fn check_sink(&self, kind: &str, config: &Map<String, Value>) -> Result<(), ConfigProblem>;
    /// Checks a processor config. Err as for [`Catalog::check_source`].
    fn check_processor(&self, kind: &str, config: &Map<String, Value>) -> Result<(), ConfigProblem>;
}
