//! Configuration of the `postgres` source: the YAML `config:` map, the DSN
//! (libpq URL or `key=value` form), table patterns and the slot and
//! publication names.
//!
//! This module owns validation that needs no server (the registry's offline
//! `check`). It must never open a connection, and it must never put a
//! password into an error or a log line: [`Dsn::redacted`] is the only form
//! of a DSN that leaves this module.
//!
//! The DSN parser is hand-written: it is about a hundred lines for the two
//! libpq forms, while a libpq binding would add a C dependency and the
//! `tokio-postgres` parser cannot be reused without its client.

use deltaforge_core::{ComponentConfig, ConfigProblem, SnapshotConfig};
use serde::Deserialize;

/// Configuration of a `postgres` source. Its `Debug` form redacts the
/// DSN's password.
#[derive(Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Checkpoint key; unique across pipelines.
    pub id: String,
    /// Connection string: `postgres://user:pass@host:port/db?sslmode=require`
    /// or `host=… port=… user=… password=… dbname=… sslmode=…`.
    pub dsn: String,
    /// Tables to capture, as `schema.table`; `*` and `%` match any run of
    /// characters (`public.order_*`, `sales.%`).
    #[schemars(with = "Vec<TablePattern>")]
    pub tables: Vec<String>,
    /// Replication slot name. Default: `deltaforge_{pipeline name}` (the
    /// pipeline name is only known when the source runs, so the default is
    /// derived then; the offline check validates explicit names only).
    #[serde(default)]
    pub slot: Option<String>,
    /// Publication name. Default: `deltaforge_{pipeline name}`, like `slot`.
    #[serde(default)]
    pub publication: Option<String>,
    /// Create the publication for the matched tables when it is missing
    /// (default true). When false and missing, the source stops with the
    /// SQL to run.
    #[serde(default = "yes")]
    pub create_publication: bool,
    /// Seconds between standby status updates sent to the server (1–60,
    /// default 5).
    #[serde(default = "five")]
    pub status_interval_secs: u64,
    /// Seconds to wait for the server to accept a connection and
    /// authenticate it (default 10). A server that accepts the TCP
    /// connection and then says nothing (a blackholed route, a stuck
    /// proxy) fails the attempt after this long, and the pipeline retries.
    #[serde(default = "ten")]
    pub connect_timeout_secs: u64,
    /// Seconds of silence from the server on the replication stream after
    /// which the connection is considered dead and the source reconnects
    /// from its checkpoint (like PostgreSQL's own `wal_receiver_timeout`).
    /// The session's `wal_sender_timeout` is set to the same value, so an
    /// idle server pings every half of it and drops a silent client too.
    /// Default: the larger of 20 and 3 × `status_interval_secs`; at least
    /// 3 × `status_interval_secs` when set.
    #[serde(default)]
    pub receive_timeout_secs: Option<u64>,
    /// Milliseconds the replication reader waits, once it has read all the
    /// server sent, before reading again (0–100, default 1). On a busy
    /// stream of small transactions one read then serves many of them
    /// instead of one wakeup per transaction (like a Kafka consumer's
    /// `fetch.max.wait.ms`); a read that finds the stream idle returns as
    /// soon as data arrives. 0 reads at once.
    #[serde(default = "one")]
    pub read_wait_ms: u64,
    /// Snapshot of the matched tables (`mode`, `chunk_size`,
    /// `max_parallel_tables`); see [`crate::snapshot`].
    #[serde(default)]
    pub snapshot: SnapshotConfig,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dsn = Dsn::parse(&self.dsn).map(|d| d.redacted()).unwrap_or_else(|_| "<unparsable dsn>".into());
        f.debug_struct("PostgresConfig")
            .field("id", &self.id)
            .field("dsn", &dsn)
            .field("tables", &self.tables)
            .field("slot", &self.slot)
            .field("publication", &self.publication)
            .field("create_publication", &self.create_publication)
            .field("status_interval_secs", &self.status_interval_secs)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("receive_timeout_secs", &self.receive_timeout_secs)
            .field("read_wait_ms", &self.read_wait_ms)
            .field("snapshot", &self.snapshot)
            .finish()
    }
}

fn yes() -> bool {
    true
}

fn one() -> u64 {
    1
}

fn five() -> u64 {
    5
}

fn ten() -> u64 {
    10
}

impl ComponentConfig for PostgresConfig {
    /// Checks what serde cannot, offline.
    fn check(&self) -> Result<(), ConfigProblem> {
        if self.id.trim().is_empty() {
            return Err(ConfigProblem::new("id", "must not be empty"));
        }
        Dsn::parse(&self.dsn).map_err(|e| ConfigProblem::new("dsn", e.to_string()))?;
        if self.tables.is_empty() {
            return Err(ConfigProblem::new(
                "tables",
                "must list at least one table as schema.table (patterns with * or % allowed)",
            ));
        }
        for t in &self.tables {
            TablePattern::parse(t).map_err(|m| ConfigProblem::new("tables", m))?;
        }
        if let Some(s) = &self.slot {
            check_name("slot", s)?;
        }
        if let Some(p) = &self.publication {
            check_name("publication", p)?;
        }
        if !(1..=60).contains(&self.status_interval_secs) {
            return Err(ConfigProblem::new("status_interval_secs", "must be between 1 and 60"));
        }
        if !(1..=3600).contains(&self.connect_timeout_secs) {
            return Err(ConfigProblem::new("connect_timeout_secs", "must be between 1 and 3600"));
        }
        if let Some(t) = self.receive_timeout_secs {
            let least = 3 * self.status_interval_secs;
            if t < least || t > 3600 {
                return Err(ConfigProblem::new(
                    "receive_timeout_secs",
                    format!(
                        "must be between 3 × status_interval_secs ({least}) and 3600: the server is only \
                         asked to ping when the source has been quiet for half of it"
                    ),
                ));
            }
        }
        if self.read_wait_ms > 100 {
            return Err(ConfigProblem::new(
                "read_wait_ms",
                "must be between 0 and 100 (milliseconds a busy stream gathers before the next read)",
            ));
        }
        // Its fields already carry the `snapshot.` prefix.
        self.snapshot.check().map_err(|(field, message)| ConfigProblem::new(field, message))?;
        Ok(())
    }
}

impl PostgresConfig {
    /// The slot name: the configured one, or derived from the pipeline name.
    pub fn slot_name(&self, pipeline: &str) -> String {
        self.slot.clone().unwrap_or_else(|| derived_name(pipeline))
    }

    /// The publication name: the configured one, or derived from the pipeline name.
    pub fn publication_name(&self, pipeline: &str) -> String {
        self.publication.clone().unwrap_or_else(|| derived_name(pipeline))
    }

    /// How long the replication stream may stay silent before the source
    /// reconnects (`receive_timeout_secs`, or its default).
    pub fn receive_timeout(&self) -> std::time::Duration {
        let secs = self.receive_timeout_secs.unwrap_or_else(|| (3 * self.status_interval_secs).max(20));
        std::time::Duration::from_secs(secs)
    }

    /// How long a busy replication stream gathers before the next read.
    pub fn read_wait(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.read_wait_ms)
    }

    /// The table patterns, parsed.
    pub fn patterns(&self) -> Result<Vec<TablePattern>, String> {
        self.tables.iter().map(|t| TablePattern::parse(t)).collect()
    }
}

/// `deltaforge_{name}` lower-cased, with every character outside
/// `[a-z0-9_]` replaced by `_`, cut to PostgreSQL's 63-byte name limit.
pub fn derived_name(pipeline: &str) -> String {
    let mut s = String::from("deltaforge_");
    s.extend(pipeline.chars().map(|c| {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    s.truncate(63);
    s
}

/// Slot names may hold only lower-case letters, digits and `_` (a
/// PostgreSQL rule); publication names are held to the same rule so that
/// they never need quoting in replication commands.
fn check_name(field: &str, name: &str) -> Result<(), ConfigProblem> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ConfigProblem::new(
            field,
            format!("{name:?} is not a valid name: use 1 to 63 lower-case letters, digits and _"),
        ))
    }
}

/// Table patterns are the one `db.table` pattern of DeltaForge (here
/// `schema.table`; `*` and `%` match any run of characters).
pub use deltaforge_common::TablePattern;

/// How to use TLS, from the DSN's `sslmode` (libpq meanings; the libpq
/// default `prefer` applies when it is absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it (libpq `allow` is treated alike).
    Prefer,
    /// TLS, certificate not verified.
    Require,
    /// TLS, certificate chain verified.
    VerifyCa,
    /// TLS, certificate chain and host name verified.
    VerifyFull,
}

/// A parsed connection string.
#[derive(Clone, PartialEq, Eq)]
pub struct Dsn {
    /// Host name, IP address, or a Unix socket directory (starts with `/`).
    pub host: String,
    /// Port.
    pub port: u16,
    /// User.
    pub user: String,
    /// Password (empty when none); never printed.
    pub password: String,
    /// Database.
    pub dbname: String,
    /// TLS mode.
    pub sslmode: SslMode,
    /// `sslrootcert`: CA file for verify-ca / verify-full.
    pub sslrootcert: Option<String>,
    /// `sslcert`: client certificate file.
    pub sslcert: Option<String>,
    /// `sslkey`: client key file.
    pub sslkey: Option<String>,
}

impl std::fmt::Debug for Dsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The DSN parameters DeltaForge understands (others are refused).
const SUPPORTED_PARAMS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "dbname",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "application_name",
    "connect_timeout",
    "replication",
    "options",
    "target_session_attrs",
];

/// A DSN that cannot be used. The message never contains a value of the
/// DSN, so no piece of the password can appear in it, however malformed
/// the DSN is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid dsn: {0}")]
pub struct DsnError(String);

impl Dsn {
    /// Parses a libpq URL (`postgres://` or `postgresql://`) or `key=value` string.
    pub fn parse(s: &str) -> Result<Dsn, DsnError> {
        let s = s.trim();
        let mut dsn = Dsn {
            host: "localhost".into(),
            port: 5432,
            user: "postgres".into(),
            password: String::new(),
            dbname: String::new(),
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
        };
        if s.is_empty() {
            return Err(DsnError("empty; expected postgres://user@host:port/db or host=… dbname=…".into()));
        }
        let params: Vec<(String, String)> =
            if let Some(rest) = s.strip_prefix("postgres://").or_else(|| s.strip_prefix("postgresql://")) {
                // The user-info ends at the last `@`: a password may hold an
                // unencoded `/`, `?`, `#` or `@`, and splitting at any of those
                // first would turn pieces of it into the host, port, database
                // or query (and into error messages). An `@` in a query value
                // must be written `%40`.
                let (userinfo, rest) = match rest.rsplit_once('@') {
                    Some((u, r)) => (Some(u), r),
                    None => (None, rest),
                };
                let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
                let (hostport, path) = main.split_once('/').unwrap_or((main, ""));
                let mut params = Vec::new();
                if let Some(u) = userinfo {
                    let (user, pass) = match u.split_once(':') {
                        Some((a, b)) => (a, Some(b)),
                        None => (u, None),
                    };
                    if !user.is_empty() {
                        params.push(("user".into(), percent_decode(user)?));
                    }
                    if let Some(p) = pass {
                        params.push(("password".into(), percent_decode(p)?));
                    }
                }
                let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
                    // [ipv6]:port
                    let (h, rest) = h.split_once(']').ok_or_else(|| DsnError("unclosed [ in the host".into()))?;
                    (h.to_string(), rest.strip_prefix(':').map(str::to_string))
                } else {
                    match hostport.rsplit_once(':') {
                        Some((h, p)) => (h.to_string(), Some(p.to_string())),
                        None => (hostport.to_string(), None),
                    }
                };
                if !host.is_empty() {
                    params.push(("host".into(), percent_decode(&host)?));
                }
                if let Some(p) = port {
                    params.push(("port".into(), p));
                }
                if !path.is_empty() {
                    params.push(("dbname".into(), percent_decode(path)?));
                }
                for kv in query.split('&').filter(|kv| !kv.is_empty()) {
                    let (k, v) = kv.split_once('=').ok_or_else(|| DsnError("a query parameter has no `=`".into()))?;
                    params.push((k.to_string(), percent_decode(v)?));
                }
                params
            } else if s.contains("://") {
                return Err(DsnError("unsupported URL scheme; use postgres:// or postgresql://".into()));
            } else {
                parse_key_values(s)?
            };
        for (k, v) in params {
            match k.as_str() {
                "host" | "hostaddr" => dsn.host = v,
                "port" => {
                    dsn.port = v.parse().map_err(|_| DsnError("the port is not a number between 1 and 65535".into()))?
                }
                "user" => dsn.user = v,
                "password" => dsn.password = v,
                "dbname" => dsn.dbname = v,
                "sslmode" => {
                    dsn.sslmode = match v.as_str() {
                        "disable" => SslMode::Disable,
                        "allow" | "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        _ => {
                            return Err(DsnError(
                                "sslmode is not one of disable, allow, prefer, require, verify-ca, verify-full".into(),
                            ))
                        }
                    }
                }
                "sslrootcert" => dsn.sslrootcert = Some(v),
                "sslcert" => dsn.sslcert = Some(v),
                "sslkey" => dsn.sslkey = Some(v),
                // Harmless libpq parameters that do not change how we connect.
                "application_name" | "connect_timeout" | "replication" | "options" | "target_session_attrs" => {}
                // The name is not quoted: with an unquoted space in a
                // password, the rest of the password arrives here.
                _ => {
                    return Err(DsnError(format!("unsupported parameter; supported: {}", SUPPORTED_PARAMS.join(", "))))
                }
            }
        }
        if dsn.dbname.is_empty() {
            return Err(DsnError(
                "no database named; add it as the URL path (postgres://…/mydb) or dbname=mydb".into(),
            ));
        }
        if dsn.host.is_empty() {
            return Err(DsnError("empty host".into()));
        }
        Ok(dsn)
    }

    /// The DSN as a URL built from its parsed parts with the password
    /// replaced by the redaction mask: the only form that may appear in logs
    /// and errors. Built from the parts rather than by redacting the text,
    /// so a password holding `/`, `?` or `@` can never leak a piece.
    pub fn redacted(&self) -> String {
        let mask = deltaforge_common::redact::MASK;
        let pass = if self.password.is_empty() { String::new() } else { format!(":{mask}") };
        format!("postgres://{}{pass}@{}:{}/{}", self.user, self.host, self.port, self.dbname)
    }
}

fn parse_key_values(s: &str) -> Result<Vec<(String, String)>, DsnError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(DsnError(
                "expected key=value pairs, found a word without `=` (quote values with spaces: password='a b'); \
                 or use a URL postgres://user@host/db"
                    .into(),
            ));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(DsnError("unterminated quoted value".into())),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    chars.next();
                    value.extend(chars.next());
                    continue;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, DsnError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(|| DsnError("truncated %-escape in URL".into()))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| DsnError("bad %-escape in URL".into()))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| DsnError("%-escapes in URL are not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg_config(extra: serde_json::Value) -> PostgresConfig {
        let mut v = serde_json::json!({"id": "s", "dsn": "postgres://u@h/d", "tables": ["public.t"]});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn connection_deadlines_default_and_check() {
        let c = pg_config(serde_json::json!({}));
        assert_eq!(c.connect_timeout_secs, 10);
        assert_eq!(c.receive_timeout(), std::time::Duration::from_secs(20));
        // The server pings after half the timeout; status updates must come more often.
        let c = pg_config(serde_json::json!({"status_interval_secs": 30}));
        assert_eq!(c.receive_timeout(), std::time::Duration::from_secs(90));
        let c = pg_config(serde_json::json!({"status_interval_secs": 10, "receive_timeout_secs": 29}));
        let e = c.check().unwrap_err();
        assert_eq!(e.field, "receive_timeout_secs");
        assert!(e.to_string().contains("(30)"), "{e}");
        let c = pg_config(serde_json::json!({"status_interval_secs": 10, "receive_timeout_secs": 30}));
        assert!(c.check().is_ok());
        assert_eq!(
            pg_config(serde_json::json!({"connect_timeout_secs": 0})).check().unwrap_err().field,
            "connect_timeout_secs"
        );
    }

    #[test]
    fn read_wait_defaults_to_a_millisecond_and_is_bounded() {
        assert_eq!(pg_config(serde_json::json!({})).read_wait(), std::time::Duration::from_millis(1));
        assert!(pg_config(serde_json::json!({"read_wait_ms": 0})).check().is_ok());
        assert!(pg_config(serde_json::json!({"read_wait_ms": 100})).check().is_ok());
        let e = pg_config(serde_json::json!({"read_wait_ms": 101})).check().unwrap_err();
        assert_eq!(e.field, "read_wait_ms");
    }

    #[test]
    fn url_dsn() {
        let d = Dsn::parse("postgres://bob:s%40cret@db.example:6543/shop?sslmode=require&sslrootcert=/ca.pem").unwrap();
        assert_eq!(d.user, "bob");
        assert_eq!(d.password, "s@cret");
        assert_eq!(d.host, "db.example");
        assert_eq!(d.port, 6543);
        assert_eq!(d.dbname, "shop");
        assert_eq!(d.sslmode, SslMode::Require);
        assert_eq!(d.sslrootcert.as_deref(), Some("/ca.pem"));
        assert_eq!(d.redacted(), "postgres://bob:***@db.example:6543/shop");
        assert!(!format!("{d:?}").contains("cret"));
    }

    #[test]
    fn key_value_dsn() {
        let d =
            Dsn::parse("host=127.0.0.1 port=55432 user=postgres password='a b\\'c' dbname=deltaforge sslmode=disable")
                .unwrap();
        assert_eq!(d.password, "a b'c");
        assert_eq!(d.port, 55432);
        assert_eq!(d.sslmode, SslMode::Disable);
        let d = Dsn::parse("postgres://postgres@127.0.0.1:55432/deltaforge").unwrap();
        assert_eq!(d.sslmode, SslMode::Prefer);
        assert_eq!(d.password, "");
    }

    #[test]
    fn bad_dsns_say_what_is_wrong_without_the_password() {
        let e = Dsn::parse("postgres://u:topsecret@h:99999/db").unwrap_err().to_string();
        assert!(e.contains("port"), "{e}");
        assert!(!e.contains("topsecret"));
        let e = Dsn::parse("postgres://u:topsecret@h/").unwrap_err().to_string();
        assert!(e.contains("no database"), "{e}");
        assert!(!e.contains("topsecret"));
        assert!(Dsn::parse("host=h dbname=d sslmode=sometimes").unwrap_err().to_string().contains("sslmode"));
        assert!(Dsn::parse("mysql://h/d").is_err());
        assert!(Dsn::parse("justtext").is_err());
    }

    /// Issue 14: a password with an unencoded `/`, `?`, `@`, `:` or a
    /// space used to be split into host, port, database or query, and
    /// those pieces were quoted in errors. Now the user-info ends at the
    /// last `@` and no error quotes any part of the DSN.
    #[test]
    fn no_piece_of_a_password_reaches_an_error_or_the_shown_form() {
        for (dsn, password) in [
            ("postgres://u:pa/ss@h:5432/db", "pa/ss"),
            ("postgres://u:pa?ss@h/db", "pa?ss"),
            ("postgres://u:p@ss@h/db", "p@ss"),
            ("postgres://u:a:b/c?d=e@h/db?sslmode=disable", "a:b/c?d=e"),
        ] {
            let d = Dsn::parse(dsn).unwrap();
            assert_eq!(d.password, password, "{dsn}");
            assert_eq!((d.host.as_str(), d.dbname.as_str()), ("h", "db"), "{dsn}");
            assert!(!d.redacted().contains(password), "{}", d.redacted());
        }
        for (dsn, pieces) in [
            ("postgres://u:pw/xyz99@h:notaport/db", &["xyz99", "notaport"][..]),
            ("postgres://u:pw?zz=1@h/", &["zz"][..]),
            ("postgres://u:tops3cret@h/db?bad9param", &["tops3cret", "bad9param"][..]),
            ("postgres://u:tops3cret@h/db?sslmode=s3cretmode", &["s3cretmode"][..]),
            ("host=h dbname=d password=top s3cret", &["s3cret"][..]),
            ("host=h dbname=d password=top s3cret=1", &["s3cret"][..]),
            ("host=h dbname=d password='s3cret", &["s3cret"][..]),
        ] {
            let e = Dsn::parse(dsn).unwrap_err().to_string();
            for p in pieces {
                assert!(!e.contains(p), "{dsn}: {e}");
            }
        }
    }

    #[test]
    fn patterns() {
        let p = TablePattern::parse("public.order_*").unwrap();
        assert!(p.matches("public", "order_items"));
        assert!(p.matches("public", "order_"));
        assert!(!p.matches("public", "orders"));
        assert!(!p.matches("sales", "order_items"));
        let p = TablePattern::parse("%.t%x").unwrap();
        assert!(p.matches("a", "tabx"));
        assert!(!p.matches("a", "tab"));
        assert!(TablePattern::parse("orders").is_err());
        // The first `.` separates schema and table (as in every component).
        assert!(TablePattern::parse("a.b.c").unwrap().matches("a", "b.c"));
    }

    #[test]
    fn config_checks_and_defaults() {
        let c: PostgresConfig = serde_json::from_value(serde_json::json!({
            "id": "pg", "dsn": "postgres://postgres@localhost/db", "tables": ["public.*"]
        }))
        .unwrap();
        assert!(c.create_publication);
        let mut secret = c.clone();
        secret.dsn = "postgres://u:topsecret@h/db".into();
        assert!(!format!("{secret:?}").contains("topsecret"));
        assert!(c.check().is_ok());
        assert_eq!(c.slot_name("Orders-CDC"), "deltaforge_orders_cdc");
        assert_eq!(c.publication_name("Orders-CDC"), "deltaforge_orders_cdc");
        let mut bad = c.clone();
        bad.slot = Some("Bad-Name".into());
        assert_eq!(bad.check().unwrap_err().field, "slot");
        let mut bad = c.clone();
        bad.tables = vec!["orders".into()];
        assert_eq!(bad.check().unwrap_err().field, "tables");
        let mut bad = c.clone();
        bad.dsn = "postgres://x:pw@h:notaport/db".into();
        assert_eq!(bad.check().unwrap_err().field, "dsn");
        assert!(serde_json::from_value::<PostgresConfig>(
            serde_json::json!({"id": "x", "dsn": "d", "tables": [], "bogus": 1})
        )
        .is_err());
    }
}
