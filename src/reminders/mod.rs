//! Appointment reminders: rules (config or API), planning, sending, and patients' answers.
//!
//! A run — on the `reminders.schedule` cron (every minute by default) and once at start-up,
//! leased so one daemon of a fleet runs it ([`cron`]) — does three things:
//! 1. **plan** — for every appointment starting within the horizon, each matching rule's touches
//!    are recorded once (unique on appointment, rule, touch and start time), due at the touch
//!    time moved out of quiet hours in the patient's time zone; touches already too late are
//!    recorded as skipped. Planned touches of rescheduled, cancelled or no-show appointments are
//!    cancelled (a reschedule then plans new ones for the new time).
//! 2. **send** — each due touch is checked again at send time (appointment still on, not too
//!    late, contact point, minors' guardians, frequency caps, and the disclosure gate: consent,
//!    Part 2 for appointment types in `part2_appointment_types`); it either ends
//!    `skipped` with a reason a person can read, or becomes a message accepted with the
//!    idempotency key `touch:<id>`, so a crash between accepting and marking it sent can never
//!    produce a second reminder (the next run finds the message and marks the touch with it).
//!    The checks of a batch of due touches read their data in a few queries, not a few per
//!    touch. Delivery then follows the normal queue, whose worker passes the gate again (the
//!    message is flagged `part2` when the appointment is).
//!
//! 3. **campaigns** — scheduled campaigns whose run is due send what is due
//!    ([`crate::campaigns::Campaigns::scheduled`]).
//!
//! Answers (C/Y/YES/CONFIRM, N/NO, R) arrive from the SMS webhook through [`ReplyRouter`]: they
//! are recorded on the appointment's `confirmation` (never its status, which staff own) with an
//! event, and cancel/reschedule become requests for staff. The answer text (date, time, place)
//! is handed back with its Part 2 flag; the inbound side passes it through the gate.

pub mod cron;
pub mod rules;
pub mod schedule;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use futures::FutureExt;
use tracing::{debug, error, info, warn};

use crate::config::Touch;
use crate::config::{Config, OrganizationConfig, ReminderRule};
use crate::disclosure::{self, Facts};
use crate::domain::Channel;
use crate::inbound::keywords::ReminderReply;
use crate::inbound::{Answer, InboundError, ReplyOrigin, ReplyRouter};
use crate::messages::{MessageError, MessageService, ResolvedThread, SendRequest};
use crate::reach::{Outreach, Unreachable};
use crate::store::{
    AcceptedTouch, AppointmentRow, AuditEntry, ConsentLedger, ContactPointRow, NewTouch,
    Part2Consents, PatientRow, PlanRow, Store, StoreError, TouchOutcome, TouchRow,
};
use crate::templates::Templates;
use schedule::{When, parse_clock};

const LEASE: &str = "reminders";
pub const CURSOR_CHANGED: &str = "reminders-plan-changed";
/// The end of the last run's recording window (unix ms, the run's own clock).
pub const CURSOR_RECORDED: &str = "reminders-plan-recorded";
/// Appointments changed this long before the last run are looked at again (commit races).
const CHANGE_MARGIN_MS: i64 = 5_000;
/// Accepts in flight at once while sending a batch: one full group commit (`MAX_BATCH`).
const SEND_CONCURRENCY: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum ReminderError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Message(#[from] MessageError),
    /// A rule of the organization fails [`ReminderRule::validate`] (or cannot be read): the
    /// organization is not planned until it is fixed. `rule` is its id, or `#<n>` (1-based
    /// position) when the id itself is unusable.
    #[error("rule {rule}: {reason}")]
    Rule { rule: String, reason: String },
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunReport {
    pub planned: u64,
    pub cancelled: u64,
    pub sent: u64,
    pub skipped: u64,
    /// Messages sent and attempts skipped by scheduled campaigns in this run.
    pub campaign_sent: u64,
    pub campaign_skipped: u64,
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

/// A planning run's recording window: touches of appointments starting before `end` plus
/// the touch's lead are recorded (unix ms).
#[derive(Debug, Clone, Copy)]
struct Window {
    now: i64,
    end: i64,
}

/// Sorted, overlapping or touching ranges joined.
fn merged(ranges: impl Iterator<Item = (i64, i64)>) -> Vec<(i64, i64)> {
    let mut ranges: Vec<(i64, i64)> = ranges.collect();
    ranges.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

impl OrgPlan {
    /// Each touch's start-time range in `window`: an appointment starting outside it has no
    /// row to get for that touch now. Its time is not yet inside the window (the start is at
    /// or after the window's end plus the touch's longest lead), or it is past any use (the
    /// latest it can be due, quiet hours included, is more than the grace ago, or the
    /// appointment has started). In rule order.
    fn ranges(&self, window: Window) -> Vec<(i64, i64)> {
        let open = parse_clock(&self.settings.quiet_hours_start).unwrap_or_default();
        let close = parse_clock(&self.settings.quiet_hours_end).unwrap_or_default();
        let shift = schedule::max_quiet_shift(open, close).num_milliseconds();
        let grace = grace_ms(&self.settings);
        self.rules
            .iter()
            .flat_map(|(_, touches)| touches.iter())
            .map(|(_, when)| {
                let (lo, _) = schedule::lead(*when, self.settings.holidays.len());
                let from = window
                    .now
                    .saturating_sub(grace)
                    .saturating_add(lo.num_milliseconds())
                    .saturating_sub(shift);
                // An appointment that has started gets no reminder at all.
                (from.max(window.now), self.end_for(window.end, *when))
            })
            .collect()
    }

    /// The start before which an appointment's `when` touch is recorded in a window ending
    /// at `window_end`.
    fn end_for(&self, window_end: i64, when: When) -> i64 {
        let (_, hi) = schedule::lead(when, self.settings.holidays.len());
        window_end.saturating_add(hi.num_milliseconds())
    }

    /// Whether reminders about this appointment type are Part 2 disclosures.
    fn part2_type(&self, appointment_type: Option<&String>) -> bool {
        appointment_type.is_some_and(|t| {
            self.settings
                .part2_appointment_types
                .iter()
                .any(|p| p.eq_ignore_ascii_case(t))
        })
    }

    fn touch_spec(&self, rule_id: &str, touch_id: &str) -> Option<&Touch> {
        self.rules
            .iter()
            .find(|(r, _)| r.id == rule_id)
            .and_then(|(r, _)| r.touches.iter().find(|t| t.id == touch_id))
    }
}

/// What the send-time checks of a batch of due touches read, loaded in a few queries.
#[derive(Default)]
struct Batch {
    /// Touches whose message is already accepted (`touch:<id>`), by touch id.
    accepted: HashMap<String, AcceptedTouch>,
    appointments: HashMap<String, AppointmentRow>,
    patients: HashMap<String, PatientRow>,
    points: HashMap<String, Vec<ContactPointRow>>,
    /// Reminders sent per patient in the last day and week.
    sent_counts: HashMap<String, (i64, i64)>,
    /// Part 2 consents of the patients whose appointment type is restricted.
    part2: Part2Consents,
    /// Consent entries (purpose `reminders`) per organization.
    ledgers: HashMap<String, ConsentLedger>,
    /// Each patient's open thread.
    threads: HashMap<String, String>,
}

/// A touch that passed its checks: the message to accept for it.
struct Prepared {
    touch_id: String,
    organization_id: String,
    channel: Channel,
    request: SendRequest,
    thread: ResolvedThread,
}

/// Why a touch is skipped: the reason a person reads, and the gate's refusals (audited).
struct Skip {
    reason: String,
    refusals: Vec<disclosure::Refusal>,
}

impl From<String> for Skip {
    fn from(reason: String) -> Self {
        Self {
            reason,
            refusals: Vec::new(),
        }
    }
}

impl From<&str> for Skip {
    fn from(reason: &str) -> Self {
        reason.to_string().into()
    }
}

impl From<Unreachable> for Skip {
    fn from(u: Unreachable) -> Self {
        Self {
            reason: u.reason,
            refusals: u.refusals,
        }
    }
}

fn skipped(touch: &TouchRow, reason: String) -> TouchOutcome {
    TouchOutcome {
        id: touch.id.clone(),
        status: "skipped",
        reason: Some(reason),
        channel: None,
        message_id: None,
    }
}

impl Reminders {
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
        // Scheduled campaigns run in the same leased pass: once across a fleet.
        let campaigns = crate::campaigns::Campaigns {
            store: self.store.clone(),
            messages: self.messages.clone(),
            config: self.config.clone(),
            templates: self.templates.clone(),
        };
        match campaigns.scheduled(now).await {
            Ok(pass) => {
                report.campaign_sent = pass.sent;
                report.campaign_skipped = pass.skipped;
            }
            Err(e) => warn!(error = %e, "scheduled campaigns"),
        }
        Ok(report)
    }

    /// The organization's settings and rules ([`org_plan`]).
    async fn org_plan(&self, organization_id: &str) -> Result<OrgPlan, ReminderError> {
        org_plan(&self.store, &self.config, organization_id).await
    }

    /// Records the touches that come into the recording window (`reminders.plan_ahead_hours`)
    /// and cancels stale ones. Incremental: only appointments changed since the last run, or
    /// whose touches came into the window since, are looked at (a daemon's first run looks at
    /// all of them). A touch is recorded once its appointment starts within the window plus the
    /// touch's lead ([`schedule::lead`], an upper bound), so before it can be due; touches
    /// further out are not written yet ([`plan_of`] computes them when asked).
    pub async fn plan(&self, now: DateTime<Utc>) -> Result<RunReport, ReminderError> {
        let started = std::time::Instant::now();
        let store_now = crate::store::now_ms();
        let changed_since = self
            .store
            .cursors()
            .get(CURSOR_CHANGED)
            .await?
            .map_or(0, |c| c - CHANGE_MARGIN_MS);
        // Where the last run's window ended; none: look at everything.
        let recorded_to = match self.store.cursors().get(CURSOR_RECORDED).await? {
            Some(h) if changed_since > 0 => Some(h),
            _ => None,
        };
        let cancelled = self
            .store
            .reminders()
            .cancel_stale_touches(changed_since)
            .await?;
        let now_ms = now.timestamp_millis();
        let window = Window {
            now: now_ms,
            end: now_ms.saturating_add(self.config.reminders.plan_ahead_ms()),
        };
        // Each organization on its own: an invalid rule or a panic skips that organization
        // only (logged by id); the others are planned and the cursors move on. A store error
        // skips it too, but keeps the cursors so the next run looks at these appointments again.
        let mut touches = Vec::new();
        let mut again = false;
        let mut appointments = 0;
        for organization_id in self.store.organizations().ids().await? {
            let planned = AssertUnwindSafe(self.plan_organization(
                &organization_id,
                window,
                changed_since,
                recorded_to,
            ))
            .catch_unwind()
            .await;
            match planned {
                Ok(Ok((looked_at, mut planned))) => {
                    appointments += looked_at;
                    touches.append(&mut planned);
                }
                Ok(Err(e @ ReminderError::Rule { .. })) => warn!(
                    %organization_id,
                    error = %e,
                    "reminder rules invalid: organization skipped until they are fixed"
                ),
                Ok(Err(e)) => {
                    again = true;
                    warn!(%organization_id, error = %e, "planning reminders failed: organization skipped this run");
                }
                Err(_) => error!(
                    %organization_id,
                    "planning reminders panicked: organization skipped"
                ),
            }
        }
        let computed = started.elapsed();
        let planned = self.store.reminders().insert_touches(&touches).await?;
        debug!(
            appointments,
            touches = touches.len(),
            planned,
            read_and_compute_ms = computed.as_millis() as u64,
            insert_ms = started.elapsed().saturating_sub(computed).as_millis() as u64,
            "planning run"
        );
        if !again {
            self.store.cursors().set(CURSOR_CHANGED, store_now).await?;
            self.store
                .cursors()
                .set(CURSOR_RECORDED, window.end)
                .await?;
        }
        Ok(RunReport {
            planned,
            cancelled,
            ..RunReport::default()
        })
    }

    /// The touches to record for one organization's appointments (a test may make it panic),
    /// with how many appointments were looked at.
    async fn plan_organization(
        &self,
        organization_id: &str,
        window: Window,
        changed_since: i64,
        recorded_to: Option<i64>,
    ) -> Result<(usize, Vec<NewTouch>), ReminderError> {
        #[cfg(test)]
        tests::maybe_panic(organization_id);
        let org = self.org_plan(organization_id).await?;
        // Each touch's start range now; for an incremental run, also where the range starts
        // past the last run's (what came into the window since).
        let ranges = org.ranges(window);
        let possible = merged(ranges.iter().copied().filter(|(lo, hi)| lo < hi));
        if possible.is_empty() {
            return Ok((0, Vec::new()));
        }
        let entered = recorded_to.map(|to| {
            let last = org.ranges(Window {
                now: window.now,
                end: to,
            });
            merged(
                ranges
                    .iter()
                    .zip(last)
                    .map(|(now, last)| (now.0.max(last.1), now.1))
                    .filter(|(lo, hi)| lo < hi),
            )
        });
        let rows = self
            .store
            .reminders()
            .appointments_to_plan(
                organization_id,
                &possible,
                changed_since,
                entered.as_deref(),
            )
            .await?;
        let mut touches = Vec::with_capacity(rows.len() * 2);
        for (i, appointment) in rows.iter().enumerate() {
            if i % 1024 == 1023 {
                tokio::task::yield_now().await;
            }
            plan_appointment(
                &org,
                appointment,
                window.now,
                Some(window.end),
                &mut touches,
            );
        }
        Ok((rows.len(), touches))
    }

    /// The next run plans every upcoming appointment again (after a rule or config change).
    pub async fn replan_all(&self) -> Result<(), ReminderError> {
        Ok(replan_all(&self.store).await?)
    }

    /// Sends (or skips) up to `limit` due touches. The send-time checks read what they need for
    /// the whole batch in a few queries ([`Batch`]); the accepts run several at once (their
    /// writes share group commits); the outcomes are recorded in one transaction. A touch whose
    /// message a previous run accepted but did not mark (a crash in between) is marked with
    /// that message, unchecked and unsent again. Returns `(sent, skipped)`.
    pub async fn send_due(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<(u64, u64), ReminderError> {
        use futures::StreamExt;
        let started = std::time::Instant::now();
        let now_ms = now.timestamp_millis();
        let due = self.store.reminders().due_touches(now_ms, limit).await?;
        if due.is_empty() {
            return Ok((0, 0));
        }
        let mut orgs: HashMap<String, Arc<OrgPlan>> = HashMap::new();
        // Organizations whose rules cannot be used: their due touches are skipped with this
        // reason (left planned, they would fill every batch and starve the others).
        let mut unusable: HashMap<String, String> = HashMap::new();
        for touch in &due {
            let id = &touch.organization_id;
            if orgs.contains_key(id) || unusable.contains_key(id) {
                continue;
            }
            match AssertUnwindSafe(self.org_plan(id)).catch_unwind().await {
                Ok(Ok(plan)) => {
                    orgs.insert(id.clone(), Arc::new(plan));
                }
                Ok(Err(e @ ReminderError::Rule { .. })) => {
                    warn!(organization_id = %id, error = %e, "reminder rules invalid: due touches skipped");
                    unusable.insert(id.clone(), format!("reminder rules invalid: {e}"));
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    error!(organization_id = %id, "loading reminder rules panicked: due touches skipped");
                    unusable.insert(
                        id.clone(),
                        "internal error while checking (see the daemon log)".into(),
                    );
                }
            }
        }
        let batch = self.load_batch(&due, &orgs, now).await?;
        let loaded = started.elapsed();

        let mut outcomes: Vec<TouchOutcome> = Vec::with_capacity(due.len());
        let mut refusals: Vec<AuditEntry> = Vec::new();
        let mut to_send: Vec<Prepared> = Vec::new();
        // Reminders this batch sends, per patient: the frequency caps count them too.
        let mut sending: HashMap<&str, i64> = HashMap::new();
        for (i, touch) in due.iter().enumerate() {
            // Rendering is CPU work: let the runtime's other tasks in now and then.
            if i % 64 == 63 {
                tokio::task::yield_now().await;
            }
            let Some(org) = orgs.get(&touch.organization_id) else {
                if let Some(reason) = unusable.get(&touch.organization_id) {
                    outcomes.push(skipped(touch, reason.clone()));
                }
                continue;
            };
            if let Some(done) = batch.accepted.get(&touch.id) {
                *sending.entry(touch.patient_id.as_str()).or_default() += 1;
                outcomes.push(TouchOutcome {
                    id: touch.id.clone(),
                    status: "sent",
                    reason: None,
                    channel: done.channel.clone(),
                    message_id: Some(done.message_id.clone()),
                });
                continue;
            }
            let already = sending.get(touch.patient_id.as_str()).copied().unwrap_or(0);
            let prepared = std::panic::catch_unwind(AssertUnwindSafe(|| {
                self.prepare(org, touch, &batch, already, now)
            }))
            .unwrap_or_else(|_| {
                error!(touch_id = %touch.id, "checking a reminder touch panicked");
                Err("internal error while checking (see the daemon log)".into())
            });
            match prepared {
                Ok(prepared) => {
                    *sending.entry(touch.patient_id.as_str()).or_default() += 1;
                    to_send.push(prepared);
                }
                Err(skip) => {
                    refusals.extend(
                        skip.refusals
                            .iter()
                            .map(|r| r.audit("reminders", None, None)),
                    );
                    outcomes.push(skipped(touch, skip.reason));
                }
            }
        }
        // The gate's refusals, audited (with the touches' outcomes below, in the same pass).
        self.store.audit().record_all(&refusals).await?;

        let accepted: Vec<(Prepared, Result<String, MessageError>)> =
            futures::stream::iter(to_send)
                .map(|p| async move {
                    let result = self
                        .messages
                        .accept_in_thread(
                            &p.organization_id,
                            &p.request,
                            Some(&format!("touch:{}", p.touch_id)),
                            p.thread.clone(),
                        )
                        .await
                        .map(|a| a.message_id);
                    (p, result)
                })
                .buffer_unordered(SEND_CONCURRENCY)
                .collect()
                .await;
        let checked_and_accepted = started.elapsed();
        let mut failure = None;
        for (p, result) in accepted {
            match result {
                Ok(message_id) => outcomes.push(TouchOutcome {
                    id: p.touch_id,
                    status: "sent",
                    reason: None,
                    channel: Some(p.channel.to_string()),
                    message_id: Some(message_id),
                }),
                // The request itself is unacceptable: no run would do better.
                Err(
                    e @ (MessageError::Invalid { .. } | MessageError::ChannelNotConfigured { .. }),
                ) => outcomes.push(TouchOutcome {
                    id: p.touch_id,
                    status: "skipped",
                    reason: Some(format!("not accepted: {e}")),
                    channel: None,
                    message_id: None,
                }),
                // Left planned: the next run tries again (and replays what was accepted).
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        let moved = self
            .store
            .reminders()
            .finish_touches(&outcomes, now_ms)
            .await?;
        debug!(
            touches = due.len(),
            load_ms = loaded.as_millis(),
            accept_ms = (checked_and_accepted - loaded).as_millis(),
            finish_ms = (started.elapsed() - checked_and_accepted).as_millis(),
            "reminder batch"
        );
        if let Some(e) = failure {
            return Err(e.into());
        }
        let (mut sent, mut skipped) = (0, 0);
        for outcome in outcomes.iter().filter(|o| moved.contains(&o.id)) {
            if outcome.status == "sent" {
                sent += 1;
            } else {
                skipped += 1;
            }
        }
        Ok((sent, skipped))
    }

    /// Loads everything the send-time checks of `due` read.
    async fn load_batch(
        &self,
        due: &[TouchRow],
        orgs: &HashMap<String, Arc<OrgPlan>>,
        now: DateTime<Utc>,
    ) -> Result<Batch, ReminderError> {
        let now_ms = now.timestamp_millis();
        let mut accepted = HashMap::new();
        for organization_id in orgs.keys() {
            let ids: Vec<&str> = due
                .iter()
                .filter(|t| &t.organization_id == organization_id)
                .map(|t| t.id.as_str())
                .collect();
            accepted.extend(
                self.store
                    .reminders()
                    .accepted_touches(organization_id, &ids)
                    .await?,
            );
        }
        let pending: Vec<&TouchRow> = due
            .iter()
            .filter(|t| !accepted.contains_key(&t.id))
            .collect();
        if pending.is_empty() {
            return Ok(Batch {
                accepted,
                ..Batch::default()
            });
        }
        let appointment_ids: Vec<&str> =
            pending.iter().map(|t| t.appointment_id.as_str()).collect();
        let patient_ids: Vec<&str> = pending.iter().map(|t| t.patient_id.as_str()).collect();
        let (appointments, patients, points, sent_counts) = futures::try_join!(
            self.store.reminders().appointments_by_ids(&appointment_ids),
            self.store.reminders().patients_by_ids(&patient_ids),
            self.store
                .reminders()
                .contact_points_by_patient(&patient_ids),
            self.store.reminders().sent_counts(
                &patient_ids,
                now_ms - 86_400_000,
                now_ms - 7 * 86_400_000
            ),
        )?;

        // Part 2: only patients whose appointment type is restricted need their consents.
        let part2_patients: Vec<&str> = pending
            .iter()
            .filter(|t| {
                orgs.get(&t.organization_id).is_some_and(|o| {
                    o.part2_type(
                        appointments
                            .get(&t.appointment_id)
                            .and_then(|a| a.appointment_type.as_ref()),
                    )
                })
            })
            .map(|t| t.patient_id.as_str())
            .collect();
        let part2 = if part2_patients.is_empty() {
            Part2Consents::default()
        } else {
            self.store.consents().part2(&part2_patients).await?
        };

        // Consents and threads are per organization. The ledger covers every address any of
        // the touch's channels could pick from any of the patient's contact points.
        let mut ledgers = HashMap::new();
        let mut threads = HashMap::new();
        for (organization_id, org) in orgs {
            let touches: Vec<&&TouchRow> = pending
                .iter()
                .filter(|t| &t.organization_id == organization_id)
                .collect();
            if touches.is_empty() {
                continue;
            }
            let mut channels: Vec<&str> = Vec::new();
            let mut addresses: Vec<String> = Vec::new();
            for touch in &touches {
                let Some(spec) = org.touch_spec(&touch.rule_id, &touch.touch_id) else {
                    continue;
                };
                let no_points = Vec::new();
                let patient_points = points.get(&touch.patient_id).unwrap_or(&no_points);
                channels.extend(spec.channels.iter().map(String::as_str));
                crate::reach::addresses_on(
                    &spec.channels,
                    patient_points,
                    &org.settings.phone_region,
                    &mut addresses,
                );
            }
            let org_patients: Vec<&str> = touches.iter().map(|t| t.patient_id.as_str()).collect();
            let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
            let (ledger, open) = futures::try_join!(
                self.store.consents().ledger(
                    organization_id,
                    disclosure::ledger_purpose(disclosure::REMINDER),
                    &channels,
                    &addresses,
                    &org_patients
                ),
                self.store
                    .reminders()
                    .open_threads_of(organization_id, &org_patients),
            )?;
            ledgers.insert(organization_id.clone(), ledger);
            threads.extend(open);
        }
        Ok(Batch {
            accepted,
            appointments,
            patients,
            points,
            sent_counts,
            part2,
            ledgers,
            threads,
        })
    }

    /// The send-time checks of one touch against the batch: the message to accept, or the
    /// reason a person can read for skipping it. `already` is how many reminders this batch
    /// sends the patient before this one.
    fn prepare(
        &self,
        org: &OrgPlan,
        touch: &TouchRow,
        batch: &Batch,
        already: i64,
        now: DateTime<Utc>,
    ) -> Result<Prepared, Skip> {
        let settings = &org.settings;
        let now_ms = now.timestamp_millis();
        let grace = grace_ms(settings);
        if now_ms > touch.due_at.saturating_add(grace) {
            return Err(format!(
                "too soon: the touch was due {} and is more than {} minutes late",
                rfc3339(touch.due_at),
                settings.reminder_grace_minutes
            )
            .into());
        }
        let Some(appointment) = batch.appointments.get(&touch.appointment_id) else {
            return Err("appointment not found".into());
        };
        if appointment.start_at != touch.appointment_start {
            return Err("appointment rescheduled".into());
        }
        // Cancelled, no-show, discontinued, completed, arrived: checked again at send time,
        // whatever the plan said (the status may have changed since the last plan).
        if let Some(reason) = appointment.status().reminder_stop_reason() {
            return Err(reason.into());
        }
        if appointment.start_at <= now_ms {
            return Err("too soon: the appointment has started".into());
        }
        let Some((rule, _)) = org.rules.iter().find(|(r, _)| r.id == touch.rule_id) else {
            return Err(format!("rule {} no longer exists", touch.rule_id).into());
        };
        let Some(spec) = rule.touches.iter().find(|t| t.id == touch.touch_id) else {
            return Err(format!("touch {} no longer exists", touch.touch_id).into());
        };
        let Some(patient) = batch
            .patients
            .get(&touch.patient_id)
            .filter(|p| p.organization_id == touch.organization_id)
        else {
            return Err("patient not found".into());
        };
        let no_points = Vec::new();
        let points = batch.points.get(&patient.id).unwrap_or(&no_points);
        let points: Vec<&ContactPointRow> =
            if is_minor(patient, now) && settings.reminders_to_guardians {
                let guardians: Vec<_> = points
                    .iter()
                    .filter(|p| p.use_code.as_deref() == Some("guardian"))
                    .collect();
                if guardians.is_empty() {
                    return Err("minor without a guardian contact".into());
                }
                guardians
            } else {
                points.iter().collect()
            };
        let part2 = org.part2_type(appointment.appointment_type.as_ref());
        let (day, week) = batch
            .sent_counts
            .get(&patient.id)
            .copied()
            .unwrap_or((0, 0));
        let (day, week) = (day + already, week + already);
        if day >= i64::from(settings.reminder_cap_per_day)
            || week >= i64::from(settings.reminder_cap_per_week)
        {
            return Err(format!(
                "frequency cap: {day} today, {week} this week (limits {} and {})",
                settings.reminder_cap_per_day, settings.reminder_cap_per_week
            )
            .into());
        }
        // Channel: the first with a contact point the disclosure gate permits.
        let no_ledger = ConsentLedger::default();
        let ledger = batch
            .ledgers
            .get(&touch.organization_id)
            .unwrap_or(&no_ledger);
        let (channel, address, _permit) = crate::reach::first_permitted(
            &Outreach {
                organization_id: &touch.organization_id,
                patient_id: &patient.id,
                purpose: disclosure::REMINDER,
                part2,
            },
            &points,
            &spec.channels,
            &settings.phone_region,
            &Facts {
                ledger,
                part2: &batch.part2,
                now: now_ms,
            },
        )?;
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
        let context = template_context(org, appointment, zone, &locale, rule.replies);
        let base = format!("{}/{channel}", spec.template);
        let Ok(body) = self.templates.render(&base, &locale, "txt", &context) else {
            return Err(format!("no template {base} for {locale}").into());
        };
        if channel == Channel::Sms {
            let segments = crate::phone::segments(&body).segments;
            if segments > crate::templates::SMS_TEMPLATE_SEGMENTS {
                return Err(format!("text too long: {segments} SMS segments").into());
            }
        }
        let subject = self
            .templates
            .render(&base, &locale, "subject", &context)
            .ok();
        let mut metadata = serde_json::Map::new();
        metadata.insert("purpose".into(), disclosure::REMINDER.into());
        metadata.insert("appointment_id".into(), appointment.id.clone().into());
        metadata.insert("touch_id".into(), touch.id.clone().into());
        if channel == Channel::Voice {
            // A call asks for 1 or 2 when the rule invites replies, and is placed (or placed
            // again after a busy line or no answer) only within the reminder's window — until
            // the grace period ends, before the appointment — and never in quiet hours of the
            // patient's time zone (`crate::voice`).
            metadata.insert("gather".into(), rule.replies.into());
            metadata.insert("time_zone".into(), zone.name().into());
            let not_after = touch.due_at.saturating_add(grace).min(appointment.start_at);
            metadata.insert("not_after".into(), not_after.into());
        }
        let mut request = SendRequest::notice(
            Some(patient.external_id.clone()),
            channel.as_str(),
            address.into_string(),
            subject,
            body,
            metadata,
        );
        // The worker passes the gate again at send time, Part 2 included.
        request.part2 = part2;
        let thread = match batch.threads.get(&patient.id) {
            Some(thread_id) => ResolvedThread {
                thread_id: thread_id.clone(),
                new_thread_category: None,
                patient_id: Some(patient.id.clone()),
            },
            None => ResolvedThread {
                thread_id: crate::store::new_id("thr"),
                new_thread_category: request.category.clone(),
                patient_id: Some(patient.id.clone()),
            },
        };
        Ok(Prepared {
            touch_id: touch.id.clone(),
            organization_id: touch.organization_id.clone(),
            channel,
            request,
            thread,
        })
    }

    /// The plan of an appointment and every skip, for `reminders why` ([`plan_of`]).
    pub async fn why(&self, appointment: &AppointmentRow) -> Result<Vec<TouchRow>, ReminderError> {
        plan_of(&self.store, &self.config, appointment, Utc::now()).await
    }
}

/// Adds the touches of one appointment to record in `window`: those whose appointment starts
/// within the window plus their lead, except a touch whose time had passed before the
/// appointment was booked or last changed (it could never go out; [`plan_of`] explains it
/// without a row). Without a window end (`plan_of`), every touch.
fn plan_appointment(
    org: &OrgPlan,
    a: &PlanRow,
    now_ms: i64,
    window_end: Option<i64>,
    out: &mut Vec<NewTouch>,
) {
    let zone = patient_zone(
        org,
        a.patient_time_zone.as_deref(),
        a.location.as_deref(),
        a.location_code.as_deref(),
    );
    let open = parse_clock(&org.settings.quiet_hours_start).unwrap_or_default();
    let close = parse_clock(&org.settings.quiet_hours_end).unwrap_or_default();
    let grace = grace_ms(&org.settings);
    let Some(start) = Utc.timestamp_millis_opt(a.start_at).single() else {
        return;
    };
    for (rule, touches) in &org.rules {
        if !matches_rule(rule, a) {
            continue;
        }
        for (touch_id, when) in touches {
            if window_end.is_some_and(|end| a.start_at >= org.end_for(end, *when)) {
                continue;
            }
            let Some(due) = schedule::due(*when, start, zone, &org.settings.holidays) else {
                out.push(NewTouch {
                    organization_id: a.organization_id.clone(),
                    appointment_id: a.id.clone(),
                    patient_id: a.patient_id.clone(),
                    rule_id: rule.id.clone(),
                    touch_id: touch_id.clone(),
                    appointment_start: a.start_at,
                    due_at: a.start_at,
                    status: "skipped",
                    reason: Some("touch time out of range".into()),
                });
                continue;
            };
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
            } else if due_ms.saturating_add(grace) < now_ms {
                // Past any use: no row; `plan_of` explains it.
                if window_end.is_some() {
                    continue;
                }
                let reason = if due_ms < a.updated_at {
                    format!(
                        "too soon: booked after the touch time ({})",
                        rfc3339(due_ms)
                    )
                } else {
                    format!(
                        "too late: no reminder run planned it before its time ({}) had passed",
                        rfc3339(due_ms)
                    )
                };
                ("skipped", Some(reason))
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

/// The organization's settings and rules, every rule checked by [`ReminderRule::validate`]
/// (rules stored by older versions were not): one unusable rule is an error for the whole
/// organization, never a guess at which touches to keep.
async fn org_plan(
    store: &Store,
    config: &Config,
    organization_id: &str,
) -> Result<OrgPlan, ReminderError> {
    let org = store.organizations().get(organization_id).await?;
    let settings = config.organization(&org.slug);
    let stored = store.reminders().rules(organization_id).await?;
    let rules: Vec<ReminderRule> = if stored.is_empty() {
        settings.reminder_rules.clone()
    } else {
        stored
            .iter()
            .enumerate()
            .map(|(i, d)| {
                serde_json::from_str(d).map_err(|_| ReminderError::Rule {
                    rule: format!("#{}", i + 1),
                    reason: "the stored definition cannot be read".into(),
                })
            })
            .collect::<Result<_, _>>()?
    };
    let mut parsed = Vec::new();
    for (i, rule) in rules.into_iter().enumerate() {
        let name = |e: &crate::config::RuleError| {
            if e.pointer == "/id" {
                format!("#{}", i + 1)
            } else {
                rule.id.clone()
            }
        };
        if let Err(e) = rule.validate() {
            return Err(ReminderError::Rule {
                rule: name(&e),
                reason: e.to_string(),
            });
        }
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

/// An appointment's whole reminder plan, as of `now`: its recorded touches, and the touches
/// its rules give that are not recorded (yet): `planned` when still to come (recorded once
/// inside `reminders.plan_ahead_hours`), `skipped` with the reason when their time had
/// passed. Computed ones have an empty `id`. In due order. For `reminders why` and
/// `GET /v1/appointments/{id}/reminders`.
pub async fn plan_of(
    store: &Store,
    config: &Config,
    appointment: &AppointmentRow,
    now: DateTime<Utc>,
) -> Result<Vec<TouchRow>, ReminderError> {
    let mut touches = store.reminders().touches_of(&appointment.id).await?;
    let now_ms = now.timestamp_millis();
    let Some(row) = store.reminders().plan_row(&appointment.id).await? else {
        return Ok(touches);
    };
    if row.start_at < now_ms {
        return Ok(touches);
    }
    let org = match org_plan(store, config, &appointment.organization_id).await {
        Ok(org) => org,
        // Invalid rules plan nothing: the recorded touches are the whole plan.
        Err(ReminderError::Rule { .. }) => return Ok(touches),
        Err(e) => return Err(e),
    };
    let mut computed = Vec::new();
    plan_appointment(&org, &row, now_ms, None, &mut computed);
    for t in computed {
        let recorded = touches.iter().any(|r| {
            r.rule_id == t.rule_id
                && r.touch_id == t.touch_id
                && r.appointment_start == t.appointment_start
        });
        if !recorded {
            touches.push(TouchRow {
                id: String::new(),
                organization_id: t.organization_id,
                appointment_id: t.appointment_id,
                patient_id: t.patient_id,
                rule_id: t.rule_id,
                touch_id: t.touch_id,
                appointment_start: t.appointment_start,
                due_at: t.due_at,
                status: t.status.to_string(),
                reason: t.reason,
                channel: None,
                message_id: None,
                updated_at: now_ms,
            });
        }
    }
    touches.sort_by(|a, b| (a.due_at, &a.touch_id).cmp(&(b.due_at, &b.touch_id)));
    Ok(touches)
}

/// How late a touch may still go out, in ms.
fn grace_ms(settings: &OrganizationConfig) -> i64 {
    i64::try_from(settings.reminder_grace_minutes)
        .unwrap_or(60)
        .saturating_mul(60_000)
}

/// The next run plans every upcoming appointment again (after a rule or config change).
pub async fn replan_all(store: &Store) -> Result<(), StoreError> {
    store.reminders().reset_cursor(CURSOR_CHANGED).await?;
    store.reminders().reset_cursor(CURSOR_RECORDED).await
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
    async fn reminder_answer(
        &self,
        organization_id: &str,
        patient_id: Option<&str>,
        origin: ReplyOrigin<'_>,
        reply: ReminderReply,
    ) -> Result<Option<Answer>, InboundError> {
        let Some(patient_id) = patient_id else {
            return Ok(None);
        };
        let now = Utc::now();
        let (appointment, subject_id, inbound_item_id) = match origin {
            ReplyOrigin::Text { inbound_item_id } => (
                self.store
                    .reminders()
                    .latest_reminded_appointment(patient_id, now.timestamp_millis())
                    .await?,
                inbound_item_id,
                Some(inbound_item_id),
            ),
            // The appointment the call was about, while it is this patient's and ahead.
            ReplyOrigin::Call {
                delivery_id,
                appointment_id,
            } => {
                let appointment = match self.store.appointments().get(appointment_id).await {
                    Ok(a) => Some(a),
                    Err(StoreError::NotFound) => None,
                    Err(e) => return Err(e.into()),
                };
                (
                    appointment
                        .filter(|a| {
                            a.organization_id == organization_id
                                && a.patient_id == patient_id
                                && a.start_at > now.timestamp_millis()
                        })
                        .map(|a| a.id),
                    delivery_id,
                    None,
                )
            }
        };
        self.store
            .events().record(
                organization_id,
                "reminder.reply",
                subject_id,
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
            .reminders()
            .record_confirmation(
                organization_id,
                &appointment_id,
                patient_id,
                answer,
                inbound_item_id,
            )
            .await?;
        info!(%appointment_id, answer, "reminder answered");
        let appointment = self.store.appointments().get(&appointment_id).await?;
        let org = match self.org_plan(organization_id).await {
            Ok(org) => org,
            Err(_) => return Ok(None),
        };
        let patient = self
            .store
            .patients()
            .get(organization_id, patient_id)
            .await?;
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
            .ok()
            .map(|text| Answer {
                text,
                part2: org.part2_type(appointment.appointment_type.as_ref()),
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Organizations whose planning panics (stands in for a bug the bounds do not catch).
    static PANICKING: Mutex<Vec<String>> = Mutex::new(Vec::new());

    pub(super) fn maybe_panic(organization_id: &str) {
        let panics = PANICKING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|id| id == organization_id);
        if panics {
            panic!("planning panicked (test)");
        }
    }

    /// A panic while planning one organization skips that organization; the other is planned.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reminders_a_panicking_organization_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::from_toml("").expect("config");
        config.data_dir = dir.path().to_path_buf();
        config.outbox.dir = dir.path().join("outbox");
        let core = crate::daemon::Core::open(config).await.expect("core");
        let reminders = core.reminders(core.templates().expect("templates"));
        let store = &core.store;
        let a = store.organizations().ensure("a", "A").await.expect("org a");
        let b = store.organizations().ensure("b", "B").await.expect("org b");
        let start = Utc::now().timestamp_millis() + 3 * 86_400_000;
        store
            .reminders()
            .seed_appointments(&a.id, "a", &[start])
            .await
            .expect("seed a");
        store
            .reminders()
            .seed_appointments(&b.id, "b", &[start])
            .await
            .expect("seed b");
        PANICKING.lock().expect("lock").push(a.id.clone());
        let report = reminders.plan(Utc::now()).await.expect("the pass goes on");
        assert!(report.planned > 0, "{report:?}");
        let planned = store
            .reminders()
            .due_touches(i64::MAX, 100)
            .await
            .expect("touches");
        assert!(planned.iter().all(|t| t.organization_id == b.id));
        assert!(planned.iter().any(|t| t.organization_id == b.id));
        core.store.close().await;
    }
}
