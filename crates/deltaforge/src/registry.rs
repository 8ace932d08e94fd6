//! The component registry: maps `type:` names in a pipeline spec to the
//! source, sink and processor implementations, validates their configs
//! offline, and builds them.
//!
//! Every config is read the same way, with
//! [`deltaforge_core::component::parse_config`] (nested field paths), and
//! checked with the component's `check`; build errors become fatal
//! [`SourceError`]s / [`SinkError`]s. The same config type gives the
//! component's JSON Schema ([`Registry::config_schemas`], assembled by
//! `schema_cmd`). Adding a component means one module in its crate and one
//! line in the table below (see CONTRIBUTING.md).
//! This module must never open a connection while validating, and never
//! let a build error carry a secret of the config (they go through
//! [`deltaforge_common::redact::scrub_secrets`]).

use deltaforge_config::{Catalog, ComponentSpec, PipelineSpec, SinkSpec};
use deltaforge_core::component::{check_config, parse_config, BuildError};
use deltaforge_core::{ComponentConfig, ConfigProblem, Processor, Sink, SinkError, Source, SourceError};
use deltaforge_processors::{
    metered, FilterConfig, FilterProcessor, FlattenConfig, FlattenProcessor, JavascriptConfig, JavascriptProcessor,
    MaskConfig, MaskProcessor, OutboxConfig, OutboxProcessor,
};
use deltaforge_sink_http::{HttpConfig, HttpSink};
use deltaforge_sink_kafka::{KafkaConfig, KafkaSink};
use deltaforge_sink_mysql::{MysqlSink, MysqlSinkConfig};
use deltaforge_sink_nats::{NatsConfig, NatsSink};
use deltaforge_sink_object_store::{ObjectStoreConfig, ObjectStoreSink};
use deltaforge_sink_postgres::{PostgresSink, PostgresSinkConfig, SinkPlace};
use deltaforge_sink_redis::{RedisConfig, RedisSink};
use deltaforge_sinks_basic::{DiscardConfig, DiscardSink, FileConfig, FileSink, StdoutConfig, StdoutSink};
use deltaforge_source_datagen::{DatagenConfig, DatagenSource};
use deltaforge_source_mysql::{MysqlConfig, MysqlSource};
use deltaforge_source_postgres::{PostgresConfig, PostgresSource};
use deltaforge_storage::StorageBackend;
use schemars::{Schema, SchemaGenerator};
use serde_json::{Map, Value};
use std::sync::Arc;

use crate::failpoint::FailpointSink;

type Config = Map<String, Value>;
/// Validates a component config offline.
type Check = fn(&Config) -> Result<(), ConfigProblem>;
/// Builds a sink from its config and where it runs.
type BuildSink = fn(&Config, &SinkContext<'_>) -> Result<Box<dyn Sink>, SinkError>;

/// What a sink is built with besides its own config.
pub struct SinkContext<'a> {
    /// The pipeline's name.
    pub pipeline: &'a str,
    /// The sink's configured id.
    pub sink_id: &'a str,
    /// The pipeline's tenant.
    pub tenant: &'a str,
    /// The pipeline's storage (the table sinks read the schema registry
    /// from it); `None` where a sink is built without one.
    pub storage: Option<&'a Arc<dyn StorageBackend>>,
}

impl SinkContext<'_> {
    /// Where a table sink runs.
    fn place(&self) -> SinkPlace {
        SinkPlace {
            pipeline: self.pipeline.into(),
            sink_id: self.sink_id.into(),
            tenant: self.tenant.into(),
            storage: self.storage.cloned(),
        }
    }
}

/// The offline check of a component on the contract: parse (nested field
/// paths) then [`ComponentConfig::check`].
fn check<C: ComponentConfig>(c: &Config) -> Result<(), ConfigProblem> {
    check_config::<C>(c).map(|_| ())
}

/// The JSON Schema of a config type, inline; the types it contains go to
/// the generator's definitions.
fn schema<C: ComponentConfig>(g: &mut SchemaGenerator) -> Schema {
    C::json_schema(g)
}

/// What the registry needs of a config type: its offline check and its
/// JSON Schema, both from the one type.
#[derive(Clone, Copy)]
struct Contract {
    check: Check,
    schema: fn(&mut SchemaGenerator) -> Schema,
}

/// The [`Contract`] of config type `C`.
const fn contract<C: ComponentConfig>() -> Contract {
    Contract { check: check::<C>, schema: schema::<C> }
}

/// The JSON Schemas of every registered component's config, by `type`, in
/// registry order (see `schema_cmd`, which builds the document's schema).
pub struct ConfigSchemas {
    /// Source types and their config schemas.
    pub sources: Vec<(&'static str, Schema)>,
    /// Sink types and their own config schemas (without the common keys).
    pub sinks: Vec<(&'static str, Schema)>,
    /// Processor types and their config schemas.
    pub processors: Vec<(&'static str, Schema)>,
}

struct SourceEntry {
    kind: &'static str,
    config: Contract,
    build: fn(&Config) -> Result<Box<dyn Source>, SourceError>,
}

struct SinkEntry {
    kind: &'static str,
    config: Contract,
    build: BuildSink,
}

struct ProcessorEntry {
    kind: &'static str,
    config: Contract,
    build: fn(&Config) -> Result<Box<dyn Processor>, BuildError>,
}

const SOURCES: &[SourceEntry] = &[
    SourceEntry {
        kind: "datagen",
        config: contract::<DatagenConfig>(),
        build: |c| Ok(Box::new(DatagenSource::new(parse_config(c)?)?)),
    },
    SourceEntry {
        kind: "mysql",
        config: contract::<MysqlConfig>(),
        build: |c| Ok(Box::new(MysqlSource::new(parse_config(c)?)?)),
    },
    SourceEntry {
        kind: "postgres",
        config: contract::<PostgresConfig>(),
        build: |c| Ok(Box::new(PostgresSource::new(parse_config(c)?)?)),
    },
];

const SINKS: &[SinkEntry] = &[
    SinkEntry {
        kind: "file",
        config: contract::<FileConfig>(),
        build: |c, _| Ok(Box::new(FileSink::open(parse_config(c)?)?)),
    },
    SinkEntry {
        kind: "stdout",
        config: contract::<StdoutConfig>(),
        build: |c, _| Ok(Box::new(StdoutSink::new(parse_config(c)?)?)),
    },
    SinkEntry {
        kind: "discard",
        config: contract::<DiscardConfig>(),
        build: |c, _| Ok(Box::new(DiscardSink::new(parse_config(c)?)?)),
    },
    SinkEntry {
        kind: "kafka",
        config: contract::<KafkaConfig>(),
        build: |c, x| Ok(Box::new(KafkaSink::new(parse_config(c)?, x.pipeline, x.sink_id)?)),
    },
    SinkEntry {
        kind: "redis",
        config: contract::<RedisConfig>(),
        build: |c, _| Ok(Box::new(RedisSink::new(parse_config(c)?)?)),
    },
    SinkEntry {
        kind: "nats",
        config: contract::<NatsConfig>(),
        build: |c, _| Ok(Box::new(NatsSink::new(parse_config(c)?)?)),
    },
    SinkEntry {
        kind: "http",
        config: contract::<HttpConfig>(),
        build: |c, _| Ok(Box::new(HttpSink::new(parse_config(c)?)?)),
    },
    SinkEntry {
        kind: "object_store",
        config: contract::<ObjectStoreConfig>(),
        build: |c, _| Ok(Box::new(ObjectStoreSink::new(parse_config(c)?)?)),
    },
    SinkEntry {
        kind: "postgres",
        config: contract::<PostgresSinkConfig>(),
        build: |c, x| Ok(Box::new(PostgresSink::new(parse_config(c)?, x.place())?)),
    },
    SinkEntry {
        kind: "mysql",
        config: contract::<MysqlSinkConfig>(),
        build: |c, x| Ok(Box::new(MysqlSink::new(parse_config(c)?, x.place())?)),
    },
];

// Every processor runs wrapped in its metrics (`metered`).
const PROCESSORS: &[ProcessorEntry] = &[
    ProcessorEntry {
        kind: "filter",
        config: contract::<FilterConfig>(),
        build: |c| Ok(metered(FilterProcessor::new(parse_config(c)?)?)),
    },
    ProcessorEntry {
        kind: "mask",
        config: contract::<MaskConfig>(),
        build: |c| Ok(metered(MaskProcessor::new(parse_config(c)?)?)),
    },
    ProcessorEntry {
        kind: "flatten",
        config: contract::<FlattenConfig>(),
        build: |c| Ok(metered(FlattenProcessor::new(parse_config(c)?)?)),
    },
    ProcessorEntry {
        kind: "javascript",
        config: contract::<JavascriptConfig>(),
        build: |c| Ok(metered(JavascriptProcessor::new(parse_config(c)?)?)),
    },
    ProcessorEntry {
        kind: "outbox",
        config: contract::<OutboxConfig>(),
        build: |c| Ok(metered(OutboxProcessor::new(parse_config(c)?)?)),
    },
];

/// A processor build error as the message the pipeline reports:
/// `processor KIND: config.FIELD: MESSAGE` (the field path is within the
/// processor's `config:` block).
fn processor_build_error(kind: &str, e: BuildError) -> String {
    match e {
        BuildError::Config(p) if !p.field.is_empty() => format!("processor {kind}: config.{}: {}", p.field, p.message),
        BuildError::Config(p) => format!("processor {kind}: {}", p.message),
        BuildError::Other(m) => format!("processor {kind}: {m}"),
    }
}

/// `message` with the secret values of `config` masked: a build error may
/// quote what a client library said about its settings.
fn scrubbed(message: String, config: &Config) -> String {
    deltaforge_common::redact::scrub_secrets(&message, &Value::Object(config.clone()))
}

/// The registry of every built-in component.
#[derive(Debug, Default, Clone, Copy)]
pub struct Registry;

impl Catalog for Registry {
    fn source_types(&self) -> Vec<&'static str> {
        SOURCES.iter().map(|e| e.kind).collect()
    }
    fn sink_types(&self) -> Vec<&'static str> {
        SINKS.iter().map(|e| e.kind).collect()
    }
    fn processor_types(&self) -> Vec<&'static str> {
        PROCESSORS.iter().map(|e| e.kind).collect()
    }
    fn check_source(&self, kind: &str, config: &Config) -> Result<(), ConfigProblem> {
        match SOURCES.iter().find(|e| e.kind == kind) {
            Some(e) => (e.config.check)(config),
            None => Err(ConfigProblem::new("", format!("unknown source type {kind:?}"))),
        }
    }
    fn check_sink(&self, kind: &str, config: &Config) -> Result<(), ConfigProblem> {
        match SINKS.iter().find(|e| e.kind == kind) {
            Some(e) => (e.config.check)(config),
            None => Err(ConfigProblem::new("", format!("unknown sink type {kind:?}"))),
        }
    }
    fn check_processor(&self, kind: &str, config: &Config) -> Result<(), ConfigProblem> {
        match PROCESSORS.iter().find(|e| e.kind == kind) {
            Some(e) => (e.config.check)(config),
            None => Err(ConfigProblem::new("", format!("unknown processor type {kind:?}"))),
        }
    }
}

impl Registry {
    /// The JSON Schema of every component's config, generated with `g`.
    pub fn config_schemas(&self, g: &mut SchemaGenerator) -> ConfigSchemas {
        ConfigSchemas {
            sources: SOURCES.iter().map(|e| (e.kind, (e.config.schema)(g))).collect(),
            sinks: SINKS.iter().map(|e| (e.kind, (e.config.schema)(g))).collect(),
            processors: PROCESSORS.iter().map(|e| (e.kind, (e.config.schema)(g))).collect(),
        }
    }

    /// Builds the source of a pipeline.
    pub fn build_source(&self, spec: &PipelineSpec) -> Result<Box<dyn Source>, SourceError> {
        let entry = SOURCES
            .iter()
            .find(|e| e.kind == spec.source.kind)
            .ok_or_else(|| SourceError::Fatal(format!("unknown source type {:?}", spec.source.kind)))?;
        (entry.build)(&spec.source.config).map_err(|e| match e {
            SourceError::Fatal(m) => SourceError::Fatal(scrubbed(m, &spec.source.config)),
            SourceError::Retryable(m) => SourceError::Retryable(scrubbed(m, &spec.source.config)),
        })
    }

    /// Builds one sink of `pipeline` (with its storage, when it runs with
    /// one), wrapped in its failpoint when one is configured.
    pub fn build_sink(
        &self,
        pipeline: &PipelineSpec,
        spec: &SinkSpec,
        storage: Option<&Arc<dyn StorageBackend>>,
    ) -> Result<Box<dyn Sink>, SinkError> {
        let entry = SINKS
            .iter()
            .find(|e| e.kind == spec.kind)
            .ok_or_else(|| SinkError::Fatal(format!("unknown sink type {:?}", spec.kind)))?;
        let ctx = SinkContext { pipeline: &pipeline.name, sink_id: &spec.id, tenant: &pipeline.tenant, storage };
        tracing::debug!(pipeline = ctx.pipeline, sink = ctx.sink_id, kind = entry.kind, "building sink");
        let sink = (entry.build)(&spec.config, &ctx).map_err(|e| match e {
            SinkError::Fatal(m) => SinkError::Fatal(scrubbed(m, &spec.config)),
            SinkError::Retryable(m) => SinkError::Retryable(scrubbed(m, &spec.config)),
            rejected => rejected,
        })?;
        let hooks = crate::failpoint::for_sink(&spec.id);
        Ok(if hooks.is_empty() { sink } else { Box::new(FailpointSink::new(sink, hooks)) })
    }

    /// Builds one processor, wrapped in its metrics; the error names the
    /// processor and the field at fault.
    pub fn build_processor(&self, spec: &ComponentSpec) -> Result<Box<dyn Processor>, String> {
        let entry = PROCESSORS
            .iter()
            .find(|e| e.kind == spec.kind)
            .ok_or_else(|| format!("unknown processor type {:?}", spec.kind))?;
        (entry.build)(&spec.config).map_err(|e| scrubbed(processor_build_error(entry.kind, e), &spec.config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sink(kind: &str, v: Value) -> Result<(), ConfigProblem> {
        Registry.check_sink(kind, v.as_object().unwrap())
    }

    #[test]
    fn checks_name_the_field_once() {
        let ConfigProblem { field, message } = sink("http", json!({"url": "ftp://h/"})).unwrap_err();
        assert_eq!(field, "url");
        assert!(message.starts_with("*** must start with http://"), "the value is never quoted: {message}");
        assert_eq!(
            sink("redis", json!({"uri": "redis://h", "stream": "s", "max_len": 1})).unwrap_err().field,
            "max_len"
        );
        assert_eq!(
            sink("nats", json!({"url": "nats://h:4222", "subject": "s", "stream": "a.b"})).unwrap_err().field,
            "stream"
        );
        assert_eq!(sink("kafka", json!({"brokers": "a:1", "topic": "${nope}"})).unwrap_err().field, "topic");
        assert_eq!(sink("file", json!({"path": 3})).unwrap_err().field, "path");
        assert!(sink("stdout", json!({})).is_ok());
        let source = json!({"id": "d", "rows_per_tx": 0});
        assert_eq!(Registry.check_source("datagen", source.as_object().unwrap()).unwrap_err().field, "rows_per_tx");
        assert_eq!(sink("smtp", json!({})).unwrap_err().message, "unknown sink type \"smtp\"");
    }

    #[test]
    fn processor_checks_name_the_field_and_reject_unknown_kinds() {
        let check = |kind: &str, v: Value| Registry.check_processor(kind, v.as_object().unwrap()).unwrap_err();
        let ConfigProblem { field, message } =
            check("mask", json!({"rules": [{"table": "a.b", "columns": {"x": "hsh"}}]}));
        assert_eq!(field, "rules[0].columns.x");
        assert!(!message.contains("hsh") && message.contains("expected"), "the value is never quoted: {message}");
        assert_eq!(check("filter", json!({"opz": ["c"]})).field, "opz");
        assert_eq!(check("outbox", json!({"tables": ["a.b"], "topic": "x", "ops": ["x"]})).field, "ops[0]");
        assert_eq!(check("nope", json!({})).message, "unknown processor type \"nope\"");
    }

    #[test]
    fn processors_are_built_metered_and_errors_name_the_field() {
        let spec = |kind: &str, v: Value| ComponentSpec { kind: kind.into(), config: v.as_object().unwrap().clone() };
        let p = Registry.build_processor(&spec("filter", json!({"name": "only-inserts", "ops": ["c"]}))).unwrap();
        assert_eq!(p.name(), "only-inserts");
        let err = Registry.build_processor(&spec("flatten", json!({"max_depth": 0}))).err().unwrap();
        assert!(err.starts_with("processor flatten: config.max_depth: must be between 1 and 64"), "{err}");
    }

    #[test]
    fn build_errors_are_fatal_and_name_the_field() {
        let http = SINKS.iter().find(|e| e.kind == "http").unwrap();
        let ctx = SinkContext { pipeline: "p", sink_id: "s", tenant: "t", storage: None };
        let config = json!({"url": "http://h/${nope}"});
        match (http.build)(config.as_object().unwrap(), &ctx) {
            Err(SinkError::Fatal(m)) => assert!(m.starts_with("url: unknown placeholder ${nope}"), "{m}"),
            Err(e) => panic!("expected a fatal error, got {e:?}"),
            Ok(_) => panic!("expected an error"),
        }
    }
}
