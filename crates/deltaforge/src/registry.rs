//! The component registry: maps `type:` names in a pipeline spec to the
//! source, sink and processor implementations, validates their configs
//! offline, and builds them.
//!
//! Adding a component means one module in its crate and one line in each
//! table below. This module must never open a connection while validating.

use deltaforge_config::{Catalog, ComponentSpec, PipelineSpec, SinkSpec};
use deltaforge_core::{Processor, Sink, SinkError, Source, SourceError};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::failpoint::FailpointSink;

type Config = Map<String, Value>;
/// Builds a sink from its config and where it runs.
type BuildSink = fn(&Config, &SinkContext<'_>) -> Result<Box<dyn Sink>, SinkError>;

/// What a sink is built with besides its own config.
pub struct SinkContext<'a> {
    /// The pipeline's name.
    pub pipeline: &'a str,
    /// The sink's configured id.
    pub sink_id: &'a str,
}

/// Parses a component config into its typed struct, naming the field at fault.
fn parse<T: DeserializeOwned>(config: &Config) -> Result<T, (String, String)> {
    serde_json::from_value(Value::Object(config.clone())).map_err(|e| {
        let msg = e.to_string();
        // serde names unknown and missing fields between backticks.
        let field = msg.split('`').nth(1).unwrap_or("").to_string();
        (field, msg)
    })
}

struct SourceEntry {
    kind: &'static str,
    check: fn(&Config) -> Result<(), (String, String)>,
    build: fn(&Config) -> Result<Box<dyn Source>, SourceError>,
}

struct SinkEntry {
    kind: &'static str,
    check: fn(&Config) -> Result<(), (String, String)>,
    build: BuildSink,
}

struct ProcessorEntry {
    kind: &'static str,
    check: fn(&Config) -> Result<(), (String, String)>,
    build: fn(&Config) -> Result<Box<dyn Processor>, String>,
}

const SOURCES: &[SourceEntry] = &[
    SourceEntry {
        kind: "datagen",
        check: |c| parse::<deltaforge_source_datagen::DatagenConfig>(c)?.check(),
        build: |c| {
            let cfg = parse::<deltaforge_source_datagen::DatagenConfig>(c).map_err(|(_, m)| SourceError::Fatal(m))?;
            Ok(Box::new(deltaforge_source_datagen::DatagenSource::new(cfg)))
        },
    },
    SourceEntry {
        kind: "mysql",
        check: |c| parse::<deltaforge_source_mysql::MysqlConfig>(c)?.check(),
        build: |c| {
            let cfg = parse::<deltaforge_source_mysql::MysqlConfig>(c).map_err(|(_, m)| SourceError::Fatal(m))?;
            Ok(Box::new(deltaforge_source_mysql::MysqlSource::new(cfg)?))
        },
    },
    SourceEntry {
        kind: "postgres",
        check: |c| parse::<deltaforge_source_postgres::PostgresConfig>(c)?.check(),
        build: |c| {
            let cfg = parse::<deltaforge_source_postgres::PostgresConfig>(c).map_err(|(_, m)| SourceError::Fatal(m))?;
            Ok(Box::new(deltaforge_source_postgres::PostgresSource::new(cfg)?))
        },
    },
];

const SINKS: &[SinkEntry] = &[
    SinkEntry {
        kind: "file",
        check: |c| parse::<deltaforge_sinks_basic::FileConfig>(c).map(|_| ()),
        build: |c, _ctx| {
            let cfg = parse::<deltaforge_sinks_basic::FileConfig>(c).map_err(|(_, m)| SinkError::Fatal(m))?;
            Ok(Box::new(deltaforge_sinks_basic::FileSink::open(cfg)?))
        },
    },
    SinkEntry {
        kind: "stdout",
        check: |c| parse::<deltaforge_sinks_basic::StdoutConfig>(c).map(|_| ()),
        build: |c, _ctx| {
            let cfg = parse::<deltaforge_sinks_basic::StdoutConfig>(c).map_err(|(_, m)| SinkError::Fatal(m))?;
            Ok(Box::new(deltaforge_sinks_basic::StdoutSink::new(cfg)))
        },
    },
    SinkEntry {
        kind: "discard",
        check: |c| parse::<deltaforge_sinks_basic::DiscardConfig>(c).map(|_| ()),
        build: |c, _ctx| {
            let cfg = parse::<deltaforge_sinks_basic::DiscardConfig>(c).map_err(|(_, m)| SinkError::Fatal(m))?;
            Ok(Box::new(deltaforge_sinks_basic::DiscardSink::new(cfg)))
        },
    },
    SinkEntry {
        kind: "kafka",
        check: |c| parse::<deltaforge_sink_kafka::KafkaConfig>(c)?.check(),
        build: |c, ctx| {
            let cfg = parse::<deltaforge_sink_kafka::KafkaConfig>(c).map_err(|(_, m)| SinkError::Fatal(m))?;
            Ok(Box::new(deltaforge_sink_kafka::KafkaSink::new(cfg, ctx.pipeline, ctx.sink_id)?))
        },
    },
    SinkEntry {
        kind: "redis",
        check: |c| {
            parse::<deltaforge_sink_redis::RedisConfig>(c)?.check().map_err(|e| (e.field().to_string(), e.to_string()))
        },
        build: |c, _ctx| {
            let cfg = parse::<deltaforge_sink_redis::RedisConfig>(c).map_err(|(_, m)| SinkError::Fatal(m))?;
            Ok(Box::new(deltaforge_sink_redis::RedisSink::new(cfg).map_err(|e| SinkError::Fatal(e.to_string()))?))
        },
    },
    SinkEntry {
        kind: "nats",
        check: |c| {
            parse::<deltaforge_sink_nats::NatsConfig>(c)?.check().map_err(|e| (e.field().to_string(), e.to_string()))
        },
        build: |c, _ctx| {
            let cfg = parse::<deltaforge_sink_nats::NatsConfig>(c).map_err(|(_, m)| SinkError::Fatal(m))?;
            Ok(Box::new(deltaforge_sink_nats::NatsSink::new(cfg).map_err(|e| SinkError::Fatal(e.to_string()))?))
        },
    },
    SinkEntry {
        kind: "http",
        check: |c| {
            parse::<deltaforge_sink_http::HttpConfig>(c)?.check().map_err(|e| (e.field().to_string(), e.to_string()))
        },
        build: |c, _ctx| {
            let cfg = parse::<deltaforge_sink_http::HttpConfig>(c).map_err(|(_, m)| SinkError::Fatal(m))?;
            Ok(Box::new(deltaforge_sink_http::HttpSink::new(cfg)?))
        },
    },
];

const PROCESSORS: &[ProcessorEntry] = &[
    ProcessorEntry {
        kind: "filter",
        check: |c| deltaforge_processors::check("filter", c),
        build: |c| deltaforge_processors::build("filter", c),
    },
    ProcessorEntry {
        kind: "mask",
        check: |c| deltaforge_processors::check("mask", c),
        build: |c| deltaforge_processors::build("mask", c),
    },
    ProcessorEntry {
        kind: "flatten",
        check: |c| deltaforge_processors::check("flatten", c),
        build: |c| deltaforge_processors::build("flatten", c),
    },
    ProcessorEntry {
        kind: "javascript",
        check: |c| deltaforge_processors::check("javascript", c),
        build: |c| deltaforge_processors::build("javascript", c),
    },
    ProcessorEntry {
        kind: "outbox",
        check: |c| deltaforge_processors::check("outbox", c),
        build: |c| deltaforge_processors::build("outbox", c),
    },
];

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
            Some(e) => (e.check)(config),
            None => Err((String::new(), format!("unknown source type {kind:?}"))),
        }
    }
    fn check_sink(&self, kind: &str, config: &Config) -> Result<(), (String, String)> {
        match SINKS.iter().find(|e| e.kind == kind) {
            Some(e) => (e.check)(config),
            None => Err((String::new(), format!("unknown sink type {kind:?}"))),
        }
    }
    fn check_processor(&self, kind: &str, config: &Config) -> Result<(), (String, String)> {
        match PROCESSORS.iter().find(|e| e.kind == kind) {
            Some(e) => (e.check)(config),
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
