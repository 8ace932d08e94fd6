//! The progress model: what a table sink records in its progress table in
//! the same transaction as the rows, and how a delivered batch is cut to
//! the part not yet applied.
//!
//! One row per `(pipeline, sink)`: the source id, the mark of the last
//! applied event (its transaction position and index in the transaction —
//! the two parts of its idempotency key, which order every event of a
//! source), the batch sequence (1, 2, … per applied batch, never reused)
//! and the idempotency keys of the events of that batch that were refused
//! (so that a replay of the batch refuses them again instead of skipping
//! them as applied).
//!
//! This module is pure; the sinks read and write the row.

use std::cmp::Ordering;

use deltaforge_core::{Event, Position, RejectedEvent};
use serde_json::{json, Value};

/// Where one event sits in its source's order.
#[derive(Debug, Clone, PartialEq)]
pub struct EventMark {
    /// The event's transaction position.
    pub tx_position: Position,
    /// Its index in the transaction.
    pub index: u32,
}

impl EventMark {
    /// The mark of an event.
    pub fn of(e: &Event) -> Self {
        EventMark { tx_position: e.tx_position.clone(), index: e.index }
    }

    /// `{"tx_position": {...}, "index": n}`.
    pub fn to_json(&self) -> Value {
        json!({"tx_position": self.tx_position.to_json(), "index": self.index})
    }

    /// Reads [`to_json`](Self::to_json)'s form.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let tx_position = Position::from_json(v.get("tx_position").ok_or("no `tx_position`")?)?;
        let index = v.get("index").and_then(Value::as_u64).ok_or("no `index`")? as u32;
        Ok(EventMark { tx_position, index })
    }

    /// The order of two marks; `None` when the positions are of different
    /// sources (not comparable).
    pub fn compare(&self, other: &EventMark) -> Option<Ordering> {
        Some(self.tx_position.compare(&other.tx_position)?.then(self.index.cmp(&other.index)))
    }
}

/// A sink's stored progress.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Progress {
    /// The batch sequence of the last applied batch (0: none yet).
    pub batch_seq: u64,
    /// The last applied event.
    pub last: Option<EventMark>,
    /// Idempotency keys of the events the last applied batch refused.
    pub rejected: Vec<String>,
}

impl Progress {
    /// How many leading events of `events` were already applied: those at
    /// or before the stored mark. Events of another source (incomparable
    /// positions) count as not applied.
    pub fn applied_prefix(&self, events: &[Event]) -> usize {
        let Some(last) = &self.last else { return 0 };
        events
            .iter()
            .take_while(|e| matches!(EventMark::of(e).compare(last), Some(Ordering::Less | Ordering::Equal)))
            .count()
    }

    /// The events among the already-applied prefix that were refused when
    /// they were applied: refused again, so they are never lost.
    pub fn refused_again(&self, events: &[Event], prefix: usize) -> Vec<RejectedEvent> {
        if self.rejected.is_empty() {
            return Vec::new();
        }
        events[..prefix]
            .iter()
            .enumerate()
            .filter(|(_, e)| self.rejected.contains(&e.idempotency_key()))
            .map(|(index, _)| RejectedEvent { index, reason: "refused when it was first applied".into() })
            .collect()
    }

    /// The progress after applying `events` (non-empty) as the next batch.
    pub fn next(&self, events: &[Event], rejected: &[RejectedEvent]) -> Progress {
        Progress {
            batch_seq: self.batch_seq + 1,
            last: events.last().map(EventMark::of).or_else(|| self.last.clone()),
            rejected: rejected.iter().map(|r| events[r.index].idempotency_key()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltaforge_core::testing::EventBuilder;

    fn ev(tx: u64, index: u32) -> Event {
        EventBuilder::new(tx).tx(tx).index(index).build()
    }

    #[test]
    fn the_applied_prefix_is_skipped() {
        let events = vec![ev(1, 0), ev(1, 1), ev(2, 0), ev(3, 0)];
        let p = Progress::default();
        assert_eq!(p.applied_prefix(&events), 0);
        let p = p.next(&events[..2], &[]);
        assert_eq!(p.batch_seq, 1);
        assert_eq!(p.applied_prefix(&events), 2);
        let p = p.next(&events[2..3], &[RejectedEvent { index: 0, reason: "x".into() }]);
        assert_eq!(p.batch_seq, 2);
        assert_eq!(p.applied_prefix(&events), 3);
        let again = p.refused_again(&events, 3);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].index, 2);
        let mark = p.last.clone().unwrap();
        assert_eq!(EventMark::from_json(&mark.to_json()).unwrap(), mark);
    }

    /// A replay after a restart is cut into batches by the new run's
    /// batcher, not the old one's: skipping by position applies each
    /// event once whatever the cuts.
    #[test]
    fn a_replay_cut_differently_applies_each_event_once() {
        let events: Vec<Event> = (1..=6).flat_map(|tx| (0..3).map(move |i| ev(tx, i))).collect();
        // First run: batches of 4 then 5 events applied, then a crash.
        let mut p = Progress::default();
        let mut applied = Vec::new();
        for cut in [&events[..4], &events[4..9]] {
            let todo = &cut[p.applied_prefix(cut)..];
            applied.extend(todo.iter().map(Event::idempotency_key));
            p = p.next(todo, &[]);
        }
        // The replay starts at the checkpoint (event 2) in batches of 5.
        for cut in events[2..].chunks(5) {
            let todo = &cut[p.applied_prefix(cut)..];
            if !todo.is_empty() {
                applied.extend(todo.iter().map(Event::idempotency_key));
                p = p.next(todo, &[]);
            }
        }
        let expected: Vec<String> = events.iter().map(Event::idempotency_key).collect();
        assert_eq!(applied, expected, "every event applied once, in order");
    }
}
