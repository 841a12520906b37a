//! Urgent notifications. When an urgent message is posted (`urgent: true` through the API, or
//! an `urgent_message_sent` event written by another system), its recipients are told out of
//! band — by SMS and email, PHI-free ("You have a new urgent secure message from ... Sign in at
//! ..."), rendered from linted templates.
//!
//! - Audience: an outbound message notifies the thread's patient; an inbound one (a patient
//!   writing in) notifies staff in on-call order. `metadata.notify` ("patient", "staff",
//!   "both") overrides.
//! - Channels in the organization's order (`urgent_channels`, SMS then email); the next one is
//!   used when a recipient has no contact point, the disclosure gate refuses (opted out; for a
//!   Part 2 message, no Part 2 consent of the patient for that channel and address), or the
//!   send fails permanently. A notice to the patient about a Part 2 message is itself a Part 2
//!   disclosure (it tells that the patient has a record there) and is flagged `part2`, so the
//!   worker checks it again; a staff alert names no patient and stays inside the program.
//! - One notification per (message, recipient, channel); more urgent messages to the same
//!   recipient within `urgent_digest_window_secs` are folded into the one already sent.
//! - Escalation: staff alerts not read within `urgent_escalation_secs` go to the next person on
//!   call, until read (`POST /v1/messages/{id}/read` or a `message_read` event).
//! - Urgent notifications are not held for quiet hours.
//!
//! Every notification, digest, skip and escalation is an audit event. The notifier follows the
//! events table with a stored cursor; on a fleet the unique keys make every step happen once.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::disclosure::{self, Disclosure, Gate};
use crate::domain::{Address, Channel};
use crate::messages::{MessageError, MessageService, ResolvedThread, SendRequest};
use crate::store::{AlertRow, AuditEntry, NewNotification, Store, StoreError, now_ms};
use crate::templates::Templates;

/// The newest event time handled (unix ms).
const CURSOR: &str = "urgent-notifier-time";
/// Events are read again this far back: ids and times can commit out of order under concurrent
/// writers, and every step below is idempotent.
const LOOKBACK_MS: i64 = 30_000;
/// The kinds the notifier reads. The events index it reads them through holds only these
/// (migration 0030, the same list in the same order).
pub(crate) const EVENT_KINDS: [&str; 3] = ["urgent_message_sent", "message_read", "message.read"];
const PASS_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Message(#[from] MessageError),
    #[error("template: {0}")]
    Template(#[from] crate::templates::TemplateError),
}

/// Who gets told.
#[derive(Debug, Clone)]
struct Target {
    kind: &'static str,
    id: String,
    sms: Option<String>,
    email: Option<String>,
    locale: String,
}

#[derive(Clone)]
pub struct Notifier {
    pub store: Store,
    pub messages: MessageService,
    pub config: Arc<Config>,
    pub templates: Arc<Templates>,
}

impl Notifier {
    /// Starts following the events table from now (on first run), so urgent messages from
    /// before the upgrade are not notified again.
    pub async fn init(&self) -> Result<(), NotifyError> {
        if self.store.cursors().get(CURSOR).await?.is_none() {
            self.store.cursors().set(CURSOR, now_ms()).await?;
        }
        Ok(())
    }

    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.pass().await {
                warn!(error = %e, "urgent notification pass failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(PASS_INTERVAL) => {}
            }
        }
    }

    /// One pass: new urgent messages and read marks, fail-overs, escalations.
    pub async fn pass(&self) -> Result<(), NotifyError> {
        let since = self.store.cursors().get(CURSOR).await?.unwrap_or(0) - LOOKBACK_MS;
        let mut after = None;
        loop {
            let events = self
                .store
                .events()
                .of_kinds_since(&EVENT_KINDS, since, after, 200)
                .await?;
            for event in &events {
                match event.kind.as_str() {
                    "urgent_message_sent" => {
                        self.new_urgent(&event.organization_id, &event.subject_id)
                            .await?
                    }
                    _ => {
                        self.store
                            .urgent()
                            .mark_read(&event.organization_id, &event.subject_id)
                            .await?;
                    }
                }
                self.store.cursors().set(CURSOR, event.created_at).await?;
                after = Some((event.created_at, event.id));
            }
            if events.len() < 200 {
                break;
            }
        }
        for (_, org, message_id, kind, recipient_id, level) in
            self.store.urgent().take_failed_notifications(100).await?
        {
            if let Some(target) = self.target(&org, &kind, &recipient_id).await? {
                self.notify(&org, &message_id, &target, level).await?;
            }
        }
        for alert in self.store.urgent().due_escalations(now_ms(), 100).await? {
            self.escalate(&alert).await?;
        }
        Ok(())
    }

    async fn new_urgent(&self, organization_id: &str, message_id: &str) -> Result<(), NotifyError> {
        let message = match self.store.messages().get(organization_id, message_id).await {
            Ok(m) => m,
            Err(StoreError::NotFound) => {
                warn!(%message_id, "urgent event for an unknown message");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let metadata: serde_json::Value =
            serde_json::from_str(&message.metadata).unwrap_or_default();
        let audience = match metadata.get("notify").and_then(|v| v.as_str()) {
            Some(a @ ("patient" | "staff" | "both")) => a.to_string(),
            _ if message.direction == "inbound" => "staff".into(),
            _ => "patient".into(),
        };
        let settings = self.settings(organization_id).await?;
        let escalates = audience != "patient";
        let alert = AlertRow {
            message_id: message_id.to_string(),
            organization_id: organization_id.to_string(),
            patient_id: message.patient_id.clone(),
            audience: audience.clone(),
            escalation_level: 0,
            next_escalation_at: escalates
                .then(|| now_ms() + secs_ms(settings.urgent_escalation_secs)),
            read_at: None,
        };
        if !self.store.urgent().insert_alert(&alert).await? {
            return Ok(());
        }
        info!(%message_id, audience = %audience, "urgent message: notifying");
        if audience != "staff" {
            match &message.patient_id {
                Some(patient) => {
                    if let Some(target) = self.target(organization_id, "patient", patient).await? {
                        self.notify(organization_id, message_id, &target, 0).await?;
                    }
                }
                None => {
                    self.audit(
                        organization_id,
                        message_id,
                        "urgent_notification_skipped",
                        None,
                        None,
                        "no patient on the thread",
                    )
                    .await?
                }
            }
        }
        if audience != "patient" {
            match self.store.staff().on_call(organization_id, 0).await? {
                Some(staff) => {
                    let target = staff_target(&staff, &settings.default_locale);
                    self.notify(organization_id, message_id, &target, 0).await?;
                }
                None => {
                    self.audit(
                        organization_id,
                        message_id,
                        "urgent_notification_skipped",
                        None,
                        None,
                        "nobody is on call",
                    )
                    .await?
                }
            }
        }
        Ok(())
    }

    async fn escalate(&self, alert: &AlertRow) -> Result<(), NotifyError> {
        let settings = self.settings(&alert.organization_id).await?;
        let next_position = alert.escalation_level + 1;
        let next = self
            .store
            .staff()
            .on_call(&alert.organization_id, next_position)
            .await?;
        let next_at = next
            .as_ref()
            .map(|_| now_ms() + secs_ms(settings.urgent_escalation_secs));
        if !self
            .store
            .urgent()
            .escalate_alert(&alert.message_id, alert.escalation_level, next_at)
            .await?
        {
            return Ok(());
        }
        match next {
            Some(staff) => {
                self.audit(
                    &alert.organization_id,
                    &alert.message_id,
                    "urgent_escalated",
                    None,
                    None,
                    &format!(
                        "not read; escalated to on-call position {}",
                        next_position + 1
                    ),
                )
                .await?;
                let target = staff_target(&staff, &settings.default_locale);
                self.notify(
                    &alert.organization_id,
                    &alert.message_id,
                    &target,
                    next_position,
                )
                .await?;
            }
            None => {
                self.audit(
                    &alert.organization_id,
                    &alert.message_id,
                    "urgent_escalation_exhausted",
                    None,
                    None,
                    "not read and nobody left on call",
                )
                .await?
            }
        }
        Ok(())
    }

    /// Notifies one recipient on the first usable channel not tried yet.
    async fn notify(
        &self,
        organization_id: &str,
        message_id: &str,
        target: &Target,
        level: i64,
    ) -> Result<(), NotifyError> {
        let org = self.store.organizations().get(organization_id).await?;
        let settings = self.config.organization(&org.slug);
        let message = self
            .store
            .messages()
            .get(organization_id, message_id)
            .await?;
        // About the patient it goes to: a Part 2 message makes the notice a Part 2 disclosure.
        let patient = (target.kind == "patient").then_some(target.id.as_str());
        let part2 = message.part2 && patient.is_some();
        let gate = Gate::new(self.store.clone());
        let tried = self
            .store
            .urgent()
            .notifications_for(message_id, &target.id)
            .await?;
        if tried
            .iter()
            .any(|(_, status)| status == "sent" || status == "digested")
        {
            return Ok(());
        }
        for name in &settings.urgent_channels {
            let Ok(kind) = name.parse::<Channel>() else {
                continue;
            };
            let channel = kind.as_str();
            if tried.iter().any(|(c, _)| c == channel)
                || self.config.connector_for(channel).is_none()
            {
                continue;
            }
            let address = match kind {
                Channel::Sms => target.sms.clone(),
                Channel::Email => target.email.clone(),
                _ => None,
            };
            let Some(address) = address else { continue };
            // A contact point nothing could deliver to (the message service would refuse it):
            // the next channel, as for a missing one.
            let address = match Address::parse(kind, &address, &settings.phone_region) {
                Ok(address) => address,
                Err(_) => {
                    info!(%message_id, channel, kind = target.kind, "urgent contact point is not a valid address; next channel");
                    continue;
                }
            };
            let decision = gate
                .check(
                    &Disclosure {
                        organization_id,
                        patient_id: patient,
                        channel: kind,
                        address: &address,
                        purpose: disclosure::NOTIFICATION,
                        part2,
                    },
                    "notifier",
                    Some(message_id),
                )
                .await?;
            let normalized = address.into_string();
            if decision.is_err() {
                // Refused (and audited): the next channel.
                continue;
            }
            let window = now_ms() - secs_ms(settings.urgent_digest_window_secs);
            let earlier = self
                .store
                .urgent()
                .recent_notification(&target.id, channel, window)
                .await?;
            let mut record = NewNotification {
                organization_id: organization_id.to_string(),
                message_id: message_id.to_string(),
                recipient_kind: target.kind.to_string(),
                recipient_id: target.id.clone(),
                channel: channel.to_string(),
                address: normalized.clone(),
                status: "sent".into(),
                digest_of: None,
                escalation_level: level,
            };
            if let Some(earlier) = earlier {
                record.status = "digested".into();
                record.digest_of = Some(earlier.clone());
                if self
                    .store
                    .urgent()
                    .insert_notification(&record)
                    .await?
                    .is_some()
                {
                    self.audit(
                        organization_id,
                        message_id,
                        "urgent_notification_digested",
                        Some(channel),
                        Some(&normalized),
                        &format!("folded into notification {earlier}"),
                    )
                    .await?;
                }
                return Ok(());
            }
            let Some(notification_id) = self.store.urgent().insert_notification(&record).await?
            else {
                return Ok(());
            };
            let name = settings.display_name.clone().unwrap_or(org.name.clone());
            let context = minijinja::context! {
                organization => name, portal_url => settings.portal_url.clone(), count => 1,
            };
            let base = format!("urgent/{channel}");
            let body = self
                .templates
                .render(&base, &target.locale, "txt", &context)?;
            let subject = self
                .templates
                .render(&base, &target.locale, "subject", &context)
                .ok();
            let mut metadata = serde_json::Map::new();
            metadata.insert("purpose".into(), disclosure::NOTIFICATION.into());
            metadata.insert("notification_for".into(), message_id.into());
            let mut request =
                SendRequest::notice(None, channel, normalized.clone(), subject, body, metadata);
            request.part2 = part2;
            // A patient's notice goes into the urgent message's thread, so its disclosure is
            // accounted to the patient (and the worker can check the patient's Part 2 consent).
            let accepted = match patient.filter(|p| message.patient_id.as_deref() == Some(*p)) {
                Some(patient) => {
                    let thread = ResolvedThread {
                        thread_id: message.thread_id.clone(),
                        new_thread_category: None,
                        patient_id: Some(patient.to_string()),
                    };
                    self.messages
                        .accept_in_thread(organization_id, &request, None, thread)
                        .await?
                }
                None => {
                    self.messages
                        .accept(organization_id, &request, None)
                        .await?
                }
            };
            self.store
                .urgent()
                .set_notification_message(&notification_id, &accepted.message_id)
                .await?;
            self.audit(
                organization_id,
                message_id,
                "urgent_notification",
                Some(channel),
                Some(&normalized),
                &format!(
                    "{} notified (level {level}) by message {}",
                    target.kind, accepted.message_id
                ),
            )
            .await?;
            info!(%message_id, channel = %channel, kind = target.kind, level, "urgent notification queued");
            return Ok(());
        }
        self.audit(
            organization_id,
            message_id,
            "urgent_notification_skipped",
            None,
            None,
            &format!("{} {} has no usable channel left", target.kind, target.id),
        )
        .await?;
        Ok(())
    }

    async fn target(
        &self,
        organization_id: &str,
        kind: &str,
        id: &str,
    ) -> Result<Option<Target>, NotifyError> {
        let settings = self.settings(organization_id).await?;
        if kind == "staff" {
            return Ok(self
                .store
                .staff()
                .get(id)
                .await?
                .map(|s| staff_target(&s, &settings.default_locale)));
        }
        let patient = match self.store.patients().get(organization_id, id).await {
            Ok(p) => p,
            Err(StoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let points = self.store.patients().contact_points(id).await?;
        let sms = points
            .iter()
            .find(|p| {
                matches!(p.system.as_str(), "sms" | "mobile")
                    || (p.system == "phone" && p.use_code.as_deref() == Some("mobile"))
            })
            .or_else(|| points.iter().find(|p| p.system == "phone"))
            .map(|p| p.value.clone());
        let email = points
            .iter()
            .find(|p| p.system == "email")
            .map(|p| p.value.clone());
        Ok(Some(Target {
            kind: "patient",
            id: id.to_string(),
            sms,
            email,
            locale: patient.language.unwrap_or(settings.default_locale),
        }))
    }

    async fn settings(
        &self,
        organization_id: &str,
    ) -> Result<crate::config::OrganizationConfig, NotifyError> {
        let org = self.store.organizations().get(organization_id).await?;
        Ok(self.config.organization(&org.slug))
    }

    async fn audit(
        &self,
        organization_id: &str,
        message_id: &str,
        action: &str,
        channel: Option<&str>,
        recipient: Option<&str>,
        detail: &str,
    ) -> Result<(), NotifyError> {
        self.store
            .audit()
            .record(&AuditEntry {
                organization_id: organization_id.to_string(),
                action: action.to_string(),
                actor: "notifier".into(),
                message_id: Some(message_id.to_string()),
                channel: channel.map(String::from),
                recipient: recipient.map(String::from),
                detail: Some(detail.to_string()),
                ..Default::default()
            })
            .await?;
        Ok(())
    }
}

fn staff_target(staff: &crate::store::StaffRow, locale: &str) -> Target {
    Target {
        kind: "staff",
        id: staff.id.clone(),
        sms: staff.sms.clone(),
        email: staff.email.clone(),
        locale: locale.to_string(),
    }
}

fn secs_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX / 4)
}
