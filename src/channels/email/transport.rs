//! Building connections: the pooled lettre SMTP transport for a connector (TLS mode, extra CA,
//! AUTH PLAIN/LOGIN, timeout, pool size) and the native-tls connector the IMAP client uses.
//! Everything is OpenSSL through native-tls; no rustls.

use std::path::Path;
use std::time::Duration;

use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, Tokio1Executor};

use super::EmailError;
use crate::config::{SmtpConnectorConfig, TlsMode};

/// The pooled SMTP transport for one connector.
pub(crate) fn smtp_transport(
    config: &SmtpConnectorConfig,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, EmailError> {
    let mut builder =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host).port(config.port);
    let tls = match config.tls {
        TlsMode::None => Tls::None,
        mode => {
            let mut params = TlsParameters::builder(config.host.clone());
            if let Some(path) = &config.ca_certificate {
                let pem = read_pem(path)?;
                let cert = Certificate::from_pem(&pem).map_err(|e| ca_error(path, e))?;
                params = params.add_root_certificate(cert);
            }
            let params = params.build_native()?;
            match mode {
                TlsMode::Implicit => Tls::Wrapper(params),
                TlsMode::Opportunistic => Tls::Opportunistic(params),
                _ => Tls::Required(params),
            }
        }
    };
    builder = builder
        .tls(tls)
        .timeout(Some(Duration::from_secs(config.timeout_secs.max(1))))
        .pool_config(PoolConfig::new().max_size(config.max_connections.max(1)));
    match (&config.username, &config.password) {
        (Some(user), Some(password)) => {
            builder = builder
                .credentials(Credentials::new(user.clone(), password.read()?))
                .authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        (None, None) => {}
        _ => {
            return Err(EmailError::Config(
                "username and password go together".into(),
            ));
        }
    }
    Ok(builder.build())
}

/// A TLS connector trusting the system roots plus `ca_certificate` (PEM) when given.
pub(crate) fn tls_connector(
    ca_certificate: Option<&Path>,
) -> Result<tokio_native_tls::TlsConnector, EmailError> {
    let mut builder = native_tls::TlsConnector::builder();
    if let Some(path) = ca_certificate {
        let pem = read_pem(path)?;
        let cert = native_tls::Certificate::from_pem(&pem).map_err(|e| ca_error(path, e))?;
        builder.add_root_certificate(cert);
    }
    let connector = builder.build()?;
    Ok(tokio_native_tls::TlsConnector::from(connector))
}

fn read_pem(path: &Path) -> Result<Vec<u8>, EmailError> {
    std::fs::read(path).map_err(|e| ca_error(path, e))
}

fn ca_error(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> EmailError {
    EmailError::CaCertificate {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}
