//! The configured server this source reads: its validated configuration,
//! its table patterns, how to connect to it and how its errors are worded.
//!
//! It owns opening connections (TLS, timeouts). It must never run a query
//! itself and never show the DSN's password (errors carry the redacted DSN).

use std::sync::Arc;
use std::time::Duration;

use deltaforge_core::SourceError;
use mysql_async::{Conn, OptsBuilder, SslOpts};

use crate::config::{parse_dsn, redact_dsn, MysqlConfig, TablePattern, TlsMode};
use crate::error::{MysqlSourceError, Result};

/// One configured MySQL/MariaDB server (cheap to clone: the run, the
/// snapshot reader and the lag probe each hold one).
#[derive(Clone)]
pub(crate) struct Server {
    /// The validated configuration.
    pub cfg: MysqlConfig,
    /// The compiled `tables` patterns.
    pub patterns: Vec<TablePattern>,
    /// The source id (logs, metrics, events).
    pub source_id: Arc<str>,
    /// The DSN without its password, for logs and errors.
    pub dsn_shown: String,
}

impl Server {
    /// Checks the configuration and compiles its patterns.
    pub fn new(cfg: MysqlConfig) -> std::result::Result<Self, SourceError> {
        let source_id: Arc<str> = cfg.id.clone().into();
        let err = |msg: String| MysqlSourceError::Config { id: cfg.id.clone(), msg }.into_source_error();
        if let Err(problem) = deltaforge_core::ComponentConfig::check(&cfg) {
            return Err(err(problem.to_string()));
        }
        let patterns = cfg.patterns().map_err(err)?;
        let dsn_shown = redact_dsn(&cfg.dsn);
        Ok(Server { cfg, patterns, source_id, dsn_shown })
    }

    /// Wraps a driver error met while doing `context`.
    pub fn server_err(&self, context: impl Into<String>) -> impl FnOnce(mysql_async::Error) -> MysqlSourceError + '_ {
        let context = context.into();
        move |source| MysqlSourceError::Server {
            id: self.cfg.id.clone(),
            dsn: self.dsn_shown.clone(),
            context,
            source: Box::new(source),
        }
    }

    /// The server is not set up for change capture: `msg` says what and the fix.
    pub fn setup_err(&self, msg: impl Into<String>) -> MysqlSourceError {
        MysqlSourceError::Setup { id: self.cfg.id.clone(), dsn: self.dsn_shown.clone(), msg: msg.into() }
    }

    /// Opens a connection (TLS as configured), giving up after
    /// `connect_timeout_secs`.
    pub async fn connect(&self) -> Result<Conn> {
        let dsn = parse_dsn(&self.cfg.dsn)
            .map_err(|msg| MysqlSourceError::Config { id: self.cfg.id.clone(), msg: format!("dsn: {msg}") })?;
        let mut b = OptsBuilder::default()
            .ip_or_hostname(dsn.host.clone())
            .tcp_port(dsn.port)
            .user(Some(dsn.user.clone()))
            .pass(Some(dsn.password.clone()))
            .db_name(dsn.db.clone())
            .prefer_socket(false)
            .tcp_keepalive(Some(Duration::from_secs(30)))
            .stmt_cache_size(0);
        let tls = &self.cfg.tls;
        if tls.mode != TlsMode::Disabled {
            let mut ssl = SslOpts::default();
            if let Some(ca) = &tls.ca_file {
                ssl = ssl.with_root_certs(vec![ca.clone().into()]);
            }
            match tls.mode {
                TlsMode::Required => {
                    ssl = ssl.with_danger_accept_invalid_certs(true).with_danger_skip_domain_validation(true)
                }
                TlsMode::VerifyCa => ssl = ssl.with_danger_skip_domain_validation(true),
                _ => {}
            }
            b = b.ssl_opts(Some(ssl));
        }
        let timeout = Duration::from_secs(self.cfg.connect_timeout_secs);
        match tokio::time::timeout(timeout, Conn::new(b)).await {
            Ok(r) => r.map_err(self.server_err("connecting")),
            Err(_) => Err(MysqlSourceError::Server {
                id: self.cfg.id.clone(),
                dsn: self.dsn_shown.clone(),
                context: "connecting".into(),
                source: Box::new(mysql_async::Error::Other(format!("no answer within {} s", timeout.as_secs()).into())),
            }),
        }
    }
}
