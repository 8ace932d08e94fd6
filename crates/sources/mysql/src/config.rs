//! Configuration of a `type: mysql` source: parsing, offline validation,
//! table patterns, the derived replica `server_id`, and DSN redaction.
//!
//! This module owns everything that can be checked without a server. It
//! must never open a connection, and it must never put a password into an
//! error message or a log line: every message names the DSN through
//! [`redact_dsn`].

use std::path::PathBuf;
use std::time::Duration;

use deltaforge_core::{ComponentConfig, ConfigProblem, SnapshotConfig};
use serde::Deserialize;

/// Server flavour: chosen automatically from the version string, or forced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FlavorSetting {
    /// Detect from `SELECT VERSION()` (contains `MariaDB` → MariaDB).
    #[default]
    Auto,
    /// Oracle MySQL (5.7, 8.x).
    Mysql,
    /// MariaDB (10.5 and later).
    Mariadb,
}

/// TLS mode of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain TCP.
    #[default]
    Disabled,
    /// TLS without certificate verification (encryption only).
    Required,
    /// TLS, certificate verified against the CA, host name not checked.
    VerifyCa,
    /// TLS, certificate and host name verified.
    VerifyIdentity,
}

/// TLS options.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// `disabled` (default), `required`, `verify_ca` or `verify_identity`.
    #[serde(default)]
    pub mode: TlsMode,
    /// PEM file of the CA to trust (otherwise the built-in web roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// Configuration of a MySQL/MariaDB source.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    /// Checkpoint key; unique across pipelines.
    pub id: String,
    /// `mysql://user:pass@host:port/db`.
    pub dsn: String,
    /// Replica id announced to the server; defaults to a stable hash of `id`
    /// (see [`MysqlConfig::effective_server_id`]). Must differ from every
    /// other replica of the server.
    #[serde(default)]
    pub server_id: Option<u32>,
    /// Tables to capture: `db.table`, `db.*`, `db.prefix%`, `%.table`.
    #[schemars(with = "Vec<deltaforge_common::TablePattern>")]
    pub tables: Vec<String>,
    /// `auto` (default), `mysql` or `mariadb`.
    #[serde(default)]
    pub flavor: FlavorSetting,
    /// TLS options.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Resume by GTID when the server has GTIDs on (default `true`);
    /// `false` resumes by binlog file and position.
    #[serde(default = "yes")]
    pub use_gtid: bool,
    /// Heartbeat period the server is asked for, in seconds (default 5).
    /// Silence for three periods is treated as a lost connection.
    #[serde(default = "five")]
    pub heartbeat_secs: u64,
    /// Connection timeout in seconds (default 10).
    #[serde(default = "ten")]
    pub connect_timeout_secs: u64,
    /// Snapshot of the matched tables (`mode`, `chunk_size`,
    /// `max_parallel_tables`); see [`crate::snapshot`].
    #[serde(default)]
    pub snapshot: SnapshotConfig,
    /// The table the snapshot writes its watermarks to, `db.table`
    /// (default `deltaforge_watermarks` in the DSN's database). Created when
    /// missing; the user needs CREATE (once), SELECT, INSERT and UPDATE on
    /// it. It must not be matched by `tables`.
    #[serde(default)]
    pub watermark_table: Option<String>,
}

fn yes() -> bool {
    true
}
fn five() -> u64 {
    5
}
fn ten() -> u64 {
    10
}

impl ComponentConfig for MysqlConfig {
    /// Checks what serde cannot, offline.
    fn check(&self) -> Result<(), ConfigProblem> {
        if self.id.trim().is_empty() {
            return Err(ConfigProblem::new("id", "must not be empty"));
        }
        parse_dsn(&self.dsn).map_err(|m| ConfigProblem::new("dsn", m))?;
        if self.tables.is_empty() {
            return Err(ConfigProblem::new(
                "tables",
                "must list at least one pattern (`db.table`, `db.*`, `db.prefix%`, `%.table`)",
            ));
        }
        for t in &self.tables {
            TablePattern::parse(t).map_err(|m| ConfigProblem::new("tables", m))?;
        }
        if self.server_id == Some(0) {
            return Err(ConfigProblem::new(
                "server_id",
                "must be between 1 and 4294967295 (0 is not a valid replica id)",
            ));
        }
        if self.heartbeat_secs == 0 || self.heartbeat_secs > 3600 {
            return Err(ConfigProblem::new("heartbeat_secs", "must be between 1 and 3600"));
        }
        if self.connect_timeout_secs == 0 {
            return Err(ConfigProblem::new("connect_timeout_secs", "must be at least 1"));
        }
        // Its fields already carry the `snapshot.` prefix.
        self.snapshot.check().map_err(|(field, message)| ConfigProblem::new(field, message))?;
        if let Some(w) = &self.watermark_table {
            let ok = w.split_once('.').is_some_and(|(d, t)| {
                [d, t]
                    .iter()
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$'))
            });
            if !ok {
                return Err(ConfigProblem::new("watermark_table", "must be `db.table` (letters, digits, `_` and `$`)"));
            }
        }
        if self.tls.ca_file.is_some() && self.tls.mode == TlsMode::Disabled {
            return Err(ConfigProblem::new(
                "ca_file",
                "is set but tls.mode is `disabled`; set tls.mode to `verify_ca`",
            )
            .within("tls"));
        }
        Ok(())
    }
}

impl MysqlConfig {
    /// The replica id: the configured one, or a stable FNV-1a hash of the
    /// source id folded into `1000..=4_294_967_294` (so that it stays clear
    /// of the small ids operators give their servers).
    pub fn effective_server_id(&self) -> u32 {
        self.server_id.unwrap_or_else(|| derive_server_id(&self.id))
    }

    /// The watermark table as `(db, table)`: the configured one, or
    /// `deltaforge_watermarks` in the DSN's database (`None` when neither).
    pub fn watermark_table(&self) -> Option<(String, String)> {
        match &self.watermark_table {
            Some(w) => w.split_once('.').map(|(d, t)| (d.to_string(), t.to_string())),
            None => parse_dsn(&self.dsn).ok()?.db.map(|d| (d, "deltaforge_watermarks".to_string())),
        }
    }

    /// The table patterns (validated by [`check`](Self::check)).
    pub fn patterns(&self) -> Result<Vec<TablePattern>, String> {
        self.tables.iter().map(|t| TablePattern::parse(t)).collect()
    }

    /// Heartbeat period.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs.max(1))
    }
}

/// Stable replica id derived from a source id.
pub fn derive_server_id(id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.as_bytes() {
        h ^= *b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    1000 + h % (u32::MAX - 1001)
}

/// The parts of a DSN (the password stays inside, never printed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    /// Host name or address.
    pub host: String,
    /// TCP port (default 3306).
    pub port: u16,
    /// User name.
    pub user: String,
    /// Password (may be empty).
    pub password: String,
    /// Database in the path, if any.
    pub db: Option<String>,
}

/// Parses `mysql://user:pass@host:port/db` (or `mariadb://`), with
/// percent-encoded user and password. Errors never contain the password.
pub fn parse_dsn(dsn: &str) -> Result<Dsn, String> {
    let shown = redact_dsn(dsn);
    let rest = dsn
        .strip_prefix("mysql://")
        .or_else(|| dsn.strip_prefix("mariadb://"))
        .ok_or_else(|| format!("{shown} is not a MySQL DSN: expected mysql://user:pass@host:port/db"))?;
    // The user-info ends at the last `@`, so that a password holding an
    // unencoded `/`, `?` or `@` stays whole (and out of the host and port).
    let (userinfo, rest) = rest
        .rsplit_once('@')
        .ok_or_else(|| format!("{shown} names no user: expected mysql://user:pass@host:port/db"))?;
    let (hostport, path) = match rest.split_once('/') {
        Some((a, p)) => (a, p),
        None => (rest, ""),
    };
    let path = path.split_once('?').map(|(p, _)| p).unwrap_or(path);
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u, p),
        None => (userinfo, ""),
    };
    if user.is_empty() {
        return Err(format!("{shown} names no user: expected mysql://user:pass@host:port/db"));
    }
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, p) = h.split_once(']').ok_or_else(|| format!("{shown}: unclosed [ in the host"))?;
        (h.to_string(), p.strip_prefix(':').unwrap_or(""))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (hostport.to_string(), ""),
        }
    };
    if host.is_empty() {
        return Err(format!("{shown} names no host: expected mysql://user:pass@host:port/db"));
    }
    let port = if port.is_empty() {
        3306
    } else {
        port.parse::<u16>().map_err(|_| format!("{shown}: the port is not a number between 1 and 65535"))?
    };
    let decode =
        |s: &str, what: &str| percent_decode(s).ok_or_else(|| format!("{shown}: bad percent-encoding in the {what}"));
    Ok(Dsn {
        host,
        port,
        user: decode(user, "user")?,
        password: decode(password, "password")?,
        db: (!path.is_empty()).then(|| percent_decode(path).unwrap_or_else(|| path.to_string())),
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The DSN with its password replaced by `***`, for messages and logs: the
/// one redaction of `deltaforge-common`, shared by every component so that a password
/// containing `/`, `@` or `#` is hidden the same way everywhere.
///
/// ```
/// use deltaforge_source_mysql::config::redact_dsn;
/// assert_eq!(redact_dsn("mysql://u:secret@h:3306/db"), "mysql://u:***@h:3306/db");
/// assert_eq!(redact_dsn("mysql://u@h/db"), "mysql://u@h/db");
/// ```
pub use deltaforge_common::redact_dsn;

/// Table patterns are the one `db.table` pattern of DeltaForge (`*` and
/// `%` match any run of characters, e.g. `shop.*`, `shop.order_%`, `%.audit`).
pub use deltaforge_common::TablePattern;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: serde_json::Value) -> MysqlConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn patterns() {
        let p = |s| TablePattern::parse(s).unwrap();
        assert!(p("shop.orders").matches("shop", "orders"));
        assert!(!p("shop.orders").matches("shop", "orders2"));
        assert!(p("shop.*").matches("shop", "anything"));
        assert!(!p("shop.*").matches("shop2", "anything"));
        assert!(p("shop.ord%").matches("shop", "orders"));
        assert!(!p("shop.ord%").matches("shop", "xorders"));
        assert!(p("%.orders").matches("any", "orders"));
        assert!(p("s%p.o%s").matches("shop", "orders"));
        assert!(p("shop.a_b").matches("shop", "a_b"));
        assert!(!p("shop.a_b").matches("shop", "axb"));
        assert!(TablePattern::parse("nodot").is_err());
        assert!(TablePattern::parse(".t").is_err());
        // The first `.` separates database and table (as in every component).
        assert!(TablePattern::parse("a.b.c").unwrap().matches("a", "b.c"));
    }

    #[test]
    fn dsn_parsing_and_redaction() {
        let d = parse_dsn("mysql://us%40er:p%3Ass@127.0.0.1:53306/deltaforge").unwrap();
        assert_eq!(
            (d.host.as_str(), d.port, d.user.as_str(), d.password.as_str()),
            ("127.0.0.1", 53306, "us@er", "p:ss")
        );
        assert_eq!(d.db.as_deref(), Some("deltaforge"));
        assert_eq!(parse_dsn("mysql://u@h").unwrap().port, 3306);
        let err = parse_dsn("postgres://u:topsecret@h/db").unwrap_err();
        assert!(err.contains("not a MySQL DSN") && !err.contains("topsecret"), "{err}");
        let err = parse_dsn("mysql://u:topsecret@h:99999/db").unwrap_err();
        assert!(err.contains("port") && !err.contains("topsecret"), "{err}");
        assert_eq!(redact_dsn("mysql://u:topsecret@h/db"), "mysql://u:***@h/db");
        // A `/` in the password must not end the authority early.
        assert!(!redact_dsn("mysql://u:top/secret@h/db").contains("secret"));
        // Nor parsing: the password stays whole (issue 14).
        let d = parse_dsn("mysql://u:to/p?s@cret@h:3307/db").unwrap();
        assert_eq!((d.password.as_str(), d.host.as_str(), d.port), ("to/p?s@cret", "h", 3307));
        let err = parse_dsn("mysql://u:to/p9x@h:zz8/db").unwrap_err();
        assert!(err.contains("port") && !err.contains("p9x"), "{err}");
    }

    #[test]
    fn config_checks() {
        let base = json!({"id": "my", "dsn": "mysql://u:p@h:3306/db", "tables": ["db.t"]});
        let c = cfg(base.clone());
        assert!(c.check().is_ok());
        assert!(c.use_gtid);
        assert_eq!(c.effective_server_id(), derive_server_id("my"));
        assert_eq!(derive_server_id("my"), derive_server_id("my"));
        assert_ne!(derive_server_id("my"), derive_server_id("my2"));
        assert!(derive_server_id("x") >= 1000);
        let mut c2 = c.clone();
        c2.tables = vec!["bad".into()];
        assert_eq!(c2.check().unwrap_err().field, "tables");
        let mut c3 = c.clone();
        c3.dsn = "nope".into();
        assert_eq!(c3.check().unwrap_err().field, "dsn");
        let mut c4 = c.clone();
        c4.server_id = Some(0);
        assert_eq!(c4.check().unwrap_err().field, "server_id");
        let mut bad = base.clone();
        bad["bogus"] = json!(1);
        assert!(serde_json::from_value::<MysqlConfig>(bad).is_err());
        let mut tls = base;
        tls["tls"] = json!({"mode": "verify_ca", "ca_file": "/tmp/ca.pem"});
        assert!(cfg(tls).check().is_ok());
    }
}
