//! Voice reminders: calls placed through a voice connector (`connectors/twilio_voice.toml`),
//! their script, the keys pressed, and when a call may be placed.
//!
//! - **When.** A call is placed only within calling hours — `quiet_hours_start` to
//!   `quiet_hours_end` of the organization, in the called party's time zone (the reminder's
//!   `time_zone`, else the organization's) — strictly: the worker defers a call due in quiet
//!   hours to the next opening (the attempt is not spent), and a retry after a busy line or no
//!   answer is moved there too. A reminder's call carries the end of its window (`not_after`:
//!   the touch's grace period, and never after the appointment starts); a call or retry that
//!   cannot be placed before it is not placed at all.
//! - **The script** is served at `<public_url>/hooks/<connector>/voice?delivery=<reference>`
//!   (the delivery's reference token, never an id or anything about the patient), signed by
//!   the provider like every webhook, and bound to a delivery of the connector it came through
//!   (never by an id in the request). A machine (answering-machine detection) and every
//!   message whose text calls may not carry ([`crate::disclosure::voice_carries_text`]) get a
//!   short message without details: who calls and the number to call back. A person hears
//!   the reminder and, when its rule invites replies, is asked to press 1 (confirm) or 2
//!   (cancel).
//! - **The keys** are posted back to the same hook (`&step=gather-<n>`): 1 and 2 are the
//!   answers C and N to a text reminder, handled by the same [`ReplyRouter`] (confirmation
//!   recorded, a cancellation request for staff, events), about the appointment the call was
//!   for. Its answer ("your appointment … is confirmed") is a disclosure: it passes the gate
//!   and is audited before it is read. 9 stops automated calls to the number (a revoked voice
//!   consent for every purpose, source `voice-keypad`, which the gate reads for every later
//!   call). Anything else is asked once more, then the call says goodbye. A step is answered
//!   once: the same post replayed hears goodbye.
//!
//! The call itself is a delivery like any other: the worker passes the disclosure gate before
//! placing it and audits it; the provider's call states map to delivery states in the
//! manifest.

use std::sync::Arc;

use chrono::{NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use tracing::{info, warn};

use crate::config::{Config, OrganizationConfig};
use crate::connectors::CallEvent;
use crate::crypto::Keyring;
use crate::deliveries::DeliveryService;
use crate::disclosure::{self, Disclosure, Gate};
use crate::domain::{Address, Channel, DeliveryStatus};
use crate::inbound::keywords::ReminderReply;
use crate::inbound::{ReplyOrigin, ReplyRouter};
use crate::messages::MessageContent;
use crate::reminders::schedule::{out_of_quiet_hours, parse_clock};
use crate::service::ServiceError;
use crate::store::{ConsentChange, DeliveryRow, Store, StoreError};
use crate::templates::Templates;

/// How many times a call asks for a key before it says goodbye.
pub const GATHER_TRIES: u8 = 2;

/// When calls may be placed for one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallWindow {
    zone: Tz,
    /// Calling hours (local time of the called party); none when they are not a range.
    hours: Option<(NaiveTime, NaiveTime)>,
    /// Unix ms after which no call is placed (a reminder's window).
    not_after: Option<i64>,
}

impl CallWindow {
    /// The window of a call with message metadata `metadata` (JSON) sent for an organization
    /// with `settings`.
    pub fn new(settings: &OrganizationConfig, metadata: &str) -> Self {
        let meta: serde_json::Value = serde_json::from_str(metadata).unwrap_or_default();
        let zone = meta
            .get("time_zone")
            .and_then(|z| z.as_str())
            .and_then(|z| z.parse().ok())
            .or_else(|| settings.time_zone.parse().ok())
            .unwrap_or(Tz::UTC);
        let hours = match (
            parse_clock(&settings.quiet_hours_start),
            parse_clock(&settings.quiet_hours_end),
        ) {
            (Some(open), Some(close)) if open < close => Some((open, close)),
            _ => None,
        };
        Self {
            zone,
            hours,
            not_after: meta.get("not_after").and_then(|n| n.as_i64()),
        }
    }

    /// The first instant at or after `at` (unix ms) when the call may be placed: `at` itself
    /// within calling hours, else the next opening; `None` when that is past the window.
    pub fn next_call_at(&self, at: i64) -> Option<i64> {
        let when = match self.hours {
            None => at,
            Some((open, close)) => {
                let instant = Utc.timestamp_millis_opt(at).single()?;
                let moved = out_of_quiet_hours(instant, self.zone, open, close).timestamp_millis();
                moved.max(at)
            }
        };
        match self.not_after {
            Some(limit) if when > limit => None,
            _ => Some(when),
        }
    }
}

/// The window of a voice delivery's calls, read from its message and organization.
pub async fn window_of(
    store: &Store,
    config: &Config,
    delivery: &DeliveryRow,
) -> Result<CallWindow, StoreError> {
    let message = store
        .messages()
        .get(&delivery.organization_id, &delivery.message_id)
        .await?;
    let org = store.organizations().get(&delivery.organization_id).await?;
    Ok(CallWindow::new(
        &config.organization(&org.slug),
        &message.metadata,
    ))
}

/// A retry (`retry_at`, from [`crate::deliveries::transient_retry`]) of a voice delivery,
/// moved out of quiet hours; `None` when it would fall past the call's window (or there is no
/// retry). Other channels' retries are returned as they are.
pub async fn retry_in_window(
    store: &Store,
    config: &Config,
    delivery: &DeliveryRow,
    retry_at: Option<i64>,
) -> Result<Option<i64>, StoreError> {
    let Some(at) = retry_at else {
        return Ok(None);
    };
    if delivery.channel != Channel::Voice {
        return Ok(Some(at));
    }
    let moved = window_of(store, config, delivery).await?.next_call_at(at);
    if moved.is_none() {
        info!(delivery_id = %delivery.id, "busy or no answer; no call possible within the reminder's window");
    }
    Ok(moved)
}

/// Which request of a call the script answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The call was answered: what to read.
    Answered,
    /// The keys pressed after the `n`-th prompt (1-based).
    Gathered(u8),
}

impl Step {
    /// Reads the `step` parameter of the script's URL (`gather-<n>`; absent: answered).
    pub fn parse(step: Option<&str>) -> Step {
        step.and_then(|s| s.strip_prefix("gather-"))
            .and_then(|n| n.parse::<u8>().ok())
            .filter(|n| (1..=GATHER_TRIES).contains(n))
            .map_or(Step::Answered, Step::Gathered)
    }

    pub fn gather(n: u8) -> String {
        format!("gather-{n}")
    }
}

/// What the call says next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// What is read (empty: nothing, the call hangs up).
    pub text: String,
    /// BCP 47 language of the speech.
    pub language: String,
    /// Wait for a key, posted with this `step`; `None`: hang up after the text.
    pub gather: Option<String>,
}

impl Script {
    fn hang_up() -> Self {
        Self {
            text: String::new(),
            language: "en-US".into(),
            gather: None,
        }
    }
}

/// Call scripts and the keys pressed on calls.
#[derive(Clone)]
pub struct VoiceService {
    pub store: Store,
    pub keyring: Keyring,
    pub config: Arc<Config>,
    pub templates: Arc<Templates>,
    pub replies: Arc<dyn ReplyRouter>,
    pub deliveries: DeliveryService,
}

/// What a call is about, read from its delivery and message.
struct CallContext {
    delivery: DeliveryRow,
    body: String,
    purpose: String,
    patient_id: Option<String>,
    appointment_id: Option<String>,
    gather: bool,
    part2: bool,
    locale: String,
    settings: OrganizationConfig,
    organization: String,
}

/// A key pressed in answer to a reminder call.
#[derive(Debug, Clone, Copy)]
enum Key {
    /// 1 or 2: the answers C and N to a text.
    Reply(ReminderReply),
    /// 9: stop automated calls to this number.
    StopCalls,
}

impl VoiceService {
    /// The script for a call of connector `connector` (already verified): `call` is what the
    /// provider posted, `reference` the `?delivery=` token of the URL it called.
    pub async fn script(
        &self,
        connector: &str,
        call: &CallEvent,
        reference: Option<String>,
        step: Step,
    ) -> Result<Script, ServiceError> {
        let Some(delivery) = self
            .deliveries
            .delivery_for_report(connector, &call.provider_ref, reference)
            .await?
        else {
            info!(
                connector,
                "call script asked for no delivery of this connector"
            );
            return Ok(Script::hang_up());
        };
        if delivery.channel != Channel::Voice {
            return Ok(Script::hang_up());
        }
        // A call that ended (or never was) has nothing more to say.
        if matches!(
            DeliveryStatus::parse(&delivery.status),
            Some(DeliveryStatus::Delivered | DeliveryStatus::Failed)
        ) {
            info!(connector, delivery_id = %delivery.id, "call script asked for a finished delivery");
            return Ok(Script::hang_up());
        }
        let call_context = self.context(delivery).await?;
        let c = &call_context;
        let language = speech_language(&c.locale);
        let say = |text: String, gather: Option<String>| Script {
            text,
            language: language.clone(),
            gather,
        };
        let asks = c.gather && c.appointment_id.is_some() && c.patient_id.is_some();
        match step {
            Step::Answered if call.machine || !disclosure::voice_carries_text(&c.purpose) => {
                info!(delivery_id = %c.delivery.id, machine = call.machine, "call: short message");
                Ok(say(self.render("voice/machine", c)?, None))
            }
            Step::Answered if asks => Ok(say(c.body.clone(), Some(Step::gather(1)))),
            Step::Answered => Ok(say(c.body.clone(), None)),
            Step::Gathered(_) if !asks => Ok(say(self.render("voice/goodbye", c)?, None)),
            Step::Gathered(n) => {
                let reply = match call.digits.as_deref().map(str::trim) {
                    Some("1") => Some(Key::Reply(ReminderReply::Confirm)),
                    Some("2") => Some(Key::Reply(ReminderReply::Decline)),
                    Some("9") => Some(Key::StopCalls),
                    _ => None,
                };
                match reply {
                    // A key is answered once per call and step: the same signed post replayed
                    // (Twilio's signature carries no time) hears goodbye and changes nothing.
                    Some(_) if !self.first_answer(connector, c, n).await? => {
                        info!(delivery_id = %c.delivery.id, "call: answer replayed, ignored");
                        Ok(say(self.render("voice/goodbye", c)?, None))
                    }
                    Some(key) => match self.press(connector, c, key).await {
                        Ok(text) => Ok(say(text, None)),
                        Err(e) => {
                            // Not recorded: the same key may be posted again.
                            self.forget_answer(connector, c, n).await;
                            Err(e)
                        }
                    },
                    None if n < GATHER_TRIES => {
                        let text = format!("{} {}", self.render("voice/repeat", c)?, c.body);
                        Ok(say(text, Some(Step::gather(n + 1))))
                    }
                    None => Ok(say(self.render("voice/goodbye", c)?, None)),
                }
            }
        }
    }

    async fn context(&self, delivery: DeliveryRow) -> Result<CallContext, ServiceError> {
        let message = self
            .store
            .messages()
            .get(&delivery.organization_id, &delivery.message_id)
            .await?;
        let content = MessageContent::open(&self.keyring, &message.id, &message.content)?;
        let meta: serde_json::Value = serde_json::from_str(&message.metadata).unwrap_or_default();
        let org = self
            .store
            .organizations()
            .get(&delivery.organization_id)
            .await?;
        let settings = self.config.organization(&org.slug);
        let patient = match &message.patient_id {
            Some(id) => match self
                .store
                .patients()
                .get(&delivery.organization_id, id)
                .await
            {
                Ok(p) => Some(p),
                Err(StoreError::NotFound) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let locale = patient
            .as_ref()
            .and_then(|p| p.language.clone())
            .unwrap_or(settings.default_locale.clone());
        Ok(CallContext {
            body: content.body,
            purpose: disclosure::message_purpose(&message.metadata),
            patient_id: patient.map(|p| p.id),
            appointment_id: meta
                .get("appointment_id")
                .and_then(|a| a.as_str())
                .map(String::from),
            gather: meta
                .get("gather")
                .and_then(|g| g.as_bool())
                .unwrap_or(false),
            part2: message.part2,
            locale,
            organization: settings.display_name.clone().unwrap_or(org.name),
            settings,
            delivery,
        })
    }

    /// The key of a call's answer at gather step `n`, among the connector's webhook events.
    fn answer_event(c: &CallContext, n: u8) -> String {
        format!("voice-answer:{}:{n}", c.delivery.id)
    }

    /// Whether this is the first answer posted for the call's step `n` (recorded if so).
    async fn first_answer(
        &self,
        connector: &str,
        c: &CallContext,
        n: u8,
    ) -> Result<bool, ServiceError> {
        Ok(self
            .store
            .inbound()
            .record_webhook_event(connector, &Self::answer_event(c, n))
            .await?)
    }

    /// Forgets a step's answer that could not be applied, so that it can be posted again.
    async fn forget_answer(&self, connector: &str, c: &CallContext, n: u8) {
        if let Err(e) = self
            .store
            .inbound()
            .forget_webhook_event(connector, &Self::answer_event(c, n))
            .await
        {
            warn!(delivery_id = %c.delivery.id, error = %e, "could not forget a failed call answer");
        }
    }

    async fn press(
        &self,
        connector: &str,
        c: &CallContext,
        key: Key,
    ) -> Result<String, ServiceError> {
        match key {
            Key::Reply(reply) => self.answer(connector, c, reply).await,
            Key::StopCalls => self.stop_calls(c).await,
        }
    }

    /// 9: no more automated calls to this number from the organization, for any purpose (a
    /// revoked voice consent, which the disclosure gate reads for every later call); texts and
    /// other channels are untouched.
    async fn stop_calls(&self, c: &CallContext) -> Result<String, ServiceError> {
        let address = Address::canonical(
            Channel::Voice,
            &c.delivery.recipient,
            &c.settings.phone_region,
        );
        self.store
            .consents()
            .record(&ConsentChange {
                organization_id: c.delivery.organization_id.clone(),
                patient_id: c.patient_id.clone(),
                channel: Channel::Voice.to_string(),
                purpose: crate::domain::consent::ANY.into(),
                recipient: address.as_str().to_string(),
                status: "revoked".into(),
                source: "voice-keypad".into(),
            })
            .await?;
        info!(delivery_id = %c.delivery.id, "call: calls stopped by keypad");
        self.render("voice/stopped", c)
    }

    /// A key that answers the reminder: handled as the same answer by text would be, and its
    /// answer read when the gate permits.
    async fn answer(
        &self,
        connector: &str,
        c: &CallContext,
        reply: ReminderReply,
    ) -> Result<String, ServiceError> {
        let (Some(patient_id), Some(appointment_id)) = (&c.patient_id, &c.appointment_id) else {
            return self.render("voice/goodbye", c);
        };
        let answer = self
            .replies
            .reminder_answer(
                &c.delivery.organization_id,
                Some(patient_id),
                ReplyOrigin::Call {
                    delivery_id: &c.delivery.id,
                    appointment_id,
                },
                reply,
            )
            .await?;
        info!(delivery_id = %c.delivery.id, reply = reply.as_str(), "call: reminder answered");
        let Some(answer) = answer else {
            return self.render("voice/goodbye", c);
        };
        let address = Address::canonical(
            Channel::Voice,
            &c.delivery.recipient,
            &c.settings.phone_region,
        );
        let actor = format!("webhook:{connector}");
        let decision = Gate::new(self.store.clone())
            .check(
                &Disclosure {
                    organization_id: &c.delivery.organization_id,
                    patient_id: Some(patient_id),
                    channel: Channel::Voice,
                    address: &address,
                    purpose: disclosure::REMINDER_REPLY,
                    part2: answer.part2 || c.part2,
                },
                &actor,
                Some(&c.delivery.message_id),
            )
            .await?;
        match decision {
            Ok(permit) => {
                self.store
                    .audit()
                    .record(&permit.audit(
                        &actor,
                        "answered",
                        Some(&c.delivery.message_id),
                        Some(&c.delivery.id),
                        None,
                    ))
                    .await?;
                Ok(answer.text)
            }
            Err(refusal) => {
                info!(delivery_id = %c.delivery.id, reason = %refusal.reason, "call answer refused by the disclosure gate");
                self.render("voice/goodbye", c)
            }
        }
    }

    fn render(&self, base: &str, c: &CallContext) -> Result<String, ServiceError> {
        let context = minijinja::context! {
            organization => c.organization.clone(),
            phone => c.settings.help_phone.clone().unwrap_or_default(),
        };
        self.templates
            .render(base, &c.locale, "txt", &context)
            .map(|t| t.trim().to_string())
            .map_err(|e| ServiceError::Internal(e.to_string()))
    }
}

/// The speech language of a patient's locale (English and Spanish shipped).
pub fn speech_language(locale: &str) -> String {
    match crate::templates::locale_tag(locale).as_str() {
        "es" => "es-US".into(),
        _ => "en-US".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OrganizationConfig {
        OrganizationConfig {
            time_zone: "America/Chicago".into(),
            quiet_hours_start: "08:00".into(),
            quiet_hours_end: "21:00".into(),
            ..OrganizationConfig::default()
        }
    }

    fn ms(rfc3339: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .expect("time")
            .timestamp_millis()
    }

    #[test]
    fn calls_wait_for_calling_hours_in_the_called_zone() {
        let window = CallWindow::new(&settings(), "{}");
        // 14:00 in Chicago: now.
        let afternoon = ms("2026-12-01T20:00:00Z");
        assert_eq!(window.next_call_at(afternoon), Some(afternoon));
        // 21:30 in Chicago: 08:00 the next morning.
        assert_eq!(
            window.next_call_at(ms("2026-12-02T03:30:00Z")),
            Some(ms("2026-12-02T14:00:00Z"))
        );
        // The patient's own zone wins.
        let denver = CallWindow::new(&settings(), r#"{"time_zone": "America/Denver"}"#);
        assert_eq!(
            denver.next_call_at(ms("2026-12-01T14:30:00Z")),
            Some(ms("2026-12-01T15:00:00Z"))
        );
    }

    #[test]
    fn no_call_past_the_reminders_window() {
        let limit = ms("2026-12-02T04:00:00Z");
        let window = CallWindow::new(&settings(), &format!(r#"{{"not_after": {limit}}}"#));
        // A retry at 21:30 would wait for 08:00, after the window: none.
        assert_eq!(window.next_call_at(ms("2026-12-02T03:30:00Z")), None);
        let early = ms("2026-12-01T20:00:00Z");
        assert_eq!(window.next_call_at(early), Some(early));
    }

    #[test]
    fn steps_read_from_the_url() {
        assert_eq!(Step::parse(None), Step::Answered);
        assert_eq!(Step::parse(Some("gather-1")), Step::Gathered(1));
        assert_eq!(Step::parse(Some("gather-2")), Step::Gathered(2));
        assert_eq!(Step::parse(Some("gather-9")), Step::Answered);
        assert_eq!(Step::parse(Some("x")), Step::Answered);
    }
}
