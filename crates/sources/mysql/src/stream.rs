//! One run of the source, step by step: connect and check the server,
//! decide where to start (checkpoint or current end) and check that the
//! server still holds it, register the captured tables' schemas, request
//! the binlog stream, then read events until shutdown, the snapshot
//! reader's stop, or an error.
//!
//! It owns the order of the start-up steps and the read loop (flushing
//! when idle, the silence timeout). It must never start from a position
//! other than the checkpoint (or, without one, the current end), and never
//! jump forward past a purged checkpoint.

use std::collections::HashMap;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use mysql_async::binlog::events::Event as BinlogEvent;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};

use deltaforge_core::snapshot::{reader_outcome, try_reader_outcome};
use deltaforge_core::{Position, SourceContext};

use crate::config::TablePattern;
use crate::error::{MysqlSourceError, Result};
use crate::gtid::{MariaGtidState, MysqlGtidSet};
use crate::position::{parts, BinlogPosition};
use crate::preflight::ServerInfo;
use crate::run_state::{Run, TxState};
use crate::schema;
use crate::server::Server;

/// Where this run starts reading, and how.
struct Start {
    /// The start as a checkpoint (committed at once on a fresh start).
    position: Position,
    /// The start's file, offset and GTID set.
    at: BinlogPosition,
    /// The start's GTID set as text (empty without one).
    gtid_text: String,
    /// No checkpoint: the start is the current end of the binlog.
    fresh: bool,
    /// Streaming is requested by GTID rather than by file and position.
    by_gtid: bool,
}

/// What the read loop does next.
enum Next {
    /// The stream's next item (`None`: the server ended the stream).
    Event(Option<std::result::Result<BinlogEvent, mysql_async::Error>>),
    /// Shut down, or the snapshot reader asked the source to stop.
    Stop,
    /// The snapshot reader finished; look again.
    Again,
}

/// Runs the source until shutdown (`Ok`) or an error.
pub(crate) async fn run(src: &Server, mut ctx: SourceContext) -> Result<()> {
    let mut conn = src.connect().await?;
    let info = src.check_server(&mut conn).await?;
    let start = start_point(src, &mut conn, &info, &ctx).await?;
    let (maria, mysql) = gtid_states(&info, &start.gtid_text);
    if !start.by_gtid {
        check_file_held(src, &mut conn, &start).await?;
    }
    if start.by_gtid && info.mariadb {
        check_gtids_held(src, &mut conn, &start, &maria).await?;
    }
    let collations = load_collations(src, &mut conn).await;
    register_schemas(src, &mut conn, &info, &mut ctx, &start.position).await?;
    // The binlog connection.
    let mut bconn = src.connect().await?;
    let hb = src.cfg.heartbeat();
    bconn
        .query_drop(format!("SET @master_heartbeat_period = {}", hb.as_nanos()))
        .await
        .map_err(src.server_err("setting the heartbeat period"))?;
    let sids;
    let file_bytes = start.at.file.as_bytes().to_vec();
    let req = if !info.mariadb && start.by_gtid {
        sids = mysql.to_sids().map_err(|msg| MysqlSourceError::Config { id: src.cfg.id.clone(), msg })?;
        // COM_BINLOG_DUMP_GTID: the server finds the start from the set alone.
        BinlogStreamRequest::new(src.cfg.effective_server_id())
            .with_gtid()
            .with_gtid_set(sids.iter().cloned())
            .with_filename(b"")
            .with_pos(4)
    } else {
        stream_request(src, &mut bconn, &info, &start, &maria, &file_bytes).await?
    };
    tracing::info!(
        source = %src.source_id,
        server_id = src.cfg.effective_server_id(),
        "streaming the binlog from {}:{}{}",
        start.at.file,
        start.at.pos,
        if start.by_gtid { format!(" (by GTID {})", start.gtid_text) } else { String::new() }
    );
    let mut stream = bconn.get_binlog_stream(req).await.map_err(src.server_err("requesting the binlog stream"))?;
    if start.fresh {
        // Record the start so that a restart resumes here, not at a later end.
        ctx.sender.commit(start.position.clone()).await?;
        ctx.sender.flush().await?;
    }
    let mut run = Run {
        src,
        ctx,
        info,
        meta: Some(conn),
        file: start.at.file.clone(),
        maria,
        mysql,
        tx: TxState::default(),
        seen_fde: false,
        decoders: HashMap::new(),
        pending_ddl: HashMap::new(),
        schema_cache: HashMap::new(),
        collations,
        snap: Default::default(),
    };
    run.snap = src.start_snapshot(&run.ctx, run.info.mariadb, start.fresh)?;
    let silence = hb * 3 + Duration::from_secs(2);
    run.read_events(&mut stream, &start, silence).await?;
    run.ctx.sender.flush().await?;
    Ok(())
}

/// The start: the checkpoint, or without one the current end of the binlog.
async fn start_point(src: &Server, conn: &mut Conn, info: &ServerInfo, ctx: &SourceContext) -> Result<Start> {
    let resume = match ctx.resume_from.clone() {
        None => None,
        Some(p) if parts(&p).is_some() => Some(p),
        Some(other) => {
            return Err(MysqlSourceError::Config {
                id: src.cfg.id.clone(),
                msg: format!(
                    "the stored checkpoint ({other}) is not a MySQL position; reset it with `deltaforge checkpoints reset {}`",
                    src.cfg.id
                ),
            })
        }
    };
    let (position, fresh) = match resume {
        Some(p) => (p, false),
        None => (src.current_end(conn, info).await?, true),
    };
    let at = parts(&position).expect("mysql position");
    let gtid_text = at.gtid_set.as_deref().unwrap_or("").to_string();
    // A first start streams from the binlog end it just read by file and
    // position: MariaDB finds a GTID start by scanning the binlog file
    // from its beginning (≈ 0.6 s for a 1 GB file before the first
    // event). Its GTID state still starts the checkpoints' gtid_set.
    let by_gtid = src.cfg.use_gtid && info.gtid_on && !gtid_text.is_empty() && !fresh;
    Ok(Start { position, at, gtid_text, fresh, by_gtid })
}

/// The GTID state the start's set describes, in the server's flavour (the
/// other one stays empty).
fn gtid_states(info: &ServerInfo, gtid_text: &str) -> (MariaGtidState, MysqlGtidSet) {
    let maria =
        if info.mariadb { MariaGtidState::parse(gtid_text).unwrap_or_default() } else { MariaGtidState::default() };
    let mysql =
        if !info.mariadb { MysqlGtidSet::parse(gtid_text).unwrap_or_default() } else { MysqlGtidSet::default() };
    (maria, mysql)
}

/// By file/position: the start's binlog file must still be on the server.
async fn check_file_held(src: &Server, conn: &mut Conn, start: &Start) -> Result<()> {
    let (file, pos) = (&start.at.file, start.at.pos);
    let logs = src.binary_logs(conn).await?;
    if !logs.iter().any(|l| **l == **file) {
        return Err(MysqlSourceError::Purged {
            id: src.cfg.id.clone(),
            msg: src.purged_msg(
                &format!("binlog file {file} (checkpoint {file}:{pos}) is no longer on the server: it was purged"),
                logs.first().map(String::as_str),
            ),
        });
    }
    Ok(())
}

/// By GTID on MariaDB: the checkpoint's GTIDs must not be behind the
/// oldest remaining binlog. MariaDB streams from that file without an error
/// when they were purged (it then finds nothing to send after them), so
/// compare with the file's starting state.
async fn check_gtids_held(src: &Server, conn: &mut Conn, start: &Start, maria: &MariaGtidState) -> Result<()> {
    let (file, pos, gtid_text) = (&start.at.file, start.at.pos, &start.gtid_text);
    let logs = src.binary_logs(conn).await?;
    if let Some(oldest) = logs.first() {
        if let Some(list) = src.gtid_list_of(conn, oldest).await? {
            if let Some(gap) = maria.gap_before(&list.gtids()) {
                return Err(MysqlSourceError::Purged {
                    id: src.cfg.id.clone(),
                    msg: src.purged_msg(
                        &format!(
                            "the checkpoint's gtid_set {gtid_text} (checkpoint {file}:{pos}) is behind the \
                             oldest remaining binlog {oldest}, which starts after GTID {gap}: the transactions in \
                             between were purged"
                        ),
                        Some(oldest),
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The server's collations, or the built-in list when they cannot be read.
async fn load_collations(src: &Server, conn: &mut Conn) -> schema::Collations {
    match schema::Collations::load(conn).await {
        Ok(c) => c,
        Err(e) => {
            // The built-in list covers the usual charsets; only lengths
            // of CHAR/VARCHAR in exotic ones could come out in bytes.
            tracing::warn!(source = %src.source_id, "cannot read the server's collations ({e}); using the built-in list");
            schema::Collations::builtin()
        }
    }
}

/// Registers the schema of every captured table the registry does not know
/// yet, active from the start position.
async fn register_schemas(
    src: &Server,
    conn: &mut Conn,
    info: &ServerInfo,
    ctx: &mut SourceContext,
    start: &Position,
) -> Result<()> {
    let keep = |d: &str, t: &str| TablePattern::any(&src.patterns, d, t);
    let schemas = schema::load(conn, info.mariadb, None, &keep)
        .await
        .map_err(src.server_err("reading table schemas from information_schema"))?;
    let checkpoint = ctx.durable.borrow().clone();
    let mut names: Vec<_> = schemas.keys().cloned().collect();
    names.sort();
    for key in &names {
        if ctx.schemas.latest(&key.0, &key.1).is_none() {
            ctx.schemas
                .register(&key.0, &key.1, schemas[key].to_json(), Some(start.clone()), checkpoint.clone())
                .await
                .map_err(|e| MysqlSourceError::Registry { id: src.cfg.id.clone(), msg: e.to_string() })?;
        }
    }
    if names.is_empty() {
        tracing::warn!(source = %src.source_id, tables = ?src.cfg.tables, "no existing table matches `tables`; waiting for tables to be created");
    }
    Ok(())
}

/// The binlog request by file/position, or on MariaDB by GTID (announced
/// on the binlog connection through session variables first). MySQL's
/// request by GTID is built by the caller, which keeps the SID list it
/// borrows.
async fn stream_request<'f>(
    src: &Server,
    bconn: &mut Conn,
    info: &ServerInfo,
    start: &Start,
    maria: &MariaGtidState,
    file_bytes: &'f [u8],
) -> Result<BinlogStreamRequest<'f>> {
    let req = BinlogStreamRequest::new(src.cfg.effective_server_id());
    if !info.mariadb {
        return Ok(req.with_filename(file_bytes).with_pos(start.at.pos));
    }
    bconn
        .query_drop("SET @mariadb_slave_capability = 4")
        .await
        .map_err(src.server_err("announcing MariaDB GTID capability"))?;
    if !start.by_gtid {
        return Ok(req.with_filename(file_bytes).with_pos(start.at.pos));
    }
    let state = maria.to_string();
    bconn
        .exec_drop("SET @slave_connect_state = ?", (state.clone(),))
        .await
        .map_err(src.server_err(format!("setting the GTID start state {state}")))?;
    bconn.query_drop("SET @slave_gtid_strict_mode = 1").await.map_err(src.server_err("enabling GTID strict mode"))?;
    Ok(req.with_filename(b"").with_pos(4))
}

impl Run<'_> {
    /// Reads and handles events until shutdown or the snapshot reader's
    /// stop; a stream error, the stream's end or `silence` without an event
    /// or heartbeat is an error.
    async fn read_events(&mut self, stream: &mut BinlogStream, start: &Start, silence: Duration) -> Result<()> {
        loop {
            if self.ctx.shutdown.is_cancelled() {
                return Ok(());
            }
            if let Some(outcome) = try_reader_outcome(&mut self.snap.side) {
                if self.reader_finished(outcome)? {
                    return Ok(());
                }
            }
            let next = match self.next_event(stream, silence).await? {
                Next::Event(next) => next,
                Next::Stop => return Ok(()),
                Next::Again => continue,
            };
            let ev = match next {
                Some(Ok(ev)) => ev,
                Some(Err(e)) => {
                    return Err(self
                        .stream_error(e, start.by_gtid, &start.gtid_text, &start.at.file, start.at.pos)
                        .await)
                }
                None => {
                    return Err(MysqlSourceError::Server {
                        id: self.src.cfg.id.clone(),
                        dsn: self.src.dsn_shown.clone(),
                        context: "reading the binlog".into(),
                        source: Box::new(mysql_async::Error::Other("the server ended the binlog stream".into())),
                    })
                }
            };
            self.handle(stream, ev).await?;
        }
    }

    /// The next stream item; when none is ready, flushes what was sent and
    /// waits for an item, the snapshot reader's end or shutdown.
    async fn next_event(&mut self, stream: &mut BinlogStream, silence: Duration) -> Result<Next> {
        if let Some(n) = guarded(stream.next()).now_or_never() {
            return Ok(Next::Event(n));
        }
        self.ctx.sender.flush().await?;
        tokio::select! {
            n = guarded(stream.next()) => Ok(Next::Event(n)),
            outcome = reader_outcome(&mut self.snap.side) => {
                Ok(if self.reader_finished(outcome)? { Next::Stop } else { Next::Again })
            }
            _ = self.ctx.shutdown.cancelled() => Ok(Next::Stop),
            _ = tokio::time::sleep(silence) => {
                Err(MysqlSourceError::Silent {
                    id: self.src.cfg.id.clone(),
                    dsn: self.src.dsn_shown.clone(),
                    secs: silence.as_secs(),
                })
            }
        }
    }
}

/// Polls `next` (the binlog stream's next item) with a panic of the client
/// library's event decoder turned into an error of that item. `mysql_common`
/// panics (`Event::read`) when an event's header announces more bytes than
/// its packet holds, i.e. on a damaged packet: the run then ends with a
/// retryable error that says so and resumes from its checkpoint, instead of
/// the panic ending the source task.
pub(crate) async fn guarded<T>(
    next: impl std::future::Future<Output = Option<std::result::Result<T, mysql_async::Error>>>,
) -> Option<std::result::Result<T, mysql_async::Error>> {
    match std::panic::AssertUnwindSafe(next).catch_unwind().await {
        Ok(item) => item,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no message");
            Some(Err(mysql_async::Error::Other(
                format!(
                    "the MySQL client library could not decode a binlog event ({what}): the packet is damaged \
                     or the event's header announces more bytes than it holds"
                )
                .into(),
            )))
        }
    }
}
