//! Configuration: one TOML file (`--config PATH`, optional) merged with `SWITCHBOARD_*`
//! environment overrides (nested keys joined by `__`, e.g. `SWITCHBOARD_DATABASE__URL`).
//!
//! With no file at all the daemon runs on the embedded default: SQLite at
//! `./data/switchboard.db`, HTTP on 127.0.0.1:8080, every channel routed to the local outbox
//! sink. With a file, a channel is carried only by the connector its `[channels.<name>]`
//! table names; a channel without one is refused at accept (the outbox is a test sink, used
//! only where named). `SWITCHBOARD_CONFIG` (the `--config` path) is not a configuration key. Secrets are never required inline: they are read from files, or from systemd
//! credentials (`$CREDENTIALS_DIRECTORY/<name>`); see [`Secret`].

mod alerts;
mod connectors;
mod direct;
mod fax_inbound;
mod limits;
mod organizations;
mod reminders;
mod webhooks;

pub use alerts::{AlertKind, AlertRule, AlertingConfig, MetricsConfig, parse_day};
pub use connectors::{
    ConnectorConfig, HttpConnectorConfig, ImapMailboxConfig, SmtpConnectorConfig, TlsMode,
};
pub use direct::{
    CrlMode, DirectConnectorConfig, DirectMode, DirectSmtpConfig, DnsDiscoveryConfig, KeyPair,
    LdapDiscoveryConfig, RevocationConfig, TrustAnchorConfig, TrustDirection,
};
pub use fax_inbound::FaxInboundConfig;
pub use limits::LimitsConfig;
pub use organizations::OrganizationConfig;
pub use reminders::{ReminderRule, RuleError, Touch, default_rules};
pub use webhooks::{AppListen, WebhooksConfig};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Configuration errors: reported at start-up with the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("configuration: {0}")]
    Figment(#[from] Box<figment::Error>),
    #[error("secret {name}: {source}")]
    Secret {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where state lives when paths are relative: the database, the outbox sink, the generated
    /// at-rest key. systemd's `StateDirectory` sets `$STATE_DIRECTORY`, which wins when set.
    pub data_dir: PathBuf,
    /// Identity of this daemon in a fleet (worker names, leases). Default: the host name.
    pub node_id: Option<String>,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub security: SecurityConfig,
    pub queue: QueueConfig,
    pub log: LogConfig,
    pub outbox: OutboxConfig,
    pub hl7: Hl7Config,
    /// Per logical channel (`sms`, `email`, `fax`, `direct`, `outbox`): which connector carries it
    /// and its retry budget. Channels not listed are not carried when a file is loaded; in the
    /// embedded default they use [`ChannelConfig::default`] (the outbox sink). See
    /// [`Config::connector_for`].
    pub channels: BTreeMap<String, ChannelConfig>,
    /// Provider integrations by name (`[connectors.twilio]`, `[connectors.relay]`), referenced
    /// from `[channels.*] connector`. `outbox` is built in and needs no entry.
    pub connectors: BTreeMap<String, ConnectorConfig>,
    /// Per-organization settings by slug (`[organizations.clinic]`). Organizations not listed
    /// use [`OrganizationConfig::default`].
    pub organizations: BTreeMap<String, OrganizationConfig>,
    pub templates: TemplatesConfig,
    pub reminders: RemindersConfig,
    /// Attachment sizes, counts and types.
    pub limits: LimitsConfig,
    /// Webhooks out, the event stream, app events in.
    pub webhooks: WebhooksConfig,
    /// Received faxes: document size, media download, retries.
    pub fax_inbound: FaxInboundConfig,
    /// How long records that grow with traffic are kept.
    pub retention: RetentionConfig,
    /// How often the database-derived gauges of `/metrics` are refreshed.
    pub metrics: MetricsConfig,
    /// Where alert notices go.
    pub alerting: AlertingConfig,
    /// Alert rules (`[[alerts]]`).
    pub alerts: Vec<AlertRule>,
    /// Whether a channel without a `[channels.*]` table goes to the outbox sink: true for the
    /// embedded default (no file) and for [`Config::from_toml`] (tests build on it), false
    /// once [`Config::load`] reads a file. Not a configuration key.
    #[serde(skip)]
    pub implicit_outbox: bool,
}

/// How long records that grow with traffic are kept, in days, and how the maintenance pass
/// prunes them. `0` keeps a kind forever. Messages, deliveries, patients, appointments and
/// attachments are the organization's records and are not pruned here.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// How often the pass runs (once across a fleet: it holds the `retention` lease), seconds.
    pub interval_secs: u64,
    /// Rows deleted per statement; each batch is its own short transaction, so writers are
    /// never held behind a long delete.
    pub batch_size: u32,
    /// The event feed (`/v1/events`, webhooks): an event is pruned only when every webhook
    /// endpoint has passed it. A feed reader that falls further behind loses events.
    pub events_days: u32,
    /// Each delivery's status history (`delivery_events`).
    pub delivery_events_days: u32,
    /// Idempotency keys of accepted messages (a repeat after this is a new message).
    pub idempotency_keys_days: u32,
    /// The HL7 archive: raw messages that were applied (errors and rejections stay until
    /// reprocessed, then age like the rest).
    pub hl7_days: u32,
    /// The raw bytes of inbound items that were filed, resolved or dismissed (the row, its
    /// steps and the filed message stay), and of operator-only orphans.
    pub inbound_raw_days: u32,
    /// Provider webhook event ids kept to refuse replays, and delivered webhook deliveries.
    pub webhook_records_days: u32,
    /// Finished jobs of the job queue.
    pub jobs_days: u32,
    /// The audit log. HIPAA asks for six years: a value under 2190 is refused; 0 (the
    /// default) keeps it forever.
    pub audit_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            interval_secs: 3600,
            batch_size: 1000,
            events_days: 90,
            delivery_events_days: 400,
            idempotency_keys_days: 90,
            hl7_days: 90,
            inbound_raw_days: 90,
            webhook_records_days: 30,
            jobs_days: 7,
            audit_days: 0,
        }
    }
}

/// Six years, the shortest audit retention accepted.
pub const MIN_AUDIT_DAYS: u32 = 2190;

/// The scheduled reminder run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemindersConfig {
    pub enabled: bool,
    /// When runs start (plan, then send what is due): a cron expression in UTC with the
    /// seconds field first (`sec min hour day-of-month month day-of-week [year]`). On a fleet
    /// one daemon runs at a time. A daemon also runs once at start-up.
    pub schedule: String,
    /// How far ahead touches are recorded: a touch gets its row (what the send step picks up)
    /// once its appointment starts within this many hours plus the touch's lead, so at least
    /// this long before it is due. Touches further out are computed when asked for (`reminders
    /// why`, the API) and recorded as they come into the window. 1 to 8,760.
    pub plan_ahead_hours: u32,
}

/// Longest `reminders.plan_ahead_hours` (a year).
pub const MAX_PLAN_AHEAD_HOURS: u32 = 8_760;

impl Default for RemindersConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            schedule: "0 * * * * *".into(),
            plan_ahead_hours: 24,
        }
    }
}

impl RemindersConfig {
    /// `plan_ahead_hours` in milliseconds.
    pub fn plan_ahead_ms(&self) -> i64 {
        i64::from(self.plan_ahead_hours.clamp(1, MAX_PLAN_AHEAD_HOURS)) * 3_600_000
    }

    /// The parsed `schedule`; refused when it does not parse or never fires.
    pub fn cron_schedule(&self) -> Result<cron::Schedule, ConfigError> {
        let invalid = |reason: String| {
            ConfigError::Invalid(format!(
                "reminders.schedule {:?}: {reason} (a cron expression with seconds first, e.g. \"0 * * * * *\")",
                self.schedule
            ))
        };
        let schedule =
            cron::Schedule::from_str(&self.schedule).map_err(|e| invalid(e.to_string()))?;
        if schedule.upcoming(chrono::Utc).next().is_none() {
            return Err(invalid("it never fires".into()));
        }
        Ok(schedule)
    }
}

/// Message templates.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemplatesConfig {
    /// A directory whose files override or add to the built-in templates (same layout as
    /// `templates/` in the source tree: `email/secure_message.en.html`, ...).
    pub dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            node_id: None,
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            security: SecurityConfig::default(),
            queue: QueueConfig::default(),
            log: LogConfig::default(),
            outbox: OutboxConfig::default(),
            hl7: Hl7Config::default(),
            channels: BTreeMap::new(),
            connectors: BTreeMap::new(),
            organizations: BTreeMap::new(),
            templates: TemplatesConfig::default(),
            reminders: RemindersConfig::default(),
            limits: LimitsConfig::default(),
            webhooks: WebhooksConfig::default(),
            fax_inbound: FaxInboundConfig::default(),
            retention: RetentionConfig::default(),
            metrics: MetricsConfig::default(),
            alerting: AlertingConfig::default(),
            alerts: Vec::new(),
            implicit_outbox: true,
        }
    }
}

/// HTTP API listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP API binds to.
    pub listen: SocketAddr,
    /// Largest accepted request body, bytes (413 above it).
    pub max_body_bytes: usize,
    /// A connection whose request head (request line and headers) has not fully arrived this
    /// long after the connection opened, or after the previous response, is closed, seconds.
    pub header_timeout_secs: u64,
    /// A request not answered this long after its head arrived gets 408 (its body had not
    /// all arrived) or 503 (it had), seconds.
    pub request_timeout_secs: u64,
    /// Requests handled at once; beyond it a request gets 503 with `Retry-After` at once.
    pub max_concurrent_requests: usize,
    /// A bearer token `GET /metrics` requires (`Authorization: Bearer <token>`), from a file or
    /// credential. Unset: `/metrics` is open to whoever reaches the listener.
    pub metrics_token: Option<Secret>,
    /// The URL operators reach this daemon at (e.g. `https://gw.example.org`). When it is
    /// `https://` (or a proxy says `X-Forwarded-Proto: https`) the console's session cookie is
    /// `Secure`.
    pub public_url: Option<String>,
    /// A console session ends after this long without a request, seconds.
    pub console_idle_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 10 * 1024 * 1024,
            header_timeout_secs: 10,
            request_timeout_secs: 60,
            max_concurrent_requests: 256,
            metrics_token: None,
            public_url: None,
            console_idle_secs: 900,
        }
    }
}

/// The store: SQLite (embedded default) or PostgreSQL (fleet).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (relative paths are under `data_dir`) or `postgres://USER@HOST/DB`.
    /// Default: `sqlite://switchboard.db` under `data_dir`.
    pub url: Option<String>,
    /// Pool size (PostgreSQL; SQLite always uses one connection: it has one writer).
    pub max_connections: u32,
    /// SQLite `synchronous` pragma: `full` (every commit reaches the disk before it is
    /// acknowledged) or `normal` (WAL default; survives a process crash, not a power cut).
    pub sqlite_synchronous: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 16,
            sqlite_synchronous: "full".into(),
        }
    }
}

/// At-rest encryption of message bodies, attachments and raw inbound items, and what
/// certificate discovery may reach on the network.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// The current AES-256-GCM key: 32 bytes, hex or base64, in a file or credential.
    /// Default: credential `at-rest-key`, else `<data_dir>/at-rest.key`, generated on first run.
    pub at_rest_key: Option<Secret>,
    /// Earlier keys, still needed to read rows sealed before a rotation.
    pub previous_keys: Vec<Secret>,
    /// Destinations Direct certificate discovery may reach although they are not public
    /// (loopback, private, link-local, ...) or use another port than 80/443 (HTTP: AIA, CRL,
    /// DNS CERT URLs) or 389/636 (LDAP), or, for LDAP, are not under the recipient's domain:
    /// `"host"` (any port) or `"host:port"`; the host as the URL or SRV record names it, or
    /// an IP address (`"127.0.0.1:18080"`, `"[::1]:8080"`). Default: none.
    pub fetch_allow: Vec<String>,
    /// Largest certificate or bundle discovery fetches (AIA, DNS CERT URL), bytes.
    /// Default 1048576 (1 MiB).
    pub fetch_max_cert_bytes: usize,
    /// Largest CRL discovery fetches, bytes. Default 10485760 (10 MiB).
    pub fetch_max_crl_bytes: usize,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            at_rest_key: None,
            previous_keys: Vec::new(),
            fetch_allow: Vec::new(),
            fetch_max_cert_bytes: crate::fetch::default_max_cert_bytes(),
            fetch_max_crl_bytes: crate::fetch::default_max_crl_bytes(),
        }
    }
}

/// The job queue (apalis on the same database) and its maintenance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// How often idle workers poll for new jobs, milliseconds.
    pub poll_interval_ms: u64,
    /// Jobs fetched per poll.
    pub batch_size: usize,
    /// How long a claimed delivery is leased to one worker before another may take it over,
    /// seconds. Must exceed the slowest channel's send timeout.
    pub lease_secs: u64,
    /// How often the sweeper looks for deliveries whose job was lost (crash between commit and
    /// enqueue, killed worker), seconds.
    pub sweep_interval_secs: u64,
    /// How long an enqueued delivery may wait before the sweeper enqueues it again, seconds.
    pub stuck_after_secs: u64,
    /// Seconds to let in-flight jobs finish on SIGTERM before exiting.
    pub shutdown_grace_secs: u64,
    /// On channels whose provider reports back (an HTTP connector with a `public_url` and
    /// status callbacks), a claim holds the delivery this much longer than the lease, seconds:
    /// if the daemon dies after the provider took the message but before the outcome was
    /// recorded, the provider's status callback gets this long to say the message went out
    /// before another daemon sends it again. 0: send again as soon as the lease ends.
    pub in_doubt_secs: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            poll_interval_ms: 200,
            batch_size: 32,
            lease_secs: 60,
            sweep_interval_secs: 15,
            stuck_after_secs: 300,
            shutdown_grace_secs: 20,
            in_doubt_secs: 120,
        }
    }
}

impl QueueConfig {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }
}

/// Logging. Log lines carry ids, never names, numbers, addresses or bodies.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// The local sink channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Directory the sink writes one file per delivery into (relative: under `data_dir`).
    pub dir: PathBuf,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("outbox"),
        }
    }
}

/// The HL7 v2 MLLP listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hl7Config {
    /// Address to listen on, e.g. "0.0.0.0:2575". Unset: no listener.
    pub listen: Option<SocketAddr>,
    /// Slug of the organization the feed belongs to (created on first start).
    pub organization: String,
    /// IANA time zone for timestamps that carry no offset.
    pub time_zone: String,
    /// PID-3 assigning authority whose identifier is the patient's external id. Unset: the
    /// first identifier of type MR, else the first identifier.
    pub identifier_authority: Option<String>,
    /// MSH-11 processing ids accepted (others get AR).
    pub processing_ids: Vec<String>,
    /// Largest frame accepted, bytes; a larger one gets AR and the connection stays usable.
    pub max_frame_bytes: usize,
    /// A connection silent this long is closed, seconds.
    pub idle_timeout_secs: u64,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// MLLP over TLS: the server certificate chain (PEM file). With `tls_key`; unset: plain TCP.
    pub tls_certificate: Option<PathBuf>,
    /// The certificate's private key (PKCS#8 PEM), from a file or credential.
    pub tls_key: Option<Secret>,
    /// Mutual TLS: CA certificates (PEM file) that sign the sending systems' client
    /// certificates. Set: every connection must present a certificate that chains to one of
    /// them and whose subject is in `allowed_subjects`. Needs `tls_certificate`.
    pub tls_client_ca: Option<PathBuf>,
    /// Subjects of the client certificates accepted with `tls_client_ca`, each written as
    /// comma-separated `ATTR=value` pairs in any order (`"CN=ehr.clinic.example,O=North"`;
    /// a comma inside a value is written `\,`). A certificate matches an entry when its subject
    /// has exactly those attributes and values.
    pub allowed_subjects: Vec<String>,
    /// Source addresses allowed to connect: IP addresses or CIDR blocks
    /// (`["127.0.0.1", "10.0.0.0/8"]`). Empty: any source (only for a loopback `listen`, or
    /// with mutual TLS). Other sources are disconnected before anything is read.
    pub allow_from: Vec<String>,
}

impl Default for Hl7Config {
    fn default() -> Self {
        Self {
            listen: None,
            organization: "default".into(),
            time_zone: "UTC".into(),
            identifier_authority: None,
            processing_ids: vec!["P".into(), "T".into(), "D".into()],
            max_frame_bytes: 1024 * 1024,
            idle_timeout_secs: 300,
            max_connections: 64,
            tls_certificate: None,
            tls_key: None,
            tls_client_ca: None,
            allowed_subjects: Vec::new(),
            allow_from: Vec::new(),
        }
    }
}

impl Hl7Config {
    /// Who may connect: the allow-list and client subjects parse, mutual TLS is complete, and
    /// a listener reachable from other hosts has at least one of the two.
    fn check_access(&self) -> Result<(), ConfigError> {
        let invalid = ConfigError::Invalid;
        let allow = crate::hl7::access::SourceAllowList::parse(&self.allow_from)
            .map_err(|e| invalid(format!("hl7.allow_from: {e}")))?;
        for subject in &self.allowed_subjects {
            crate::hl7::access::SubjectPattern::parse(subject)
                .map_err(|e| invalid(format!("hl7.allowed_subjects {subject:?}: {e}")))?;
        }
        if self.tls_client_ca.is_some() && self.tls_certificate.is_none() {
            return Err(invalid(
                "hl7.tls_client_ca needs hl7.tls_certificate and hl7.tls_key (mutual TLS is TLS first)"
                    .into(),
            ));
        }
        if self.tls_client_ca.is_some() && self.allowed_subjects.is_empty() {
            return Err(invalid(
                "hl7.tls_client_ca needs hl7.allowed_subjects: the subjects of the sending systems' \
                 certificates, e.g. [\"CN=ehr.clinic.example\"]"
                    .into(),
            ));
        }
        if !self.allowed_subjects.is_empty() && self.tls_client_ca.is_none() {
            return Err(invalid(
                "hl7.allowed_subjects needs hl7.tls_client_ca (the CA that signs those certificates)"
                    .into(),
            ));
        }
        if let Some(listen) = self.listen
            && !listen.ip().is_loopback()
            && self.tls_client_ca.is_none()
            && allow.is_empty()
        {
            return Err(invalid(format!(
                "hl7.listen {listen} is reachable from other hosts, but anyone who reaches it could \
                 change patients' contact details: set hl7.allow_from to the sending systems' \
                 addresses (e.g. [\"10.1.2.3\", \"10.20.0.0/16\"]), or require client certificates \
                 with hl7.tls_client_ca and hl7.allowed_subjects, or bind hl7.listen to 127.0.0.1"
            )));
        }
        Ok(())
    }
}

/// One logical channel: its connector and retry budget.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelConfig {
    /// Which connector carries this channel: a `[connectors.<name>]`, or `outbox`, the local
    /// test sink (nothing leaves the host). Required in a table of a configuration file.
    #[serde(default)]
    pub connector: String,
    /// Attempts before a delivery is failed and dead-lettered.
    pub max_attempts: u32,
    /// Deliveries of this channel sent at once by one daemon.
    pub concurrency: usize,
    /// First retry delay, milliseconds; doubles each attempt, with ±20 % jitter.
    pub backoff_initial_ms: u64,
    /// Upper bound of the retry delay, seconds.
    pub backoff_max_secs: u64,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            connector: "outbox".into(),
            max_attempts: 8,
            concurrency: 32,
            backoff_initial_ms: 2_000,
            backoff_max_secs: 3_600,
        }
    }
}

/// A secret value that lives outside the config file. Written in TOML as
/// `{ file = "/etc/switchboard/key" }` or `{ credential = "at-rest-key" }` (read from
/// `$CREDENTIALS_DIRECTORY`). It holds only where the value is, never the value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    pub file: Option<PathBuf>,
    pub credential: Option<String>,
}

impl Secret {
    /// Where the secret is read from.
    pub fn path(&self) -> Result<PathBuf, ConfigError> {
        match (&self.file, &self.credential) {
            (Some(file), None) => Ok(file.clone()),
            (None, Some(name)) => credential_path(name).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "credential {name} requested but $CREDENTIALS_DIRECTORY is not set and \
                     {HOST_CREDENTIALS}/{name} does not exist"
                ))
            }),
            _ => Err(ConfigError::Invalid(
                "a secret needs exactly one of `file` or `credential`".into(),
            )),
        }
    }

    /// Reads the secret, trimmed of surrounding whitespace.
    pub fn read(&self) -> Result<String, ConfigError> {
        let path = self.path()?;
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(|source| ConfigError::Secret {
                name: path.display().to_string(),
                source,
            })
    }
}

/// Where the unit's `LoadCredential=` lines read credentials from on the host.
pub const HOST_CREDENTIALS: &str = "/etc/switchboard/credentials";

/// `$CREDENTIALS_DIRECTORY/<name>` when systemd passed credentials to us; else, for admin
/// commands run on the host (no `$CREDENTIALS_DIRECTORY`), the file the unit loads it from,
/// [`HOST_CREDENTIALS`]`/<name>`, when it exists — so they hold the daemon's at-rest key.
pub fn credential_path(name: &str) -> Option<PathBuf> {
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) => Some(Path::new(&dir).join(name)),
        None => Some(Path::new(HOST_CREDENTIALS).join(name)).filter(|p| p.exists()),
    }
}

impl Config {
    /// Loads the file (if any), then the `SWITCHBOARD_*` environment, then resolves paths.
    /// With a file, channels without a `[channels.*]` table are not configured (no outbox).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        // SWITCHBOARD_CONFIG is the file's path (`--config`), not a key of the file.
        figment = figment.merge(
            Env::prefixed("SWITCHBOARD_")
                .ignore(&["config"])
                .split("__"),
        );
        let mut config: Config = figment.extract().map_err(Box::new)?;
        config.implicit_outbox = path.is_none();
        config.resolve();
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document (tests, `--check`), without the environment. Channels without a
    /// `[channels.*]` table keep the outbox sink, as in the embedded default (tests rely on
    /// it); set `implicit_outbox = false` to get a configuration file's behaviour.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let mut config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(Box::new)?;
        config.implicit_outbox = true;
        config.resolve();
        config.validate()?;
        Ok(config)
    }

    fn resolve(&mut self) {
        if let Some(state) = std::env::var_os("STATE_DIRECTORY") {
            // systemd may pass several, colon-separated; the first is ours.
            let first = state.to_string_lossy().split(':').next().map(PathBuf::from);
            if let Some(dir) = first.filter(|_| self.data_dir == Path::new("data")) {
                self.data_dir = dir;
            }
        }
        if self.outbox.dir.is_relative() {
            self.outbox.dir = self.data_dir.join(&self.outbox.dir);
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.retention.audit_days != 0 && self.retention.audit_days < MIN_AUDIT_DAYS {
            return Err(ConfigError::Invalid(format!(
                "retention.audit_days must be 0 (forever) or at least {MIN_AUDIT_DAYS} (six years), \
                 not {}",
                self.retention.audit_days
            )));
        }
        if self.retention.batch_size == 0 || self.retention.interval_secs == 0 {
            return Err(ConfigError::Invalid(
                "retention.batch_size and retention.interval_secs must be at least 1".into(),
            ));
        }
        if !(1..=MAX_PLAN_AHEAD_HOURS).contains(&self.reminders.plan_ahead_hours) {
            return Err(ConfigError::Invalid(format!(
                "reminders.plan_ahead_hours must be from 1 to {MAX_PLAN_AHEAD_HOURS}, not {}",
                self.reminders.plan_ahead_hours
            )));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid(format!(
                "log.format must be text or json, not {:?}",
                self.log.format
            )));
        }
        crate::logging::check_level(&self.log.level)
            .map_err(|reason| ConfigError::Invalid(format!("log.level: {reason}")))?;
        if !matches!(self.database.sqlite_synchronous.as_str(), "full" | "normal") {
            return Err(ConfigError::Invalid(
                "database.sqlite_synchronous must be full or normal".into(),
            ));
        }
        for (name, channel) in &self.channels {
            if name.parse::<crate::domain::Channel>().is_err() {
                return Err(ConfigError::Invalid(format!(
                    "unknown channel [channels.{name}]; known: {}",
                    crate::domain::Channel::NAMES.join(", ")
                )));
            }
            if channel.max_attempts == 0 || channel.concurrency == 0 {
                return Err(ConfigError::Invalid(format!(
                    "channels.{name}: max_attempts and concurrency must be at least 1"
                )));
            }
            if channel.connector.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "channels.{name}.connector is required: name a [connectors.<name>] \
                     (or \"outbox\", the local test sink that sends nothing)"
                )));
            }
            if channel.connector != "outbox" && !self.connectors.contains_key(&channel.connector) {
                let known: Vec<&str> = self.connectors.keys().map(String::as_str).collect();
                return Err(ConfigError::Invalid(format!(
                    "channels.{name}.connector: no connector named {:?} (configured: outbox{}{})",
                    channel.connector,
                    if known.is_empty() { "" } else { ", " },
                    known.join(", ")
                )));
            }
        }
        if self.hl7.time_zone.parse::<chrono_tz::Tz>().is_err() {
            return Err(ConfigError::Invalid(format!(
                "hl7.time_zone {:?} is not an IANA time zone",
                self.hl7.time_zone
            )));
        }
        if self.hl7.tls_certificate.is_some() != self.hl7.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "hl7.tls_certificate and hl7.tls_key go together".into(),
            ));
        }
        self.hl7.check_access()?;
        self.limits.check()?;
        self.alerting.check(&self.alerts)?;
        if self.metrics.refresh_secs == 0 {
            return Err(ConfigError::Invalid(
                "metrics.refresh_secs must be at least 1".into(),
            ));
        }
        for (name, connector) in &self.connectors {
            if name == "outbox" {
                return Err(ConfigError::Invalid(
                    "connectors.outbox: the name is taken by the built-in sink".into(),
                ));
            }
            if let ConnectorConfig::Smtp(smtp) = connector
                && smtp.from.parse::<lettre::message::Mailbox>().is_err()
            {
                return Err(ConfigError::Invalid(format!(
                    "connectors.{name}.from {:?} is not an email address",
                    smtp.from
                )));
            }
        }
        for (slug, org) in &self.organizations {
            if org.time_zone.parse::<chrono_tz::Tz>().is_err() {
                return Err(ConfigError::Invalid(format!(
                    "organizations.{slug}.time_zone {:?} is not an IANA time zone",
                    org.time_zone
                )));
            }
            for (key, value) in [
                ("quiet_hours_start", &org.quiet_hours_start),
                ("quiet_hours_end", &org.quiet_hours_end),
            ] {
                if crate::reminders::schedule::parse_clock(value).is_none() {
                    return Err(ConfigError::Invalid(format!(
                        "organizations.{slug}.{key} {value:?} is not a time of day (HH:MM, e.g. \"08:00\")"
                    )));
                }
            }
            for (i, rule) in org.reminder_rules.iter().enumerate() {
                rule.check().map_err(|reason| {
                    ConfigError::Invalid(format!(
                        "organizations.{slug}.reminder_rules[{i}] (id {:?}): {reason}",
                        rule.id
                    ))
                })?;
            }
        }
        crate::tenancy::Tenancy::from_config(self)?;
        self.webhooks
            .check_app_listen(!self.database_url().starts_with("sqlite:"))
            .map_err(ConfigError::Invalid)?;
        self.reminders.cron_schedule()?;
        crate::fetch::parse_allow(&self.security.fetch_allow).map_err(ConfigError::Invalid)?;
        if self.security.fetch_max_cert_bytes == 0 || self.security.fetch_max_crl_bytes == 0 {
            return Err(ConfigError::Invalid(
                "security.fetch_max_cert_bytes and security.fetch_max_crl_bytes must be at least 1"
                    .into(),
            ));
        }
        if self.queue.batch_size == 0 {
            return Err(ConfigError::Invalid(
                "queue.batch_size must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The database URL with relative SQLite paths placed under `data_dir`.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            None => format!(
                "sqlite://{}",
                self.data_dir.join("switchboard.db").display()
            ),
            Some(url) => match url.strip_prefix("sqlite://") {
                Some(path) if !path.starts_with('/') && !path.starts_with(':') => {
                    format!("sqlite://{}", self.data_dir.join(path).display())
                }
                _ => url.clone(),
            },
        }
    }

    /// The channel's settings (defaults when not configured).
    pub fn channel(&self, name: &str) -> ChannelConfig {
        self.channels.get(name).cloned().unwrap_or_default()
    }

    /// The connector that carries a channel: the one its `[channels.<name>]` names, else the
    /// outbox sink in the embedded default, else none (the channel is not configured and
    /// messages on it are refused at accept).
    pub fn connector_for(&self, channel: &str) -> Option<String> {
        match self.channels.get(channel) {
            Some(configured) if !configured.connector.is_empty() => {
                Some(configured.connector.clone())
            }
            Some(_) | None => self.implicit_outbox.then(|| "outbox".to_string()),
        }
    }

    /// Settings of the organization with this slug.
    pub fn organization(&self, slug: &str) -> OrganizationConfig {
        self.organizations.get(slug).cloned().unwrap_or_default()
    }

    /// This daemon's name in the fleet.
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "switchboard".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_the_embedded_default() {
        let config = Config::from_toml("").expect("empty config");
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.database_url(), "sqlite://data/switchboard.db");
        assert_eq!(config.channel("sms").connector, "outbox");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::from_toml("[server]\nlisten_port = 1\n").expect_err("unknown key");
        assert!(err.to_string().contains("listen_port"), "{err}");
    }

    #[test]
    fn app_listen_on_sqlite_is_refused() {
        let err = Config::from_toml(
            "[webhooks]\napp_listen = [{ channel = \"pm_events\", organization = \"north\" }]\n",
        )
        .expect_err("app_listen on SQLite");
        assert!(
            err.to_string().contains("app_listen needs PostgreSQL"),
            "{err}"
        );
        let config = Config::from_toml(
            "[database]\nurl = \"postgres://sb@127.0.0.1/sb\"\n[webhooks]\napp_listen = [{ channel = \"pm_events\", organization = \"north\" }]\n",
        )
        .expect("app_listen on PostgreSQL");
        assert_eq!(config.webhooks.app_listen[0].channel, "pm_events");
        let err = Config::from_toml(
            "[database]\nurl = \"postgres://sb@127.0.0.1/sb\"\n[webhooks]\napp_listen = [{ channel = \"pm-events\", organization = \"north\" }]\n",
        )
        .expect_err("bad channel");
        assert!(
            err.to_string().contains("webhooks.app_listen[0].channel"),
            "{err}"
        );
    }

    #[test]
    fn unknown_channels_are_refused() {
        let err = Config::from_toml("[channels.pager]\nconnector = \"outbox\"\n")
            .expect_err("unknown channel");
        assert!(err.to_string().contains("pager"), "{err}");
    }
}
