//! TLS for the ordinary (snapshot) connection: the DSN's `sslmode`,
//! `sslrootcert`, `sslcert` and `sslkey` turned into a `tokio-postgres`
//! connector, with the same meanings as on the replication stream
//! ([`crate::transport`], where `pgwire-replication` reads the same fields):
//!
//! | `sslmode`     | TLS                        | certificate check                 |
//! |---------------|----------------------------|-----------------------------------|
//! | `disable`     | never                      | –                                 |
//! | `prefer`      | if the server offers it    | none                              |
//! | `require`     | always (fails without it)  | none                              |
//! | `verify-ca`   | always                     | chain, against `sslrootcert`      |
//! | `verify-full` | always                     | chain and host name               |
//!
//! Without `sslrootcert`, `verify-ca` and `verify-full` trust the Mozilla
//! roots (`webpki-roots`), as the stream does. "No certificate check" still
//! verifies the handshake signatures with the crypto provider, so the
//! connection is encrypted to whoever holds the presented certificate's
//! key; it is not authenticated (as in libpq).
//!
//! This module builds configuration only; it never opens a connection, and
//! its errors name a file or a setting, never the password.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{Dsn, SslMode};

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Any certificate (handshake signatures are still verified).
    Nothing,
    /// The chain, against the trusted roots; any host name.
    Chain,
    /// The chain and the host name.
    ChainAndHost,
}

/// What a connection does about TLS for an `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsPlan {
    /// What `tokio-postgres` negotiates (`Prefer`: plain when the server
    /// has no TLS; `Require`: fail then).
    pub negotiate: tokio_postgres::config::SslMode,
    /// How the certificate is checked.
    pub verify: Verify,
}

/// The plan for `mode`; `None` for `disable` (no TLS at all).
pub fn plan(mode: SslMode) -> Option<TlsPlan> {
    use tokio_postgres::config::SslMode as Neg;
    let (negotiate, verify) = match mode {
        SslMode::Disable => return None,
        SslMode::Prefer => (Neg::Prefer, Verify::Nothing),
        SslMode::Require => (Neg::Require, Verify::Nothing),
        SslMode::VerifyCa => (Neg::Require, Verify::Chain),
        SslMode::VerifyFull => (Neg::Require, Verify::ChainAndHost),
    };
    Some(TlsPlan { negotiate, verify })
}

/// The crypto provider of both connections (`ring`, as `pgwire-replication`).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration for `dsn` (its `sslrootcert`, `sslcert`
/// and `sslkey`) checking certificates as `verify` says. The error names
/// the setting or file at fault.
pub fn client_config(dsn: &Dsn, verify: Verify) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let builder = match verify {
        Verify::Nothing => builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate { provider })),
        Verify::Chain | Verify::ChainAndHost => {
            let roots = Arc::new(root_store(dsn.sslrootcert.as_deref())?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("TLS set-up: certificate verifier: {e}"))?;
            if verify == Verify::Chain {
                builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyHostName { inner: webpki }))
            } else {
                builder.with_webpki_verifier(webpki)
            }
        }
    };
    match (&dsn.sslcert, &dsn.sslkey) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = load_certs(cert, "sslcert")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("sslkey {key:?}: cannot read a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("sslcert/sslkey: the client certificate and key are not usable together: {e}"))
        }
        (Some(_), None) => Err("sslcert is set but sslkey is not; a client certificate needs both".into()),
        (None, Some(_)) => Err("sslkey is set but sslcert is not; a client certificate needs both".into()),
    }
}

/// The CA certificates of `sslrootcert`, or the Mozilla roots without one.
fn root_store(sslrootcert: Option<&str>) -> Result<RootCertStore, String> {
    let Some(path) = sslrootcert else {
        return Ok(RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() });
    };
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(load_certs(path, "sslrootcert")?);
    if added == 0 {
        return Err(format!("sslrootcert {path:?} holds no usable CA certificate"));
    }
    Ok(roots)
}

/// Every certificate of a PEM file; at least one.
fn load_certs(path: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what} {path:?} cannot be read: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {path:?} is not a valid PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} {path:?} holds no PEM certificate"));
    }
    Ok(certs)
}

/// `sslmode=prefer` / `require`: any certificate, but the handshake
/// signatures are verified, so the session key is bound to the presented
/// certificate.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain is verified, the host name is not.
#[derive(Debug)]
struct AnyHostName {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            // The chain was verified before the name (webpki checks the
            // name last), so only a name mismatch is forgiven.
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
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::config::SslMode as Neg;

    #[test]
    fn sslmode_mapping() {
        assert_eq!(plan(SslMode::Disable), None);
        assert_eq!(plan(SslMode::Prefer), Some(TlsPlan { negotiate: Neg::Prefer, verify: Verify::Nothing }));
        assert_eq!(plan(SslMode::Require), Some(TlsPlan { negotiate: Neg::Require, verify: Verify::Nothing }));
        assert_eq!(plan(SslMode::VerifyCa), Some(TlsPlan { negotiate: Neg::Require, verify: Verify::Chain }));
        assert_eq!(plan(SslMode::VerifyFull), Some(TlsPlan { negotiate: Neg::Require, verify: Verify::ChainAndHost }));
    }

    #[test]
    fn configs_build_and_errors_name_the_file() {
        let dsn = Dsn::parse("postgres://u:topsecret@h/db?sslmode=require").unwrap();
        assert!(client_config(&dsn, Verify::Nothing).is_ok());
        // No sslrootcert: the Mozilla roots.
        assert!(client_config(&dsn, Verify::ChainAndHost).is_ok());
        let dsn =
            Dsn::parse("postgres://u:topsecret@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem").unwrap();
        let e = client_config(&dsn, Verify::ChainAndHost).unwrap_err();
        assert!(e.contains("sslrootcert") && e.contains("/nonexistent/ca.pem"), "{e}");
        assert!(!e.contains("topsecret"));
        let empty = std::env::temp_dir().join(format!("df-empty-ca-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let dsn = Dsn::parse(&format!("host=h dbname=db sslmode=verify-ca sslrootcert={}", empty.display())).unwrap();
        let e = client_config(&dsn, Verify::Chain).unwrap_err();
        assert!(e.contains("sslrootcert") && e.contains("no PEM certificate"), "{e}");
        std::fs::remove_file(&empty).ok();
        let dsn = Dsn::parse("host=h dbname=db sslmode=require sslcert=/c.pem").unwrap();
        assert!(client_config(&dsn, Verify::Nothing).unwrap_err().contains("sslkey is not"));
    }
}
