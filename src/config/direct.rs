//! `[connectors.<name>] kind = "direct"`: a Direct (secure messaging) connector relaying
//! through a HISP. Owns the configuration shape only; the channel is `channels::direct`.
//!
//! Two modes: `sign` (we are the STA: we hold the signing key, find the recipient's
//! certificates, sign and encrypt, then relay through the HISP's SMTP) and `edge` (the HISP
//! holds the keys: we submit plain RFC 5322 over authenticated TLS, IMAP delivers its
//! notifications already decrypted).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ImapMailboxConfig, Secret, TlsMode};

/// A Direct connector.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectConnectorConfig {
    /// Our Direct address: `From` of every message, and where MDNs come back.
    pub address: String,
    /// The organization (slug) this connector's address belongs to: every message read from
    /// its mailbox is filed for it (or, when `organizations.<slug>.addresses` claims the
    /// address, for that organization, which must be the same one). Unset and unclaimed:
    /// inbound messages are kept as orphans for the operator, never filed into a tenant.
    #[serde(default)]
    pub organization: Option<String>,
    /// Domain for `Message-ID`s. Default: the domain of `address`.
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub mode: DirectMode,
    /// Our signing certificate (PEM or DER; further certificates in the file are its chain).
    /// Required in `sign` mode.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// The private key of `certificate` (PEM or PKCS#8 DER file, or a systemd credential).
    #[serde(default)]
    pub private_key: Option<Secret>,
    /// Further decryption keys (certificate, key) for notifications, e.g. a separate
    /// encryption certificate or one being rotated out.
    #[serde(default)]
    pub decryption_keys: Vec<KeyPair>,
    /// Content encryption: `aes256-cbc` (default), `aes128-cbc`, `aes128-gcm`, `aes256-gcm`.
    #[serde(default = "default_cipher")]
    pub cipher: String,
    /// Trust anchors, each for some domains and a direction.
    #[serde(default)]
    pub trust: Vec<TrustAnchorConfig>,
    /// The local certificate store (`switchboard certs import`): a directory, searched before
    /// DNS. Default: `<data_dir>/direct-certs`.
    #[serde(default)]
    pub cert_store: Option<PathBuf>,
    /// DNS CERT discovery (RFC 4398). Its nameservers and timeout also serve the LDAP step's
    /// SRV lookups.
    #[serde(default)]
    pub dns: DnsDiscoveryConfig,
    /// LDAP discovery (`_ldap._tcp` SRV, `mail=`, `userCertificate`), after DNS CERT.
    #[serde(default)]
    pub ldap: LdapDiscoveryConfig,
    /// Intermediates from AIA, revocation from CRL distribution points.
    #[serde(default)]
    pub revocation: RevocationConfig,
    /// The HISP's SMTP submission service.
    pub smtp: DirectSmtpConfig,
    /// The mailbox MDNs and DSNs arrive in (polled over IMAP). Without it nothing is tracked
    /// beyond `sent` (and the expiry pass still runs).
    #[serde(default)]
    pub mailbox: Option<ImapMailboxConfig>,
    /// A delivery still `sent` this long after sending (no processed MDN) expires. Default
    /// 3600 (one hour, as the Direct delivery-notification guide suggests).
    #[serde(default = "default_processed_timeout")]
    pub processed_timeout_secs: u64,
    /// A delivery `processed` this long without a dispatched MDN expires (0: never; the
    /// dispatched MDN is optional unless the recipient honours the final-delivery request).
    #[serde(default)]
    pub dispatched_timeout_secs: u64,
    /// How often the expiry pass runs (apart from the mailbox, which is watched with IDLE or
    /// polled every `mailbox.poll_interval_secs`).
    #[serde(default = "default_expiry_interval")]
    pub expiry_interval_secs: u64,
    /// In `sign` mode, accept unsigned DSNs (from the HISP's own MTA) as failures.
    #[serde(default)]
    pub accept_unsigned_dsns: bool,
}

/// Who signs and encrypts.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum DirectMode {
    /// We sign and encrypt (we are the security/trust agent).
    #[default]
    Sign,
    /// Plain submission over authenticated TLS; the HISP signs and encrypts.
    Edge,
}

/// A certificate with its private key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPair {
    pub certificate: PathBuf,
    pub private_key: Secret,
}

/// Which way a trust anchor is used.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum TrustDirection {
    /// Recipient certificates we encrypt to.
    Outbound,
    /// Signers of messages and notifications we receive.
    Inbound,
    #[default]
    Both,
}

/// Trust anchors from files (PEM, DER or a `.p7b` trust bundle).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustAnchorConfig {
    pub files: Vec<PathBuf>,
    /// Domains (of the peer's address) these anchors are for; empty: every domain.
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub direction: TrustDirection,
}

pub use switchboard_direct::discovery::options::{
    CrlMode, DnsDiscoveryConfig, LdapDiscoveryConfig, RevocationConfig,
};

/// The HISP's SMTP service (TLS and AUTH as for the email channel).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectSmtpConfig {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    #[serde(default)]
    pub tls: TlsMode,
    #[serde(default)]
    pub ca_certificate: Option<PathBuf>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    #[serde(default = "default_pool")]
    pub max_connections: u32,
}

fn default_cipher() -> String {
    "aes256-cbc".into()
}
fn default_processed_timeout() -> u64 {
    3600
}
fn default_expiry_interval() -> u64 {
    60
}
fn default_smtp_port() -> u16 {
    587
}
fn default_timeout() -> u64 {
    30
}
fn default_pool() -> u32 {
    2
}
