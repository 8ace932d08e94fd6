//! The apply plan of one batch: which statements, in which order.
//!
//! In `upsert` mode the events of a batch are **coalesced per key**: for
//! each target table only the last action per key survives (the row's final
//! image to upsert, or a delete), because applying the final state of each
//! key gives the same table as applying every change in order — inserts,
//! updates and deletes of one key are ordered by the source, and nothing
//! else depends on the intermediate images. A primary-key change (an update
//! whose before-key differs from its after-key) is a delete of the old key
//! plus an upsert of the new one. Barriers keep order where it matters: a
//! truncate, and the first event of a table under a new schema version,
//! close the current step, so rows before them are applied before them and
//! rows after them after.
//!
//! An unchanged TOAST value (PostgreSQL's marker object) is taken from an
//! earlier image of the same key in the batch, or else the column is left
//! out of the upsert, so the target keeps its value.
//!
//! In `append` mode nothing is coalesced: every event is one row.
//!
//! This module is pure: no database, no I/O.

use std::collections::HashMap;

use deltaforge_core::{Event, Op, RejectedEvent, Row};
use serde_json::Value;

use crate::config::TargetName;

/// The key of the marker the PostgreSQL source puts for an unchanged TOAST
/// value.
pub const UNCHANGED_TOAST_KEY: &str = "__deltaforge_unchanged_toast";

/// What happens to one key of a table.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Insert or update the row with this image.
    Upsert {
        /// The row's final image (unchanged-TOAST columns left out).
        row: Row,
        /// The event (index in the delivered slice) the image comes from.
        event: usize,
    },
    /// Delete the row with these key values.
    Delete {
        /// Key values, in key-column order.
        key: Vec<Value>,
        /// The event it comes from.
        event: usize,
    },
}

impl Action {
    /// The event this action comes from.
    pub fn event(&self) -> usize {
        match self {
            Action::Upsert { event, .. } | Action::Delete { event, .. } => *event,
        }
    }
}

/// The coalesced changes of one target table within one step.
#[derive(Debug, Clone, PartialEq)]
pub struct TableBatch {
    /// The target table.
    pub target: TargetName,
    /// The source `db` and `table`.
    pub source: (String, String),
    /// Key columns (empty in append mode).
    pub key: Vec<String>,
    /// One action per key, in order of each key's first appearance
    /// (upsert mode).
    pub actions: Vec<Action>,
    /// Events to append, in order (append mode).
    pub appends: Vec<usize>,
}

/// One step of a plan, applied in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Make sure the target of source table `db.table` is ready for rows
    /// of this schema version (created, columns added or dropped) before
    /// any of its later rows.
    Schema {
        /// Source db.
        db: String,
        /// Source table.
        table: String,
        /// The target table.
        target: TargetName,
        /// The schema version the next rows were decoded with.
        version: Option<u64>,
        /// The first event under it.
        event: usize,
    },
    /// Apply these tables' changes.
    Apply(Vec<TableBatch>),
    /// Truncate the target table.
    Truncate {
        /// The target table.
        target: TargetName,
        /// The truncate event.
        event: usize,
    },
}

/// Why a plan cannot be made at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// A table has no key in upsert mode.
    #[error(
        "source table {0} has no primary key: set `key` for it (key: {{\"{0}\": [column, ...]}}) or use `mode: append`"
    )]
    NoKey(String),
    /// The target name cannot be made.
    #[error("{0}")]
    Target(String),
}

/// The steps of one batch, and the events refused for their own fault.
#[derive(Debug, Default)]
pub struct Plan {
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Events that cannot be applied (e.g. a delete without its key).
    pub rejected: Vec<RejectedEvent>,
}

/// How the plan finds each table's target and key.
pub trait Resolve {
    /// The target table of the event's source table.
    fn target(&self, event: &Event) -> Result<TargetName, String>;
    /// The key columns of the event's source table, empty when none.
    fn key(&self, event: &Event) -> Vec<String>;
}

#[derive(Default)]
struct Pending {
    tables: Vec<TableBatch>,
    /// (table index, key text) → action index.
    slots: HashMap<(usize, String), usize>,
    by_target: HashMap<TargetName, usize>,
}

impl Pending {
    fn flush(&mut self, steps: &mut Vec<Step>) {
        if !self.tables.is_empty() {
            steps.push(Step::Apply(std::mem::take(&mut self.tables)));
        }
        self.slots.clear();
        self.by_target.clear();
    }

    fn table(&mut self, target: &TargetName, e: &Event, key: Vec<String>) -> usize {
        if let Some(i) = self.by_target.get(target) {
            return *i;
        }
        self.tables.push(TableBatch {
            target: target.clone(),
            source: (e.source.db.to_string(), e.source.table.to_string()),
            key,
            actions: Vec::new(),
            appends: Vec::new(),
        });
        self.by_target.insert(target.clone(), self.tables.len() - 1);
        self.tables.len() - 1
    }

    fn set(&mut self, table: usize, key: &[Value], action: Action) {
        let text = serde_json::to_string(key).expect("JSON values serialise");
        let actions = &mut self.tables[table].actions;
        match self.slots.get(&(table, text.clone())) {
            Some(i) => {
                let mut action = action;
                if let (Action::Upsert { row, .. }, Action::Upsert { row: earlier, .. }) = (&mut action, &actions[*i]) {
                    fill_toast(row, Some(earlier));
                }
                actions[*i] = action;
            }
            None => {
                let mut action = action;
                if let Action::Upsert { row, .. } = &mut action {
                    fill_toast(row, None);
                }
                actions.push(action);
                self.slots.insert((table, text), actions.len() - 1);
            }
        }
    }
}

fn is_toast(v: &Value) -> bool {
    v.as_object().is_some_and(|m| m.contains_key(UNCHANGED_TOAST_KEY))
}

/// Replaces unchanged-TOAST markers by the earlier image's value, or drops
/// those columns when there is none.
fn fill_toast(row: &mut Row, earlier: Option<&Row>) {
    if !row.values().iter().any(is_toast) {
        return;
    }
    let names: Vec<String> = row.iter().filter(|(_, v)| is_toast(v)).map(|(k, _)| k.to_string()).collect();
    for name in names {
        match earlier.and_then(|r| r.get(&name)).filter(|v| !is_toast(v)) {
            Some(v) => row.set(&name, v.clone()),
            None => {
                row.remove(&name);
            }
        }
    }
}

/// The key values of an image, `None` when a key column is missing.
fn key_values(row: &Row, key: &[String]) -> Option<Vec<Value>> {
    key.iter().map(|k| row.get(k).filter(|v| !is_toast(v)).cloned()).collect()
}

/// Plans `events` in upsert mode.
pub fn plan_upserts(events: &[Event], resolve: &dyn Resolve) -> Result<Plan, PlanError> {
    plan(events, resolve, false)
}

/// Plans `events` in append mode.
pub fn plan_appends(events: &[Event], resolve: &dyn Resolve) -> Result<Plan, PlanError> {
    plan(events, resolve, true)
}

fn plan(events: &[Event], resolve: &dyn Resolve, append: bool) -> Result<Plan, PlanError> {
    let mut out = Plan::default();
    let mut pending = Pending::default();
    let mut versions: HashMap<(&str, &str), Option<u64>> = HashMap::new();
    let reject = |out: &mut Plan, index: usize, reason: String| out.rejected.push(RejectedEvent { index, reason });
    for (i, e) in events.iter().enumerate() {
        let target = resolve.target(e).map_err(PlanError::Target)?;
        let source = (&*e.source.db, &*e.source.table);
        if !append && e.op != Op::Truncate && versions.get(&source) != Some(&e.schema_version) {
            pending.flush(&mut out.steps);
            versions.insert(source, e.schema_version);
            out.steps.push(Step::Schema {
                db: source.0.to_string(),
                table: source.1.to_string(),
                target: target.clone(),
                version: e.schema_version,
                event: i,
            });
        }
        if append {
            let t = pending.table(&target, e, Vec::new());
            pending.tables[t].appends.push(i);
            continue;
        }
        if e.op == Op::Truncate {
            pending.flush(&mut out.steps);
            out.steps.push(Step::Truncate { target, event: i });
            continue;
        }
        let key = resolve.key(e);
        if key.is_empty() {
            return Err(PlanError::NoKey(format!("{}.{}", source.0, source.1)));
        }
        let t = pending.table(&target, e, key.clone());
        let image_key = |row: &Option<Row>| row.as_ref().and_then(|r| key_values(r, &key));
        match e.op {
            Op::Create | Op::Read | Op::Update => {
                let Some(after) = e.after.clone() else {
                    reject(&mut out, i, format!("{} event without an after image", e.op.code()));
                    continue;
                };
                let Some(new_key) = key_values(&after, &key) else {
                    reject(&mut out, i, format!("the row lacks key column(s) {}", key.join(", ")));
                    continue;
                };
                if e.op == Op::Update {
                    if let Some(old_key) = image_key(&e.before).filter(|k| *k != new_key) {
                        pending.set(t, &old_key, Action::Delete { key: old_key.clone(), event: i });
                    }
                }
                pending.set(t, &new_key, Action::Upsert { row: after, event: i });
            }
            Op::Delete => match image_key(&e.before) {
                Some(k) => pending.set(t, &k, Action::Delete { key: k.clone(), event: i }),
                None => reject(&mut out, i, format!("delete without the key column(s) {}", key.join(", "))),
            },
            Op::Truncate => unreachable!("handled above"),
        }
    }
    pending.flush(&mut out.steps);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltaforge_core::testing::EventBuilder;
    use serde_json::json;

    struct ById;
    impl Resolve for ById {
        fn target(&self, e: &Event) -> Result<TargetName, String> {
            Ok(TargetName { schema: "r".into(), table: e.source.table.to_string() })
        }
        fn key(&self, e: &Event) -> Vec<String> {
            if &*e.source.table == "nokey" {
                Vec::new()
            } else {
                vec!["id".into()]
            }
        }
    }

    fn ev(seq: u64, op: Op, before: Option<Value>, after: Option<Value>) -> Event {
        EventBuilder::new(seq).table("s.t").op(op).before(before).after(after).schema_version(1).build()
    }

    fn actions(p: &Plan) -> Vec<String> {
        let mut out = Vec::new();
        for s in &p.steps {
            match s {
                Step::Schema { version, .. } => out.push(format!("schema v{}", version.unwrap_or(0))),
                Step::Truncate { target, .. } => out.push(format!("truncate {target}")),
                Step::Apply(tables) => {
                    for t in tables {
                        for a in &t.actions {
                            out.push(match a {
                                Action::Upsert { row, event } => format!("upsert {} @{event}", row.to_json()),
                                Action::Delete { key, event } => format!("delete {key:?} @{event}"),
                            });
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn coalesces_per_key_and_keeps_the_final_state() {
        let events = vec![
            ev(1, Op::Create, None, Some(json!({"id": 1, "v": "a"}))),
            ev(2, Op::Update, Some(json!({"id": 1, "v": "a"})), Some(json!({"id": 1, "v": "b"}))),
            ev(3, Op::Create, None, Some(json!({"id": 2, "v": "x"}))),
            ev(4, Op::Delete, Some(json!({"id": 2})), None),
            // Primary-key change: delete 1, upsert 5.
            ev(5, Op::Update, Some(json!({"id": 1, "v": "b"})), Some(json!({"id": 5, "v": "b"}))),
            ev(6, Op::Create, None, Some(json!({"id": 1, "v": "again"}))),
        ];
        let p = plan_upserts(&events, &ById).unwrap();
        assert_eq!(
            actions(&p),
            vec![
                "schema v1".to_string(),
                r#"upsert {"id":1,"v":"again"} @5"#.into(),
                "delete [Number(2)] @3".into(),
                r#"upsert {"id":5,"v":"b"} @4"#.into(),
            ]
        );
    }

    #[test]
    fn truncates_and_schema_versions_are_barriers() {
        let mut v2 = ev(4, Op::Create, None, Some(json!({"id": 3, "v": "c", "w": 1})));
        v2.schema_version = Some(2);
        let events = vec![
            ev(1, Op::Create, None, Some(json!({"id": 1, "v": "a"}))),
            EventBuilder::new(2).table("s.t").op(Op::Truncate).build(),
            ev(3, Op::Create, None, Some(json!({"id": 1, "v": "b"}))),
            v2,
        ];
        let p = plan_upserts(&events, &ById).unwrap();
        assert_eq!(
            actions(&p),
            vec![
                "schema v1".to_string(),
                r#"upsert {"id":1,"v":"a"} @0"#.into(),
                "truncate r.t".into(),
                r#"upsert {"id":1,"v":"b"} @2"#.into(),
                "schema v2".into(),
                r#"upsert {"id":3,"v":"c","w":1} @3"#.into(),
            ]
        );
    }

    #[test]
    fn toast_markers_are_filled_or_left_out() {
        let toast = json!({UNCHANGED_TOAST_KEY: true});
        let events = vec![
            ev(1, Op::Update, None, Some(json!({"id": 1, "big": toast, "v": 1}))),
            ev(2, Op::Create, None, Some(json!({"id": 2, "big": "full", "v": 1}))),
            ev(3, Op::Update, None, Some(json!({"id": 2, "big": toast, "v": 2}))),
        ];
        let p = plan_upserts(&events, &ById).unwrap();
        assert_eq!(
            actions(&p)[1..],
            [r#"upsert {"id":1,"v":1} @0"#.to_string(), r#"upsert {"id":2,"big":"full","v":2} @2"#.into()]
        );
    }

    #[test]
    fn keyless_tables_and_keyless_events() {
        let mut e = ev(1, Op::Create, None, Some(json!({"v": 1})));
        let p = plan_upserts(std::slice::from_ref(&e), &ById).unwrap();
        assert_eq!(p.rejected.len(), 1);
        assert!(p.rejected[0].reason.contains("key column"));
        e.source.table = "nokey".into();
        let err = plan_upserts(std::slice::from_ref(&e), &ById).unwrap_err();
        assert!(err.to_string().contains("set `key`"));
        let p = plan_appends(&[e.clone(), e], &ById).unwrap();
        assert!(matches!(&p.steps[..], [Step::Apply(t)] if t[0].appends == vec![0, 1]));
    }
}
