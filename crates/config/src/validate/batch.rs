//! The `spec.batch` and `spec.dlq` sections: how events are grouped into
//! batches and where events rejected for their own fault are set aside.
//!
//! It checks ranges and fills in defaults; it must never decide anything
//! about sinks or the commit policy.

use std::time::Duration;

use deltaforge_core::{BatchConfig, DlqConfig, DlqOverflow};
use serde_json::Value;

use super::collect::{describe, int_in, Ctx};
use super::schema::{
    BATCH_KEYS, DLQ_KEYS, MAX_BATCH_EVENTS, MAX_BATCH_MS, MAX_DLQ_CAPACITY, MAX_INFLIGHT, MIN_BATCH_BYTES,
};

impl Ctx<'_> {
    /// `spec.dlq: { enabled: true, capacity: 10000, overflow: block | drop_oldest | reject }`.
    pub(super) fn dlq(&mut self, v: Option<&Value>) -> Option<DlqConfig> {
        let m = match v {
            None | Some(Value::Null) => return None,
            Some(Value::Object(m)) => m,
            Some(other) => {
                self.err(
                    "spec.dlq",
                    format!("expected a mapping, found {}", describe(other)),
                    "write `dlq: { enabled: true, capacity: 10000, overflow: block }` or remove it",
                );
                return None;
            }
        };
        self.check_keys(m, "spec.dlq", DLQ_KEYS);
        let mut cfg = DlqConfig::default();
        let enabled = match m.get("enabled") {
            None | Some(Value::Bool(true)) => true,
            Some(Value::Bool(false)) => false,
            Some(other) => {
                self.err(
                    "spec.dlq.enabled",
                    format!("expected true or false, found {}", describe(other)),
                    "set spec.dlq.enabled to true or false",
                );
                false
            }
        };
        if let Some(v) = m.get("capacity") {
            match int_in(v, 1, MAX_DLQ_CAPACITY) {
                Some(n) => cfg.capacity = n,
                None => self.err(
                    "spec.dlq.capacity",
                    format!("must be a positive integer, found {}", describe(v)),
                    "set spec.dlq.capacity to the most events to keep, e.g. 10000 (the default)",
                ),
            }
        }
        if let Some(v) = m.get("overflow") {
            match v.as_str() {
                Some("block") => cfg.overflow = DlqOverflow::Block,
                Some("drop_oldest") => cfg.overflow = DlqOverflow::DropOldest,
                Some("reject") => cfg.overflow = DlqOverflow::Reject,
                _ => self.err(
                    "spec.dlq.overflow",
                    format!("unknown overflow policy {}", describe(v)),
                    "use one of block (default), drop_oldest, reject",
                ),
            }
        }
        enabled.then_some(cfg)
    }

    /// `spec.batch`, defaults filled in; `max_ms` becomes `max_wait`.
    pub(super) fn batch(&mut self, v: Option<&Value>) -> BatchConfig {
        let mut cfg = BatchConfig::default();
        let m = match v {
            None | Some(Value::Null) => return cfg,
            Some(Value::Object(m)) => m,
            Some(other) => {
                self.err(
                    "spec.batch",
                    format!("expected a mapping, found {}", describe(other)),
                    "write `batch:` as a mapping, e.g. `{ max_events: 2000, max_ms: 100 }`, or remove it",
                );
                return cfg;
            }
        };
        self.check_keys(m, "spec.batch", BATCH_KEYS);
        if let Some(v) = m.get("max_events") {
            match int_in(v, 1, MAX_BATCH_EVENTS) {
                Some(n) => cfg.max_events = n as usize,
                None => self.err(
                    "spec.batch.max_events",
                    format!("must be a positive integer no larger than {MAX_BATCH_EVENTS}, found {}", describe(v)),
                    format!("set spec.batch.max_events between 1 and {MAX_BATCH_EVENTS} (default 2000)"),
                ),
            }
        }
        if let Some(v) = m.get("max_bytes") {
            match int_in(v, MIN_BATCH_BYTES, usize::MAX as u64) {
                Some(n) => cfg.max_bytes = n as usize,
                None => self.err(
                    "spec.batch.max_bytes",
                    format!("must be an integer of at least {MIN_BATCH_BYTES} (bytes), found {}", describe(v)),
                    format!("set spec.batch.max_bytes to at least {MIN_BATCH_BYTES} (default 3145728)"),
                ),
            }
        }
        if let Some(v) = m.get("max_ms") {
            match int_in(v, 1, MAX_BATCH_MS) {
                Some(n) => cfg.max_wait = Duration::from_millis(n),
                None => self.err(
                    "spec.batch.max_ms",
                    format!(
                        "must be a positive integer no larger than {MAX_BATCH_MS} (milliseconds), found {}",
                        describe(v)
                    ),
                    format!("set spec.batch.max_ms between 1 and {MAX_BATCH_MS} (default 100)"),
                ),
            }
        }
        if let Some(v) = m.get("respect_source_tx") {
            match v {
                Value::Bool(b) => cfg.respect_source_tx = *b,
                other => self.err(
                    "spec.batch.respect_source_tx",
                    format!("expected true or false, found {}", describe(other)),
                    "set spec.batch.respect_source_tx to true (the default) or false",
                ),
            }
        }
        if let Some(v) = m.get("max_inflight") {
            match int_in(v, 1, MAX_INFLIGHT) {
                Some(n) => cfg.max_inflight = n as usize,
                None => self.err(
                    "spec.batch.max_inflight",
                    format!("must be an integer from 1 to {MAX_INFLIGHT}, found {}", describe(v)),
                    format!("set spec.batch.max_inflight between 1 and {MAX_INFLIGHT} (default 1)"),
                ),
            }
        }
        cfg
    }
}
