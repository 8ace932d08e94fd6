//! Chunk hashes, the pure part: which column types can be hashed, the
//! canonical row text both PostgreSQL and MySQL/MariaDB produce for the
//! same data, the per-range hash statement, and how differing ranges are
//! split.
//!
//! A range's hash is the row count and the exact sum of the first 60 bits
//! of each row's MD5 over its canonical text: every column as
//! `length:text` (or `N` for NULL), integers and booleans as digits,
//! decimals without trailing fraction zeros, dates `YYYY-MM-DD`, timestamps
//! `YYYY-MM-DD HH:MM:SS.ffffff` in UTC. A canonical form that differs
//! between two servers only makes a range differ: it is then read row by
//! row, so a hash can cost time but never hide a difference (short of an
//! MD5 collision). This module never runs a query.

use std::collections::BTreeMap;

use crate::sql::Dialect;

/// A hashable column type, as both sides see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Any integer type (MySQL `TINYINT(1)` booleans included).
    Int,
    /// PostgreSQL `boolean` (hashed as `0`/`1`, like MySQL's).
    Bool,
    /// Character types (and MySQL `ENUM`).
    Text,
    /// Exact decimals.
    Decimal,
    /// Dates.
    Date,
    /// Timestamps without a zone (MySQL `DATETIME`).
    Timestamp,
    /// Timestamps with a zone (MySQL `TIMESTAMP`), hashed in UTC.
    TimestampTz,
}

impl Class {
    /// The class of a catalogue `data_type` (`information_schema`), if
    /// hashable.
    pub fn of(dialect: Dialect, data_type: &str) -> Option<Class> {
        Some(match (dialect, data_type) {
            (Dialect::Postgres, "smallint" | "integer" | "bigint") => Class::Int,
            (Dialect::Postgres, "boolean") => Class::Bool,
            (Dialect::Postgres, "text" | "character varying" | "character") => Class::Text,
            (Dialect::Postgres, "numeric") => Class::Decimal,
            (Dialect::Postgres, "date") => Class::Date,
            (Dialect::Postgres, "timestamp without time zone") => Class::Timestamp,
            (Dialect::Postgres, "timestamp with time zone") => Class::TimestampTz,
            (Dialect::Mysql, "tinyint" | "smallint" | "mediumint" | "int" | "bigint") => Class::Int,
            (Dialect::Mysql, "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum") => {
                Class::Text
            }
            (Dialect::Mysql, "decimal") => Class::Decimal,
            (Dialect::Mysql, "date") => Class::Date,
            (Dialect::Mysql, "datetime") => Class::Timestamp,
            (Dialect::Mysql, "timestamp") => Class::TimestampTz,
            _ => return None,
        })
    }

    /// Whether a column of class `self` on one side and `other` on the
    /// other give the same canonical text for equal values.
    pub fn agrees(self, other: Class) -> bool {
        use Class::*;
        let family = |c: Class| match c {
            Int | Bool => 0,
            Text => 1,
            Decimal => 2,
            Date => 3,
            Timestamp | TimestampTz => 4,
        };
        family(self) == family(other)
    }

    /// The column's canonical text (NULL stays NULL).
    fn text(self, d: Dialect, col: &str) -> String {
        match (d, self) {
            (Dialect::Postgres, Class::Bool) => format!("{col}::int::text"),
            (Dialect::Postgres, Class::Int | Class::Text) => format!("{col}::text"),
            (Dialect::Postgres, Class::Decimal) => {
                format!("CASE WHEN position('.' in {col}::text) > 0 THEN rtrim(rtrim({col}::text, '0'), '.') ELSE {col}::text END")
            }
            (Dialect::Postgres, Class::Date) => format!("to_char({col}, 'YYYY-MM-DD')"),
            (Dialect::Postgres, Class::Timestamp) => format!("to_char({col}, 'YYYY-MM-DD HH24:MI:SS.US')"),
            (Dialect::Postgres, Class::TimestampTz) => {
                format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
            }
            (Dialect::Mysql, Class::Int | Class::Bool | Class::Text) => format!("CAST({col} AS CHAR)"),
            (Dialect::Mysql, Class::Decimal) => format!(
                "CASE WHEN LOCATE('.', CAST({col} AS CHAR)) > 0 THEN TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM CAST({col} AS CHAR))) ELSE CAST({col} AS CHAR) END"
            ),
            (Dialect::Mysql, Class::Date) => format!("DATE_FORMAT({col}, '%Y-%m-%d')"),
            (Dialect::Mysql, Class::Timestamp | Class::TimestampTz) => {
                format!("DATE_FORMAT({col}, '%Y-%m-%d %H:%i:%s.%f')")
            }
        }
    }
}

/// The canonical text of a whole row: `length:text` per column (`N` for
/// NULL), joined by `|`.
pub fn row_text(d: Dialect, columns: &[(String, Class)]) -> String {
    let parts: Vec<String> = columns
        .iter()
        .map(|(name, class)| {
            let t = class.text(d, &d.ident(name));
            match d {
                Dialect::Postgres => format!("COALESCE(char_length({t})::text || ':' || {t}, 'N')"),
                Dialect::Mysql => format!("COALESCE(CONCAT(CHAR_LENGTH({t}), ':', {t}), 'N')"),
            }
        })
        .collect();
    format!("CONCAT({})", parts.join(", '|', "))
}

/// One range's hash: rows and the sum of their 60-bit row hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RangeHash {
    /// Rows in the range.
    pub rows: u64,
    /// Exact sum of the rows' hashes.
    pub sum: u128,
}

/// The statement hashing `[lo, hi)` of integer `key` in buckets of `width`
/// key values: one row per non-empty bucket (bucket index, count, sum).
pub fn buckets_sql(d: Dialect, table: &str, key: &str, row: &str, lo: i128, hi: i128, width: u128) -> String {
    let k = d.ident(key);
    match d {
        // bigint arithmetic unless the range is wider than a bigint.
        Dialect::Postgres if hi - lo <= i64::MAX as i128 && lo >= i64::MIN as i128 => format!(
            "SELECT ({k} - ({lo})::bigint) / {width} AS df_bucket, count(*), \
             sum(('x' || substr(md5({row}), 1, 15))::bit(60)::bigint) \
             FROM {table} WHERE {k} >= {lo} AND {k} < {hi} GROUP BY 1 ORDER BY 1"
        ),
        Dialect::Postgres => format!(
            "SELECT div({k}::numeric - {lo}, {width})::bigint AS df_bucket, count(*), \
             sum(('x' || substr(md5({row}), 1, 15))::bit(60)::bigint) \
             FROM {table} WHERE {k} >= {lo} AND {k} < {hi} GROUP BY 1 ORDER BY 1"
        ),
        Dialect::Mysql => format!(
            "SELECT ({k} - {lo}) DIV {width} AS df_bucket, COUNT(*), \
             SUM(CAST(CONV(SUBSTRING(MD5({row}), 1, 15), 16, 10) AS UNSIGNED)) \
             FROM {table} WHERE {k} >= {lo} AND {k} < {hi} GROUP BY 1 ORDER BY 1"
        ),
    }
}

/// The statement reading the key's smallest and largest values.
pub fn bounds_sql(d: Dialect, table: &str, key: &str) -> String {
    let k = d.ident(key);
    format!("SELECT MIN({k}), MAX({k}) FROM {table}")
}

/// The condition selecting `[lo, hi)` of `key`.
pub fn range_condition(d: Dialect, key: &str, r: Range) -> String {
    let k = d.ident(key);
    format!("{k} >= {} AND {k} < {}", r.lo, r.hi)
}

/// Parses the rows of [`buckets_sql`].
pub fn parse_buckets(rows: &[Vec<Option<String>>]) -> Result<BTreeMap<i128, RangeHash>, String> {
    let mut out = BTreeMap::new();
    for r in rows {
        let num = |i: usize| -> Result<&str, String> {
            r.get(i).and_then(|c| c.as_deref()).ok_or_else(|| format!("a bucket row lacks column {i}: {r:?}"))
        };
        let b: i128 = num(0)?.parse().map_err(|e| format!("bucket {r:?}: {e}"))?;
        let rows: u64 = num(1)?.parse().map_err(|e| format!("bucket {r:?}: {e}"))?;
        let sum: u128 = num(2)?.split('.').next().unwrap_or("0").parse().map_err(|e| format!("bucket {r:?}: {e}"))?;
        out.insert(b, RangeHash { rows, sum });
    }
    Ok(out)
}

/// A key range `[lo, hi)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First key value in the range.
    pub lo: i128,
    /// First key value after it.
    pub hi: i128,
}

impl Range {
    /// How many key values it spans.
    pub fn width(self) -> u128 {
        (self.hi - self.lo).max(0) as u128
    }

    /// Bucket `i` of `width` values of this range.
    pub fn bucket(self, i: i128, width: u128) -> Range {
        let lo = self.lo + i * width as i128;
        Range { lo, hi: (lo + width as i128).min(self.hi) }
    }
}

/// The bucket width to split a differing range of width `width` into:
/// `fanout` parts, at least `leaf` wide.
pub fn split_width(width: u128, fanout: u128, leaf: u128) -> u128 {
    width.div_ceil(fanout.max(2)).max(leaf.max(1))
}

/// The bucket indexes whose hashes differ (present on one side only, or
/// with another count or sum), in order.
pub fn differing(a: &BTreeMap<i128, RangeHash>, b: &BTreeMap<i128, RangeHash>) -> Vec<i128> {
    let mut keys: Vec<i128> = a.keys().chain(b.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter().filter(|k| a.get(k) != b.get(k)).collect()
}
