//! The integration tests that take a shared server down (PostgreSQL,
//! MariaDB, Kafka, Redis, NATS) or whose timing needs a quiet machine, as a
//! test binary of their own: cargo runs test binaries one after another,
//! so nothing here overlaps with the `it` binary, and every test here takes
//! [`serial`] first so that they run one at a time whatever
//! `--test-threads` says.

mod support;

mod kafka_outage;
mod mysql_purge;
mod nats_outage;
mod pg_restart;
mod redis_outage;
mod sink_outage;
mod storage_full;
mod storage_pg_restart;

use std::sync::{Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::new(());

/// Serialises the tests of this binary (a poisoned lock is taken anyway:
/// one failed test must not fail the others).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}
