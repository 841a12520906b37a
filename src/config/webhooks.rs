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
}
