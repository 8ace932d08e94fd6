//! Applying the pipeline's own processors to source rows, so that a sink
//! fed through `filter`, `mask` (or other processors) is compared with what
//! it should hold: each source row becomes an insert (`c`) event of its
//! table (a row's current state is what an insert of it would deliver; a
//! filter's `ops: [c, u]` keeps it, `action: drop, ops: [d]` does not drop
//! it), the processors run in the pipeline's order, and the rows that
//! come out (matched back by the event index) are the expected sink rows.
//! A row that no event comes out for was filtered: it must be absent.
//!
//! This module must never log a row's values; it owns no processor logic.

use std::collections::HashMap;
use std::sync::Arc;

use deltaforge_core::{Event, Op, Position, Processor, Row, SourceMeta};

use crate::error::VerifyError;
use crate::model::{row_object, SinkRow, TableLayout};

/// The processors applied to source rows, with the names events carry.
pub struct Transforms {
    processors: Vec<Box<dyn Processor>>,
    pipeline: Arc<str>,
    tenant: Arc<str>,
    source_id: Arc<str>,
}

impl Transforms {
    /// `processors` in the pipeline's order (the caller leaves out those it
    /// skips, such as JavaScript with `--no-transform`).
    pub fn new(processors: Vec<Box<dyn Processor>>, pipeline: &str, tenant: &str, source_id: &str) -> Self {
        Transforms { processors, pipeline: pipeline.into(), tenant: tenant.into(), source_id: source_id.into() }
    }

    /// No processors: rows are compared as read.
    pub fn none() -> Self {
        Transforms::new(Vec::new(), "", "", "")
    }

    /// Whether no processor applies (rows are compared as read).
    pub fn is_empty(&self) -> bool {
        self.processors.is_empty()
    }

    /// The expected sink row of each source row (`None`: filtered out), in
    /// input order.
    pub async fn apply(
        &mut self,
        table: &TableLayout,
        rows: &[Row],
        position: &Position,
    ) -> Result<Vec<Option<SinkRow>>, VerifyError> {
        if self.processors.is_empty() {
            return Ok(rows.iter().map(|r| Some(row_object(r))).collect());
        }
        let (db, name) = table.name.split_once('.').unwrap_or(("", &table.name));
        let key: deltaforge_core::Columns = table.key.iter().map(|k| Arc::<str>::from(k.as_str())).collect();
        let mut events: Vec<Event> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| Event {
                op: Op::Create,
                before: None,
                after: Some(r.clone()),
                source: SourceMeta {
                    connector: position.connector(),
                    source_id: self.source_id.clone(),
                    pipeline: self.pipeline.clone(),
                    tenant: self.tenant.clone(),
                    db: db.into(),
                    table: name.into(),
                    position: position.clone(),
                    ts_ms: 0,
                },
                tx_id: None,
                tx_position: position.clone(),
                index: i as u32,
                schema_version: None,
                key_columns: Some(key.clone()),
            })
            .collect();
        for p in &mut self.processors {
            events = p
                .process(events)
                .await
                .map_err(|e| VerifyError::Transform { processor: e.processor, message: e.message })?;
        }
        let mut out: HashMap<u32, SinkRow> = HashMap::new();
        for e in events {
            if let Some(after) = &e.after {
                out.insert(e.index, row_object(after));
            }
        }
        Ok((0..rows.len() as u32).map(|i| out.remove(&i)).collect())
    }
}
