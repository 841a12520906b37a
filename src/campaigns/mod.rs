//! Recall campaigns: outreach to a cohort of open recalls (type, due dates, provider,
//! location) whose patients have nothing booked. Each recall gets up to `attempts` messages
//! `spacing_days` apart, and stops as soon as the patient books. `preview` is a dry run (counts
//! per channel and per skip reason, sample renders); `run` sends with a throttle; `report` counts
//! targeted, sent, delivered, failed, confirmed and booked. Attempts are unique per (campaign,
//! recall, attempt) and messages carry the idempotency key `campaign:<id>:<recall>:<attempt>`,
//! so an interrupted run can simply be started again.
//!
//! Each message passes the disclosure gate (`crate::disclosure`) on the channel it would take:
//! the first channel the gate permits is used; a recall whose type the organization lists in
//! `part2_appointment_types` is a Part 2 disclosure (the patient's Part 2 consent is needed,
//! and the message is flagged `part2` for the worker's own check). A run records the gate's
//! refusals as `disclosure_refused` audit rows; a preview records nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::channels::Sender;
use crate::config::Config;
use crate::disclosure::{self, Facts, Refusal};
use crate::domain::Channel;
use crate::messages::{MessageError, MessageService, SendRequest};
use crate::reach::Outreach;
use crate::store::{CampaignCounts, CohortRow, Store, StoreError};
use crate::templates::Templates;

#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Message(#[from] MessageError),
    #[error("campaign definition: {0}")]
    Invalid(String),
}

/// What a campaign targets and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    pub name: String,
    #[serde(default)]
    pub recall_type: Option<String>,
    /// Recalls due between these dates (YYYY-MM-DD, inclusive).
    pub due_from: String,
    pub due_to: String,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default = "three")]
    pub attempts: i64,
    #[serde(default = "seven")]
    pub spacing_days: i64,
    #[serde(default = "sms_then_email")]
    pub channels: Vec<String>,
    #[serde(default = "recall_template")]
    pub template: String,
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
fn recall_template() -> String {
    "recall".into()
}

impl Campaign {
    pub fn validate(&self) -> Result<(), CampaignError> {
        for date in [&self.due_from, &self.due_to] {
            chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
                .map_err(|_| CampaignError::Invalid(format!("{date:?} is not YYYY-MM-DD")))?;
        }
        if !(1..=10).contains(&self.attempts) || self.spacing_days < 1 {
            return Err(CampaignError::Invalid(
                "attempts must be 1 to 10 and spacing_days at least 1".into(),
            ));
        }
        if self.channels.is_empty() {
            return Err(CampaignError::Invalid("give at least one channel".into()));
        }
        Ok(())
    }
}

/// The dry run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Preview {
    pub cohort: usize,
    pub due_now: usize,
    pub by_channel: BTreeMap<String, usize>,
    pub skips: BTreeMap<String, usize>,
    pub samples: Vec<String>,
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
    async fn load(&self, id: &str) -> Result<(crate::store::CampaignRow, Campaign), CampaignError> {
        let row = self.store.campaigns().get(id).await?;
        let campaign: Campaign = serde_json::from_str(&row.definition)
            .map_err(|e| CampaignError::Invalid(e.to_string()))?;
        Ok((row, campaign))
    }

    async fn cohort(
        &self,
        row: &crate::store::CampaignRow,
        c: &Campaign,
        now: DateTime<Utc>,
    ) -> Result<Vec<CohortRow>, CampaignError> {
        Ok(self
            .store
            .campaigns()
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
            .await?)
    }

    async fn step(
        &self,
        sender: &Sender,
        c: &Campaign,
        member: &CohortRow,
        now: DateTime<Utc>,
    ) -> Result<Step, CampaignError> {
        if member.attempts >= c.attempts {
            return Ok(Step::NotDue);
        }
        if let Some(last) = member.last_attempt_at
            && now.timestamp_millis() < last + c.spacing_days * 86_400_000
        {
            return Ok(Step::NotDue);
        }
        let settings = &sender.settings;
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
        let context = minijinja::context! {
            organization => sender.name.clone(),
            portal_url => settings.portal_url.clone(),
            phone => settings.help_phone.clone().unwrap_or_default(),
        };
        let base = format!("{}/{channel}", c.template);
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
        let cohort = self.cohort(&row, &c, now).await?;
        let mut preview = Preview {
            cohort: cohort.len(),
            ..Preview::default()
        };
        let sender =
            crate::tenancy::sender(&self.store, &self.config, &row.organization_id).await?;
        for member in &cohort {
            match self.step(&sender, &c, member, now).await? {
                Step::NotDue => {}
                Step::Skip(reason, _) => {
                    preview.due_now += 1;
                    *preview.skips.entry(reason).or_default() += 1;
                }
                Step::Send { channel, body, .. } => {
                    preview.due_now += 1;
                    *preview.by_channel.entry(channel.clone()).or_default() += 1;
                    if preview.samples.len() < 3 {
                        preview.samples.push(format!("[{channel}] {body}"));
                    }
                }
            }
        }
        Ok(preview)
    }

    /// Sends the attempts due now, at most `per_minute` messages a minute (0 = no throttle);
    /// `progress(done, total)` is called after each member. Returns `(sent, skipped)`.
    pub async fn run(
        &self,
        id: &str,
        now: DateTime<Utc>,
        per_minute: u32,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<(u64, u64), CampaignError> {
        let (row, c) = self.load(id).await?;
        let cohort = self.cohort(&row, &c, now).await?;
        let pause = (per_minute > 0).then(|| Duration::from_secs_f64(60.0 / f64::from(per_minute)));
        let sender =
            crate::tenancy::sender(&self.store, &self.config, &row.organization_id).await?;
        let (mut sent, mut skipped) = (0, 0);
        for (i, member) in cohort.iter().enumerate() {
            let attempt = member.attempts + 1;
            match self.step(&sender, &c, member, now).await? {
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
                        skipped += 1;
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
                    let mut metadata = serde_json::Map::new();
                    metadata.insert("purpose".into(), disclosure::CAMPAIGN.into());
                    metadata.insert("campaign_id".into(), row.id.clone().into());
                    metadata.insert("recall_id".into(), member.recall_id.clone().into());
                    let mut request = SendRequest::notice(
                        Some(member.external_id.clone()),
                        &channel,
                        address,
                        subject,
                        body,
                        metadata,
                    );
                    request.part2 = part2;
                    let key = format!("campaign:{}:{}:{attempt}", row.id, member.recall_id);
                    let accepted = self
                        .messages
                        .accept(&row.organization_id, &request, Some(&key))
                        .await?;
                    if self
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
                            Some(&channel),
                            Some(&accepted.message_id),
                            now.timestamp_millis(),
                        )
                        .await?
                    {
                        sent += 1;
                    }
                    if let Some(pause) = pause {
                        tokio::time::sleep(pause).await;
                    }
                }
            }
            progress(i + 1, cohort.len());
        }
        Ok((sent, skipped))
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
