//! The schema registry: the history of each table's schema, on the Log
//! primitive (namespace `schemas`, key `{tenant}/{db}/{table}`).
//!
//! Sources register the schema they decode a table with. A schema whose
//! fingerprint differs from the table's latest version appends a new
//! version, recording the source position where it became active and the
//! durable checkpoint at that moment. On replay, [`SchemaRegistry::version_at`]
//! returns the version that was active at an event's position, so events
//! written before a DDL are read with the old schema even after the table
//! was altered. The in-memory index is rebuilt from the log on start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use deltaforge_storage::{StorageBackend, StorageError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::position::Position;

/// The Log namespace of schema history.
pub const NAMESPACE: &str = "schemas";

/// One version of a table's schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaVersion {
    /// Version number of this table's schema, from 1.
    pub version: u64,
    /// Database (MySQL) or schema (PostgreSQL).
    pub db: String,
    /// Table name.
    pub table: String,
    /// SHA-256 of the canonical JSON of `schema`, hex.
    pub fingerprint: String,
    /// The schema as the source describes it (columns, types, keys).
    pub schema: Value,
    /// Source position from which this version is active (`None`: from the start).
    pub position: Option<Position>,
    /// The durable checkpoint when this version was registered.
    pub checkpoint: Option<Position>,
    /// When it was registered.
    pub registered_at: DateTime<Utc>,
    /// Sequence number in the storage log.
    #[serde(default)]
    pub seq: u64,
}

/// Versions of each `(db, table)`, oldest first.
type History = HashMap<(String, String), Vec<SchemaVersion>>;

/// Shared, cloneable handle to one tenant's schema history.
#[derive(Clone)]
pub struct SchemaRegistry {
    storage: Arc<dyn StorageBackend>,
    tenant: Arc<str>,
    tables: Arc<Mutex<History>>,
}

/// Computes the fingerprint of a schema description.
pub fn fingerprint(schema: &Value) -> String {
    use sha2::{Digest, Sha256};
    // serde_json maps keep insertion order; sort keys so that equal schemas
    // built in a different order hash alike.
    fn canonical(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), canonical(&m[k]))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
            other => other.clone(),
        }
    }
    let digest = Sha256::digest(canonical(schema).to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl SchemaRegistry {
    /// Loads a tenant's history from storage.
    pub async fn load(storage: Arc<dyn StorageBackend>, tenant: &str) -> Result<Self, StorageError> {
        let entries = storage.log_read(NAMESPACE, &format!("{tenant}/"), 0).await?;
        let mut tables: History = HashMap::new();
        for e in entries {
            match serde_json::from_str::<SchemaVersion>(&e.value) {
                Ok(mut v) => {
                    v.seq = e.seq;
                    tables.entry((v.db.clone(), v.table.clone())).or_default().push(v);
                }
                Err(err) => {
                    tracing::warn!(key = %e.key, seq = e.seq, "skipping unreadable schema history record: {err}")
                }
            }
        }
        Ok(SchemaRegistry { storage, tenant: tenant.into(), tables: Arc::new(Mutex::new(tables)) })
    }

    /// Registers the schema a source decodes a table with; returns its
    /// version number, appending a new version only when the fingerprint
    /// differs from the latest one.
    pub async fn register(
        &self,
        db: &str,
        table: &str,
        schema: Value,
        position: Option<Position>,
        checkpoint: Option<Position>,
    ) -> Result<u64, StorageError> {
        let fp = fingerprint(&schema);
        let key = (db.to_string(), table.to_string());
        let next = {
            let tables = self.tables.lock().expect("schema registry lock");
            match tables.get(&key).and_then(|v| v.last()) {
                Some(latest) if latest.fingerprint == fp => return Ok(latest.version),
                Some(latest) => latest.version + 1,
                None => 1,
            }
        };
        let mut version = SchemaVersion {
            version: next,
            db: db.to_string(),
            table: table.to_string(),
            fingerprint: fp,
            schema,
            position,
            checkpoint,
            registered_at: Utc::now(),
            seq: 0,
        };
        let json = serde_json::to_string(&version).expect("schema versions serialize");
        let log_key = format!("{}/{db}/{table}", self.tenant);
        version.seq = self.storage.log_append(NAMESPACE, &log_key, &json).await?;
        tracing::info!(db, table, version = next, "registered table schema version");
        self.tables.lock().expect("schema registry lock").entry(key).or_default().push(version);
        Ok(next)
    }

    /// Every version of a table, oldest first.
    pub fn versions(&self, db: &str, table: &str) -> Vec<SchemaVersion> {
        let tables = self.tables.lock().expect("schema registry lock");
        tables.get(&(db.to_string(), table.to_string())).cloned().unwrap_or_default()
    }

    /// The latest version of a table.
    pub fn latest(&self, db: &str, table: &str) -> Option<SchemaVersion> {
        let tables = self.tables.lock().expect("schema registry lock");
        tables.get(&(db.to_string(), table.to_string())).and_then(|v| v.last().cloned())
    }

    /// The version active at `position`: the latest one registered at or
    /// before it (versions without a position count as active from the start).
    pub fn version_at(&self, db: &str, table: &str, position: &Position) -> Option<SchemaVersion> {
        let tables = self.tables.lock().expect("schema registry lock");
        let versions = tables.get(&(db.to_string(), table.to_string()))?;
        versions.iter().rev().find(|v| v.position.as_ref().is_none_or(|p| p.is_at_or_before(position))).cloned()
    }

    /// Every table with a history, as `(db, table)`.
    pub fn tables(&self) -> Vec<(String, String)> {
        let tables = self.tables.lock().expect("schema registry lock");
        let mut keys: Vec<_> = tables.keys().cloned().collect();
        keys.sort();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Seq;
    use deltaforge_storage::MemoryBackend;
    use serde_json::json;

    fn pos(seq: u64) -> Option<Position> {
        Some(Seq::at(seq))
    }

    #[tokio::test]
    async fn versions_follow_fingerprints_and_survive_reload() {
        let storage: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
        let reg = SchemaRegistry::load(storage.clone(), "acme").await.unwrap();
        let v1 = json!({"columns": ["id", "name"]});
        let v2 = json!({"columns": ["id", "name", "email"]});
        assert_eq!(reg.register("shop", "users", v1.clone(), pos(10), pos(5)).await.unwrap(), 1);
        // Same schema again (keys in another order hash alike): no new version.
        assert_eq!(
            reg.register("shop", "users", json!({"columns": ["id", "name"]}), pos(20), pos(5)).await.unwrap(),
            1
        );
        assert_eq!(reg.register("shop", "users", v2.clone(), pos(30), pos(25)).await.unwrap(), 2);
        // Another tenant's history is separate.
        let other = SchemaRegistry::load(storage.clone(), "other").await.unwrap();
        assert_eq!(other.register("shop", "users", v2.clone(), pos(1), None).await.unwrap(), 1);

        let reloaded = SchemaRegistry::load(storage, "acme").await.unwrap();
        let versions = reloaded.versions("shop", "users");
        assert_eq!(versions.len(), 2);
        assert_eq!(versions[0].schema, v1);
        assert_eq!(versions[1].position, pos(30));
        assert_eq!(versions[1].checkpoint, pos(25));
        assert!(versions[0].seq < versions[1].seq);
        // Lookups by position: the version active there.
        assert_eq!(reloaded.version_at("shop", "users", &Seq::at(29)).unwrap().version, 1);
        assert_eq!(reloaded.version_at("shop", "users", &Seq::at(30)).unwrap().version, 2);
        assert_eq!(reloaded.version_at("shop", "users", &Seq::at(5)), None);
        assert_eq!(reloaded.latest("shop", "users").unwrap().version, 2);
        assert_eq!(reloaded.tables(), vec![("shop".to_string(), "users".to_string())]);
    }

    #[test]
    fn fingerprint_ignores_key_order() {
        assert_eq!(
            fingerprint(&json!({"a": 1, "b": [1, {"c": 2, "d": 3}]})),
            fingerprint(&json!({"b": [1, {"d": 3, "c": 2}], "a": 1}))
        );
        assert_ne!(fingerprint(&json!({"a": 1})), fingerprint(&json!({"a": 2})));
    }
}
