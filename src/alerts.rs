//! Alerts: the `[[alerts]]` rules evaluated every `[alerting] evaluate_secs` over the state
//! `/metrics` keeps (the process's counters in `crate::metrics`, the daemon's refreshed
//! gauges) — never a scan of the tables — by the daemon that holds the `alerts` lease (once
//! across a fleet).
//!
//! Each rule yields the subjects it fires for (a channel and connector, a channel's queue, the
//! dead letters, the HL7 feed, a certificate). A subject that starts or stops firing is a
//! transition recorded in `alert_states`; a transition is announced once — one notice when it
//! starts firing, one when it resolves — by whoever claims it (one conditional `UPDATE`), and
//! not within `[alerting] min_interval_secs` of the subject's previous notice (a resolve whose
//! firing was never announced is not announced either). So a channel failing through hundreds
//! of retries is one notice, a restart or a second daemon re-sends nothing, and a flapping
//! channel sends at most one notice per interval. Notices go by email (through an SMTP
//! connector) and/or as a Standard Webhooks-signed POST; they name rules, channels,
//! connectors and certificates, and carry counts and times — never a recipient, a reason text
//! or anything of a message (no PHI).
//!
//! `channel_failing` reads this process's view of deliveries (the lease holder's): after the
//! lease moves, the new holder starts from what it sees.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Datelike, TimeZone};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{AlertKind, AlertRule, Config, ConnectorConfig, parse_day};
use crate::messages::rfc3339;
use crate::metrics::Gauges;
use crate::store::{Store, StoreError, now_ms};

/// The lease the evaluator holds.
pub const LEASE: &str = "alerts";

/// What an evaluation found wrong with the configuration or a peer.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("alerting: {0}")]
    Config(String),
}

/// A notice as operators receive it (the webhook's JSON body; the email's lines).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Notice {
    /// `alert.firing` or `alert.resolved`.
    #[serde(rename = "type")]
    pub kind: String,
    /// RFC 3339.
    pub timestamp: String,
    pub data: NoticeData,
}

/// What fired or resolved.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NoticeData {
    pub rule: String,
    /// The rule's kind (`channel_failing`, …).
    pub kind: String,
    /// What it fires for: `sms/twilio`, `fax`, `dead_letters`, `hl7`, a certificate.
    pub subject_id: String,
    /// Counts and times, no PHI.
    pub detail: String,
    /// When it started firing (or resolved), RFC 3339.
    pub since: String,
    /// The daemon that sent it.
    pub node: String,
}

/// The evaluator.
#[derive(Clone)]
pub struct Alerter {
    store: Store,
    config: Arc<Config>,
    gauges: Gauges,
    holder: String,
    http: reqwest::Client,
    webhook: Option<(String, Vec<u8>)>,
    email: Option<Email>,
    /// The evaluator's start (ms): an HL7 feed silent since then counts as silent.
    started_at: i64,
}

#[derive(Clone)]
struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: lettre::message::Mailbox,
    to: Vec<lettre::message::Mailbox>,
}

impl Alerter {
    /// Reads the notice targets (the webhook secret, the SMTP connector). `None` when no rule is
    /// configured.
    pub fn new(
        store: Store,
        config: Arc<Config>,
        gauges: Gauges,
        holder: String,
    ) -> Result<Option<Self>, AlertError> {
        if config.alerts.is_empty() {
            return Ok(None);
        }
        let alerting = &config.alerting;
        let webhook = match (&alerting.webhook_url, &alerting.webhook_secret) {
            (Some(url), Some(secret)) => {
                let text = secret
                    .read()
                    .map_err(|e| AlertError::Config(format!("webhook_secret: {e}")))?;
                let key = crate::webhooks::signature::secret_key(&text).ok_or_else(|| {
                    AlertError::Config("webhook_secret is not a whsec_ secret".into())
                })?;
                Some((url.clone(), key))
            }
            _ => None,
        };
        let email = if alerting.email_to.is_empty() {
            None
        } else {
            let name = alerting
                .email_connector
                .clone()
                .or_else(|| config.channels.get("email").map(|c| c.connector.clone()))
                .ok_or_else(|| {
                    AlertError::Config(
                        "email_to needs email_connector (or a [channels.email] connector)".into(),
                    )
                })?;
            let Some(ConnectorConfig::Smtp(smtp)) = config.connectors.get(&name) else {
                return Err(AlertError::Config(format!(
                    "email_connector {name:?} is not an SMTP connector"
                )));
            };
            let transport = crate::channels::email::transport::smtp_transport(smtp)
                .map_err(|e| AlertError::Config(format!("email_connector {name}: {e}")))?;
            let from = smtp
                .from
                .parse()
                .map_err(|_| AlertError::Config(format!("connectors.{name}.from")))?;
            let to = alerting
                .email_to
                .iter()
                .filter_map(|t| t.parse().ok())
                .collect();
            Some(Email {
                transport,
                from,
                to,
            })
        };
        if webhook.is_none() && email.is_none() {
            warn!(
                "[[alerts]] are configured without email_to or webhook_url: notices are only logged"
            );
        }
        let http = crate::http_client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| AlertError::Config(format!("HTTP client: {e}")))?;
        Ok(Some(Self {
            store,
            config,
            gauges,
            holder,
            http,
            webhook,
            email,
            started_at: now_ms(),
        }))
    }

    /// Evaluates every `[alerting] evaluate_secs` while holding the `alerts` lease, until
    /// `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let every = Duration::from_secs(self.config.alerting.evaluate_secs.max(1));
        let ttl_ms = i64::try_from(every.as_millis().saturating_mul(3)).unwrap_or(i64::MAX);
        loop {
            match self.store.leases().take(LEASE, &self.holder, ttl_ms).await {
                Ok(true) => {
                    if let Err(e) = self.evaluate(now_ms()).await {
                        warn!(error = %e, "alert evaluation failed; the next one retries");
                    }
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "alerts lease not taken"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => {
                    let _ = self.store.leases().release(LEASE, &self.holder).await;
                    return;
                }
            }
        }
    }

    /// One evaluation at `now` (ms): records transitions, sends the notices due. Returns the
    /// notices sent.
    pub async fn evaluate(&self, now: i64) -> Result<Vec<Notice>, AlertError> {
        let states: BTreeMap<(String, String), bool> = self
            .store
            .alerts()
            .all()
            .await?
            .into_iter()
            .map(|row| ((row.rule, row.subject), row.firing))
            .collect();
        for rule in &self.config.alerts {
            let firing = self.firing(rule, now);
            for (subject, detail) in &firing {
                if states.get(&(rule.name.clone(), subject.clone())) != Some(&true) {
                    self.store
                        .alerts()
                        .transition(&rule.name, subject, true, detail, now)
                        .await?;
                }
            }
            for ((name, subject), was_firing) in &states {
                if name == &rule.name
                    && *was_firing
                    && !firing.contains_key(subject)
                    && self.known_resolved(rule, subject)
                {
                    self.store
                        .alerts()
                        .transition(&rule.name, subject, false, "resolved", now)
                        .await?;
                }
            }
        }
        let min_interval_ms = i64::try_from(self.config.alerting.min_interval_secs)
            .unwrap_or(i64::MAX / 2)
            .saturating_mul(1000);
        let mut sent = Vec::new();
        for row in self.store.alerts().all().await? {
            if row.notified {
                continue;
            }
            let Some(rule) = self.config.alerts.iter().find(|r| r.name == row.rule) else {
                continue;
            };
            if !row.firing && !row.firing_notified {
                self.store
                    .alerts()
                    .settle_quietly(&row.rule, &row.subject)
                    .await?;
                continue;
            }
            if !self
                .store
                .alerts()
                .claim_notice(&row.rule, &row.subject, row.firing, now, min_interval_ms)
                .await?
            {
                continue;
            }
            let notice = Notice {
                kind: if row.firing {
                    "alert.firing"
                } else {
                    "alert.resolved"
                }
                .into(),
                timestamp: rfc3339(now),
                data: NoticeData {
                    rule: rule.name.clone(),
                    kind: rule.kind.as_str().into(),
                    subject_id: row.subject.clone(),
                    detail: row.detail.clone().unwrap_or_default(),
                    since: rfc3339(row.changed_at),
                    node: self.config.node_id(),
                },
            };
            match self.send(&notice).await {
                Ok(()) => {
                    info!(rule = %rule.name, subject = %row.subject, notice = %notice.kind, "alert notice sent");
                    sent.push(notice);
                }
                Err(e) => {
                    warn!(rule = %rule.name, subject = %row.subject, error = %e, "alert notice not sent; retried at the next evaluation");
                    self.store
                        .alerts()
                        .unclaim(&row.rule, &row.subject, row.firing)
                        .await?;
                }
            }
        }
        Ok(sent)
    }

    /// The subjects `rule` fires for at `now`, each with its detail.
    fn firing(&self, rule: &AlertRule, now: i64) -> BTreeMap<String, String> {
        let threshold_ms = i64::try_from(rule.threshold_secs())
            .unwrap_or(i64::MAX / 2000)
            .saturating_mul(1000);
        let channel_matches = |channel: &str| rule.channel.as_deref().is_none_or(|c| c == channel);
        let metrics = crate::metrics::metrics();
        let mut firing = BTreeMap::new();
        match rule.kind {
            AlertKind::ChannelFailing => {
                for ((channel, connector), health) in self.store.health().snapshot() {
                    let Some(since) = health.failing_since else {
                        continue;
                    };
                    if channel_matches(&channel) && now - since >= threshold_ms {
                        let subject = if connector.is_empty() {
                            channel
                        } else {
                            format!("{channel}/{connector}")
                        };
                        let last = health
                            .last_success
                            .map_or_else(|| "never (this process)".to_string(), rfc3339);
                        firing.insert(
                            subject,
                            format!(
                                "{} failures since {}; last success {last}",
                                health.failures,
                                rfc3339(since)
                            ),
                        );
                    }
                }
            }
            AlertKind::QueueAge => {
                for (channel, queue) in self.gauges.queues() {
                    let Some(oldest) = queue.oldest_created_at else {
                        continue;
                    };
                    if channel_matches(&channel) && now - oldest >= threshold_ms {
                        firing.insert(
                            channel,
                            format!(
                                "{} deliveries waiting; the oldest for {} s",
                                queue.depth,
                                (now - oldest) / 1000
                            ),
                        );
                    }
                }
            }
            AlertKind::DeadLetters => {
                let limit = rule.count.unwrap_or(0);
                if let Some(count) = self.gauges.dead_letters()
                    && count > limit
                {
                    firing.insert(
                        "dead_letters".into(),
                        format!("{count} dead letters wait for a retry (more than {limit})"),
                    );
                }
            }
            AlertKind::Hl7Silent => {
                let last = metrics
                    .hl7_last()
                    .values()
                    .copied()
                    .max()
                    .unwrap_or(self.started_at)
                    .max(self.started_at.min(now));
                if self.business_hours(now) && now - last >= threshold_ms {
                    firing.insert(
                        "hl7".into(),
                        format!(
                            "no HL7 message for {} min (last {})",
                            (now - last) / 60_000,
                            rfc3339(last)
                        ),
                    );
                }
            }
            AlertKind::CertificateExpiring => {
                let days = i64::try_from(rule.days.unwrap_or(0)).unwrap_or(i64::MAX / 86_400_000);
                for ((address, role, subject), not_after) in metrics.certificates() {
                    let expires_ms = not_after.saturating_mul(1000);
                    if expires_ms - now <= days.saturating_mul(86_400_000) {
                        firing.insert(
                            format!("{address}/{role}/{subject}"),
                            format!("expires {}", rfc3339(expires_ms)),
                        );
                    }
                }
            }
        }
        firing
    }

    /// Whether a subject that no longer fires is known to be well: a failing channel only once
    /// this daemon saw it succeed (after a restart, or when the lease moves, it knows nothing
    /// yet, and an alert does not resolve for want of information).
    fn known_resolved(&self, rule: &AlertRule, subject: &str) -> bool {
        if rule.kind != AlertKind::ChannelFailing {
            return true;
        }
        self.store
            .health()
            .snapshot()
            .iter()
            .any(|((channel, connector), health)| {
                let name = if connector.is_empty() {
                    channel.clone()
                } else {
                    format!("{channel}/{connector}")
                };
                name == subject && health.failing_since.is_none() && health.last_success.is_some()
            })
    }

    /// Whether `now` falls in `[alerting]` business hours, in the organization's time zone.
    fn business_hours(&self, now: i64) -> bool {
        let alerting = &self.config.alerting;
        let slug = alerting
            .organization
            .clone()
            .unwrap_or_else(|| self.config.hl7.organization.clone());
        let tz: chrono_tz::Tz = self
            .config
            .organization(&slug)
            .time_zone
            .parse()
            .unwrap_or(chrono_tz::UTC);
        let Some(local) = tz.timestamp_millis_opt(now).single() else {
            return false;
        };
        let day_ok = alerting
            .business_days
            .iter()
            .filter_map(|d| parse_day(d))
            .any(|d| d == local.weekday());
        let clock = crate::reminders::schedule::parse_clock;
        let (Some(start), Some(end)) = (
            clock(&alerting.business_hours_start),
            clock(&alerting.business_hours_end),
        ) else {
            return false;
        };
        let time = local.time();
        day_ok && time >= start && time < end
    }

    async fn send(&self, notice: &Notice) -> Result<(), String> {
        if let Some((url, key)) = &self.webhook {
            let body = serde_json::to_vec(notice).map_err(|e| e.to_string())?;
            let id = format!("alert_{}", ulid::Ulid::new());
            let timestamp = now_ms() / 1000;
            let signature = crate::webhooks::signature::sign(key, &id, timestamp, &body)
                .map_err(|e| e.to_string())?;
            let response = self
                .http
                .post(url)
                .header("content-type", "application/json")
                .header("webhook-id", &id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .body(body)
                .send()
                .await
                .map_err(|e| format!("webhook: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("webhook answered {}", response.status()));
            }
        }
        if let Some(email) = &self.email {
            let state = if notice.kind == "alert.firing" {
                "FIRING"
            } else {
                "RESOLVED"
            };
            let data = &notice.data;
            let mut builder = lettre::Message::builder()
                .from(email.from.clone())
                .subject(format!(
                    "[switchboard] {state}: {} ({})",
                    data.rule, data.subject_id
                ));
            for to in &email.to {
                builder = builder.to(to.clone());
            }
            let message = builder
                .body(format!(
                    "{state}: {}\nkind: {}\nsubject: {}\nsince: {}\ndetail: {}\nnode: {}\n",
                    data.rule, data.kind, data.subject_id, data.since, data.detail, data.node
                ))
                .map_err(|e| format!("email: {e}"))?;
            email
                .transport
                .send(message)
                .await
                .map_err(|e| format!("email: {e}"))?;
        }
        if self.webhook.is_none() && self.email.is_none() {
            warn!(rule = %notice.data.rule, subject = %notice.data.subject_id, notice = %notice.kind, "alert (no notice target configured)");
        }
        Ok(())
    }
}
