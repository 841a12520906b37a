//! `[connectors.<name>]`: provider integrations. Each has a `kind`: `smtp` (an SMTP relay,
//! through lettre), `direct` (a Direct HISP; see `direct.rs`) or `http` (a provider
//! described by a manifest in `connectors/*.toml`).
//! Credentials are [`Secret`]s: files or systemd credentials, never inline values.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Secret;

/// One connector.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
// Built once at start-up; boxing would only complicate matching.
#[allow(clippy::large_enum_variant)]
pub enum ConnectorConfig {
    Smtp(SmtpConnectorConfig),
    Http(HttpConnectorConfig),
    Direct(super::DirectConnectorConfig),
}

pub use switchboard_mail::TlsMode;

/// An SMTP relay for the email channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConnectorConfig {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    #[serde(default)]
    pub tls: TlsMode,
    /// Extra CA certificate (PEM) to trust for the relay, e.g. a private CA.
    #[serde(default)]
    pub ca_certificate: Option<PathBuf>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// Envelope sender and `From` when the organization sets none.
    pub from: String,
    /// Domain for `Message-ID`s (and VERP return paths). Default: the domain of `from`.
    #[serde(default)]
    pub domain: Option<String>,
    /// Messages per second through this relay (0 = unlimited).
    #[serde(default)]
    pub rate_per_sec: f64,
    /// Open SMTP connections kept in the pool.
    #[serde(default = "default_pool")]
    pub max_connections: u32,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Use a per-delivery return path `<local>+<delivery id>@<domain>` (VERP) so bounces
    /// identify the delivery even when the DSN loses the original headers.
    #[serde(default = "default_true")]
    pub verp: bool,
    /// Where bounces (DSNs) arrive; polled over IMAP.
    #[serde(default)]
    pub bounces: Option<ImapMailboxConfig>,
}

/// An IMAP mailbox that is watched: IMAP IDLE (RFC 2177) when the server offers it and `idle`
/// is on, polling every `poll_interval_secs` otherwise.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapMailboxConfig {
    pub host: String,
    #[serde(default = "default_imap_port")]
    pub port: u16,
    #[serde(default)]
    pub tls: TlsMode,
    #[serde(default)]
    pub ca_certificate: Option<PathBuf>,
    pub username: String,
    pub password: Secret,
    #[serde(default = "default_inbox")]
    pub mailbox: String,
    /// Without IDLE: the time between polls. With IDLE: the longest wait before looking
    /// again anyway (IDLE is re-issued at least every 25 minutes).
    #[serde(default = "default_poll")]
    pub poll_interval_secs: u64,
    /// Wait with IMAP IDLE when the server lists it in CAPABILITY (default true).
    #[serde(default = "default_true")]
    pub idle: bool,
    /// Most bytes (response lines and literals together) one command's answer may bring;
    /// past it the session is dropped with an error. Default 64 MiB.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Most untagged responses one command's answer may bring; past it the session is
    /// dropped with an error. Default 10,000.
    #[serde(default = "default_max_untagged")]
    pub max_untagged_responses: usize,
}

/// An HTTP provider described by a manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConnectorConfig {
    /// A manifest name (`twilio` → `connectors/twilio.toml`) or a path to one.
    pub manifest: String,
    /// Overrides the manifest's base URL (a regional endpoint, a test server).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Values the manifest's templates may use as `{{ params.<name> }}` (account id, sender
    /// number, messaging profile...). Not secret.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Secret values the manifest's auth and signature schemes use (`auth_token`, `api_key`...).
    #[serde(default)]
    pub credentials: BTreeMap<String, Secret>,
    /// The public base URL providers reach this daemon at; status-callback URLs are built from
    /// it and signatures are checked against it (`https://gw.example.org`).
    #[serde(default)]
    pub public_url: Option<String>,
    /// The organization (slug) that owns this connector outright: inbound messages to numbers
    /// no organization claims in `organizations.<slug>.numbers` are filed into it. Unset (a
    /// connector shared by several organizations): inbound items are routed only by the number
    /// they were sent to, and kept as orphans when no organization owns it.
    #[serde(default)]
    pub organization: Option<String>,
    /// Requests per second to this provider (0 = unlimited).
    #[serde(default)]
    pub rate_per_sec: f64,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// A delivery still `sent` this long after sending is looked up at the provider (some
    /// carriers never send receipts). 0 turns reconciliation off.
    #[serde(default = "default_reconcile")]
    pub reconcile_after_secs: u64,
    /// Fax connectors whose provider fetches the document (`send.document = "media_url"`):
    /// how long its URL works, seconds (it also works for one fetch only).
    #[serde(default = "default_media_ttl")]
    pub media_ttl_secs: u64,
}

fn default_smtp_port() -> u16 {
    587
}
fn default_imap_port() -> u16 {
    993
}
fn default_pool() -> u32 {
    4
}
fn default_timeout() -> u64 {
    30
}
fn default_media_ttl() -> u64 {
    crate::fax::DEFAULT_MEDIA_TTL_SECS
}
fn default_reconcile() -> u64 {
    6 * 3600
}
fn default_true() -> bool {
    true
}
fn default_inbox() -> String {
    "INBOX".into()
}
fn default_max_response_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_max_untagged() -> usize {
    10_000
}
fn default_poll() -> u64 {
    60
}
