//! `[webhooks]`: signed event delivery to the messaging app (Standard Webhooks), the live
//! event stream, and the app's own events coming in (`POST /v1/app-events`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Secret;

/// Webhooks out, the event stream, app events in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Hosts a webhook endpoint may name, exactly as the URL writes them (a DNS name or an IP
    /// address, compared without case; `"[::1]"` for IPv6). Tenants cannot aim the daemon at
    /// anything else: an endpoint on another host is refused (422, pointer `/url`) and never
    /// contacted. Both `https` and `http` are accepted, since every host here is one the
    /// operator vouches for (the app is usually on a private network); prefer `https` off
    /// the machine. Default: none (no endpoint can be created).
    pub allow_hosts: Vec<String>,
    /// Whether this daemon runs the dispatcher (on a fleet every daemon may; deliveries are
    /// leased one at a time).
    pub dispatch: bool,
    /// One delivery attempt's time limit (connect, send, answer), seconds.
    pub timeout_secs: u64,
    /// How long a failing event is retried before it is dead-lettered, seconds (~24 h).
    pub retry_window_secs: u64,
    /// The wait after the first failed attempt; each further failure triples it,
    /// milliseconds.
    pub backoff_initial_ms: u64,
    /// The longest wait between two attempts, seconds.
    pub backoff_max_secs: u64,
    /// Deliveries sent at once by one daemon.
    pub concurrency: usize,
    /// After a secret rotation, how long the previous secret still signs too (both
    /// signatures are sent, space-separated), seconds. A rotation request may ask for less.
    pub rotation_overlap_secs: u64,
    /// How often an open `GET /v1/events/stream` sends a keep-alive comment, seconds.
    pub stream_keepalive_secs: u64,
    /// Secrets (`whsec_…`, Standard Webhooks form) the messaging app signs
    /// `POST /v1/app-events` with, by organization slug: a request signed with one is that
    /// organization's (no API key needed). Unset: app events need a `send` key.
    pub app_secrets: BTreeMap<String, Secret>,
    /// On PostgreSQL, channels the daemon `LISTEN`s on for the app's events (the same JSON
    /// `POST /v1/app-events` takes, as a `NOTIFY` payload), each bound to the organization
    /// it names: the channel, operator configuration, is what binds it, never the payload.
    /// `NOTIFY` is not durable (what is sent while no daemon listens is lost): a low-latency
    /// path beside the POST, not instead of it. Refused at start-up on SQLite.
    pub app_listen: Vec<AppListen>,
}

/// One `[webhooks] app_listen` entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AppListen {
    /// The PostgreSQL channel (an unquoted identifier: lowercase letters, digits and `_`,
    /// not starting with a digit, at most 63 bytes).
    pub channel: String,
    /// The organization (slug) its events belong to; created when absent, as for `[hl7]`.
    pub organization: String,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allow_hosts: Vec::new(),
            dispatch: true,
            timeout_secs: 10,
            retry_window_secs: 24 * 3600,
            backoff_initial_ms: 5_000,
            backoff_max_secs: 4 * 3600,
            concurrency: 16,
            rotation_overlap_secs: 24 * 3600,
            stream_keepalive_secs: 15,
            app_secrets: BTreeMap::new(),
            app_listen: Vec::new(),
        }
    }
}

impl WebhooksConfig {
    /// Whether a URL's host is on the allow-list.
    pub fn allows_host(&self, host: &str) -> bool {
        self.allow_hosts
            .iter()
            .any(|allowed| allowed.trim().eq_ignore_ascii_case(host))
    }

    /// `app_listen` as start-up accepts it: valid channel names, each once, an organization
    /// each, and a PostgreSQL database.
    pub fn check_app_listen(&self, postgres: bool) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, entry) in self.app_listen.iter().enumerate() {
            if !is_identifier(&entry.channel) {
                return Err(format!(
                    "webhooks.app_listen[{i}].channel {:?} is not a PostgreSQL channel name \
                     (lowercase letters, digits and _, not starting with a digit, at most 63 bytes)",
                    entry.channel
                ));
            }
            if !seen.insert(entry.channel.as_str()) {
                return Err(format!(
                    "webhooks.app_listen[{i}].channel {:?} is listed twice; a channel belongs to one organization",
                    entry.channel
                ));
            }
            if entry.organization.trim().is_empty() {
                return Err(format!(
                    "webhooks.app_listen[{i}].organization is required (an organization slug)"
                ));
            }
        }
        if !self.app_listen.is_empty() && !postgres {
            return Err(
                "webhooks.app_listen needs PostgreSQL (LISTEN/NOTIFY); the database is SQLite: \
                 have the app POST /v1/app-events instead"
                    .into(),
            );
        }
        Ok(())
    }
}

/// An unquoted PostgreSQL identifier, lowercase (what `pg_notify('name', …)` and `LISTEN name`
/// agree on without quoting).
fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
        && name.len() <= 63
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(channel: &str) -> WebhooksConfig {
        WebhooksConfig {
            app_listen: vec![AppListen {
                channel: channel.into(),
                organization: "north".into(),
            }],
            ..WebhooksConfig::default()
        }
    }

    #[test]
    fn app_listen_channels_are_identifiers() {
        assert_eq!(listen("pm_events").check_app_listen(true), Ok(()));
        assert_eq!(listen("_pm2").check_app_listen(true), Ok(()));
        for bad in [
            "",
            "1pm",
            "PM_events",
            "pm-events",
            "pm events",
            "pm\"x",
            &"a".repeat(64),
        ] {
            let err = listen(bad).check_app_listen(true).expect_err(bad);
            assert!(err.contains("webhooks.app_listen[0].channel"), "{err}");
        }
    }

    #[test]
    fn app_listen_needs_postgres() {
        let err = listen("pm_events")
            .check_app_listen(false)
            .expect_err("sqlite");
        assert!(err.contains("app_listen needs PostgreSQL"), "{err}");
        assert_eq!(WebhooksConfig::default().check_app_listen(false), Ok(()));
    }
}
