//! The `type: kafka` sink configuration and its offline check.
//!
//! This module owns the config shape (`deny_unknown_fields`), the defaults
//! (idempotent producer, `acks=all`, native envelope) and the translation
//! into a librdkafka [`ClientConfig`]. It must never open a connection:
//! its [`ComponentConfig::check`] runs when a pipeline file is validated,
//! offline.
//!
//! `client_conf` may hold secrets (`sasl.password`, `ssl.key.password`, …):
//! they are passed to librdkafka and never printed (`Debug` redacts them,
//! and errors name the property, never its value).

use std::collections::BTreeMap;
use std::fmt;

use deltaforge_core::{ComponentConfig, ConfigProblem};
use deltaforge_encoding::{Envelope, Template};
use rdkafka::ClientConfig;
use serde::Deserialize;
use serde_json::Value;

/// `brokers`: either `"host:port,host:port"` or a list of `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Brokers {
    /// Comma-separated bootstrap servers.
    One(String),
    /// One bootstrap server per item.
    Many(Vec<String>),
}

impl Brokers {
    /// The librdkafka `bootstrap.servers` value.
    pub fn joined(&self) -> String {
        match self {
            Brokers::One(s) => s.trim().to_string(),
            Brokers::Many(v) => v.iter().map(|s| s.trim()).collect::<Vec<_>>().join(","),
        }
    }
}

/// Properties passed through to librdkafka; `Debug` redacts secrets.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct ClientConf(pub BTreeMap<String, Value>);

/// In a JSON Schema: a mapping of librdkafka property names to scalar
/// values (what the check accepts).
impl schemars::JsonSchema for ClientConf {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ClientConf".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "description": "librdkafka properties (`compression.type: lz4`, `security.protocol: SASL_SSL`, ...), passed through; values are strings, numbers or booleans.",
            "additionalProperties": { "type": ["string", "number", "boolean"] }
        })
    }
}

/// True for librdkafka properties whose value must never be printed: the
/// one secret list of DeltaForge, [`deltaforge_common::is_secret_key`]
/// (`sasl.password`, `ssl.key.pem`, `ssl.keystore.password`,
/// `sasl.oauthbearer.config`, ...).
pub fn is_secret(key: &str) -> bool {
    deltaforge_common::is_secret_key(key)
}

impl fmt::Debug for ClientConf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.0.iter().map(|(k, v)| (k, if is_secret(k) { Value::String("***".into()) } else { v.clone() })),
            )
            .finish()
    }
}

/// Configuration of a Kafka sink (`type: kafka`).
///
/// ```yaml
/// - type: kafka
///   config:
///     id: to-kafka
///     brokers: 127.0.0.1:9092
///     topic: cdc.${db}.${table}
///     key: ${after.customer_id}     # default: the row's primary key as JSON, e.g. {"id":42}
///     envelope: debezium            # native (default) | debezium | cloudevents
///     exactly_once: false
///     tombstones: false
///     split_key_changes: true       # default: true with envelope debezium, else false
///     client_conf: { compression.type: lz4 }
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers.
    pub brokers: Brokers,
    /// Topic template (`${db}`, `${table}`, `${op}`, `${tenant}`,
    /// `${pipeline}`, `${after.col}`, `${before.col}`).
    pub topic: String,
    /// Message key template; default: the row's key columns as a compact
    /// JSON object (`{"id":42}`), or no key when the table has none.
    #[serde(default)]
    pub key: Option<String>,
    /// Envelope of the message value.
    #[serde(default)]
    pub envelope: Envelope,
    /// librdkafka properties, passed through (they override the defaults
    /// `enable.idempotence=true`, `acks=all`, `message.timeout.ms=25000`).
    #[serde(default)]
    pub client_conf: ClientConf,
    /// One Kafka transaction per batch, committed before the checkpoint.
    #[serde(default)]
    pub exactly_once: bool,
    /// After a delete, also send a null-value message with the same key.
    #[serde(default)]
    pub tombstones: bool,
    /// Send an update that changes the message key as a delete keyed by
    /// the old key (plus its tombstone) and a create keyed by the new one,
    /// as Debezium does; default: on with `envelope: debezium`.
    #[serde(default)]
    pub split_key_changes: Option<bool>,
    /// Transactional id (`exactly_once`); default
    /// `deltaforge-{pipeline}-{sink id}`.
    #[serde(default)]
    pub transactional_id: Option<String>,
    /// Topic holding the last committed position of this sink
    /// (`exactly_once`); default `deltaforge.progress.{transactional id}`.
    #[serde(default)]
    pub progress_topic: Option<String>,
}

/// Properties that `client_conf` may not set, with the config field to use instead.
const RESERVED: &[(&str, &str)] =
    &[("bootstrap.servers", "brokers"), ("metadata.broker.list", "brokers"), ("transactional.id", "transactional_id")];

/// A client property value as librdkafka wants it (a string).
fn conf_value(key: &str, v: &Value) -> Result<String, ConfigProblem> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(ConfigProblem::new(
            "client_conf",
            format!("client_conf.{key} must be a string, number or boolean (librdkafka properties are scalar)"),
        )),
    }
}

/// The `(field, message)` pair the producer builder in `sink.rs` still takes.
impl ComponentConfig for KafkaConfig {
    /// Checks what serde cannot, offline.
    fn check(&self) -> Result<(), ConfigProblem> {
        if self.brokers.joined().split(',').all(|b| b.trim().is_empty()) {
            return Err(ConfigProblem::new(
                "brokers",
                "must name at least one host:port, e.g. `brokers: 127.0.0.1:9092`",
            ));
        }
        if self.topic.trim().is_empty() {
            return Err(ConfigProblem::new("topic", "must not be empty; e.g. `topic: cdc.${db}.${table}`"));
        }
        Template::parse(&self.topic).map_err(|e| e.at("topic"))?;
        if let Some(k) = &self.key {
            Template::parse(k).map_err(|e| e.at("key"))?;
        }
        for (k, v) in &self.client_conf.0 {
            let text = conf_value(k, v)?;
            if let Some(why) = crate::client_conf::refusal(k, &text) {
                return Err(ConfigProblem::new(
                    "client_conf",
                    format!("client_conf.{k} is not allowed: it {why}; remove it (see docs/security.md)"),
                ));
            }
            if let Some((_, field)) = RESERVED.iter().find(|(r, _)| r == k) {
                return Err(ConfigProblem::new(
                    "client_conf",
                    format!("client_conf.{k} is not allowed here: use the sink's `{field}` field"),
                ));
            }
        }
        if let Some(t) = &self.transactional_id {
            if t.trim().is_empty() {
                return Err(ConfigProblem::new(
                    "transactional_id",
                    "must not be empty (or leave it out for the default)",
                ));
            }
            if !self.exactly_once {
                return Err(ConfigProblem::new("transactional_id", "is only used with `exactly_once: true`"));
            }
        }
        if let Some(t) = &self.progress_topic {
            if !self.exactly_once {
                return Err(ConfigProblem::new("progress_topic", "is only used with `exactly_once: true`"));
            }
            if !valid_topic_name(t) {
                return Err(ConfigProblem::new(
                    "progress_topic",
                    "is not a valid Kafka topic name (1-249 of [A-Za-z0-9._-])",
                ));
            }
        }
        if self.exactly_once {
            for (k, must) in [("enable.idempotence", "true"), ("acks", "all")] {
                if let Some(v) = self.client_conf.0.get(k) {
                    let v = conf_value(k, v)?;
                    let ok = v == must || (k == "acks" && v == "-1");
                    if !ok {
                        return Err(ConfigProblem::new(
                            "client_conf",
                            format!("client_conf.{k} contradicts `exactly_once: true` (transactions need {k}={must})"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl KafkaConfig {
    /// [`ComponentConfig::check`] as `Err((field, message))`.
    ///
    /// The transactional id: configured, or `deltaforge-{pipeline}-{sink}`.
    pub fn transactional_id(&self, pipeline: &str, sink_id: &str) -> String {
        self.transactional_id.clone().unwrap_or_else(|| format!("deltaforge-{pipeline}-{sink_id}"))
    }

    /// The progress topic of the exactly-once mode.
    pub fn progress_topic(&self, transactional_id: &str) -> String {
        self.progress_topic.clone().unwrap_or_else(|| {
            let clean: String = transactional_id
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
                .collect();
            let mut name = format!("deltaforge.progress.{clean}");
            name.truncate(249);
            name
        })
    }

    /// The base client config (brokers + `client_conf`), without producer defaults.
    pub fn base_client_config(&self) -> Result<ClientConfig, ConfigProblem> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.joined());
        for (k, v) in &self.client_conf.0 {
            c.set(k.as_str(), conf_value(k, v)?);
        }
        Ok(c)
    }

    /// The producer config: defaults, then `client_conf`, then what
    /// `exactly_once` requires.
    pub fn producer_config(&self, transactional_id: Option<&str>) -> Result<ClientConfig, ConfigProblem> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.joined());
        c.set("enable.idempotence", "true");
        c.set("acks", "all");
        // Fail a message before the coordinator's default 30 s delivery
        // timeout, so a broker outage surfaces as a retryable error.
        c.set("message.timeout.ms", "25000");
        c.set("linger.ms", "5");
        for (k, v) in &self.client_conf.0 {
            c.set(k.as_str(), conf_value(k, v)?);
        }
        if let Some(t) = transactional_id {
            c.set("transactional.id", t);
        }
        Ok(c)
    }
}

/// Kafka's topic-name rule: 1–249 characters of `[A-Za-z0-9._-]`.
pub fn valid_topic_name(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<KafkaConfig, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    /// The component-contract check (the inherent `check` is the
    /// transitional `(field, message)` form).
    fn problem(c: &KafkaConfig) -> Result<(), ConfigProblem> {
        ComponentConfig::check(c)
    }

    #[test]
    fn defaults() {
        let c = parse(json!({"brokers": "127.0.0.1:9092", "topic": "t"})).unwrap();
        assert_eq!(c.envelope, Envelope::Native);
        assert!(!c.exactly_once && !c.tombstones && c.key.is_none());
        problem(&c).unwrap();
        assert_eq!(c.transactional_id("orders", "k"), "deltaforge-orders-k");
        assert_eq!(c.progress_topic("deltaforge-orders cdc/k"), "deltaforge.progress.deltaforge-orders_cdc_k");
        let p = c.producer_config(None).unwrap();
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(p.get("transactional.id"), None);
    }

    #[test]
    fn brokers_as_list() {
        let c = parse(json!({"brokers": ["a:1", "b:2"], "topic": "t"})).unwrap();
        assert_eq!(c.brokers.joined(), "a:1,b:2");
    }

    #[test]
    fn unknown_field_is_rejected() {
        let e = parse(json!({"brokers": "a:1", "topic": "t", "topics": "x"})).unwrap_err();
        assert!(e.contains("unknown field `topics`"), "{e}");
    }

    #[test]
    fn bad_templates_name_the_field() {
        let c = parse(json!({"brokers": "a:1", "topic": "cdc.${schema}"})).unwrap();
        let ConfigProblem { field: f, message: m } = problem(&c).unwrap_err();
        assert_eq!(f, "topic");
        assert!(m.contains("unknown placeholder ${schema}"), "{m}");
        let c = parse(json!({"brokers": "a:1", "topic": "t", "key": "${after.id"})).unwrap();
        assert_eq!(problem(&c).unwrap_err().field, "key");
        // The transitional (field, message) form says the same.
        assert_eq!(ComponentConfig::check(&c).unwrap_err().field, "key");
    }

    #[test]
    fn client_conf_rules() {
        let c = parse(json!({"brokers": "a:1", "topic": "t", "client_conf": {"bootstrap.servers": "x:1"}})).unwrap();
        let ConfigProblem { field: f, message: m } = problem(&c).unwrap_err();
        assert_eq!(f, "client_conf");
        assert!(m.contains("`brokers`"), "{m}");
        let c =
            parse(json!({"brokers": "a:1", "topic": "t", "exactly_once": true, "client_conf": {"acks": 1}})).unwrap();
        assert!(problem(&c).unwrap_err().message.contains("contradicts"));
        let c =
            parse(json!({"brokers": "a:1", "topic": "t", "client_conf": {"linger.ms": 20, "compression.type": "lz4"}}))
                .unwrap();
        problem(&c).unwrap();
        assert_eq!(c.producer_config(None).unwrap().get("linger.ms"), Some("20"));
        let c = parse(json!({"brokers": "a:1", "topic": "t", "client_conf": {"x": {"y": 1}}})).unwrap();
        assert_eq!(problem(&c).unwrap_err().field, "client_conf");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let c = parse(json!({"brokers": "a:1", "topic": "t", "client_conf": {"sasl.password": "hunter2", "sasl.username": "bob"}}))
            .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("bob"), "{dbg}");
    }

    #[test]
    fn transactional_settings_need_exactly_once() {
        let c = parse(json!({"brokers": "a:1", "topic": "t", "transactional_id": "x"})).unwrap();
        assert_eq!(problem(&c).unwrap_err().field, "transactional_id");
        let c = parse(json!({"brokers": "a:1", "topic": "t", "exactly_once": true, "transactional_id": "x"})).unwrap();
        problem(&c).unwrap();
        assert_eq!(c.transactional_id("p", "s"), "x");
        assert_eq!(c.producer_config(Some("x")).unwrap().get("transactional.id"), Some("x"));
    }
}
