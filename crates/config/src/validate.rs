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

use std::collections::HashMap;
use std::time::Duration;

use deltaforge_core::{BatchConfig, CommitPolicy, DeliveryConfig, DlqConfig, DlqOverflow};
use serde_json::{Map, Value};

use crate::error::ConfigError;
use crate::{Catalog, ComponentSpec, PipelineSpec, SinkSpec, SourceSpec};

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

const TOP_KEYS: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
const METADATA_KEYS: &[&str] = &["name", "tenant"];
const SPEC_KEYS: &[&str] = &["source", "processors", "sinks", "batch", "commit_policy", "dlq"];
const DLQ_KEYS: &[&str] = &["enabled", "capacity", "overflow"];
const COMPONENT_KEYS: &[&str] = &["type", "config"];
const BATCH_KEYS: &[&str] = &["max_events", "max_bytes", "max_ms", "respect_source_tx", "max_inflight"];
const POLICY_FIX: &str = "use `all`, `required`, `quorum(n)` or `{ quorum: n }` with n ≥ 1";

/// Name and source id of one document, for the cross-pipeline checks.
/// Collected even from documents with errors, so that duplicates are
/// reported in the same run.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub origin: String,
    pub name: Option<String>,
    pub source_id: Option<String>,
}

impl Identity {
    pub(crate) fn of(spec: &PipelineSpec) -> Self {
        Identity { origin: spec.origin.clone(), name: Some(spec.name.clone()), source_id: Some(spec.source.id.clone()) }
    }
}

/// Duplicate pipeline names and duplicate source ids; each duplicate is
/// reported on its later occurrence.
pub(crate) fn check_identities(ids: &[Identity]) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut names: HashMap<&str, &Identity> = HashMap::new();
    let mut sources: HashMap<&str, &Identity> = HashMap::new();
    for id in ids {
        if let Some(name) = id.name.as_deref() {
            match names.get(name) {
                Some(first) => errors.push(ConfigError {
                    origin: id.origin.clone(),
                    pipeline: Some(name.to_string()),
                    field: "metadata.name".into(),
                    message: format!(
                        "duplicate pipeline name `{name}`: defined in {} and again in {}",
                        first.origin, id.origin
                    ),
                    fix: "give each pipeline a unique metadata.name (it identifies the pipeline in the REST API)"
                        .into(),
                }),
                None => {
                    names.insert(name, id);
                }
            }
        }
        if let Some(source) = id.source_id.as_deref() {
            match sources.get(source) {
                Some(first) => errors.push(ConfigError {
                    origin: id.origin.clone(),
                    pipeline: id.name.clone(),
                    field: "spec.source.config.id".into(),
                    message: format!(
                        "duplicate source id `{source}`: already used by pipeline `{}` in {}; the source id is the checkpoint key",
                        first.name.as_deref().unwrap_or("<unnamed>"),
                        first.origin
                    ),
                    fix: "give each pipeline's source a unique config.id so their checkpoints do not overwrite each other"
                        .into(),
                }),
                None => {
                    sources.insert(source, id);
                }
            }
        }
    }
    errors
}

/// Result of checking one document.
pub(crate) struct Checked {
    /// The spec, when the document had no error.
    pub spec: Option<PipelineSpec>,
    /// Its identity, for the cross checks.
    pub identity: Identity,
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
    let name = doc.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string);
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

/// What the commit-policy checks need to know about the sinks.
struct SinkSummary {
    specs: Vec<SinkSpec>,
    /// Entries in the list, valid or not.
    count: usize,
    /// Whether any entry is required (explicitly or by default).
    any_required: bool,
}

struct Ctx<'a> {
    origin: &'a str,
    pipeline: Option<String>,
    /// Appended to messages when the pipeline has no name to point at.
    note: String,
    errors: Vec<ConfigError>,
}

fn join(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else if key.is_empty() {
        base.to_string()
    } else if key.starts_with('[') {
        format!("{base}{key}")
    } else {
        format!("{base}.{key}")
    }
}

/// A short description of a value for error messages.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.chars().count() > 40 => {
            format!("string \"{}…\"", s.chars().take(40).collect::<String>())
        }
        Value::String(s) => format!("string \"{s}\""),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate within edit distance 2 (case-insensitive).
fn suggest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let w = word.to_lowercase();
    candidates
        .iter()
        .map(|c| (distance(&w, &c.to_lowercase()), *c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn list(items: &[&str]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}

/// Whether `s` matches `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`.
pub(crate) fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty() && b.len() <= 63 && b.iter().all(|c| ok(c) || *c == b'-') && ok(&b[0]) && ok(&b[b.len() - 1])
}

/// A valid name resembling `s`, for the fix text.
fn sanitize_name(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out: String = out.trim_matches('-').chars().take(63).collect();
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "my-pipeline".into()
    } else {
        out
    }
}

/// `v` as an integer within `min..=max`.
fn int_in(v: &Value, min: u64, max: u64) -> Option<u64> {
    v.as_u64().filter(|n| (min..=max).contains(n))
}

impl Ctx<'_> {
    fn err(&mut self, field: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) {
        let mut message = message.into();
        message.push_str(&self.note);
        self.errors.push(ConfigError {
            origin: self.origin.to_string(),
            pipeline: self.pipeline.clone(),
            field: field.into(),
            message,
            fix: fix.into(),
        });
    }

    fn check_keys(&mut self, map: &Map<String, Value>, base: &str, allowed: &[&str]) {
        for key in map.keys() {
            if allowed.contains(&key.as_str()) {
                continue;
            }
            let fix = match suggest(key, allowed) {
                Some(s) => format!("did you mean `{s}`? rename `{key}` to `{s}`"),
                None => format!("remove `{key}` or use one of the allowed keys"),
            };
            self.err(join(base, key), format!("unknown key `{key}`; allowed: {}", allowed.join(", ")), fix);
        }
    }

    /// A required mapping-valued key.
    fn required_map<'v>(
        &mut self,
        v: Option<&'v Value>,
        field: &str,
        fix_missing: &str,
    ) -> Option<&'v Map<String, Value>> {
        match v {
            None | Some(Value::Null) => {
                self.err(field, "missing required key", fix_missing);
                None
            }
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                self.err(field, format!("expected a mapping, found {}", describe(other)), fix_missing);
                None
            }
        }
    }

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
            Some(Value::String(s)) => {
                self.err(
                    "metadata.name",
                    format!(
                        "invalid pipeline name \"{s}\": it must be 1-63 lower-case letters, digits or '-', \
                         starting and ending with a letter or digit (it is used in REST routes)"
                    ),
                    format!("rename it, e.g. `name: {}`", sanitize_name(s)),
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

    /// The `type` of a component, if present and known.
    fn component_type(&mut self, m: &Map<String, Value>, base: &str, what: &str, known: &[&str]) -> Option<String> {
        let field = join(base, "type");
        match m.get("type") {
            Some(Value::String(s)) if known.contains(&s.as_str()) => Some(s.clone()),
            None | Some(Value::Null) => {
                self.err(field, "missing required key", format!("add `type:` with one of: {}", list(known)));
                None
            }
            Some(Value::String(s)) => {
                let fix = match suggest(s, known) {
                    Some(k) => format!("did you mean `{k}`? set `type: {k}`"),
                    None => format!("use one of: {}", list(known)),
                };
                self.err(field, format!("unknown {what} type `{s}`; known: {}", list(known)), fix);
                None
            }
            Some(v) => {
                self.err(
                    field,
                    format!("expected a string, found {}", describe(v)),
                    format!("set `type:` to one of: {}", list(known)),
                );
                None
            }
        }
    }

    /// A required non-empty string `id` in a component config.
    fn config_id(&mut self, config: &Map<String, Value>, field: &str, fix: &str) -> Option<String> {
        match config.get("id") {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            None | Some(Value::Null) => {
                self.err(field, "missing required key", fix);
                None
            }
            Some(Value::String(_)) => {
                self.err(field, "must not be empty", fix);
                None
            }
            Some(v) => {
                self.err(field, format!("expected a string, found {}", describe(v)), fix);
                None
            }
        }
    }

    /// Reports a catalog error under `base` (a `...config` path).
    fn catalog_err(&mut self, base: &str, what: &str, kind: &str, (field, msg): (String, String)) {
        let path = join(base, &field);
        self.err(
            path.clone(),
            msg,
            format!("correct {path} for {what} type `{kind}` (see the `{kind}` {what} documentation)"),
        );
    }

    fn source(&mut self, v: Option<&Value>, catalog: &dyn Catalog) -> Option<SourceSpec> {
        let base = "spec.source";
        let m = self.required_map(v, base, "add `source:` with `type` and `config` (including `config.id`)")?;
        self.check_keys(m, base, COMPONENT_KEYS);
        let kind = self.component_type(m, base, "source", &catalog.source_types());
        let config = self.required_map(
            m.get("config"),
            "spec.source.config",
            "add `config:` with at least `id: <unique-source-id>`",
        )?;
        let id = self.config_id(
            config,
            "spec.source.config.id",
            "set `id: <unique-source-id>` under spec.source.config (it is the checkpoint key)",
        );
        let kind = kind?;
        let id = id?;
        if let Err(e) = catalog.check_source(&kind, config) {
            self.catalog_err("spec.source.config", "source", &kind, e);
        }
        Some(SourceSpec { kind, id, config: config.clone() })
    }

    fn processors(&mut self, v: Option<&Value>, catalog: &dyn Catalog) -> Vec<ComponentSpec> {
        let items = match v {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::Array(a)) => a,
            Some(other) => {
                self.err(
                    "spec.processors",
                    format!("expected a list, found {}", describe(other)),
                    "write `processors: []` or a list of `- type: ...` entries",
                );
                return Vec::new();
            }
        };
        let known = catalog.processor_types();
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let base = format!("spec.processors[{i}]");
            let Some(m) = item.as_object() else {
                self.err(
                    base,
                    format!("expected a mapping with `type` and `config`, found {}", describe(item)),
                    "write each processor as `- type: <type>` with an optional `config:` mapping",
                );
                continue;
            };
            self.check_keys(m, &base, COMPONENT_KEYS);
            let kind = self.component_type(m, &base, "processor", &known);
            let config_path = join(&base, "config");
            let config = match m.get("config") {
                None | Some(Value::Null) => Some(Map::new()),
                Some(Value::Object(c)) => Some(c.clone()),
                Some(other) => {
                    self.err(
                        config_path.clone(),
                        format!("expected a mapping, found {}", describe(other)),
                        "write the processor's settings as a `config:` mapping, or omit it",
                    );
                    None
                }
            };
            if let (Some(kind), Some(config)) = (kind, config) {
                match catalog.check_processor(&kind, &config) {
                    Ok(()) => out.push(ComponentSpec { kind, config }),
                    Err(e) => self.catalog_err(&config_path, "processor", &kind, e),
                }
            }
        }
        out
    }

    fn sinks(&mut self, v: Option<&Value>, catalog: &dyn Catalog) -> SinkSummary {
        let mut summary = SinkSummary { specs: Vec::new(), count: 0, any_required: false };
        let fix = "add `sinks:` with at least one `- type: <type>` entry whose `config` has an `id`";
        let items = match v {
            Some(Value::Array(a)) if !a.is_empty() => a,
            None | Some(Value::Null) => {
                self.err("spec.sinks", "missing required key; a pipeline needs at least one sink", fix);
                return summary;
            }
            Some(Value::Array(_)) => {
                self.err("spec.sinks", "must list at least one sink", fix);
                return summary;
            }
            Some(other) => {
                self.err("spec.sinks", format!("expected a list, found {}", describe(other)), fix);
                return summary;
            }
        };
        summary.count = items.len();
        let known = catalog.sink_types();
        let mut ids: HashMap<String, usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let base = format!("spec.sinks[{i}]");
            let Some(m) = item.as_object() else {
                self.err(
                    base,
                    format!("expected a mapping with `type` and `config`, found {}", describe(item)),
                    "write each sink as `- type: <type>` with a `config:` mapping holding its `id`",
                );
                summary.any_required = true;
                continue;
            };
            self.check_keys(m, &base, COMPONENT_KEYS);
            let kind = self.component_type(m, &base, "sink", &known);
            let config_path = join(&base, "config");
            let Some(config) =
                self.required_map(m.get("config"), &config_path, "add `config:` with at least `id: <sink-id>`")
            else {
                summary.any_required = true;
                continue;
            };
            let id_path = join(&config_path, "id");
            let id = self.config_id(
                config,
                &id_path,
                &format!("set `id: <sink-id>` under {config_path} (unique within the pipeline)"),
            );
            if let Some(id) = &id {
                match ids.get(id) {
                    Some(j) => self.err(
                        id_path.clone(),
                        format!("duplicate sink id `{id}`: also used by spec.sinks[{j}]"),
                        "give each sink of the pipeline a unique config.id",
                    ),
                    None => {
                        ids.insert(id.clone(), i);
                    }
                }
            }
            let required = match config.get("required") {
                None | Some(Value::Null) => Some(true),
                Some(Value::Bool(b)) => Some(*b),
                Some(other) => {
                    self.err(
                        join(&config_path, "required"),
                        format!("expected true or false, found {}", describe(other)),
                        "set `required: true` (the default) or `required: false`",
                    );
                    None
                }
            };
            summary.any_required |= required.unwrap_or(true);
            let delivery = self.delivery(config, &config_path);
            let own: Map<String, Value> = config
                .iter()
                .filter(|(k, _)| !SINK_COMMON_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let Some(kind) = kind else { continue };
            if let Err(e) = catalog.check_sink(&kind, &own) {
                self.catalog_err(&config_path, "sink", &kind, e);
                continue;
            }
            if let (Some(id), Some(required), Some(delivery)) = (id, required, delivery) {
                summary.specs.push(SinkSpec { kind, id, required, delivery, config: own });
            }
        }
        summary
    }

    /// The delivery settings among a sink's common keys.
    fn delivery(&mut self, config: &Map<String, Value>, base: &str) -> Option<DeliveryConfig> {
        let mut d = DeliveryConfig::default();
        let mut ok = true;
        let mut millis = |cx: &mut Self, key: &str, default: Duration, what: &str| -> Duration {
            match config.get(key) {
                None => default,
                Some(v) => match int_in(v, 1, u64::MAX) {
                    Some(n) => Duration::from_millis(n),
                    None => {
                        cx.err(
                            join(base, key),
                            format!("must be a positive integer (milliseconds), found {}", describe(v)),
                            format!(
                                "set `{key}` to the {what} in milliseconds (default {}), or remove it",
                                default.as_millis()
                            ),
                        );
                        ok = false;
                        default
                    }
                },
            }
        };
        d.timeout = millis(self, "timeout_ms", d.timeout, "time limit of one delivery attempt");
        d.initial_backoff = millis(self, "retry_initial_ms", d.initial_backoff, "first retry backoff");
        d.max_backoff = millis(self, "retry_max_ms", d.max_backoff, "longest retry backoff");
        if let Some(v) = config.get("max_attempts") {
            match int_in(v, 1, u64::from(u32::MAX)) {
                Some(n) => d.max_attempts = n as u32,
                None => {
                    self.err(
                        join(base, "max_attempts"),
                        format!("must be a positive integer, found {}", describe(v)),
                        format!("set `max_attempts` to at least 1 (default {}), or remove it", d.max_attempts),
                    );
                    ok = false;
                }
            }
        }
        if ok && d.initial_backoff > d.max_backoff {
            self.err(
                join(base, "retry_initial_ms"),
                format!(
                    "retry_initial_ms ({}) exceeds retry_max_ms ({})",
                    d.initial_backoff.as_millis(),
                    d.max_backoff.as_millis()
                ),
                "make retry_initial_ms at most retry_max_ms",
            );
            ok = false;
        }
        ok.then_some(d)
    }

    /// `spec.dlq: { enabled: true, capacity: 10000, overflow: block | drop_oldest | reject }`.
    fn dlq(&mut self, v: Option<&Value>) -> Option<DlqConfig> {
        let m = match v {
            None | Some(Value::Null) => return None,
            Some(Value::Object(m)) => m,
            Some(other) => {
                self.err(
                    "spec.dlq",
                    format!("expected a mapping, found {}", describe(other)),
                    "write `dlq: { enabled: true, capacity: 10000, overflow: block }` or remove it",
                );
                return None;
            }
        };
        self.check_keys(m, "spec.dlq", DLQ_KEYS);
        let mut cfg = DlqConfig::default();
        let enabled = match m.get("enabled") {
            None | Some(Value::Bool(true)) => true,
            Some(Value::Bool(false)) => false,
            Some(other) => {
                self.err(
                    "spec.dlq.enabled",
                    format!("expected true or false, found {}", describe(other)),
                    "set spec.dlq.enabled to true or false",
                );
                false
            }
        };
        if let Some(v) = m.get("capacity") {
            match int_in(v, 1, 100_000_000) {
                Some(n) => cfg.capacity = n,
                None => self.err(
                    "spec.dlq.capacity",
                    format!("must be a positive integer, found {}", describe(v)),
                    "set spec.dlq.capacity to the most events to keep, e.g. 10000 (the default)",
                ),
            }
        }
        if let Some(v) = m.get("overflow") {
            match v.as_str() {
                Some("block") => cfg.overflow = DlqOverflow::Block,
                Some("drop_oldest") => cfg.overflow = DlqOverflow::DropOldest,
                Some("reject") => cfg.overflow = DlqOverflow::Reject,
                _ => self.err(
                    "spec.dlq.overflow",
                    format!("unknown overflow policy {}", describe(v)),
                    "use one of block (default), drop_oldest, reject",
                ),
            }
        }
        enabled.then_some(cfg)
    }

    fn batch(&mut self, v: Option<&Value>) -> BatchConfig {
        let mut cfg = BatchConfig::default();
        let m = match v {
            None | Some(Value::Null) => return cfg,
            Some(Value::Object(m)) => m,
            Some(other) => {
                self.err(
                    "spec.batch",
                    format!("expected a mapping, found {}", describe(other)),
                    "write `batch:` as a mapping, e.g. `{ max_events: 2000, max_ms: 100 }`, or remove it",
                );
                return cfg;
            }
        };
        self.check_keys(m, "spec.batch", BATCH_KEYS);
        if let Some(v) = m.get("max_events") {
            match int_in(v, 1, MAX_BATCH_EVENTS) {
                Some(n) => cfg.max_events = n as usize,
                None => self.err(
                    "spec.batch.max_events",
                    format!("must be a positive integer no larger than {MAX_BATCH_EVENTS}, found {}", describe(v)),
                    format!("set spec.batch.max_events between 1 and {MAX_BATCH_EVENTS} (default 2000)"),
                ),
            }
        }
        if let Some(v) = m.get("max_bytes") {
            match int_in(v, MIN_BATCH_BYTES, usize::MAX as u64) {
                Some(n) => cfg.max_bytes = n as usize,
                None => self.err(
                    "spec.batch.max_bytes",
                    format!("must be an integer of at least {MIN_BATCH_BYTES} (bytes), found {}", describe(v)),
                    format!("set spec.batch.max_bytes to at least {MIN_BATCH_BYTES} (default 3145728)"),
                ),
            }
        }
        if let Some(v) = m.get("max_ms") {
            match int_in(v, 1, MAX_BATCH_MS) {
                Some(n) => cfg.max_wait = Duration::from_millis(n),
                None => self.err(
                    "spec.batch.max_ms",
                    format!(
                        "must be a positive integer no larger than {MAX_BATCH_MS} (milliseconds), found {}",
                        describe(v)
                    ),
                    format!("set spec.batch.max_ms between 1 and {MAX_BATCH_MS} (default 100)"),
                ),
            }
        }
        if let Some(v) = m.get("respect_source_tx") {
            match v {
                Value::Bool(b) => cfg.respect_source_tx = *b,
                other => self.err(
                    "spec.batch.respect_source_tx",
                    format!("expected true or false, found {}", describe(other)),
                    "set spec.batch.respect_source_tx to true (the default) or false",
                ),
            }
        }
        if let Some(v) = m.get("max_inflight") {
            match int_in(v, 1, MAX_INFLIGHT) {
                Some(n) => cfg.max_inflight = n as usize,
                None => self.err(
                    "spec.batch.max_inflight",
                    format!("must be an integer from 1 to {MAX_INFLIGHT}, found {}", describe(v)),
                    format!("set spec.batch.max_inflight between 1 and {MAX_INFLIGHT} (default 1)"),
                ),
            }
        }
        cfg
    }

    fn policy(&mut self, v: Option<&Value>, sinks: &SinkSummary) -> Option<CommitPolicy> {
        let field = "spec.commit_policy";
        let policy = match v {
            None | Some(Value::Null) => CommitPolicy::All,
            Some(Value::String(s)) => match parse_policy(s) {
                Ok(p) => p,
                Err((message, fix)) => {
                    self.err(field, message, fix);
                    return None;
                }
            },
            Some(Value::Object(m)) => {
                self.check_keys(m, field, &["quorum"]);
                match m.get("quorum") {
                    Some(q) => match q.as_u64().filter(|n| *n >= 1) {
                        Some(n) => CommitPolicy::Quorum(usize::try_from(n).unwrap_or(usize::MAX)),
                        None => {
                            self.err(
                                format!("{field}.quorum"),
                                format!("must be a positive integer, found {}", describe(q)),
                                POLICY_FIX,
                            );
                            return None;
                        }
                    },
                    None => {
                        self.err(field, "the mapping form needs the key `quorum`", POLICY_FIX);
                        return None;
                    }
                }
            }
            Some(other) => {
                self.err(field, format!("expected a string or a mapping, found {}", describe(other)), POLICY_FIX);
                return None;
            }
        };
        match policy {
            CommitPolicy::Quorum(n) if sinks.count > 0 && n > sinks.count => {
                self.err(
                    field,
                    format!(
                        "quorum({n}) needs {n} sink acknowledgements but the pipeline has only {} sink(s); the checkpoint could never advance",
                        sinks.count
                    ),
                    format!("lower the quorum to at most {} or add sinks", sinks.count),
                );
                None
            }
            CommitPolicy::Required if sinks.count > 0 && !sinks.any_required => {
                self.err(
                    field,
                    "commit policy `required` but every sink says `required: false`, so no acknowledgement would be awaited",
                    "mark at least one sink `required: true` (the default), or use `all` or `quorum(n)`",
                );
                None
            }
            p => Some(p),
        }
    }
}

/// Parses the string form of a commit policy; Err((message, fix)).
fn parse_policy(s: &str) -> Result<CommitPolicy, (String, String)> {
    let t = s.trim();
    match t {
        "all" => return Ok(CommitPolicy::All),
        "required" => return Ok(CommitPolicy::Required),
        _ => {}
    }
    if let Some(inner) = t.strip_prefix("quorum(").and_then(|r| r.strip_suffix(')')) {
        return match inner.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Ok(CommitPolicy::Quorum(n)),
            _ => Err((format!("invalid quorum `{t}`: n must be a positive integer"), POLICY_FIX.to_string())),
        };
    }
    let fix = match suggest(t, &["all", "required", "quorum(n)"]) {
        Some(k) => format!("did you mean `{k}`? {POLICY_FIX}"),
        None => POLICY_FIX.to_string(),
    };
    Err((format!("unknown commit policy `{t}`"), fix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "0", "orders-cdc", "a1-b2", &"x".repeat(63)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"x".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(sanitize_name("Orders_CDC!"), "orders-cdc");
        assert!(valid_name(&sanitize_name(&"Ab_".repeat(40))));
        assert_eq!(sanitize_name("__"), "my-pipeline");
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("max_event", BATCH_KEYS), Some("max_events"));
        assert_eq!(suggest("zzz", BATCH_KEYS), None);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn policy_strings() {
        assert_eq!(parse_policy("all"), Ok(CommitPolicy::All));
        assert_eq!(parse_policy(" required "), Ok(CommitPolicy::Required));
        assert_eq!(parse_policy("quorum( 2 )"), Ok(CommitPolicy::Quorum(2)));
        assert!(parse_policy("quorum(0)").is_err());
        assert!(parse_policy("quorum(x)").is_err());
        assert!(parse_policy("requird").unwrap_err().1.contains("did you mean `required`?"));
    }
}
