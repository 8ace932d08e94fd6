//! The source schemas as a table sink sees them: the schema registry's
//! versions of each source table, read from the pipeline's storage.
//!
//! The sink has no source at hand, so it reads the registry the source
//! writes to. A source registers a version before it emits the first event
//! decoded with it, so a version the sink has not seen yet is found by
//! reloading the log once. This module never writes to the registry.

use std::collections::HashMap;
use std::sync::Arc;

use deltaforge_core::SchemaRegistry;
use deltaforge_storage::StorageBackend;

use crate::types::TableDef;

/// Where a table sink runs: names for its progress row and metrics, and
/// the pipeline's storage (the schema registry the source writes to).
pub struct SinkPlace {
    /// Pipeline name.
    pub pipeline: String,
    /// Sink id.
    pub sink_id: String,
    /// Tenant (the registry's key prefix).
    pub tenant: String,
    /// The pipeline's storage, when there is one.
    pub storage: Option<Arc<dyn StorageBackend>>,
}

/// Where the registry lives, and what has been read of it.
pub struct SourceSchemas {
    storage: Option<Arc<dyn StorageBackend>>,
    tenant: String,
    registry: Option<SchemaRegistry>,
    cache: HashMap<(String, String, u64), TableDef>,
}

impl SourceSchemas {
    /// Schemas of `tenant` in `storage` (`None`: no registry, e.g. a
    /// redrive without storage; then only the target's catalogue is used).
    pub fn new(storage: Option<Arc<dyn StorageBackend>>, tenant: &str) -> Self {
        SourceSchemas { storage, tenant: tenant.to_string(), registry: None, cache: HashMap::new() }
    }

    /// The definition of `db.table` at `version`; `Ok(None)` when the
    /// registry does not have it (events without a version, or no
    /// storage). Errors are storage errors (retryable).
    pub async fn get(&mut self, db: &str, table: &str, version: Option<u64>) -> Result<Option<TableDef>, String> {
        let Some(storage) = self.storage.clone() else { return Ok(None) };
        let key = (db.to_string(), table.to_string(), version.unwrap_or(0));
        if let Some(def) = self.cache.get(&key) {
            return Ok(Some(def.clone()));
        }
        let find = |reg: &SchemaRegistry| {
            let versions = reg.versions(db, table);
            match version {
                Some(v) => versions.into_iter().find(|s| s.version == v),
                None => versions.into_iter().last(),
            }
        };
        let mut found = self.registry.as_ref().and_then(find);
        if found.is_none() {
            let reg = SchemaRegistry::load(storage, &self.tenant)
                .await
                .map_err(|e| format!("reading the schema registry: {e}"))?;
            found = find(&reg);
            self.registry = Some(reg);
        }
        let Some(found) = found else { return Ok(None) };
        let def = TableDef::from_registry(&found.schema)
            .map_err(|e| format!("schema version {} of {db}.{table} is unreadable: {e}", found.version))?;
        self.cache.insert(key, def.clone());
        Ok(Some(def))
    }
}
