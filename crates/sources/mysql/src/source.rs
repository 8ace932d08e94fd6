//! The running source: connection, start-up checks, start position, the
//! binlog event loop with its transaction state machine, and schema
//! tracking across DDL.
//!
//! It owns the mapping from binlog events to events and commits. It must
//! never commit a position inside a transaction, and never start from a
//! position other than the checkpoint (or, without one, the current end).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use mysql_async::binlog::events::{Event as BinlogEvent, EventData, RowsEventData, TableMapEvent};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn, OptsBuilder, SslOpts};
use serde_json::Value;

use deltaforge_core::{Event, LagProbe, PipelineClosed, Position, Source, SourceContext, SourceError, SourceMeta};

use crate::config::{matches_any, parse_dsn, redact_dsn, MysqlConfig, TablePattern, TlsMode};
use crate::decode::TableDecoder;
use crate::gtid::{parse_mariadb_gtid, MariaGtidState, MysqlGtidSet, MARIADB_GTID_EVENT};
use crate::lag::BinlogLagProbe;
use crate::schema::{self, TableSchema};

/// Errors of the MySQL source, with their context. Each maps to a fatal or
/// retryable [`SourceError`].
#[derive(Debug, thiserror::Error)]
pub enum MysqlSourceError {
    /// Bad configuration.
    #[error("mysql source {id}: invalid configuration: {msg}")]
    Config {
        /// Source id.
        id: String,
        /// What is wrong and the fix.
        msg: String,
    },
    /// The server is not set up for CDC (setting or privilege), with the fix.
    #[error("mysql source {id}: server {dsn} is not ready for change capture: {msg}")]
    Setup {
        /// Source id.
        id: String,
        /// Redacted DSN.
        dsn: String,
        /// What is wrong and the fix.
        msg: String,
    },
    /// A server or network error during `context`.
    #[error("mysql source {id}: {context} ({dsn}): {source}")]
    Server {
        /// Source id.
        id: String,
        /// Redacted DSN.
        dsn: String,
        /// What was being done.
        context: String,
        /// The driver's error.
        #[source]
        source: Box<mysql_async::Error>,
    },
    /// The binlog after the checkpoint is gone.
    #[error("mysql source {id}: the checkpoint can no longer be resumed: {msg}")]
    Purged {
        /// Source id.
        id: String,
        /// What is missing and the recovery.
        msg: String,
    },
    /// A binlog event could not be decoded.
    #[error("mysql source {id}: cannot decode the binlog at {at}: {msg}")]
    Decode {
        /// Source id.
        id: String,
        /// Position of the event.
        at: String,
        /// Why.
        msg: String,
    },
    /// The connection went silent.
    #[error("mysql source {id}: no binlog event or heartbeat from {dsn} for {secs} s; reconnecting")]
    Silent {
        /// Source id.
        id: String,
        /// Redacted DSN.
        dsn: String,
        /// Seconds of silence.
        secs: u64,
    },
    /// The schema registry failed.
    #[error("mysql source {id}: schema registry: {msg}")]
    Registry {
        /// Source id.
        id: String,
        /// Why.
        msg: String,
    },
    /// The pipeline stopped accepting events.
    #[error(transparent)]
    Closed(#[from] PipelineClosed),
    /// The snapshot reader failed (its error keeps its kind).
    #[error("snapshot: {0}")]
    Snapshot(SourceError),
}

/// Server error codes that retrying cannot fix.
const FATAL_SERVER_CODES: &[u16] = &[
    1044, // access denied to database
    1045, // access denied (bad user/password)
    1049, // unknown database
    1142, // command denied
    1227, // missing privilege
    1236, // fatal error reading binlog (purged, bad position)
    1698, // access denied (auth plugin)
];

impl MysqlSourceError {
    /// The pipeline's error kind for this error: fatal when retrying cannot help.
    pub(crate) fn into_source_error(self) -> SourceError {
        if let MysqlSourceError::Snapshot(e) = self {
            return e;
        }
        let fatal = match &self {
            MysqlSourceError::Config { .. }
            | MysqlSourceError::Setup { .. }
            | MysqlSourceError::Purged { .. }
            | MysqlSourceError::Decode { .. } => true,
            MysqlSourceError::Server { source, .. } => match source.as_ref() {
                mysql_async::Error::Server(e) => FATAL_SERVER_CODES.contains(&e.code),
                mysql_async::Error::Url(_) => true,
                _ => false,
            },
            MysqlSourceError::Silent { .. }
            | MysqlSourceError::Registry { .. }
            | MysqlSourceError::Closed(_)
            | MysqlSourceError::Snapshot(_) => false,
        };
        if fatal {
            SourceError::Fatal(self.to_string())
        } else {
            SourceError::Retryable(self.to_string())
        }
    }
}

type Result<T> = std::result::Result<T, MysqlSourceError>;

/// A MySQL/MariaDB source instance (one run).
#[derive(Clone)]
pub struct MysqlSource {
    cfg: MysqlConfig,
    patterns: Vec<TablePattern>,
    source_id: Arc<str>,
    dsn_shown: String,
}

impl MysqlSource {
    /// Builds the source from a validated configuration.
    pub fn new(cfg: MysqlConfig) -> std::result::Result<Self, SourceError> {
        let source_id: Arc<str> = cfg.id.clone().into();
        let err = |msg: String| MysqlSourceError::Config { id: cfg.id.clone(), msg }.into_source_error();
        if let Err((field, msg)) = cfg.check() {
            return Err(err(format!("{field}: {msg}")));
        }
        let patterns = cfg.patterns().map_err(err)?;
        let dsn_shown = redact_dsn(&cfg.dsn);
        Ok(MysqlSource { cfg, patterns, source_id, dsn_shown })
    }

    fn server_err(&self, context: impl Into<String>) -> impl FnOnce(mysql_async::Error) -> MysqlSourceError + '_ {
        let context = context.into();
        move |source| MysqlSourceError::Server {
            id: self.cfg.id.clone(),
            dsn: self.dsn_shown.clone(),
            context,
            source: Box::new(source),
        }
    }

    fn setup_err(&self, msg: impl Into<String>) -> MysqlSourceError {
        MysqlSourceError::Setup { id: self.cfg.id.clone(), dsn: self.dsn_shown.clone(), msg: msg.into() }
    }

    pub(crate) async fn connect(&self) -> Result<Conn> {
        let dsn = parse_dsn(&self.cfg.dsn)
            .map_err(|msg| MysqlSourceError::Config { id: self.cfg.id.clone(), msg: format!("dsn: {msg}") })?;
        let mut b = OptsBuilder::default()
            .ip_or_hostname(dsn.host.clone())
            .tcp_port(dsn.port)
            .user(Some(dsn.user.clone()))
            .pass(Some(dsn.password.clone()))
            .db_name(dsn.db.clone())
            .prefer_socket(false)
            .tcp_keepalive(Some(Duration::from_secs(30)))
            .stmt_cache_size(0);
        let tls = &self.cfg.tls;
        if tls.mode != TlsMode::Disabled {
            let mut ssl = SslOpts::default();
            if let Some(ca) = &tls.ca_file {
                ssl = ssl.with_root_certs(vec![ca.clone().into()]);
            }
            match tls.mode {
                TlsMode::Required => {
                    ssl = ssl.with_danger_accept_invalid_certs(true).with_danger_skip_domain_validation(true)
                }
                TlsMode::VerifyCa => ssl = ssl.with_danger_skip_domain_validation(true),
                _ => {}
            }
            b = b.ssl_opts(Some(ssl));
        }
        let timeout = Duration::from_secs(self.cfg.connect_timeout_secs);
        match tokio::time::timeout(timeout, Conn::new(b)).await {
            Ok(r) => r.map_err(self.server_err("connecting")),
            Err(_) => Err(MysqlSourceError::Server {
                id: self.cfg.id.clone(),
                dsn: self.dsn_shown.clone(),
                context: "connecting".into(),
                source: Box::new(mysql_async::Error::Other(format!("no answer within {} s", timeout.as_secs()).into())),
            }),
        }
    }
}

/// What the start-up checks learned about the server.
#[derive(Debug, Clone)]
struct ServerInfo {
    mariadb: bool,
    gtid_on: bool,
    /// Events carry a CRC32 (`binlog_checksum` is not NONE).
    checksum: bool,
}

async fn query_vars(
    conn: &mut Conn,
    names: &[&str],
) -> std::result::Result<HashMap<String, String>, mysql_async::Error> {
    let list = names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(",");
    let rows: Vec<(String, String)> =
        conn.query(format!("SHOW GLOBAL VARIABLES WHERE Variable_name IN ({list})")).await?;
    Ok(rows.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect())
}

impl MysqlSource {
    async fn check_server(&self, conn: &mut Conn) -> Result<ServerInfo> {
        let (version, server_id): (String, u64) = conn
            .query_first("SELECT VERSION(), @@server_id")
            .await
            .map_err(self.server_err("reading the server version"))?
            .unwrap_or_default();
        let detected = version.to_ascii_lowercase().contains("mariadb");
        let mariadb = match self.cfg.flavor {
            crate::config::FlavorSetting::Auto => detected,
            crate::config::FlavorSetting::Mariadb => true,
            crate::config::FlavorSetting::Mysql => false,
        };
        tracing::info!(source = %self.source_id, version = %version, mariadb, "connected to {}", self.dsn_shown);
        let vars = query_vars(
            conn,
            &[
                "log_bin",
                "binlog_format",
                "binlog_row_image",
                "gtid_mode",
                "binlog_row_metadata",
                "log_bin_compress",
                "binlog_row_value_options",
                "binlog_checksum",
            ],
        )
        .await
        .map_err(self.server_err("reading server variables"))?;
        let var = |n: &str| vars.get(n).map(|s| s.to_ascii_uppercase()).unwrap_or_default();
        let cnf = if mariadb { "[mariadbd]" } else { "[mysqld]" };
        if var("log_bin") != "ON" && var("log_bin") != "1" {
            return Err(self.setup_err(format!(
                "binary logging is off (log_bin={}); the source reads the binlog. Fix: add `log_bin` (e.g. `log_bin = mysql-bin`) \
                 and `server_id = 1` to the {cnf} section of the server's config and restart it",
                vars.get("log_bin").map(String::as_str).unwrap_or("OFF")
            )));
        }
        if var("binlog_format") != "ROW" {
            return Err(self.setup_err(format!(
                "binlog_format is {}, row changes need binlog_format=ROW. Fix: `SET GLOBAL binlog_format = 'ROW'` and \
                 `binlog_format = ROW` in the {cnf} section (sessions already open keep the old format until they reconnect)",
                var("binlog_format")
            )));
        }
        if var("binlog_row_image") != "FULL" {
            return Err(self.setup_err(format!(
                "binlog_row_image is {}, complete before/after rows need binlog_row_image=FULL. Fix: \
                 `SET GLOBAL binlog_row_image = 'FULL'` and `binlog_row_image = FULL` in the {cnf} section",
                var("binlog_row_image")
            )));
        }
        if mariadb && var("log_bin_compress") == "ON" {
            return Err(self.setup_err(
                "log_bin_compress=ON: compressed binlog events are not supported. Fix: `SET GLOBAL log_bin_compress = OFF` \
                 and `log_bin_compress = OFF` in the [mariadbd] section",
            ));
        }
        if !mariadb && var("binlog_row_value_options").contains("PARTIAL_JSON") {
            return Err(self.setup_err(
                "binlog_row_value_options=PARTIAL_JSON: partial JSON updates cannot be turned into full rows. Fix: \
                 `SET GLOBAL binlog_row_value_options = ''`",
            ));
        }
        if var("binlog_row_metadata") != "FULL" {
            let (shown, fix) = match vars.get("binlog_row_metadata") {
                Some(v) => (
                    v.clone(),
                    format!("`SET GLOBAL binlog_row_metadata = 'FULL'` and `binlog_row_metadata = FULL` in the {cnf} section"),
                ),
                None => (
                    "not available".to_string(),
                    "upgrade to MariaDB 10.5+ or MySQL 8.0.1+ and set binlog_row_metadata=FULL".to_string(),
                ),
            };
            tracing::warn!(
                source = %self.source_id,
                "binlog_row_metadata is {shown} (not FULL): table schemas come from information_schema only. Events \
                 replayed across DDL are then decoded with the catalogue as it is when they are read: if the pipeline is \
                 behind by more than one DDL on a table (e.g. stopped while the table was altered twice), rows written \
                 before the later DDLs get the later shape's column names and types (or placeholder names col_N when \
                 the column count differs). Fix: {fix} (affects binlog events written from then on)"
            );
        } else {
            tracing::info!(source = %self.source_id, "binlog_row_metadata=FULL: rows are decoded with the layout their TABLE_MAP event describes");
        }
        // Privileges.
        let grants: Vec<String> =
            conn.query("SHOW GRANTS").await.map_err(self.server_err("reading privileges (SHOW GRANTS)"))?;
        let global: String = grants
            .iter()
            .map(|g| g.to_ascii_uppercase())
            .filter(|g| g.contains(" ON *.* "))
            .collect::<Vec<_>>()
            .join("\n");
        let all = global.contains("ALL PRIVILEGES");
        let slave = all || global.contains("REPLICATION SLAVE") || global.contains("REPLICATION REPLICA");
        let client = all
            || global.contains("REPLICATION CLIENT")
            || global.contains("BINLOG MONITOR")
            || global.contains("SUPER");
        let uses_roles = grants.iter().any(|g| g.to_ascii_uppercase().starts_with("GRANT `") && !g.contains(" ON "));
        if !uses_roles && (!slave || !client) {
            let user = parse_dsn(&self.cfg.dsn).map(|d| d.user).unwrap_or_default();
            let missing: Vec<&str> = [
                (!slave).then_some("REPLICATION SLAVE"),
                (!client).then_some(if mariadb { "BINLOG MONITOR" } else { "REPLICATION CLIENT" }),
            ]
            .into_iter()
            .flatten()
            .collect();
            return Err(self.setup_err(format!(
                "user '{user}' lacks the privilege(s) {}. Fix: `GRANT {}, SELECT ON *.* TO '{user}'@'%'`",
                missing.join(" and "),
                missing.join(", ")
            )));
        }
        if u64::from(self.cfg.effective_server_id()) == server_id {
            return Err(self.setup_err(format!(
                "server_id {} of this source equals the server's own server_id; set `server_id` in the source config to \
                 another value",
                server_id
            )));
        }
        let gtid_on = mariadb || var("gtid_mode") == "ON";
        let checksum = !matches!(var("binlog_checksum").as_str(), "NONE" | "");
        Ok(ServerInfo { mariadb, gtid_on, checksum })
    }

    /// The current end of the binlog and the GTID state that goes with it.
    async fn current_end(&self, conn: &mut Conn, info: &ServerInfo) -> Result<Position> {
        for _ in 0..20 {
            let a = self.master_status(conn).await?;
            let gtid: Option<String> = if info.mariadb {
                conn.query_first("SELECT @@GLOBAL.gtid_binlog_pos")
                    .await
                    .map_err(self.server_err("reading gtid_binlog_pos"))?
            } else if info.gtid_on {
                conn.query_first("SELECT @@GLOBAL.gtid_executed")
                    .await
                    .map_err(self.server_err("reading gtid_executed"))?
            } else {
                None
            };
            let b = self.master_status(conn).await?;
            if a == b {
                let gtid_set = gtid.map(|g| g.chars().filter(|c| !c.is_whitespace()).collect::<String>());
                return Ok(Position::Mysql {
                    file: a.0.into(),
                    pos: a.1,
                    gtid_set: gtid_set.filter(|g| !g.is_empty()).map(Into::into),
                });
            }
        }
        Err(self.setup_err("the binlog moved on every attempt to read its end together with the GTID state; retry"))
    }

    async fn master_status(&self, conn: &mut Conn) -> Result<(String, u64)> {
        let row: Option<mysql_async::Row> = match conn.query_first("SHOW MASTER STATUS").await {
            Ok(r) => r,
            Err(_) => {
                conn.query_first("SHOW BINARY LOG STATUS").await.map_err(self.server_err("SHOW BINARY LOG STATUS"))?
            }
        };
        let row = row.ok_or_else(|| self.setup_err("SHOW MASTER STATUS returned nothing: binary logging is off"))?;
        let file: String = row.get(0).unwrap_or_default();
        let pos: u64 = row.get(1).unwrap_or_default();
        Ok((file, pos))
    }

    async fn binary_logs(&self, conn: &mut Conn) -> Result<Vec<String>> {
        Ok(self.binary_log_sizes(conn).await?.into_iter().map(|(name, _)| name).collect())
    }

    /// `SHOW BINARY LOGS`: every binlog file the server holds, oldest
    /// first, with its size in bytes (the last one's size is the server's
    /// current position).
    pub(crate) async fn binary_log_sizes(&self, conn: &mut Conn) -> Result<Vec<(String, u64)>> {
        let rows: Vec<mysql_async::Row> =
            conn.query("SHOW BINARY LOGS").await.map_err(self.server_err("SHOW BINARY LOGS"))?;
        Ok(rows.into_iter().filter_map(|r| Some((r.get::<String, _>(0)?, r.get::<u64, _>(1).unwrap_or(0)))).collect())
    }

    /// MariaDB: the GTID state at the start of binlog file `file` (its
    /// GTID_LIST event), `None` when the file starts without one.
    async fn gtid_list_of(&self, conn: &mut Conn, file: &str) -> Result<Option<MariaGtidState>> {
        let rows: Vec<mysql_async::Row> = conn
            .query(format!("SHOW BINLOG EVENTS IN '{}' LIMIT 6", file.replace('\'', "")))
            .await
            .map_err(self.server_err(format!("reading the GTID list of {file}")))?;
        for row in rows {
            let kind: Option<String> = row.get(2);
            let text: Option<String> = row.get(5);
            if kind.as_deref() != Some("Gtid_list") {
                continue;
            }
            let list = text.unwrap_or_default();
            let list = MariaGtidState::parse(list.trim().trim_start_matches('[').trim_end_matches(']'))
                .map_err(|msg| self.setup_err(format!("unreadable GTID list of {file}: {msg}")))?;
            return Ok(Some(list));
        }
        Ok(None)
    }

    /// The start of the oldest binlog the server holds, with the GTID
    /// state before it (MariaDB: the file's GTID list; MySQL with GTIDs:
    /// `gtid_purged`), so that a run started there by GTID or by
    /// file/position reads every transaction still on the server.
    async fn oldest_start(&self, conn: &mut Conn, info: &ServerInfo) -> Result<Position> {
        let logs = self.binary_logs(conn).await?;
        let oldest =
            logs.first().ok_or_else(|| self.setup_err("SHOW BINARY LOGS lists no file: binary logging is off"))?;
        let gtid_set = if info.mariadb {
            self.gtid_list_of(conn, oldest).await?.map(|l| l.to_string())
        } else if info.gtid_on {
            conn.query_first::<String, _>("SELECT @@GLOBAL.gtid_purged")
                .await
                .map_err(self.server_err("reading gtid_purged"))?
                .map(|g| g.chars().filter(|c| !c.is_whitespace()).collect())
        } else {
            None
        };
        // Every binlog file starts with its 4-byte magic number; events start at 4.
        Ok(Position::Mysql {
            file: oldest.as_str().into(),
            pos: 4,
            gtid_set: gtid_set.filter(|g| !g.is_empty()).map(Into::into),
        })
    }

    fn purged_msg(&self, what: &str, oldest: Option<&str>) -> String {
        format!(
            "{what}{}. The changes after the checkpoint are no longer available from the server, so resuming would \
             silently skip them. Recover with `deltaforge checkpoints reset {}` (the source then starts at the current end \
             of the binlog; re-snapshot the captured tables to fill the gap), or with DELETE \
             /pipelines/NAME/checkpoint (it then re-reads from the oldest binlog still held), and keep binlogs longer \
             (binlog_expire_logs_seconds / expire_logs_days) than the pipeline may be stopped",
            oldest.map(|o| format!(" (the oldest binlog on the server is now {o})")).unwrap_or_default(),
            self.cfg.id
        )
    }
}

/// Transaction state while reading.
#[derive(Default)]
struct TxState {
    /// Position where the open transaction began (GTID or BEGIN event).
    start: Option<u64>,
    /// Inside BEGIN … COMMIT/XID.
    in_tx: bool,
    /// Index of the next event in the transaction.
    index: u32,
    /// GTID of the open transaction, as text.
    gtid_text: Option<Arc<str>>,
    /// The open transaction's MariaDB GTID, applied to the state at commit.
    maria: Option<crate::gtid::MariaGtid>,
    /// The open transaction's MySQL GTID (source key, gno).
    mysql: Option<(String, u64)>,
}

struct Run<'a> {
    src: &'a MysqlSource,
    ctx: SourceContext,
    info: ServerInfo,
    meta: Option<Conn>,
    file: Arc<str>,
    maria: MariaGtidState,
    mysql: MysqlGtidSet,
    tx: TxState,
    /// A FORMAT_DESCRIPTION event was seen (checksums are known from then on).
    seen_fde: bool,
    decoders: HashMap<u64, (TableMapEvent<'static>, Option<Arc<TableDecoder>>)>,
    pending_ddl: HashMap<(String, String), Position>,
    schema_cache: HashMap<(String, String, u64), Arc<TableSchema>>,
    /// Collation ids to charsets, for TABLE_MAP metadata.
    collations: schema::Collations,
    /// The snapshot reader's link and the open watermark windows.
    snap: Option<crate::snapshot::StreamSide>,
}

#[async_trait]
impl Source for MysqlSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> std::result::Result<(), SourceError> {
        self.run_inner(ctx).await.map_err(|e| {
            let e = e.into_source_error();
            tracing::error!(source = %self.source_id, "{e}");
            e
        })
    }

    /// Binlog bytes behind, on the probe's own connection (see [`crate::lag`]).
    fn lag_probe(&self, _pipeline: &str) -> Option<Box<dyn LagProbe>> {
        Some(Box::new(BinlogLagProbe::new(self.clone())))
    }

    /// The start of the oldest binlog the server holds (see the crate docs, "Reset").
    async fn reset(self: Box<Self>, _pipeline: &str) -> std::result::Result<Option<Position>, SourceError> {
        let start = async {
            let mut conn = self.connect().await?;
            let info = self.check_server(&mut conn).await?;
            self.oldest_start(&mut conn, &info).await
        }
        .await
        .map_err(MysqlSourceError::into_source_error)?;
        tracing::info!(source = %self.source_id, start = %start, "checkpoint reset: the next start reads from the oldest binlog");
        Ok(Some(start))
    }
}

impl MysqlSource {
    async fn run_inner(&self, mut ctx: SourceContext) -> Result<()> {
        let mut conn = self.connect().await?;
        let info = self.check_server(&mut conn).await?;
        // Where to start.
        let resume = match ctx.resume_from.clone() {
            None => None,
            Some(p @ Position::Mysql { .. }) => Some(p),
            Some(other) => {
                return Err(MysqlSourceError::Config {
                    id: self.cfg.id.clone(),
                    msg: format!(
                        "the stored checkpoint ({other}) is not a MySQL position; reset it with `deltaforge checkpoints reset {}`",
                        self.cfg.id
                    ),
                })
            }
        };
        let (start, fresh) = match resume {
            Some(p) => (p, false),
            None => (self.current_end(&mut conn, &info).await?, true),
        };
        let Position::Mysql { file, pos, gtid_set } = start.clone() else { unreachable!("mysql position") };
        let gtid_text = gtid_set.as_deref().unwrap_or("").to_string();
        let maria = if info.mariadb {
            MariaGtidState::parse(&gtid_text).unwrap_or_default()
        } else {
            MariaGtidState::default()
        };
        let mysql =
            if !info.mariadb { MysqlGtidSet::parse(&gtid_text).unwrap_or_default() } else { MysqlGtidSet::default() };
        // A first start streams from the binlog end it just read by file and
        // position: MariaDB finds a GTID start by scanning the binlog file
        // from its beginning (≈ 0.6 s for a 1 GB file before the first
        // event). Its GTID state still starts the checkpoints' gtid_set.
        let by_gtid = self.cfg.use_gtid && info.gtid_on && !gtid_text.is_empty() && !fresh;
        if !by_gtid {
            let logs = self.binary_logs(&mut conn).await?;
            if !logs.iter().any(|l| **l == *file) {
                return Err(MysqlSourceError::Purged {
                    id: self.cfg.id.clone(),
                    msg: self.purged_msg(
                        &format!(
                            "binlog file {file} (checkpoint {file}:{pos}) is no longer on the server: it was purged"
                        ),
                        logs.first().map(String::as_str),
                    ),
                });
            }
        }
        if by_gtid && info.mariadb {
            // MariaDB streams from the oldest remaining binlog without an error
            // when the checkpoint's GTIDs were purged (it then finds nothing to
            // send after them): compare with the oldest file's starting state.
            let logs = self.binary_logs(&mut conn).await?;
            if let Some(oldest) = logs.first() {
                if let Some(list) = self.gtid_list_of(&mut conn, oldest).await? {
                    if let Some(gap) = maria.gap_before(&list.gtids()) {
                        return Err(MysqlSourceError::Purged {
                            id: self.cfg.id.clone(),
                            msg: self.purged_msg(
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
        }
        // Schemas of the captured tables, registered when first seen.
        let collations = match schema::Collations::load(&mut conn).await {
            Ok(c) => c,
            Err(e) => {
                // The built-in list covers the usual charsets; only lengths
                // of CHAR/VARCHAR in exotic ones could come out in bytes.
                tracing::warn!(source = %self.source_id, "cannot read the server's collations ({e}); using the built-in list");
                schema::Collations::builtin()
            }
        };
        let keep = |d: &str, t: &str| matches_any(&self.patterns, d, t);
        let schemas = schema::load(&mut conn, info.mariadb, None, &keep)
            .await
            .map_err(self.server_err("reading table schemas from information_schema"))?;
        let checkpoint = ctx.durable.borrow().clone();
        let mut names: Vec<_> = schemas.keys().cloned().collect();
        names.sort();
        for key in &names {
            if ctx.schemas.latest(&key.0, &key.1).is_none() {
                ctx.schemas
                    .register(&key.0, &key.1, schemas[key].to_json(), Some(start.clone()), checkpoint.clone())
                    .await
                    .map_err(|e| MysqlSourceError::Registry { id: self.cfg.id.clone(), msg: e.to_string() })?;
            }
        }
        if names.is_empty() {
            tracing::warn!(source = %self.source_id, tables = ?self.cfg.tables, "no existing table matches `tables`; waiting for tables to be created");
        }
        // The binlog connection.
        let mut bconn = self.connect().await?;
        let hb = self.cfg.heartbeat();
        bconn
            .query_drop(format!("SET @master_heartbeat_period = {}", hb.as_nanos()))
            .await
            .map_err(self.server_err("setting the heartbeat period"))?;
        let server_id = self.cfg.effective_server_id();
        let file_bytes = file.as_bytes().to_vec();
        let sids;
        let mut req = BinlogStreamRequest::new(server_id);
        if info.mariadb {
            bconn
                .query_drop("SET @mariadb_slave_capability = 4")
                .await
                .map_err(self.server_err("announcing MariaDB GTID capability"))?;
            if by_gtid {
                let state = maria.to_string();
                bconn
                    .exec_drop("SET @slave_connect_state = ?", (state.clone(),))
                    .await
                    .map_err(self.server_err(format!("setting the GTID start state {state}")))?;
                bconn
                    .query_drop("SET @slave_gtid_strict_mode = 1")
                    .await
                    .map_err(self.server_err("enabling GTID strict mode"))?;
                req = req.with_filename(b"").with_pos(4);
            } else {
                req = req.with_filename(&file_bytes).with_pos(pos);
            }
        } else if by_gtid {
            sids = mysql.to_sids().map_err(|msg| MysqlSourceError::Config { id: self.cfg.id.clone(), msg })?;
            // COM_BINLOG_DUMP_GTID: the server finds the start from the set alone.
            req = req.with_gtid().with_gtid_set(sids.iter().cloned()).with_filename(b"").with_pos(4);
        } else {
            req = req.with_filename(&file_bytes).with_pos(pos);
        }
        tracing::info!(
            source = %self.source_id,
            server_id,
            "streaming the binlog from {file}:{pos}{}",
            if by_gtid { format!(" (by GTID {gtid_text})") } else { String::new() }
        );
        let mut stream = bconn.get_binlog_stream(req).await.map_err(self.server_err("requesting the binlog stream"))?;
        if fresh {
            // Record the start so that a restart resumes here, not at a later end.
            ctx.sender.commit(start.clone()).await?;
            ctx.sender.flush().await?;
        }
        let mut run = Run {
            src: self,
            ctx,
            info,
            meta: Some(conn),
            file: file.clone(),
            maria,
            mysql,
            tx: TxState::default(),
            seen_fde: false,
            decoders: HashMap::new(),
            pending_ddl: HashMap::new(),
            schema_cache: HashMap::new(),
            collations,
            snap: None,
        };
        run.snap = self.start_snapshot(&run.ctx, run.info.mariadb, fresh)?;
        let silence = hb * 3 + Duration::from_secs(2);
        loop {
            if run.ctx.shutdown.is_cancelled() {
                break;
            }
            let polled = run.snap.as_mut().map(|s| s.outcome.try_recv());
            let outcome = match polled {
                Some(Ok(r)) => Some(Some(r)),
                Some(Err(tokio::sync::oneshot::error::TryRecvError::Closed)) => Some(None),
                _ => None,
            };
            if let Some(outcome) = outcome {
                if run.reader_finished(outcome)? {
                    break;
                }
            }
            let next = match stream.next().now_or_never() {
                Some(n) => n,
                None => {
                    run.ctx.sender.flush().await?;
                    tokio::select! {
                        n = stream.next() => n,
                        outcome = reader_outcome(&mut run.snap) => {
                            if run.reader_finished(outcome)? {
                                break;
                            }
                            continue;
                        }
                        _ = run.ctx.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(silence) => {
                            return Err(MysqlSourceError::Silent { id: self.cfg.id.clone(), dsn: self.dsn_shown.clone(), secs: silence.as_secs() });
                        }
                    }
                }
            };
            let ev = match next {
                Some(Ok(ev)) => ev,
                Some(Err(e)) => return Err(run.stream_error(e, by_gtid, &gtid_text, &file, pos).await),
                None => {
                    return Err(MysqlSourceError::Server {
                        id: self.cfg.id.clone(),
                        dsn: self.dsn_shown.clone(),
                        context: "reading the binlog".into(),
                        source: Box::new(mysql_async::Error::Other("the server ended the binlog stream".into())),
                    })
                }
            };
            run.handle(&stream, ev).await?;
        }
        run.ctx.sender.flush().await?;
        Ok(())
    }
}

/// Waits for the snapshot reader's end (forever when there is none).
async fn reader_outcome(
    snap: &mut Option<crate::snapshot::StreamSide>,
) -> Option<std::result::Result<bool, SourceError>> {
    match snap {
        Some(side) => (&mut side.outcome).await.ok(),
        None => std::future::pending().await,
    }
}

impl MysqlSource {
    /// Starts the progress writer and the snapshot reader (which also serves
    /// backfills, so it runs in every mode).
    fn start_snapshot(
        &self,
        ctx: &SourceContext,
        mariadb: bool,
        fresh: bool,
    ) -> Result<Option<crate::snapshot::StreamSide>> {
        use deltaforge_core::snapshot::{ProgressWriter, SnapshotMode};
        let Some(wm) = self.cfg.watermark_table() else {
            if self.cfg.snapshot.mode == SnapshotMode::Never {
                tracing::warn!(source = %self.source_id, "no database in the dsn and no `watermark_table`: backfills are unavailable");
                return Ok(None);
            }
            return Err(MysqlSourceError::Config {
                id: self.cfg.id.clone(),
                msg: "the snapshot needs a watermark table: set `watermark_table: db.table`, or name a database in                       the dsn (or set snapshot.mode: never)"
                    .into(),
            });
        };
        if matches_any(&self.patterns, &wm.0, &wm.1) {
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
        let connect: crate::snapshot::Connector = Arc::new(move || {
            let me = me.clone();
            Box::pin(async move { me.connect().await.map_err(MysqlSourceError::into_source_error) })
        });
        let reader = crate::snapshot::Reader {
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
        Ok(Some(reader.spawn(progress_tx)))
    }
}

/// The start offset of an event, when its header has a position.
fn event_start(ev: &BinlogEvent) -> Option<u64> {
    let h = ev.header();
    let end = h.log_pos() as u64;
    (end != 0).then(|| end.saturating_sub(h.event_size() as u64))
}

/// Tables a DDL statement names, as `(db or None, table)`; `None` when the
/// statement is not a table DDL at all.
pub(crate) fn ddl_tables(query: &str) -> Option<Vec<(Option<String>, String)>> {
    let q = strip_comments(query);
    let mut toks = Tokens { s: q.as_str() };
    let first = toks.word()?.to_ascii_uppercase();
    let mut out = Vec::new();
    match first.as_str() {
        "ALTER" => {
            loop {
                let w = toks.word()?.to_ascii_uppercase();
                if w == "TABLE" {
                    break;
                }
                if !matches!(w.as_str(), "ONLINE" | "IGNORE" | "OFFLINE") {
                    return None;
                }
            }
            toks.skip_words(&["IF", "EXISTS"]);
            out.push(toks.ident()?);
        }
        "CREATE" => {
            loop {
                let w = toks.word()?.to_ascii_uppercase();
                match w.as_str() {
                    "TABLE" => break,
                    "OR" | "REPLACE" | "TEMPORARY" => {}
                    "INDEX" | "UNIQUE" | "FULLTEXT" | "SPATIAL" => {
                        // CREATE [UNIQUE] INDEX name ON table
                        let rest = toks.s.to_ascii_uppercase();
                        let at = rest.find(" ON ")?;
                        toks.s = &toks.s[at + 4..];
                        out.push(toks.ident()?);
                        return Some(out);
                    }
                    _ => return None,
                }
            }
            toks.skip_words(&["IF", "NOT", "EXISTS"]);
            out.push(toks.ident()?);
        }
        "DROP" => {
            let w = toks.word()?.to_ascii_uppercase();
            let w = if w == "TEMPORARY" { toks.word()?.to_ascii_uppercase() } else { w };
            if w == "INDEX" {
                let rest = toks.s.to_ascii_uppercase();
                let at = rest.find(" ON ")?;
                toks.s = &toks.s[at + 4..];
                out.push(toks.ident()?);
                return Some(out);
            }
            if w != "TABLE" {
                return None;
            }
            toks.skip_words(&["IF", "EXISTS"]);
            loop {
                out.push(toks.ident()?);
                if !toks.comma() {
                    break;
                }
            }
        }
        "RENAME" => {
            if !toks.word()?.eq_ignore_ascii_case("TABLE") {
                return None;
            }
            loop {
                out.push(toks.ident()?);
                if !toks.word()?.eq_ignore_ascii_case("TO") {
                    return None;
                }
                out.push(toks.ident()?);
                if !toks.comma() {
                    break;
                }
            }
        }
        "TRUNCATE" => return Some(Vec::new()),
        _ => return None,
    }
    Some(out)
}

fn strip_comments(q: &str) -> String {
    let mut out = String::with_capacity(q.len());
    let mut rest = q;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        match rest[i..].find("*/") {
            Some(j) => rest = &rest[i + j + 2..],
            None => {
                rest = "";
                break;
            }
        }
        out.push(' ');
    }
    out.push_str(rest);
    out
}

struct Tokens<'a> {
    s: &'a str,
}

impl<'a> Tokens<'a> {
    fn trim(&mut self) {
        self.s = self.s.trim_start();
    }
    fn word(&mut self) -> Option<&'a str> {
        self.trim();
        let end = self.s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(self.s.len());
        if end == 0 {
            return None;
        }
        let w = &self.s[..end];
        self.s = &self.s[end..];
        Some(w)
    }
    fn skip_words(&mut self, words: &[&str]) {
        let save = self.s;
        for w in words {
            match self.word() {
                Some(x) if x.eq_ignore_ascii_case(w) => {}
                _ => {
                    self.s = save;
                    return;
                }
            }
        }
    }
    fn comma(&mut self) -> bool {
        self.trim();
        if let Some(r) = self.s.strip_prefix(',') {
            self.s = r;
            true
        } else {
            false
        }
    }
    fn part(&mut self) -> Option<String> {
        self.trim();
        if let Some(r) = self.s.strip_prefix('`') {
            let mut out = String::new();
            let mut chars = r.char_indices().peekable();
            while let Some((i, c)) = chars.next() {
                if c == '`' {
                    if chars.peek().map(|(_, c)| *c) == Some('`') {
                        chars.next();
                        out.push('`');
                        continue;
                    }
                    self.s = &r[i + 1..];
                    return Some(out);
                }
                out.push(c);
            }
            None
        } else {
            let end = self.s.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$')).unwrap_or(self.s.len());
            if end == 0 {
                return None;
            }
            let w = self.s[..end].to_string();
            self.s = &self.s[end..];
            Some(w)
        }
    }
    fn ident(&mut self) -> Option<(Option<String>, String)> {
        let a = self.part()?;
        if let Some(r) = self.s.strip_prefix('.') {
            self.s = r;
            let b = self.part()?;
            Some((Some(a), b))
        } else {
            Some((None, a))
        }
    }
}

impl Run<'_> {
    fn id(&self) -> String {
        self.src.cfg.id.clone()
    }

    fn pos(&self, pos: u64) -> Position {
        Position::Mysql { file: self.file.clone(), pos, gtid_set: None }
    }

    fn gtid_string(&self) -> Option<Arc<str>> {
        let s = if self.info.mariadb { self.maria.to_string() } else { self.mysql.to_string() };
        (!s.is_empty()).then(|| s.into())
    }

    async fn stream_error(
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

    async fn commit(&mut self, end: u64) -> Result<()> {
        if let Some(g) = self.tx.maria.take() {
            self.maria.apply(g);
        }
        if let Some((src, gno)) = self.tx.mysql.take() {
            self.mysql.add(&src, gno);
        }
        let position = Position::Mysql { file: self.file.clone(), pos: end, gtid_set: self.gtid_string() };
        self.tx = TxState::default();
        self.ctx.sender.commit(position.clone()).await?;
        if let Some(side) = self.snap.as_mut() {
            for (table, progress) in side.to_commit.drain(..) {
                let _ = side.progress.send(deltaforge_core::snapshot::PendingProgress {
                    position: position.clone(),
                    table,
                    progress,
                });
            }
        }
        Ok(())
    }

    /// Handles the snapshot reader's end: true when the source must stop.
    fn reader_finished(&mut self, outcome: Option<std::result::Result<bool, SourceError>>) -> Result<bool> {
        self.snap = None;
        match outcome {
            Some(Ok(stop)) => Ok(stop),
            Some(Err(e)) => Err(MysqlSourceError::Snapshot(e)),
            None => Err(MysqlSourceError::Snapshot(SourceError::Retryable(
                "the snapshot reader stopped unexpectedly".into(),
            ))),
        }
    }

    /// A row change of the watermark table: this run's watermarks open and
    /// close windows; the high one emits the chunk's remaining rows as `r`
    /// events inside its own transaction.
    async fn watermark(&mut self, tme: &TableMapEvent<'_>, ev: &BinlogEvent, rows: &RowsEventData<'_>) -> Result<()> {
        let start = event_start(ev).unwrap_or(0);
        let at = self.pos(start);
        let dec = TableDecoder::build(tme, None, None).map_err(|msg| MysqlSourceError::Decode {
            id: self.id(),
            at: at.to_string(),
            msg,
        })?;
        let decoded = crate::decode::decode_rows(&dec, tme, rows).map_err(|msg| MysqlSourceError::Decode {
            id: self.id(),
            at: at.to_string(),
            msg,
        })?;
        for (_, _, after) in decoded {
            let Some(side) = self.snap.as_mut() else { return Ok(()) };
            let text = after.as_ref().and_then(|r| r.values().get(1)).and_then(Value::as_str);
            let Some(wm) = text.and_then(|t| serde_json::from_str::<deltaforge_core::snapshot::Watermark>(t).ok())
            else {
                continue;
            };
            if wm.run != side.run {
                continue;
            }
            match wm.kind {
                deltaforge_core::snapshot::WatermarkKind::Low => {
                    side.windows.insert(
                        wm.chunk,
                        crate::snapshot::OpenWindow { table: wm.table, key: wm.key, window: Default::default() },
                    );
                }
                deltaforge_core::snapshot::WatermarkKind::High => self.close_window(wm.chunk, &at, ev).await?,
            }
        }
        Ok(())
    }

    async fn close_window(&mut self, chunk: u64, at: &Position, ev: &BinlogEvent) -> Result<()> {
        let side = self.snap.as_mut().expect("called with a reader");
        let Some(win) = side.windows.remove(&chunk) else { return Ok(()) };
        while let Ok(c) = side.chunks.try_recv() {
            side.pending.insert(c.chunk, c);
        }
        let Some(msg) = side.pending.remove(&chunk) else {
            return Err(MysqlSourceError::Snapshot(SourceError::Retryable(format!(
                "snapshot: chunk {chunk} reached its high watermark but was never read"
            ))));
        };
        // The reader may read the next chunk while this one is delivered.
        let _ = msg.verdict.send(());
        let converted = msg
            .rows
            .await
            .map_err(|e| {
                SourceError::Retryable(format!("snapshot: converting chunk {chunk} of {} failed: {e}", msg.table))
            })
            .and_then(|r| r)
            .map_err(MysqlSourceError::Snapshot)?;
        let side = self.snap.as_mut().expect("called with a reader");
        let rows = win.window.reconcile(converted);
        let emitted = rows.len() as u64;
        side.metrics.rows(&msg.table, emitted);
        side.to_commit.push((msg.table.clone(), msg.progress));
        let tx_start = *self.tx.start.get_or_insert(event_start(ev).unwrap_or(0));
        let tx_position = self.pos(tx_start);
        let ts_ms = ev.header().timestamp() as i64 * 1000;
        let version = self.ctx.schemas.latest(&msg.db, &msg.table_name).map(|v| v.version);
        for row in rows {
            let e = Event {
                op: deltaforge_core::Op::Read,
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

    fn begin_group(&mut self, start: Option<u64>) {
        self.tx = TxState { start, ..TxState::default() };
    }

    async fn handle(&mut self, stream: &mysql_async::BinlogStream, ev: BinlogEvent) -> Result<()> {
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
        if raw == crate::gtid::MARIADB_GTID_LIST_EVENT {
            // The GTID state at the start of a binlog file: if it is ahead of
            // ours, transactions we never saw were purged (MariaDB may start
            // a GTID stream from the oldest remaining file without an error).
            let list = crate::gtid::parse_mariadb_gtid_list(ev.data()).map_err(|msg| MysqlSourceError::Decode {
                id: self.id(),
                at: self.at(&ev),
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
            return Ok(());
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
        let data = match ev.read_data() {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(()),
            Err(e) => return Err(MysqlSourceError::Decode { id: self.id(), at: self.at(&ev), msg: e.to_string() }),
        };
        match data {
            EventData::FormatDescriptionEvent(_) => self.seen_fde = true,
            EventData::RotateEvent(r) => {
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
            EventData::GtidEvent(g) => {
                self.begin_group(event_start(&ev));
                self.tx.gtid_text = Some(MysqlGtidSet::event_gtid(&g).into());
                let mut key = crate::gtid::uuid_string(&g.sid());
                if let Some(tag) = g.tag() {
                    key = format!("{key}:{}", tag.as_str().to_ascii_lowercase());
                }
                self.tx.mysql = Some((key, g.gno()));
            }
            EventData::AnonymousGtidEvent(_) => self.begin_group(event_start(&ev)),
            EventData::QueryEvent(q) => {
                let text = q.query();
                let trimmed = text.trim();
                let upper: String = trimmed.chars().take(16).collect::<String>().to_ascii_uppercase();
                let end = header.log_pos() as u64;
                if upper == "BEGIN" || upper.starts_with("START TRANSACTION") {
                    if self.tx.start.is_none() {
                        self.tx.start = event_start(&ev);
                    }
                    self.tx.in_tx = true;
                } else if upper == "COMMIT" || upper == "ROLLBACK" {
                    self.commit(end).await?;
                } else if upper.starts_with("XA ") || upper.starts_with("SAVEPOINT") || upper.starts_with("ROLLBACK TO")
                {
                    // Part of the open group.
                } else {
                    let schema = q.schema().into_owned();
                    self.ddl(&schema, trimmed, end);
                    if !self.tx.in_tx {
                        self.commit(end).await?;
                    }
                }
            }
            EventData::XidEvent(_) => {
                let end = header.log_pos() as u64;
                self.commit(end).await?;
            }
            EventData::RowsEvent(rows) => self.rows(stream, &ev, rows).await?,
            _ => {}
        }
        Ok(())
    }

    fn at(&self, ev: &BinlogEvent) -> String {
        format!("{}:{}", self.file, event_start(ev).unwrap_or(0))
    }

    fn ddl(&mut self, default_db: &str, query: &str, end: u64) {
        let Some(tables) = ddl_tables(query) else { return };
        let position = self.pos(end);
        for (db, table) in tables {
            let db = db.unwrap_or_else(|| default_db.to_string());
            if matches_any(&self.src.patterns, &db, &table) {
                tracing::info!(source = %self.src.source_id, db = %db, table = %table, at = %position, "DDL: schema will be reloaded");
                self.decoders
                    .retain(|_, (tme, _)| !(tme.database_name() == db.as_str() && tme.table_name() == table.as_str()));
                self.pending_ddl.insert((db, table), position.clone());
            }
        }
    }

    async fn meta_conn(&mut self) -> Result<&mut Conn> {
        let alive = match self.meta.as_mut() {
            Some(c) => c.ping().await.is_ok(),
            None => false,
        };
        if !alive {
            self.meta = Some(self.src.connect().await?);
        }
        Ok(self.meta.as_mut().expect("connected"))
    }

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

    fn cached_schema(&mut self, db: &str, table: &str, version: u64, json: &Value) -> Option<Arc<TableSchema>> {
        let key = (db.to_string(), table.to_string(), version);
        if let Some(s) = self.schema_cache.get(&key) {
            return Some(s.clone());
        }
        let s = Arc::new(TableSchema::from_json(db, table, json)?);
        self.schema_cache.insert(key, s.clone());
        Some(s)
    }

    async fn decoder(&mut self, tme: &TableMapEvent<'_>, at: &Position) -> Result<Option<Arc<TableDecoder>>> {
        let db = tme.database_name().into_owned();
        let table = tme.table_name().into_owned();
        if let Some((cached, dec)) = self.decoders.get(&tme.table_id()) {
            if cached == tme {
                return Ok(dec.clone());
            }
        }
        if !matches_any(&self.src.patterns, &db, &table) {
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
        let replaying = latest_pos.as_ref().is_some_and(|p| at.compare(p) == Some(std::cmp::Ordering::Less));
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
            Some(p) if latest_pos.as_ref().is_none_or(|l| l.compare(&p) == Some(std::cmp::Ordering::Less)) => p,
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
        let replaying = latest_pos.as_ref().is_some_and(|p| at.compare(p) == Some(std::cmp::Ordering::Less));
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

    async fn rows(
        &mut self,
        stream: &mysql_async::BinlogStream,
        ev: &BinlogEvent,
        rows: RowsEventData<'_>,
    ) -> Result<()> {
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
        if self
            .snap
            .as_ref()
            .is_some_and(|s| s.watermark_table.0 == tme.database_name() && s.watermark_table.1 == tme.table_name())
        {
            return self.watermark(tme, ev, &rows).await;
        }
        let start = event_start(ev).unwrap_or(0);
        let at = self.pos(start);
        let Some(dec) = self.decoder(tme, &at).await? else { return Ok(()) };
        let tx_start = *self.tx.start.get_or_insert(start);
        let tx_position = self.pos(tx_start);
        let ts_ms = ev.header().timestamp() as i64 * 1000;
        let decoded = crate::decode::decode_rows(&dec, tme, &rows).map_err(|msg| MysqlSourceError::Decode {
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
        if let Some(side) = self.snap.as_mut().filter(|s| !s.windows.is_empty()) {
            let name = format!("{}.{}", dec.db, dec.table);
            for w in side.windows.values_mut().filter(|w| w.table == name) {
                for e in &events {
                    for row in [&e.before, &e.after].into_iter().flatten() {
                        w.touch(row);
                    }
                }
            }
        }
        for mut e in events {
            e.index = self.tx.index;
            self.tx.index += 1;
            self.ctx.sender.push(e).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(db: Option<&str>, t: &str) -> (Option<String>, String) {
        (db.map(str::to_string), t.to_string())
    }

    #[test]
    fn ddl_parsing() {
        assert_eq!(ddl_tables("ALTER TABLE `shop`.`orders` ADD COLUMN x INT"), Some(vec![t(Some("shop"), "orders")]));
        assert_eq!(ddl_tables("alter online table orders drop column x"), Some(vec![t(None, "orders")]));
        assert_eq!(ddl_tables("CREATE TABLE IF NOT EXISTS a.b (id int)"), Some(vec![t(Some("a"), "b")]));
        assert_eq!(ddl_tables("CREATE OR REPLACE TABLE b (id int)"), Some(vec![t(None, "b")]));
        assert_eq!(
            ddl_tables("DROP TABLE IF EXISTS `a`,`d`.`b` /* generated by server */"),
            Some(vec![t(None, "a"), t(Some("d"), "b")])
        );
        assert_eq!(
            ddl_tables("RENAME TABLE a TO b, c TO d.e"),
            Some(vec![t(None, "a"), t(None, "b"), t(None, "c"), t(Some("d"), "e")])
        );
        assert_eq!(ddl_tables("CREATE INDEX i ON t (x)"), Some(vec![t(None, "t")]));
        assert_eq!(ddl_tables("/* x */ ALTER TABLE `we``ird` ADD y INT"), Some(vec![t(None, "we`ird")]));
        assert_eq!(ddl_tables("CREATE DATABASE x"), None);
        assert_eq!(ddl_tables("TRUNCATE t"), Some(vec![]));
    }
}
