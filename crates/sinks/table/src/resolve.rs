//! How a sink finds each event's target table and key columns, and the
//! source definitions a batch needs, read once per batch.
//!
//! Key columns, in order of precedence: the config's `key` override, the
//! event's own key columns, the registry schema's primary key, the target
//! table's primary key. This module never queries a database.

use std::collections::HashMap;

use deltaforge_core::Event;

use crate::config::{TableSinkConfig, TargetName};
use crate::plan::Resolve;
use crate::schemas::SourceSchemas;
use crate::types::TableDef;

/// Source definitions of a batch: `(db, table, version)` → (this version,
/// the one before it).
pub type Defs = HashMap<(String, String, Option<u64>), (Option<TableDef>, Option<TableDef>)>;

/// Reads the definitions of every `(db, table, version)` in `events`.
pub async fn load_defs(schemas: &mut SourceSchemas, events: &[Event]) -> Result<Defs, String> {
    let mut defs = Defs::new();
    for e in events {
        let key = (e.source.db.to_string(), e.source.table.to_string(), e.schema_version);
        if defs.contains_key(&key) {
            continue;
        }
        let def = schemas.get(&key.0, &key.1, key.2).await?;
        let previous = match key.2 {
            Some(v) if v > 1 => schemas.get(&key.0, &key.1, Some(v - 1)).await?,
            _ => None,
        };
        defs.insert(key, (def, previous));
    }
    Ok(defs)
}

/// The [`Resolve`] of a table sink.
pub struct Resolver<'a> {
    /// The sink's config.
    pub cfg: &'a TableSinkConfig,
    /// The batch's source definitions.
    pub defs: &'a Defs,
    /// The primary key of a known target table.
    pub target_key: &'a (dyn Fn(&TargetName) -> Option<Vec<String>> + Sync),
}

impl Resolve for Resolver<'_> {
    fn target(&self, e: &Event) -> Result<TargetName, String> {
        self.cfg.target_of(e)
    }

    fn key(&self, e: &Event) -> Vec<String> {
        if let Some(k) = self.cfg.key_override(&e.source.db, &e.source.table) {
            return k.to_vec();
        }
        if let Some(k) = e.key_columns.as_ref().filter(|k| !k.is_empty()) {
            return k.iter().map(|c| c.to_string()).collect();
        }
        let def = self.defs.get(&(e.source.db.to_string(), e.source.table.to_string(), e.schema_version));
        if let Some(def) = def.and_then(|d| d.0.as_ref()).filter(|d| !d.key.is_empty()) {
            return def.key.clone();
        }
        self.target(e).ok().and_then(|t| (self.target_key)(&t)).unwrap_or_default()
    }
}
