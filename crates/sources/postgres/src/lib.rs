//! `type: postgres` — change data capture from PostgreSQL by logical
//! replication with the `pgoutput` plugin (protocol version 1), checkpointed
//! by LSN.
//!
//! What it does, on each (re)start:
//!
//! 1. Connects a replication session ([`transport`]) and, before streaming,
//!    makes sure the publication exists ([`setup`]: created for the matched
//!    tables when `create_publication` is true) and checks the slot: created
//!    only when there is no checkpoint yet; when a checkpoint exists but the
//!    slot is gone, invalidated, or already past the checkpoint, the source
//!    stops with an error that says how to recover, and never starts from an
//!    arbitrary position.
//! 2. Streams from the checkpoint's LSN and decodes every message
//!    ([`pgoutput`]), emitting one event per row change (ops `c`, `u`, `d`,
//!    `t`) with values mapped to JSON ([`values`]).
//! 3. Marks each transaction's end with its commit LSN, and reports to the
//!    server (standby status updates, keepalive replies) only positions that
//!    appeared on `SourceContext::durable`.
//!
//! Positions: the checkpoint is `{"lsn": commit LSN, "tx_id": xid}` of the
//! last fully delivered transaction. The commit LSN (the start of the commit
//! record, as in the Begin message) is stored and reported as flushed.
//! PostgreSQL skips, on restart, transactions whose commit record starts
//! *before* the confirmed position, so the transaction at exactly the
//! checkpoint may be sent again: the source skips, on its side, every
//! transaction whose commit LSN is at or below the checkpoint, and never one
//! above it. When idle (no transaction open and every received transaction
//! durable), the source commits an event-less position at the server's
//! reported WAL end; once that is durable it is reported too, so an idle or
//! filtered slot does not hold WAL forever, and a server shutdown (which
//! waits until its walsenders' clients confirm everything sent) completes.
//! Such idle checkpoints carry no `tx_id`, and on resume from one only
//! transactions whose commit LSN is *below* it are skipped (a commit record
//! may start exactly at the reported WAL end, and it was not received).
//!
//! Events: `source.db` is the schema name; `source.position` is
//! `{"lsn": LSN of the change, "tx_id": xid}`; the transaction position (and
//! so the idempotency key `{id}:{commit LSN}:{index}`) is the commit LSN;
//! `ts_ms` is the commit time. Before-images follow REPLICA IDENTITY:
//! DEFAULT/INDEX give the key columns on deletes and on updates that changed
//! the key (updates that did not change the key have `before: null`), FULL
//! gives the whole old row. Unchanged TOAST values are the object
//! `{"__deltaforge_unchanged_toast": true}` (with REPLICA IDENTITY FULL the
//! old row's value is used instead). Logical decoding messages
//! (`pg_logical_emit_message`), Origin and Type messages are decoded and
//! logged at debug level, not emitted as events, except this run's
//! snapshot watermarks (prefix `deltaforge-watermark`).
//!
//! Snapshots and backfills ([`snapshot`]): a reader on a separate
//! connection selects key-ordered chunks between a low and a high watermark;
//! the streamer collects the keys changed between the two, drops them from
//! the chunk at the high watermark and emits the rest as op `r` events at
//! the watermark's LSN (transaction position and checkpoint `{"lsn": high
//! watermark}` without `tx_id`), then hands the chunk's progress record to
//! the progress writer, which stores it once that position is durable.
//!
//! Schema history: every Relation message registers the table's columns
//! (name, type OID, type name, type modifier, key flag) and replica identity
//! in the schema registry with the position of the change it precedes and
//! the durable checkpoint; events carry the resulting version. A version
//! already recorded for that position is reused, so replays do not append
//! duplicates.
//!
//! **Checkpoint lag in bytes** ([`lag`]): `pg_current_wal_lsn()` minus the
//! checkpoint LSN (before the first checkpoint: minus the slot's
//! `confirmed_flush_lsn`), measured every few seconds on a separate,
//! non-streaming replication session.
//!
//! **Reset** (`DELETE /pipelines/{name}/checkpoint`): a slot cannot rewind,
//! so the reset drops the pipeline's slot ([`setup::drop_slot`], waiting a
//! few seconds for the stopped run's walsender to let go) and the checkpoint
//! is deleted; the next start finds neither and creates a new slot at the
//! server's current position. Changes committed before that are not read
//! again from the WAL; instead, with no checkpoint, the snapshot ignores its
//! progress records and reads the matched tables again (unless
//! `snapshot.mode: never`). A slot held by another client makes the reset
//! fail (409) with nothing deleted.
//!
//! This crate must never report a position to the server that has not been
//! made durable, and never start reading from a position other than the
//! checkpoint (or, with no checkpoint, the slot's own position).

#![warn(missing_docs)]

pub mod config;
pub mod lag;
pub mod pgoutput;
pub mod setup;
pub mod snapshot;
pub mod tls;
pub mod transport;
pub mod values;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deltaforge_core::schema::fingerprint;
use deltaforge_core::snapshot::{PendingProgress, ProgressWriter, Watermark, WatermarkKind};
use deltaforge_core::{
    Columns, Event, LagProbe, Lsn, Op, Position, Row, Source, SourceContext, SourceError, SourceMeta,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;

pub use config::{Dsn, PostgresConfig, TablePattern};
use pgoutput::{Message, TupleValue};
use transport::{PgWire, SessionParams, Severity, Transport, TransportError, WireEvent};

/// How long a reset waits for the stopped run's walsender to release the slot.
const RESET_SLOT_WAIT: Duration = Duration::from_secs(10);

/// Microseconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01, in ms.
const PG_EPOCH_MS: i64 = 946_684_800_000;

/// Minimum time between two idle (event-less) checkpoints.
const IDLE_ADVANCE_EVERY: Duration = Duration::from_secs(1);

/// A `postgres` source instance.
pub struct PostgresSource {
    cfg: PostgresConfig,
    dsn: Dsn,
    patterns: Vec<TablePattern>,
    source_id: Arc<str>,
}

impl PostgresSource {
    /// Builds the source from a checked config.
    pub fn new(cfg: PostgresConfig) -> Result<Self, SourceError> {
        cfg.check().map_err(|(f, m)| SourceError::Fatal(format!("postgres source config: {f}: {m}")))?;
        let dsn = Dsn::parse(&cfg.dsn).map_err(|e| SourceError::Fatal(e.to_string()))?;
        let patterns = cfg.patterns().map_err(SourceError::Fatal)?;
        let source_id = cfg.id.clone().into();
        Ok(PostgresSource { cfg, dsn, patterns, source_id })
    }

    /// Session settings for the slot and publication of `pipeline`.
    fn session(&self, pipeline: &str, start_lsn: u64) -> SessionParams {
        SessionParams {
            slot: self.cfg.slot_name(pipeline),
            publication: self.cfg.publication_name(pipeline),
            start_lsn,
            status_interval: Duration::from_secs(self.cfg.status_interval_secs),
        }
    }
}

/// Maps a transport failure to the pipeline's error kinds.
pub(crate) fn source_error(e: TransportError) -> SourceError {
    match e.severity {
        Severity::Retryable => SourceError::Retryable(e.message),
        Severity::Fatal => SourceError::Fatal(e.message),
    }
}

#[async_trait]
impl Source for PostgresSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let slot = self.cfg.slot_name(&ctx.pipeline);
        let publication = self.cfg.publication_name(&ctx.pipeline);
        let resume = match &ctx.resume_from {
            None => None,
            Some(Position::Postgres { lsn, tx_id }) => Some(Resume { lsn: lsn.0, inclusive: tx_id.is_some() }),
            Some(other) => {
                return Err(SourceError::Fatal(format!(
                    "the stored checkpoint of source {:?} ({other}) is not a PostgreSQL position; reset it with \
                     `deltaforge checkpoints reset {}` to start over",
                    self.source_id, self.source_id
                )))
            }
        };
        let params = self.session(&ctx.pipeline, resume.map_or(0, |r| r.lsn));
        let mut wire = PgWire::connect(&self.dsn, &params).await.map_err(source_error)?;
        let plan = setup::Plan {
            source_id: &self.cfg.id,
            database: &self.dsn.dbname,
            slot: &slot,
            publication: &publication,
            patterns: &self.patterns,
            create_publication: self.cfg.create_publication,
            checkpoint: resume.map(|r| r.lsn),
        };
        setup::prepare(&mut wire, &plan).await?;
        wire.start().await.map_err(source_error)?;
        tracing::info!(
            source = %self.source_id,
            server = %self.dsn.redacted(),
            slot = %slot,
            publication = %publication,
            from = %resume.map(|r| Lsn(r.lsn).to_string()).unwrap_or_else(|| "the slot's position".into()),
            "streaming changes from PostgreSQL"
        );
        let mut streamer = Streamer::new(self.source_id.clone(), self.patterns.clone(), resume);
        // The snapshot reader also serves backfills, so it runs in every mode.
        let (writer, progress_tx) = ProgressWriter::new(ctx.snapshots.clone(), ctx.durable.clone());
        let (stored_tx, stored_rx) = mpsc::unbounded_channel();
        // Not aborted when the stream ends: it stores what becomes durable
        // while the pipeline delivers its last batches, and ends when the
        // pipeline drops its durable positions.
        let source_id = self.source_id.clone();
        tokio::spawn(async move {
            if let Err(e) = writer.notify(stored_tx).run().await {
                tracing::error!(source = %source_id, error = %e, "storing snapshot progress failed");
            }
        });
        let reader = snapshot::Reader {
            cfg: self.cfg.snapshot.clone(),
            dsn: self.dsn.clone(),
            patterns: self.patterns.clone(),
            slot: slot.clone(),
            source_id: self.source_id.clone(),
            pipeline: ctx.pipeline.clone(),
            store: ctx.snapshots.clone(),
            fresh: resume.is_none(),
            stored: stored_rx,
        };
        let link = reader.spawn();
        streamer.snap = Some(snapshot::StreamSide {
            link,
            windows: HashMap::new(),
            pending: HashMap::new(),
            recent: std::collections::VecDeque::with_capacity(snapshot::RECENT_XIDS),
            metrics: deltaforge_core::snapshot::SnapshotMetrics::new(&ctx.pipeline),
        });
        streamer.progress = Some(progress_tx);
        streamer.run(&mut wire, ctx).await
    }

    /// WAL bytes behind, on the probe's own session (see [`lag`]).
    fn lag_probe(&self, pipeline: &str) -> Option<Box<dyn LagProbe>> {
        Some(Box::new(lag::WalLagProbe::new(self.dsn.clone(), self.session(pipeline, 0))))
    }

    /// Drops the pipeline's replication slot (see the crate docs, "Reset").
    async fn reset(self: Box<Self>, pipeline: &str) -> Result<Option<Position>, SourceError> {
        let params = self.session(pipeline, 0);
        let mut wire = PgWire::connect(&self.dsn, &params).await.map_err(source_error)?;
        let existed = setup::drop_slot(&mut wire, &params.slot, RESET_SLOT_WAIT).await?;
        tracing::info!(
            source = %self.source_id,
            slot = %params.slot,
            existed,
            "checkpoint reset: the next start creates a new slot at the server's current position"
        );
        Ok(None)
    }
}

/// Where a run resumes: the checkpoint LSN, and whether a transaction whose
/// commit LSN equals it was already delivered (true for transaction
/// checkpoints; false for idle checkpoints at the server's WAL end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// The checkpoint LSN.
    pub lsn: u64,
    /// Skip a transaction whose commit LSN equals `lsn` too.
    pub inclusive: bool,
}

impl Resume {
    /// True when the transaction committing at `commit_lsn` was delivered
    /// before the checkpoint.
    pub fn covers(&self, commit_lsn: u64) -> bool {
        commit_lsn < self.lsn || (self.inclusive && commit_lsn == self.lsn)
    }
}

/// What the source knows about one relation (from its Relation message).
struct Relation {
    schema: Arc<str>,
    table: Arc<str>,
    columns: Columns,
    type_oids: Vec<u32>,
    key_idx: Vec<usize>,
    key_columns: Columns,
    version: Option<u64>,
    /// Schema description not yet registered: it is registered at the
    /// first change that uses it, whose LSN is where it became active (the
    /// Relation message itself carries no WAL position).
    pending_schema: Option<Value>,
    wanted: bool,
}

/// The transaction being read.
struct Tx {
    xid: u32,
    ts_ms: i64,
    skip: bool,
    index: u32,
    tx_id: Arc<str>,
    position: Position,
}

/// The decoding state machine of one streaming session, generic over the
/// transport so that it can be driven by captured messages in tests.
pub struct Streamer {
    source_id: Arc<str>,
    patterns: Vec<TablePattern>,
    /// Transactions this checkpoint covers are skipped.
    checkpoint: Option<Resume>,
    relations: HashMap<u32, Relation>,
    types: HashMap<u32, String>,
    tx: Option<Tx>,
    /// The last commit (or idle position) handed to the pipeline.
    received: Option<u64>,
    /// The last durable position (reported to the server).
    durable: Option<u64>,
    last_idle_advance: Option<Instant>,
    /// The snapshot reader's link and the open watermark windows.
    snap: Option<snapshot::StreamSide>,
    /// Progress records to store once their chunk is durable.
    progress: Option<mpsc::UnboundedSender<PendingProgress>>,
}

impl Streamer {
    /// A streamer resuming after `checkpoint`.
    pub fn new(source_id: Arc<str>, patterns: Vec<TablePattern>, checkpoint: Option<Resume>) -> Self {
        Streamer {
            source_id,
            patterns,
            checkpoint,
            relations: HashMap::new(),
            types: HashMap::new(),
            tx: None,
            received: checkpoint.map(|r| r.lsn),
            durable: checkpoint.map(|r| r.lsn),
            last_idle_advance: None,
            snap: None,
            progress: None,
        }
    }

    /// Reads until shutdown or failure.
    pub async fn run<T: Transport>(mut self, wire: &mut T, mut ctx: SourceContext) -> Result<(), SourceError> {
        loop {
            if ctx.shutdown.is_cancelled() {
                let _ = ctx.sender.flush().await;
                return Ok(());
            }
            if ctx.durable.has_changed().unwrap_or(false) {
                let d = ctx.durable.borrow_and_update().clone();
                self.on_durable(d, wire);
            }
            let polled = self.snap.as_mut().map(|s| s.link.outcome.try_recv());
            let outcome = match polled {
                Some(Ok(r)) => Some(Some(r)),
                Some(Err(tokio::sync::oneshot::error::TryRecvError::Closed)) => Some(None),
                _ => None,
            };
            if let Some(outcome) = outcome {
                if self.reader_finished(outcome)? {
                    let _ = ctx.sender.flush().await;
                    return Ok(());
                }
            }
            let ev = match wire.try_recv() {
                Some(ev) => ev,
                None => {
                    // Nothing buffered: hand over what we have before waiting.
                    ctx.sender.flush().await?;
                    tokio::select! {
                        biased;
                        _ = ctx.shutdown.cancelled() => continue,
                        changed = ctx.durable.changed() => {
                            if changed.is_err() {
                                // The pipeline is gone.
                                return Ok(());
                            }
                            // `changed` marked the value seen: apply it here.
                            let d = ctx.durable.borrow_and_update().clone();
                            self.on_durable(d, wire);
                            continue;
                        }
                        outcome = reader_outcome(&mut self.snap) => {
                            if self.reader_finished(outcome)? {
                                let _ = ctx.sender.flush().await;
                                return Ok(());
                            }
                            continue;
                        }
                        ev = wire.recv() => ev,
                    }
                }
            };
            let ev = ev.map_err(source_error)?;
            if !self.handle(ev, &mut ctx).await? {
                let _ = ctx.sender.flush().await;
                return Ok(());
            }
        }
    }

    /// Handles the snapshot reader's end: true when the source must stop
    /// (`initial_only` done); an error stops the source.
    fn reader_finished(&mut self, outcome: Option<Result<bool, SourceError>>) -> Result<bool, SourceError> {
        self.snap = None;
        match outcome {
            Some(Ok(stop)) => Ok(stop),
            Some(Err(e)) => Err(e),
            None => Err(SourceError::Retryable("the snapshot reader stopped unexpectedly".into())),
        }
    }

    fn on_durable<T: Transport>(&mut self, d: Option<Position>, wire: &T) {
        if let Some(Position::Postgres { lsn, .. }) = d {
            if self.durable.is_none_or(|cur| lsn.0 > cur) {
                self.durable = Some(lsn.0);
            }
            // Only ever a durable position reaches the server.
            wire.acknowledge(lsn.0);
        }
    }

    /// Handles one event; returns false when the stream ended cleanly.
    async fn handle(&mut self, ev: WireEvent, ctx: &mut SourceContext) -> Result<bool, SourceError> {
        match ev {
            WireEvent::KeepAlive { wal_end } => self.maybe_idle_advance(wal_end, ctx).await?,
            WireEvent::Begin { final_lsn, xid, commit_time } => self.begin(final_lsn, xid, commit_time),
            WireEvent::Commit { commit_lsn, .. } => self.commit(commit_lsn, ctx).await?,
            WireEvent::LogicalMessage { transactional, lsn, prefix, content } => {
                self.logical_message(transactional, lsn, &prefix, &content, ctx).await?;
            }
            WireEvent::Data { lsn, data } => {
                let msg = pgoutput::decode(&data).map_err(|e| SourceError::Fatal(format!("{e} at {}", Lsn(lsn))))?;
                self.message(lsn, msg, ctx).await?;
            }
            WireEvent::End => {
                if ctx.shutdown.is_cancelled() {
                    return Ok(false);
                }
                return Err(SourceError::Retryable("PostgreSQL ended the replication stream".into()));
            }
        }
        Ok(true)
    }

    fn begin(&mut self, final_lsn: u64, xid: u32, commit_time: i64) {
        let skip = self.checkpoint.is_some_and(|c| c.covers(final_lsn));
        if skip {
            tracing::debug!(source = %self.source_id, commit_lsn = %Lsn(final_lsn), xid, "skipping a transaction at or before the checkpoint");
        }
        self.tx = Some(Tx {
            xid,
            ts_ms: commit_time.div_euclid(1000) + PG_EPOCH_MS,
            skip,
            index: 0,
            tx_id: xid.to_string().into(),
            position: Position::Postgres { lsn: Lsn(final_lsn), tx_id: Some(u64::from(xid)) },
        });
    }

    async fn commit(&mut self, commit_lsn: u64, ctx: &mut SourceContext) -> Result<(), SourceError> {
        let tx = self.tx.take();
        if let (Some(side), Some(tx)) = (self.snap.as_mut(), tx.as_ref()) {
            if side.recent.len() >= snapshot::RECENT_XIDS {
                side.recent.pop_front();
            }
            side.recent.push_back(tx.xid);
        }
        match tx {
            Some(tx) if !tx.skip => {
                ctx.sender.commit(Position::Postgres { lsn: Lsn(commit_lsn), tx_id: Some(u64::from(tx.xid)) }).await?;
            }
            Some(_) => {}
            None => {
                return Err(SourceError::Retryable(format!(
                    "protocol error: Commit at {} without Begin",
                    Lsn(commit_lsn)
                )))
            }
        }
        if self.received.is_none_or(|r| commit_lsn > r) {
            self.received = Some(commit_lsn);
        }
        Ok(())
    }

    /// The idle rule: with no transaction open and everything received
    /// durable, checkpoint at the server's WAL end.
    async fn maybe_idle_advance(&mut self, wal_end: u64, ctx: &mut SourceContext) -> Result<(), SourceError> {
        if self.tx.is_some() || ctx.sender.buffered() > 0 {
            return Ok(());
        }
        if let Some(r) = self.received {
            if self.durable.is_none_or(|d| d < r) {
                return Ok(());
            }
        }
        let target = wal_end;
        if target == 0 || self.durable.is_some_and(|d| target <= d) || self.received.is_some_and(|r| target <= r) {
            return Ok(());
        }
        if self.last_idle_advance.is_some_and(|t| t.elapsed() < IDLE_ADVANCE_EVERY) {
            return Ok(());
        }
        self.last_idle_advance = Some(Instant::now());
        tracing::debug!(source = %self.source_id, lsn = %Lsn(target), "idle: advancing the checkpoint to the server's WAL end");
        ctx.sender.commit(Position::Postgres { lsn: Lsn(target), tx_id: None }).await?;
        ctx.sender.flush().await?;
        self.received = Some(target);
        Ok(())
    }

    async fn message(&mut self, lsn: u64, msg: Message, ctx: &mut SourceContext) -> Result<(), SourceError> {
        match msg {
            Message::Begin { final_lsn, commit_time, xid } => self.begin(final_lsn, xid, commit_time),
            Message::Commit { commit_lsn, .. } => self.commit(commit_lsn, ctx).await?,
            Message::Origin { lsn: origin_lsn, name } => {
                tracing::debug!(source = %self.source_id, origin = name, origin_lsn = %Lsn(origin_lsn), "transaction origin");
            }
            Message::Type { id, namespace, name } => {
                self.types.insert(id, format!("{namespace}.{name}"));
            }
            Message::LogicalMessage { transactional, lsn, prefix, content } => {
                self.logical_message(transactional, lsn, &prefix, &content, ctx).await?;
            }
            Message::Relation { id, namespace, name, replica_identity, columns } => {
                self.relation(id, namespace, name, replica_identity, columns);
            }
            Message::Insert { relation, new } => {
                let Some(rel) = self.row_target(relation)? else { return Ok(()) };
                let after = self.row(rel, new, None)?;
                self.emit(lsn, relation, Op::Create, None, Some(after), ctx).await?;
            }
            Message::Update { relation, old, new } => {
                let Some(rel) = self.row_target(relation)? else { return Ok(()) };
                let (before, old_values) = match old {
                    Some((b'O', t)) => {
                        let r = self.row(rel, t, None)?;
                        let vals = r.values().to_vec();
                        (Some(r), Some(vals))
                    }
                    Some((_, t)) => (Some(self.key_row(rel, t)?), None),
                    None => (None, None),
                };
                let after = self.row(rel, new, old_values.as_deref())?;
                self.emit(lsn, relation, Op::Update, before, Some(after), ctx).await?;
            }
            Message::Delete { relation, kind, old } => {
                let Some(rel) = self.row_target(relation)? else { return Ok(()) };
                let before = if kind == b'O' { self.row(rel, old, None)? } else { self.key_row(rel, old)? };
                self.emit(lsn, relation, Op::Delete, Some(before), None, ctx).await?;
            }
            Message::Truncate { relations, .. } => {
                for relation in relations {
                    if self.row_target(relation)?.is_some() {
                        self.emit(lsn, relation, Op::Truncate, None, None, ctx).await?;
                    }
                }
            }
        }
        Ok(())
    }

    fn relation(
        &mut self,
        id: u32,
        namespace: String,
        name: String,
        replica_identity: u8,
        columns: Vec<pgoutput::RelationColumn>,
    ) {
        let wanted = config::any_matches(&self.patterns, &namespace, &name);
        let names: Columns = columns.iter().map(|c| Arc::<str>::from(c.name.as_str())).collect::<Vec<_>>().into();
        let key_idx: Vec<usize> = columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect();
        let key_columns: Columns = key_idx.iter().map(|i| names[*i].clone()).collect::<Vec<_>>().into();
        let mut pending_schema = None;
        if wanted {
            pending_schema = Some(json!({
                "columns": columns.iter().map(|c| json!({
                    "name": c.name,
                    "type_oid": c.type_oid,
                    "type_name": values::builtin_type_name(c.type_oid)
                        .map(str::to_string)
                        .or_else(|| self.types.get(&c.type_oid).cloned()),
                    "type_modifier": c.type_modifier,
                    "key": c.key,
                })).collect::<Vec<_>>(),
                "replica_identity": match replica_identity {
                    b'd' => "default",
                    b'f' => "full",
                    b'i' => "index",
                    b'n' => "nothing",
                    _ => "unknown",
                },
            }));
        } else {
            tracing::debug!(source = %self.source_id, schema = namespace, table = name, "relation not matched by `tables`: its changes are ignored");
        }
        self.relations.insert(
            id,
            Relation {
                schema: namespace.into(),
                table: name.into(),
                columns: names,
                type_oids: columns.iter().map(|c| c.type_oid).collect(),
                key_idx,
                key_columns,
                version: None,
                pending_schema,
                wanted,
            },
        );
    }

    /// Registers a relation's pending schema at the position of its first
    /// change, reusing the version already recorded for that position.
    async fn ensure_version(&mut self, relation: u32, lsn: u64, ctx: &SourceContext) -> Result<(), SourceError> {
        let xid = self.tx.as_ref().map(|t| u64::from(t.xid));
        let Some(rel) = self.relations.get_mut(&relation) else { return Ok(()) };
        let Some(schema) = rel.pending_schema.take() else { return Ok(()) };
        let position = Position::Postgres { lsn: Lsn(lsn), tx_id: xid };
        let fp = fingerprint(&schema);
        rel.version = match ctx.schemas.version_at(&rel.schema, &rel.table, &position) {
            Some(v) if v.fingerprint == fp => Some(v.version),
            _ => {
                let durable = ctx.durable.borrow().clone();
                Some(ctx.schemas.register(&rel.schema, &rel.table, schema, Some(position), durable).await.map_err(
                    |e| SourceError::Retryable(format!("registering the schema of {}.{}: {e}", rel.schema, rel.table)),
                )?)
            }
        };
        Ok(())
    }

    /// The relation of a row message, or `None` when its changes are not
    /// wanted or its transaction is skipped.
    fn row_target(&self, relation: u32) -> Result<Option<&Relation>, SourceError> {
        if self.tx.as_ref().is_some_and(|t| t.skip) {
            return Ok(None);
        }
        let rel = self.relations.get(&relation).ok_or_else(|| {
            SourceError::Retryable(format!(
                "protocol error: change for relation {relation} before its Relation message"
            ))
        })?;
        Ok(rel.wanted.then_some(rel))
    }

    fn value(rel: &Relation, i: usize, v: TupleValue, fallback: Option<&[Value]>) -> Value {
        match v {
            TupleValue::Null => Value::Null,
            TupleValue::UnchangedToast => match fallback.and_then(|f| f.get(i)) {
                Some(old) if !is_toast_marker(old) => old.clone(),
                _ => values::unchanged_toast(),
            },
            TupleValue::Text(b) => values::to_json(rel.type_oids[i], &String::from_utf8_lossy(&b)),
            TupleValue::Binary(b) => {
                use base64::Engine as _;
                Value::String(base64::engine::general_purpose::STANDARD.encode(&b))
            }
        }
    }

    fn row(&self, rel: &Relation, tuple: Vec<TupleValue>, fallback: Option<&[Value]>) -> Result<Row, SourceError> {
        if tuple.len() != rel.columns.len() {
            return Err(SourceError::Fatal(format!(
                "protocol error: a row of {}.{} has {} values but its relation has {} columns",
                rel.schema,
                rel.table,
                tuple.len(),
                rel.columns.len()
            )));
        }
        let values = tuple.into_iter().enumerate().map(|(i, v)| Self::value(rel, i, v, fallback)).collect();
        Ok(Row::new(rel.columns.clone(), values))
    }

    fn key_row(&self, rel: &Relation, tuple: Vec<TupleValue>) -> Result<Row, SourceError> {
        let full = self.row(rel, tuple, None)?;
        let values = rel.key_idx.iter().map(|i| full.values()[*i].clone()).collect();
        Ok(Row::new(rel.key_columns.clone(), values))
    }

    async fn emit(
        &mut self,
        lsn: u64,
        relation: u32,
        op: Op,
        before: Option<Row>,
        after: Option<Row>,
        ctx: &mut SourceContext,
    ) -> Result<(), SourceError> {
        self.ensure_version(relation, lsn, ctx).await?;
        let rel = self.relations.get(&relation).expect("checked by row_target");
        if let Some(side) = self.snap.as_mut().filter(|s| !s.windows.is_empty()) {
            let name = format!("{}.{}", rel.schema, rel.table);
            for w in side.windows.values_mut().filter(|w| w.table == name) {
                if op == Op::Truncate {
                    w.window.truncate();
                }
                for row in [&before, &after].into_iter().flatten() {
                    w.touch(row);
                }
            }
        }
        let tx = self.tx.as_mut().ok_or_else(|| {
            SourceError::Retryable(format!("protocol error: change at {} outside a transaction", Lsn(lsn)))
        })?;
        let event = Event {
            op,
            before,
            after,
            source: SourceMeta {
                connector: "postgres",
                source_id: self.source_id.clone(),
                pipeline: ctx.pipeline.clone(),
                tenant: ctx.tenant.clone(),
                db: rel.schema.clone(),
                table: rel.table.clone(),
                position: Position::Postgres { lsn: Lsn(lsn), tx_id: Some(u64::from(tx.xid)) },
                ts_ms: tx.ts_ms,
            },
            tx_id: Some(tx.tx_id.clone()),
            tx_position: tx.position.clone(),
            index: tx.index,
            schema_version: rel.version,
            key_columns: (!rel.key_columns.is_empty()).then(|| rel.key_columns.clone()),
        };
        tx.index += 1;
        ctx.sender.push(event).await?;
        Ok(())
    }
}

/// Waits for the snapshot reader's end (forever when there is no reader).
async fn reader_outcome(snap: &mut Option<snapshot::StreamSide>) -> Option<Result<bool, SourceError>> {
    match snap {
        Some(side) => (&mut side.link.outcome).await.ok(),
        None => std::future::pending().await,
    }
}

impl Streamer {
    /// A logical decoding message: this run's watermarks open and close
    /// snapshot windows; anything else is logged and ignored.
    async fn logical_message(
        &mut self,
        transactional: bool,
        lsn: u64,
        prefix: &str,
        content: &[u8],
        ctx: &mut SourceContext,
    ) -> Result<(), SourceError> {
        let ours = prefix == snapshot::WATERMARK_PREFIX && !transactional;
        let wm = match (ours, self.snap.as_ref()) {
            (true, Some(side)) => match serde_json::from_slice::<Watermark>(content) {
                Ok(wm) if wm.run == side.link.run => Some(wm),
                _ => None,
            },
            _ => None,
        };
        let Some(wm) = wm else {
            tracing::debug!(source = %self.source_id, transactional, lsn = %Lsn(lsn), prefix, len = content.len(), "logical decoding message (not emitted)");
            return Ok(());
        };
        if self.tx.is_some() {
            return Err(SourceError::Retryable(format!(
                "protocol error: a non-transactional message at {} inside a transaction",
                Lsn(lsn)
            )));
        }
        let side = self.snap.as_mut().expect("checked above");
        match wm.kind {
            WatermarkKind::Low => {
                side.windows.insert(
                    wm.chunk,
                    snapshot::OpenWindow {
                        table: wm.table,
                        key: wm.key,
                        window: Default::default(),
                        before_low: side.recent.iter().copied().collect(),
                    },
                );
                Ok(())
            }
            WatermarkKind::High => self.close_window(lsn, wm, ctx).await,
        }
    }

    /// The high watermark: reconcile the chunk with its window and emit what
    /// remains as `r` events committed at this position.
    async fn close_window(&mut self, lsn: u64, wm: Watermark, ctx: &mut SourceContext) -> Result<(), SourceError> {
        let side = self.snap.as_mut().expect("called with a reader");
        let Some(win) = side.windows.remove(&wm.chunk) else {
            // Its low watermark came before the position this run resumed at.
            tracing::debug!(source = %self.source_id, chunk = wm.chunk, "high watermark without its low one; ignored");
            return Ok(());
        };
        while let Ok(c) = side.link.chunks.try_recv() {
            side.pending.insert(c.chunk, c);
        }
        let msg = side.pending.remove(&wm.chunk).ok_or_else(|| {
            SourceError::Retryable(format!(
                "snapshot: chunk {} reached its high watermark but was never read",
                wm.chunk
            ))
        })?;
        if win.before_low.iter().any(|x| msg.snapshot.invisible(*x)) {
            let _ = msg.verdict.send(false);
            return Ok(());
        }
        // The reader may read the next chunk while this one is delivered.
        let _ = msg.verdict.send(true);
        let converted = msg.rows.await.map_err(|e| {
            SourceError::Retryable(format!("snapshot: converting chunk {} of {} failed: {e}", wm.chunk, msg.table))
        })?;
        let rows = win.window.reconcile(converted);
        let emitted = rows.len() as u64;
        let metrics = side.metrics.clone();
        let relation = self
            .relations
            .iter()
            .find(|(_, r)| r.wanted && *r.schema == *msg.schema && *r.table == *msg.table_name)
            .map(|(id, _)| *id);
        if let Some(id) = relation {
            self.ensure_version(id, lsn, ctx).await?;
        }
        let schema_version = relation.and_then(|id| self.relations.get(&id)).and_then(|r| r.version);
        let key_columns: Option<Columns> = (!win.key.is_empty())
            .then(|| win.key.iter().map(|k| Arc::<str>::from(k.as_str())).collect::<Vec<_>>().into());
        let position = Position::Postgres { lsn: Lsn(lsn), tx_id: None };
        let ts_ms = chrono_now_ms();
        for (index, row) in rows.into_iter().enumerate() {
            ctx.sender
                .push(Event {
                    op: Op::Read,
                    before: None,
                    after: Some(row),
                    source: SourceMeta {
                        connector: "postgres",
                        source_id: self.source_id.clone(),
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
        if self.received.is_none_or(|r| lsn > r) {
            self.received = Some(lsn);
        }
        metrics.rows(&msg.table, emitted);
        if let Some(p) = &self.progress {
            let _ = p.send(PendingProgress { position, table: msg.table.clone(), progress: msg.progress });
        }
        Ok(())
    }
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn is_toast_marker(v: &Value) -> bool {
    v.as_object().is_some_and(|o| o.contains_key(values::UNCHANGED_TOAST_KEY))
}

#[cfg(test)]
mod tests {
    use super::Resume;

    #[test]
    fn resume_skips_only_what_the_checkpoint_covers() {
        let tx = Resume { lsn: 100, inclusive: true };
        assert!(tx.covers(99) && tx.covers(100) && !tx.covers(101));
        let idle = Resume { lsn: 100, inclusive: false };
        assert!(idle.covers(99) && !idle.covers(100) && !idle.covers(101));
    }
}

/// The streamer's side of the DBLog method, driven by captured messages:
/// which rows a chunk emits, at which position, and when its progress may
/// be stored.
#[cfg(test)]
mod snapshot_tests {
    use std::collections::{HashMap, VecDeque};
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use bytes::Bytes;
    use deltaforge_core::snapshot::{
        key_string, PendingProgress, ReadKind, SnapshotMetrics, TableProgress, Watermark, WatermarkKind,
    };
    use deltaforge_core::{
        ChunkSender, Lsn, Op, Position, Row, SchemaRegistry, SnapshotStore, SourceChunk, SourceContext,
    };
    use serde_json::json;
    use tokio::sync::{mpsc, oneshot, watch};
    use tokio_util::sync::CancellationToken;

    use crate::snapshot::{ChunkMsg, SnapshotLink, StreamSide, XidSnapshot, WATERMARK_PREFIX};
    use crate::transport::{Transport, TransportError, WireEvent};
    use crate::Streamer;

    struct FakeWire(VecDeque<WireEvent>);

    #[async_trait]
    impl Transport for FakeWire {
        async fn query(&mut self, _: &str) -> Result<Vec<Vec<Option<String>>>, TransportError> {
            Ok(Vec::new())
        }
        async fn start(&mut self) -> Result<(), TransportError> {
            Ok(())
        }
        fn try_recv(&mut self) -> Option<Result<WireEvent, TransportError>> {
            self.0.pop_front().map(Ok)
        }
        async fn recv(&mut self) -> Result<WireEvent, TransportError> {
            match self.0.pop_front() {
                Some(e) => Ok(e),
                None => std::future::pending().await,
            }
        }
        fn acknowledge(&self, _: u64) {}
    }

    fn watermark(run: &str, kind: WatermarkKind, lsn: u64) -> WireEvent {
        let wm = Watermark { run: run.into(), chunk: 1, kind, table: "public.t".into(), key: vec!["id".into()] };
        WireEvent::LogicalMessage {
            transactional: false,
            lsn,
            prefix: WATERMARK_PREFIX.into(),
            content: Bytes::from(serde_json::to_vec(&wm).unwrap()),
        }
    }

    fn relation() -> WireEvent {
        let mut m = vec![b'R'];
        m.extend_from_slice(&1u32.to_be_bytes());
        m.extend_from_slice(b"public\0t\0d");
        m.extend_from_slice(&2i16.to_be_bytes());
        m.push(1);
        m.extend_from_slice(b"id\0");
        m.extend_from_slice(&23u32.to_be_bytes());
        m.extend_from_slice(&(-1i32).to_be_bytes());
        m.push(0);
        m.extend_from_slice(b"v\0");
        m.extend_from_slice(&25u32.to_be_bytes());
        m.extend_from_slice(&(-1i32).to_be_bytes());
        WireEvent::Data { lsn: 0, data: Bytes::from(m) }
    }

    fn insert(lsn: u64, id: &str, v: &str) -> WireEvent {
        let mut m = vec![b'I'];
        m.extend_from_slice(&1u32.to_be_bytes());
        m.push(b'N');
        m.extend_from_slice(&2i16.to_be_bytes());
        for s in [id, v] {
            m.push(b't');
            m.extend_from_slice(&(s.len() as i32).to_be_bytes());
            m.extend_from_slice(s.as_bytes());
        }
        WireEvent::Data { lsn, data: Bytes::from(m) }
    }

    fn tx(xid: u32, commit: u64, body: Vec<WireEvent>) -> Vec<WireEvent> {
        let mut v = vec![WireEvent::Begin { final_lsn: commit, xid, commit_time: 0 }];
        v.extend(body);
        v.push(WireEvent::Commit { commit_lsn: commit, end_lsn: commit + 8, commit_time: 0 });
        v
    }

    /// Runs the streamer over `wire` with one pending chunk of rows 1, 2, 3;
    /// returns the events and commits it sent, the verdict and the progress
    /// handed over.
    async fn drive(
        wire: Vec<WireEvent>,
        snapshot: XidSnapshot,
        until_commit: u64,
    ) -> (Vec<deltaforge_core::Event>, Vec<Position>, Option<bool>, Vec<PendingProgress>) {
        let run = "run-1".to_string();
        let (chunk_tx, chunks) = mpsc::channel(4);
        let (_outcome_tx, outcome) = oneshot::channel();
        let (verdict, verdict_rx) = oneshot::channel();
        let cols: deltaforge_core::Columns = vec![Arc::<str>::from("id"), Arc::<str>::from("v")].into();
        let rows: Vec<_> = (1..=3)
            .map(|i| (key_string(&[json!(i)]), Row::new(cols.clone(), vec![json!(i), json!(format!("old{i}"))])))
            .collect();
        let rows = tokio::spawn(std::future::ready(rows));
        let mut progress = TableProgress::start(ReadKind::Snapshot, None, Some(3));
        progress.chunk = 1;
        chunk_tx
            .send(ChunkMsg {
                chunk: 1,
                table: "public.t".into(),
                schema: "public".into(),
                table_name: "t".into(),
                rows,
                snapshot,
                progress,
                verdict,
            })
            .await
            .unwrap();
        let (ptx, mut prx) = mpsc::unbounded_channel();
        let mut streamer = Streamer::new("src".into(), vec![crate::TablePattern::parse("public.t").unwrap()], None);
        streamer.snap = Some(StreamSide {
            link: SnapshotLink { run, chunks, outcome },
            windows: HashMap::new(),
            pending: HashMap::new(),
            recent: VecDeque::new(),
            metrics: SnapshotMetrics::new("p"),
        });
        streamer.progress = Some(ptx);
        let storage = Arc::new(deltaforge_storage::MemoryBackend::new());
        let (tx, mut rx) = mpsc::channel::<SourceChunk>(64);
        let (_dtx, durable) = watch::channel(None);
        let shutdown = CancellationToken::new();
        let ctx = SourceContext {
            pipeline: "p".into(),
            tenant: "t".into(),
            resume_from: None,
            sender: ChunkSender::new(tx, 16),
            durable,
            shutdown: shutdown.clone(),
            schemas: SchemaRegistry::load(storage.clone(), "t").await.unwrap(),
            snapshots: SnapshotStore::new(storage, "p"),
        };
        let task = tokio::spawn(async move {
            let mut wire = FakeWire(wire.into());
            streamer.run(&mut wire, ctx).await
        });
        let (mut events, mut commits) = (Vec::new(), Vec::new());
        while !commits.iter().any(|p: &Position| matches!(p, Position::Postgres { lsn, .. } if lsn.0 == until_commit)) {
            let c = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("more output").unwrap();
            events.extend(c.events);
            commits.extend(c.commits.into_iter().map(|c| c.position));
        }
        shutdown.cancel();
        task.await.unwrap().unwrap();
        let verdict = verdict_rx.await.ok();
        let mut stored = Vec::new();
        while let Ok(p) = prx.try_recv() {
            stored.push(p);
        }
        (events, commits, verdict, stored)
    }

    #[tokio::test]
    async fn keys_changed_in_the_window_win_and_the_rest_is_read_at_the_high_watermark() {
        let mut wire = vec![relation(), watermark("run-1", WatermarkKind::Low, 100)];
        wire.extend(tx(7, 150, vec![insert(120, "2", "new")]));
        // Another run's watermark is ignored.
        wire.push(watermark("other-run", WatermarkKind::High, 180));
        wire.push(watermark("run-1", WatermarkKind::High, 200));
        wire.extend(tx(8, 250, vec![insert(220, "9", "after")]));
        let (events, commits, verdict, stored) = drive(wire, XidSnapshot { xmin: 5, xmax: 7, xip: vec![] }, 250).await;
        let ops: Vec<(Op, i64)> =
            events.iter().map(|e| (e.op, e.after.as_ref().unwrap().get("id").unwrap().as_i64().unwrap())).collect();
        assert_eq!(ops, vec![(Op::Create, 2), (Op::Read, 1), (Op::Read, 3), (Op::Create, 9)]);
        let high = Position::Postgres { lsn: Lsn(200), tx_id: None };
        assert_eq!(events[1].tx_position, high);
        assert_eq!((events[1].index, events[2].index), (0, 1));
        assert_eq!(events[1].after.as_ref().unwrap().get("v"), Some(&json!("old1")));
        assert!(commits.contains(&high), "{commits:?}");
        assert_eq!(verdict, Some(true));
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].position, high);
        assert_eq!(stored[0].progress.chunk, 1);
    }

    #[tokio::test]
    async fn a_commit_before_the_low_watermark_not_yet_visible_makes_the_chunk_read_again() {
        // Transaction 7 reached the stream before the low watermark, but the
        // chunk's snapshot still saw it running: its rows may be stale.
        let mut wire = vec![relation()];
        wire.extend(tx(7, 90, vec![insert(80, "2", "new")]));
        wire.push(watermark("run-1", WatermarkKind::Low, 100));
        wire.push(watermark("run-1", WatermarkKind::High, 200));
        wire.extend(tx(8, 250, vec![insert(220, "9", "after")]));
        let (events, _, verdict, stored) = drive(wire, XidSnapshot { xmin: 7, xmax: 9, xip: vec![7] }, 250).await;
        assert!(events.iter().all(|e| e.op != Op::Read), "a stale chunk was emitted");
        assert_eq!(verdict, Some(false));
        assert!(stored.is_empty());
    }
}
