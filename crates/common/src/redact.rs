//! Redaction of secrets before anything is shown: specs in the REST API and
//! `validate` output, DSNs and URLs in logs and in every error message.
//!
//! This module owns the one set of rules for what counts as a secret: the
//! password part of URL-style DSNs (and the bare token of `nats://TOKEN@h`),
//! `password=...`-style
//! pairs in key=value DSNs and query strings, and the values of keys named
//! like password, secret, token, credentials or api_key. It is for display
//! (REST API, logs, `validate` output) only and must never be applied to
//! the spec that components are built from. It errs on the side of hiding
//! too much.

use serde_json::Value;

/// The replacement text.
pub const MASK: &str = "***";

/// Whether a key (JSON key or DSN parameter) names a secret.
///
/// Case-insensitive; `-` counts as `_`. Matches any key containing
/// `password`, `passwd`, `secret`, `token`, `credential`, `api_key`,
/// `apikey` or `private_key`, and the keys `pwd` and `pass`.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    const PARTS: &[&str] = &["password", "passwd", "secret", "token", "credential", "api_key", "apikey", "private_key"];
    PARTS.iter().any(|p| k.contains(p)) || k == "pwd" || k == "pass"
}

/// Returns a copy of `value` with secrets replaced by `"***"`, recursively.
///
/// Non-null values of secret-named keys (see [`is_secret_key`]) are masked
/// whatever their type; every other string goes through [`redact_dsn`].
///
/// ```
/// use deltaforge_common::redact;
/// use serde_json::json;
/// let v = json!({"dsn": "postgres://u:pw@h/db", "auth": {"api_key": "k", "user": "u"}});
/// assert_eq!(
///     redact(&v),
///     json!({"dsn": "postgres://u:***@h/db", "auth": {"api_key": "***", "user": "u"}})
/// );
/// ```
pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if is_secret_key(k) && !v.is_null() { Value::String(MASK.to_string()) } else { redact(v) };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        Value::String(s) => Value::String(redact_dsn(s)),
        other => other.clone(),
    }
}

/// Masks the password in a DSN or URL-like string.
///
/// * URL form: `scheme://user:password@host/...` → `scheme://user:***@host/...`
///   (every URL in the string; the userinfo ends at the last `@` before
///   whitespace, so passwords containing `/`, `#` or `@` are still hidden).
/// * key=value form (libpq, JDBC/ODBC, query strings): the value of any
///   secret-named key (see [`is_secret_key`]) up to whitespace, `&` or `;`,
///   or the whole quoted value: `host=x password=pw` → `host=x password=***`.
///
/// Strings without credentials are returned unchanged.
///
/// ```
/// use deltaforge_common::redact_dsn;
/// assert_eq!(redact_dsn("postgres://u:pw@h/db"), "postgres://u:***@h/db");
/// assert_eq!(redact_dsn("host=x password=pw"), "host=x password=***");
/// assert_eq!(redact_dsn("./out/orders.jsonl"), "./out/orders.jsonl");
/// ```
pub fn redact_dsn(dsn: &str) -> String {
    redact_pairs(&redact_userinfo(dsn))
}

fn redact_userinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find("://") {
        let start = p + 3;
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let token_end = after.find(char::is_whitespace).unwrap_or(after.len());
        let token = &after[..token_end];
        match token.rfind('@') {
            Some(at) => {
                let userinfo = &token[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..=colon]);
                        out.push_str(MASK);
                    }
                    // NATS-style URLs carry a bare token as their user-info.
                    None if is_token_scheme(&rest[..p]) => out.push_str(MASK),
                    None => out.push_str(userinfo),
                }
                out.push_str(&token[at..]);
            }
            None => out.push_str(token),
        }
        rest = &after[token_end..];
    }
    out.push_str(rest);
    out
}

/// Whether the scheme ending `before` (the text up to `://`) puts a bare
/// token in its user-info (`nats://TOKEN@host`), so that user-info without a
/// `:` is a secret rather than a user name.
fn is_token_scheme(before: &str) -> bool {
    let start = before.rfind(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c))).map_or(0, |i| i + 1);
    let scheme = before[start..].to_ascii_lowercase();
    matches!(scheme.as_str(), "nats" | "tls" | "ws" | "wss")
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'
}

fn redact_pairs(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some(rel) = s[search..].find('=') {
        let eq = search + rel;
        search = eq + 1;
        // The key: key chars right before `=`, optionally separated by spaces.
        let before = s[..eq].trim_end_matches(' ');
        let key_start = before.char_indices().rev().take_while(|(_, c)| is_key_char(*c)).last().map(|(i, _)| i);
        let Some(key_start) = key_start else { continue };
        let key = &before[key_start..];
        let boundary_ok =
            before[..key_start].chars().next_back().is_none_or(|c| c.is_whitespace() || "&?;,".contains(c));
        if !boundary_ok || !is_secret_key(key) || key_start < copied {
            continue;
        }
        // The value.
        let value_start = eq + 1 + (s[eq + 1..].len() - s[eq + 1..].trim_start_matches(' ').len());
        let value = &s[value_start..];
        let (mask_start, mask_end) = match value.chars().next() {
            Some(q @ ('\'' | '"')) => {
                let mut end = value.len();
                let mut escaped = false;
                for (i, c) in value.char_indices().skip(1) {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == q {
                        end = i;
                        break;
                    }
                }
                (value_start + 1, value_start + end)
            }
            _ => {
                let end = value.find(|c: char| c.is_whitespace() || c == '&' || c == ';').unwrap_or(value.len());
                (value_start, value_start + end)
            }
        };
        out.push_str(&s[copied..mask_start]);
        out.push_str(MASK);
        copied = mask_end;
        search = search.max(mask_end);
    }
    out.push_str(&s[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn url_dsns() {
        assert_eq!(redact_dsn("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_dsn("mysql://root:p/a#s@s@db:3306/x?ssl=1"), "mysql://root:***@db:3306/x?ssl=1");
        assert_eq!(redact_dsn("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_dsn("nats://s3cr3t@h:4222"), "nats://***@h:4222");
        assert_eq!(redact_dsn("wss://tok@h nats://u@k"), "wss://***@h nats://***@k");
        assert_eq!(redact_dsn("http://h:8080/path"), "http://h:8080/path");
        assert_eq!(redact_dsn("a=postgres://u:x@h b=mysql://v:y@k"), "a=postgres://u:***@h b=mysql://v:***@k");
    }

    #[test]
    fn query_string_passwords() {
        assert_eq!(redact_dsn("mysql://h/db?user=u&password=pw&ssl=true"), "mysql://h/db?user=u&password=***&ssl=true");
    }

    #[test]
    fn key_value_dsns() {
        assert_eq!(redact_dsn("host=x password=pw"), "host=x password=***");
        assert_eq!(redact_dsn("host=x password = pw dbname=d"), "host=x password = *** dbname=d");
        assert_eq!(redact_dsn("host=x password='a b\\' c' user=u"), "host=x password='***' user=u");
        assert_eq!(redact_dsn("Server=s;Pwd=p;Database=d"), "Server=s;Pwd=***;Database=d");
        assert_eq!(redact_dsn("host=x sslpassword=k"), "host=x sslpassword=***");
        assert_eq!(redact_dsn("nopassword=x"), "nopassword=***");
        assert_eq!(redact_dsn("host=x user=password"), "host=x user=password");
        assert_eq!(redact_dsn("x-password=y"), "x-password=***");
        assert_eq!(redact_dsn("a==b c=d"), "a==b c=d");
        assert_eq!(redact_dsn("password="), "password=***");
    }

    #[test]
    fn nested_secret_keys() {
        let v = json!({
            "spec": {
                "source": {"config": {"id": "pg", "dsn": "host=h password=pw", "password": "p"}},
                "sinks": [{"config": {"id": "k", "auth": {"Client-Secret": "s", "token": null, "api_key": 42,
                           "credentials": {"user": "u"}}}}],
                "other": ["postgres://a:b@c", 1, true]
            }
        });
        let r = redact(&v);
        assert_eq!(
            r,
            json!({
                "spec": {
                    "source": {"config": {"id": "pg", "dsn": "host=h password=***", "password": "***"}},
                    "sinks": [{"config": {"id": "k", "auth": {"Client-Secret": "***", "token": null, "api_key": "***",
                               "credentials": "***"}}}],
                    "other": ["postgres://a:***@c", 1, true]
                }
            })
        );
        assert!(!r.to_string().contains("pw"));
    }

    #[test]
    fn secret_key_names() {
        for k in ["password", "DB_PASSWORD", "secret", "access-token", "credentials", "api_key", "ApiKey", "pwd"] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in ["id", "path", "user", "host", "dsn", "passes"] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn never_panics_on_odd_input() {
        let alphabet: Vec<char> = "ab=:@/'\" &;?é€ 😀p".chars().collect();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            let len = (seed % 24) as usize;
            let s: String = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            let _ = redact_dsn(&s);
            let _ = redact_dsn(&format!("password={s}"));
            let _ = redact_dsn(&format!("x://u:{s}@h"));
        }
    }
}
