//! An inbound SMS from a provider's webhook, once its signature is verified: bound to the
//! organization owning the number it was sent to (or owning the connector) — never to a
//! default — else quarantined for the operator; then recorded and handled
//! ([`InboundService::receive_sms`], the intake pipeline's steps 1–5), the answer the gate
//! permitted either given inline (audited now) or sent as a message, and the item marked
//! acknowledged (step 6) just before the provider is answered.

use super::{InboundService, InboundSms, Reply};
use crate::messages::{MessageError, ResolvedThread, SendRequest};
use crate::service::ServiceError;
use crate::store::{StoreError, new_id};
use crate::tenancy::Route;

/// How the provider takes an answer to an inbound text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answering {
    /// In the webhook's response (the disclosure happens now).
    Inline,
    /// As a message of ours (the worker passes the gate again). Such providers answer STOP
    /// themselves (carrier rules), so opt-outs get no message.
    Message,
}

impl InboundService {
    /// Routes, records and handles one SMS a provider delivered to connector
    /// `sms.connector` (owned by the organization `connector_owner`, a slug, if any). Returns
    /// the text to answer inline, when the gate permitted one.
    pub async fn receive_from_provider(
        &self,
        sms: &InboundSms,
        connector_owner: Option<&str>,
        answering: Answering,
    ) -> Result<Option<String>, ServiceError> {
        let organization_id = match self.tenancy.route_number(&sms.to, connector_owner) {
            Route::Organization(slug) => match self.store.organizations().by_slug(&slug).await {
                Ok(org) => org.id,
                Err(StoreError::NotFound) => {
                    let reason = format!("organization {slug} is not set up");
                    self.receive_orphan(sms, &reason).await?;
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            },
            Route::Orphan(reason) => {
                self.receive_orphan(sms, &reason).await?;
                return Ok(None);
            }
        };
        let receipt = self.receive_sms(&organization_id, sms).await?;
        let fresh = receipt.outcome != "duplicate";
        // Only an answer the disclosure gate permitted is here at all.
        let Some(reply) = receipt.reply else {
            if fresh {
                self.intake()
                    .acknowledge(&organization_id, &receipt.item_id)
                    .await?;
            }
            return Ok(None);
        };
        match answering {
            Answering::Inline => {
                let actor = format!("webhook:{}", sms.connector);
                self.store
                    .audit()
                    .record(&reply.permit.audit(&actor, "answered", None, None, None))
                    .await?;
            }
            Answering::Message if receipt.outcome != "opted_out" => {
                match self.send_reply(&organization_id, &sms.from, &reply).await {
                    // A sender we cannot text back (a short code, a sender id): the item is
                    // handled; there is just no one to answer.
                    Err(MessageError::Invalid { .. }) => {
                        tracing::info!(inbound_item_id = %receipt.item_id, "the sender cannot be answered by SMS");
                    }
                    other => {
                        other?;
                    }
                }
            }
            Answering::Message => {}
        }
        // The provider is answered only now (intake step 6).
        if fresh {
            self.intake()
                .acknowledge(&organization_id, &receipt.item_id)
                .await?;
        }
        Ok(Some(reply.text))
    }

    /// Sends an answer to an inbound text (HELP, START, a reminder answer) as an outbound SMS
    /// message, in the patient's open thread when the sender is a known patient.
    pub async fn send_reply(
        &self,
        organization_id: &str,
        to: &str,
        reply: &Reply,
    ) -> Result<String, MessageError> {
        let mut metadata = serde_json::Map::new();
        metadata.insert("purpose".into(), reply.purpose.into());
        let mut request = SendRequest::notice(
            None,
            crate::domain::Channel::Sms.as_str(),
            to.to_string(),
            None,
            reply.text.clone(),
            metadata,
        );
        request.part2 = reply.part2;
        let accepted = match &reply.patient_id {
            None => {
                self.messages
                    .accept(organization_id, &request, None)
                    .await?
            }
            Some(patient_id) => {
                let open = self
                    .store
                    .messages()
                    .open_thread_of(organization_id, patient_id)
                    .await?;
                let thread = ResolvedThread {
                    new_thread_category: open.is_none().then(|| "administrative".to_string()),
                    thread_id: open.map_or_else(|| new_id("thr"), |t| t.id),
                    patient_id: Some(patient_id.clone()),
                };
                self.messages
                    .accept_in_thread(organization_id, &request, None, thread)
                    .await?
            }
        };
        Ok(accepted.message_id)
    }
}
