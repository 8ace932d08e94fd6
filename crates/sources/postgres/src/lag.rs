//! The checkpoint lag in WAL bytes (`deltaforge_checkpoint_lag_bytes`):
//! the server's current WAL position minus the checkpoint LSN.
//!
//! The probe keeps its own replication session, gated before
//! `START_REPLICATION` (it never streams): the same client, TLS settings and
//! credentials as the source, no second PostgreSQL client crate, and never
//! the streaming session, which may sit blocked behind a slow sink. It
//! therefore holds one more walsender (`max_wal_senders`) while the
//! pipeline runs. It must never report or advance anything on the server.

use crate::position::Lsn;
use async_trait::async_trait;
use deltaforge_core::{LagProbe, Position, SourceError};

use crate::config::Dsn;
use crate::position::lsn_of;
use crate::setup::literal;
use crate::transport::{source_error, PgWire, SessionParams, Transport};

/// Measures the WAL bytes between the checkpoint and the server's current
/// position, on its own session (reconnected after any failure).
pub struct WalLagProbe {
    dsn: Dsn,
    params: SessionParams,
    wire: Option<PgWire>,
}

impl WalLagProbe {
    /// A probe for the slot and publication of `params` (the slot names the
    /// fallback position before the first checkpoint).
    pub fn new(dsn: Dsn, params: SessionParams) -> Self {
        WalLagProbe { dsn, params, wire: None }
    }

    async fn measure(&mut self, checkpoint: Option<&Position>) -> Result<Option<u64>, SourceError> {
        let wire = match self.wire.take() {
            Some(w) => w,
            None => PgWire::connect(&self.dsn, &self.params).await.map_err(source_error)?,
        };
        let wire = self.wire.insert(wire);
        // On a standby (logical decoding there needs PostgreSQL 16) the
        // current position is the last WAL received.
        let rows = wire
            .query(&format!(
                "SELECT (CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_receive_lsn() \
                 ELSE pg_catalog.pg_current_wal_lsn() END)::text, \
                 (SELECT confirmed_flush_lsn::text FROM pg_catalog.pg_replication_slots WHERE slot_name = {})",
                literal(&self.params.slot)
            ))
            .await
            .map_err(source_error)?;
        let row = rows.into_iter().next().unwrap_or_default();
        let lsn = |i: usize| -> Result<Option<u64>, SourceError> {
            match row.get(i).cloned().flatten() {
                Some(text) => text
                    .parse::<Lsn>()
                    .map(|l| Some(l.0))
                    .map_err(|e| SourceError::Retryable(format!("reading the server's WAL position: {e}"))),
                None => Ok(None),
            }
        };
        let Some(current) = lsn(0)? else { return Ok(None) };
        // Before the first checkpoint the source resumes from the slot.
        let from = match checkpoint {
            Some(checkpoint) => lsn_of(checkpoint),
            None => lsn(1)?,
        };
        Ok(from.map(|from| lag(current, from)))
    }
}

/// Bytes from `from` to `current`, 0 when `from` is ahead (an idle
/// checkpoint at the server's WAL end may pass the insert position seen a
/// moment earlier).
fn lag(current: u64, from: u64) -> u64 {
    current.saturating_sub(from)
}

#[async_trait]
impl LagProbe for WalLagProbe {
    async fn lag_bytes(&mut self, checkpoint: Option<&Position>) -> Result<Option<u64>, SourceError> {
        let r = self.measure(checkpoint).await;
        if r.is_err() {
            // A broken session is not reused; the next poll reconnects.
            self.wire = None;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lag_never_goes_below_zero() {
        assert_eq!(super::lag(0x2000, 0x1800), 0x800);
        assert_eq!(super::lag(0x1800, 0x2000), 0);
    }
}
