//! The target connection: the DSN `mysql://user:pass@host:port/db` (or
//! `mariadb://`), TLS from its `ssl-mode` (`DISABLED`, `PREFERRED` —
//! treated as `REQUIRED` without a check —, `REQUIRED`, `VERIFY_CA`,
//! `VERIFY_IDENTITY`, as the MySQL source's `tls.mode`) and `ssl-ca`
//! (a PEM file) query parameters, and the session settings every
//! connection gets: UTC, strict mode (refuse, never truncate), utf8mb4.
//!
//! This module never shows the DSN unredacted; errors name a setting,
//! never the password.

use deltaforge_common::redact_dsn;
use mysql_async::{Conn, Opts, OptsBuilder, SslOpts};

/// A parsed target DSN.
#[derive(Debug, Clone)]
pub struct Target {
    opts: Opts,
    redacted: String,
}

impl Target {
    /// Parses `dsn`; the error names what is wrong, never the password.
    pub fn parse(dsn: &str) -> Result<Target, String> {
        let redacted = redact_dsn(dsn);
        let url = dsn.strip_prefix("mariadb://").map(|r| format!("mysql://{r}")).unwrap_or_else(|| dsn.to_string());
        let (base, query) = url.split_once('?').unwrap_or((&url, ""));
        let (mut mode, mut ca) = ("DISABLED".to_string(), None);
        let mut rest = Vec::new();
        for p in query.split('&').filter(|p| !p.is_empty()) {
            match p.split_once('=') {
                Some(("ssl-mode", v)) => mode = v.to_ascii_uppercase(),
                Some(("ssl-ca", v)) => ca = Some(v.to_string()),
                _ => rest.push(p),
            }
        }
        let url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
        // The driver's URL errors may quote the URL (and its password).
        let opts = Opts::from_url(&url)
            .map_err(|_| format!("dsn {redacted} does not parse: expected mysql://user:pass@host:port/db"))?;
        if opts.db_name().is_none() {
            return Err(format!("dsn {redacted} names no database (it holds the progress table)"));
        }
        let ssl = match mode.as_str() {
            "DISABLED" => None,
            "PREFERRED" | "REQUIRED" => {
                Some(SslOpts::default().with_danger_accept_invalid_certs(true).with_danger_skip_domain_validation(true))
            }
            "VERIFY_CA" => Some(SslOpts::default().with_danger_skip_domain_validation(true)),
            "VERIFY_IDENTITY" => Some(SslOpts::default()),
            other => {
                return Err(format!(
                    "dsn: ssl-mode {other:?} is not one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY"
                ))
            }
        };
        let ssl = ssl.map(|s| match &ca {
            Some(path) => s.with_root_certs(vec![std::path::PathBuf::from(path).into()]),
            None => s,
        });
        let opts = OptsBuilder::from_opts(opts)
            .ssl_opts(ssl)
            .prefer_socket(false)
            .init(vec![
                "SET time_zone = '+00:00'",
                "SET sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO'",
                "SET NAMES utf8mb4",
            ])
            .into();
        Ok(Target { opts, redacted })
    }

    /// The DSN with its password hidden.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The database of the DSN (where the progress table lives).
    pub fn database(&self) -> &str {
        self.opts.db_name().unwrap_or_default()
    }

    /// Opens a connection.
    pub async fn connect(&self) -> Result<Conn, mysql_async::Error> {
        Conn::new(self.opts.clone()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsns_and_modes() {
        let t = Target::parse("mysql://u:secret@h:3306/db?ssl-mode=required").unwrap();
        assert!(!t.redacted().contains("secret"));
        assert_eq!(t.database(), "db");
        assert!(Target::parse("mariadb://u:p@h/db").is_ok());
        let e = Target::parse("mysql://u:secret@h/db?ssl-mode=maybe").unwrap_err();
        assert!(e.contains("ssl-mode") && !e.contains("secret"), "{e}");
        let e = Target::parse("mysql://u:secret@h").unwrap_err();
        assert!(e.contains("no database") && !e.contains("secret"), "{e}");
        let e = Target::parse("postgres://u:secret@h/db").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }
}
