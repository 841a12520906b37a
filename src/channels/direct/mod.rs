//! The Direct channel (`[connectors.<name>] kind = "direct"`): sending Direct messages through
//! a HISP and tracking them by MDN/DSN.
//!
//! * [`channel`] — `DirectChannel::send`: compose, discover certificates, seal, relay.
//! * [`compose`] — the unsealed RFC 5322 message and its MDN request headers.
//! * [`keys`] — our certificate, key, decryption keys and trust anchors, loaded at start.
//! * [`tracker`] — polling the HISP mailbox for MDNs/DSNs, and the expiry pass.
//!
//! Does not own the S/MIME core or discovery (`crate::direct`), nor the store: the tracker
//! reports through [`NotificationSink`], which `queue::direct` implements over the store.

pub mod channel;
pub mod compose;
pub mod keys;
pub mod tracker;

use std::sync::Arc;

pub use channel::{DISCOVERY_UNAVAILABLE, DirectChannel, LogId, NO_CERTIFICATE};
pub use tracker::{NotificationSink, Tracked};

use crate::config::{
    Config, ConnectorConfig, DirectConnectorConfig, SecurityConfig, SmtpConnectorConfig,
};
use crate::direct::SealOptions;
use crate::direct::discovery::dns::{self, DnsCerts};
use crate::direct::discovery::ldap::LdapCerts;
use crate::direct::discovery::revocation::Fetcher;
use crate::direct::discovery::{Discovery, DiscoveryError, LocalStore};
use crate::fetch::FetchPolicy;

/// Why a Direct connector could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DirectChannelError {
    #[error("{0}")]
    Config(String),
    /// A key or certificate named by a secret that cannot be found.
    #[error(transparent)]
    Secret(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Email(#[from] crate::channels::email::EmailError),
}

/// The `kind = "direct"` connectors.
pub fn direct_connectors(
    config: &Config,
) -> impl Iterator<Item = (&String, &DirectConnectorConfig)> {
    config.connectors.iter().filter_map(|(name, c)| match c {
        ConnectorConfig::Direct(d) => Some((name, d)),
        _ => None,
    })
}

/// The domain of our Message-IDs.
pub fn message_domain(config: &DirectConnectorConfig) -> String {
    config
        .domain
        .clone()
        .unwrap_or_else(|| crate::direct::anchors::domain_of(&config.address))
}

/// The local certificate store of a connector.
pub fn local_store(config: &DirectConnectorConfig, data_dir: &std::path::Path) -> LocalStore {
    LocalStore::new(
        config
            .cert_store
            .clone()
            .unwrap_or_else(|| data_dir.join("direct-certs")),
    )
}

/// The fetch policy of a connector's discovery: `[security] fetch_*`, each fetch bounded by
/// `revocation.timeout_secs`.
pub fn fetch_policy(
    config: &DirectConnectorConfig,
    security: &SecurityConfig,
) -> Result<Arc<FetchPolicy>, DirectChannelError> {
    FetchPolicy::new(
        security,
        std::time::Duration::from_secs(config.revocation.timeout_secs),
    )
    .map(Arc::new)
    .map_err(DirectChannelError::Config)
}

/// Discovery as a connector configures it.
pub fn discovery(
    config: &DirectConnectorConfig,
    security: &SecurityConfig,
    data_dir: &std::path::Path,
    anchors: Arc<crate::direct::anchors::Anchors>,
) -> Result<Discovery, DirectChannelError> {
    let config_error = |e: DiscoveryError| DirectChannelError::Config(e.to_string());
    let policy = fetch_policy(config, security)?;
    // One resolver for CERT and SRV lookups (the `dns` nameservers and timeout).
    let resolver = if config.dns.enabled || config.ldap.enabled {
        Some(dns::resolver(&config.dns).map_err(config_error)?)
    } else {
        None
    };
    let dns = match &resolver {
        Some(r) if config.dns.enabled => Some(DnsCerts::with_resolver(r.clone(), policy.clone())),
        _ => None,
    };
    let ldap = match resolver {
        Some(r) if config.ldap.enabled => Some(LdapCerts::new(&config.ldap, r, policy.clone())),
        _ => None,
    };
    Ok(Discovery {
        local: Some(local_store(config, data_dir)),
        dns,
        ldap,
        anchors,
        fetcher: Some(Arc::new(Fetcher::new(config.revocation.clone(), policy))),
    })
}

/// Builds one connector.
pub fn build(
    name: &str,
    config: &DirectConnectorConfig,
    security: &SecurityConfig,
    data_dir: &std::path::Path,
) -> Result<DirectChannel, DirectChannelError> {
    if config.address.parse::<lettre::Address>().is_err() {
        return Err(DirectChannelError::Config("address is not valid".into()));
    }
    let keys = Arc::new(keys::load(config)?);
    let cipher = crate::direct::tools::cipher(&config.cipher)
        .map_err(|e| DirectChannelError::Config(e.to_string()))?;
    let smtp = SmtpConnectorConfig {
        host: config.smtp.host.clone(),
        port: config.smtp.port,
        tls: config.smtp.tls,
        ca_certificate: config.smtp.ca_certificate.clone(),
        username: config.smtp.username.clone(),
        password: config.smtp.password.clone(),
        from: config.address.clone(),
        domain: Some(message_domain(config)),
        rate_per_sec: 0.0,
        max_connections: config.smtp.max_connections,
        timeout_secs: config.smtp.timeout_secs,
        verp: false,
        bounces: None,
    };
    Ok(DirectChannel {
        name: name.to_string(),
        address: config.address.trim().to_ascii_lowercase(),
        domain: message_domain(config),
        mode: config.mode,
        seal_options: SealOptions {
            cipher,
            ..SealOptions::default()
        },
        discovery: discovery(config, security, data_dir, keys.anchors.clone())?,
        keys,
        transport: crate::channels::email::transport::smtp_transport(&smtp)?,
    })
}

/// Builds every `kind = "direct"` connector (each named as in the configuration).
pub fn build_connectors(
    config: &Config,
) -> Result<Vec<Arc<dyn crate::channels::Channel>>, DirectChannelError> {
    let mut built: Vec<Arc<dyn crate::channels::Channel>> = Vec::new();
    for (name, direct) in direct_connectors(config) {
        let channel = build(name, direct, &config.security, &config.data_dir)
            .map_err(|e| DirectChannelError::Config(format!("connectors.{name}: {e}")))?;
        built.push(Arc::new(channel));
    }
    Ok(built)
}
