//! The component registry: maps `type:` names in a pipeline spec to the
//! source, sink and processor implementations, validates their configs
//! offline, and builds them.
//!
//! Every config is read the same way, with
//! [`deltaforge_core::component::parse_config`] (nested field paths), and
//! checked with the component's `check`; build errors become fatal
//! [`SourceError`]s / [`SinkError`]s. Adding a component means one module
//! in its crate and one line in the table below (see CONTRIBUTING.md).
//! This module must never open a connection while validating.

use deltaforge_config::{Catalog, ComponentSpec, PipelineSpec, SinkSpec};
use deltaforge_core::component::{check_config, parse_config};
use deltaforge_core::{ComponentConfig, ConfigProblem, Processor, Sink, SinkError, Source, SourceError};
use deltaforge_processors::{FilterConfig, FlattenConfig, JavascriptConfig, MaskConfig, OutboxConfig};
use deltaforge_sink_http::{HttpConfig, HttpSink};
use deltaforge_sink_kafka::{KafkaConfig, KafkaSink};
use deltaforge_sink_nats::{NatsConfig, NatsSink};
use deltaforge_sink_redis::{RedisConfig, RedisSink};
use deltaforge_sinks_basic::{DiscardConfig, DiscardSink, FileConfig, FileSink, StdoutConfig, StdoutSink};
use deltaforge_source_datagen::{DatagenConfig, DatagenSource};
use deltaforge_source_mysql::{MysqlConfig, MysqlSource};
use deltaforge_source_postgres::{PostgresConfig, PostgresSource};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

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
}

/// The offline check of a component on the contract: parse (nested field
/// paths) then [`ComponentConfig::check`].
fn check<C: ComponentConfig>(c: &Config) -> Result<(), ConfigProblem> {
    check_config::<C>(c).map(|_| ())
}

/// A `(field, message)` pair from a crate not yet on the component contract.
fn problem((field, message): (String, String)) -> ConfigProblem {
    ConfigProblem::new(field, message)
}

/// The offline check of a component whose `check` still returns
/// `(field, message)`: parsed like every other config, then its check.
fn check_pair<C: DeserializeOwned, T>(
    c: &Config,
    check: fn(&C) -> Result<T, (String, String)>,
) -> Result<(), ConfigProblem> {
    check(&parse_config::<C>(c)?).map(|_| ()).map_err(problem)
}

struct SourceEntry {
    kind: &'static str,
    check: Check,
    build: fn(&Config) -> Result<Box<dyn Source>, SourceError>,
}

struct SinkEntry {
    kind: &'static str,
    check: Check,
    build: BuildSink,
}

struct ProcessorEntry {
    kind: &'static str,
    check: Check,
    build: fn(&Config) -> Result<Box<dyn Processor>, String>,
}

const SOURCES: &[SourceEntry] = &[
    SourceEntry {
        kind: "datagen",
        check: check::<DatagenConfig>,
        build: |c| Ok(Box::new(DatagenSource::new(parse_config(c)?)?)),
    },
    SourceEntry {
        kind: "mysql",
        check: |c| check_pair(c, MysqlConfig::check),
        build: |c| Ok(Box::new(MysqlSource::new(parse_config(c)?)?)),
    },
    SourceEntry {
        kind: "postgres",
        check: |c| check_pair(c, PostgresConfig::check),
        build: |c| Ok(Box::new(PostgresSource::new(parse_config(c)?)?)),
    },
];

const SINKS: &[SinkEntry] = &[
    SinkEntry {
        kind: "file",
        check: check::<FileConfig>,
        build: |c, _| Ok(Box::new(FileSink::open(parse_config(c)?)?)),
    },
    SinkEntry {
        kind: "stdout",
        check: check::<StdoutConfig>,
        build: |c, _| Ok(Box::new(StdoutSink::new(parse_config(c)?)?)),
    },
    SinkEntry {
        kind: "discard",
        check: check::<DiscardConfig>,
        build: |c, _| Ok(Box::new(DiscardSink::new(parse_config(c)?)?)),
    },
    SinkEntry {
        kind: "kafka",
        check: check::<KafkaConfig>,
        build: |c, x| Ok(Box::new(KafkaSink::new(parse_config(c)?, x.pipeline, x.sink_id)?)),
    },
    SinkEntry {
        kind: "redis",
        check: check::<RedisConfig>,
        build: |c, _| Ok(Box::new(RedisSink::new(parse_config(c)?)?)),
    },
    SinkEntry {
        kind: "nats",
        check: check::<NatsConfig>,
        build: |c, _| Ok(Box::new(NatsSink::new(parse_config(c)?)?)),
    },
    SinkEntry {
        kind: "http",
        check: check::<HttpConfig>,
        build: |c, _| Ok(Box::new(HttpSink::new(parse_config(c)?)?)),
    },
];

// Processors are built by their crate (which wraps each in its metrics);
// their configs are checked here like every other component's.
const PROCESSORS: &[ProcessorEntry] = &[
    ProcessorEntry {
        kind: "filter",
        check: |c| check_pair(c, FilterConfig::check),
        build: |c| deltaforge_processors::build("filter", c),
    },
    ProcessorEntry {
        kind: "mask",
        check: |c| check_pair(c, MaskConfig::check),
        build: |c| deltaforge_processors::build("mask", c),
    },
    ProcessorEntry {
        kind: "flatten",
        check: |c| check_pair(c, FlattenConfig::check),
        build: |c| deltaforge_processors::build("flatten", c),
    },
    ProcessorEntry {
        kind: "javascript",
        check: |c| check_pair(c, JavascriptConfig::check),
        build: |c| deltaforge_processors::build("javascript", c),
    },
    ProcessorEntry {
        kind: "outbox",
        check: |c| check_pair(c, OutboxConfig::check),
        build: |c| deltaforge_processors::build("outbox", c),
    },
];

/// A config problem as the `(field, message)` pair [`Catalog`] reports.
fn pair(p: ConfigProblem) -> (String, String) {
    (p.field, p.message)
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
    fn check_source(&self, kind: &str, config: &Config) -> Result<(), (String, String)> {
        match SOURCES.iter().find(|e| e.kind == kind) {
            Some(e) => (e.check)(config).map_err(pair),
            None => Err((String::new(), format!("unknown source type {kind:?}"))),
        }
    }
    fn check_sink(&self, kind: &str, config: &Config) -> Result<(), (String, String)> {
        match SINKS.iter().find(|e| e.kind == kind) {
            Some(e) => (e.check)(config).map_err(pair),
            None => Err((String::new(), format!("unknown sink type {kind:?}"))),
        }
    }
    fn check_processor(&self, kind: &str, config: &Config) -> Result<(), (String, String)> {
        match PROCESSORS.iter().find(|e| e.kind == kind) {
            Some(e) => (e.check)(config).map_err(pair),
            None => Err((String::new(), format!("unknown processor type {kind:?}"))),
        }
    }
}

impl Registry {
    /// Builds the source of a pipeline.
    pub fn build_source(&self, spec: &PipelineSpec) -> Result<Box<dyn Source>, SourceError> {
        let entry = SOURCES
            .iter()
            .find(|e| e.kind == spec.source.kind)
            .ok_or_else(|| SourceError::Fatal(format!("unknown source type {:?}", spec.source.kind)))?;
        (entry.build)(&spec.source.config)
    }

    /// Builds one sink, wrapped in its failpoint when one is configured.
    pub fn build_sink(&self, pipeline: &str, spec: &SinkSpec) -> Result<Box<dyn Sink>, SinkError> {
        let entry = SINKS
            .iter()
            .find(|e| e.kind == spec.kind)
            .ok_or_else(|| SinkError::Fatal(format!("unknown sink type {:?}", spec.kind)))?;
        let ctx = SinkContext { pipeline, sink_id: &spec.id };
        tracing::debug!(pipeline = ctx.pipeline, sink = ctx.sink_id, kind = entry.kind, "building sink");
        let sink = (entry.build)(&spec.config, &ctx)?;
        let hooks = crate::failpoint::for_sink(&spec.id);
        Ok(if hooks.is_empty() { sink } else { Box::new(FailpointSink::new(sink, hooks)) })
    }

    /// Builds one processor.
    pub fn build_processor(&self, spec: &ComponentSpec) -> Result<Box<dyn Processor>, String> {
        let entry = PROCESSORS
            .iter()
            .find(|e| e.kind == spec.kind)
            .ok_or_else(|| format!("unknown processor type {:?}", spec.kind))?;
        (entry.build)(&spec.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sink(kind: &str, v: Value) -> Result<(), (String, String)> {
        Registry.check_sink(kind, v.as_object().unwrap())
    }

    #[test]
    fn checks_name_the_field_once() {
        let (field, message) = sink("http", json!({"url": "ftp://h/"})).unwrap_err();
        assert_eq!(field, "url");
        assert!(message.starts_with("ftp://h/ must start with http://"), "{message}");
        assert_eq!(sink("redis", json!({"uri": "redis://h", "stream": "s", "max_len": 1})).unwrap_err().0, "max_len");
        assert_eq!(
            sink("nats", json!({"url": "nats://h:4222", "subject": "s", "stream": "a.b"})).unwrap_err().0,
            "stream"
        );
        assert_eq!(sink("kafka", json!({"brokers": "a:1", "topic": "${nope}"})).unwrap_err().0, "topic");
        assert_eq!(sink("file", json!({"path": 3})).unwrap_err().0, "path");
        assert!(sink("stdout", json!({})).is_ok());
        let source = json!({"id": "d", "rows_per_tx": 0});
        assert_eq!(Registry.check_source("datagen", source.as_object().unwrap()).unwrap_err().0, "rows_per_tx");
        assert_eq!(sink("smtp", json!({})).unwrap_err().1, "unknown sink type \"smtp\"");
    }

    #[test]
    fn build_errors_are_fatal_and_name_the_field() {
        let http = SINKS.iter().find(|e| e.kind == "http").unwrap();
        let ctx = SinkContext { pipeline: "p", sink_id: "s" };
        let config = json!({"url": "http://h/${nope}"});
        match (http.build)(config.as_object().unwrap(), &ctx) {
            Err(SinkError::Fatal(m)) => assert!(m.starts_with("url: unknown placeholder ${nope}"), "{m}"),
            Err(e) => panic!("expected a fatal error, got {e:?}"),
            Ok(_) => panic!("expected an error"),
        }
    }
}
