//! PostgreSQL's part of the stream's side of the DBLog snapshot; the rest
//! (windows, verdicts, reconciling a chunk, holding its progress record)
//! is the core's [`StreamSide`] (see [`deltaforge_core::snapshot`]).
//! Here: which logical decoding message is one of this run's watermarks,
//! the ring of recent xids a window records at its low watermark (for
//! [`ChunkMsg`]'s visibility check), and turning a closed chunk's rows
//! into op `r` events committed at the high watermark's LSN.
//!
//! This module must never decide whether a chunk is emitted (the core's
//! [`StreamSide::close_window`] does) and never store snapshot progress:
//! the streamer releases each record to the progress writer after the
//! commit returned here.

use std::collections::VecDeque;
use std::sync::Arc;

use deltaforge_core::snapshot::{ClosedChunk, StreamSide, Watermark};
use deltaforge_core::{Columns, Event, Op, Position, SourceContext, SourceError, SourceMeta};

use super::relations::Relations;
use crate::position::position;
use crate::snapshot::{ChunkMsg, WATERMARK_PREFIX};

/// Transactions remembered for the commit-visibility race check; a commit
/// becomes visible within milliseconds of its record, far fewer than this.
pub const RECENT_XIDS: usize = 4096;

/// The xids of the most recent transactions the stream delivered (the last
/// [`RECENT_XIDS`]).
#[derive(Debug, Default)]
pub struct RecentXids(VecDeque<u32>);

impl RecentXids {
    /// Remembers a transaction the stream delivered.
    pub fn remember(&mut self, xid: u32) {
        if self.0.len() >= RECENT_XIDS {
            self.0.pop_front();
        }
        self.0.push_back(xid);
    }

    /// The remembered xids, oldest first: what a window records at its low
    /// watermark.
    pub fn to_vec(&self) -> Vec<u32> {
        self.0.iter().copied().collect()
    }
}

/// This run's watermark in a logical decoding message, if it is one: only
/// non-transactional messages with [`WATERMARK_PREFIX`] and this run's id.
pub(crate) fn own_watermark(
    side: Option<&StreamSide<ChunkMsg>>,
    transactional: bool,
    prefix: &str,
    content: &[u8],
) -> Option<Watermark> {
    let ours = prefix == WATERMARK_PREFIX && !transactional;
    match (ours, side) {
        (true, Some(side)) => match serde_json::from_slice::<Watermark>(content) {
            Ok(wm) if side.is_ours(&wm) => Some(wm),
            _ => None,
        },
        _ => None,
    }
}

/// Emits a closed chunk's rows as `r` events at the high watermark's `lsn`
/// (no transaction id, indexes from 0) and commits that position, which it
/// returns.
pub(crate) async fn emit_rows(
    closed: ClosedChunk<ChunkMsg>,
    relations: &mut Relations,
    source_id: &Arc<str>,
    lsn: u64,
    ctx: &mut SourceContext,
) -> Result<Position, SourceError> {
    let ClosedChunk { chunk: msg, key, rows } = closed;
    let relation = relations.find_wanted(&msg.schema, &msg.table_name);
    if let Some(id) = relation {
        // No transaction is open at a watermark: the schema's position has
        // no transaction id.
        relations.ensure_version(id, lsn, None, ctx).await?;
    }
    let mut schema_version = relation.and_then(|id| relations.get(id)).and_then(|r| r.version);
    if schema_version.is_none() {
        // No change of the table streamed yet: register the description
        // the reader read, so that sinks get the real column types.
        schema_version = Some(register_description(&msg, lsn, ctx).await?);
    }
    let key_columns: Option<Columns> =
        (!key.is_empty()).then(|| key.iter().map(|k| Arc::<str>::from(k.as_str())).collect::<Vec<_>>().into());
    let position = position(lsn, None);
    let ts_ms = chrono_now_ms();
    for (index, row) in rows.into_iter().enumerate() {
        ctx.sender
            .push(Event {
                op: Op::Read,
                before: None,
                after: Some(row),
                source: SourceMeta {
                    connector: "postgres",
                    source_id: source_id.clone(),
                    pipeline: ctx.pipeline.clone(),
                    tenant: ctx.tenant.clone(),
                    db: msg.schema.clone(),
                    table: msg.table_name.clone(),
                    position: position.clone(),
                    ts_ms,
                },
                tx_id: None,
                tx_position: position.clone(),
                index: index as u32,
                schema_version,
                key_columns: key_columns.clone(),
            })
            .await?;
    }
    ctx.sender.commit(position.clone()).await?;
    Ok(position)
}

/// Registers (or finds) the chunk's schema description at `lsn`.
async fn register_description(msg: &ChunkMsg, lsn: u64, ctx: &SourceContext) -> Result<u64, SourceError> {
    let at = position(lsn, None);
    let fp = deltaforge_core::schema::fingerprint(&msg.description);
    match ctx.schemas.version_at(&msg.schema, &msg.table_name, &at) {
        Some(v) if v.fingerprint == fp => Ok(v.version),
        _ => {
            let durable = ctx.durable.borrow().clone();
            let schema = (*msg.description).clone();
            ctx.schemas.register(&msg.schema, &msg.table_name, schema, Some(at), durable).await.map_err(|e| {
                SourceError::Retryable(format!("registering the schema of {}.{}: {e}", msg.schema, msg.table_name))
            })
        }
    }
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
