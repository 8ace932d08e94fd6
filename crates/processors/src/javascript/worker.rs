//! The engine thread's side of the processor: runs a batch through the
//! [`Engine`], pins a script error on the first event that reproduces it,
//! rebuilds the engine after a limit breach, and turns what the script
//! returned into events that keep their origin's position, transaction and
//! idempotency key.
//!
//! It must never let a script forge an event's position, transaction or
//! connector, never accept output that reorders transactions, and never
//! log event values.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltaforge_core::{Event, Op, ProcessorError};
use serde_json::Value;
use tokio::sync::oneshot;

use super::codec;
use super::config::JavascriptConfig;
use super::engine::{Engine, JsFailure, Returned};
use crate::value::{describe, error};

/// A batch for the engine thread.
pub(super) struct Job {
    /// The batch, in source order.
    pub(super) events: Vec<Event>,
    /// Where the result goes.
    pub(super) reply: oneshot::Sender<Result<Vec<Event>, ProcessorError>>,
}

/// The engine thread's state.
pub(super) struct Worker {
    /// The processor name, for errors.
    pub(super) name: String,
    /// The settings, to rebuild the engine after a limit breach.
    pub(super) cfg: JavascriptConfig,
    /// `None` after a limit breach, until the next batch rebuilds it.
    pub(super) engine: Option<Engine>,
    /// Shared with the engine's interrupt handler.
    pub(super) deadline: Arc<AtomicU64>,
    /// Shared with the engine's interrupt handler.
    pub(super) interrupted: Arc<AtomicBool>,
}

/// Index given to the k-th extra output (k ≥ 1) of an event with `index`.
pub(super) fn derived_index(index: u32, k: usize) -> u32 {
    (1u32 << 31) | ((index & 0x00FF_FFFF) << 7) | (k as u32 & 0x7F)
}

impl Worker {
    fn engine(&mut self) -> Result<&Engine, ProcessorError> {
        if self.engine.is_none() {
            let e = Engine::new(&self.cfg, self.deadline.clone(), self.interrupted.clone())
                .map_err(|p| error(&self.name, None, p.message))?;
            self.engine = Some(e);
        }
        Ok(self.engine.as_ref().unwrap_or_else(|| unreachable!("set above")))
    }

    /// Runs one batch through the script and rebuilds the events it returned.
    pub(super) fn run(&mut self, events: Vec<Event>) -> Result<Vec<Event>, ProcessorError> {
        if events.is_empty() {
            return Ok(events);
        }
        let ids: Vec<String> = events.iter().map(Event::idempotency_key).collect();
        let returned = match self.engine()?.call_events(&events, &ids) {
            Ok(Returned::Objects(read)) => read,
            Ok(Returned::Json(text)) => codec::decode(&text, &events, &ids)
                .map_err(|e| error(&self.name, None, format!("process(events) returned invalid JSON: {e}")))?,
            Err(f) => return Err(self.blame(&events, f)),
        };
        self.rebuild(events, returned)
    }

    /// Turns a failure into an error, pinpointing the event when the
    /// script threw.
    fn blame(&mut self, events: &[Event], f: JsFailure) -> ProcessorError {
        if f.is_limit() {
            // The engine may be in any state after a breach: start afresh.
            self.engine = None;
            return error(&self.name, None, format!("{f} while processing a batch of {} events", events.len()));
        }
        if events.len() > 1 {
            let budget = Instant::now() + Duration::from_millis(self.cfg.timeout_ms);
            for (i, e) in events.iter().enumerate() {
                if Instant::now() > budget {
                    break;
                }
                let Ok(engine) = self.engine() else { break };
                match engine.call_events(std::slice::from_ref(e), &[e.idempotency_key()]) {
                    Ok(_) => continue,
                    Err(single) => {
                        if single.is_limit() {
                            self.engine = None;
                        }
                        return error(&self.name, Some((i, e)), single);
                    }
                }
            }
            return error(
                &self.name,
                None,
                format!("{f} (batch of {} events; no single event reproduces it)", events.len()),
            );
        }
        error(&self.name, Some((0, &events[0])), f)
    }

    /// The events the script returned, each carrying its origin's metadata.
    fn rebuild(&self, events: Vec<Event>, returned: Vec<codec::Output>) -> Result<Vec<Event>, ProcessorError> {
        // Transaction group of each input event, for the order check.
        let mut groups = Vec::with_capacity(events.len());
        let mut g = 0usize;
        for (i, e) in events.iter().enumerate() {
            if i > 0 && e.tx_position != events[i - 1].tx_position {
                g += 1;
            }
            groups.push(g);
        }
        let last = events.len() - 1;
        let origin_of = |o: &codec::Output| o.origin.unwrap_or(last);
        // An origin's rows move into its last output; earlier ones copy only its metadata.
        let mut remaining = vec![0usize; events.len()];
        for o in &returned {
            remaining[origin_of(o)] += 1;
        }
        let mut events: Vec<Option<Event>> = events.into_iter().map(Some).collect();
        let mut extra = vec![0usize; events.len()];
        let mut last_group = 0usize;
        let mut out = Vec::with_capacity(returned.len());
        for (j, o) in returned.into_iter().enumerate() {
            let fail = |m: String| error(&self.name, None, format!("returned event #{j}: {m}"));
            if let Some(kind) = o.not_object {
                return Err(fail(format!("must be an object like the input events, got {kind}")));
            }
            let origin_idx = origin_of(&o);
            let origin = events[origin_idx].as_ref().unwrap_or_else(|| unreachable!("moved only at its last use"));
            if groups[origin_idx] < last_group {
                // The script's fault, not the event's: a batch-level error.
                return Err(error(
                    &self.name,
                    None,
                    format!(
                        "returned event #{j} (from {}) comes after an event of a later transaction; \
                         keep source order across transactions",
                        describe(origin_idx, origin)
                    ),
                ));
            }
            last_group = groups[origin_idx];
            if extra[origin_idx] > 127 {
                return Err(error(
                    &self.name,
                    Some((origin_idx, origin)),
                    "process(events) returned more than 128 events for one input event",
                ));
            }
            let op = match &o.op {
                None => origin.op,
                Some(op) => op
                    .as_str()
                    .and_then(Op::from_code)
                    .ok_or_else(|| fail(format!("op must be one of \"c\", \"u\", \"d\", \"r\", \"t\", got {op}")))?,
            };
            let mut renamed = [None, None];
            for ((field, value), slot) in [("db", &o.db), ("table", &o.table)].into_iter().zip(&mut renamed) {
                let current = if field == "db" { &origin.source.db } else { &origin.source.table };
                match value {
                    None => {}
                    // Unchanged names keep their shared `Arc`.
                    Some(Value::String(s)) if !s.is_empty() && **current == **s => {}
                    Some(Value::String(s)) if !s.is_empty() => *slot = Some(Arc::<str>::from(s.as_str())),
                    Some(other) => {
                        return Err(fail(format!("source.{field} must be a non-empty string, got {}", kind(other))))
                    }
                }
            }
            let image = |name: &str, img: codec::Image| match img {
                codec::Image::Absent | codec::Image::Null => Ok(None),
                codec::Image::Row(r) => Ok(Some(r)),
                codec::Image::Invalid(k) => Err(fail(format!("{name} must be an object or null, got {k}"))),
            };
            let before = image("before", o.before)?;
            let after = image("after", o.after)?;
            remaining[origin_idx] -= 1;
            let mut e = if remaining[origin_idx] == 0 {
                events[origin_idx].take().unwrap_or_else(|| unreachable!("checked above"))
            } else {
                Event { before: None, after: None, ..metadata_of(origin) }
            };
            if extra[origin_idx] > 0 {
                e.index = derived_index(e.index, extra[origin_idx]);
            }
            extra[origin_idx] += 1;
            e.op = op;
            e.before = before;
            e.after = after;
            let [db, table] = renamed;
            if let Some(db) = db {
                e.source.db = db;
            }
            if let Some(table) = table {
                e.source.table = table;
            }
            out.push(e);
        }
        Ok(out)
    }
}

/// Everything of `e` but its row images, which the caller replaces.
fn metadata_of(e: &Event) -> Event {
    Event {
        op: e.op,
        before: None,
        after: None,
        source: e.source.clone(),
        tx_id: e.tx_id.clone(),
        tx_position: e.tx_position.clone(),
        index: e.index,
        schema_version: e.schema_version,
        key_columns: e.key_columns.clone(),
    }
}

/// The JSON type of `v`, for error messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
