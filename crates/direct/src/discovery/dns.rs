//! DNS CERT lookups (RFC 4398) for Direct certificate discovery, through hickory-resolver
//! (UDP with TCP fallback for truncated answers; no DNS-over-TLS, so no rustls).
//!
//! `user@example.org` is looked up at `user.example.org`, a domain at itself. Records of type
//! PKIX (1) carry a DER certificate inline; IPKIX (4) and URI (253) carry a URL, fetched over
//! HTTP(S) (DER, PEM or a `.p7b`) through the discovery [`FetchPolicy`] (public destinations
//! on 80/443 or `fetch_allow`; a refused or failing URL yields nothing, with a note). Other
//! types are ignored. "No such name" and "no records" are empty answers; timeouts and server
//! failures are errors (the send is retried) whose text never carries the owner name (it is
//! derived from the recipient's address).

use std::time::Duration;

use std::sync::Arc;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::rdata::cert::CertType;
use hickory_resolver::proto::rr::{RData, RecordType};
use openssl::x509::X509;

use super::DiscoveryError;
use super::fetch::{Fetch, Purpose};
use crate::discovery::options::DnsDiscoveryConfig;

/// A DNS CERT client.
#[derive(Clone)]
pub struct DnsCerts {
    resolver: TokioResolver,
    policy: Arc<dyn Fetch>,
}

/// What one CERT lookup found.
#[derive(Debug, Clone, Default)]
pub struct DnsAnswer {
    /// The certificates published (inline, or fetched from their URL); not yet checked.
    pub certs: Vec<X509>,
    /// URLs refused or failing, by host (never the path or the owner name).
    pub notes: Vec<String>,
}

/// `message` without `owner` (a DNS error may quote the query name, which is derived from
/// the recipient's address).
fn redact(message: &str, owner: &str) -> String {
    let owner = owner.trim_end_matches('.').to_ascii_lowercase();
    if owner.is_empty() {
        return message.to_string();
    }
    let lower = message.to_ascii_lowercase();
    let mut out = String::with_capacity(message.len());
    let mut rest = 0;
    while let Some(found) = lower[rest..].find(&owner) {
        out.push_str(&message[rest..rest + found]);
        out.push_str("<name>");
        rest += found + owner.len();
    }
    out.push_str(&message[rest..]);
    out
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
    pub fn new(
        config: &DnsDiscoveryConfig,
        policy: Arc<dyn Fetch>,
    ) -> Result<Self, DiscoveryError> {
        Ok(Self::with_resolver(resolver(config)?, policy))
    }

    /// A client on an already built [`resolver`], fetching CERT URLs under `policy`.
    pub fn with_resolver(resolver: TokioResolver, policy: Arc<dyn Fetch>) -> Self {
        Self { resolver, policy }
    }

    /// The certificates published at `owner` (empty when there are none).
    pub async fn lookup(&self, owner: &str) -> Result<DnsAnswer, DiscoveryError> {
        let fqdn = format!("{}.", owner.trim_end_matches('.'));
        let answer = match self.resolver.lookup(fqdn.as_str(), RecordType::CERT).await {
            Ok(a) => a,
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => {
                return Ok(DnsAnswer::default());
            }
            Err(e) => return Err(DiscoveryError::Dns(redact(&e.to_string(), owner))),
        };
        let mut out = DnsAnswer::default();
        for record in answer.answers() {
            let RData::CERT(cert) = &record.data else {
                continue;
            };
            match cert.cert_type {
                CertType::PKIX => {
                    if let Ok(c) = X509::from_der(&cert.cert_data) {
                        out.certs.push(c);
                    }
                }
                CertType::IPKIX | CertType::URI => {
                    let url = String::from_utf8_lossy(&cert.cert_data)
                        .trim_end_matches('\0')
                        .trim()
                        .to_string();
                    match self.policy.get(&url, Purpose::Certificate).await {
                        Ok(bytes) => match crate::load_certs(&bytes) {
                            Ok(certs) => out.certs.extend(certs),
                            Err(_) => out
                                .notes
                                .push("CERT record URL: not a certificate".to_string()),
                        },
                        Err(e) => out.notes.push(format!("CERT record URL {e}")),
                    }
                }
                _ => {}
            }
        }
        Ok(out)
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

    #[test]
    fn errors_do_not_quote_the_owner() {
        assert_eq!(
            super::redact(
                "no records found for Query { name: Name(\"Dr.Jones.direct.example.org.\") }",
                "dr.jones.direct.example.org"
            ),
            "no records found for Query { name: Name(\"<name>.\") }"
        );
    }
}
