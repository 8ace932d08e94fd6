//! Test hooks that make a sink fail on demand, for crash, outage and
//! dead-letter tests against the real binary.
//!
//! `DELTAFORGE_FAILPOINTS` holds comma-separated hooks:
//!
//! - `sink:ID=/path/flag` — sink `ID` fails every delivery (retryably)
//!   while the file exists (an outage);
//! - `poison:ID=/path/flag@N` — while the file exists, sink `ID` rejects as
//!   poison (for the event's own fault) every event whose `after.id` is a
//!   multiple of N, and delivers the others;
//! - `crash-after:ID=/path/flag` — once sink `ID` acknowledged a batch
//!   while the file exists, the file is removed and the process aborts (as
//!   `kill -9` would): exactly between the target's commit and the
//!   checkpoint write;
//! - `table-precommit:ID=/path/flag` — read by the table sinks themselves
//!   (`deltaforge_table_core::failpoint`), not here.
//!
//! Unset, no sink is wrapped and nothing costs anything. Never enable it in
//! production.

use std::path::PathBuf;

use async_trait::async_trait;
use deltaforge_core::{Event, RejectedEvent, Sink, SinkError};

/// What a hook does.
#[derive(Debug, Clone, PartialEq)]
pub enum Hook {
    /// Fail every delivery while the flag exists.
    Outage(PathBuf),
    /// Reject events whose id is a multiple of N while the flag exists.
    Poison(PathBuf, u64),
    /// Abort the process after an acknowledged delivery, once, when the
    /// flag exists.
    CrashAfter(PathBuf),
}

/// The hooks configured for a sink id.
pub fn for_sink(sink_id: &str) -> Vec<Hook> {
    let Ok(spec) = std::env::var("DELTAFORGE_FAILPOINTS") else { return Vec::new() };
    spec.split(',')
        .filter_map(|item| {
            let (name, arg) = item.trim().split_once('=')?;
            if name.strip_prefix("sink:") == Some(sink_id) {
                return Some(Hook::Outage(PathBuf::from(arg)));
            }
            if name.strip_prefix("crash-after:") == Some(sink_id) {
                return Some(Hook::CrashAfter(PathBuf::from(arg)));
            }
            if name.strip_prefix("poison:") == Some(sink_id) {
                let (path, every) = arg.rsplit_once('@')?;
                return Some(Hook::Poison(PathBuf::from(path), every.parse().ok().filter(|n| *n > 0)?));
            }
            None
        })
        .collect()
}

/// Wraps a sink with its hooks.
pub struct FailpointSink {
    inner: Box<dyn Sink>,
    hooks: Vec<Hook>,
}

impl FailpointSink {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Sink>, hooks: Vec<Hook>) -> Self {
        tracing::warn!(?hooks, "failpoints armed for a sink (test hook)");
        FailpointSink { inner, hooks }
    }
}

fn event_id(e: &Event) -> Option<u64> {
    e.after.as_ref()?.get("id")?.as_u64()
}

#[async_trait]
impl Sink for FailpointSink {
    async fn deliver(&mut self, events: &[Event]) -> Result<(), SinkError> {
        let mut poison_every = None;
        for hook in &self.hooks {
            match hook {
                Hook::Outage(flag) if flag.exists() => {
                    return Err(SinkError::Retryable(format!("failpoint: {} exists", flag.display())));
                }
                Hook::Poison(flag, every) if flag.exists() => poison_every = Some(*every),
                _ => {}
            }
        }
        let Some(every) = poison_every else {
            self.inner.deliver(events).await?;
            for hook in &self.hooks {
                if let Hook::CrashAfter(flag) = hook {
                    if std::fs::remove_file(flag).is_ok() {
                        tracing::warn!("failpoint crash-after: aborting after the acknowledgement (test hook)");
                        std::process::abort();
                    }
                }
            }
            return Ok(());
        };
        let is_poison = |e: &Event| event_id(e).is_some_and(|id| id.is_multiple_of(every));
        let good: Vec<Event> = events.iter().filter(|e| !is_poison(e)).cloned().collect();
        self.inner.deliver(&good).await?;
        let rejected: Vec<RejectedEvent> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| is_poison(e))
            .map(|(index, e)| RejectedEvent {
                index,
                reason: format!("failpoint: event {} is poison", event_id(e).unwrap_or(0)),
            })
            .collect();
        if rejected.is_empty() {
            Ok(())
        } else {
            Err(SinkError::Rejected(rejected))
        }
    }

    fn held_batches(&self) -> usize {
        self.inner.held_batches()
    }

    async fn flush(&mut self, drain: bool) -> Result<(), SinkError> {
        self.inner.flush(drain).await
    }

    fn attach_schemas(&mut self, schemas: deltaforge_core::SchemaRegistry) {
        self.inner.attach_schemas(schemas)
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        self.inner.close().await
    }
}
