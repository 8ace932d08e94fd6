//! The checkpoint lag in binlog bytes (`deltaforge_checkpoint_lag_bytes`):
//! the bytes of binlog between the checkpoint's file/position and the
//! server's current position, summed over the files of `SHOW BINARY LOGS`.
//!
//! The probe keeps its own connection (not the binlog connection, which may
//! sit blocked behind a slow sink) and needs only what the source already
//! requires (REPLICATION CLIENT, MariaDB: BINLOG MONITOR). It must never
//! write to the server.
//!
//! It builds on `server` and `binlog_files` only, never on `source` (which
//! creates the probe), so the two never import each other.

use async_trait::async_trait;
use deltaforge_core::{LagProbe, Position, SourceError};
use mysql_async::Conn;

use crate::position::{parts, BinlogPosition};
use crate::server::Server;

/// Measures the binlog bytes after the checkpoint on its own connection
/// (reconnected after any failure).
pub struct BinlogLagProbe {
    src: Server,
    conn: Option<Conn>,
}

impl BinlogLagProbe {
    /// A probe for the server of `src`.
    pub(crate) fn new(src: Server) -> Self {
        BinlogLagProbe { src, conn: None }
    }

    /// The bytes behind `file:pos`, reconnecting when there is no connection.
    async fn measure(&mut self, file: &str, pos: u64) -> Result<u64, SourceError> {
        let conn = match self.conn.take() {
            Some(c) => c,
            None => self.src.connect().await.map_err(|e| e.into_source_error())?,
        };
        let conn = self.conn.insert(conn);
        let logs = self.src.binary_log_sizes(conn).await.map_err(|e| e.into_source_error())?;
        binlog_lag(&logs, file, pos).ok_or_else(|| {
            SourceError::Retryable(format!(
                "the checkpoint's binlog file {file} is not in SHOW BINARY LOGS (purged?), so the bytes behind \
                 cannot be counted"
            ))
        })
    }
}

/// Bytes from `file:pos` to the end of the last file of `logs` (oldest
/// first, with sizes); `None` when `file` is not among them.
pub(crate) fn binlog_lag(logs: &[(String, u64)], file: &str, pos: u64) -> Option<u64> {
    let i = logs.iter().position(|(name, _)| name == file)?;
    let rest_of_file = logs[i].1.saturating_sub(pos);
    Some(rest_of_file + logs[i + 1..].iter().map(|(_, size)| size).sum::<u64>())
}

#[async_trait]
impl LagProbe for BinlogLagProbe {
    async fn lag_bytes(&mut self, checkpoint: Option<&Position>) -> Result<Option<u64>, SourceError> {
        // Before its first checkpoint the source commits its start position
        // at once, so there is nothing to measure against only briefly.
        let Some(BinlogPosition { file, pos, .. }) = checkpoint.and_then(parts) else { return Ok(None) };
        let r = self.measure(&file, pos).await;
        if r.is_err() {
            // A broken connection is not reused; the next poll reconnects.
            self.conn = None;
        }
        r.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::binlog_lag;

    #[test]
    fn lag_sums_the_rest_of_the_checkpoint_file_and_every_later_file() {
        let logs = vec![("b.000001".to_string(), 1000), ("b.000002".to_string(), 500), ("b.000003".to_string(), 300)];
        assert_eq!(binlog_lag(&logs, "b.000003", 300), Some(0));
        assert_eq!(binlog_lag(&logs, "b.000003", 100), Some(200));
        assert_eq!(binlog_lag(&logs, "b.000001", 900), Some(100 + 500 + 300));
        // A position past the size seen (the file grew after the listing) counts as 0 for that file.
        assert_eq!(binlog_lag(&logs, "b.000002", 600), Some(300));
        assert_eq!(binlog_lag(&logs, "b.000000", 4), None);
    }
}
