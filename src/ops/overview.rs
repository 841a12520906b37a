//! The console home's figures beyond the channels: the reminder job's last and next run and
//! what the reminders of the last day did, Direct MDNs awaited or overdue and certificates
//! expiring, and the HL7 peers connected to this daemon. Counts, times, addresses and
//! certificate subjects only — no PHI.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Ops;
use crate::config::ConnectorConfig;
use crate::messages::rfc3339;
use crate::service::ServiceError;
use crate::store::now_ms;

/// A certificate expiring within this many days is flagged.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

const DAY_MS: i64 = 86_400_000;

/// The console home's overview (see the module).
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub reminders: RemindersOverview,
    pub direct: DirectOverview,
    pub hl7: Hl7Overview,
}

#[derive(Debug, Clone, Serialize)]
pub struct RemindersOverview {
    pub enabled: bool,
    /// The latest pass, whichever daemon of the fleet ran it.
    pub last_run: Option<LastRun>,
    /// The schedule's next tick (RFC 3339, UTC).
    pub next_run: Option<String>,
    /// The organization's reminders that changed in the last 24 hours, by status (`sent`,
    /// `skipped`, `cancelled`) and reason.
    pub last_day: Vec<TouchCount>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    pub started_at: String,
    pub finished_at: String,
    /// The daemon that ran it.
    pub holder: String,
    /// `ok` or `failed`.
    pub outcome: String,
    /// The pass's counts (gateway-wide: planned, sent, skipped, cancelled, campaign_sent, …).
    pub report: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct TouchCount {
    pub status: String,
    pub reason: Option<String>,
    pub count: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DirectOverview {
    /// Direct deliveries still waiting for their processed MDN.
    pub awaiting_mdn: i64,
    /// Of those, waiting for more than half the connector's `processed_timeout_secs` (the
    /// timeout expires them: these are the ones to look at now).
    pub overdue_mdn: i64,
    /// Age of the oldest one waiting, seconds.
    pub oldest_awaiting_secs: Option<i64>,
    /// Deliveries expired in the last 24 hours for want of an MDN.
    pub expired_last_day: i64,
    /// The organization's Direct certificates and trust anchors as this daemon loaded them,
    /// soonest expiry first.
    pub certificates: Vec<CertificateView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CertificateView {
    pub address: String,
    /// `signing`, `decryption`, `anchor`.
    pub role: String,
    pub subject: String,
    pub not_after: String,
    pub days_left: i64,
    /// Within [`EXPIRY_WARNING_DAYS`] (or already expired).
    pub expiring: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hl7Overview {
    /// Peers with an open MLLP connection to this daemon.
    pub peers: Vec<Hl7Peer>,
    /// Per sending application/facility: the last message this daemon answered (RFC 3339).
    pub last_by_sender: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hl7Peer {
    pub address: String,
    pub connections: usize,
    /// When the oldest of its connections opened (RFC 3339).
    pub since: String,
}

impl Ops {
    /// The console home's overview for `organization_id`.
    pub async fn overview(&self, organization_id: &str) -> Result<Overview, ServiceError> {
        let now = now_ms();
        let config = &self.config;
        let org = self.store.organizations().get(organization_id).await?;

        let last_run = self.store.leases().last_run("reminders").await?;
        let next_run = if config.reminders.enabled {
            config
                .reminders
                .cron_schedule()
                .ok()
                .and_then(|s| s.upcoming(chrono::Utc).next())
                .map(|t| rfc3339(t.timestamp_millis()))
        } else {
            None
        };
        let touches = self
            .store
            .reminders()
            .outcomes_since(organization_id, now - DAY_MS)
            .await?;

        let direct: Vec<(String, u64)> = config
            .connectors
            .iter()
            .filter_map(|(name, c)| match c {
                ConnectorConfig::Direct(d) if d.organization.as_deref() == Some(&org.slug) => {
                    Some((name.clone(), d.processed_timeout_secs))
                }
                _ => None,
            })
            .collect();
        let addresses: Vec<String> = config
            .connectors
            .values()
            .filter_map(|c| match c {
                ConnectorConfig::Direct(d) if d.organization.as_deref() == Some(&org.slug) => {
                    Some(d.address.to_ascii_lowercase())
                }
                _ => None,
            })
            .collect();
        let (mut awaiting, mut overdue, mut oldest, mut expired) = (0, 0, None::<i64>, 0);
        for (connector, timeout_secs) in &direct {
            let overdue_before =
                now - i64::try_from(timeout_secs.saturating_mul(500)).unwrap_or(i64::MAX);
            let figures = self
                .store
                .direct()
                .mdn_figures(organization_id, connector, overdue_before, now - DAY_MS)
                .await?;
            awaiting += figures.awaiting;
            overdue += figures.overdue;
            expired += figures.expired;
            oldest = match (oldest, figures.oldest_awaiting_at) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            };
        }
        let mut certificates: Vec<CertificateView> = crate::metrics::metrics()
            .certificates()
            .into_iter()
            .filter(|((address, _, _), _)| addresses.contains(&address.to_ascii_lowercase()))
            .map(|((address, role, subject), not_after)| {
                let days_left = (not_after * 1000 - now).div_euclid(DAY_MS);
                CertificateView {
                    address,
                    role,
                    subject,
                    not_after: rfc3339(not_after.saturating_mul(1000)),
                    days_left,
                    expiring: days_left <= EXPIRY_WARNING_DAYS,
                }
            })
            .collect();
        certificates.sort_by_key(|c| c.days_left);

        let metrics = crate::metrics::metrics();
        Ok(Overview {
            reminders: RemindersOverview {
                enabled: config.reminders.enabled,
                last_run: last_run.map(|r| LastRun {
                    started_at: rfc3339(r.started_at),
                    finished_at: rfc3339(r.finished_at),
                    holder: r.holder,
                    outcome: r.outcome,
                    report: serde_json::from_str(&r.report).unwrap_or_default(),
                }),
                next_run,
                last_day: touches
                    .into_iter()
                    .map(|(status, reason, count)| TouchCount {
                        status,
                        reason,
                        count,
                    })
                    .collect(),
            },
            direct: DirectOverview {
                awaiting_mdn: awaiting,
                overdue_mdn: overdue,
                oldest_awaiting_secs: oldest.map(|at| (now - at).max(0) / 1000),
                expired_last_day: expired,
                certificates,
            },
            hl7: Hl7Overview {
                peers: metrics
                    .hl7_peers()
                    .into_iter()
                    .map(|(address, (connections, since))| Hl7Peer {
                        address: address.to_string(),
                        connections,
                        since: rfc3339(since),
                    })
                    .collect(),
                last_by_sender: metrics
                    .hl7_last()
                    .into_iter()
                    .map(|(sender, at)| (sender, rfc3339(at)))
                    .collect(),
            },
        })
    }
}
