//! The `object_store` sink's config: where files go (`url`, S3 settings),
//! what they hold (`format`, `envelope`, `path`) and when a file is
//! committed (`max_bytes`, `max_rows`, `max_age_ms`).
//!
//! Checks are offline: this module never connects, never reads files and
//! never puts a credential into a message.

use deltaforge_core::{ComponentConfig, ConfigProblem};
use deltaforge_encoding::Envelope;
use serde::Deserialize;

use crate::path::PathTemplate;

/// File format of the committed objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Apache Parquet, one flat row per event, typed by the source's schema.
    #[default]
    Parquet,
    /// JSON Lines: one envelope per line.
    Jsonl,
}

/// Compression of JSON Lines files (Parquet pages are always Snappy-compressed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Plain `.jsonl`.
    #[default]
    None,
    /// `.jsonl.gz`.
    Gzip,
    /// `.jsonl.zst` (level 3).
    Zstd,
}

/// S3 settings (used with `s3://` URLs).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint of an S3-compatible server (`http://127.0.0.1:59000`); AWS
    /// when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region (default: `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as most S3-compatible
    /// servers need; virtual-hosted style when false.
    #[serde(default)]
    pub path_style: bool,
    /// Access key id; with `secret_access_key`. When both are absent the
    /// usual AWS chain applies (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`,
    /// web identity, instance metadata).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret access key (use `${VAR}` in the spec; never logged).
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Session token for temporary credentials.
    #[serde(default)]
    pub session_token: Option<String>,
    /// Allow plain `http://` endpoints (loopback test servers, private
    /// networks). TLS is used for every `https://` endpoint.
    #[serde(default)]
    pub allow_http: bool,
}

/// Configuration of the object-storage sink.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreConfig {
    /// Where files go: `s3://bucket/prefix` or `file:///absolute/dir`.
    pub url: String,
    /// S3 settings for `s3://` URLs.
    #[serde(default)]
    pub s3: S3Config,
    /// `parquet` (default) or `jsonl`.
    #[serde(default)]
    pub format: Format,
    /// Compression of `jsonl` files: `none` (default), `gzip` or `zstd`.
    #[serde(default)]
    pub compression: Compression,
    /// Envelope of `jsonl` lines: `native` (default), `debezium`,
    /// `cloudevents`. Parquet files always hold the flat row layout.
    #[serde(default)]
    pub envelope: Envelope,
    /// Directory of each file under the URL, a template:
    /// `${db}`, `${table}`, `${op}`, `${tenant}`, `${pipeline}`, `${date}`
    /// (`YYYY-MM-DD` of the commit time, UTC), `${hour}` (`HH`).
    #[serde(default = "default_path")]
    pub path: String,
    /// Parquet: add the before image as `__before_<column>` columns.
    #[serde(default)]
    pub include_before: bool,
    /// Commit a file when its rows' encoded size reaches this many bytes
    /// (default 128 MiB).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Commit a file when it holds this many rows (default 1 000 000).
    #[serde(default = "default_max_rows")]
    pub max_rows: u64,
    /// Commit a file this long after its first row (default 60 000 ms).
    /// Age is the one limit that depends on timing (see the README on
    /// exactly-once files).
    #[serde(default = "default_max_age_ms")]
    pub max_age_ms: u64,
    /// Directory for files being written before an S3 upload (default: the
    /// system's temporary directory).
    #[serde(default)]
    pub spill_dir: Option<String>,
}

fn default_path() -> String {
    "${table}/date=${date}".into()
}
fn default_max_bytes() -> u64 {
    128 * 1024 * 1024
}
fn default_max_rows() -> u64 {
    1_000_000
}
fn default_max_age_ms() -> u64 {
    60_000
}

/// Where the files go, parsed from `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A bucket and a key prefix (no leading or trailing `/`).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix, possibly empty.
        prefix: String,
    },
    /// A local directory.
    Local(std::path::PathBuf),
}

impl ObjectStoreConfig {
    /// The target named by `url`.
    pub fn target(&self) -> Result<Target, ConfigProblem> {
        if let Some(rest) = self.url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(ConfigProblem::new("url", "names no bucket; write s3://bucket/prefix"));
            }
            return Ok(Target::S3 { bucket: bucket.into(), prefix: prefix.trim_matches('/').into() });
        }
        if let Some(dir) = self.url.strip_prefix("file://") {
            if !dir.starts_with('/') {
                return Err(ConfigProblem::new(
                    "url",
                    "a file:// URL needs an absolute directory (file:///var/lake); relative paths are ambiguous",
                ));
            }
            return Ok(Target::Local(dir.into()));
        }
        Err(ConfigProblem::new("url", "must start with s3:// (S3 or S3-compatible) or file:// (local directory)"))
    }
}

impl ComponentConfig for ObjectStoreConfig {
    fn check(&self) -> Result<(), ConfigProblem> {
        let target = self.target()?;
        PathTemplate::parse(&self.path).map_err(|e| e.at("path"))?;
        if self.max_rows == 0 {
            return Err(ConfigProblem::new("max_rows", "must be at least 1"));
        }
        if self.max_bytes < 1024 {
            return Err(ConfigProblem::new("max_bytes", "must be at least 1024"));
        }
        if self.max_age_ms == 0 {
            return Err(ConfigProblem::new("max_age_ms", "must be at least 1"));
        }
        if self.format == Format::Parquet && self.compression != Compression::None {
            return Err(ConfigProblem::new("compression", "applies to format jsonl only (Parquet pages use Snappy)"));
        }
        if self.format == Format::Parquet && self.envelope != Envelope::Native {
            return Err(ConfigProblem::new(
                "envelope",
                "applies to format jsonl only; Parquet files hold the flat row layout",
            ));
        }
        let s3 = &self.s3;
        if matches!(target, Target::Local(_)) && *s3 != S3Config::default() {
            return Err(ConfigProblem::new("s3", "applies to s3:// URLs only"));
        }
        if s3.access_key_id.is_some() != s3.secret_access_key.is_some() {
            return Err(ConfigProblem::new(
                "s3.secret_access_key",
                "access_key_id and secret_access_key go together; set both, or neither to use the AWS chain",
            ));
        }
        if let Some(e) = &s3.endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(ConfigProblem::new("s3.endpoint", "must start with http:// or https://"));
            }
            if e.starts_with("http://") && !s3.allow_http {
                return Err(ConfigProblem::new(
                    "s3.endpoint",
                    "is plain http://; set s3.allow_http: true to allow it, or use https://",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltaforge_core::component::check_config;
    use serde_json::{json, Value};

    fn problem(v: Value) -> ConfigProblem {
        check_config::<ObjectStoreConfig>(v.as_object().unwrap()).unwrap_err()
    }

    #[test]
    fn defaults() {
        let c: ObjectStoreConfig = check_config(json!({"url": "s3://lake/cdc/"}).as_object().unwrap()).unwrap();
        assert_eq!(c.format, Format::Parquet);
        assert_eq!(c.path, "${table}/date=${date}");
        assert_eq!((c.max_bytes, c.max_rows, c.max_age_ms), (128 * 1024 * 1024, 1_000_000, 60_000));
        assert_eq!(c.target().unwrap(), Target::S3 { bucket: "lake".into(), prefix: "cdc".into() });
        let c: ObjectStoreConfig = check_config(json!({"url": "file:///tmp/lake"}).as_object().unwrap()).unwrap();
        assert_eq!(c.target().unwrap(), Target::Local("/tmp/lake".into()));
    }

    #[test]
    fn every_problem_names_its_field() {
        assert_eq!(problem(json!({"url": "http://x"})).field, "url");
        assert_eq!(problem(json!({"url": "s3:///p"})).field, "url");
        assert_eq!(problem(json!({"url": "file://rel/dir"})).field, "url");
        assert_eq!(problem(json!({"url": "s3://b", "path": "${nope}"})).field, "path");
        assert_eq!(problem(json!({"url": "s3://b", "max_rows": 0})).field, "max_rows");
        assert_eq!(problem(json!({"url": "s3://b", "max_bytes": 10})).field, "max_bytes");
        assert_eq!(problem(json!({"url": "s3://b", "max_age_ms": 0})).field, "max_age_ms");
        assert_eq!(problem(json!({"url": "s3://b", "compression": "gzip"})).field, "compression");
        assert_eq!(problem(json!({"url": "s3://b", "compression": "zstd"})).field, "compression");
        assert_eq!(problem(json!({"url": "s3://b", "compression": "lz4"})).field, "compression");
        assert_eq!(problem(json!({"url": "s3://b", "envelope": "debezium"})).field, "envelope");
        assert_eq!(problem(json!({"url": "file:///d", "s3": {"path_style": true}})).field, "s3");
        assert_eq!(problem(json!({"url": "s3://b", "s3": {"access_key_id": "k"}})).field, "s3.secret_access_key");
        assert_eq!(problem(json!({"url": "s3://b", "s3": {"endpoint": "ftp://x"}})).field, "s3.endpoint");
        assert_eq!(problem(json!({"url": "s3://b", "s3": {"endpoint": "http://x"}})).field, "s3.endpoint");
        assert_eq!(problem(json!({"url": "s3://b", "format": "csv"})).field, "format");
        assert_eq!(problem(json!({"url": "s3://b", "s3": {"bogus": 1}})).field, "s3.bogus");
    }

    #[test]
    fn secrets_never_reach_a_message() {
        let p = problem(json!({"url": "s3://b", "s3": {"secret_access_key": "hunter2-secret"}}));
        assert!(!p.to_string().contains("hunter2"), "{p}");
        let p = problem(
            json!({"url": "s3://b", "s3": {"access_key_id": "AKIA", "secret_access_key": "hunter2", "endpoint": "http://x"}}),
        );
        assert!(!p.to_string().contains("hunter2"), "{p}");
    }
}
