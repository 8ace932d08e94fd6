//! The stream's side of the snapshot, MySQL's part: starting the reader,
//! recognising the watermark table's row changes and reading the
//! watermarks they carry, emitting each closed chunk's remaining rows as
//! `r` events inside the high watermark's transaction, and naming the
//! streamed row images and commits for the core.
//!
//! The source-neutral rules (the reader's outcome, windows, verdicts,
//! reconciliation, holding progress until the commit) are the core's
//! [`deltaforge_core::snapshot::StreamSide`]; this module only drives it.
//! It must never store progress itself (the progress writer does, with the
//! durable position) and never read the captured tables (the reader in
//! [`crate::snapshot`] does).

use std::sync::Arc;

use mysql_async::binlog::events::{Event as BinlogEvent, RowsEventData, TableMapEvent};
use serde_json::Value;

use deltaforge_core::snapshot::{reader_finished, ClosedChunk, ProgressWriter, SnapshotMode, Watermark, WatermarkKind};
use deltaforge_core::{Event, Op, Position, SourceContext, SourceError, SourceMeta};

use crate::config::TablePattern;
use crate::decode::{decode_rows, TableDecoder};
use crate::error::{MysqlSourceError, Result};
use crate::run_state::{event_start, Run};
use crate::server::Server;
use crate::snapshot::{Connector, Reader, StreamSide};

/// The reader's outcome: `Ok(true)` when the source must stop, `None` when
/// the reader went away without one.
pub(crate) type ReaderOutcome = Option<std::result::Result<bool, SourceError>>;

/// Hands the progress records waiting for this commit to the progress
/// writer, with the commit's position (stored once it is durable).
pub(crate) fn progress_committed(snap: &mut StreamSide, position: &Position) {
    if let Some(side) = snap.side.as_mut() {
        side.release_progress(position);
    }
}

/// Marks the keys of streamed row images of `db.table` in the open
/// windows on that table (those rows are newer than the chunk's read).
pub(crate) fn touch_windows(snap: &mut StreamSide, db: &str, table: &str, events: &[Event]) {
    if let Some(side) = snap.side.as_mut().filter(|s| s.has_open_windows()) {
        let name = format!("{db}.{table}");
        for e in events {
            for row in [&e.before, &e.after].into_iter().flatten() {
                side.touch(&name, row);
            }
        }
    }
}

/// Whether `tme` is the watermark table's TABLE_MAP while the reader runs.
pub(crate) fn is_watermark_table(snap: &StreamSide, tme: &TableMapEvent<'_>) -> bool {
    snap.side.is_some()
        && snap
            .watermark_table
            .as_ref()
            .is_some_and(|(db, t)| db.as_str() == tme.database_name() && t.as_str() == tme.table_name())
}

impl Server {
    /// Starts the progress writer and the snapshot reader (which also serves
    /// backfills, so it runs in every mode).
    /// Without a watermark table (and `snapshot.mode: never`) no reader
    /// runs and the side stays empty.
    pub fn start_snapshot(&self, ctx: &SourceContext, mariadb: bool, fresh: bool) -> Result<StreamSide> {
        let Some(wm) = self.cfg.watermark_table() else {
            if self.cfg.snapshot.mode == SnapshotMode::Never {
                tracing::warn!(source = %self.source_id, "no database in the dsn and no `watermark_table`: backfills are unavailable");
                return Ok(StreamSide::default());
            }
            return Err(MysqlSourceError::Config {
                id: self.cfg.id.clone(),
                msg: "the snapshot needs a watermark table: set `watermark_table: db.table`, or name a database in                       the dsn (or set snapshot.mode: never)"
                    .into(),
            });
        };
        if TablePattern::any(&self.patterns, &wm.0, &wm.1) {
            return Err(MysqlSourceError::Config {
                id: self.cfg.id.clone(),
                msg: format!(
                    "the watermark table {}.{} is matched by `tables`; exclude it or set `watermark_table`",
                    wm.0, wm.1
                ),
            });
        }
        let (writer, progress_tx) = ProgressWriter::new(ctx.snapshots.clone(), ctx.durable.clone());
        let (stored_tx, stored_rx) = tokio::sync::mpsc::unbounded_channel();
        let source_id = self.source_id.clone();
        tokio::spawn(async move {
            if let Err(e) = writer.notify(stored_tx).run().await {
                tracing::error!(source = %source_id, error = %e, "storing snapshot progress failed");
            }
        });
        let me = self.clone();
        let connect: Connector = Arc::new(move || {
            let me = me.clone();
            Box::pin(async move { me.connect().await.map_err(MysqlSourceError::into_source_error) })
        });
        let reader = Reader {
            cfg: self.cfg.snapshot.clone(),
            connect,
            watermark_table: wm,
            patterns: self.patterns.clone(),
            mariadb,
            source_id: self.source_id.clone(),
            pipeline: ctx.pipeline.clone(),
            store: ctx.snapshots.clone(),
            fresh,
            stored: stored_rx,
        };
        Ok(reader.spawn(progress_tx))
    }
}

impl Run<'_> {
    /// Handles the snapshot reader's end: true when the source must stop.
    pub fn reader_finished(&mut self, outcome: ReaderOutcome) -> Result<bool> {
        reader_finished(&mut self.snap.side, outcome).map_err(MysqlSourceError::Snapshot)
    }

    /// A row change of the watermark table: this run's watermarks open and
    /// close windows; the high one emits the chunk's remaining rows as `r`
    /// events inside its own transaction.
    pub async fn watermark(
        &mut self,
        tme: &TableMapEvent<'_>,
        ev: &BinlogEvent,
        rows: &RowsEventData<'_>,
    ) -> Result<()> {
        let start = event_start(ev).unwrap_or(0);
        let at = self.pos(start);
        let dec = TableDecoder::build(tme, None, None).map_err(|msg| MysqlSourceError::Decode {
            id: self.id(),
            at: at.to_string(),
            msg,
        })?;
        let decoded = decode_rows(&dec, tme, rows).map_err(|msg| MysqlSourceError::Decode {
            id: self.id(),
            at: at.to_string(),
            msg,
        })?;
        for (_, _, after) in decoded {
            let Some(side) = self.snap.side.as_mut() else { return Ok(()) };
            let text = after.as_ref().and_then(|r| r.values().get(1)).and_then(Value::as_str);
            let Some(wm) = text.and_then(|t| serde_json::from_str::<Watermark>(t).ok()) else {
                continue;
            };
            if !side.is_ours(&wm) {
                continue;
            }
            match wm.kind {
                WatermarkKind::Low => side.open_window(wm, ()),
                WatermarkKind::High => self.close_window(wm.chunk, &at, ev).await?,
            }
        }
        Ok(())
    }

    /// A chunk's high watermark: closes its window and emits the chunk's
    /// rows that the window did not see change, inside the open transaction.
    async fn close_window(&mut self, chunk: u64, at: &Position, ev: &BinlogEvent) -> Result<()> {
        let side = self.snap.side.as_mut().expect("called with a reader");
        let Some(ClosedChunk { chunk: msg, rows, .. }) =
            side.close_window(chunk).await.map_err(MysqlSourceError::Snapshot)?
        else {
            return Ok(());
        };
        let tx_start = *self.tx.start.get_or_insert(event_start(ev).unwrap_or(0));
        let tx_position = self.pos(tx_start);
        let ts_ms = ev.header().timestamp() as i64 * 1000;
        let version = self.ctx.schemas.latest(&msg.db, &msg.table_name).map(|v| v.version);
        for row in rows {
            let e = Event {
                op: Op::Read,
                before: None,
                after: Some(row),
                source: SourceMeta {
                    connector: "mysql",
                    source_id: self.src.source_id.clone(),
                    pipeline: self.ctx.pipeline.clone(),
                    tenant: self.ctx.tenant.clone(),
                    db: msg.db.clone(),
                    table: msg.table_name.clone(),
                    position: at.clone(),
                    ts_ms,
                },
                tx_id: self.tx.gtid_text.clone(),
                tx_position: tx_position.clone(),
                index: self.tx.index,
                schema_version: version,
                key_columns: msg.key_columns.clone(),
            };
            self.tx.index += 1;
            self.ctx.sender.push(e).await?;
        }
        Ok(())
    }
}
