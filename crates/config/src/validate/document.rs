//! One whole pipeline document: the top-level keys, `apiVersion`, `kind`,
//! `metadata`, and the order in which the `spec` sections are checked,
//! assembled into a [`PipelineSpec`] when nothing failed.
//!
//! It must never check a section's contents itself: each section belongs
//! to its own module, and this one only walks the document to them.

use deltaforge_core::{BatchConfig, CommitPolicy, DlqConfig};
use serde_json::{Map, Value};

use super::collect::{describe, Ctx};
use super::identity::Identity;
use super::naming::valid_name;
use super::schema::{API_VERSION, DEFAULT_TENANT, KIND, METADATA_KEYS, SPEC_KEYS, TOP_KEYS};
use crate::error::ConfigError;
use crate::{Catalog, ComponentSpec, PipelineSpec, SinkSpec, SourceSpec};

/// Result of checking one document.
pub(crate) struct Checked {
    /// The spec, when the document had no error.
    pub(crate) spec: Option<PipelineSpec>,
    /// Its identity, for the cross checks.
    pub(crate) identity: Identity,
}

/// Validates one document (`index` of `count` in its origin), appending
/// every error found to `errors`.
pub(crate) fn check_document(
    doc: Value,
    index: usize,
    count: usize,
    origin: &str,
    catalog: &dyn Catalog,
    errors: &mut Vec<ConfigError>,
) -> Checked {
    // An invalid name is not shown with the errors: it may be a secret.
    let name = doc.pointer("/metadata/name").and_then(Value::as_str).filter(|n| valid_name(n)).map(str::to_string);
    let source_id = doc
        .pointer("/spec/source/config/id")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .map(str::to_string);
    let identity = Identity { origin: origin.to_string(), name: name.clone(), source_id };
    let note =
        if name.is_none() && count > 1 { format!(" (document {} of {count})", index + 1) } else { String::new() };
    let mut cx = Ctx { origin, pipeline: name, note, errors: Vec::new() };
    let parts = cx.document(&doc, catalog);
    let failed = !cx.errors.is_empty();
    errors.append(&mut cx.errors);
    let spec = match parts {
        Some(p) if !failed => Some(PipelineSpec {
            name: p.name,
            tenant: p.tenant,
            source: p.source,
            processors: p.processors,
            sinks: p.sinks,
            batch: p.batch,
            commit_policy: p.commit_policy,
            dlq: p.dlq,
            origin: origin.to_string(),
            document: doc,
        }),
        _ => None,
    };
    Checked { spec, identity }
}

struct Parts {
    name: String,
    tenant: String,
    source: SourceSpec,
    processors: Vec<ComponentSpec>,
    sinks: Vec<SinkSpec>,
    batch: BatchConfig,
    commit_policy: CommitPolicy,
    dlq: Option<DlqConfig>,
}

struct SpecParts {
    source: Option<SourceSpec>,
    processors: Vec<ComponentSpec>,
    sinks: Vec<SinkSpec>,
    batch: BatchConfig,
    commit_policy: Option<CommitPolicy>,
    dlq: Option<DlqConfig>,
}

impl Ctx<'_> {
    fn document(&mut self, doc: &Value, catalog: &dyn Catalog) -> Option<Parts> {
        let Some(top) = doc.as_object() else {
            self.err(
                "document",
                format!("expected a mapping with apiVersion, kind, metadata and spec, found {}", describe(doc)),
                "start the document with `apiVersion: deltaforge/v1` and `kind: Pipeline`",
            );
            return None;
        };
        self.check_keys(top, "", TOP_KEYS);
        match top.get("apiVersion") {
            Some(Value::String(s)) if s == API_VERSION => {}
            None => self.err("apiVersion", "missing required key", "add `apiVersion: deltaforge/v1`"),
            Some(v) => self.err(
                "apiVersion",
                format!("unsupported apiVersion {}; expected `{API_VERSION}`", describe(v)),
                "set `apiVersion: deltaforge/v1`",
            ),
        }
        match top.get("kind") {
            Some(Value::String(s)) if s == KIND => {}
            None => self.err("kind", "missing required key", "add `kind: Pipeline`"),
            Some(v) => {
                self.err("kind", format!("unsupported kind {}; expected `{KIND}`", describe(v)), "set `kind: Pipeline`")
            }
        }
        let (name, tenant) = self.metadata(top.get("metadata"));
        let spec = self
            .required_map(top.get("spec"), "spec", "add `spec:` with `source` and `sinks`")
            .map(|m| self.spec(m, catalog));
        let spec = spec?;
        Some(Parts {
            name: name?,
            tenant,
            source: spec.source?,
            processors: spec.processors,
            sinks: spec.sinks,
            batch: spec.batch,
            commit_policy: spec.commit_policy?,
            dlq: spec.dlq,
        })
    }

    fn metadata(&mut self, v: Option<&Value>) -> (Option<String>, String) {
        let default = DEFAULT_TENANT.to_string();
        let Some(m) = self.required_map(v, "metadata", "add `metadata:` with `name: <pipeline-name>`") else {
            return (None, default);
        };
        self.check_keys(m, "metadata", METADATA_KEYS);
        let name = match m.get("name") {
            Some(Value::String(s)) if valid_name(s) => Some(s.clone()),
            None | Some(Value::Null) => {
                self.err(
                    "metadata.name",
                    "missing required key",
                    "add `name: <pipeline-name>` (lower-case letters, digits and '-')",
                );
                None
            }
            Some(Value::String(_)) => {
                self.err(
                    "metadata.name",
                    "invalid pipeline name: it must be 1-63 lower-case letters, digits or '-', \
                     starting and ending with a letter or digit (it is used in REST routes)",
                    "rename it, e.g. `name: orders-cdc`",
                );
                None
            }
            Some(v) => {
                self.err(
                    "metadata.name",
                    format!("expected a string, found {}", describe(v)),
                    "set `name: <pipeline-name>` (lower-case letters, digits and '-')",
                );
                None
            }
        };
        let tenant = match m.get("tenant") {
            None | Some(Value::Null) => default,
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(v) => {
                self.err(
                    "metadata.tenant",
                    format!("expected a non-empty string, found {}", describe(v)),
                    "set `tenant: <name>` or remove it to use `default`",
                );
                default
            }
        };
        (name, tenant)
    }

    fn spec(&mut self, m: &Map<String, Value>, catalog: &dyn Catalog) -> SpecParts {
        self.check_keys(m, "spec", SPEC_KEYS);
        let source = self.source(m.get("source"), catalog);
        let processors = self.processors(m.get("processors"), catalog);
        let sinks = self.sinks(m.get("sinks"), catalog);
        let batch = self.batch(m.get("batch"));
        let commit_policy = self.policy(m.get("commit_policy"), &sinks);
        let dlq = self.dlq(m.get("dlq"));
        SpecParts { source, processors, sinks: sinks.specs, batch, commit_policy, dlq }
    }
}
