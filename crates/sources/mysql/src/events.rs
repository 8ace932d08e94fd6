//! Binlog events to events and commits: the transaction state machine
//! (GTID/BEGIN open a group; XID, `COMMIT` or the end of a standalone DDL
//! close it), file rotation, DDL invalidation and row events.
//!
//! It owns what a commit carries (the position right after the closing
//! event, with the GTID state). It must never commit a position inside a
//! transaction.

use std::sync::Arc;

use mysql_async::binlog::events::{Event as BinlogEvent, EventData, QueryEvent, RotateEvent, RowsEventData};
use mysql_async::BinlogStream;

use deltaforge_core::{Event, Op, SourceMeta};

use crate::config::TablePattern;
use crate::ddl::{ddl_tables, truncated_table};
use crate::decode::decode_rows;
use crate::error::{MysqlSourceError, Result};
use crate::gtid::{
    parse_mariadb_gtid, parse_mariadb_gtid_list, uuid_string, MysqlGtidSet, MARIADB_GTID_EVENT, MARIADB_GTID_LIST_EVENT,
};
use crate::position::position;
use crate::run_state::{event_start, Run, TxState};
use crate::snapshot_side::{is_watermark_table, progress_committed, touch_windows};

impl Run<'_> {
    /// The error for a failed binlog stream: a purged checkpoint (error
    /// 1236) or a missing privilege in the source's words, else the
    /// driver's error.
    pub async fn stream_error(
        &mut self,
        e: mysql_async::Error,
        by_gtid: bool,
        gtid: &str,
        file: &str,
        pos: u64,
    ) -> MysqlSourceError {
        if let mysql_async::Error::Server(se) = &e {
            if se.code == 1236 {
                let oldest = match self.meta.as_mut() {
                    Some(c) => self.src.binary_logs(c).await.ok().and_then(|l| l.first().cloned()),
                    None => None,
                };
                let what = if by_gtid {
                    format!("the server cannot find the GTIDs after the checkpoint's gtid_set {gtid} (checkpoint {file}:{pos}) in its binlogs; it said: {}", se.message)
                } else {
                    format!("the server cannot stream from the checkpoint {file}:{pos}; it said: {}", se.message)
                };
                return MysqlSourceError::Purged { id: self.id(), msg: self.src.purged_msg(&what, oldest.as_deref()) };
            }
            if se.code == 1227 || se.code == 1142 {
                return self.src.setup_err(format!(
                    "the server refused the binlog stream ({}): the user needs REPLICATION SLAVE. Fix: `GRANT REPLICATION SLAVE ON *.* TO ...`",
                    se.message
                ));
            }
        }
        (self.src.server_err("reading the binlog"))(e)
    }

    /// Closes the open group: applies its GTID to the state and commits
    /// the position `end` (right after the closing event).
    async fn commit(&mut self, end: u64) -> Result<()> {
        if let Some(g) = self.tx.maria.take() {
            self.maria.apply(g);
        }
        if let Some((src, gno)) = self.tx.mysql.take() {
            self.mysql.add(&src, gno);
        }
        let position = position(self.file.clone(), end, self.gtid_string());
        self.tx = TxState::default();
        self.ctx.sender.commit(position.clone()).await?;
        progress_committed(&mut self.snap, &position);
        Ok(())
    }

    /// Handles one binlog event.
    pub async fn handle(&mut self, stream: &BinlogStream, ev: BinlogEvent) -> Result<()> {
        let header = ev.header();
        let raw = header.event_type_raw();
        if raw == MARIADB_GTID_EVENT {
            let g = parse_mariadb_gtid(ev.data(), header.server_id()).map_err(|msg| MysqlSourceError::Decode {
                id: self.id(),
                at: self.at(&ev),
                msg,
            })?;
            self.begin_group(event_start(&ev));
            self.tx.in_tx = !g.standalone();
            self.tx.gtid_text = Some(g.gtid.to_string().into());
            self.tx.maria = Some(g.gtid);
            return Ok(());
        }
        if raw == MARIADB_GTID_LIST_EVENT {
            return self.gtid_list(&ev).await;
        }
        if raw >= 160 {
            // ANNOTATE_ROWS, BINLOG_CHECKPOINT, START_ENCRYPTION…: nothing to deliver.
            if (166..=171).contains(&raw) {
                return Err(self.src.setup_err(
                    "the binlog holds compressed MariaDB events (log_bin_compress was ON when they were written); \
                     they are not supported",
                ));
            }
            return Ok(());
        }
        // Counts `mysql_common` would size allocations by must fit the body.
        crate::event_bounds::check(raw, ev.data()).map_err(|msg| MysqlSourceError::Decode {
            id: self.id(),
            at: self.at(&ev),
            msg,
        })?;
        let data = match ev.read_data() {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(()),
            Err(e) => return Err(MysqlSourceError::Decode { id: self.id(), at: self.at(&ev), msg: e.to_string() }),
        };
        match data {
            EventData::FormatDescriptionEvent(_) => self.seen_fde = true,
            EventData::RotateEvent(r) => self.rotate(&r),
            EventData::GtidEvent(g) => {
                self.begin_group(event_start(&ev));
                self.tx.gtid_text = Some(MysqlGtidSet::event_gtid(&g).into());
                let mut key = uuid_string(&g.sid());
                if let Some(tag) = g.tag() {
                    key = format!("{key}:{}", tag.as_str().to_ascii_lowercase());
                }
                self.tx.mysql = Some((key, g.gno()));
            }
            EventData::AnonymousGtidEvent(_) => self.begin_group(event_start(&ev)),
            EventData::QueryEvent(q) => self.query(&ev, &q).await?,
            EventData::XidEvent(_) => {
                let end = header.log_pos() as u64;
                self.commit(end).await?;
            }
            EventData::RowsEvent(rows) => self.rows(stream, &ev, rows).await?,
            _ => {}
        }
        Ok(())
    }

    /// MariaDB's GTID_LIST, the GTID state at the start of a binlog file:
    /// if it is ahead of ours, transactions we never saw were purged
    /// (MariaDB may start a GTID stream from the oldest remaining file
    /// without an error).
    async fn gtid_list(&mut self, ev: &BinlogEvent) -> Result<()> {
        let list = parse_mariadb_gtid_list(ev.data()).map_err(|msg| MysqlSourceError::Decode {
            id: self.id(),
            at: self.at(ev),
            msg,
        })?;
        if let Some(gap) = self.maria.gap_before(&list) {
            let oldest = match self.meta.as_mut() {
                Some(c) => self.src.binary_logs(c).await.ok().and_then(|l| l.first().cloned()),
                None => None,
            };
            return Err(MysqlSourceError::Purged {
                id: self.id(),
                msg: self.src.purged_msg(
                    &format!(
                        "the checkpoint's gtid_set {} is behind the server's oldest remaining binlog, which starts \
                         after GTID {gap}: the transactions in between were purged",
                        self.maria
                    ),
                    oldest.as_deref(),
                ),
            });
        }
        Ok(())
    }

    /// A ROTATE: the binlog file being read from now on.
    fn rotate(&mut self, r: &RotateEvent<'_>) {
        let mut raw = r.name_raw();
        // The server's first (artificial) ROTATE comes before the
        // FORMAT_DESCRIPTION that announces checksums, so the reader
        // leaves its 4-byte CRC at the end of the name.
        if !self.seen_fde && self.info.checksum && raw.len() > 4 {
            raw = &raw[..raw.len() - 4];
        }
        let name = String::from_utf8_lossy(raw);
        let name = name.trim_end_matches(|c: char| !c.is_ascii_graphic());
        if !name.is_empty() && *name != *self.file {
            self.file = Arc::from(name);
        }
    }

    /// A QUERY event: BEGIN opens a group, COMMIT/ROLLBACK closes it, XA
    /// and savepoints belong to it, anything else is DDL (a group of its
    /// own unless inside a transaction).
    async fn query(&mut self, ev: &BinlogEvent, q: &QueryEvent<'_>) -> Result<()> {
        let text = q.query();
        let trimmed = text.trim();
        let upper: String = trimmed.chars().take(16).collect::<String>().to_ascii_uppercase();
        let end = ev.header().log_pos() as u64;
        if upper == "BEGIN" || upper.starts_with("START TRANSACTION") {
            if self.tx.start.is_none() {
                self.tx.start = event_start(ev);
            }
            self.tx.in_tx = true;
        } else if upper == "COMMIT" || upper == "ROLLBACK" {
            self.commit(end).await?;
        } else if upper.starts_with("XA ") || upper.starts_with("SAVEPOINT") || upper.starts_with("ROLLBACK TO") {
            // Part of the open group.
        } else {
            let schema = q.schema().into_owned();
            if let Some((db, table)) = truncated_table(trimmed) {
                self.truncate(ev, db.unwrap_or_else(|| schema.clone()), table).await?;
            }
            self.ddl(&schema, trimmed, end);
            if !self.tx.in_tx {
                self.commit(end).await?;
            }
        }
        Ok(())
    }

    /// A `TRUNCATE` of a captured table: one op `t` event (no row images)
    /// in the statement's group, as the PostgreSQL source emits; open
    /// snapshot windows of the table emit none of their rows.
    async fn truncate(&mut self, ev: &BinlogEvent, db: String, table: String) -> Result<()> {
        if !TablePattern::any(&self.src.patterns, &db, &table) {
            return Ok(());
        }
        let start = event_start(ev).unwrap_or(0);
        let tx_start = *self.tx.start.get_or_insert(start);
        let version = self.ctx.schemas.latest(&db, &table).map(|v| v.version);
        if let Some(side) = self.snap.side.as_mut() {
            side.truncate(&format!("{db}.{table}"));
        }
        let event = Event {
            op: Op::Truncate,
            before: None,
            after: None,
            source: SourceMeta {
                connector: "mysql",
                source_id: self.src.source_id.clone(),
                pipeline: self.ctx.pipeline.clone(),
                tenant: self.ctx.tenant.clone(),
                db: db.into(),
                table: table.into(),
                position: self.pos(start),
                ts_ms: ev.header().timestamp() as i64 * 1000,
            },
            tx_id: self.tx.gtid_text.clone(),
            tx_position: self.pos(tx_start),
            index: self.tx.index,
            schema_version: version,
            key_columns: None,
        };
        self.tx.index += 1;
        self.ctx.sender.push(event).await?;
        Ok(())
    }

    /// A DDL statement: its captured tables' decoders are dropped and their
    /// schemas marked for reloading at this position.
    fn ddl(&mut self, default_db: &str, query: &str, end: u64) {
        let Some(tables) = ddl_tables(query) else { return };
        let position = self.pos(end);
        for (db, table) in tables {
            let db = db.unwrap_or_else(|| default_db.to_string());
            if TablePattern::any(&self.src.patterns, &db, &table) {
                tracing::info!(source = %self.src.source_id, db = %db, table = %table, at = %position, "DDL: schema will be reloaded");
                self.decoders
                    .retain(|_, (tme, _)| !(tme.database_name() == db.as_str() && tme.table_name() == table.as_str()));
                self.pending_ddl.insert((db, table), position.clone());
            }
        }
    }

    /// A rows event: the watermark table's go to the snapshot side; a
    /// captured table's become events, one per row, in the open group.
    async fn rows(&mut self, stream: &BinlogStream, ev: &BinlogEvent, rows: RowsEventData<'_>) -> Result<()> {
        let table_id = rows.table_id();
        if table_id == 0x00ff_ffff {
            return Ok(());
        }
        let Some(tme) = stream.get_tme(table_id) else {
            return Err(MysqlSourceError::Server {
                id: self.id(),
                dsn: self.src.dsn_shown.clone(),
                context: format!("reading rows at {}", self.at(ev)),
                source: Box::new(mysql_async::Error::Other(
                    format!("rows event for table id {table_id} without its TABLE_MAP").into(),
                )),
            });
        };
        if is_watermark_table(&self.snap, tme) {
            return self.watermark(tme, ev, &rows).await;
        }
        let start = event_start(ev).unwrap_or(0);
        let at = self.pos(start);
        let Some(dec) = self.decoder(tme, &at).await? else { return Ok(()) };
        let tx_start = *self.tx.start.get_or_insert(start);
        let tx_position = self.pos(tx_start);
        let ts_ms = ev.header().timestamp() as i64 * 1000;
        let decoded = decode_rows(&dec, tme, &rows).map_err(|msg| MysqlSourceError::Decode {
            id: self.src.cfg.id.clone(),
            at: at.to_string(),
            msg,
        })?;
        let mut events = Vec::with_capacity(decoded.len());
        for (op, before, after) in decoded {
            events.push(Event {
                op,
                before,
                after,
                source: SourceMeta {
                    connector: "mysql",
                    source_id: self.src.source_id.clone(),
                    pipeline: self.ctx.pipeline.clone(),
                    tenant: self.ctx.tenant.clone(),
                    db: dec.db.clone(),
                    table: dec.table.clone(),
                    position: at.clone(),
                    ts_ms,
                },
                tx_id: self.tx.gtid_text.clone(),
                tx_position: tx_position.clone(),
                index: 0,
                schema_version: dec.version,
                key_columns: dec.key_columns.clone(),
            });
        }
        touch_windows(&mut self.snap, &dec.db, &dec.table, &events);
        for mut e in events {
            e.index = self.tx.index;
            self.tx.index += 1;
            self.ctx.sender.push(e).await?;
        }
        Ok(())
    }
}
