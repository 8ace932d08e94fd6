//! The checks that span pipelines: duplicate pipeline names and duplicate
//! source ids (the checkpoint key).
//!
//! It only compares [`Identity`]s; it must never look inside a document,
//! so that identities of documents with errors still take part.

use std::collections::HashMap;

use crate::error::ConfigError;
use crate::PipelineSpec;

/// Name and source id of one document, for the cross-pipeline checks.
/// Collected even from documents with errors, so that duplicates are
/// reported in the same run.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    /// Where the document came from.
    pub origin: String,
    /// `metadata.name`, when it is a string.
    pub name: Option<String>,
    /// `spec.source.config.id`, when it is a non-empty string.
    pub source_id: Option<String>,
}

impl Identity {
    /// The identity of an already validated spec.
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
