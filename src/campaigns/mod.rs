//! Campaigns: outreach to a cohort, on demand (`run`) or on a schedule (the reminder pass runs
//! the scheduled ones, [`Campaigns::scheduled`]).
//!
//! Two kinds. A **recall** campaign targets open recalls (type, due dates, provider, location)
//! whose patients have nothing booked; each recall gets up to `attempts` messages `spacing_days`
//! apart (local dates of the organization), and stops as soon as the patient books. A **notice**
//! (office closures, schedule changes) targets the patients booked on a date (at a location,
//! with a provider) or a list of patients, one message each. `preview` is a dry run (counts per
//! channel and per skip reason, a sample of who and why not, by id); `run` sends with a
//! throttle; `report` counts targeted, sent, skipped (by reason), delivered, failed, confirmed
//! and booked. Attempts are unique per (campaign, target, attempt) and messages carry the
//! idempotency key `campaign:<id>:<target>:<attempt>`, so an interrupted run — killed mid-way
//! or run twice at once — never sends an attempt twice: it is simply run again.
//!
//! A campaign with a `schedule` runs by itself: the cron expression (seconds first) is read in
//! the organization's time zone and each tick moved onto a business day outside quiet hours
//! ([`schedule`]); the reminder pass, which runs on the leased cron (one daemon of a fleet),
//! sends what is due of every campaign whose run is due, at most `throttle_per_minute` messages
//! a minute (the time since the campaign's last pass buys messages at that rate, up to one
//! minute's worth), and only while the organization is open.
//! A run that has not reached every member continues on the next pass; the next run is then
//! planned from the schedule. Paused and cancelled campaigns are not run.
//!
//! Each message passes the disclosure gate (`crate::disclosure`) on the channel it would take:
//! the first channel the gate permits is used; a recall (or a noticed appointment) whose type
//! the organization lists in `part2_appointment_types` is a Part 2 disclosure (the patient's
//! Part 2 consent is needed, and the message is flagged `part2` for the worker's own check). A
//! run records the gate's refusals as `disclosure_refused` audit rows; a preview records nothing.

pub mod schedule;
pub mod service;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::channels::Sender;
use crate::config::Config;
use crate::disclosure::{self, Facts, Refusal};
use crate::domain::Channel;
use crate::messages::{MessageError, MessageService, SendRequest};
use crate::reach::Outreach;
use crate::service::FieldError;
use crate::store::{CampaignCounts, CampaignRow, CohortRow, Store, StoreError};
use crate::templates::Templates;
use schedule::Calendar;

#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Message(#[from] MessageError),
    #[error("campaign definition: {0}")]
    Invalid(String),
}

/// Most patients a notice may list.
pub const MAX_LISTED: usize = 10_000;
/// Sends prepared before they go out together, in a run without a pause between messages.
const SEND_BATCH: usize = 256;
/// Accepts in flight at once while a batch goes out: the default pool's size (16); each accept
/// holds a connection only while it reads (its commit goes through the group commit).
const SEND_CONCURRENCY: usize = 16;
/// Campaigns whose run is due, looked at per pass.
const DUE_PER_PASS: i64 = 100;

/// What a campaign is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CampaignKind {
    /// Open recalls whose patient has nothing booked.
    #[default]
    Recall,
    /// A bulk notice: patients booked on a date, or listed.
    Notice,
}

impl CampaignKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignKind::Recall => "recall",
            CampaignKind::Notice => "notice",
        }
    }
}

/// What a campaign targets and how.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    pub name: String,
    #[serde(default)]
    pub kind: CampaignKind,
    /// Recall: the recall type (any if absent).
    #[serde(default)]
    pub recall_type: Option<String>,
    /// Recall: recalls due between these dates (YYYY-MM-DD, inclusive).
    #[serde(default)]
    pub due_from: String,
    #[serde(default)]
    pub due_to: String,
    /// Recall: the recall's provider; notice: the appointment's provider (id or name).
    #[serde(default)]
    pub provider: Option<String>,
    /// Recall: the recall's location; notice: the appointment's location (name or code).
    #[serde(default)]
    pub location: Option<String>,
    /// Notice: patients with an appointment on this local date (YYYY-MM-DD).
    #[serde(default)]
    pub appointments_on: Option<String>,
    /// Notice: these patients (external ids), instead of `appointments_on`.
    #[serde(default)]
    pub patients: Vec<String>,
    /// Recall: messages per recall at most (a notice sends one).
    #[serde(default = "three")]
    pub attempts: i64,
    #[serde(default = "seven")]
    pub spacing_days: i64,
    #[serde(default = "sms_then_email")]
    pub channels: Vec<String>,
    /// The template family (`recall`, `notice` by default).
    #[serde(default)]
    pub template: String,
    /// Messages per minute at most (0: as fast as the store takes them).
    #[serde(default)]
    pub throttle_per_minute: u32,
    /// A cron expression (seconds first) in the organization's time zone: the campaign runs
    /// by itself. Without one it runs when asked (`campaign run`).
    #[serde(default)]
    pub schedule: Option<String>,
    /// A scheduled campaign sends on business days only (Monday to Friday, not the
    /// organization's `holidays`); `false`: every day. Quiet hours apply either way.
    #[serde(default = "yes")]
    pub business_days: bool,
}

impl Default for Campaign {
    fn default() -> Self {
        Self {
            name: String::new(),
            kind: CampaignKind::Recall,
            recall_type: None,
            due_from: String::new(),
            due_to: String::new(),
            provider: None,
            location: None,
            appointments_on: None,
            patients: Vec::new(),
            attempts: three(),
            spacing_days: seven(),
            channels: sms_then_email(),
            template: String::new(),
            throttle_per_minute: 0,
            schedule: None,
            business_days: true,
        }
    }
}

fn yes() -> bool {
    true
}
fn three() -> i64 {
    3
}
fn seven() -> i64 {
    7
}
fn sms_then_email() -> Vec<String> {
    vec![Channel::Sms.to_string(), Channel::Email.to_string()]
}

fn is_date(text: &str) -> bool {
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok()
}

fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl Campaign {
    /// The template family the messages are rendered from.
    pub fn template(&self) -> &str {
        match (self.template.is_empty(), self.kind) {
            (false, _) => &self.template,
            (true, CampaignKind::Recall) => "recall",
            (true, CampaignKind::Notice) => "notice",
        }
    }

    /// Messages per target at most.
    pub fn max_attempts(&self) -> i64 {
        match self.kind {
            CampaignKind::Recall => self.attempts,
            CampaignKind::Notice => 1,
        }
    }

    /// Every field at fault, each by its JSON pointer.
    pub fn field_errors(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, pointer: &str, detail: &str| {
            if !ok {
                errors.push(FieldError::pointer(pointer, detail));
            }
        };
        check(
            !self.name.trim().is_empty() && self.name.len() <= 200,
            "/name",
            "a name of 1 to 200 characters",
        );
        match self.kind {
            CampaignKind::Recall => {
                check(is_date(&self.due_from), "/due_from", "a date, YYYY-MM-DD");
                check(is_date(&self.due_to), "/due_to", "a date, YYYY-MM-DD");
                check(
                    (1..=10).contains(&self.attempts),
                    "/attempts",
                    "attempts must be 1 to 10",
                );
                check(
                    (1..=365).contains(&self.spacing_days),
                    "/spacing_days",
                    "spacing_days must be 1 to 365",
                );
                check(
                    self.appointments_on.is_none() && self.patients.is_empty(),
                    "/kind",
                    "appointments_on and patients are for notices (kind \"notice\")",
                );
            }
            CampaignKind::Notice => {
                match (&self.appointments_on, self.patients.is_empty()) {
                    (Some(date), true) => {
                        check(is_date(date), "/appointments_on", "a date, YYYY-MM-DD")
                    }
                    (None, false) => check(
                        self.patients.len() <= MAX_LISTED
                            && self
                                .patients
                                .iter()
                                .all(|p| !p.is_empty() && p.len() <= 200),
                        "/patients",
                        "1 to 10000 patient ids",
                    ),
                    _ => check(
                        false,
                        "/appointments_on",
                        "a notice targets either appointments_on (a date) or patients (a list)",
                    ),
                }
                check(
                    self.recall_type.is_none()
                        && self.due_from.is_empty()
                        && self.due_to.is_empty(),
                    "/kind",
                    "recall_type, due_from and due_to are for recall campaigns",
                );
            }
        }
        if self.channels.is_empty() || self.channels.len() > 5 {
            check(false, "/channels", "give 1 to 5 channels");
        }
        for (i, channel) in self.channels.iter().enumerate() {
            let known = Channel::NAMES.contains(&channel.as_str());
            let repeated = self.channels[..i].contains(channel);
            check(
                known && !repeated,
                &format!("/channels/{i}"),
                "a known channel, not repeated",
            );
        }
        check(
            self.template.is_empty() || is_name(&self.template),
            "/template",
            "a template family of at most 64 letters, digits, _, -, .",
        );
        check(
            self.throttle_per_minute <= 100_000,
            "/throttle_per_minute",
            "at most 100000 messages a minute",
        );
        if let Some(expression) = &self.schedule
            && let Err(detail) = schedule::parse(expression)
        {
            errors.push(FieldError::pointer("/schedule", detail));
        }
        errors
    }

    pub fn validate(&self) -> Result<(), CampaignError> {
        let errors = self.field_errors();
        if errors.is_empty() {
            return Ok(());
        }
        let text: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.json_pointer().unwrap_or(""), e.detail))
            .collect();
        Err(CampaignError::Invalid(text.join("; ")))
    }
}

/// The dry run.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Preview {
    /// Members of the cohort (recalls, or noticed patients).
    pub cohort: usize,
    /// Members with an attempt due now.
    pub due_now: usize,
    pub by_channel: BTreeMap<String, usize>,
    pub skips: BTreeMap<String, usize>,
    /// Up to three rendered texts (the templates are free of PHI).
    pub samples: Vec<String>,
    /// A sample of who would get a message and who would not, by patient id.
    pub who: Vec<PreviewTarget>,
}

/// One member of a preview's sample.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PreviewTarget {
    /// The patient's id (external id).
    pub patient: String,
    /// `send` or `skip`.
    pub outcome: &'static str,
    pub channel: Option<String>,
    pub reason: Option<String>,
}

/// Members shown in a preview's sample.
const PREVIEW_SAMPLE: usize = 20;

/// What one pass over a campaign did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    pub sent: u64,
    pub skipped: u64,
    /// Every member due was handled (not cut short by the throttle or quiet hours).
    pub finished: bool,
}

/// A message a member is to get.
struct Outgoing {
    channel: String,
    address: String,
    body: String,
    subject: Option<String>,
    part2: bool,
}

/// One planned outcome for a cohort member.
enum Step {
    NotDue,
    /// With the gate's refusals, if it refused.
    Skip(String, Vec<Refusal>),
    Send {
        channel: String,
        address: String,
        body: String,
        subject: Option<String>,
        part2: bool,
    },
}

#[derive(Clone)]
pub struct Campaigns {
    pub store: Store,
    pub messages: MessageService,
    pub config: Arc<Config>,
    pub templates: Arc<Templates>,
}

impl Campaigns {
    async fn load(&self, id: &str) -> Result<(CampaignRow, Campaign), CampaignError> {
        let row = self.store.campaigns().get(id).await?;
        let campaign = definition(&row)?;
        Ok((row, campaign))
    }

    /// Validates and stores a campaign; its first run is planned from its schedule, if any.
    pub async fn create(
        &self,
        organization_id: &str,
        campaign: &Campaign,
        now: DateTime<Utc>,
    ) -> Result<String, CampaignError> {
        campaign.validate()?;
        let next = match &campaign.schedule {
            Some(expression) => {
                let sender =
                    crate::tenancy::sender(&self.store, &self.config, organization_id).await?;
                let schedule = schedule::parse(expression).map_err(CampaignError::Invalid)?;
                schedule::next_run(
                    &schedule,
                    &Calendar::of(&sender.settings, campaign.business_days),
                    now,
                )
                .map(|t| t.timestamp_millis())
            }
            None => None,
        };
        let text =
            serde_json::to_string(campaign).map_err(|e| CampaignError::Invalid(e.to_string()))?;
        Ok(self
            .store
            .campaigns()
            .create(
                organization_id,
                &campaign.name,
                campaign.kind.as_str(),
                &text,
                next,
            )
            .await?)
    }

    /// The members: open recalls with nothing booked, or the noticed patients (one each; a
    /// patient is a Part 2 member when any of their noticed appointments is of a Part 2 type).
    async fn cohort(
        &self,
        row: &CampaignRow,
        c: &Campaign,
        sender: &Sender,
        now: DateTime<Utc>,
    ) -> Result<Vec<CohortRow>, CampaignError> {
        let campaigns = self.store.campaigns();
        let noticed = match c.kind {
            CampaignKind::Recall => {
                return Ok(campaigns
                    .cohort(
                        &row.organization_id,
                        &row.id,
                        c.recall_type.as_deref(),
                        &c.due_from,
                        &c.due_to,
                        c.provider.as_deref(),
                        c.location.as_deref(),
                        now.timestamp_millis(),
                    )
                    .await?);
            }
            CampaignKind::Notice => match &c.appointments_on {
                Some(date) => {
                    let date = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
                        .map_err(|_| CampaignError::Invalid("appointments_on".into()))?;
                    let zone = Calendar::of(&sender.settings, c.business_days).zone;
                    let from = crate::reminders::schedule::local_to_utc(
                        zone,
                        date.and_time(chrono::NaiveTime::MIN),
                    );
                    let to = crate::reminders::schedule::local_to_utc(
                        zone,
                        date.succ_opt()
                            .unwrap_or(date)
                            .and_time(chrono::NaiveTime::MIN),
                    );
                    campaigns
                        .notice_booked(
                            &row.organization_id,
                            &row.id,
                            from.timestamp_millis(),
                            to.timestamp_millis(),
                            c.location.as_deref(),
                            c.provider.as_deref(),
                        )
                        .await?
                }
                None => {
                    campaigns
                        .notice_listed(&row.organization_id, &row.id, &c.patients)
                        .await?
                }
            },
        };
        let part2 = |t: &Option<String>| {
            t.as_ref().is_some_and(|t| {
                sender
                    .settings
                    .part2_appointment_types
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case(t))
            })
        };
        let mut members: Vec<CohortRow> = Vec::new();
        for n in noticed {
            if let Some(last) = members.last_mut()
                && last.patient_id == n.patient_id
            {
                if part2(&n.appointment_type) {
                    last.recall_type = n.appointment_type.unwrap_or_default();
                }
                continue;
            }
            members.push(CohortRow {
                recall_id: n.patient_id.clone(),
                recall_type: n.appointment_type.unwrap_or_default(),
                patient_id: n.patient_id,
                external_id: n.external_id,
                language: n.language,
                attempts: n.attempts,
                last_attempt_at: None,
            });
        }
        Ok(members)
    }

    async fn step(
        &self,
        sender: &Sender,
        c: &Campaign,
        member: &CohortRow,
        now: DateTime<Utc>,
    ) -> Result<Step, CampaignError> {
        if member.attempts >= c.max_attempts() {
            return Ok(Step::NotDue);
        }
        let settings = &sender.settings;
        let calendar = Calendar::of(settings, c.business_days);
        // Spacing counts the organization's calendar days: a daily run at 10:00 sends the
        // next attempt on the seventh day even if the first went out at 10:02.
        if let Some(last) = member.last_attempt_at
            && let Some(last) = DateTime::from_timestamp_millis(last)
            && (calendar.date(now) - calendar.date(last)).num_days() < c.spacing_days
        {
            return Ok(Step::NotDue);
        }
        let region = &settings.phone_region;
        let part2 = settings
            .part2_appointment_types
            .iter()
            .any(|p| p.eq_ignore_ascii_case(&member.recall_type));
        let points = self
            .store
            .patients()
            .contact_points(&member.patient_id)
            .await?;
        // What the gate reads for this patient, in one or two queries.
        let mut addresses = Vec::new();
        crate::reach::addresses_on(&c.channels, &points, region, &mut addresses);
        let channels: Vec<&str> = c.channels.iter().map(String::as_str).collect();
        let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
        let patient = [member.patient_id.as_str()];
        let ledger = self
            .store
            .consents()
            .ledger(
                &sender.organization_id,
                disclosure::ledger_purpose(disclosure::CAMPAIGN),
                &channels,
                &addresses,
                &patient,
            )
            .await?;
        let part2_consents = if part2 {
            self.store.consents().part2(&patient).await?
        } else {
            Default::default()
        };
        let points: Vec<_> = points.iter().collect();
        let reached = crate::reach::first_permitted(
            &Outreach {
                organization_id: &sender.organization_id,
                patient_id: &member.patient_id,
                purpose: disclosure::CAMPAIGN,
                part2,
            },
            &points,
            &c.channels,
            region,
            &Facts {
                ledger: &ledger,
                part2: &part2_consents,
                now: now.timestamp_millis(),
            },
        );
        let (channel, address) = match reached {
            Ok((channel, address, _permit)) => (channel.to_string(), address.into_string()),
            Err(unreachable) => return Ok(Step::Skip(unreachable.reason, unreachable.refusals)),
        };
        let locale = member
            .language
            .clone()
            .unwrap_or(settings.default_locale.clone());
        let date = c
            .appointments_on
            .as_deref()
            .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .map(|d| {
                if crate::templates::locale_tag(&locale) == "es" {
                    d.format("%d/%m/%Y").to_string()
                } else {
                    d.format("%a %b %-d").to_string()
                }
            });
        let context = minijinja::context! {
            organization => sender.name.clone(),
            portal_url => settings.portal_url.clone(),
            phone => settings.help_phone.clone().unwrap_or_default(),
            date => date,
        };
        let base = format!("{}/{channel}", c.template());
        let Ok(body) = self.templates.render(&base, &locale, "txt", &context) else {
            return Ok(Step::Skip(format!("no template {base}"), Vec::new()));
        };
        let subject = self
            .templates
            .render(&base, &locale, "subject", &context)
            .ok();
        Ok(Step::Send {
            channel,
            address,
            body,
            subject,
            part2,
        })
    }

    /// Counts what a run now would do, without sending or recording anything.
    pub async fn preview(&self, id: &str, now: DateTime<Utc>) -> Result<Preview, CampaignError> {
        let (row, c) = self.load(id).await?;
        let sender =
            crate::tenancy::sender(&self.store, &self.config, &row.organization_id).await?;
        let cohort = self.cohort(&row, &c, &sender, now).await?;
        let mut preview = Preview {
            cohort: cohort.len(),
            ..Preview::default()
        };
        for member in &cohort {
            let (outcome, channel, reason) = match self.step(&sender, &c, member, now).await? {
                Step::NotDue => continue,
                Step::Skip(reason, _) => {
                    *preview.skips.entry(reason.clone()).or_default() += 1;
                    ("skip", None, Some(reason))
                }
                Step::Send { channel, body, .. } => {
                    *preview.by_channel.entry(channel.clone()).or_default() += 1;
                    if preview.samples.len() < 3 {
                        preview.samples.push(format!("[{channel}] {body}"));
                    }
                    ("send", Some(channel), None)
                }
            };
            preview.due_now += 1;
            if preview.who.len() < PREVIEW_SAMPLE {
                preview.who.push(PreviewTarget {
                    patient: member.external_id.clone(),
                    outcome,
                    channel,
                    reason,
                });
            }
        }
        Ok(preview)
    }

    /// Sends the attempts due now, at most `per_minute` messages a minute (0 = no throttle);
    /// `progress(done, total)` is called after each member. Returns `(sent, skipped)`. A
    /// paused or cancelled campaign is not run.
    pub async fn run(
        &self,
        id: &str,
        now: DateTime<Utc>,
        per_minute: u32,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<(u64, u64), CampaignError> {
        let (row, c) = self.load(id).await?;
        if row.state != "active" {
            return Err(CampaignError::Invalid(format!(
                "the campaign is {}{}",
                row.state,
                if row.state == "paused" {
                    "; resume it first"
                } else {
                    ""
                }
            )));
        }
        let pause = (per_minute > 0).then(|| Duration::from_secs_f64(60.0 / f64::from(per_minute)));
        let report = self.pass(&row, &c, now, None, pause, progress).await?;
        Ok((report.sent, report.skipped))
    }

    /// One pass over a campaign: each member due now is skipped (recorded with its reason and
    /// the gate's refusals audited) or sent, until `budget` messages went out (None: no limit).
    /// Without a `pause` between messages, sends go in batches of [`SEND_BATCH`], up to
    /// [`SEND_CONCURRENCY`] accepts in flight at once (each one member's: its message under
    /// its key, then its attempt).
    async fn pass(
        &self,
        row: &CampaignRow,
        c: &Campaign,
        now: DateTime<Utc>,
        budget: Option<u64>,
        pause: Option<Duration>,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<PassReport, CampaignError> {
        let sender =
            crate::tenancy::sender(&self.store, &self.config, &row.organization_id).await?;
        let cohort = self.cohort(row, c, &sender, now).await?;
        let total = cohort.len();
        let mut report = PassReport {
            finished: true,
            ..PassReport::default()
        };
        let mut planned = 0_u64;
        let mut done = 0_usize;
        let mut batch = Vec::new();
        for member in &cohort {
            if budget.is_some_and(|b| planned >= b) {
                report.finished = false;
                break;
            }
            let attempt = member.attempts + 1;
            match self.step(&sender, c, member, now).await? {
                Step::NotDue => {}
                Step::Skip(reason, refusals) => {
                    if self
                        .store
                        .campaigns()
                        .record_target(
                            &row.id,
                            &row.organization_id,
                            &member.recall_id,
                            &member.patient_id,
                            attempt,
                            "skipped",
                            Some(&reason),
                            None,
                            None,
                            now.timestamp_millis(),
                        )
                        .await?
                    {
                        report.skipped += 1;
                        let actor = format!("campaign:{}", row.id);
                        let rows: Vec<_> = refusals
                            .iter()
                            .map(|r| r.audit(&actor, None, None))
                            .collect();
                        self.store.audit().record_all(&rows).await?;
                    }
                }
                Step::Send {
                    channel,
                    address,
                    body,
                    subject,
                    part2,
                } => {
                    planned += 1;
                    let out = Outgoing {
                        channel,
                        address,
                        body,
                        subject,
                        part2,
                    };
                    match pause {
                        Some(pause) => {
                            report.sent +=
                                u64::from(self.send_one(row, c, member, attempt, out, now).await?);
                            tokio::time::sleep(pause).await;
                        }
                        None => {
                            batch.push((member, attempt, out));
                            if batch.len() >= SEND_BATCH {
                                let n = batch.len();
                                report.sent += self
                                    .send_batch(row, c, std::mem::take(&mut batch), now)
                                    .await?;
                                done += n;
                                progress(done, total);
                            }
                            continue;
                        }
                    }
                }
            }
            done += 1;
            progress(done, total);
        }
        if !batch.is_empty() {
            let n = batch.len();
            report.sent += self.send_batch(row, c, batch, now).await?;
            done += n;
            progress(done, total);
        }
        Ok(report)
    }

    /// Sends a batch, [`SEND_CONCURRENCY`] at a time; the attempts newly recorded.
    async fn send_batch(
        &self,
        row: &CampaignRow,
        c: &Campaign,
        batch: Vec<(&CohortRow, i64, Outgoing)>,
        now: DateTime<Utc>,
    ) -> Result<u64, CampaignError> {
        let mut sent = 0;
        let mut waiting = batch.into_iter();
        let mut in_flight = FuturesUnordered::new();
        loop {
            while in_flight.len() < SEND_CONCURRENCY
                && let Some((member, attempt, out)) = waiting.next()
            {
                in_flight.push(self.send_one(row, c, member, attempt, out, now));
            }
            match in_flight.next().await {
                Some(result) => sent += u64::from(result?),
                None => break,
            }
        }
        Ok(sent)
    }

    /// Accepts one member's message under its key, then records the attempt; `false` when the
    /// attempt was recorded already (a concurrent or repeated run).
    async fn send_one(
        &self,
        row: &CampaignRow,
        c: &Campaign,
        member: &CohortRow,
        attempt: i64,
        out: Outgoing,
        now: DateTime<Utc>,
    ) -> Result<bool, CampaignError> {
        let mut metadata = serde_json::Map::new();
        metadata.insert("purpose".into(), disclosure::CAMPAIGN.into());
        metadata.insert("campaign_id".into(), row.id.clone().into());
        let target = match c.kind {
            CampaignKind::Recall => "recall_id",
            CampaignKind::Notice => "notice_patient_id",
        };
        metadata.insert(target.into(), member.recall_id.clone().into());
        let mut request = SendRequest::notice(
            Some(member.external_id.clone()),
            &out.channel,
            out.address,
            out.subject,
            out.body,
            metadata,
        );
        request.part2 = out.part2;
        let key = format!("campaign:{}:{}:{attempt}", row.id, member.recall_id);
        let accepted = self
            .messages
            .accept(&row.organization_id, &request, Some(&key))
            .await?;
        crate::testing_hooks::kill_point("campaign-accepted");
        Ok(self
            .store
            .campaigns()
            .record_target(
                &row.id,
                &row.organization_id,
                &member.recall_id,
                &member.patient_id,
                attempt,
                "sent",
                None,
                Some(&out.channel),
                Some(&accepted.message_id),
                now.timestamp_millis(),
            )
            .await?)
    }

    /// The scheduled runs due at `now` (the reminder pass calls this under its lease): each
    /// active campaign whose run is due sends what is due, within its throttle and only while
    /// the organization is open; a finished run plans the next one from the schedule.
    pub async fn scheduled(&self, now: DateTime<Utc>) -> Result<PassReport, CampaignError> {
        let mut total = PassReport {
            finished: true,
            ..PassReport::default()
        };
        let due = self
            .store
            .campaigns()
            .due(now.timestamp_millis(), DUE_PER_PASS)
            .await?;
        for row in due {
            match self.scheduled_one(&row, now).await {
                Ok(report) => {
                    if report.sent + report.skipped > 0 {
                        info!(
                            campaign_id = %row.id,
                            sent = report.sent,
                            skipped = report.skipped,
                            finished = report.finished,
                            "campaign pass"
                        );
                    }
                    total.sent += report.sent;
                    total.skipped += report.skipped;
                    total.finished &= report.finished;
                }
                // One campaign's failure (an unreadable definition) does not stop the others.
                Err(e) => {
                    warn!(campaign_id = %row.id, error = %e, "campaign pass failed");
                    total.finished = false;
                }
            }
        }
        Ok(total)
    }

    async fn scheduled_one(
        &self,
        row: &CampaignRow,
        now: DateTime<Utc>,
    ) -> Result<PassReport, CampaignError> {
        let c = definition(row)?;
        let sender =
            crate::tenancy::sender(&self.store, &self.config, &row.organization_id).await?;
        let calendar = Calendar::of(&sender.settings, c.business_days);
        if !calendar.is_open(now) {
            // Quiet hours or a closed day began during the run: it waits.
            return Ok(PassReport::default());
        }
        // At most `throttle_per_minute` a minute: the time since the last pass that sent buys
        // messages at that rate, up to one minute's worth (the first pass: one minute's).
        let budget = match c.throttle_per_minute {
            0 => None,
            rate => {
                let rate = u64::from(rate);
                let elapsed = row.last_pass_at.map_or(60_000, |last| {
                    (now.timestamp_millis() - last).clamp(0, 60_000)
                });
                let budget = rate * elapsed.unsigned_abs() / 60_000;
                if budget == 0 {
                    // Too soon: the time accumulates until it buys one message.
                    return Ok(PassReport::default());
                }
                Some(budget.min(rate))
            }
        };
        let report = self
            .pass(row, &c, now, budget, None, &|_: usize, _: usize| {})
            .await?;
        let next = if report.finished {
            c.schedule
                .as_deref()
                .and_then(|e| schedule::parse(e).ok())
                .and_then(|s| schedule::next_run(&s, &calendar, now))
                .map(|t| t.timestamp_millis())
        } else {
            row.next_run_at
        };
        self.store
            .campaigns()
            .passed(&row.id, now.timestamp_millis(), next)
            .await?;
        Ok(report)
    }

    pub async fn report(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<CampaignCounts, CampaignError> {
        self.store.campaigns().get(id).await?;
        Ok(self
            .store
            .campaigns()
            .counts(id, now.timestamp_millis())
            .await?)
    }
}

/// A stored campaign's definition.
pub fn definition(row: &CampaignRow) -> Result<Campaign, CampaignError> {
    serde_json::from_str(&row.definition).map_err(|e| CampaignError::Invalid(e.to_string()))
}
