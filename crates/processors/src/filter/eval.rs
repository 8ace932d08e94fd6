//! How a compiled filter tests an event: op, then table, then the `where`
//! tree, reading fields by cached column position when the processor's
//! [`Cache`] knows the event's column list, and by name otherwise.
//!
//! It must never parse config (the compiled form is built by `parse`) and
//! never log field values.

use std::sync::Arc;

use deltaforge_core::{Columns, Event, Op, Row};
use serde_json::Value;

use super::predicate::{Field, Pred, Test};
use crate::value::{loose_cmp, loose_eq, scalar_text, FieldPath, Image};
use deltaforge_common::TablePattern;

/// A row image of the event being tested, with the positions of the
/// predicate's columns in its column list when they are cached.
#[derive(Clone, Copy)]
struct Img<'a> {
    row: &'a Row,
    positions: Option<&'a [Option<usize>]>,
}

impl<'a> Img<'a> {
    /// The image `row` with its cached column positions, if any.
    fn of(row: &'a Option<Row>, cache: Option<&'a Cache>) -> Option<Self> {
        row.as_ref().map(|row| Img { row, positions: cache.and_then(|c| c.positions(row.columns())) })
    }

    /// The value `field` reads in this image.
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
    /// Whether the predicate holds for `e`.
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
    /// Ops that match; `None` = any.
    pub(super) ops: Option<Vec<Op>>,
    /// Tables that match; empty = every table.
    pub(super) include: Vec<TablePattern>,
    /// Tables that never match.
    pub(super) exclude: Vec<TablePattern>,
    /// The `where` tree.
    pub(super) predicate: Option<Pred>,
    /// The column names the predicate reads (a leaf's `slot` indexes this).
    pub(super) columns: Vec<String>,
    /// `action: keep`.
    pub(super) keep: bool,
}

/// What a [`FilterProcessor`] remembers between events: the table verdicts
/// and the column positions of recent column lists, both found by the
/// addresses of the shared names and lists (sources share one `Arc` per
/// table name and per table schema), so that an event costs no string
/// comparison of its table or column names.
#[derive(Debug, Default)]
pub(super) struct Cache {
    /// `(db, table, include/exclude verdict)`.
    tables: Vec<(Arc<str>, Arc<str>, bool)>,
    /// A column list and the positions of [`CompiledFilter::columns`] in it.
    positions: Vec<(Columns, Box<[Option<usize>]>)>,
}

/// Tables and column lists a [`Cache`] keeps (it forgets the oldest beyond).
const CACHED: usize = 16;

impl Cache {
    /// The include/exclude verdict of a table, remembered by name address.
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
    pub(super) fn matches_with(&self, e: &Event, mut cache: Option<&mut Cache>) -> bool {
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
