//! The pipeline-spec builder: a Rust API for the `deltaforge/v1 Pipeline`
//! documents the tests run, instead of hand-written YAML copies.
//!
//! The builder renders JSON, which is YAML too (the config loader reads
//! JSON flow syntax as YAML), so the documents it writes mean exactly what
//! the equivalent hand-written YAML meant. Source, processor and sink
//! configurations are given as [`serde_json::Value`]s (`json!({...})`).

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

/// One pipeline document under construction.
#[derive(Clone, Debug)]
pub struct Pipeline {
    name: String,
    tenant: Option<String>,
    source: Value,
    processors: Vec<Value>,
    sinks: Vec<Value>,
    extra: Map<String, Value>,
}

impl Pipeline {
    /// A pipeline called `name`, with a `datagen` source of no config until
    /// [`Pipeline::source`] sets one.
    pub fn new(name: impl Into<String>) -> Self {
        Pipeline {
            name: name.into(),
            tenant: None,
            source: json!({ "type": "datagen", "config": {} }),
            processors: Vec::new(),
            sinks: Vec::new(),
            extra: Map::new(),
        }
    }

    /// Sets `metadata.tenant`.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Sets the source: its `type` and its `config`.
    pub fn source(mut self, kind: &str, config: Value) -> Self {
        self.source = json!({ "type": kind, "config": config });
        self
    }

    /// Sets a `postgres` source `id` capturing `public.{table}` through its
    /// own slot and publication (both named `slot`), acknowledging every
    /// second: the source most PostgreSQL tests use.
    pub fn postgres_table_source(self, id: &str, dsn: &str, table: &str, slot: &str) -> Self {
        self.source(
            "postgres",
            json!({ "id": id, "dsn": dsn, "tables": [format!("public.{table}")], "slot": slot, "publication": slot, "status_interval_secs": 1 }),
        )
    }

    /// Appends a processor (its whole entry, e.g. `{type: filter, ...}`).
    #[allow(dead_code, reason = "used by the `it` binary only")]
    pub fn processor(mut self, processor: Value) -> Self {
        self.processors.push(processor);
        self
    }

    /// Appends a sink: its `type` and its `config`.
    pub fn sink(mut self, kind: &str, config: Value) -> Self {
        self.sinks.push(json!({ "type": kind, "config": config }));
        self
    }

    /// Appends a `file` sink with id `id` writing JSON Lines to `path`,
    /// plus any further config keys of `extra` (an object or `null`).
    pub fn file_sink(self, id: &str, path: &Path, extra: Value) -> Self {
        let mut config = json!({ "id": id, "path": path.display().to_string() });
        if let Value::Object(more) = extra {
            config.as_object_mut().expect("object").extend(more);
        }
        self.sink("file", config)
    }

    /// Sets `spec.batch`.
    pub fn batch(self, max_events: u64, max_ms: u64) -> Self {
        self.spec("batch", json!({ "max_events": max_events, "max_ms": max_ms }))
    }

    /// Sets `spec.commit_policy` (`all`, `required`, ...).
    pub fn commit_policy(self, policy: &str) -> Self {
        self.spec("commit_policy", json!(policy))
    }

    /// Sets any other `spec` field (e.g. `dlq`).
    pub fn spec(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_string(), value);
        self
    }

    /// The document as a JSON value.
    pub fn to_value(&self) -> Value {
        let mut metadata = json!({ "name": self.name });
        if let Some(t) = &self.tenant {
            metadata["tenant"] = json!(t);
        }
        let mut spec = json!({ "source": self.source, "sinks": self.sinks });
        if !self.processors.is_empty() {
            spec["processors"] = json!(self.processors);
        }
        spec.as_object_mut().expect("object").extend(self.extra.clone());
        json!({ "apiVersion": "deltaforge/v1", "kind": "Pipeline", "metadata": metadata, "spec": spec })
    }

    /// The document as text for a config file or an API body.
    pub fn text(&self) -> String {
        self.to_value().to_string()
    }

    /// Writes the document to `path` and returns `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> PathBuf {
        write_all(path, std::slice::from_ref(self))
    }
}

/// Writes several documents to one file (separated by `---`) and returns
/// its path.
pub fn write_all(path: impl AsRef<Path>, pipelines: &[Pipeline]) -> PathBuf {
    let path = path.as_ref().to_path_buf();
    std::fs::write(&path, documents(pipelines)).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// Several documents as one multi-document text.
pub fn documents(pipelines: &[Pipeline]) -> String {
    pipelines.iter().map(|p| format!("{}\n", p.text())).collect::<Vec<_>>().join("---\n")
}

/// `base` with the keys of `extra` added (both JSON objects; `extra` may be
/// `null`), for a test's variations of one source or sink config.
pub fn merged(mut base: Value, extra: Value) -> Value {
    if let Value::Object(more) = extra {
        base.as_object_mut().expect("object").extend(more);
    }
    base
}
