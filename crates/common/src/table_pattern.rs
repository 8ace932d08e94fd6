//! Table patterns: `db.table` where either part may contain wildcards
//! (`shop.orders`, `shop.order_*`, `*.audit_log`, `*.*`, and the SQL-style
//! `shop.order_%`).
//!
//! The one pattern type of DeltaForge: sources select the tables they
//! capture with it and processors the tables they apply to, so a pattern
//! means the same thing everywhere. Rules:
//!
//! - the first `.` separates the database (MySQL) or schema (PostgreSQL)
//!   part from the table part; both must be non-empty;
//! - `*` and `%` both match any run of characters (possibly empty) within
//!   the part they are written in, so `shop.*` never matches a table of
//!   database `shop2`;
//! - matching is case-sensitive, as names are in the sources' events.
//!
//! Hand-written (about 30 lines) rather than `globset` or `regex`: only one
//! wildcard is needed, and matching two short strings without an allocation
//! keeps the per-event cost negligible. This module must never allocate
//! while matching.

use std::fmt;

use serde::Deserialize;

/// A parsed `db.table` pattern.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct TablePattern {
    text: String,
    db: String,
    table: String,
}

impl TablePattern {
    /// Parses `db.table` (see the module docs for the rules).
    ///
    /// ```
    /// use deltaforge_common::TablePattern;
    /// let p = TablePattern::parse("shop.order_*").unwrap();
    /// assert!(p.matches("shop", "order_lines"));
    /// assert!(!p.matches("shop", "customers"));
    /// assert!(TablePattern::parse("%.orders").unwrap().matches("any", "orders"));
    /// assert!(TablePattern::parse("orders").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once('.') {
            Some((db, table)) if !db.is_empty() && !table.is_empty() => {
                Ok(TablePattern { text: text.to_string(), db: db.to_string(), table: table.to_string() })
            }
            _ => Err(format!(
                "table pattern {text:?} is not of the form db.table (schema.table for PostgreSQL; use `*` as a wildcard, e.g. `shop.order_*` or `*.orders`)"
            )),
        }
    }

    /// Whether the pattern matches database (or schema) `db` and table `table`.
    pub fn matches(&self, db: &str, table: &str) -> bool {
        glob(self.db.as_bytes(), db.as_bytes()) && glob(self.table.as_bytes(), table.as_bytes())
    }

    /// Whether any of `patterns` matches.
    pub fn any(patterns: &[TablePattern], db: &str, table: &str) -> bool {
        patterns.iter().any(|p| p.matches(db, table))
    }

    /// The database (or schema) part as written.
    pub fn db_part(&self) -> &str {
        &self.db
    }

    /// The table part as written.
    pub fn table_part(&self) -> &str {
        &self.table
    }

    /// Whether the pattern names exactly one table (no wildcard).
    pub fn is_exact(&self) -> bool {
        !self.text.contains(['*', '%'])
    }
}

impl TryFrom<String> for TablePattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        TablePattern::parse(&s)
    }
}

/// In a JSON Schema a pattern is a `db.table` string: both parts
/// non-empty, split at the first `.` (what [`TablePattern::parse`] accepts).
impl schemars::JsonSchema for TablePattern {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TablePattern".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[^.]+[.].+$",
            "description": "A table pattern `db.table` (`schema.table` for PostgreSQL); `*` and `%` match any run of characters within a part, e.g. `shop.order_*`, `*.orders`.",
            "examples": ["shop.orders", "shop.order_*", "*.audit_log"]
        })
    }
}

impl fmt::Display for TablePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn is_wildcard(c: u8) -> bool {
    c == b'*' || c == b'%'
}

/// Wildcard matching with backtracking to the last wildcard (linear in
/// practice, no allocation). Works on bytes: wildcards are ASCII, and a
/// multi-byte character only ever matches itself byte for byte.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && is_wildcard(pat[p]) {
            star = Some((p, i));
            p += 1;
        } else if p < pat.len() && pat[p] == s[i] {
            p += 1;
            i += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| is_wildcard(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcards() {
        let m = |p: &str, db: &str, t: &str| TablePattern::parse(p).unwrap().matches(db, t);
        assert!(m("shop.orders", "shop", "orders"));
        assert!(!m("shop.orders", "shop", "orders2"));
        assert!(!m("shop.orders", "shop2", "orders"));
        assert!(m("shop.order*", "shop", "order"));
        assert!(m("shop.order*", "shop", "order_lines"));
        assert!(m("*.orders", "any", "orders"));
        assert!(m("*.*", "a", "b"));
        assert!(m("s*p.*_log", "shop", "audit_log"));
        assert!(!m("s*p.*_log", "shop", "audit_logs"));
        assert!(m("shop.a*b*c", "shop", "aXbYbZc"));
        assert!(!m("shop.a*b*c", "shop", "aXbYbZ"));
        assert!(!m("Shop.orders", "shop", "orders"), "case-sensitive");
    }

    #[test]
    fn sql_style_percent_is_a_wildcard_too() {
        let m = |p: &str, db: &str, t: &str| TablePattern::parse(p).unwrap().matches(db, t);
        assert!(m("shop.order_%", "shop", "order_lines"));
        assert!(m("%.t%x", "s", "tabx"));
        assert!(!m("%.t%x", "s", "tab"));
        assert!(m("shop.%", "shop", "anything"));
        assert!(m("café.né*", "café", "née"), "multi-byte names match byte for byte");
    }

    #[test]
    fn rejects_patterns_without_db() {
        for bad in ["orders", ".orders", "shop.", ""] {
            let e = TablePattern::parse(bad).unwrap_err();
            assert!(e.contains("db.table"), "{e}");
        }
        assert!(!TablePattern::parse("shop.order_*").unwrap().is_exact());
        assert!(TablePattern::parse("shop.orders").unwrap().is_exact());
    }
}
