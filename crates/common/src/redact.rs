//! Redaction of secrets before anything is shown: specs in the REST API and
//! `validate` output, DSNs and URLs in logs and in every error message.
//!
//! This module owns the one list of what counts as a secret in DeltaForge
//! (every component, the Kafka sink's `client_conf` and the HTTP sink's
//! headers included): the password part of URL-style DSNs and bare-token
//! user-info (`nats://TOKEN@host`, `https://TOKEN@host`), secret-named
//! `key=value` pairs in DSNs and query strings (`?password=`, `?token=`,
//! `?key=`, `?access_key=`, ...), the values of keys named like a password,
//! secret, token, credential, API key, private key, authorization header or
//! cookie, PEM blocks, and `Bearer`/`Basic` credentials in text. It also
//! scrubs the values of a config out of an error message
//! ([`scrub_values`]), so that no message about a config echoes what the
//! user wrote.
//!
//! It is for display (REST API, logs, errors, `validate` output) only and
//! must never be applied to the spec that components are built from. It
//! errs on the side of hiding too much.

use serde_json::Value;

/// The replacement text.
pub const MASK: &str = "***";

/// Fragments that make a key a secret wherever they occur in it (after
/// lower-casing and turning `-` and `.` into `_`): `DB_PASSWORD`,
/// `ssl.keystore.password`, `sasl.oauthbearer.client.secret`,
/// `X-Auth-Token`, `X-Api-Key`, `Proxy-Authorization`, `Set-Cookie`,
/// `sasl.oauthbearer.config`, `aws_access_key_id`.
const SECRET_PARTS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "api_key",
    "apikey",
    "private_key",
    "access_key",
    "accesskey",
    "authorization",
    "cookie",
    "oauthbearer_config",
    "signature",
];

/// Whole key names that are secrets (`pwd`, `pass`, `jwt`, ...).
const SECRET_NAMES: &[&str] = &["pwd", "pass", "sig", "jwt", "nkey", "bearer", "session"];

/// Key suffixes that are secrets: librdkafka's inline PEM properties
/// (`ssl.key.pem`, `ssl.certificate.pem`, `ssl.ca.pem`).
const SECRET_SUFFIXES: &[&str] = &["_pem"];

/// Names that are secrets only as a query-string or DSN parameter
/// (`?key=...` carries API keys), not as a spec field, where `key` is a
/// message-key template and `auth` a mapping whose secret parts are masked
/// one by one.
const SECRET_PARAMS: &[&str] = &["key", "code", "auth"];

/// URL schemes whose colon-less user-info is a user name, not a token
/// (`postgres://cdc@db/shop`); in every other scheme it is masked.
const USER_NAME_SCHEMES: &[&str] = &["postgres", "postgresql", "mysql", "mariadb", "jdbc:mysql", "jdbc:postgresql"];

fn normalise(key: &str) -> String {
    key.trim().to_ascii_lowercase().replace(['-', '.', ' '], "_")
}

/// Whether a key (a JSON key in a spec, a librdkafka property, an HTTP
/// header name) names a secret. Case-insensitive; `-` and `.` count as
/// `_`. See the lists at the top of this module.
pub fn is_secret_key(key: &str) -> bool {
    let k = normalise(key);
    SECRET_PARTS.iter().any(|p| k.contains(p))
        || SECRET_NAMES.contains(&k.as_str())
        || SECRET_SUFFIXES.iter().any(|s| k.ends_with(s))
}

/// Whether a `key=value` parameter of a DSN or query string is a secret:
/// every [`is_secret_key`] name, plus `key`, `code` and `auth`.
pub fn is_secret_param(key: &str) -> bool {
    is_secret_key(key) || SECRET_PARAMS.contains(&normalise(key).as_str())
}

/// Returns a copy of `value` with secrets replaced by `"***"`, recursively.
///
/// Non-null values of secret-named keys (see [`is_secret_key`]) are masked
/// whatever their type; every other string goes through [`redact_dsn`].
///
/// ```
/// use deltaforge_common::redact;
/// use serde_json::json;
/// let v = json!({"dsn": "postgres://u:pw@h/db", "auth": {"api_key": "k"}, "headers": {"X-Api-Key": "k", "Accept": "a"}});
/// assert_eq!(
///     redact(&v),
///     json!({"dsn": "postgres://u:***@h/db", "auth": {"api_key": "***"}, "headers": {"X-Api-Key": "***", "Accept": "a"}})
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

/// Masks the secrets in a DSN, URL or any text shown to a user.
///
/// * URL form: `scheme://user:password@host/...` → `scheme://user:***@host/...`
///   (every URL in the string; the user-info ends at the last `@` before
///   whitespace, so passwords containing `/`, `?`, `#` or `@` are still
///   hidden). User-info without a `:` is a token (`nats://TOKEN@h`,
///   `https://TOKEN@h`) and masked, except in database schemes where it is
///   the user name (`postgres://cdc@db`).
/// * key=value form (libpq, JDBC/ODBC, query strings): the value of any
///   secret parameter (see [`is_secret_param`]) up to whitespace, `&` or
///   `;`, or the whole quoted value: `host=x password=pw` → `host=x password=***`.
/// * `Bearer`/`Basic` credentials and the bodies of PEM blocks anywhere.
///
/// Strings without credentials are returned unchanged.
///
/// ```
/// use deltaforge_common::redact_dsn;
/// assert_eq!(redact_dsn("postgres://u:pw@h/db"), "postgres://u:***@h/db");
/// assert_eq!(redact_dsn("host=x password=pw"), "host=x password=***");
/// assert_eq!(redact_dsn("https://h/x?key=k&a=1"), "https://h/x?key=***&a=1");
/// assert_eq!(redact_dsn("./out/orders.jsonl"), "./out/orders.jsonl");
/// ```
pub fn redact_dsn(dsn: &str) -> String {
    redact_pem(&redact_auth_schemes(&redact_pairs(&redact_userinfo(dsn))))
}

/// Replaces every config value found in `message` by the mask, then
/// redacts what is left with [`redact_dsn`]: no validation error about a
/// config may echo what the user wrote (a value may be a secret pasted
/// into the wrong field, or one pulled from the environment).
///
/// Every string (and number) leaf of `config` of at least
/// [`MIN_SCRUBBED_LEN`] characters is masked, and every leaf of at least 3
/// characters under a secret-named key; shorter values are too common as
/// words to be told apart from the message's own text.
///
/// ```
/// use deltaforge_common::redact::scrub_values;
/// use serde_json::json;
/// let cfg = json!({"url": "ftp://h/s3cr3t", "password": "hunter2"});
/// assert_eq!(scrub_values("ftp://h/s3cr3t must start with http://", &cfg), "*** must start with http://");
/// ```
pub fn scrub_values(message: &str, config: &Value) -> String {
    scrub(message, config, false)
}

/// Like [`scrub_values`], but masks only the values under secret-named
/// keys (at least 3 characters long): for errors at run time, where the
/// other values (a file path, a host) are what the operator needs to see.
///
/// ```
/// use deltaforge_common::redact::scrub_secrets;
/// use serde_json::json;
/// let cfg = json!({"path": "./out.jsonl", "nats": {"token": "tok3n"}});
/// assert_eq!(scrub_secrets("./out.jsonl: tok3n rejected", &cfg), "./out.jsonl: *** rejected");
/// ```
pub fn scrub_secrets(message: &str, config: &Value) -> String {
    scrub(message, config, true)
}

fn scrub(message: &str, config: &Value, only_secrets: bool) -> String {
    let mut values = Vec::new();
    collect_values(config, false, only_secrets, &mut values);
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values.dedup();
    let mut out = message.to_string();
    for v in values {
        if out.contains(v.as_str()) {
            out = out.replace(v.as_str(), MASK);
        }
        // serde and `{:?}` show strings escaped: mask that form too.
        let quoted = format!("{v:?}");
        let escaped = &quoted[1..quoted.len() - 1];
        if escaped != v && out.contains(escaped) {
            out = out.replace(escaped, MASK);
        }
    }
    redact_dsn(&out)
}

/// Shortest non-secret config value [`scrub_values`] masks.
pub const MIN_SCRUBBED_LEN: usize = 4;

fn collect_values(v: &Value, secret: bool, only_secrets: bool, out: &mut Vec<String>) {
    let wanted = |text: &str| {
        let n = text.chars().count();
        if secret {
            n >= 3
        } else {
            !only_secrets && n >= MIN_SCRUBBED_LEN
        }
    };
    match v {
        Value::String(s) if wanted(s) => out.push(s.clone()),
        Value::Number(n) if wanted(&n.to_string()) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|i| collect_values(i, secret, only_secrets, out)),
        Value::Object(map) => {
            map.iter().for_each(|(k, i)| collect_values(i, secret || is_secret_key(k), only_secrets, out))
        }
        _ => {}
    }
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
                    None if userinfo.is_empty() || is_user_name_scheme(&rest[..p]) => out.push_str(userinfo),
                    // A bare user-info is a token: `nats://TOKEN@host`.
                    None => out.push_str(MASK),
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

/// Whether the scheme ending `before` (the text up to `://`) puts a user
/// name, not a token, in a colon-less user-info.
fn is_user_name_scheme(before: &str) -> bool {
    let start = before.rfind(|c: char| !(c.is_ascii_alphanumeric() || "+-.:".contains(c))).map_or(0, |i| i + 1);
    let scheme = before[start..].to_ascii_lowercase();
    USER_NAME_SCHEMES.contains(&scheme.as_str())
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
        if !boundary_ok || !is_secret_param(key) || key_start < copied {
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

/// Masks the credential after `Bearer ` (any case) or `Basic `: a
/// token of at least 8 characters of the token68 alphabet, as in an
/// `Authorization` header that found its way into a message.
fn redact_auth_schemes(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut i = 0;
    while i < s.len() {
        let at_word =
            s.is_char_boundary(i) && lower[..i].chars().next_back().is_none_or(|c| !c.is_ascii_alphanumeric());
        let scheme_len = if !at_word {
            None
        } else if lower[i..].starts_with("bearer ") {
            Some(6)
        } else if s[i..].starts_with("Basic ") {
            Some(5)
        } else {
            None
        };
        if let Some(len) = scheme_len {
            let after = i + len;
            let cred_start = after + (s[after..].len() - s[after..].trim_start_matches(' ').len());
            let cred_len = s[cred_start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || "-._~+/=".contains(c)))
                .unwrap_or(s.len() - cred_start);
            if cred_len >= 8 {
                out.push_str(&s[copied..cred_start]);
                out.push_str(MASK);
                copied = cred_start + cred_len;
                i = copied;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&s[copied..]);
    out
}

/// Masks the body of every `-----BEGIN ...-----` block.
fn redact_pem(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(b) = rest.find("-----BEGIN ") {
        let Some(header_end) = rest[b + 11..].find("-----").map(|i| b + 11 + i + 5) else { break };
        out.push_str(&rest[..header_end]);
        out.push_str(MASK);
        rest = match rest[header_end..].find("-----END ") {
            Some(e) => &rest[header_end + e..],
            None => "",
        };
        // Keep the END line (it names the block, not its content).
        if let Some(end) = rest.strip_prefix("-----END ").and_then(|r| r.find("-----").map(|i| 9 + i + 5)) {
            out.push_str(&rest[..end]);
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
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
        assert_eq!(redact_dsn("https://ghp_t0ken@github.com/x"), "https://***@github.com/x");
        assert_eq!(redact_dsn("redis://s3cret@h:6379"), "redis://***@h:6379");
        assert_eq!(redact_dsn("mysql://cdc@h/db"), "mysql://cdc@h/db");
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
        for k in ["id", "path", "user", "host", "dsn", "passes", "key", "topic", "ssl.keystore.location"] {
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

    /// The gaps of issue 14, one assertion each: every one failed before
    /// the list was merged with the Kafka sink's and extended.
    #[test]
    fn kafka_and_http_secret_keys() {
        for k in [
            "ssl.key.pem",
            "ssl.certificate.pem",
            "ssl.keystore.password",
            "ssl.key.password",
            "sasl.password",
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.client.secret",
            "Authorization",
            "Proxy-Authorization",
            "Cookie",
            "Set-Cookie",
            "X-Api-Key",
            "X-Auth-Token",
            "aws_access_key_id",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        let headers = json!({"headers": {"Authorization": "Bearer abc", "Cookie": "sid=1", "Accept": "text/plain"}});
        assert_eq!(
            redact(&headers),
            json!({"headers": {"Authorization": "***", "Cookie": "***", "Accept": "text/plain"}})
        );
    }

    #[test]
    fn query_parameter_secrets() {
        for (input, want) in [
            ("https://h/p?key=AIzaSyK&x=1", "https://h/p?key=***&x=1"),
            ("https://h/p?token=t0k", "https://h/p?token=***"),
            ("https://h/p?secret=s&password=p", "https://h/p?secret=***&password=***"),
            ("https://h/p?access_key=AKIA&sig=zz", "https://h/p?access_key=***&sig=***"),
            ("https://h/p?api-key=k&code=c", "https://h/p?api-key=***&code=***"),
            (
                "https://h/p?X-Amz-Signature=abc&X-Amz-Credential=c",
                "https://h/p?X-Amz-Signature=***&X-Amz-Credential=***",
            ),
        ] {
            assert_eq!(redact_dsn(input), want, "{input}");
        }
    }

    #[test]
    fn credentials_in_text() {
        assert_eq!(
            redact_dsn("header Authorization: Bearer eyJhbGciOi.x.y rejected"),
            "header Authorization: Bearer *** rejected"
        );
        assert_eq!(redact_dsn("Basic dXNlcjpwYXNz"), "Basic ***");
        assert_eq!(redact_dsn("the basic idea"), "the basic idea");
        let pem = "key: -----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN\n-----END PRIVATE KEY----- end";
        assert_eq!(redact_dsn(pem), "key: -----BEGIN PRIVATE KEY-----***-----END PRIVATE KEY----- end");
    }

    #[test]
    fn scrubbing_config_values_out_of_messages() {
        let cfg = json!({"url": "http://h/", "batch": 7, "credentials": {"pin": "abc"}, "tls": {"ca": "hunter\"2"}});
        let m = scrub_values("invalid: \"hunter\\\"2\" and abc and http://h/ and 7", &cfg);
        assert_eq!(m, "invalid: \"***\" and *** and *** and 7");
        assert_eq!(scrub_secrets("abc at http://h/", &cfg), "*** at http://h/");
        // Longer values first: no piece of a longer value survives.
        let cfg = json!({"a": "secretvalue", "b": "secret"});
        assert_eq!(scrub_values("x secretvalue y", &cfg), "x *** y");
    }
}
