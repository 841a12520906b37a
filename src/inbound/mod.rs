//! Inbound items (SMS now; fax and Direct file the same way): recorded sealed before anything
//! else, then keywords (opt-out/opt-in/help), reminder answers, or filing into the sender's
//! patient thread — or the unmatched queue when the sender is unknown or ambiguous. Nothing is
//! dropped: an item that fails half-way stays `received` and is listed for a person.
//!
//! An answer to the sender (keyword confirmations, help, the answer to a reminder reply) is a
//! disclosure like any other: it passes the gate (`crate::disclosure`) before it is handed back
//! to the webhook, and a refused one is audited and not given at all.

pub mod keywords;
mod webhook;
mod work;

pub use webhook::Answering;
pub use work::{InboundItemView, InboundList, InboundStatus, MAX_PAGE, ResolveRequest, Resolved};

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::info;

use crate::config::Config;
use crate::crypto::{CryptoError, Keyring};
use crate::disclosure::{self, Disclosure, Gate, Permit};
use crate::domain::{Address, Channel};
use crate::messages::MessageContent;
use crate::store::{ConsentChange, FileInbound, NewInbound, NewOrphan, Store, StoreError, new_id};
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
        let (item_id, fresh) = self.store.record_orphan(&id, &orphan).await?;
        tracing::warn!(orphan_id = %item_id, connector = %sms.connector, fresh, "inbound SMS belongs to no organization; quarantined for the operator");
        Ok(Receipt {
            item_id,
            outcome: if fresh { "orphaned" } else { "duplicate" },
            reply: None,
        })
    }

    /// Records, then handles, one inbound SMS for an organization.
    pub async fn receive_sms(
        &self,
        organization_id: &str,
        sms: &InboundSms,
    ) -> Result<Receipt, InboundError> {
        let org = self.store.organization(organization_id).await?;
        let settings = self.config.organization(&org.slug);
        let sender = Address::canonical(Channel::Sms, &sms.from, &settings.phone_region);
        let id = new_id("inb");
        let raw = serde_json::to_vec(sms).map_err(|_| CryptoError::Malformed)?;
        let item = NewInbound {
            organization_id: organization_id.to_string(),
            channel: Channel::Sms.to_string(),
            connector: Some(sms.connector.clone()),
            provider_ref: sms.provider_ref.clone(),
            sender: sender.to_string(),
            recipient: Some(sms.to.clone()),
            raw: self.keyring.seal(&raw, &id)?,
        };
        let (item_id, fresh) = self.store.record_inbound(&id, &item).await?;
        if !fresh {
            info!(inbound_item_id = %item_id, "inbound SMS redelivered; already recorded");
            return Ok(Receipt {
                item_id,
                outcome: "duplicate",
                reply: None,
            });
        }
        let patients = self
            .store
            .patients_by_phone(organization_id, sender.as_str())
            .await?;
        let patient = match patients.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        };
        let name = settings.display_name.clone().unwrap_or(org.name.clone());
        let locale = match &patient {
            Some(p) => self
                .store
                .patient(organization_id, p)
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
        let (outcome, answer) = match keywords::classify(&sms.body) {
            Some(Keyword::OptOut) => {
                self.store.record_consent(&consent("revoked")).await?;
                self.store
                    .set_inbound_status(&item_id, "processed", Some("opt-out"), patient.as_deref())
                    .await?;
                self.event(organization_id, "sms.opted_out", &item_id, &patient)
                    .await?;
                ("opted_out", Some(keyword(render("stop")?)))
            }
            Some(Keyword::OptIn) => {
                self.store.record_consent(&consent("granted")).await?;
                self.store
                    .set_inbound_status(&item_id, "processed", Some("opt-in"), patient.as_deref())
                    .await?;
                self.event(organization_id, "sms.opted_in", &item_id, &patient)
                    .await?;
                ("opted_in", Some(keyword(render("start")?)))
            }
            Some(Keyword::Help) => {
                self.store
                    .set_inbound_status(&item_id, "processed", Some("help"), patient.as_deref())
                    .await?;
                ("help", Some(keyword(render("help")?)))
            }
            Some(Keyword::Reminder(answer)) => {
                let reply = self
                    .replies
                    .reminder_reply(organization_id, patient.as_deref(), &item_id, answer)
                    .await?;
                // Staff see the answer in the thread too.
                self.file_or_park(organization_id, &item_id, sms, &patients)
                    .await?;
                ("reminder_reply", reply)
            }
            None => (
                self.file_or_park(organization_id, &item_id, sms, &patients)
                    .await?,
                None,
            ),
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
                        &format!("webhook:{}", sms.connector),
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
            .record_event(
                organization_id,
                kind,
                item_id,
                &serde_json::json!({"inbound_item_id": item_id, "patient_id": patient}),
            )
            .await?;
        Ok(())
    }

    /// Files the text into the one matching patient's thread, or parks it as unmatched.
    async fn file_or_park(
        &self,
        organization_id: &str,
        item_id: &str,
        sms: &InboundSms,
        patients: &[String],
    ) -> Result<&'static str, InboundError> {
        match patients {
            [patient] => {
                self.file(organization_id, item_id, patient, &sms.body, &sms.media)
                    .await?;
                Ok("filed")
            }
            [] => {
                self.store
                    .set_inbound_status(item_id, "unmatched", Some("unknown sender"), None)
                    .await?;
                self.event(organization_id, "inbound.unmatched", item_id, &None)
                    .await?;
                Ok("unmatched")
            }
            many => {
                let reason = format!("ambiguous sender: {} patients share the number", many.len());
                self.store
                    .set_inbound_status(item_id, "unmatched", Some(&reason), None)
                    .await?;
                self.event(organization_id, "inbound.unmatched", item_id, &None)
                    .await?;
                Ok("unmatched")
            }
        }
    }

    /// Files an item's text as an inbound message in the patient's open thread.
    pub async fn file(
        &self,
        organization_id: &str,
        item_id: &str,
        patient_id: &str,
        body: &str,
        media: &[String],
    ) -> Result<String, InboundError> {
        let thread = self
            .store
            .open_thread_of(organization_id, patient_id)
            .await?;
        let message_id = new_id("msg");
        let content = MessageContent {
            subject: None,
            body: body.to_string(),
        }
        .seal(&self.keyring, &message_id)?;
        let metadata = serde_json::json!({
            "channel": Channel::Sms, "inbound_item_id": item_id, "media_count": media.len(),
        });
        let thread_id = self
            .store
            .file_inbound(&FileInbound {
                item_id: item_id.to_string(),
                organization_id: organization_id.to_string(),
                patient_id: patient_id.to_string(),
                thread_id: thread.map(|t| t.id),
                message_id: message_id.clone(),
                content,
                metadata: metadata.to_string(),
            })
            .await?;
        Ok(thread_id)
    }

    /// A person resolves an unmatched item: file it for this patient.
    pub async fn resolve(
        &self,
        organization_id: &str,
        item_id: &str,
        patient_id: &str,
    ) -> Result<String, InboundError> {
        let item = self.store.inbound_item(organization_id, item_id).await?;
        let raw = self.keyring.open(&item.raw, &item.id)?;
        let sms: InboundSms = serde_json::from_slice(&raw).map_err(|_| CryptoError::Malformed)?;
        self.file(organization_id, item_id, patient_id, &sms.body, &sms.media)
            .await
    }
}
