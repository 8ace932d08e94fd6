//! `type: filter` — keeps or drops events by op, table and field values.
//!
//! ```yaml
//! - type: filter
//!   config:
//!     name: paid-orders        # optional; metrics label and error prefix (default: filter)
//!     action: keep             # keep (default): keep matching events, drop the rest
//!                              # drop: drop matching events, keep the rest
//!     ops: [c, u]              # c u d r t (or insert update delete read truncate); default: any
//!     include: [shop.orders, shop.order_*]   # db.table patterns with `*`; default: every table
//!     exclude: [shop.order_archive]          # never match these tables
//!     where:                   # optional predicate tree
//!       all:
//!         - { field: after.status, in: [paid, shipped] }
//!         - any:
//!             - { field: after.amount, gte: 100 }
//!             - { field: after.note, regex: "^VIP" }
//!         - { field: status, changed: true }           # updates whose status changed
//!         - not: { field: before.deleted_at, exists: true }
//! ```
//!
//! An event *matches* when its op is in `ops`, its table matches `include`
//! and no `exclude` pattern, and `where` holds. With `action: keep` the
//! matching events go on; with `action: drop` they are removed.
//!
//! **Predicates.** A leaf is `{ field: PATH, OPERATOR: OPERAND }` with
//! exactly one operator; `all: [..]`, `any: [..]` and `not: {..}` combine
//! predicates and nest freely (`all: []` is true, `any: []` is false).
//! `PATH` is `after.COLUMN`, `before.COLUMN`, or `COLUMN` (the after image,
//! or the before image for deletes); further `.key` segments walk into JSON
//! object values (`after.doc.customer.id`).
//!
//! | operator | operand | matches when |
//! |---|---|---|
//! | `eq` / `ne` | any JSON value | equal / not equal |
//! | `gt` `gte` `lt` `lte` | number or string | the ordering holds |
//! | `in` | list | equal to one element |
//! | `regex` | regex (Rust `regex` syntax, unanchored) | a string, number or boolean value matches |
//! | `exists` | `true`/`false` | the field is present and not null / absent or null |
//! | `changed` | `true`/`false` | an update whose before and after values of the field differ / are equal |
//!
//! Comparisons are numeric when one side is a number and the other a number
//! or numeric string (sources send decimals as strings: `"12.50"` equals
//! `12.5`); two strings compare bytewise (ISO-8601 timestamps order by
//! time); any other pair never satisfies `gt`…`lte`. A missing or null field
//! satisfies only `ne` (with a non-null operand), `exists: false` and
//! `eq: null` (null only). `changed` is false for anything but an update;
//! an absent before image counts as "absent", so an update whose source
//! logs no before image (PostgreSQL without `REPLICA IDENTITY FULL`) counts
//! as changed for every column present after.
//!
//! The predicate tree is compiled once at build time (regexes included), so
//! every config mistake is reported at validation with its path, e.g.
//! `where.all[1].gt: operand must be a number or a string`.
//!
//! Hand-written predicate parsing (rather than a serde enum) gives those
//! path-precise errors; regexes use the `regex` crate (linear-time, no
//! catastrophic backtracking on user input). This module must never log
//! field values.

use std::cmp::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use deltaforge_core::{Columns, Event, Op, Processor, ProcessorError, Row};
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use crate::pattern::TablePattern;
use crate::value::{loose_cmp, loose_eq, scalar_text, FieldPath, Image};
use crate::ConfigProblem;

/// What to do with matching events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Keep matching events and drop the others.
    #[default]
    Keep,
    /// Drop matching events and keep the others.
    Drop,
}

/// Configuration of a `filter` processor (see the module docs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Name in metrics and errors; default `filter`.
    #[serde(default)]
    pub name: Option<String>,
    /// `keep` (default) or `drop` matching events.
    #[serde(default)]
    pub action: Action,
    /// Ops that match (`c`, `u`, `d`, `r`, `t` or their long names); default any.
    #[serde(default)]
    pub ops: Option<Vec<String>>,
    /// Tables that match (`db.table` with `*`); default every table.
    #[serde(default)]
    pub include: Vec<TablePattern>,
    /// Tables that never match.
    #[serde(default)]
    pub exclude: Vec<TablePattern>,
    /// The predicate tree (see the module docs).
    #[serde(default, rename = "where")]
    pub predicate: Option<Value>,
}

/// A compiled predicate.
#[derive(Debug, Clone)]
enum Pred {
    All(Vec<Pred>),
    Any(Vec<Pred>),
    Not(Box<Pred>),
    Leaf(Field, Test),
}

/// A leaf's field: its path, and the index of its column name in
/// [`CompiledFilter::columns`] (the slot of its position in a column list).
#[derive(Debug, Clone)]
struct Field {
    path: FieldPath,
    slot: usize,
}

#[derive(Debug, Clone)]
enum Test {
    Eq(Value),
    Ne(Value),
    Cmp(Value, fn(Ordering) -> bool),
    /// The list, and whether all its elements are strings (then a string
    /// value matches exactly when it equals one of them).
    In(Vec<Value>, bool),
    Regex(Regex),
    Exists(bool),
    Changed(bool),
}

const OPERATORS: &str = "eq, ne, gt, gte, lt, lte, in, regex, exists, changed";

fn parse_op(s: &str) -> Option<Op> {
    Op::from_code(s).or(match s {
        "insert" | "create" => Some(Op::Create),
        "update" => Some(Op::Update),
        "delete" => Some(Op::Delete),
        "read" | "snapshot" => Some(Op::Read),
        "truncate" => Some(Op::Truncate),
        _ => None,
    })
}

/// Compiles a predicate; `columns` collects the column names the leaves read.
fn compile(v: &Value, path: &str, columns: &mut Vec<String>) -> Result<Pred, ConfigProblem> {
    let err = |msg: String| (path.to_string(), msg);
    let m = v.as_object().ok_or_else(|| {
        err("a predicate must be a mapping: `{ field: after.x, eq: 1 }`, `all: [..]`, `any: [..]` or `not: {..}`"
            .into())
    })?;
    for comb in ["all", "any", "not"] {
        if let Some(inner) = m.get(comb) {
            if m.len() != 1 {
                return Err(err(format!("`{comb}` must be the only key of its mapping; nest other tests inside it")));
            }
            let inner_path = if path.is_empty() { comb.to_string() } else { format!("{path}.{comb}") };
            if comb == "not" {
                return Ok(Pred::Not(Box::new(compile(inner, &inner_path, columns)?)));
            }
            let list =
                inner.as_array().ok_or_else(|| (inner_path.clone(), format!("`{comb}` takes a list of predicates")))?;
            let preds = list
                .iter()
                .enumerate()
                .map(|(i, p)| compile(p, &format!("{inner_path}[{i}]"), columns))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(if comb == "all" { Pred::All(preds) } else { Pred::Any(preds) });
        }
    }
    let field = match m.get("field") {
        Some(Value::String(f)) => f,
        Some(_) => return Err(err("`field` must be a string such as `after.status`".into())),
        None => {
            return Err(err(format!(
                "a predicate needs `field:` and one operator ({OPERATORS}), or one of `all`, `any`, `not`"
            )))
        }
    };
    let field =
        FieldPath::parse(field).map_err(|m| (format!("{path}.field").trim_start_matches('.').to_string(), m))?;
    let ops: Vec<(&String, &Value)> = m.iter().filter(|(k, _)| k.as_str() != "field").collect();
    let [(op, operand)] = ops.as_slice() else {
        return Err(err(format!(
            "a field test needs exactly one operator ({OPERATORS}); found {}",
            if ops.is_empty() {
                "none".to_string()
            } else {
                ops.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ")
            }
        )));
    };
    let op_path = if path.is_empty() { op.to_string() } else { format!("{path}.{op}") };
    let op_err = |msg: &str| (op_path.clone(), msg.to_string());
    let ordered = |o: &Value| match o {
        Value::Number(_) | Value::String(_) => Ok(o.clone()),
        _ => Err(op_err("operand must be a number or a string")),
    };
    let test = match op.as_str() {
        "eq" => Test::Eq((*operand).clone()),
        "ne" => Test::Ne((*operand).clone()),
        "gt" => Test::Cmp(ordered(operand)?, |o| o == Ordering::Greater),
        "gte" => Test::Cmp(ordered(operand)?, |o| o != Ordering::Less),
        "lt" => Test::Cmp(ordered(operand)?, |o| o == Ordering::Less),
        "lte" => Test::Cmp(ordered(operand)?, |o| o != Ordering::Greater),
        "in" => {
            let list =
                operand.as_array().cloned().ok_or_else(|| op_err("operand must be a list, e.g. [paid, shipped]"))?;
            let strings = list.iter().all(Value::is_string);
            Test::In(list, strings)
        }
        "regex" => {
            let s = operand.as_str().ok_or_else(|| op_err("operand must be a regular expression string"))?;
            Test::Regex(Regex::new(s).map_err(|e| (op_path.clone(), format!("invalid regex: {e}")))?)
        }
        "exists" => Test::Exists(operand.as_bool().ok_or_else(|| op_err("operand must be true or false"))?),
        "changed" => Test::Changed(operand.as_bool().ok_or_else(|| op_err("operand must be true or false"))?),
        other => return Err(err(format!("unknown operator `{other}`; known: {OPERATORS}"))),
    };
    let slot = match columns.iter().position(|c| *c == field.column) {
        Some(slot) => slot,
        None => {
            columns.push(field.column.clone());
            columns.len() - 1
        }
    };
    Ok(Pred::Leaf(Field { path: field, slot }, test))
}

/// A row image of the event being tested, with the positions of the
/// predicate's columns in its column list when they are cached.
#[derive(Clone, Copy)]
struct Img<'a> {
    row: &'a Row,
    positions: Option<&'a [Option<usize>]>,
}

impl<'a> Img<'a> {
    fn of(row: &'a Option<Row>, cache: Option<&'a Cache>) -> Option<Self> {
        row.as_ref().map(|row| Img { row, positions: cache.and_then(|c| c.positions(row.columns())) })
    }

    fn get(self, field: &Field) -> Option<&'a Value> {
        let v = match self.positions {
            Some(p) => &self.row.values()[p[field.slot]?],
            None => self.row.get(&field.path.column)?,
        };
        FieldPath::walk(v, &field.path.nested)
    }
}

/// The images of one event.
struct Images<'a> {
    before: Option<Img<'a>>,
    after: Option<Img<'a>>,
}

impl Pred {
    fn eval(&self, e: &Event, images: &Images<'_>) -> bool {
        match self {
            Pred::All(ps) => ps.iter().all(|p| p.eval(e, images)),
            Pred::Any(ps) => ps.iter().any(|p| p.eval(e, images)),
            Pred::Not(p) => !p.eval(e, images),
            Pred::Leaf(field, Test::Changed(want)) => {
                let changed = e.op == Op::Update && {
                    let b = images.before.and_then(|i| i.get(field));
                    let a = images.after.and_then(|i| i.get(field));
                    match (b, a) {
                        (Some(b), Some(a)) => b != a,
                        (None, None) => false,
                        _ => true,
                    }
                };
                changed == *want
            }
            Pred::Leaf(field, test) => {
                // `COLUMN` reads the after image, or the before image when there is none.
                let image = match field.path.image {
                    Image::After => images.after,
                    Image::Before => images.before,
                    Image::Current => images.after.or(images.before),
                };
                let v = image.and_then(|i| i.get(field)).filter(|v| !v.is_null());
                match (test, v) {
                    (Test::Eq(o), Some(v)) => loose_eq(v, o),
                    (Test::Eq(o), None) => o.is_null(),
                    (Test::Ne(o), Some(v)) => !loose_eq(v, o),
                    (Test::Ne(o), None) => !o.is_null(),
                    (Test::Cmp(o, ok), Some(v)) => loose_cmp(v, o).is_some_and(ok),
                    // Against strings only, a string is equal exactly when `loose_eq` says so.
                    (Test::In(list, true), Some(Value::String(s))) => list.iter().any(|o| o.as_str() == Some(s)),
                    (Test::In(list, _), Some(v)) => list.iter().any(|o| loose_eq(v, o)),
                    (Test::Regex(re), Some(v)) => scalar_text(v).is_some_and(|t| re.is_match(&t)),
                    (Test::Exists(want), v) => v.is_some() == *want,
                    _ => false,
                }
            }
        }
    }
}

/// The compiled form of a [`FilterConfig`].
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    ops: Option<Vec<Op>>,
    include: Vec<TablePattern>,
    exclude: Vec<TablePattern>,
    predicate: Option<Pred>,
    /// The column names the predicate reads (a leaf's `slot` indexes this).
    columns: Vec<String>,
    keep: bool,
}

/// What a [`FilterProcessor`] remembers between events: the table verdicts
/// and the column positions of recent column lists, both found by the
/// addresses of the shared names and lists (sources share one `Arc` per
/// table name and per table schema), so that an event costs no string
/// comparison of its table or column names.
#[derive(Debug, Default)]
struct Cache {
    /// `(db, table, include/exclude verdict)`.
    tables: Vec<(Arc<str>, Arc<str>, bool)>,
    /// A column list and the positions of [`CompiledFilter::columns`] in it.
    positions: Vec<(Columns, Box<[Option<usize>]>)>,
}

/// Tables and column lists a [`Cache`] keeps (it forgets the oldest beyond).
const CACHED: usize = 16;

impl Cache {
    fn table_ok(&mut self, f: &CompiledFilter, db: &Arc<str>, table: &Arc<str>) -> bool {
        if let Some((_, _, ok)) = self.tables.iter().find(|(d, t, _)| Arc::ptr_eq(d, db) && Arc::ptr_eq(t, table)) {
            return *ok;
        }
        let ok = f.table_ok(db, table);
        if self.tables.len() >= CACHED {
            self.tables.remove(0);
        }
        self.tables.push((db.clone(), table.clone(), ok));
        ok
    }

    /// Makes sure the positions of `columns` are cached.
    fn learn(&mut self, f: &CompiledFilter, columns: &Columns) {
        if self.positions.iter().any(|(c, _)| Arc::ptr_eq(c, columns)) {
            return;
        }
        if self.positions.len() >= CACHED {
            self.positions.remove(0);
        }
        let found = f.columns.iter().map(|name| columns.iter().position(|c| **c == **name)).collect();
        self.positions.push((columns.clone(), found));
    }

    /// The cached positions of `columns`, if any.
    fn positions(&self, columns: &Columns) -> Option<&[Option<usize>]> {
        self.positions.iter().find(|(c, _)| Arc::ptr_eq(c, columns)).map(|(_, p)| &**p)
    }
}

impl FilterConfig {
    /// Validates and compiles the config; errors name the field path.
    pub fn check(&self) -> Result<CompiledFilter, ConfigProblem> {
        let ops = match &self.ops {
            None => None,
            Some(list) => Some(
                list.iter()
                    .enumerate()
                    .map(|(i, s)| {
                        parse_op(s).ok_or_else(|| {
                            (
                                format!("ops[{i}]"),
                                format!("unknown op {s:?}; use c, u, d, r, t (insert, update, delete, read, truncate)"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let mut columns = Vec::new();
        let predicate = self.predicate.as_ref().map(|p| compile(p, "where", &mut columns)).transpose()?;
        Ok(CompiledFilter {
            ops,
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            predicate,
            columns,
            keep: self.action == Action::Keep,
        })
    }
}

impl CompiledFilter {
    /// Whether `e` matches (before `action` is applied).
    pub fn matches(&self, e: &Event) -> bool {
        self.matches_with(e, None)
    }

    /// Whether `e` goes on.
    pub fn keeps(&self, e: &Event) -> bool {
        self.matches(e) == self.keep
    }

    /// Whether the table passes `include` and `exclude`.
    fn table_ok(&self, db: &str, table: &str) -> bool {
        (self.include.is_empty() || TablePattern::any(&self.include, db, table))
            && !TablePattern::any(&self.exclude, db, table)
    }

    /// [`matches`](Self::matches), with or without the processor's cache;
    /// the cheapest tests (op, then table) first.
    fn matches_with(&self, e: &Event, mut cache: Option<&mut Cache>) -> bool {
        if let Some(ops) = &self.ops {
            if !ops.contains(&e.op) {
                return false;
            }
        }
        if !self.include.is_empty() || !self.exclude.is_empty() {
            let ok = match cache.as_deref_mut() {
                Some(c) => c.table_ok(self, &e.source.db, &e.source.table),
                None => self.table_ok(&e.source.db, &e.source.table),
            };
            if !ok {
                return false;
            }
        }
        let Some(p) = &self.predicate else { return true };
        let cache = cache.map(|c| {
            for row in [&e.before, &e.after].into_iter().flatten() {
                c.learn(self, row.columns());
            }
            &*c
        });
        // (A list learnt first may have been forgotten for the second when
        // both are new and the cache is full: that image reads by name.)
        let images = Images { before: Img::of(&e.before, cache), after: Img::of(&e.after, cache) };
        p.eval(e, &images)
    }
}

/// The `filter` processor.
#[derive(Debug)]
pub struct FilterProcessor {
    name: String,
    filter: CompiledFilter,
    cache: Cache,
}

impl FilterProcessor {
    /// Builds the processor; errors as [`FilterConfig::check`].
    pub fn new(cfg: FilterConfig) -> Result<Self, ConfigProblem> {
        let filter = cfg.check()?;
        Ok(FilterProcessor { name: cfg.name.unwrap_or_else(|| "filter".into()), filter, cache: Cache::default() })
    }
}

#[async_trait]
impl Processor for FilterProcessor {
    fn name(&self) -> &str {
        &self.name
    }

    async fn process(&mut self, mut events: Vec<Event>) -> Result<Vec<Event>, ProcessorError> {
        let (filter, cache) = (&self.filter, &mut self.cache);
        events.retain(|e| filter.matches_with(e, Some(cache)) == filter.keep);
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{event, insert};
    use serde_json::json;

    fn filter(cfg: Value) -> CompiledFilter {
        serde_json::from_value::<FilterConfig>(cfg).unwrap().check().unwrap()
    }

    fn config_error(cfg: Value) -> ConfigProblem {
        match serde_json::from_value::<FilterConfig>(cfg) {
            Ok(c) => c.check().unwrap_err(),
            Err(e) => (String::new(), e.to_string()),
        }
    }

    /// Whether the leaf `{field, op: operand}` matches an insert with `after`.
    fn leaf(field: &str, op: &str, operand: Value, after: Value) -> bool {
        filter(json!({"where": {"field": field, op: operand}})).matches(&insert("s.t", after))
    }

    fn update(before: Value, after: Value) -> Event {
        event(Op::Update, "s.t", Some(before), Some(after))
    }

    #[test]
    fn eq_and_ne() {
        assert!(leaf("after.s", "eq", json!("paid"), json!({"s": "paid"})));
        assert!(!leaf("after.s", "eq", json!("paid"), json!({"s": "new"})));
        assert!(leaf("after.n", "eq", json!(5), json!({"n": 5.0})));
        assert!(leaf("after.amount", "eq", json!(12.5), json!({"amount": "12.50"})));
        assert!(leaf("after.o", "eq", json!({"a": 1}), json!({"o": {"a": 1}})));
        assert!(leaf("after.s", "ne", json!("paid"), json!({"s": "new"})));
        assert!(!leaf("after.s", "ne", json!("paid"), json!({"s": "paid"})));
        // Missing and null fields.
        assert!(!leaf("after.x", "eq", json!("paid"), json!({"s": "paid"})));
        assert!(leaf("after.x", "ne", json!("paid"), json!({"s": "paid"})));
        assert!(leaf("after.x", "eq", Value::Null, json!({"x": null})));
        assert!(!leaf("after.x", "ne", Value::Null, json!({"x": null})));
        assert!(leaf("after.x", "ne", Value::Null, json!({"x": 0})));
    }

    #[test]
    fn ordering_operators() {
        let row = json!({"n": 10, "amount": "99.95", "ts": "2026-01-02T00:00:00Z", "b": true});
        let cases = [
            ("after.n", "gt", json!(9), true),
            ("after.n", "gt", json!(10), false),
            ("after.n", "gte", json!(10), true),
            ("after.n", "gte", json!(10.5), false),
            ("after.n", "lt", json!(10.5), true),
            ("after.n", "lt", json!(10), false),
            ("after.n", "lte", json!(10), true),
            ("after.n", "lte", json!(9), false),
            ("after.amount", "gt", json!(99.9), true),
            ("after.amount", "lt", json!(100), true),
            ("after.ts", "gt", json!("2026-01-01"), true),
            ("after.ts", "lt", json!("2026-01-01"), false),
            ("after.b", "gt", json!(0), false),
            ("after.missing", "lt", json!(100), false),
            ("after.ts", "gt", json!(5), false),
        ];
        for (field, op, operand, want) in cases {
            assert_eq!(leaf(field, op, operand.clone(), row.clone()), want, "{field} {op} {operand}");
        }
    }

    #[test]
    fn in_regex_exists() {
        assert!(leaf("after.s", "in", json!(["paid", "shipped"]), json!({"s": "shipped"})));
        assert!(!leaf("after.s", "in", json!(["paid", "shipped"]), json!({"s": "new"})));
        assert!(leaf("after.n", "in", json!([1, 2, 3]), json!({"n": "2"})));
        assert!(!leaf("after.x", "in", json!([null]), json!({"y": 1})));
        assert!(leaf("after.note", "regex", json!("^VIP"), json!({"note": "VIP order"})));
        assert!(!leaf("after.note", "regex", json!("^VIP"), json!({"note": "a VIP order"})));
        assert!(leaf("after.n", "regex", json!("^4[0-9]$"), json!({"n": 42})));
        assert!(!leaf("after.note", "regex", json!("x"), json!({"note": null})));
        assert!(leaf("after.note", "exists", json!(true), json!({"note": "x"})));
        assert!(!leaf("after.note", "exists", json!(true), json!({"note": null})));
        assert!(!leaf("after.note", "exists", json!(true), json!({})));
        assert!(leaf("after.note", "exists", json!(false), json!({"note": null})));
        assert!(leaf("after.note", "exists", json!(false), json!({})));
        assert!(leaf("after.doc.customer.id", "eq", json!(7), json!({"doc": {"customer": {"id": 7}}})));
        assert!(!leaf("after.doc.customer.id", "exists", json!(true), json!({"doc": "text"})));
    }

    #[test]
    fn changed_only_for_updates() {
        let f = filter(json!({"where": {"field": "status", "changed": true}}));
        assert!(f.matches(&update(json!({"status": "new"}), json!({"status": "paid"}))));
        assert!(!f.matches(&update(json!({"status": "paid"}), json!({"status": "paid"}))));
        assert!(f.matches(&event(Op::Update, "s.t", None, Some(json!({"status": "paid"})))), "no before image");
        assert!(!f.matches(&insert("s.t", json!({"status": "paid"}))));
        let unchanged = filter(json!({"where": {"field": "after.status", "changed": false}}));
        assert!(unchanged.matches(&update(json!({"status": "paid"}), json!({"status": "paid"}))));
        assert!(!unchanged.matches(&update(json!({"status": "new"}), json!({"status": "paid"}))));
    }

    #[test]
    fn current_image_and_before() {
        let del = event(Op::Delete, "s.t", Some(json!({"s": "gone"})), None);
        assert!(filter(json!({"where": {"field": "s", "eq": "gone"}})).matches(&del));
        assert!(filter(json!({"where": {"field": "before.s", "eq": "gone"}})).matches(&del));
        assert!(!filter(json!({"where": {"field": "after.s", "eq": "gone"}})).matches(&del));
        let upd = update(json!({"s": "old"}), json!({"s": "new"}));
        assert!(filter(json!({"where": {"field": "s", "eq": "new"}})).matches(&upd), "current = after");
    }

    #[test]
    fn combinators_nest() {
        let f = filter(json!({"where": {"all": [
            {"field": "after.s", "in": ["paid", "shipped"]},
            {"any": [{"field": "after.n", "gte": 100}, {"field": "after.note", "regex": "^VIP"}]},
            {"not": {"field": "after.test", "eq": true}}
        ]}}));
        assert!(f.matches(&insert("s.t", json!({"s": "paid", "n": 150, "note": null, "test": false}))));
        assert!(f.matches(&insert("s.t", json!({"s": "paid", "n": 5, "note": "VIP x"}))));
        assert!(!f.matches(&insert("s.t", json!({"s": "paid", "n": 5, "note": "x"}))), "any fails");
        assert!(!f.matches(&insert("s.t", json!({"s": "new", "n": 500}))), "all fails");
        assert!(!f.matches(&insert("s.t", json!({"s": "paid", "n": 500, "test": true}))), "not fails");
        assert!(filter(json!({"where": {"all": []}})).matches(&insert("s.t", json!({}))));
        assert!(!filter(json!({"where": {"any": []}})).matches(&insert("s.t", json!({}))));
    }

    #[test]
    fn ops_tables_and_action() {
        let f = filter(json!({"ops": ["c", "delete"], "include": ["shop.order*"], "exclude": ["shop.order_archive"]}));
        assert!(f.matches(&insert("shop.orders", json!({}))));
        assert!(f.matches(&event(Op::Delete, "shop.order_lines", Some(json!({})), None)));
        assert!(!f.matches(&event(Op::Update, "shop.orders", Some(json!({})), Some(json!({})))), "op");
        assert!(!f.matches(&insert("shop.customers", json!({}))), "not included");
        assert!(!f.matches(&insert("shop.order_archive", json!({}))), "excluded");
        assert!(!f.matches(&insert("other.orders", json!({}))), "db differs");

        let drop = filter(json!({"action": "drop", "ops": ["d"]}));
        assert!(drop.keeps(&insert("a.b", json!({}))));
        assert!(!drop.keeps(&event(Op::Delete, "a.b", Some(json!({})), None)));
        let keep = filter(json!({"ops": ["t", "r", "u"]}));
        assert!(keep.keeps(&event(Op::Truncate, "a.b", None, None)));
        assert!(!keep.keeps(&insert("a.b", json!({}))));
    }

    #[tokio::test]
    async fn processor_keeps_order_and_drops_non_matching() {
        let mut p =
            FilterProcessor::new(serde_json::from_value(json!({"where": {"field": "after.n", "gt": 1}})).unwrap())
                .unwrap();
        let events = (0..5).map(|n| insert("s.t", json!({"n": n}))).collect();
        let out = p.process(events).await.unwrap();
        let ns: Vec<Value> = out.iter().map(|e| e.after.as_ref().unwrap().get("n").unwrap().clone()).collect();
        assert_eq!(ns, vec![json!(2), json!(3), json!(4)]);
        assert_eq!(p.name(), "filter");
    }

    #[tokio::test]
    async fn the_processors_caches_agree_with_plain_matching() {
        // Shared and unshared column lists, differing before/after lists,
        // several tables, ops and images; more lists than the cache keeps.
        let shared: Columns = ["id", "s", "n", "doc"].iter().map(|c| Arc::<str>::from(*c)).collect::<Vec<_>>().into();
        let other: Columns = ["doc", "n", "id"].iter().map(|c| Arc::<str>::from(*c)).collect::<Vec<_>>().into();
        let mut events = Vec::new();
        for i in 0..200i64 {
            let table = ["shop.orders", "shop.order_archive", "other.orders", "shop.order_lines"][(i % 4) as usize];
            let status = ["paid", "new", "shipped"][(i % 3) as usize];
            let doc = json!({"k": i % 5});
            let mut e = match i % 5 {
                0 => insert(table, json!({"id": i, "s": status, "n": i.to_string()})),
                1 => update(json!({"s": "new", "n": i}), json!({"s": status, "n": i, "doc": doc})),
                2 => event(Op::Delete, table, Some(json!({"s": status, "n": format!("{i}.5")})), None),
                _ => insert(table, json!({})),
            };
            if i % 5 == 3 {
                e.after = Some(Row::new(shared.clone(), vec![json!(i), json!(status), json!(i * 3), doc.clone()]));
            }
            if i % 5 == 4 {
                e.after = Some(Row::new(other.clone(), vec![doc, json!(format!("{}.25", i)), json!(i)]));
                e.before = Some(Row::new(shared.clone(), vec![json!(i), json!("new"), json!(i), Value::Null]));
                e.op = Op::Update;
            }
            events.push(e);
        }
        let configs = [
            json!({"include": ["shop.order*"], "exclude": ["shop.order_archive"]}),
            json!({"action": "drop", "ops": ["u", "d"], "where": {"field": "n", "gte": 100}}),
            json!({"where": {"any": [
                {"field": "after.s", "in": ["paid", "shipped"]},
                {"field": "before.s", "in": ["new", 5]},
                {"field": "after.doc.k", "in": [1, 3]},
                {"field": "n", "lt": "150"}
            ]}}),
            json!({"include": ["*.orders", "s.*"], "where": {"all": [
                {"field": "s", "changed": true},
                {"not": {"field": "after.doc.k", "eq": 0}},
                {"field": "after.n", "regex": "^1"}
            ]}}),
            json!({"where": {"field": "after.n", "in": ["5", "12.25", "44"]}}),
        ];
        for cfg in configs {
            let plain = filter(cfg.clone());
            let want: Vec<Event> = events.iter().filter(|e| plain.keeps(e)).cloned().collect();
            assert!(!want.is_empty() && want.len() < events.len(), "{cfg}: a useful case");
            let mut p = FilterProcessor::new(serde_json::from_value(cfg.clone()).unwrap()).unwrap();
            for _ in 0..2 {
                assert_eq!(p.process(events.clone()).await.unwrap(), want, "{cfg}");
            }
        }
    }

    #[test]
    fn config_errors_name_the_path() {
        let cases = [
            (
                json!({"where": {"all": [{"field": "a", "eq": 1}, {"field": "b", "gtt": 2}]}}),
                "where.all[1]",
                "unknown operator `gtt`",
            ),
            (json!({"where": {"any": [{"field": "b", "gt": [1]}]}}), "where.any[0].gt", "number or a string"),
            (json!({"where": {"field": "b", "regex": "("}}), "where.regex", "invalid regex"),
            (json!({"where": {"field": "b", "in": 3}}), "where.in", "must be a list"),
            (json!({"where": {"field": "b", "eq": 1, "ne": 2}}), "where", "exactly one operator"),
            (json!({"where": {"field": "b"}}), "where", "found none"),
            (json!({"where": {"all": {"field": "b"}}}), "where.all", "takes a list"),
            (json!({"where": {"not": {"field": "after", "eq": 1}}}), "where.not.field", "names no column"),
            (json!({"where": {"all": [], "any": []}}), "where", "only key"),
            (json!({"where": {"eq": 1}}), "where", "needs `field:`"),
            (json!({"where": {"field": "x", "exists": "yes"}}), "where.exists", "true or false"),
            (json!({"where": "x > 1"}), "where", "must be a mapping"),
            (json!({"ops": ["c", "upsert"]}), "ops[1]", "unknown op"),
        ];
        for (cfg, field, msg) in cases {
            let (f, m) = config_error(cfg.clone());
            assert_eq!(f, field, "{cfg}: {m}");
            assert!(m.contains(msg), "{cfg}: {m}");
        }
        let (_, m) = config_error(json!({"include": ["orders"]}));
        assert!(m.contains("db.table"), "{m}");
        let (_, m) = config_error(json!({"action": "maybe"}));
        assert!(m.contains("keep") && m.contains("drop"), "{m}");
    }
}
