//! Loading specs: environment expansion, YAML parsing of one or several
//! documents per text, files and directories, and the cross-document
//! checks (unique pipeline names and source ids).
//!
//! This module owns the path from text to [`PipelineSpec`]s; it must never
//! open a connection or read anything but the spec files it is pointed at.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::env::{expand_env_with_access, EnvAccess};
use crate::error::{ConfigError, ConfigErrors};
use crate::spec::{Catalog, PipelineSpec};
use crate::validate::{self, Identity};

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
    fn add_text(
        &mut self,
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
        access: &EnvAccess,
        catalog: &dyn Catalog,
    ) {
        let expanded = match expand_env_with_access(text, origin, env, access) {
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
            Ok(text) => loader.add_text(&text, &origin, env, &EnvAccess::All, catalog),
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

/// Expands environment variables in `text` (every variable may be read:
/// for the operator's own texts; see [`parse_str_with_env_access`] for
/// others), then parses and validates every pipeline document in it (several `---`-separated documents are
/// allowed; empty ones are skipped). `origin` names the text in errors and
/// in [`PipelineSpec::origin`] (e.g. `<api>`).
///
/// ```
/// use deltaforge_config::{parse_str, Catalog};
/// use deltaforge_core::ConfigProblem;
/// use serde_json::{Map, Value};
///
/// struct Demo;
/// impl Catalog for Demo {
///     fn source_types(&self) -> Vec<&'static str> { vec!["datagen"] }
///     fn sink_types(&self) -> Vec<&'static str> { vec!["stdout"] }
///     fn processor_types(&self) -> Vec<&'static str> { vec![] }
///     fn check_source(&self, _: &str, _: &Map<String, Value>) -> Result<(), ConfigProblem> { Ok(()) }
///     fn check_sink(&self, _: &str, _: &Map<String, Value>) -> Result<(), ConfigProblem> { Ok(()) }
///     fn check_processor(&self, _: &str, _: &Map<String, Value>) -> Result<(), ConfigProblem> { Ok(()) }
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
    parse_str_with_env_access(text, origin, env, &EnvAccess::All, catalog)
}

/// Like [`parse_str`], with `${NAME}` placeholders reading only the
/// variables `access` allows (a spec sent through the REST API must not
/// copy the server's environment unless the operator said so).
///
/// ```
/// use deltaforge_config::{parse_str_with_env_access, Catalog, EnvAccess};
/// # use deltaforge_core::ConfigProblem;
/// # use serde_json::{Map, Value};
/// # struct Demo;
/// # impl Catalog for Demo {
/// #     fn source_types(&self) -> Vec<&'static str> { vec!["datagen"] }
/// #     fn sink_types(&self) -> Vec<&'static str> { vec!["stdout"] }
/// #     fn processor_types(&self) -> Vec<&'static str> { vec![] }
/// #     fn check_source(&self, _: &str, _: &Map<String, Value>) -> Result<(), ConfigProblem> { Ok(()) }
/// #     fn check_sink(&self, _: &str, _: &Map<String, Value>) -> Result<(), ConfigProblem> { Ok(()) }
/// #     fn check_processor(&self, _: &str, _: &Map<String, Value>) -> Result<(), ConfigProblem> { Ok(()) }
/// # }
/// let yaml = "
/// apiVersion: deltaforge/v1
/// kind: Pipeline
/// metadata: { name: demo }
/// spec:
///   source: { type: datagen, config: { id: '${SECRET}' } }
///   sinks: [ { type: stdout, config: { id: out } } ]
/// ";
/// let env = |_: &str| Some("s3cr3t".to_string());
/// let access = EnvAccess::from_list(&[], "pass --api-env-allow SECRET");
/// let err = parse_str_with_env_access(yaml, "<api>", &env, &access, &Demo).unwrap_err();
/// assert!(err.to_string().contains("SECRET may not be read") && !err.to_string().contains("s3cr3t"));
/// ```
pub fn parse_str_with_env_access(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
    access: &EnvAccess,
    catalog: &dyn Catalog,
) -> Result<Vec<PipelineSpec>, ConfigErrors> {
    let mut loader = Loader::default();
    loader.add_text(text, origin, env, access, catalog);
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
