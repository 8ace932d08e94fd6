//! Table patterns: `db.table` where either part may contain `*` wildcards
//! (`shop.orders`, `shop.order_*`, `*.audit_log`, `*.*`).
//!
//! `*` matches any run of characters, dots included, within the part it is
//! written in; the database and table parts are matched separately, so
//! `shop.*` never matches a table of database `shop2`. Matching is
//! case-sensitive, as database names are in the sources' events.
//!
//! Hand-written (about 30 lines) rather than `globset` or `regex`: only
//! `*` is needed, and matching two short strings without an allocation
//! keeps per-event cost negligible.

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
    /// Parses `db.table` (the first `.` separates the parts; each part must
    /// be non-empty and may contain `*`).
    ///
    /// ```
    /// use deltaforge_processors::TablePattern;
    /// let p = TablePattern::parse("shop.order_*").unwrap();
    /// assert!(p.matches("shop", "order_lines"));
    /// assert!(!p.matches("shop", "customers"));
    /// assert!(TablePattern::parse("orders").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once('.') {
            Some((db, table)) if !db.is_empty() && !table.is_empty() => {
                Ok(TablePattern { text: text.to_string(), db: db.to_string(), table: table.to_string() })
            }
            _ => Err(format!(
                "table pattern {text:?} is not of the form db.table (use `*` as a wildcard, e.g. `shop.order_*` or `*.orders`)"
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
}

impl TryFrom<String> for TablePattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        TablePattern::parse(&s)
    }
}

impl fmt::Display for TablePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `*`-only glob matching with backtracking to the last star (linear in
/// practice, no allocation).
fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && pat[p] == b'*' {
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
    pat[p..].iter().all(|&c| c == b'*')
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
    fn rejects_patterns_without_db() {
        for bad in ["orders", ".orders", "shop.", ""] {
            let e = TablePattern::parse(bad).unwrap_err();
            assert!(e.contains("db.table"), "{e}");
        }
        // The first dot separates: a dotted table part is allowed.
        assert!(TablePattern::parse("db.schema.table").unwrap().matches("db", "schema.table"));
    }
}
