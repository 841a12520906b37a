//! Appointment reminders: rules (config or API), planning, sending, and patients' answers.
//!
//! A run (every minute by default, leased so one daemon of a fleet runs it) does two things:
//! 1. **plan** — for every appointment starting within the horizon, each matching rule's touches
//!    are recorded once (unique on appointment, rule, touch and start time), due at the touch
//!    time moved out of quiet hours in the patient's time zone; touches already too late are
//!    recorded as skipped. Planned touches of rescheduled, cancelled or no-show appointments are
//!    cancelled (a reschedule then plans new ones for the new time).
//! 2. **send** — each due touch is checked again at send time (appointment still on, not too
//!    late, contact point, consent, Part 2, minors' guardians, frequency caps); it either ends
//!    `skipped` with a reason a person can read, or becomes a message accepted with the
//!    idempotency key `touch:<id>`, so a crash between accepting and marking it sent can never
//!    produce a second reminder. Delivery then follows the normal queue.
//!
//! Answers (C/Y/YES/CONFIRM, N/NO, R) arrive from the SMS webhook through [`ReplyRouter`]: they
//! are recorded on the appointment's `confirmation` (never its status, which staff own) with an
//! event, and cancel/reschedule become requests for staff.

pub mod schedule;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, OrganizationConfig, ReminderRule};
use crate::inbound::keywords::ReminderReply;
use crate::inbound::{InboundError, ReplyRouter};
use crate::messages::{MessageError, MessageService, SendRequest};
use crate::store::{
    AppointmentRow, ContactPointRow, NewTouch, PatientRow, PlanRow, Store, StoreError, TouchRow,
};
use crate::templates::Templates;
use schedule::{When, parse_clock};

const LEASE: &str = "reminders";
pub const CURSOR_CHANGED: &str = "reminders-plan-changed";
pub const CURSOR_HORIZON: &str = "reminders-plan-horizon";
/// Appointments changed this long before the last run are looked at again (commit races).
const CHANGE_MARGIN_MS: i64 = 5_000;
/// Touches handled at once by a run.
const SEND_CONCURRENCY: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ReminderError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Message(#[from] MessageError),
    #[error("rule {rule}: {reason}")]
    Rule { rule: String, reason: String },
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    pub planned: u64,
    pub cancelled: u64,
    pub sent: u64,
    pub skipped: u64,
}

#[derive(Clone)]
pub struct Reminders {
    pub store: Store,
    pub messages: MessageService,
    pub config: Arc<Config>,
    pub templates: Arc<Templates>,
}

/// An organization's settings and rules, resolved once per run.
struct OrgPlan {
    slug: String,
    name: String,
    settings: OrganizationConfig,
    rules: Vec<(ReminderRule, Vec<(String, When)>)>,
    zone: Tz,
}

impl Reminders {
    /// Runs forever: a pass every `interval`, under a lease so a fleet runs one at a time.
    pub async fn run(self, holder: String, interval: Duration, shutdown: CancellationToken) {
        // Rules may have changed with the configuration: the first run looks at everything.
        if let Err(e) = self.replan_all().await {
            warn!(error = %e, "reminder cursors");
        }
        loop {
            let ttl = i64::try_from(interval.as_millis() * 5).unwrap_or(300_000);
            match self.store.take_lease(LEASE, &holder, ttl).await {
                Ok(true) => match self.run_once(Utc::now()).await {
                    Ok(report) if report != RunReport::default() => {
                        info!(
                            planned = report.planned,
                            sent = report.sent,
                            skipped = report.skipped,
                            cancelled = report.cancelled,
                            "reminder run"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "reminder run failed"),
                },
                Ok(false) => {}
                Err(e) => warn!(error = %e, "reminder lease"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = self.store.release_lease(LEASE, &holder).await;
                    return;
                }
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One run at `now`: plan, then send what is due.
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<RunReport, ReminderError> {
        let mut report = self.plan(now).await?;
        loop {
            let (sent, skipped) = self.send_due(now, 500).await?;
            report.sent += sent;
            report.skipped += skipped;
            if sent + skipped < 500 {
                break;
            }
        }
        Ok(report)
    }

    async fn org_plan(&self, organization_id: &str) -> Result<OrgPlan, ReminderError> {
        let org = self.store.organization(organization_id).await?;
        let settings = self.config.organization(&org.slug);
        let stored = self.store.reminder_rules(organization_id).await?;
        let rules: Vec<ReminderRule> = if stored.is_empty() {
            settings.reminder_rules.clone()
        } else {
            stored
                .iter()
                .filter_map(|d| serde_json::from_str(d).ok())
                .collect()
        };
        let mut parsed = Vec::new();
        for rule in rules {
            let mut touches = Vec::new();
            for touch in &rule.touches {
                let when = schedule::parse(touch).map_err(|e| ReminderError::Rule {
                    rule: rule.id.clone(),
                    reason: e.to_string(),
                })?;
                touches.push((touch.id.clone(), when));
            }
            parsed.push((rule, touches));
        }
        Ok(OrgPlan {
            slug: org.slug,
            name: settings.display_name.clone().unwrap_or(org.name),
            zone: settings.time_zone.parse().unwrap_or(Tz::UTC),
            settings,
            rules: parsed,
        })
    }

    /// Records the touches of upcoming appointments and cancels stale ones. Incremental: only
    /// appointments changed since the last run, or that entered the horizon since, are looked
    /// at (a daemon's first run looks at all of them).
    pub async fn plan(&self, now: DateTime<Utc>) -> Result<RunReport, ReminderError> {
        let store_now = crate::store::now_ms();
        let changed_since = self
            .store
            .cursor(CURSOR_CHANGED)
            .await?
            .map_or(0, |c| c - CHANGE_MARGIN_MS);
        let entered_from = match self.store.cursor(CURSOR_HORIZON).await? {
            Some(h) if changed_since > 0 => h,
            _ => i64::MIN,
        };
        let cancelled = self.store.cancel_stale_touches(changed_since).await?;
        let now_ms = now.timestamp_millis();
        let horizon_end = now_ms + self.horizon_ms();
        let appointments = self
            .store
            .appointments_to_plan(now_ms, horizon_end, changed_since, entered_from)
            .await?;
        let mut orgs: HashMap<String, OrgPlan> = HashMap::new();
        let mut touches = Vec::with_capacity(appointments.len() * 3);
        for appointment in &appointments {
            if !orgs.contains_key(&appointment.organization_id) {
                let plan = self.org_plan(&appointment.organization_id).await?;
                orgs.insert(appointment.organization_id.clone(), plan);
            }
            let Some(org) = orgs.get(&appointment.organization_id) else {
                continue;
            };
            plan_appointment(org, appointment, now_ms, &mut touches);
        }
        let planned = self.store.insert_touches(&touches).await?;
        self.store.set_cursor(CURSOR_CHANGED, store_now).await?;
        self.store.set_cursor(CURSOR_HORIZON, horizon_end).await?;
        Ok(RunReport {
            planned,
            cancelled,
            ..RunReport::default()
        })
    }

    /// The next run plans every upcoming appointment again (after a rule or config change).
    pub async fn replan_all(&self) -> Result<(), ReminderError> {
        self.store.reset_cursor(CURSOR_CHANGED).await?;
        self.store.reset_cursor(CURSOR_HORIZON).await?;
        Ok(())
    }

    /// The longest lead time of any configured rule, plus a day.
    fn horizon_ms(&self) -> i64 {
        let mut longest = 8 * 24 * 3_600_000_i64;
        for org in self.config.organizations.values() {
            for rule in &org.reminder_rules {
                for touch in &rule.touches {
                    let lead = match schedule::parse(touch) {
                        Ok(When::Before(d)) => d.num_milliseconds() + 24 * 3_600_000,
                        Ok(When::DaysBefore { days, .. }) => i64::from(days + 5) * 24 * 3_600_000,
                        Err(_) => 0,
                    };
                    longest = longest.max(lead);
                }
            }
        }
        longest
    }

    /// Sends (or skips) up to `limit` due touches, several at once (their accepts share group
    /// commits). Returns `(sent, skipped)`.
    pub async fn send_due(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<(u64, u64), ReminderError> {
        use futures::StreamExt;
        let due = self
            .store
            .due_touches(now.timestamp_millis(), limit)
            .await?;
        let mut orgs: HashMap<String, Arc<OrgPlan>> = HashMap::new();
        for touch in &due {
            if !orgs.contains_key(&touch.organization_id) {
                let plan = self.org_plan(&touch.organization_id).await?;
                orgs.insert(touch.organization_id.clone(), Arc::new(plan));
            }
        }
        let outcomes: Vec<Result<Option<bool>, ReminderError>> = futures::stream::iter(due)
            .map(|touch| {
                let org = orgs.get(&touch.organization_id).cloned();
                async move {
                    let Some(org) = org else { return Ok(None) };
                    let at = now.timestamp_millis();
                    match self.send_touch(&org, &touch, now).await? {
                        Ok((channel, message_id)) => Ok(self
                            .store
                            .finish_touch(
                                &touch.id,
                                "sent",
                                None,
                                Some(&channel),
                                Some(&message_id),
                                at,
                            )
                            .await?
                            .then_some(true)),
                        Err(reason) => Ok(self
                            .store
                            .finish_touch(&touch.id, "skipped", Some(&reason), None, None, at)
                            .await?
                            .then_some(false)),
                    }
                }
            })
            .buffer_unordered(SEND_CONCURRENCY)
            .collect()
            .await;
        let (mut sent, mut skipped) = (0, 0);
        for outcome in outcomes {
            match outcome? {
                Some(true) => sent += 1,
                Some(false) => skipped += 1,
                None => {}
            }
        }
        Ok((sent, skipped))
    }

    /// `Ok(Ok((channel, message id)))` when sent, `Ok(Err(reason))` when skipped.
    async fn send_touch(
        &self,
        org: &OrgPlan,
        touch: &TouchRow,
        now: DateTime<Utc>,
    ) -> Result<Result<(String, String), String>, ReminderError> {
        let settings = &org.settings;
        let grace = i64::try_from(settings.reminder_grace_minutes).unwrap_or(60) * 60_000;
        if now.timestamp_millis() > touch.due_at + grace {
            return Ok(Err(format!(
                "too soon: the touch was due {} and is more than {} minutes late",
                rfc3339(touch.due_at),
                settings.reminder_grace_minutes
            )));
        }
        let appointment = self.store.appointment(&touch.appointment_id).await?;
        if appointment.start_at != touch.appointment_start {
            return Ok(Err("appointment rescheduled".into()));
        }
        let status = appointment.status.to_lowercase();
        if matches!(status.as_str(), "cancelled" | "canceled" | "deleted") {
            return Ok(Err(format!("appointment {status}")));
        }
        if matches!(status.as_str(), "noshow" | "no-show") {
            return Ok(Err("no-show: reminders stopped".into()));
        }
        if appointment.start_at <= now.timestamp_millis() {
            return Ok(Err("too soon: the appointment has started".into()));
        }
        let Some((rule, _)) = org.rules.iter().find(|(r, _)| r.id == touch.rule_id) else {
            return Ok(Err(format!("rule {} no longer exists", touch.rule_id)));
        };
        let Some(spec) = rule.touches.iter().find(|t| t.id == touch.touch_id) else {
            return Ok(Err(format!("touch {} no longer exists", touch.touch_id)));
        };
        let patient = self
            .store
            .patient(&touch.organization_id, &touch.patient_id)
            .await?;
        let points = self.store.contact_points(&patient.id).await?;
        let minor = is_minor(&patient, now);
        let points: Vec<&ContactPointRow> = if minor && settings.reminders_to_guardians {
            let guardians: Vec<_> = points
                .iter()
                .filter(|p| p.use_code.as_deref() == Some("guardian"))
                .collect();
            if guardians.is_empty() {
                return Ok(Err("minor without a guardian contact".into()));
            }
            guardians
        } else {
            points.iter().collect()
        };
        if appointment.appointment_type.as_ref().is_some_and(|t| {
            settings
                .part2_appointment_types
                .iter()
                .any(|p| p.eq_ignore_ascii_case(t))
        }) {
            let consented = self
                .store
                .part2_consent_active(&patient.id, "*", "*", now.timestamp_millis())
                .await?;
            if !consented {
                return Ok(Err("Part 2 restricted: no Part 2 consent to remind".into()));
            }
        }
        let day = self
            .store
            .reminders_sent_since(&patient.id, now.timestamp_millis() - 86_400_000)
            .await?;
        let week = self
            .store
            .reminders_sent_since(&patient.id, now.timestamp_millis() - 7 * 86_400_000)
            .await?;
        if day >= i64::from(settings.reminder_cap_per_day)
            || week >= i64::from(settings.reminder_cap_per_week)
        {
            return Ok(Err(format!(
                "frequency cap: {day} today, {week} this week (limits {} and {})",
                settings.reminder_cap_per_day, settings.reminder_cap_per_week
            )));
        }
        // Channel: the first with a contact point and consent.
        let (channel, address) = match crate::reach::first_reachable(
            &self.store,
            &touch.organization_id,
            &patient.id,
            &points,
            &spec.channels,
            &settings.phone_region,
            "reminders",
        )
        .await?
        {
            Ok(chosen) => chosen,
            Err(reason) => return Ok(Err(reason)),
        };
        let locale = patient
            .language
            .clone()
            .unwrap_or(settings.default_locale.clone());
        let zone = patient_zone(
            org,
            patient.time_zone.as_deref(),
            appointment.location.as_deref(),
            appointment.location_code.as_deref(),
        );
        let context = template_context(org, &appointment, zone, &locale, rule.replies);
        let base = format!("{}/{channel}", spec.template);
        let Ok(body) = self.templates.render(&base, &locale, "txt", &context) else {
            return Ok(Err(format!("no template {base} for {locale}")));
        };
        if channel == "sms" {
            let segments = crate::phone::segments(&body).segments;
            if segments > crate::templates::SMS_TEMPLATE_SEGMENTS {
                return Ok(Err(format!("text too long: {segments} SMS segments")));
            }
        }
        let subject = self
            .templates
            .render(&base, &locale, "subject", &context)
            .ok();
        let mut metadata = serde_json::Map::new();
        metadata.insert("purpose".into(), "reminder".into());
        metadata.insert("appointment_id".into(), appointment.id.clone().into());
        metadata.insert("touch_id".into(), touch.id.clone().into());
        let request = SendRequest::notice(
            Some(patient.external_id.clone()),
            &channel,
            address,
            subject,
            body,
            metadata,
        );
        let key = format!("touch:{}", touch.id);
        let accepted = self
            .messages
            .accept(&touch.organization_id, &request, Some(&key))
            .await?;
        Ok(Ok((channel, accepted.message_id)))
    }

    /// The plan of an appointment and every skip, for `reminders why` and the API.
    pub async fn why(&self, appointment: &AppointmentRow) -> Result<Vec<TouchRow>, ReminderError> {
        Ok(self.store.touches_of(&appointment.id).await?)
    }
}

/// Adds the touches of one appointment.
fn plan_appointment(org: &OrgPlan, a: &PlanRow, now_ms: i64, out: &mut Vec<NewTouch>) {
    let zone = patient_zone(
        org,
        a.patient_time_zone.as_deref(),
        a.location.as_deref(),
        a.location_code.as_deref(),
    );
    let open = parse_clock(&org.settings.quiet_hours_start).unwrap_or_default();
    let close = parse_clock(&org.settings.quiet_hours_end).unwrap_or_default();
    let grace = i64::try_from(org.settings.reminder_grace_minutes).unwrap_or(60) * 60_000;
    let Some(start) = Utc.timestamp_millis_opt(a.start_at).single() else {
        return;
    };
    for (rule, touches) in &org.rules {
        if !matches_rule(rule, a) {
            continue;
        }
        for (touch_id, when) in touches {
            let due = schedule::due(*when, start, zone, &org.settings.holidays);
            let due = if open < close {
                schedule::out_of_quiet_hours(due, zone, open, close)
            } else {
                due
            };
            let due_ms = due.timestamp_millis();
            let (status, reason) = if due_ms >= a.start_at {
                (
                    "skipped",
                    Some("too soon: quiet hours push this touch past the appointment".to_string()),
                )
            } else if due_ms + grace < now_ms {
                (
                    "skipped",
                    Some(format!(
                        "too soon: booked after the touch time ({})",
                        rfc3339(due_ms)
                    )),
                )
            } else {
                ("planned", None)
            };
            out.push(NewTouch {
                organization_id: a.organization_id.clone(),
                appointment_id: a.id.clone(),
                patient_id: a.patient_id.clone(),
                rule_id: rule.id.clone(),
                touch_id: touch_id.clone(),
                appointment_start: a.start_at,
                due_at: due_ms,
                status,
                reason,
            });
        }
    }
}

fn matches_rule(rule: &ReminderRule, a: &PlanRow) -> bool {
    let any = |list: &[String], values: &[Option<&String>]| {
        list.is_empty()
            || values
                .iter()
                .flatten()
                .any(|v| list.iter().any(|x| x.eq_ignore_ascii_case(v)))
    };
    any(&rule.appointment_types, &[a.appointment_type.as_ref()])
        && any(
            &rule.locations,
            &[a.location.as_ref(), a.location_code.as_ref()],
        )
        && any(
            &rule.providers,
            &[a.provider_id.as_ref(), a.provider_name.as_ref()],
        )
}

/// The patient's zone, else the location's, else the organization's.
fn patient_zone(
    org: &OrgPlan,
    patient: Option<&str>,
    location: Option<&str>,
    code: Option<&str>,
) -> Tz {
    patient
        .and_then(|z| z.parse().ok())
        .or_else(|| {
            [location, code]
                .into_iter()
                .flatten()
                .find_map(|l| org.settings.location_time_zones.get(l))
                .and_then(|z| z.parse().ok())
        })
        .unwrap_or(org.zone)
}

fn is_minor(patient: &PatientRow, now: DateTime<Utc>) -> bool {
    let Some(birth) = patient
        .birth_date
        .as_deref()
        .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
    else {
        return false;
    };
    now.date_naive()
        .years_since(birth)
        .is_some_and(|age| age < 18)
}

fn template_context(
    org: &OrgPlan,
    a: &AppointmentRow,
    zone: Tz,
    locale: &str,
    replies: bool,
) -> minijinja::Value {
    let start = Utc
        .timestamp_millis_opt(a.start_at)
        .single()
        .unwrap_or_default()
        .with_timezone(&zone);
    let (date, time) = if crate::templates::locale_tag(locale) == "es" {
        (
            start.format("%d/%m/%Y").to_string(),
            start.format("%H:%M").to_string(),
        )
    } else {
        (
            start.format("%a %b %-d").to_string(),
            start.format("%-I:%M %p").to_string(),
        )
    };
    minijinja::context! {
        organization => org.name.clone(),
        portal_url => org.settings.portal_url.clone(),
        phone => org.settings.help_phone.clone().unwrap_or_default(),
        date => date,
        time => time,
        location => a.location.clone().unwrap_or_default(),
        provider => a.provider_name.clone().unwrap_or_default(),
        replies => replies,
        slug => org.slug.clone(),
    }
}

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[async_trait::async_trait]
impl ReplyRouter for Reminders {
    async fn reminder_reply(
        &self,
        organization_id: &str,
        patient_id: Option<&str>,
        inbound_item_id: &str,
        reply: ReminderReply,
    ) -> Result<Option<String>, InboundError> {
        let Some(patient_id) = patient_id else {
            return Ok(None);
        };
        let now = Utc::now();
        let appointment = self
            .store
            .latest_reminded_appointment(patient_id, now.timestamp_millis())
            .await?;
        self.store
            .record_event(
                organization_id,
                "reminder.reply",
                inbound_item_id,
                &serde_json::json!({"reply": reply.as_str(), "patient_id": patient_id, "appointment_id": appointment}),
            )
            .await?;
        let Some(appointment_id) = appointment else {
            return Ok(None);
        };
        let answer = match reply {
            ReminderReply::Confirm => "confirmed",
            ReminderReply::Decline => "cancel_requested",
            ReminderReply::Reschedule => "reschedule_requested",
        };
        self.store
            .record_confirmation(
                organization_id,
                &appointment_id,
                patient_id,
                answer,
                Some(inbound_item_id),
            )
            .await?;
        info!(%appointment_id, answer, "reminder answered");
        let appointment = self.store.appointment(&appointment_id).await?;
        let org = match self.org_plan(organization_id).await {
            Ok(org) => org,
            Err(_) => return Ok(None),
        };
        let patient = self.store.patient(organization_id, patient_id).await?;
        let locale = patient
            .language
            .clone()
            .unwrap_or(org.settings.default_locale.clone());
        let zone = patient_zone(
            &org,
            patient.time_zone.as_deref(),
            appointment.location.as_deref(),
            appointment.location_code.as_deref(),
        );
        let context = template_context(&org, &appointment, zone, &locale, false);
        Ok(self
            .templates
            .render(
                &format!("reminder_reply/{answer}"),
                &locale,
                "txt",
                &context,
            )
            .ok())
    }
}
