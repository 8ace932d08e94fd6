//! The snapshot's chunk statement and its resume keys.
//!
//! A chunk is `SELECT … WHERE (key > last) [AND (condition)] ORDER BY key
//! LIMIT n`, with the last key **bound as parameters** (never pasted into
//! the text), so that no key value — quotes, backslashes, NUL, any bytes —
//! can change the statement, and the server's `sql_mode` (e.g.
//! `NO_BACKSLASH_ESCAPES`) cannot change how a key is read.
//!
//! The last key is stored in the progress record as text, one string per
//! key column, in a typed form that gives back the exact value:
//! integers as their digits (`41999`), everything else tagged: `s:` UTF-8
//! text, `x:` hex bytes, `f:`/`d:` floats, `t:` date-times, `T:` times,
//! `n:` NULL. Records written by older versions hold SQL literals
//! (`'text'`, `0xHEX`, digits); they are read back as values too.
//!
//! This module must never put a value read from a table into SQL text.

use deltaforge_core::SourceError;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value as MyValue};

/// A backquoted identifier.
pub(crate) fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// The stored text of one key value (see the module docs).
pub(crate) fn encode_key(v: &MyValue) -> String {
    match v {
        MyValue::NULL => "n:".into(),
        MyValue::Int(i) => i.to_string(),
        MyValue::UInt(u) => u.to_string(),
        MyValue::Float(f) => format!("f:{f}"),
        MyValue::Double(d) => format!("d:{d}"),
        MyValue::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => format!("s:{s}"),
            Err(_) => format!("x:{}", hex(b)),
        },
        MyValue::Date(y, mo, d, h, mi, s, us) => format!("t:{y}-{mo}-{d}-{h}-{mi}-{s}-{us}"),
        MyValue::Time(neg, d, h, mi, s, us) => format!("T:{}-{d}-{h}-{mi}-{s}-{us}", u8::from(*neg)),
    }
}

/// The value of one stored key text (see the module docs); `None` when it
/// is not a key this module wrote.
pub(crate) fn decode_key(text: &str) -> Option<MyValue> {
    if let Some(v) = decode_tagged(text) {
        return Some(v);
    }
    if let Ok(i) = text.parse::<i64>() {
        return Some(MyValue::Int(i));
    }
    if let Ok(u) = text.parse::<u64>() {
        return Some(MyValue::UInt(u));
    }
    legacy_literal(text)
}

fn decode_tagged(text: &str) -> Option<MyValue> {
    let (tag, rest) = text.split_at_checked(2)?;
    let nums = |n: usize| -> Option<Vec<u32>> {
        let v: Vec<u32> = rest.split('-').map(|p| p.parse().ok()).collect::<Option<_>>()?;
        (v.len() == n).then_some(v)
    };
    Some(match tag {
        "n:" if rest.is_empty() => MyValue::NULL,
        "s:" => MyValue::Bytes(rest.as_bytes().to_vec()),
        "x:" => MyValue::Bytes(unhex(rest)?),
        "f:" => MyValue::Float(rest.parse().ok()?),
        "d:" => MyValue::Double(rest.parse().ok()?),
        "t:" => {
            let v = nums(7)?;
            MyValue::Date(
                u16::try_from(v[0]).ok()?,
                u8::try_from(v[1]).ok()?,
                u8::try_from(v[2]).ok()?,
                u8::try_from(v[3]).ok()?,
                u8::try_from(v[4]).ok()?,
                u8::try_from(v[5]).ok()?,
                v[6],
            )
        }
        "T:" => {
            let v = nums(6)?;
            MyValue::Time(
                v[0] == 1,
                v[1],
                u8::try_from(v[2]).ok()?,
                u8::try_from(v[3]).ok()?,
                u8::try_from(v[4]).ok()?,
                v[5],
            )
        }
        _ => return None,
    })
}

/// A key stored by an older version: a SQL literal as
/// `mysql_common::Value::as_sql(false)` printed it.
fn legacy_literal(text: &str) -> Option<MyValue> {
    if let Some(h) = text.strip_prefix("0x") {
        return unhex(h).map(MyValue::Bytes);
    }
    let inner = text.strip_prefix('\'')?.strip_suffix('\'')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '0' => '\0',
            'n' => '\n',
            'r' => '\r',
            'Z' => '\x1a',
            other => other,
        });
    }
    Some(MyValue::Bytes(out.into_bytes()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// One chunk's statement and its parameters.
pub(crate) struct ChunkQuery {
    /// The statement, with `?` for each parameter.
    pub sql: String,
    /// The last key's values, bound in order.
    pub params: Vec<MyValue>,
}

/// The chunk statement of a table: `columns` (`*` or a list), the key
/// column names (empty: the whole table in one read), the last key read
/// (stored texts), the backfill condition, the chunk size.
pub(crate) fn chunk_query(
    table: &str,
    columns: &str,
    key: &[String],
    last_key: Option<&[String]>,
    condition: Option<&str>,
    limit: usize,
) -> Result<ChunkQuery, String> {
    let mut conds: Vec<String> = Vec::new();
    let mut params = Vec::new();
    if let (false, Some(last)) = (key.is_empty(), last_key) {
        if last.len() == key.len() {
            let values = last
                .iter()
                .map(|t| decode_key(t).ok_or_else(|| format!("unreadable resume key {t:?}")))
                .collect::<Result<Vec<_>, _>>()?;
            // (k1 > ?) OR (k1 = ? AND k2 > ?) OR …: indexable on both servers.
            let k: Vec<String> = key.iter().map(|c| ident(c)).collect();
            let mut ors = Vec::new();
            for (i, (ki, vi)) in k.iter().zip(&values).enumerate() {
                let mut parts = Vec::new();
                for (kj, vj) in k.iter().zip(&values).take(i) {
                    parts.push(format!("{kj} = ?"));
                    params.push(vj.clone());
                }
                parts.push(format!("{ki} > ?"));
                params.push(vi.clone());
                ors.push(format!("({})", parts.join(" AND ")));
            }
            conds.push(format!("({})", ors.join(" OR ")));
        }
    }
    if let Some(c) = condition {
        conds.push(format!("({c})"));
    }
    let mut sql = format!("SELECT {columns} FROM {table}");
    if !conds.is_empty() {
        sql.push_str(&format!(" WHERE {}", conds.join(" AND ")));
    }
    if !key.is_empty() {
        let order = key.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
        sql.push_str(&format!(" ORDER BY {order} LIMIT {limit}"));
    }
    Ok(ChunkQuery { sql, params })
}

/// Checks a backfill request on the server: for each `db.table`, the
/// chunk statement with `condition` in it is prepared (never run) inside a
/// read-only transaction. A statement the server refuses is fatal, with
/// the server's message.
pub(crate) async fn check_backfill(
    conn: &mut Conn,
    tables: &[String],
    condition: Option<&str>,
) -> Result<(), SourceError> {
    let unreachable = |e: mysql_async::Error| SourceError::Retryable(format!("checking the backfill: {e}"));
    conn.query_drop("START TRANSACTION READ ONLY").await.map_err(unreachable)?;
    let mut result = Ok(());
    for t in tables {
        let (db, name) = t.split_once('.').unwrap_or(("", t));
        let key: Vec<String> = match conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = ? AND \
                 TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
                (db, name),
            )
            .await
        {
            Ok(k) => k,
            Err(e) => {
                result = Err(unreachable(e));
                break;
            }
        };
        let table = format!("{}.{}", ident(db), ident(name));
        let q = chunk_query(&table, "*", &key, None, condition, 1).map_err(SourceError::Fatal)?;
        match conn.prep(q.sql.as_str()).await {
            Ok(stmt) => {
                let _ = conn.close(stmt).await;
            }
            Err(mysql_async::Error::Server(se)) => {
                result = Err(SourceError::Fatal(format!("table {t}: the server refuses the chunk statement: {se}")));
                break;
            }
            Err(e) => {
                result = Err(unreachable(e));
                break;
            }
        }
    }
    let _ = conn.query_drop("ROLLBACK").await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_exactly() {
        let values = [
            MyValue::Int(-42),
            MyValue::UInt(u64::MAX),
            MyValue::Bytes(b"a'b\\c\0d\n".to_vec()),
            MyValue::Bytes("日本語 😀 é".as_bytes().to_vec()),
            MyValue::Bytes(vec![0, 0xff, 0x80, b'\'', b'\\']),
            MyValue::Bytes(b"s:looks tagged".to_vec()),
            MyValue::Bytes(Vec::new()),
            MyValue::Double(1.5),
            MyValue::Float(-0.25),
            MyValue::Date(2024, 2, 29, 23, 59, 58, 123456),
            MyValue::Time(true, 1, 2, 3, 4, 5),
            MyValue::NULL,
        ];
        for v in values {
            let text = encode_key(&v);
            assert_eq!(decode_key(&text), Some(v.clone()), "{text}");
        }
    }

    #[test]
    fn legacy_literals_are_read_back() {
        assert_eq!(decode_key("41999"), Some(MyValue::Int(41999)));
        assert_eq!(decode_key(r"'a\'b\\c\0'"), Some(MyValue::Bytes(b"a'b\\c\0".to_vec())));
        assert_eq!(decode_key("0xFF00"), Some(MyValue::Bytes(vec![0xff, 0])));
        assert_eq!(decode_key("'2024-01-02 03:04:05'"), Some(MyValue::Bytes(b"2024-01-02 03:04:05".to_vec())));
        assert_eq!(decode_key("garbage"), None);
    }

    #[test]
    fn chunk_queries_bind_the_last_key() {
        let key = vec!["a".to_string(), "b".to_string()];
        let last = vec!["7".to_string(), "s:x' OR 1=1 -- \\".to_string()];
        let q = chunk_query("`d`.`t`", "*", &key, Some(&last), Some("n > 1"), 10).unwrap();
        assert_eq!(
            q.sql,
            "SELECT * FROM `d`.`t` WHERE ((`a` > ?) OR (`a` = ? AND `b` > ?)) AND (n > 1) ORDER BY `a`, `b` LIMIT 10"
        );
        assert_eq!(q.params, vec![MyValue::Int(7), MyValue::Int(7), MyValue::Bytes(b"x' OR 1=1 -- \\".to_vec())]);
        let first = chunk_query("`d`.`t`", "*", &key, None, None, 10).unwrap();
        assert_eq!(first.sql, "SELECT * FROM `d`.`t` ORDER BY `a`, `b` LIMIT 10");
        assert!(first.params.is_empty());
        assert!(chunk_query("`d`.`t`", "*", &key, Some(&["x".into(), "y".into()]), None, 10).is_err());
    }
}
