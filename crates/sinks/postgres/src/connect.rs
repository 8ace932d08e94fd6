//! The target connection: the DSN (URL `postgres://…` or `key=value`
//! form), TLS from its `sslmode` and `sslrootcert` as libpq and the
//! PostgreSQL source read them, and connecting.
//!
//! | `sslmode` | TLS | certificate check |
//! |---|---|---|
//! | `disable` | never | – |
//! | `prefer` (default) | if the server offers it | none |
//! | `require` | always | none |
//! | `verify-ca` | always | chain, against `sslrootcert` (else the Mozilla roots) |
//! | `verify-full` | always | chain and host name |
//!
//! Why not the source's code: the PostgreSQL source has the same table in
//! its `tls` module, but a sink crate may not depend on a source crate
//! (`scripts/check_architecture.py`); moving that module into a shared
//! crate is the cleaner fix, left for a change that may touch the source.
//!
//! This module never logs or returns the DSN unredacted; its errors name
//! a setting or a file, never the password.

use std::sync::Arc;

use deltaforge_common::redact_dsn;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::Client;

/// How the certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    Nothing,
    Chain,
    ChainAndHost,
}

/// A parsed target DSN.
#[derive(Debug, Clone)]
pub struct Target {
    config: tokio_postgres::Config,
    tls: Option<(Verify, Option<String>)>,
    redacted: String,
}

impl Target {
    /// Parses `dsn`; the error names what is wrong, never the password.
    pub fn parse(dsn: &str) -> Result<Target, String> {
        let redacted = redact_dsn(dsn);
        let (mut mode, mut root) = ("prefer".to_string(), None);
        let mut keep = |k: &str, v: &str| match k {
            "sslmode" => {
                mode = v.to_string();
                false
            }
            "sslrootcert" => {
                root = Some(v.to_string());
                false
            }
            _ => true,
        };
        let rest = if let Some((base, query)) = dsn.split_once('?').filter(|_| dsn.contains("://")) {
            let params: Vec<&str> =
                query.split('&').filter(|p| p.split_once('=').is_none_or(|(k, v)| keep(k, v))).collect();
            if params.is_empty() {
                base.to_string()
            } else {
                format!("{base}?{}", params.join("&"))
            }
        } else if dsn.contains("://") {
            dsn.to_string()
        } else {
            dsn.split_whitespace()
                .filter(|p| p.split_once('=').is_none_or(|(k, v)| keep(k, v)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let (negotiate, verify) = match mode.as_str() {
            "disable" => (tokio_postgres::config::SslMode::Disable, None),
            "prefer" | "allow" => (tokio_postgres::config::SslMode::Prefer, Some(Verify::Nothing)),
            "require" => (tokio_postgres::config::SslMode::Require, Some(Verify::Nothing)),
            "verify-ca" => (tokio_postgres::config::SslMode::Require, Some(Verify::Chain)),
            "verify-full" => (tokio_postgres::config::SslMode::Require, Some(Verify::ChainAndHost)),
            other => {
                return Err(format!(
                    "dsn: sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                ))
            }
        };
        let mut config: tokio_postgres::Config = rest.parse().map_err(|e: tokio_postgres::Error| {
            format!("dsn {redacted} does not parse: {}", without_secrets(&e.to_string()))
        })?;
        config.ssl_mode(negotiate);
        if config.get_dbname().is_none() {
            return Err(format!("dsn {redacted} names no database"));
        }
        Ok(Target { config, tls: verify.map(|v| (v, root)), redacted })
    }

    /// The DSN with its password hidden.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// Opens a connection; its driver task runs until the client is dropped.
    pub async fn connect(&self) -> Result<Client, ConnectError> {
        let client = match &self.tls {
            None => {
                let (client, conn) = self.config.connect(tokio_postgres::NoTls).await.map_err(ConnectError::Db)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                client
            }
            Some((verify, root)) => {
                let tls = client_config(*verify, root.as_deref()).map_err(ConnectError::Setup)?;
                let make = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
                let (client, conn) = self.config.connect(make).await.map_err(ConnectError::Db)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                client
            }
        };
        Ok(client)
    }
}

/// Why a connection failed.
#[derive(Debug)]
pub enum ConnectError {
    /// TLS could not be set up (a file is missing or unreadable): fatal.
    Setup(String),
    /// The server refused or could not be reached.
    Db(tokio_postgres::Error),
}

fn without_secrets(message: &str) -> String {
    // tokio-postgres names the option, not its value; keep only the first line.
    message.lines().next().unwrap_or("").to_string()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(verify: Verify, root: Option<&str>) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut roots = RootCertStore::empty();
    match root {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("dsn sslrootcert {path}: {e}"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("dsn sslrootcert {path}: {e}"))?;
            for c in certs {
                roots.add(c).map_err(|e| format!("dsn sslrootcert {path}: {e}"))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let roots = Arc::new(roots);
    Ok(match verify {
        Verify::ChainAndHost => builder.with_root_certificates(roots).with_no_client_auth(),
        Verify::Chain | Verify::Nothing => {
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| format!("TLS setup: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Lenient { webpki, check_chain: verify == Verify::Chain }))
                .with_no_client_auth()
        }
    })
}

/// `verify-ca` (chain, any host name) and `prefer`/`require` (no check;
/// handshake signatures are still verified).
#[derive(Debug)]
struct Lenient {
    webpki: Arc<WebPkiServerVerifier>,
    check_chain: bool,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.check_chain {
            return Ok(ServerCertVerified::assertion());
        }
        match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsns_and_modes() {
        let t = Target::parse("postgres://u:secret@h:5432/db?sslmode=disable").unwrap();
        assert!(t.tls.is_none());
        assert!(!t.redacted().contains("secret"));
        let t = Target::parse("postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x").unwrap();
        assert_eq!(t.tls, Some((Verify::ChainAndHost, Some("/ca.pem".into()))));
        let t = Target::parse("host=h dbname=db user=u password=secret sslmode=require").unwrap();
        assert_eq!(t.tls, Some((Verify::Nothing, None)));
        let e = Target::parse("postgres://u:secret@h/db?sslmode=maybe").unwrap_err();
        assert!(e.contains("sslmode") && !e.contains("secret"));
        let e = Target::parse("postgres://u:secret@h:notaport/db").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        assert!(Target::parse("postgres://u:secret@h").unwrap_err().contains("no database"));
    }
}
