//! The state of one streaming run, shared by the modules that handle its
//! parts: the binlog file being read, the GTID state, the open
//! transaction, the decoders and pending DDL, and the snapshot's stream
//! side.
//!
//! It owns the state and the small accessors every part needs (positions
//! in the current file, the metadata connection). Behaviour lives with the
//! concern, in `impl Run` blocks of the modules that build on this one:
//! `stream` (the loop), `events` (binlog events and commits), `decoders`
//! (schemas and decoders), `snapshot_side` (watermark windows). It must
//! never import those modules.

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::binlog::events::{Event as BinlogEvent, TableMapEvent};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use deltaforge_core::{Position, SourceContext};

use crate::decode::TableDecoder;
use crate::error::Result;
use crate::gtid::{MariaGtid, MariaGtidState, MysqlGtidSet};
use crate::position::position;
use crate::preflight::ServerInfo;
use crate::schema::{self, TableSchema};
use crate::server::Server;
use crate::snapshot::StreamSide;

/// Transaction state while reading.
#[derive(Default)]
pub(crate) struct TxState {
    /// Position where the open transaction began (GTID or BEGIN event).
    pub start: Option<u64>,
    /// Inside BEGIN … COMMIT/XID.
    pub in_tx: bool,
    /// Index of the next event in the transaction.
    pub index: u32,
    /// GTID of the open transaction, as text.
    pub gtid_text: Option<Arc<str>>,
    /// The open transaction's MariaDB GTID, applied to the state at commit.
    pub maria: Option<MariaGtid>,
    /// The open transaction's MySQL GTID (source key, gno).
    pub mysql: Option<(String, u64)>,
}

/// One run of the binlog stream: everything the event handling reads and
/// updates between events.
pub(crate) struct Run<'a> {
    /// The server being read.
    pub src: &'a Server,
    /// The pipeline's side (sender, registry, shutdown, durable checkpoint).
    pub ctx: SourceContext,
    /// What the start-up checks learned.
    pub info: ServerInfo,
    /// The metadata connection (catalogue reads, `SHOW BINARY LOGS`);
    /// reconnected on demand.
    pub meta: Option<Conn>,
    /// The binlog file being read.
    pub file: Arc<str>,
    /// MariaDB GTID state up to the last commit.
    pub maria: MariaGtidState,
    /// MySQL GTID set up to the last commit.
    pub mysql: MysqlGtidSet,
    /// The open transaction.
    pub tx: TxState,
    /// A FORMAT_DESCRIPTION event was seen (checksums are known from then on).
    pub seen_fde: bool,
    /// Decoders by table id, with the TABLE_MAP event they were built for
    /// (`None`: a table that is not captured).
    pub decoders: HashMap<u64, (TableMapEvent<'static>, Option<Arc<TableDecoder>>)>,
    /// Captured tables named by a DDL since their last decoder, with the
    /// DDL's end position.
    pub pending_ddl: HashMap<(String, String), Position>,
    /// Parsed schema versions by `(db, table, version)`.
    pub schema_cache: HashMap<(String, String, u64), Arc<TableSchema>>,
    /// Collation ids to charsets, for TABLE_MAP metadata.
    pub collations: schema::Collations,
    /// The snapshot's stream side: the watermark table and the core side
    /// (the reader's link and the open watermark windows).
    pub snap: StreamSide,
}

/// The start offset of an event, when its header has a position.
pub(crate) fn event_start(ev: &BinlogEvent) -> Option<u64> {
    let h = ev.header();
    let end = h.log_pos() as u64;
    (end != 0).then(|| end.saturating_sub(h.event_size() as u64))
}

impl Run<'_> {
    /// The source id, for errors.
    pub fn id(&self) -> String {
        self.src.cfg.id.clone()
    }

    /// `pos` in the current binlog file, without a GTID set (event positions).
    pub fn pos(&self, pos: u64) -> Position {
        position(self.file.clone(), pos, None)
    }

    /// The GTID state up to the last commit, as checkpoint text.
    pub fn gtid_string(&self) -> Option<Arc<str>> {
        let s = if self.info.mariadb { self.maria.to_string() } else { self.mysql.to_string() };
        (!s.is_empty()).then(|| s.into())
    }

    /// `file:offset` of an event, for decode errors.
    pub fn at(&self, ev: &BinlogEvent) -> String {
        format!("{}:{}", self.file, event_start(ev).unwrap_or(0))
    }

    /// Starts a new event group (transaction or standalone statement).
    pub fn begin_group(&mut self, start: Option<u64>) {
        self.tx = TxState { start, ..TxState::default() };
    }

    /// The metadata connection, reconnected when it no longer answers.
    pub async fn meta_conn(&mut self) -> Result<&mut Conn> {
        let alive = match self.meta.as_mut() {
            Some(c) => c.ping().await.is_ok(),
            None => false,
        };
        if !alive {
            self.meta = Some(self.src.connect().await?);
        }
        Ok(self.meta.as_mut().expect("connected"))
    }
}
