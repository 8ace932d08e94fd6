//! Comparing a table by chunk hashes (the method of data-diff and
//! pt-table-checksum), when the sink is a database table: each side hashes
//! key ranges in SQL ([`crate::hashing`]), only ranges whose hashes differ
//! are split (by [`FANOUT`]) and hashed again, down to ranges of at most
//! `leaf` key values, which are then read row by row on both sides and
//! compared like any other rows.
//!
//! Used only when it is exact: one integer key column, the same columns on
//! both sides, every column of a hashable type, no processor in the
//! pipeline and no `--where`; [`plan`] says why not otherwise, and the
//! caller compares row by row. This module never writes.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use serde_json::Value;

use crate::diff::{differ, Diff, Suspect};
use crate::error::VerifyError;
use crate::hashing::{self, Class, Range, RangeHash};
use crate::model::{row_object, TableLayout};
use crate::normalize;
use crate::options::Options;
use crate::sink::SinkReader;
use crate::source::SourceReader;
use crate::sql::{Dialect, SqlReader};

/// Parts a differing range is split into.
pub const FANOUT: u128 = 8;

/// One side of a hashed comparison.
#[async_trait]
pub trait HashSide: Send {
    /// The key's smallest and largest values (`None`: empty table).
    async fn bounds(&mut self) -> Result<Option<(i128, i128)>, VerifyError>;
    /// The hashes of the non-empty buckets of `width` key values of `range`.
    async fn buckets(&mut self, range: Range, width: u128) -> Result<BTreeMap<i128, RangeHash>, VerifyError>;
}

/// What a walk found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Walk {
    /// Ranges to read row by row, in key order.
    pub leaves: Vec<Range>,
    /// Rows on the first side (from its top-level hashes).
    pub rows: u64,
    /// Ranges hashed (on each side).
    pub ranges_hashed: u64,
}

/// Hashes both sides in ranges of `top` key values, descending into
/// differing ranges down to `leaf` key values.
pub async fn walk(a: &mut dyn HashSide, b: &mut dyn HashSide, top: u128, leaf: u128) -> Result<Walk, VerifyError> {
    let mut out = Walk::default();
    // Both sides at once: each statement scans its server's range.
    let (ba, bb) = tokio::join!(a.bounds(), b.bounds());
    let bounds = match (ba?, bb?) {
        (None, None) => return Ok(out),
        (Some(x), None) | (None, Some(x)) => x,
        (Some((l1, h1)), Some((l2, h2))) => (l1.min(l2), h1.max(h2)),
    };
    let mut todo = vec![(Range { lo: bounds.0, hi: bounds.1 + 1 }, top.max(1), true)];
    while let Some((range, width, first)) = todo.pop() {
        let (ha, hb) = tokio::join!(a.buckets(range, width), b.buckets(range, width));
        let (ha, hb) = (ha?, hb?);
        out.ranges_hashed += ha.len().max(hb.len()) as u64;
        if first {
            out.rows = ha.values().map(|h| h.rows).sum();
        }
        let mut next = Vec::new();
        for i in hashing::differing(&ha, &hb) {
            let r = range.bucket(i, width);
            if r.width() <= leaf {
                out.leaves.push(r);
            } else {
                next.push((r, hashing::split_width(r.width(), FANOUT, leaf), false));
            }
        }
        // Depth first, in key order.
        todo.extend(next.into_iter().rev());
    }
    out.leaves.sort_by_key(|r| r.lo);
    Ok(out)
}

/// A side hashed by SQL.
struct SqlSide<'a> {
    sql: &'a mut dyn SqlReader,
    table: String,
    key: String,
    row: String,
}

#[async_trait]
impl HashSide for SqlSide<'_> {
    async fn bounds(&mut self) -> Result<Option<(i128, i128)>, VerifyError> {
        let d = self.sql.dialect();
        let rows = self.sql.query(&hashing::bounds_sql(d, &self.table, &self.key)).await?;
        let cell =
            |i: usize| rows.first().and_then(|r| r.get(i)).and_then(|c| c.as_deref()).and_then(|t| t.parse().ok());
        Ok(cell(0).zip(cell(1)))
    }

    async fn buckets(&mut self, range: Range, width: u128) -> Result<BTreeMap<i128, RangeHash>, VerifyError> {
        let d = self.sql.dialect();
        let sql = hashing::buckets_sql(d, &self.table, &self.key, &self.row, range.lo, range.hi, width);
        hashing::parse_buckets(&self.sql.query(&sql).await?).map_err(VerifyError::Unsupported)
    }
}

/// How a table is hashed on both sides.
#[derive(Debug, Clone)]
pub struct Plan {
    key: String,
    source: (Dialect, String, Vec<(String, Class)>),
    sink: (Dialect, String, Vec<(String, Class)>),
}

fn split(name: &str) -> (&str, &str) {
    name.split_once('.').unwrap_or(("", name))
}

async fn classes(sql: &mut dyn SqlReader, name: &str) -> Result<Result<Vec<(String, Class)>, String>, VerifyError> {
    let (s, t) = split(name);
    let d = sql.dialect();
    let mut out = Vec::new();
    for (col, ty) in sql.columns(s, t).await? {
        match Class::of(d, &ty) {
            Some(c) => out.push((col, c)),
            None => return Ok(Err(format!("column {col} of {name} has type {ty}, which is not hashed"))),
        }
    }
    Ok(Ok(out))
}

/// How `table` can be hashed, or why it cannot (`Ok(Err(reason))`).
pub async fn plan(
    source: &mut dyn SourceReader,
    sink: &mut dyn SinkReader,
    table: &TableLayout,
) -> Result<Result<Plan, String>, VerifyError> {
    let [key] = table.key.as_slice() else { return Ok(Err("its key has several columns".into())) };
    let Some(src) = source.sql() else { return Ok(Err("the source cannot hash".into())) };
    let sd = src.dialect();
    let src_cols = match classes(src, &table.name).await? {
        Ok(c) => c,
        Err(why) => return Ok(Err(why)),
    };
    let Some((dst, target)) = sink.table_sql(&table.name) else { return Ok(Err("the sink cannot hash".into())) };
    let dd = dst.dialect();
    let dst_cols = match classes(dst, &target).await? {
        Ok(c) => c,
        Err(why) => return Ok(Err(why)),
    };
    let by_name: HashMap<&str, Class> = dst_cols.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    if src_cols.len() != dst_cols.len() || src_cols.iter().any(|(n, _)| !by_name.contains_key(n.as_str())) {
        return Ok(Err(format!("the target table {target} has other columns than the source's")));
    }
    if let Some((n, c)) = src_cols.iter().find(|(n, c)| !c.agrees(by_name[n.as_str()])) {
        return Ok(Err(format!(
            "column {n} has type class {c:?} in the source and {:?} in the target",
            by_name[n.as_str()]
        )));
    }
    let key_int = |cols: &[(String, Class)]| cols.iter().any(|(n, c)| n == key && *c == Class::Int);
    if !key_int(&src_cols) || !key_int(&dst_cols) {
        return Ok(Err(format!("its key {key} is not an integer on both sides")));
    }
    // The target's columns in the source's order.
    let dst_ordered = src_cols.iter().map(|(n, _)| (n.clone(), by_name[n.as_str()])).collect();
    Ok(Ok(Plan { key: key.clone(), source: (sd, table.name.clone(), src_cols), sink: (dd, target, dst_ordered) }))
}

/// Per table counts of a hashed comparison.
#[derive(Debug, Default)]
pub(crate) struct Hashed {
    /// The differences found in the ranges read row by row.
    pub(crate) suspects: Vec<Suspect>,
    /// Source rows (from the hashes).
    pub source_rows: u64,
    /// Ranges hashed.
    pub ranges_hashed: u64,
    /// Ranges read row by row.
    pub ranges_read: u64,
}

/// Compares `table` by chunk hashes along `plan`.
pub(crate) async fn compare(
    source: &mut dyn SourceReader,
    sink: &mut dyn SinkReader,
    table: &TableLayout,
    plan: &Plan,
    opts: &Options,
) -> Result<Hashed, VerifyError> {
    let side = |d: Dialect, name: &str, cols: &[(String, Class)]| {
        let (s, t) = split(name);
        (d.table(s, t), hashing::row_text(d, cols))
    };
    let (st, sr) = side(plan.source.0, &plan.source.1, &plan.source.2);
    let (dt, dr) = side(plan.sink.0, &plan.sink.1, &plan.sink.2);
    let walked = {
        let src = source.sql().ok_or_else(|| VerifyError::Unsupported("the source cannot hash".into()))?;
        let (dst, _) =
            sink.table_sql(&table.name).ok_or_else(|| VerifyError::Unsupported("the sink cannot hash".into()))?;
        let mut a = SqlSide { sql: src, table: st, key: plan.key.clone(), row: sr };
        let mut b = SqlSide { sql: dst, table: dt, key: plan.key.clone(), row: dr };
        walk(&mut a, &mut b, opts.hash_rows.max(1) as u128, opts.hash_leaf.max(1) as u128).await?
    };
    let mut out = Hashed { source_rows: walked.rows, ranges_hashed: walked.ranges_hashed, ..Hashed::default() };
    let canon = |key: &str| {
        let v: Vec<Value> = serde_json::from_str(key).unwrap_or_default();
        let c: Vec<Value> = v.iter().map(normalize::canonical).collect();
        deltaforge_core::snapshot::key_string(c.iter())
    };
    for r in walked.leaves {
        out.ranges_read += 1;
        let cond = hashing::range_condition(plan.source.0, &plan.key, r);
        let chunk = source.chunk(table, None, Some(&cond), r.width() as usize + 1).await?;
        let mut got: HashMap<String, (String, crate::model::SinkRow)> = HashMap::new();
        for (k, row) in sink.rows_in(&table.name, &hashing::range_condition(plan.sink.0, &plan.key, r)).await? {
            got.insert(canon(&k), (k, row));
        }
        for row in &chunk.rows {
            let key = table.key_of_row(row).unwrap_or_default();
            let found = got.remove(&canon(&key)).map(|(_, r)| r);
            let same = |a: &Value, b: &Value| sink.same(a, b);
            if let Some(diff) = differ(opts, &table.name, Some(&row_object(row)), found.as_ref(), &same) {
                out.suspects.push(Suspect { key, values: table.key_values(row), diff });
            }
        }
        for (_, (key, row)) in got {
            let values = table.key.iter().map(|k| row.get(k).cloned().unwrap_or(Value::Null)).collect();
            out.suspects.push(Suspect { key, values, diff: Diff::Extra });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A side held in memory: key → row hash.
    struct Mem(BTreeMap<i128, u128>, u64);

    #[async_trait]
    impl HashSide for Mem {
        async fn bounds(&mut self) -> Result<Option<(i128, i128)>, VerifyError> {
            Ok(self.0.keys().next().copied().zip(self.0.keys().next_back().copied()))
        }

        async fn buckets(&mut self, r: Range, width: u128) -> Result<BTreeMap<i128, RangeHash>, VerifyError> {
            self.1 += 1;
            let mut out: BTreeMap<i128, RangeHash> = BTreeMap::new();
            for (k, h) in self.0.range(r.lo..r.hi) {
                let b = out.entry((k - r.lo) / width as i128).or_default();
                b.rows += 1;
                b.sum += h;
            }
            Ok(out)
        }
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn only_differing_ranges_are_split_down_to_the_leaf_size() {
        let source: BTreeMap<i128, u128> = (1..=100_000).map(|k| (k, (k as u128 * 7919) % 1_000_003)).collect();
        let mut sink = source.clone();
        sink.insert(17, 1); // a changed value
        sink.remove(&50_000); // a missing row
        sink.insert(100_007, 3); // an extra row past the source's end
        let (mut a, mut b) = (Mem(source, 0), Mem(sink, 0));
        let w = block_on(walk(&mut a, &mut b, 10_000, 100)).unwrap();
        assert_eq!(w.rows, 100_000);
        assert!(w.leaves.iter().all(|r| r.width() <= 100), "{:?}", w.leaves);
        for key in [17, 50_000, 100_007] {
            assert!(w.leaves.iter().any(|r| r.lo <= key && key < r.hi), "{key} not in {:?}", w.leaves);
        }
        assert_eq!(w.leaves.len(), 3, "{:?}", w.leaves);
        // 1 top-level statement, then per differing range one per level
        // (10 000 → 1 250 → 157 → 20) for 17 and 50 000; the last top-level
        // range (100 001..100 008) is already a leaf.
        assert_eq!(a.1, 1 + 2 * 3);
        let same: BTreeMap<i128, u128> = (1..=1000).map(|k| (k, k as u128)).collect();
        let w = block_on(walk(&mut Mem(same.clone(), 0), &mut Mem(same, 0), 100, 10)).unwrap();
        assert_eq!((w.leaves.len(), w.rows), (0, 1000));
        let w = block_on(walk(&mut Mem(BTreeMap::new(), 0), &mut Mem(BTreeMap::new(), 0), 100, 10)).unwrap();
        assert_eq!(w, Walk::default());
    }

    #[test]
    fn ranges_buckets_and_sql() {
        let r = Range { lo: 10, hi: 35 };
        assert_eq!(r.bucket(2, 10), Range { lo: 30, hi: 35 });
        assert_eq!(hashing::split_width(10_000, 8, 100), 1250);
        assert_eq!(hashing::split_width(150, 8, 100), 100);
        let parsed = hashing::parse_buckets(&[vec![Some("0".into()), Some("2".into()), Some("123".into())]]).unwrap();
        assert_eq!(parsed[&0], RangeHash { rows: 2, sum: 123 });
        let other = BTreeMap::from([(0, RangeHash { rows: 2, sum: 124 }), (1, RangeHash { rows: 1, sum: 1 })]);
        assert_eq!(hashing::differing(&parsed, &other), vec![0, 1]);
        let pg = hashing::buckets_sql(Dialect::Postgres, "\"s\".\"t\"", "id", "R", 5, 105, 10);
        assert!(pg.contains("(\"id\" - (5)::bigint) / 10") && pg.contains("\"id\" < 105"), "{pg}");
        let wide = hashing::buckets_sql(Dialect::Postgres, "t", "id", "R", i64::MIN as i128, i64::MAX as i128, 10);
        assert!(wide.contains("div(\"id\"::numeric - -9223372036854775808, 10)"), "{wide}");
        let my = hashing::buckets_sql(Dialect::Mysql, "`d`.`t`", "id", "R", 5, 105, 10);
        assert!(my.contains("(`id` - 5) DIV 10") && my.contains("MD5(R)"), "{my}");
        let text = hashing::row_text(Dialect::Mysql, &[("a".into(), Class::Int), ("b".into(), Class::Decimal)]);
        assert!(text.starts_with("CONCAT(COALESCE(CONCAT(CHAR_LENGTH(CAST(`a` AS CHAR))"), "{text}");
        assert!(Class::Bool.agrees(Class::Int) && Class::Timestamp.agrees(Class::TimestampTz));
        assert!(!Class::Text.agrees(Class::Int));
        assert_eq!(Class::of(Dialect::Postgres, "double precision"), None);
    }
}
