//! The start-up checks: which server this is (MariaDB or MySQL, GTIDs,
//! checksums) and whether it is set up for change capture (binary logging,
//! row format, full row images, privileges, a distinct `server_id`).
//!
//! It owns the wording of every setup error and its fix. It must never
//! change a server setting itself (it only reads them and names the fix).

use std::collections::HashMap;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use crate::config::{parse_dsn, FlavorSetting};
use crate::error::Result;
use crate::server::Server;

/// What the start-up checks learned about the server.
#[derive(Debug, Clone)]
pub(crate) struct ServerInfo {
    /// MariaDB (detected from the version, or forced by `flavor`).
    pub mariadb: bool,
    /// The server assigns GTIDs (always on MariaDB; MySQL `gtid_mode=ON`).
    pub gtid_on: bool,
    /// Events carry a CRC32 (`binlog_checksum` is not NONE).
    pub checksum: bool,
}

/// The global variables `names`, keyed by lower-case name.
async fn query_vars(
    conn: &mut Conn,
    names: &[&str],
) -> std::result::Result<HashMap<String, String>, mysql_async::Error> {
    let list = names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(",");
    let rows: Vec<(String, String)> =
        conn.query(format!("SHOW GLOBAL VARIABLES WHERE Variable_name IN ({list})")).await?;
    Ok(rows.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect())
}

impl Server {
    /// Checks that the server can serve change capture and learns what it
    /// is; every violation is a setup error naming the fix.
    pub async fn check_server(&self, conn: &mut Conn) -> Result<ServerInfo> {
        let (version, server_id): (String, u64) = conn
            .query_first("SELECT VERSION(), @@server_id")
            .await
            .map_err(self.server_err("reading the server version"))?
            .unwrap_or_default();
        let detected = version.to_ascii_lowercase().contains("mariadb");
        let mariadb = match self.cfg.flavor {
            FlavorSetting::Auto => detected,
            FlavorSetting::Mariadb => true,
            FlavorSetting::Mysql => false,
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
}
