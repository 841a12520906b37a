//! Discovery settings, as the daemon's `[connectors.<name>.discovery]` TOML tables spell them
//! (the daemon's configuration embeds these types; this crate reads them).

use serde::{Deserialize, Serialize};

/// DNS CERT discovery.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsDiscoveryConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Nameservers (`ip:port`); empty: the system resolver configuration.
    #[serde(default)]
    pub nameservers: Vec<std::net::SocketAddr>,
    /// Each DNS query (CERT, SRV, the LDAP servers' addresses).
    #[serde(default = "default_dns_timeout")]
    pub timeout_secs: u64,
}

impl Default for DnsDiscoveryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            nameservers: Vec::new(),
            timeout_secs: default_dns_timeout(),
        }
    }
}

/// LDAP discovery: the recipient domain's `_ldap._tcp` SRV records name the directory servers,
/// searched anonymously for `(mail=<address>)` / `(mail=<domain>)` entries' `userCertificate`.
/// `enabled` is independent of `dns.enabled` (which turns CERT records on or off); the SRV
/// lookups use the `dns` nameservers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LdapDiscoveryConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Search base; empty: every `namingContexts` value of the server's root DSE.
    #[serde(default)]
    pub base: String,
    /// TCP connect timeout per server address; an unreachable server is skipped.
    #[serde(default = "default_ldap_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Bind and each search, per server; a server that does not answer in time is skipped.
    #[serde(default = "default_dns_timeout")]
    pub timeout_secs: u64,
    /// A server that failed is tried after the others for this long.
    #[serde(default = "default_ldap_dead_for")]
    pub dead_server_secs: u64,
}

impl Default for LdapDiscoveryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            base: String::new(),
            connect_timeout_secs: default_ldap_connect_timeout(),
            timeout_secs: default_dns_timeout(),
            dead_server_secs: default_ldap_dead_for(),
        }
    }
}

fn default_ldap_connect_timeout() -> u64 {
    2
}
fn default_ldap_dead_for() -> u64 {
    300
}

/// Fetching for recipient certificates (HTTP, cached).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RevocationConfig {
    /// Fetch missing intermediates from the AIA caIssuers URL.
    #[serde(default = "default_true")]
    pub aia: bool,
    /// CRL checking: `soft` (an unreachable CRL is ignored; default), `hard` (it rejects the
    /// certificate) or `off`.
    #[serde(default)]
    pub crl: CrlMode,
    /// CRL checking for the signers of messages we receive: `hard` (default: a CRL that
    /// cannot be had leaves the message unprocessed, and it is retried later), `soft` or `off`.
    /// `crl` above is the mode for the certificates we encrypt to.
    #[serde(default = "default_inbound_crl")]
    pub inbound_crl: CrlMode,
    /// Each HTTP fetch of discovery (AIA, CRL, DNS CERT URLs), resolution and redirects
    /// included. What may be fetched and how much is `[security] fetch_*`.
    #[serde(default = "default_dns_timeout")]
    pub timeout_secs: u64,
    /// How long a fetched CRL is reused.
    #[serde(default = "default_crl_cache")]
    pub cache_secs: u64,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        Self {
            aia: true,
            crl: CrlMode::default(),
            inbound_crl: default_inbound_crl(),
            timeout_secs: default_dns_timeout(),
            cache_secs: default_crl_cache(),
        }
    }
}

/// See [`RevocationConfig::crl`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum CrlMode {
    #[default]
    Soft,
    Hard,
    Off,
}

fn default_inbound_crl() -> CrlMode {
    CrlMode::Hard
}

fn default_crl_cache() -> u64 {
    3600
}

fn default_true() -> bool {
    true
}
fn default_dns_timeout() -> u64 {
    5
}
