//! Wall-clock time for TTL deadlines and `created_at` columns.
//!
//! This module owns only the conversion of the system clock to unix
//! milliseconds; it must never touch the database.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time in unix milliseconds (0 before the epoch).
pub(crate) fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// The `expires_at` value of a key written now with `ttl`.
pub(crate) fn expires_at(ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|ttl| now_millis().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)))
}
