//! The component contract: how every source, sink and processor declares,
//! checks and builds from its `config:` block.
//!
//! - A component's config is a `serde` type implementing
//!   [`ComponentConfig`] and `schemars::JsonSchema` (derived: the JSON
//!   Schema of the spec, `deltaforge schema`, is generated from the same
//!   types that validate it); [`parse_config`] reads it from the spec's JSON
//!   object and names the field path at fault (`rules[0].columns.email`),
//!   nested paths included. Its messages never quote a value of the
//!   config (`invalid type: expected u16, found a string`): a value may be
//!   a secret in the wrong field, so only the field path and what is
//!   expected are named, and whatever the component's own check says is
//!   passed through [`deltaforge_common::redact::scrub_values`].
//! - [`ComponentConfig::check`] does the offline checks serde cannot
//!   express, reporting one [`ConfigProblem`] (field path + message).
//! - Constructors return [`BuildError`]: a config problem found while
//!   building, or another reason the component cannot be made.
//!
//! The registry in the binary maps `type:` names to components using only
//! these three items, so adding a component never changes this module.
//! Nothing here may open a connection or a file: validation is offline.

use deltaforge_common::redact::scrub_values;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::sink::SinkError;
use crate::source::SourceError;

/// A problem in a component's config: where (a field path inside the
/// component's `config:` block, empty for the block itself) and what is
/// wrong, phrased so the user knows what to change.
///
/// ```
/// use deltaforge_core::ConfigProblem;
/// let p = ConfigProblem::new("batch.max_events", "must be at least 1");
/// assert_eq!(p.to_string(), "batch.max_events: must be at least 1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.display())]
pub struct ConfigProblem {
    /// The field path, e.g. `tls.ca_file` or `rules[0].columns`.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl ConfigProblem {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigProblem { field: field.into(), message: message.into() }
    }

    /// The same problem with its field path placed under `prefix`
    /// (`tls` + `ca_file` → `tls.ca_file`), for nested configs.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = match (prefix.is_empty(), self.field.is_empty()) {
            (true, _) => self.field,
            (false, true) => prefix.to_string(),
            (false, false) if self.field.starts_with('[') => format!("{prefix}{}", self.field),
            (false, false) => format!("{prefix}.{}", self.field),
        };
        self
    }

    fn display(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// What every component's config type implements. `JsonSchema` is derived
/// beside `Deserialize`, so that doc comments become the schema's
/// descriptions and `deny_unknown_fields` its `additionalProperties: false`.
pub trait ComponentConfig: DeserializeOwned + schemars::JsonSchema {
    /// Offline checks beyond what deserialisation enforces. Must never
    /// connect anywhere or touch files.
    fn check(&self) -> Result<(), ConfigProblem> {
        Ok(())
    }
}

/// Reads a component config from its JSON object, naming the field path at
/// fault when serde rejects it (unknown fields, missing fields, wrong types,
/// at any depth).
///
/// ```
/// use deltaforge_core::component::parse_config;
/// #[derive(serde::Deserialize, Debug)]
/// #[serde(deny_unknown_fields)]
/// struct Tls { ca_file: String }
/// #[derive(serde::Deserialize, Debug)]
/// #[serde(deny_unknown_fields)]
/// struct Cfg { tls: Tls }
/// let cfg = serde_json::json!({"tls": {"ca_fle": "x"}});
/// let err = parse_config::<Cfg>(cfg.as_object().unwrap()).unwrap_err();
/// assert_eq!(err.field, "tls.ca_fle");
/// ```
pub fn parse_config<T: DeserializeOwned>(config: &Map<String, Value>) -> Result<T, ConfigProblem> {
    // The config is borrowed from the spec; `&Value` deserialises in place.
    let value = Value::Object(config.clone());
    serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().to_string();
        let raw = e.into_inner().to_string();
        // At the top level serde_path_to_error says "."; serde still names
        // a missing or unknown field between backticks.
        let field = if path == "." {
            raw.split('`').nth(1).map(str::to_string).unwrap_or_default()
        } else if raw.starts_with("unknown field") || raw.starts_with("missing field") {
            match raw.split('`').nth(1) {
                Some(name) if !path.ends_with(name) => format!("{path}.{name}"),
                _ => path,
            }
        } else {
            path
        };
        ConfigProblem { field, message: scrub_values(&without_value(&raw), &value) }
    })
}

/// A serde message without the value it quotes: `invalid type: string
/// "hunter2", expected u16` becomes `invalid type: expected u16, found a
/// string`; `unknown variant `x`, expected one of ...` loses the `x`.
/// Other messages are returned as they are (and scrubbed by the caller).
fn without_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            // The value comes first and may itself hold ", expected ".
            if let Some(i) = rest.rfind(", expected ") {
                return format!("{prefix}expected {}, found {}", &rest[i + 11..], kind_of(rest));
            }
            return format!("{prefix}found {}", kind_of(rest));
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        return match rest.rfind("`, expected ") {
            Some(i) => format!("unknown variant, expected {}", &rest[i + 12..]),
            None => "unknown variant".to_string(),
        };
    }
    message.to_string()
}

/// What kind of value serde's `Unexpected` text (`string "x"`, `integer `5``)
/// describes, without the value.
fn kind_of(unexpected: &str) -> &'static str {
    const KINDS: &[(&str, &str)] = &[
        ("string", "a string"),
        ("integer", "an integer"),
        ("floating point", "a number"),
        ("boolean", "a boolean"),
        ("character", "a character"),
        ("byte array", "bytes"),
        ("unit", "null"),
        ("null", "null"),
        ("Option", "an optional value"),
        ("sequence", "a list"),
        ("map", "a mapping"),
    ];
    KINDS.iter().find(|(p, _)| unexpected.starts_with(p)).map_or("a value of another type", |(_, k)| k)
}

/// Reads and checks a component config: [`parse_config`] then
/// [`ComponentConfig::check`]. The check's message goes through
/// [`scrub_values`], so a component that quotes a value in its message
/// still never shows it.
pub fn check_config<T: ComponentConfig>(config: &Map<String, Value>) -> Result<T, ConfigProblem> {
    let cfg: T = parse_config(config)?;
    cfg.check().map_err(|p| ConfigProblem {
        message: scrub_values(&p.message, &Value::Object(config.clone())),
        field: p.field,
    })?;
    Ok(cfg)
}

/// Why a component could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The config is wrong (found while building, e.g. a template that
    /// does not parse).
    #[error("{0}")]
    Config(#[from] ConfigProblem),
    /// Anything else (a file that cannot be opened, a client that cannot
    /// be created); the message says what and what to do.
    #[error("{0}")]
    Other(String),
}

impl BuildError {
    /// An error that is not about a config field.
    pub fn other(message: impl Into<String>) -> Self {
        BuildError::Other(message.into())
    }
}

/// A config problem found while building a sink is fatal.
impl From<ConfigProblem> for SinkError {
    fn from(p: ConfigProblem) -> Self {
        SinkError::Fatal(p.to_string())
    }
}

/// A config problem found while building a source is fatal.
impl From<ConfigProblem> for SourceError {
    fn from(p: ConfigProblem) -> Self {
        SourceError::Fatal(p.to_string())
    }
}

/// A sink that cannot be built will not be built by retrying: fatal, with
/// the field path (if any) in the message.
impl From<BuildError> for SinkError {
    fn from(e: BuildError) -> Self {
        SinkError::Fatal(e.to_string())
    }
}

/// A source that cannot be built will not be built by retrying: fatal,
/// with the field path (if any) in the message.
impl From<BuildError> for SourceError {
    fn from(e: BuildError) -> Self {
        SourceError::Fatal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Rule {
        table: String,
        columns: Vec<String>,
    }

    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Cfg {
        id: String,
        #[serde(default)]
        rules: Vec<Rule>,
    }

    impl ComponentConfig for Cfg {
        fn check(&self) -> Result<(), ConfigProblem> {
            if self.id.is_empty() {
                return Err(ConfigProblem::new("id", "must not be empty"));
            }
            Ok(())
        }
    }

    fn field(v: Value) -> String {
        check_config::<Cfg>(v.as_object().unwrap()).unwrap_err().field
    }

    #[test]
    fn nested_paths_are_named() {
        assert_eq!(field(json!({"id": "x", "rules": [{"table": "a", "columns": "c"}]})), "rules[0].columns");
        assert_eq!(field(json!({"id": "x", "rules": [{"table": "a", "columns": [], "extra": 1}]})), "rules[0].extra");
        assert_eq!(field(json!({"id": "x", "rules": [{"columns": []}]})), "rules[0].table");
        assert_eq!(field(json!({"idd": "x"})), "idd");
        assert_eq!(field(json!({"rules": []})), "id");
        assert_eq!(field(json!({"id": ""})), "id");
    }

    #[test]
    fn problems_nest_under_a_prefix() {
        assert_eq!(ConfigProblem::new("ca_file", "m").within("tls").field, "tls.ca_file");
        assert_eq!(ConfigProblem::new("[0]", "m").within("rules").field, "rules[0]");
        assert_eq!(ConfigProblem::new("", "m").within("tls").field, "tls");
        assert_eq!(ConfigProblem::new("", "whole").to_string(), "whole");
    }

    #[test]
    fn build_errors_are_fatal() {
        let e: SinkError = BuildError::from(ConfigProblem::new("url", "bad")).into();
        assert!(matches!(e, SinkError::Fatal(m) if m == "url: bad"));
        let e: SinkError = ConfigProblem::new("", "whole").into();
        assert!(matches!(e, SinkError::Fatal(m) if m == "whole"));
        let e: SourceError = BuildError::other("no file").into();
        assert!(matches!(e, SourceError::Fatal(m) if m == "no file"));
    }

    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Typed {
        port: u16,
        #[serde(default)]
        mode: Option<Mode>,
        #[serde(default)]
        ratio: Option<f64>,
    }

    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Fast,
        Safe,
    }

    impl ComponentConfig for Typed {
        fn check(&self) -> Result<(), ConfigProblem> {
            match self.ratio {
                // A component check that (wrongly) quotes the value.
                Some(r) if r > 1.0 => Err(ConfigProblem::new("ratio", format!("{r} is above 1"))),
                _ => Ok(()),
            }
        }
    }

    /// Issue 14: serde's messages quoted the value (up to the whole
    /// string); now they name the field and what is expected only.
    #[test]
    fn serde_messages_never_quote_the_value() {
        let secret = "s3cr3t-Hunter2, expected nothing";
        for (cfg, field, expected) in [
            (json!({"port": secret}), "port", "invalid type: expected u16, found a string"),
            (json!({"port": 70_123}), "port", "invalid value: expected u16, found an integer"),
            (json!({"port": -4242}), "port", "invalid value: expected u16, found an integer"),
            (json!({"port": 1, "mode": secret}), "mode", "unknown variant, expected `fast` or `safe`"),
            (json!({"port": 1, "ratio": secret}), "ratio", "invalid type: expected f64, found a string"),
            (json!({"port": [secret]}), "port", "invalid type: expected u16, found a list"),
        ] {
            let p = check_config::<Typed>(cfg.as_object().unwrap()).unwrap_err();
            assert_eq!(p.field, field, "{cfg}");
            assert_eq!(p.message, expected, "{cfg}");
            for piece in ["s3cr3t", "Hunter2", "70123", "4242"] {
                assert!(!p.to_string().contains(piece), "{p}");
            }
        }
        let p = check_config::<Typed>(json!({"port": 1, "ratio": 12.5}).as_object().unwrap()).unwrap_err();
        assert_eq!(p.to_string(), "ratio: *** is above 1");
    }
}
