//! Inbound texts on the intake pipeline (`crate::intake`; fax and Direct use it next):
//! recorded sealed before anything else, parsed, matched to a patient (the conversation it
//! answers, else the sender's number), then keywords (opt-out/opt-in/help), reminder answers,
//! or filing into the patient's thread — or the unmatched queue when the sender is unknown or
//! ambiguous. Nothing is dropped: an item that fails half-way stays `received`, is listed for
//! a person, and `switchboard inbound reprocess` takes it further.
//!
//! An answer to the sender (keyword confirmations, help, the answer to a reminder reply) is a
//! disclosure like any other: it passes the gate (`crate::disclosure`) before it is handed back
//! to the webhook, and a refused one is audited and not given at all.

pub mod fax;
pub mod keywords;
mod webhook;
mod work;

pub use webhook::Answering;
pub use work::{
    CandidateView, DismissRequest, Dismissed, InboundItemView, InboundList, InboundStatus,
    ItemAttachmentView, MAX_PAGE, ReassignRequest, ResolveRequest, Resolved, StepView,
};

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::info;

use crate::config::Config;
use crate::crypto::{CryptoError, Keyring};
use crate::disclosure::{self, Disclosure, Gate, Permit};
use crate::domain::{Address, Channel};
use crate::intake::matching::Decision;
use crate::intake::{Envelope, Filing, Intake, IntakeError, Received, SmsSource};
use crate::store::{ConsentChange, InboundRow, NewOrphan, Store, StoreError, new_id};
use crate::templates::Templates;
use keywords::{Keyword, ReminderReply};

#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("template: {0}")]
    Template(#[from] crate::templates::TemplateError),
    #[error(transparent)]
    Intake(#[from] IntakeError),
    /// `reprocess` refused: the item is not in a state to be reprocessed.
    #[error("{0}")]
    NotReprocessable(String),
}

/// Where answers to reminders go (implemented by `crate::reminders::Reminders`).
#[async_trait::async_trait]
pub trait ReplyRouter: Send + Sync {
    /// A patient (when matched) answered a reminder. Returns text to answer with, if any.
    async fn reminder_reply(
        &self,
        organization_id: &str,
        patient_id: Option<&str>,
        inbound_item_id: &str,
        reply: ReminderReply,
    ) -> Result<Option<Answer>, InboundError>;
}

/// The text a [`ReplyRouter`] would answer with, and whether it is about a Part 2 record
/// (an appointment of a `part2_appointment_types` type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub text: String,
    pub part2: bool,
}

/// An answer to the sender that the disclosure gate permitted.
#[derive(Debug, Clone)]
pub struct Reply {
    pub text: String,
    /// `keyword_reply` or `reminder_reply`.
    pub purpose: &'static str,
    pub part2: bool,
    /// The matched patient, if any.
    pub patient_id: Option<String>,
    /// Its `disclosure` audit row, for the webhook to record when it answers inline.
    pub permit: Permit,
}

/// An SMS as a provider delivered it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InboundSms {
    pub connector: String,
    pub provider_ref: Option<String>,
    pub from: String,
    pub to: String,
    pub body: String,
    #[serde(default)]
    pub media: Vec<String>,
}

/// What happened to an inbound SMS.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub item_id: String,
    /// `filed`, `unmatched`, `opted_out`, `opted_in`, `help`, `reminder_reply`, `duplicate`,
    /// `orphaned` (no organization owns it: quarantined for the operator, nothing applied).
    pub outcome: &'static str,
    /// Text to answer the sender with (only what the gate permitted).
    pub reply: Option<Reply>,
}

#[derive(Clone)]
pub struct InboundService {
    pub store: Store,
    pub keyring: Keyring,
    pub config: Arc<Config>,
    pub templates: Arc<Templates>,
    pub replies: Arc<dyn ReplyRouter>,
    /// Which organization owns the number an item was sent to.
    pub tenancy: Arc<crate::tenancy::Tenancy>,
    /// Sends the answers that are not given inline.
    pub messages: crate::messages::MessageService,
    /// Inbound Direct, for releasing quarantined messages (none outside the daemon).
    pub direct: Option<Arc<crate::direct::inbound::DirectInbound>>,
}

impl InboundService {
    /// Keeps an SMS no organization owns, sealed, in the operator's quarantine. No keyword is
    /// applied and nothing is answered: it belongs to no tenant.
    pub async fn receive_orphan(
        &self,
        sms: &InboundSms,
        reason: &str,
    ) -> Result<Receipt, InboundError> {
        let id = new_id("orp");
        let raw = serde_json::to_vec(sms).map_err(|_| CryptoError::Malformed)?;
        let orphan = NewOrphan {
            channel: Channel::Sms.to_string(),
            connector: Some(sms.connector.clone()),
            provider_ref: sms.provider_ref.clone(),
            // No organization, so no region of its own: the tenancy table's (US).
            sender: Address::canonical(Channel::Sms, &sms.from, crate::tenancy::REGION)
                .into_string(),
            recipient: Some(sms.to.clone()),
            reason: reason.to_string(),
            raw: self.keyring.seal(&raw, &id)?,
        };
        let (item_id, fresh) = self.store.inbound().record_orphan(&id, &orphan).await?;
        tracing::warn!(orphan_id = %item_id, connector = %sms.connector, fresh, "inbound SMS belongs to no organization; quarantined for the operator");
        Ok(Receipt {
            item_id,
            outcome: if fresh { "orphaned" } else { "duplicate" },
            reply: None,
        })
    }

    /// The intake pipeline over this service's store, key and configuration.
    pub fn intake(&self) -> Intake {
        Intake {
            store: self.store.clone(),
            keyring: self.keyring.clone(),
            config: self.config.clone(),
        }
    }

    /// Records (intake step 1), then handles, one inbound SMS for an organization: a
    /// redelivery is recorded once and handled no further.
    pub async fn receive_sms(
        &self,
        organization_id: &str,
        sms: &InboundSms,
    ) -> Result<Receipt, InboundError> {
        let org = self.store.organizations().get(organization_id).await?;
        let settings = self.config.organization(&org.slug);
        let sender = Address::canonical(Channel::Sms, &sms.from, &settings.phone_region);
        let raw = serde_json::to_vec(sms).map_err(|_| CryptoError::Malformed)?;
        let (item_id, fresh) = self
            .intake()
            .record(
                &SmsSource,
                &Received {
                    organization_id,
                    connector: Some(sms.connector.clone()),
                    provider_ref: sms.provider_ref.clone(),
                    sender: sender.to_string(),
                    recipient: Some(sms.to.clone()),
                    raw: &raw,
                },
            )
            .await?;
        if !fresh {
            return Ok(Receipt {
                item_id,
                outcome: "duplicate",
                reply: None,
            });
        }
        let item = self.store.inbound().item(organization_id, &item_id).await?;
        self.handle_sms(&item, &format!("webhook:{}", sms.connector))
            .await
    }

    /// Intake steps 2–5 for a recorded SMS: parse, match (the conversation it answers, else
    /// the sender's number), then a keyword (STOP/START/HELP: applied, `processed`), a
    /// reminder answer (routed, and filed for staff to see) or filing; and the answer to
    /// give, if the disclosure gate permits it (`actor` asks).
    pub(crate) async fn handle_sms(
        &self,
        item: &InboundRow,
        actor: &str,
    ) -> Result<Receipt, InboundError> {
        let organization_id = item.organization_id.as_str();
        let item_id = item.id.clone();
        let org = self.store.organizations().get(organization_id).await?;
        let settings = self.config.organization(&org.slug);
        let intake = self.intake();
        let envelope = Envelope::from(item);
        let parsed = intake.parse(&SmsSource, item).await?;
        let decision = intake.decide(&SmsSource, &envelope, &parsed).await?;
        let patient = match &decision {
            Decision::Matched { patient_id, .. } => Some(patient_id.clone()),
            Decision::Unmatched { .. } => None,
        };
        let sender = Address::canonical(Channel::Sms, &item.sender, &settings.phone_region);
        let name = settings.display_name.clone().unwrap_or(org.name.clone());
        let locale = match &patient {
            Some(p) => self
                .store
                .patients()
                .get(organization_id, p)
                .await
                .ok()
                .and_then(|p| p.language)
                .unwrap_or(settings.default_locale.clone()),
            None => settings.default_locale.clone(),
        };
        let context = minijinja::context! {
            organization => name,
            phone => settings.help_phone.clone().unwrap_or_default(),
        };
        let render = |name: &str| {
            self.templates
                .render(&format!("sms_keywords/{name}"), &locale, "txt", &context)
                .map_err(InboundError::Template)
        };
        let consent = |status: &str| ConsentChange {
            organization_id: organization_id.to_string(),
            patient_id: patient.clone(),
            channel: Channel::Sms.to_string(),
            purpose: crate::domain::consent::ANY.into(),
            recipient: sender.to_string(),
            status: status.into(),
            source: "sms-keyword".into(),
        };
        let keyword = |text: String| Answer { text, part2: false };
        let (outcome, answer) = match keywords::classify(&parsed.body) {
            Some(Keyword::OptOut) => {
                self.store.consents().record(&consent("revoked")).await?;
                self.store
                    .inbound()
                    .process(organization_id, &item_id, "opt-out", patient.as_deref())
                    .await?;
                self.event(organization_id, "sms.opted_out", &item_id, &patient)
                    .await?;
                ("opted_out", Some(keyword(render("stop")?)))
            }
            Some(Keyword::OptIn) => {
                self.store.consents().record(&consent("granted")).await?;
                self.store
                    .inbound()
                    .process(organization_id, &item_id, "opt-in", patient.as_deref())
                    .await?;
                self.event(organization_id, "sms.opted_in", &item_id, &patient)
                    .await?;
                ("opted_in", Some(keyword(render("start")?)))
            }
            Some(Keyword::Help) => {
                self.store
                    .inbound()
                    .process(organization_id, &item_id, "help", patient.as_deref())
                    .await?;
                ("help", Some(keyword(render("help")?)))
            }
            Some(Keyword::Reminder(answer)) => {
                let reply = self
                    .replies
                    .reminder_reply(organization_id, patient.as_deref(), &item_id, answer)
                    .await?;
                // Staff see the answer in the thread too.
                intake
                    .file(&SmsSource, &envelope, &decision, &parsed)
                    .await?;
                ("reminder_reply", reply)
            }
            None => match intake
                .file(&SmsSource, &envelope, &decision, &parsed)
                .await?
            {
                Filing::Filed { .. } => ("filed", None),
                Filing::Unmatched { .. } => ("unmatched", None),
            },
        };
        let purpose = if outcome == "reminder_reply" {
            disclosure::REMINDER_REPLY
        } else {
            disclosure::KEYWORD_REPLY
        };
        let reply = match answer {
            None => None,
            Some(answer) => {
                let decision = Gate::new(self.store.clone())
                    .check(
                        &Disclosure {
                            organization_id,
                            patient_id: patient.as_deref(),
                            channel: Channel::Sms,
                            address: &sender,
                            purpose,
                            part2: answer.part2,
                        },
                        actor,
                        None,
                    )
                    .await?;
                match decision {
                    Ok(permit) => Some(Reply {
                        text: answer.text,
                        purpose,
                        part2: answer.part2,
                        patient_id: patient.clone(),
                        permit,
                    }),
                    Err(refusal) => {
                        info!(inbound_item_id = %item_id, reason = %refusal.reason, "answer refused by the disclosure gate");
                        None
                    }
                }
            }
        };
        info!(inbound_item_id = %item_id, outcome, "inbound SMS handled");
        Ok(Receipt {
            item_id,
            outcome,
            reply,
        })
    }

    async fn event(
        &self,
        organization_id: &str,
        kind: &str,
        item_id: &str,
        patient: &Option<String>,
    ) -> Result<(), InboundError> {
        self.store
            .events()
            .record(
                organization_id,
                kind,
                item_id,
                &serde_json::json!({"inbound_item_id": item_id, "patient_id": patient}),
            )
            .await?;
        Ok(())
    }
}

/// What `switchboard inbound reprocess` did with an item.
#[derive(Debug, Clone)]
pub struct Reprocessed {
    pub item_id: String,
    pub organization_id: String,
    /// The status before and after.
    pub before: String,
    pub after: String,
    /// What handling it came to (`filed`, `unmatched`, `opted_out`, ...).
    pub outcome: String,
    pub match_method: Option<String>,
    pub patient_id: Option<String>,
    pub thread_id: Option<String>,
    pub reason: Option<String>,
}

impl InboundService {
    /// Re-runs intake steps 2–5 from an item's stored raw bytes: for an item still
    /// `received` (handling failed half-way), or with `force` one left `unmatched` (a patient
    /// or a contact point was added since). Filed, processed and dismissed items are refused.
    /// Nothing is answered to the sender (the provider was answered long ago).
    pub async fn reprocess(&self, item_id: &str, force: bool) -> Result<Reprocessed, InboundError> {
        let item = self.store.inbound().item_by_id(item_id).await?;
        match (item.status.as_str(), force) {
            ("received", _) | ("unmatched", true) => {}
            ("unmatched", false) => {
                return Err(InboundError::NotReprocessable(
                    "the item is unmatched: reprocess it with --force to match it again".into(),
                ));
            }
            (other, _) => {
                return Err(InboundError::NotReprocessable(format!(
                    "the item is {other}: only received or (with --force) unmatched items are reprocessed"
                )));
            }
        }
        let organization_id = item.organization_id.clone();
        let detail = serde_json::json!({"force": force}).to_string();
        self.store
            .inbound()
            .record_step(
                &organization_id,
                item_id,
                "reprocess",
                &item.status,
                Some(&detail),
            )
            .await?;
        let outcome = if item.channel == Channel::Sms.as_str() {
            self.handle_sms(&item, "cli:reprocess")
                .await?
                .outcome
                .to_string()
        } else {
            let source = crate::intake::source_for(&item.channel)
                .ok_or_else(|| IntakeError::NoSource(item.channel.clone()))?;
            match self.intake().process(source, &item).await? {
                Filing::Filed { .. } => "filed".to_string(),
                Filing::Unmatched { .. } => "unmatched".to_string(),
            }
        };
        let after = self.store.inbound().item(&organization_id, item_id).await?;
        info!(inbound_item_id = %item_id, before = %item.status, after = %after.status, "inbound item reprocessed");
        Ok(Reprocessed {
            item_id: item_id.to_string(),
            organization_id,
            before: item.status,
            after: after.status,
            outcome,
            match_method: after.match_method,
            patient_id: after.patient_id,
            thread_id: after.thread_id,
            reason: after.reason,
        })
    }
}
