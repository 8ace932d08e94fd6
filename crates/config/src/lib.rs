//! DeltaForge's pipeline spec: environment expansion, YAML parsing and
//! validation of `deltaforge/v1` `Pipeline` documents.
//!
//! ```yaml
//! apiVersion: deltaforge/v1
//! kind: Pipeline
//! metadata: { name: orders-cdc, tenant: acme }
//! spec:
//!   source: { type: postgres, config: { id: pg-orders, dsn: "${PG_DSN}" } }
//!   processors: []
//!   sinks:
//!     - type: file
//!       config: { id: out, path: ./out/orders.jsonl, required: true }
//!   batch: { max_events: 2000, max_bytes: 3145728, max_ms: 100, respect_source_tx: true }
//!   commit_policy: all        # all | required | quorum(2) | { quorum: 2 }
//! ```
//!
//! This crate owns the spec's syntax and its structural rules; it turns
//! text into [`PipelineSpec`]s or into a complete list of [`ConfigError`]s,
//! each naming the origin, the pipeline, the field path and a fix.
//! Component configs are checked only through the caller's [`Catalog`].
//!
//! It is pure and offline: it must never open a connection, start a
//! component, write a file, or read anything but the spec files it is
//! pointed at; environment variables are read only through the lookup
//! function it is given. It must never print or log secret values: use
//! [`redact`] before displaying a document.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod env;
mod error;
mod validate;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub use env::expand_env;
pub use error::{ConfigError, ConfigErrors};
pub use deltaforge_common::redact::{is_secret_key, redact, redact_dsn};
pub use validate::{
    API_VERSION, DEFAULT_TENANT, KIND, MAX_BATCH_EVENTS, MAX_BATCH_MS, MAX_INFLIGHT, MIN_BATCH_BYTES, SINK_COMMON_KEYS,
};

use validate::Identity;

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
    /// Checks a source config (including `id`).
    /// Err((field_within_config, message)) e.g. ("rate", "invalid type: string \"x\", expected u64");
    /// an empty field points at the config itself.
    fn check_source(&self, kind: &str, config: &Map<String, Value>) -> Result<(), (String, String)>;
    /// Checks a sink config, without the [`SINK_COMMON_KEYS`]. Err as for [`Catalog::check_source`].
    fn check_sink(&self, kind: &str, config: &Map<String, Value>) -> Result<(), (String, String)>;
    /// Checks a processor config. Err as for [`Catalog::check_source`].
    fn check_processor(&self, kind: &str, config: &Map<String, Value>) -> Result<(), (String, String)>;
}

/// Accumulates specs, identities and errors over several texts.
#[derive(Default)]
struct Loader {
    specs: Vec<PipelineSpec>,
    identities: Vec<Identity>,
    errors: Vec<ConfigError>,
}

fn yaml_options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    // YAML 1.2 booleans only: `no`, `on`, `yes` stay strings (table names!).
    o.strict_booleans = true;
    // `id: 0123` stays a string rather than becoming the number 123.
    o.leading_zero_numbers_as_strings = true;
    o.with_snippet = false;
    o.emit_comments = false;
    o
}

/// A YAML parser error as a [`ConfigError`].
fn yaml_error(origin: &str, e: &serde_saphyr::Error) -> ConfigError {
    let plain = e.without_snippet().to_string();
    let (field, mut message) = match e.location() {
        Some(l) => {
            let suffix = format!(" at line {}, column {}", l.line(), l.column());
            let msg = plain.strip_suffix(&suffix).unwrap_or(&plain).to_string();
            (format!("line {}, column {}", l.line(), l.column()), msg)
        }
        None => ("document".to_string(), plain),
    };
    let fix = if message.starts_with("duplicate mapping key") {
        if let Some(i) = message.find(", set DuplicateKeyPolicy") {
            message.truncate(i);
        }
        "remove or rename one of the duplicate keys"
    } else {
        "fix the YAML syntax there (indentation, quotes, brackets, `key: value` pairs)"
    };
    ConfigError::new(origin, field, format!("invalid YAML: {message}"), fix)
}

impl Loader {
    fn add_text(&mut self, text: &str, origin: &str, env: &dyn Fn(&str) -> Option<String>, catalog: &dyn Catalog) {
        let expanded = match expand_env(text, origin, env) {
            Ok(t) => t,
            Err(e) => {
                self.errors.extend(e.0);
                return;
            }
        };
        let docs: Vec<Value> = match serde_saphyr::from_multiple_with_options(&expanded, yaml_options()) {
            Ok(d) => d,
            Err(e) => {
                self.errors.push(yaml_error(origin, &e));
                return;
            }
        };
        let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
        let count = docs.len();
        for (i, doc) in docs.into_iter().enumerate() {
            let checked = validate::check_document(doc, i, count, origin, catalog, &mut self.errors);
            self.identities.push(checked.identity);
            self.specs.extend(checked.spec);
        }
    }

    fn finish(mut self) -> Result<Vec<PipelineSpec>, ConfigErrors> {
        self.errors.extend(validate::check_identities(&self.identities));
        if self.errors.is_empty() {
            Ok(self.specs)
        } else {
            Err(ConfigErrors(self.errors))
        }
    }
}

/// The spec files of `path`: itself, or the `*.yaml` / `*.yml` files of a
/// directory (non-recursive, hidden files skipped), sorted by name.
fn spec_files(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let origin = path.display().to_string();
    let io_err = |e: std::io::Error| {
        ConfigError::new(
            origin.clone(),
            "path",
            format!("cannot read: {e}"),
            "check that the config file or directory exists and is readable",
        )
    };
    let meta = std::fs::metadata(path).map_err(io_err)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io_err)? {
        let p = entry.map_err(io_err)?.path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let yaml = p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
        if yaml && !name.starts_with('.') && p.is_file() {
            files.push(p);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Expands environment variables, then parses and validates every
/// pipeline under `path`.
///
/// `path` may be a file or a directory: then every `*.yaml` / `*.yml` file
/// in it (non-recursive, hidden files skipped) is read, sorted by name; a
/// directory without such files yields no pipelines. Each file may hold
/// several YAML documents. Cross-pipeline checks (duplicate names,
/// duplicate source ids) span all files. Every error of every file is
/// collected (a file with environment-expansion errors is not parsed
/// further); on any error no spec is returned.
pub fn load_path(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    catalog: &dyn Catalog,
) -> Result<Vec<PipelineSpec>, ConfigErrors> {
    let files = spec_files(path)?;
    let mut loader = Loader::default();
    for file in files {
        let origin = file.display().to_string();
        match std::fs::read_to_string(&file) {
            Ok(text) => loader.add_text(&text, &origin, env, catalog),
            Err(e) => loader.errors.push(ConfigError::new(
                origin,
                "file",
                format!("cannot read: {e}"),
                "check that the file is readable UTF-8 text",
            )),
        }
    }
    loader.finish()
}

/// Expands environment variables in `text`, then parses and validates
/// every pipeline document in it (several `---`-separated documents are
/// allowed; empty ones are skipped). `origin` names the text in errors and
/// in [`PipelineSpec::origin`] (e.g. `<api>`).
///
/// ```
/// use deltaforge_config::{parse_str, Catalog};
/// use serde_json::{Map, Value};
///
/// struct Demo;
/// impl Catalog for Demo {
///     fn source_types(&self) -> Vec<&'static str> { vec!["datagen"] }
///     fn sink_types(&self) -> Vec<&'static str> { vec!["stdout"] }
///     fn processor_types(&self) -> Vec<&'static str> { vec![] }
///     fn check_source(&self, _: &str, _: &Map<String, Value>) -> Result<(), (String, String)> { Ok(()) }
///     fn check_sink(&self, _: &str, _: &Map<String, Value>) -> Result<(), (String, String)> { Ok(()) }
///     fn check_processor(&self, _: &str, _: &Map<String, Value>) -> Result<(), (String, String)> { Ok(()) }
/// }
///
/// let yaml = "
/// apiVersion: deltaforge/v1
/// kind: Pipeline
/// metadata: { name: demo }
/// spec:
///   source: { type: datagen, config: { id: dg, rate: ${RATE:-10} } }
///   sinks: [ { type: stdout, config: { id: out } } ]
///   commit_policy: quorum(1)
/// ";
/// let specs = parse_str(yaml, "<api>", &|_| None, &Demo).unwrap();
/// assert_eq!(specs[0].name, "demo");
/// assert_eq!(specs[0].tenant, "default");
/// assert_eq!(specs[0].source.config["rate"], 10);
///
/// let err = parse_str(&yaml.replace("quorum(1)", "quorum(2)"), "<api>", &|_| None, &Demo).unwrap_err();
/// assert!(err.to_string().starts_with("<api>: pipeline demo: spec.commit_policy: quorum(2)"));
/// ```
pub fn parse_str(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
    catalog: &dyn Catalog,
) -> Result<Vec<PipelineSpec>, ConfigErrors> {
    let mut loader = Loader::default();
    loader.add_text(text, origin, env, catalog);
    loader.finish()
}

/// Checks specs against each other: duplicate pipeline names and duplicate
/// source ids (the checkpoint key). Each duplicate is reported on its later
/// occurrence, so when adding one spec to running ones, put it last.
/// [`load_path`] and [`parse_str`] already run these checks.
pub fn check_unique(specs: &[PipelineSpec]) -> Result<(), ConfigErrors> {
    let ids: Vec<Identity> = specs.iter().map(Identity::of).collect();
    let errors = validate::check_identities(&ids);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;
