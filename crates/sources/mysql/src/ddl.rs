//! Which tables a DDL statement from a binlog QUERY event names: a small
//! tokenizer for the statement heads `ALTER`, `CREATE`, `DROP`, `RENAME`
//! and `TRUNCATE` (comments stripped, backquoted and qualified names).
//!
//! It only finds names, so that the stream knows which tables' schemas to
//! reload and which table a `TRUNCATE` empties; it must never try to
//! understand any other effect of a statement (the new schema comes from
//! the catalogue or the next TABLE_MAP event).

#[cfg(test)]
mod tests;

/// Tables a DDL statement names, as `(db or None, table)`; `None` when the
/// statement is not a table DDL at all.
pub(crate) fn ddl_tables(query: &str) -> Option<Vec<(Option<String>, String)>> {
    let q = strip_comments(query);
    let mut toks = Tokens { s: q.as_str() };
    let first = toks.word()?.to_ascii_uppercase();
    let mut out = Vec::new();
    match first.as_str() {
        "ALTER" => {
            loop {
                let w = toks.word()?.to_ascii_uppercase();
                if w == "TABLE" {
                    break;
                }
                if !matches!(w.as_str(), "ONLINE" | "IGNORE" | "OFFLINE") {
                    return None;
                }
            }
            toks.skip_words(&["IF", "EXISTS"]);
            out.push(toks.ident()?);
        }
        "CREATE" => {
            loop {
                let w = toks.word()?.to_ascii_uppercase();
                match w.as_str() {
                    "TABLE" => break,
                    "OR" | "REPLACE" | "TEMPORARY" => {}
                    "INDEX" | "UNIQUE" | "FULLTEXT" | "SPATIAL" => {
                        // CREATE [UNIQUE] INDEX name ON table
                        let rest = toks.s.to_ascii_uppercase();
                        let at = rest.find(" ON ")?;
                        toks.s = &toks.s[at + 4..];
                        out.push(toks.ident()?);
                        return Some(out);
                    }
                    _ => return None,
                }
            }
            toks.skip_words(&["IF", "NOT", "EXISTS"]);
            out.push(toks.ident()?);
        }
        "DROP" => {
            let w = toks.word()?.to_ascii_uppercase();
            let w = if w == "TEMPORARY" { toks.word()?.to_ascii_uppercase() } else { w };
            if w == "INDEX" {
                let rest = toks.s.to_ascii_uppercase();
                let at = rest.find(" ON ")?;
                toks.s = &toks.s[at + 4..];
                out.push(toks.ident()?);
                return Some(out);
            }
            if w != "TABLE" {
                return None;
            }
            toks.skip_words(&["IF", "EXISTS"]);
            loop {
                out.push(toks.ident()?);
                if !toks.comma() {
                    break;
                }
            }
        }
        "RENAME" => {
            if !toks.word()?.eq_ignore_ascii_case("TABLE") {
                return None;
            }
            loop {
                out.push(toks.ident()?);
                if !toks.word()?.eq_ignore_ascii_case("TO") {
                    return None;
                }
                out.push(toks.ident()?);
                if !toks.comma() {
                    break;
                }
            }
        }
        "TRUNCATE" => return Some(Vec::new()),
        _ => return None,
    }
    Some(out)
}

/// The table a `TRUNCATE [TABLE] [db.]table` statement empties, as `(db
/// or None, table)`; `None` for any other statement.
pub(crate) fn truncated_table(query: &str) -> Option<(Option<String>, String)> {
    let q = strip_comments(query);
    let mut toks = Tokens { s: q.as_str() };
    if !toks.word()?.eq_ignore_ascii_case("TRUNCATE") {
        return None;
    }
    toks.skip_words(&["TABLE"]);
    let name = toks.ident()?;
    let rest = toks.s.trim();
    (rest.is_empty() || rest == ";").then_some(name)
}

/// The query with its `/* … */` comments replaced by a space.
fn strip_comments(q: &str) -> String {
    let mut out = String::with_capacity(q.len());
    let mut rest = q;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        match rest[i..].find("*/") {
            Some(j) => rest = &rest[i + j + 2..],
            None => {
                rest = "";
                break;
            }
        }
        out.push(' ');
    }
    out.push_str(rest);
    out
}

/// The rest of a statement, consumed token by token.
struct Tokens<'a> {
    s: &'a str,
}

impl<'a> Tokens<'a> {
    /// Skips leading white space.
    fn trim(&mut self) {
        self.s = self.s.trim_start();
    }
    /// The next keyword-like word (ASCII letters, digits, `_`).
    fn word(&mut self) -> Option<&'a str> {
        self.trim();
        let end = self.s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(self.s.len());
        if end == 0 {
            return None;
        }
        let w = &self.s[..end];
        self.s = &self.s[end..];
        Some(w)
    }
    /// Consumes `words` when they all come next, else nothing.
    fn skip_words(&mut self, words: &[&str]) {
        let save = self.s;
        for w in words {
            match self.word() {
                Some(x) if x.eq_ignore_ascii_case(w) => {}
                _ => {
                    self.s = save;
                    return;
                }
            }
        }
    }
    /// Consumes a comma when one comes next.
    fn comma(&mut self) -> bool {
        self.trim();
        if let Some(r) = self.s.strip_prefix(',') {
            self.s = r;
            true
        } else {
            false
        }
    }
    /// One name part: backquoted (with `` ` `` doubled inside) or bare.
    fn part(&mut self) -> Option<String> {
        self.trim();
        if let Some(r) = self.s.strip_prefix('`') {
            let mut out = String::new();
            let mut chars = r.char_indices().peekable();
            while let Some((i, c)) = chars.next() {
                if c == '`' {
                    if chars.peek().map(|(_, c)| *c) == Some('`') {
                        chars.next();
                        out.push('`');
                        continue;
                    }
                    self.s = &r[i + 1..];
                    return Some(out);
                }
                out.push(c);
            }
            None
        } else {
            let end = self.s.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$')).unwrap_or(self.s.len());
            if end == 0 {
                return None;
            }
            let w = self.s[..end].to_string();
            self.s = &self.s[end..];
            Some(w)
        }
    }
    /// A table name, `db.table` or `table`.
    fn ident(&mut self) -> Option<(Option<String>, String)> {
        let a = self.part()?;
        if let Some(r) = self.s.strip_prefix('.') {
            self.s = r;
            let b = self.part()?;
            Some((Some(a), b))
        } else {
            Some((None, a))
        }
    }
}
