//! Building the decoder for a captured table's TABLE_MAP event: which
//! schema version describes the rows at that position, from the event's
//! own full metadata (`binlog_row_metadata=FULL`) or from the catalogue
//! after a DDL, and registering new versions in the schema registry.
//!
//! It owns the decoder cache and the pending-DDL bookkeeping's use. It must
//! never register a version before the newest one (history is append-only)
//! and never re-read the catalogue while replaying history the registry
//! already covers.

use std::cmp::Ordering;
use std::sync::Arc;

use mysql_async::binlog::events::TableMapEvent;
use serde_json::Value;

use deltaforge_core::Position;

use crate::config::TablePattern;
use crate::decode::TableDecoder;
use crate::error::{MysqlSourceError, Result};
use crate::run_state::Run;
use crate::schema::{self, TableSchema};

impl Run<'_> {
    /// Reads the table's schema from the catalogue and registers it as a
    /// new version active from `at`; `None` when the table is gone.
    async fn reload(&mut self, db: &str, table: &str, at: Position) -> Result<Option<u64>> {
        let mariadb = self.info.mariadb;
        let src = self.src;
        let conn = self.meta_conn().await?;
        let mut found = schema::load(conn, mariadb, Some((db, table)), &|_, _| true)
            .await
            .map_err(src.server_err(format!("reloading the schema of {db}.{table}")))?;
        let Some(schema) = found.remove(&(db.to_string(), table.to_string())) else {
            tracing::warn!(source = %src.source_id, "{db}.{table} is not in information_schema (dropped?); decoding from the binlog's metadata");
            return Ok(None);
        };
        let checkpoint = self.ctx.durable.borrow().clone();
        let v = self
            .ctx
            .schemas
            .register(db, table, schema.to_json(), Some(at), checkpoint)
            .await
            .map_err(|e| MysqlSourceError::Registry { id: src.cfg.id.clone(), msg: e.to_string() })?;
        self.schema_cache.insert((db.to_string(), table.to_string(), v), Arc::new(schema));
        Ok(Some(v))
    }

    /// The parsed schema of a registered version (parsed once).
    fn cached_schema(&mut self, db: &str, table: &str, version: u64, json: &Value) -> Option<Arc<TableSchema>> {
        let key = (db.to_string(), table.to_string(), version);
        if let Some(s) = self.schema_cache.get(&key) {
            return Some(s.clone());
        }
        let s = Arc::new(TableSchema::from_json(db, table, json)?);
        self.schema_cache.insert(key, s.clone());
        Some(s)
    }

    /// The decoder for a TABLE_MAP event at `at`; `None` for a table that
    /// is not captured. Cached per table id until the event changes.
    pub async fn decoder(&mut self, tme: &TableMapEvent<'_>, at: &Position) -> Result<Option<Arc<TableDecoder>>> {
        let db = tme.database_name().into_owned();
        let table = tme.table_name().into_owned();
        if let Some((cached, dec)) = self.decoders.get(&tme.table_id()) {
            if cached == tme {
                return Ok(dec.clone());
            }
        }
        if !TablePattern::any(&self.src.patterns, &db, &table) {
            self.decoders.insert(tme.table_id(), (tme.clone().into_owned(), None));
            return Ok(None);
        }
        let from_binlog = match schema::from_table_map(tme, &self.collations) {
            Ok(s) => s,
            Err(msg) => {
                // E.g. an optional metadata field this reader does not know:
                // the catalogue path still works (and fails itself on a
                // really malformed event).
                tracing::warn!(source = %self.src.source_id, "{db}.{table} at {at}: unusable TABLE_MAP metadata ({msg}); using information_schema");
                None
            }
        };
        let dec = match from_binlog {
            Some(described) => self.decoder_from_table_map(tme, described, &db, &table, at).await?,
            None => self.decoder_from_catalogue(tme, &db, &table, at).await?,
        };
        if !dec.schema_matched {
            tracing::warn!(source = %self.src.source_id, "{db}.{table} at {at}: decoding with the binlog's own column metadata (schema version {:?} does not match)", dec.version);
        }
        let dec = Arc::new(dec);
        self.decoders.insert(tme.table_id(), (tme.clone().into_owned(), Some(dec.clone())));
        Ok(Some(dec))
    }

    /// The table's schema in today's catalogue, not registered.
    async fn catalogue(&mut self, db: &str, table: &str) -> Result<Option<TableSchema>> {
        let mariadb = self.info.mariadb;
        let src = self.src;
        let conn = self.meta_conn().await?;
        let mut found = schema::load(conn, mariadb, Some((db, table)), &|_, _| true)
            .await
            .map_err(src.server_err(format!("reading the schema of {db}.{table}")))?;
        Ok(found.remove(&(db.to_string(), table.to_string())))
    }

    /// The decoder for a TABLE_MAP event with full metadata
    /// (`binlog_row_metadata=FULL`): the event itself describes the layout
    /// at its position, so it is exact even when the event is replayed after
    /// later DDLs. The registry supplies the version number: the version
    /// active at the position when its layout is the same, else (reading
    /// past the newest version) a new version registered from here. The
    /// catalogue is read only for a live change, where it agrees with the
    /// binlog unless later DDLs were already applied; when it agrees its
    /// description is the one registered (it also knows display widths and
    /// MariaDB's JSON columns), otherwise the binlog's.
    async fn decoder_from_table_map(
        &mut self,
        tme: &TableMapEvent<'_>,
        mut described: TableSchema,
        db: &str,
        table: &str,
        at: &Position,
    ) -> Result<TableDecoder> {
        let key = (db.to_string(), table.to_string());
        let latest_pos = self.ctx.schemas.latest(db, table).and_then(|v| v.position);
        let replaying = latest_pos.as_ref().is_some_and(|p| at.compare(p) == Some(Ordering::Less));
        let ddl_at = self.pending_ddl.remove(&key);
        let active = self.ctx.schemas.version_at(db, table, at);
        let active_schema = match &active {
            Some(v) => self.cached_schema(db, table, v.version, &v.schema),
            None => None,
        };
        let mut catalogue = None;
        if !replaying && (ddl_at.is_some() || active.is_none()) {
            catalogue = self.catalogue(db, table).await?;
        }
        let hints: Vec<&TableSchema> = catalogue.iter().chain(active_schema.as_deref()).collect();
        described.apply_json_hints(&hints);
        let layout = described.layout();
        let build = |schema: &TableSchema, version: Option<u64>| {
            TableDecoder::build(tme, Some(schema), version).map_err(|msg| MysqlSourceError::Decode {
                id: self.src.cfg.id.clone(),
                at: at.to_string(),
                msg,
            })
        };
        if let (Some(v), Some(s)) = (&active, &active_schema) {
            if s.layout() == layout {
                return build(&described, Some(v.version));
            }
        }
        if replaying {
            // History is append-only: a version cannot be slotted in before
            // the newest one. This happens only when the history was written
            // from the catalogue (metadata MINIMAL then), or when the read
            // started before the table's first version.
            tracing::warn!(
                source = %self.src.source_id,
                "{db}.{table} at {at}: the binlog's column layout differs from the schema version registered for this \
                 position ({:?}); decoding with the binlog's own metadata",
                active.as_ref().map(|v| v.version)
            );
            return build(&described, active.map(|v| v.version));
        }
        if catalogue.is_none() {
            catalogue = self.catalogue(db, table).await?;
            let hints: Vec<&TableSchema> = catalogue.iter().chain(active_schema.as_deref()).collect();
            described.apply_json_hints(&hints);
        }
        // Active from the last DDL on the table when there is one after the
        // newest version, else from this event.
        let from = match ddl_at {
            Some(p) if latest_pos.as_ref().is_none_or(|l| l.compare(&p) == Some(Ordering::Less)) => p,
            _ => at.clone(),
        };
        let (register, origin) = match catalogue {
            Some(c) if c.layout() == described.layout() => (c, "information_schema"),
            _ => (described.clone(), "the binlog's TABLE_MAP metadata"),
        };
        let checkpoint = self.ctx.durable.borrow().clone();
        let v = self
            .ctx
            .schemas
            .register(db, table, register.to_json(), Some(from.clone()), checkpoint)
            .await
            .map_err(|e| MysqlSourceError::Registry { id: self.src.cfg.id.clone(), msg: e.to_string() })?;
        tracing::info!(source = %self.src.source_id, db, table, version = v, from = %from, "schema version from {origin}");
        self.schema_cache.insert((key.0, key.1, v), Arc::new(register));
        build(&described, Some(v))
    }

    /// The decoder without full TABLE_MAP metadata: the schema comes from
    /// the catalogue, reloaded after a DDL (see the crate docs for what
    /// that cannot get right).
    async fn decoder_from_catalogue(
        &mut self,
        tme: &TableMapEvent<'_>,
        db: &str,
        table: &str,
        at: &Position,
    ) -> Result<TableDecoder> {
        let (db, table) = (db.to_string(), table.to_string());
        let latest_pos = self.ctx.schemas.latest(&db, &table).and_then(|v| v.position);
        // Replaying history the registry already covers: never re-read the catalogue.
        let replaying = latest_pos.as_ref().is_some_and(|p| at.compare(p) == Some(Ordering::Less));
        let key = (db.clone(), table.clone());
        let mut version = None;
        if let Some(ddl_at) = self.pending_ddl.remove(&key) {
            let known = latest_pos.as_ref().is_some_and(|p| ddl_at.is_at_or_before(p));
            if !known {
                version = self.reload(&db, &table, ddl_at).await?;
            }
        }
        if version.is_none() {
            version = self.ctx.schemas.version_at(&db, &table, at).map(|v| v.version);
            if version.is_none() && !replaying {
                version = self.reload(&db, &table, at.clone()).await?;
            }
        }
        let mut dec = self.build_decoder(tme, &db, &table, version, at)?;
        if !dec.schema_matched && !replaying && version.is_some() {
            // The table changed without a DDL this source understood.
            tracing::warn!(source = %self.src.source_id, "{db}.{table}: binlog columns differ from the known schema; reloading it");
            if let Some(v) = self.reload(&db, &table, at.clone()).await? {
                dec = self.build_decoder(tme, &db, &table, Some(v), at)?;
            }
        }
        Ok(dec)
    }

    /// A decoder for `tme` with the registered version `version` (the
    /// binlog's own metadata when there is none).
    fn build_decoder(
        &mut self,
        tme: &TableMapEvent<'_>,
        db: &str,
        table: &str,
        version: Option<u64>,
        at: &Position,
    ) -> Result<TableDecoder> {
        let schema = match version {
            Some(v) => {
                let json = self.ctx.schemas.versions(db, table).into_iter().find(|x| x.version == v).map(|x| x.schema);
                json.and_then(|j| self.cached_schema(db, table, v, &j))
            }
            None => None,
        };
        TableDecoder::build(tme, schema.as_deref(), version).map_err(|msg| MysqlSourceError::Decode {
            id: self.id(),
            at: at.to_string(),
            msg,
        })
    }
}
