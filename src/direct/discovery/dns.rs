//! DNS CERT lookups (RFC 4398) for Direct certificate discovery, through hickory-resolver
//! (UDP with TCP fallback for truncated answers; no DNS-over-TLS, so no rustls).
//!
//! `user@example.org` is looked up at `user.example.org`, a domain at itself. Records of type
//! PKIX (1) carry a DER certificate inline; IPKIX (4) and URI (253) carry a URL, fetched over
//! HTTP(S) (DER, PEM or a `.p7b`). Other types are ignored. "No such name" and "no records"
//! are empty answers; timeouts and server failures are errors (the send is retried).

use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::rdata::cert::CertType;
use hickory_resolver::proto::rr::{RData, RecordType};
use openssl::x509::X509;

use super::DiscoveryError;
use crate::config::DnsDiscoveryConfig;

/// Largest certificate fetched from a CERT record's URL.
const MAX_URL_BYTES: usize = 256 * 1024;

/// A DNS CERT client.
#[derive(Clone)]
pub struct DnsCerts {
    resolver: TokioResolver,
    http: reqwest::Client,
}

/// `user@example.org` → `user.example.org` (RFC 4398 §3.3 as Direct applies it); `None` when
/// the local part cannot be a DNS label.
pub fn owner_name(address: &str) -> Option<String> {
    let (local, domain) = address.trim().rsplit_once('@')?;
    let ok = !local.is_empty()
        && local.len() <= 63
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    ok.then(|| {
        format!(
            "{}.{}",
            local.to_ascii_lowercase(),
            domain.to_ascii_lowercase()
        )
    })
}

/// The resolver `config` describes (its nameservers, or the system's), shared by the CERT
/// lookups and the LDAP step's SRV lookups.
pub fn resolver(config: &DnsDiscoveryConfig) -> Result<TokioResolver, DiscoveryError> {
    let mut builder = if config.nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| DiscoveryError::Dns(e.to_string()))?
    } else {
        let servers = config
            .nameservers
            .iter()
            .map(|addr| {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                ns
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let opts = builder.options_mut();
    opts.timeout = Duration::from_secs(config.timeout_secs.max(1));
    opts.attempts = 2;
    opts.ndots = 0;
    builder
        .build()
        .map_err(|e| DiscoveryError::Dns(e.to_string()))
}

impl DnsCerts {
    pub fn new(config: &DnsDiscoveryConfig) -> Result<Self, DiscoveryError> {
        Self::with_resolver(config, resolver(config)?)
    }

    /// A client on an already built [`resolver`].
    pub fn with_resolver(
        config: &DnsDiscoveryConfig,
        resolver: TokioResolver,
    ) -> Result<Self, DiscoveryError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs.max(1)))
            .build()
            .map_err(|e| DiscoveryError::Dns(e.to_string()))?;
        Ok(Self { resolver, http })
    }

    /// The certificates published at `owner` (empty when there are none).
    pub async fn lookup(&self, owner: &str) -> Result<Vec<X509>, DiscoveryError> {
        let fqdn = format!("{}.", owner.trim_end_matches('.'));
        let answer = match self.resolver.lookup(fqdn.as_str(), RecordType::CERT).await {
            Ok(a) => a,
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => return Ok(Vec::new()),
            Err(e) => return Err(DiscoveryError::Dns(e.to_string())),
        };
        let mut certs = Vec::new();
        for record in answer.answers() {
            let RData::CERT(cert) = &record.data else {
                continue;
            };
            match cert.cert_type {
                CertType::PKIX => {
                    if let Ok(c) = X509::from_der(&cert.cert_data) {
                        certs.push(c);
                    }
                }
                CertType::IPKIX | CertType::URI => {
                    let url = String::from_utf8_lossy(&cert.cert_data)
                        .trim_end_matches('\0')
                        .trim()
                        .to_string();
                    certs.extend(self.fetch(&url).await);
                }
                _ => {}
            }
        }
        Ok(certs)
    }

    /// Certificates at a CERT record's URL; a failing URL yields none.
    async fn fetch(&self, url: &str) -> Vec<X509> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Vec::new();
        }
        let Ok(response) = self.http.get(url).send().await else {
            return Vec::new();
        };
        if !response.status().is_success() {
            return Vec::new();
        }
        match response.bytes().await {
            Ok(bytes) if bytes.len() <= MAX_URL_BYTES => {
                crate::direct::load_certs(&bytes).unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn owner_names() {
        assert_eq!(
            super::owner_name("Dr.Jones@Direct.Example.org").as_deref(),
            Some("dr.jones.direct.example.org")
        );
        assert_eq!(super::owner_name("a b@example.org"), None);
    }
}
