//! Which [`SinkReader`] reads a sink back, by sink type: one match, so a
//! new readable sink is one arm here and one module. The `file` sink is
//! read by the caller (it needs only a path); this module covers the
//! stream sinks (`kafka`, `redis`, `nats`) and the table sinks (`postgres`,
//! `mysql`), and says clearly why the others cannot be read back.
//!
//! This module only builds readers; it opens no connection (readers
//! connect on `load`) and never prints a sink's config values.

use deltaforge_core::component::parse_config;
use serde_json::{Map, Value};

use crate::error::VerifyError;
use crate::kafka_sink::KafkaSinkReader;
use crate::nats_sink::NatsSinkReader;
use crate::redis_sink::RedisSinkReader;
use crate::sink::SinkReader;
pub use crate::sink_context::SinkContext;
use crate::table_sink::TableSinkReader;

/// Sink types [`stream_sink_reader`] reads.
pub const STREAM_SINKS: &[&str] = &["kafka", "redis", "nats", "postgres", "mysql"];

/// The table sinks among them (read by [`TableSinkReader`]).
pub const TABLE_SINKS: &[&str] = &["postgres", "mysql"];

/// The reader of a stream or table sink of type `kind` with config
/// `config`; a clear [`VerifyError::Unsupported`] for a sink that cannot be
/// read back (an `http` sink, an append-mode table sink) or an unknown type.
pub fn stream_sink_reader(
    kind: &str,
    config: &Map<String, Value>,
    ctx: &SinkContext,
) -> Result<Box<dyn SinkReader>, VerifyError> {
    let bad_config = |p: deltaforge_core::ConfigProblem| ctx.err(format!("its {kind} config: {p}"));
    Ok(match kind {
        "kafka" => Box::new(KafkaSinkReader::new(ctx, parse_config(config).map_err(bad_config)?)?),
        "redis" => Box::new(RedisSinkReader::new(ctx, parse_config(config).map_err(bad_config)?)?),
        "nats" => Box::new(NatsSinkReader::new(ctx, parse_config(config).map_err(bad_config)?)?),
        "postgres" | "mysql" => Box::new(TableSinkReader::new(kind, config, ctx)?),
        "http" => {
            return Err(VerifyError::Unsupported(format!(
                "sink {} is an http sink: what it delivered cannot be read back (the receiver keeps it, not \
             DeltaForge), so it cannot be verified; verify the receiving system's own copy against the source, \
             or add a readable sink (file, kafka, redis, nats, an upsert table sink) to the pipeline and verify that one \
             with --sink",
                ctx.sink_id
            )))
        }
        other => {
            return Err(VerifyError::Unsupported(format!(
                "sink {} (type {other}) cannot be read back by verify; readable sink types: file, {}; verify \
             another sink of the pipeline with --sink",
                ctx.sink_id,
                STREAM_SINKS.join(", ")
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> SinkContext {
        SinkContext { sink_id: "out".into(), pipeline: "p".into(), tenant: "t".into(), source_id: "s".into() }
    }

    fn refusal(kind: &str, config: Value) -> String {
        match stream_sink_reader(kind, config.as_object().unwrap(), &ctx()) {
            Ok(_) => panic!("{kind} must be refused"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn http_and_unknown_sinks_are_refused_with_what_to_do() {
        let http = refusal("http", serde_json::json!({"url": "https://u:secret@h/x"}));
        assert!(http.contains("cannot be read back") && http.contains("--sink"), "{http}");
        assert!(!http.contains("secret"));
        let unknown = refusal("stdout", serde_json::json!({}));
        assert!(unknown.contains("type stdout") && unknown.contains("kafka, redis, nats"), "{unknown}");
        let bad = refusal("kafka", serde_json::json!({"brokers": "a:1"}));
        assert!(bad.contains("kafka config") && bad.contains("topic"), "{bad}");
        let append = refusal("postgres", serde_json::json!({"dsn": "postgres://u:secret@h/db", "mode": "append"}));
        assert!(append.contains("mode: append") && append.contains("--sink"), "{append}");
        assert!(!append.contains("secret"));
    }
}
