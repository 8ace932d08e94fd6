//! The server's binlog files as the source needs them: the list with sizes,
//! the current end with its GTID state, the oldest start a reset goes back
//! to, a MariaDB file's starting GTID list, and how a purged checkpoint is
//! explained.
//!
//! It must never write to the server and never pick a start position by
//! itself (the stream decides; this module only reads where things are).

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use deltaforge_core::Position;

use crate::error::Result;
use crate::gtid::MariaGtidState;
use crate::position::position;
use crate::preflight::ServerInfo;
use crate::server::Server;

impl Server {
    /// The current end of the binlog and the GTID state that goes with it.
    pub async fn current_end(&self, conn: &mut Conn, info: &ServerInfo) -> Result<Position> {
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
                return Ok(position(a.0.into(), a.1, gtid_set.filter(|g| !g.is_empty()).map(Into::into)));
            }
        }
        Err(self.setup_err("the binlog moved on every attempt to read its end together with the GTID state; retry"))
    }

    /// `SHOW MASTER STATUS` (MySQL 8.4: `SHOW BINARY LOG STATUS`): the
    /// current binlog file and offset.
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

    /// The names of the binlog files the server holds, oldest first.
    pub async fn binary_logs(&self, conn: &mut Conn) -> Result<Vec<String>> {
        Ok(self.binary_log_sizes(conn).await?.into_iter().map(|(name, _)| name).collect())
    }

    /// `SHOW BINARY LOGS`: every binlog file the server holds, oldest
    /// first, with its size in bytes (the last one's size is the server's
    /// current position).
    pub async fn binary_log_sizes(&self, conn: &mut Conn) -> Result<Vec<(String, u64)>> {
        let rows: Vec<mysql_async::Row> =
            conn.query("SHOW BINARY LOGS").await.map_err(self.server_err("SHOW BINARY LOGS"))?;
        Ok(rows.into_iter().filter_map(|r| Some((r.get::<String, _>(0)?, r.get::<u64, _>(1).unwrap_or(0)))).collect())
    }

    /// MariaDB: the GTID state at the start of binlog file `file` (its
    /// GTID_LIST event), `None` when the file starts without one.
    pub async fn gtid_list_of(&self, conn: &mut Conn, file: &str) -> Result<Option<MariaGtidState>> {
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
    pub async fn oldest_start(&self, conn: &mut Conn, info: &ServerInfo) -> Result<Position> {
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
        Ok(position(oldest.as_str().into(), 4, gtid_set.filter(|g| !g.is_empty()).map(Into::into)))
    }

    /// Explains a purged checkpoint (`what` is missing) and the recovery.
    pub fn purged_msg(&self, what: &str, oldest: Option<&str>) -> String {
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
