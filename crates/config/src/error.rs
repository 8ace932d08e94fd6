//! Configuration errors: what went wrong, where, and how to fix it.
//!
//! This module owns the error types every other module of the crate
//! reports through. Each error names the origin (file path or `<api>`), the
//! pipeline when known, the dotted field path and a concrete fix. It must
//! never carry secret values: messages describe structure, not contents.

use std::fmt;

/// One problem in a pipeline spec.
///
/// ```
/// use deltaforge_config::ConfigError;
/// let e = ConfigError {
///     origin: "pipelines.yaml".into(),
///     pipeline: Some("orders".into()),
///     field: "spec.batch.max_events".into(),
///     message: "must be a positive integer".into(),
///     fix: "set it between 1 and 1000000".into(),
/// };
/// assert_eq!(
///     e.to_string(),
///     "pipelines.yaml: pipeline orders: spec.batch.max_events: must be a positive integer — fix: set it between 1 and 1000000"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file path (or `<api>`, or the name given to [`crate::parse_str`]).
    pub origin: String,
    /// The pipeline's `metadata.name`, when it could be read.
    pub pipeline: Option<String>,
    /// Dotted path of the offending field, e.g. `spec.sinks[1].config.id`;
    /// `line N` for errors found before YAML parsing.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

impl ConfigError {
    /// An error without a pipeline name.
    pub fn new(
        origin: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        ConfigError {
            origin: origin.into(),
            pipeline: None,
            field: field.into(),
            message: message.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.origin)?;
        if let Some(p) = &self.pipeline {
            write!(f, "pipeline {p}: ")?;
        }
        write!(f, "{}: {} — fix: {}", self.field, self.message, self.fix)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one load, in the order found.
///
/// Loading never stops at the first error: all documents of all files are
/// checked and every error is collected here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// Number of errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no errors.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The errors, in the order found.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl From<Vec<ConfigError>> for ConfigErrors {
    fn from(v: Vec<ConfigError>) -> Self {
        ConfigErrors(v)
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_without_pipeline_and_one_line_per_error() {
        let a = ConfigError::new("a.yaml", "line 3", "boom", "do x");
        let mut b = a.clone();
        b.pipeline = Some("p".into());
        let all = ConfigErrors(vec![a, b]);
        assert_eq!(all.to_string(), "a.yaml: line 3: boom — fix: do x\na.yaml: pipeline p: line 3: boom — fix: do x");
        assert_eq!(all.len(), 2);
    }
}
