//! The delivery worker: one send attempt per job.
//!
//! 1. Claim the delivery (lease until `now + lease`); a delivery that is not waiting means
//!    the job is a duplicate or late: do nothing. Sends are idempotent per delivery.
//! 2. Pass the disclosure gate (`crate::disclosure`: Part 2 consent, opt-out) before any
//!    channel is called; this is the last check on every path, whatever was checked earlier.
//! 3. Call the connector the channel is routed to, within the lease.
//! 4. Record the outcome: `sent`/`delivered`, `failed` with the provider's reason, or a
//!    retry with backoff; after `max_attempts`, `failed` and dead-lettered.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{BoxDynError, Data};
use tracing::{info, instrument, warn};

use super::jobs::{DeliveryJob, JobQueue};
use super::retry::backoff;
use std::collections::HashMap;

use tokio::sync::Mutex;

use crate::channels::{Attachment, ChannelError, OutboundDelivery, SendOutcome, Sender};
use crate::config::Config;
use crate::connectors::Connectors;
use crate::crypto::Keyring;
use crate::disclosure::{self, Disclosure, Gate, Permit, Refusal};
use crate::domain::{Address, Channel, DeliveryStatus};
use crate::messages::MessageContent;
use crate::store::{
    AttachmentRow, AuditEntry, DeliveryRow, DeliveryUpdate, GroupCommit, InDoubt, MessageRow,
    Store, StoreError, now_ms,
};

/// Everything a send attempt needs; shared by all workers of a daemon.
pub struct Deliverer {
    pub store: Store,
    pub group: GroupCommit,
    pub keyring: Keyring,
    pub connectors: Connectors,
    pub queue: JobQueue,
    pub config: Arc<Config>,
    /// Organizations by id, as senders (they change only with the config, i.e. a restart).
    pub senders: Mutex<HashMap<String, Arc<Sender>>>,
    /// Which connector each channel is routed to (for connector pauses).
    pub routes: super::pause::Routes,
    /// The channels whose provider reports back, held longer by a claim (`queue.in_doubt_secs`).
    pub in_doubt: Arc<InDoubt>,
}

impl Deliverer {
    pub fn new(
        store: Store,
        group: GroupCommit,
        keyring: Keyring,
        connectors: Connectors,
        queue: JobQueue,
        config: Arc<Config>,
    ) -> Self {
        Self {
            routes: super::pause::Routes::of(&config),
            in_doubt: Arc::new(in_doubt(&config, &connectors)),
            store,
            group,
            keyring,
            connectors,
            queue,
            config,
            senders: Mutex::new(HashMap::new()),
        }
    }

    async fn sender(&self, organization_id: &str) -> Result<Arc<Sender>, WorkerError> {
        if let Some(sender) = self.senders.lock().await.get(organization_id) {
            return Ok(sender.clone());
        }
        let sender =
            Arc::new(crate::tenancy::sender(&self.store, &self.config, organization_id).await?);
        self.senders
            .lock()
            .await
            .insert(organization_id.to_string(), sender.clone());
        Ok(sender)
    }
}

/// The channels routed to a connector whose provider reports back: an HTTP connector with a
/// `public_url` (so the send carries a status-callback URL) and a manifest `[status]`.
fn in_doubt(config: &Config, connectors: &Connectors) -> InDoubt {
    let reporting: Vec<String> = connectors
        .http_connectors()
        .into_iter()
        .filter(|c| !c.status_callback_url("").is_empty())
        .map(|c| crate::channels::Channel::name(c.as_ref()).to_string())
        .collect();
    let channels = Channel::NAMES
        .iter()
        .filter(|channel| {
            config
                .connector_for(channel)
                .is_some_and(|name| reporting.contains(&name))
        })
        .map(|channel| channel.to_string())
        .collect();
    InDoubt {
        channels,
        hold_ms: i64::try_from(config.queue.in_doubt_secs.saturating_mul(1000)).unwrap_or(0),
    }
}

/// What a channel's worker gives each job: the daemon's [`Deliverer`], and the channel's send
/// slots (`channels.<name>.concurrency` attempts at once, however many deliveries each job
/// wakes).
#[derive(Clone)]
pub struct ChannelWork {
    pub deliverer: Arc<Deliverer>,
    pub slots: Arc<tokio::sync::Semaphore>,
}

impl ChannelWork {
    pub fn new(deliverer: Arc<Deliverer>, concurrency: usize) -> Self {
        Self {
            deliverer,
            slots: Arc::new(tokio::sync::Semaphore::new(concurrency.max(1))),
        }
    }
}

/// The apalis handler: an attempt at each delivery the job wakes, at once within the channel's
/// slots. An attempt that could not be recorded fails the job, and apalis runs it again: the
/// attempts that were recorded find their deliveries no longer waiting and do nothing.
pub async fn deliver_job(job: DeliveryJob, work: Data<ChannelWork>) -> Result<(), BoxDynError> {
    let attempts = job.delivery_ids().map(|id| {
        let work = &work;
        async move {
            let slot = work.slots.acquire().await.ok();
            work.deliverer.attempt(id, slot).await
        }
    });
    futures::future::join_all(attempts)
        .await
        .into_iter()
        .collect::<Result<Vec<()>, WorkerError>>()
        .map(|_| ())
        .map_err(Into::into)
}

/// Why an attempt could not be recorded (the job is then retried by apalis).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] super::QueueError),
}

impl Deliverer {
    /// One attempt at one delivery, holding one of its channel's send slots from the claim
    /// until the connector has answered (the claim is inside it, so no claimed delivery waits
    /// for a slot while its lease runs; recording the outcome is not a send, so the slot goes
    /// to the next attempt first). See the module docs for the steps.
    #[instrument(skip_all, fields(delivery_id = %delivery_id))]
    pub async fn attempt(
        &self,
        delivery_id: &str,
        slot: Option<tokio::sync::SemaphorePermit<'_>>,
    ) -> Result<(), WorkerError> {
        let lease = self.config.queue.lease();
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 4);
        if self.held(delivery_id).await? {
            return Ok(());
        }
        let Some(claimed) = self
            .group
            .claim(delivery_id, lease_ms, &self.in_doubt)
            .await?
        else {
            return Ok(());
        };
        let (delivery, message, listed) = (claimed.delivery, claimed.message, claimed.attachments);
        if delivery.channel == Channel::Voice
            && self.outside_call_hours(&delivery, &message).await?
        {
            return Ok(());
        }
        // A channel the configuration no longer carries is not sunk into the outbox.
        let connector_name = self
            .config
            .connector_for(&delivery.channel)
            .unwrap_or_default();
        let external = self
            .connectors
            .get(&connector_name)
            .is_some_and(|c| c.external());
        // The attachment memory this attempt holds, released when it is over.
        let mut held = None;
        let (outbound, permit) = match self.prepare(&delivery, &message, listed).await? {
            Prepared::Refused(refusal) => {
                return self.refuse(&delivery, &connector_name, &refusal).await;
            }
            Prepared::Broken(reason) => (Err(ChannelError::Permanent(reason)), None),
            Prepared::Send(outbound, permit, memory) => {
                held = memory;
                (Ok(*outbound), Some(permit))
            }
        };
        let result = match outbound {
            Err(e) => Err(e),
            Ok(_) if connector_name.is_empty() => Err(ChannelError::Permanent(format!(
                "channel {} is not configured",
                delivery.channel
            ))),
            Ok(outbound) => match self.connectors.get(&connector_name) {
                None => Err(ChannelError::Permanent(format!(
                    "connector {connector_name} is not configured"
                ))),
                Some(connector) => {
                    // Keep a margin inside the lease so no other worker takes the delivery over
                    // while this attempt may still complete.
                    let budget = lease.mul_f64(0.8).max(Duration::from_secs(1));
                    match tokio::time::timeout(budget, connector.send(&outbound)).await {
                        Ok(result) => {
                            crate::testing_hooks::kill_point("provider-answered");
                            result
                        }
                        Err(_) => Err(ChannelError::Unanswered(format!(
                            "no answer from {connector_name} within {}s",
                            budget.as_secs()
                        ))),
                    }
                }
            },
        };
        drop(held);
        drop(slot);
        let permit = permit.filter(|_| external);
        self.record(&delivery, &connector_name, permit.as_ref(), result)
            .await
    }

    /// Whether the delivery's channel or connector is paused; if so, the job is dropped
    /// unclaimed (no attempt spent) and the delivery waits for the resume. Costs nothing more
    /// than a cached read while nothing is paused.
    async fn held(&self, delivery_id: &str) -> Result<bool, WorkerError> {
        let pauses = self.store.pauses().current().await?;
        if pauses.is_empty() {
            return Ok(false);
        }
        let Some(channel) = self.store.pauses().channel_of(delivery_id).await? else {
            return Ok(false);
        };
        if self.routes.pause_of(&channel, &pauses).is_none() {
            return Ok(false);
        }
        self.store.pauses().release(delivery_id).await?;
        info!(channel = %channel, "delivery held: its channel or connector is paused");
        Ok(true)
    }

    /// Quiet hours, strictly, for calls (`crate::voice`): a call due outside calling hours waits
    /// for the next opening (its attempt not spent), or fails when that is past its window.
    /// Returns whether the call was held back.
    async fn outside_call_hours(
        &self,
        delivery: &DeliveryRow,
        message: &MessageRow,
    ) -> Result<bool, WorkerError> {
        let sender = self.sender(&delivery.organization_id).await?;
        let now = now_ms();
        match crate::voice::CallWindow::new(&sender.settings, &message.metadata).next_call_at(now) {
            Some(at) if at <= now => Ok(false),
            Some(at) => {
                self.store
                    .deliveries()
                    .defer(
                        &delivery.id,
                        at,
                        "quiet hours: the call waits for calling hours",
                    )
                    .await?;
                let delay = Duration::from_millis(u64::try_from(at - now).unwrap_or(0));
                self.queue
                    .push(
                        &delivery.channel,
                        std::slice::from_ref(&delivery.id),
                        Some(delay + Duration::from_secs(1)),
                    )
                    .await?;
                info!(delay_ms = at - now, "call deferred out of quiet hours");
                Ok(true)
            }
            None => {
                let mut update = DeliveryUpdate::new(DeliveryStatus::Failed, "worker");
                update.reason =
                    Some("quiet hours: no call possible before the reminder's window ends".into());
                self.group.update(&delivery.id, update).await?;
                warn!("call not placed: quiet hours until after the reminder's window");
                Ok(true)
            }
        }
    }

    /// Opens the message and passes the disclosure gate.
    async fn prepare(
        &self,
        delivery: &DeliveryRow,
        message: &MessageRow,
        listed: Vec<AttachmentRow>,
    ) -> Result<Prepared, WorkerError> {
        let content = match MessageContent::open(&self.keyring, &message.id, &message.content) {
            Ok(content) => content,
            Err(e) => {
                return Ok(Prepared::Broken(format!(
                    "message content cannot be opened: {e}"
                )));
            }
        };
        let channel = match delivery.channel.parse::<Channel>() {
            Ok(channel) => channel,
            Err(e) => return Ok(Prepared::Broken(e.to_string())),
        };
        let sender = self.sender(&delivery.organization_id).await?;
        let purpose = disclosure::message_purpose(&message.metadata);
        let address =
            Address::canonical(channel, &delivery.recipient, &sender.settings.phone_region);
        // Checked at send time, not only when the message was accepted: an opt-out or a
        // revoked Part 2 consent that arrived in between wins.
        let gate = Gate::grouped(self.store.clone(), self.group.clone());
        let decision = gate
            .decide(&Disclosure {
                organization_id: &delivery.organization_id,
                patient_id: message.patient_id.as_deref(),
                channel,
                address: &address,
                purpose: &purpose,
                part2: message.part2,
            })
            .await?;
        let permit = match decision {
            Ok(permit) => permit,
            Err(refusal) => return Ok(Prepared::Refused(refusal)),
        };
        let (attachments, memory) = match self.attachments(delivery, message, listed).await? {
            Ok(loaded) => loaded,
            Err(reason) => return Ok(Prepared::Broken(reason)),
        };
        let Some(reference) = self.keyring.delivery_token(&delivery.id) else {
            return Ok(Prepared::Broken(
                "delivery id is not a reference-able id".into(),
            ));
        };
        Ok(Prepared::Send(
            Box::new(OutboundDelivery {
                delivery_id: delivery.id.clone(),
                reference,
                organization_id: delivery.organization_id.clone(),
                message_id: delivery.message_id.clone(),
                channel,
                recipient: delivery.recipient.clone(),
                subject: content.subject,
                body: content.body,
                urgent: message.urgent,
                attempt: delivery.attempts,
                purpose,
                sender,
                attachments,
            }),
            permit,
            memory,
        ))
    }

    /// The message's attachments (`listed`, read with the claim), opened (`Err`: one cannot
    /// be opened, a permanent failure), with their share of the attachment memory budget (the
    /// driver's row, the sealed copy and the open one), reserved before they are read.
    async fn attachments(
        &self,
        delivery: &DeliveryRow,
        message: &MessageRow,
        listed: Vec<AttachmentRow>,
    ) -> Result<Result<Loaded, String>, WorkerError> {
        if listed.is_empty() {
            return Ok(Ok((Vec::new(), None)));
        }
        let total: i64 = listed.iter().map(|a| a.size_bytes.max(0)).sum();
        let memory = crate::attachments::MemoryBudget::of_process(
            self.config.limits.attachment_memory_bytes,
        )
        .reserve((total as u64).saturating_mul(3))
        .await;
        let blobs = self
            .store
            .attachments()
            .blobs(&delivery.organization_id, &message.id)
            .await?;
        let mut attachments = Vec::with_capacity(blobs.len());
        for blob in blobs {
            let context = crate::messages::attachment_context(&message.id, &blob.id);
            match self.keyring.open(&blob.content, &context) {
                Ok(plain) => attachments.push(Attachment {
                    filename: blob.filename.unwrap_or_else(|| "attachment".into()),
                    content_type: blob.content_type,
                    data: plain.into(),
                }),
                Err(e) => {
                    return Ok(Err(format!("attachment {} cannot be opened: {e}", blob.id)));
                }
            }
        }
        Ok(Ok((attachments, memory)))
    }

    /// A refused delivery fails at once with the reason and a `disclosure_refused` row.
    async fn refuse(
        &self,
        delivery: &DeliveryRow,
        connector: &str,
        refusal: &Refusal,
    ) -> Result<(), WorkerError> {
        let reason = refusal.reason.to_string();
        let mut update = DeliveryUpdate::new(DeliveryStatus::Failed, "worker");
        update.connector = Some(connector.to_string());
        update.reason = Some(reason.clone());
        update.audit = Some(refusal.audit(
            &format!("connector:{connector}"),
            Some(&delivery.message_id),
            Some(&delivery.id),
        ));
        self.group.update(&delivery.id, update).await?;
        warn!(connector, reason = %reason, "delivery refused by the disclosure gate");
        Ok(())
    }

    async fn record(
        &self,
        delivery: &DeliveryRow,
        connector: &str,
        permit: Option<&Permit>,
        result: Result<SendOutcome, ChannelError>,
    ) -> Result<(), WorkerError> {
        // A `disclosure` row for what reached an external connector.
        let audit = |outcome: &str, detail: Option<String>| -> Option<AuditEntry> {
            permit.map(|p| {
                p.audit(
                    &format!("connector:{connector}"),
                    outcome,
                    Some(&delivery.message_id),
                    Some(&delivery.id),
                    detail,
                )
            })
        };
        // Whether the provider may have taken the message although it did not answer.
        let unanswered = matches!(result, Err(ChannelError::Unanswered(_)));
        match result {
            Ok(outcome) => {
                let mut update = DeliveryUpdate::new(outcome.status, "worker");
                update.connector = Some(connector.to_string());
                update.provider_ref = outcome.provider_ref;
                update.audit = audit(outcome.status.as_str(), None);
                self.group.update(&delivery.id, update).await?;
                info!(status = outcome.status.as_str(), connector, "delivery sent");
            }
            Err(ChannelError::Permanent(reason)) => {
                let mut update = DeliveryUpdate::new(DeliveryStatus::Failed, "worker");
                update.connector = Some(connector.to_string());
                update.reason = Some(reason.clone());
                update.audit = audit("failed", Some(reason.clone()));
                self.group.update(&delivery.id, update).await?;
                warn!(connector, reason = %reason, "delivery failed permanently");
            }
            Err(ChannelError::Transient(reason)) | Err(ChannelError::Unanswered(reason)) => {
                if delivery.attempts >= delivery.max_attempts {
                    let mut update = DeliveryUpdate::new(DeliveryStatus::Failed, "worker");
                    update.connector = Some(connector.to_string());
                    update.reason = Some(format!(
                        "gave up after {} attempts: {reason}",
                        delivery.attempts
                    ));
                    update.dead_letter = true;
                    update.audit = audit("failed", update.reason.clone());
                    self.group.update(&delivery.id, update).await?;
                    warn!(
                        connector,
                        attempts = delivery.attempts,
                        "delivery dead-lettered"
                    );
                } else {
                    let mut delay =
                        backoff(&self.config.channel(&delivery.channel), delivery.attempts);
                    // No answer: the provider may have taken the message. Where it reports
                    // back, its status callback gets the in-doubt hold to say so (moving the
                    // delivery on) before the message is sent again.
                    if unanswered && self.in_doubt.channels.contains(&delivery.channel) {
                        delay = delay.max(Duration::from_millis(
                            u64::try_from(self.in_doubt.hold_ms).unwrap_or(0),
                        ));
                    }
                    let retry_at =
                        now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
                    self.store
                        .deliveries()
                        .schedule_retry(&delivery.id, retry_at, &reason)
                        .await?;
                    crate::metrics::metrics().attempt_failed(&delivery.channel, Some(connector));
                    self.store
                        .health()
                        .attempt_failed(&delivery.channel, Some(connector));
                    // apalis schedules in whole seconds, truncated: a job due earlier than the
                    // delivery would find it not yet claimable and be lost (until the sweeper).
                    self.queue
                        .push(
                            &delivery.channel,
                            std::slice::from_ref(&delivery.id),
                            Some(delay + Duration::from_secs(1)),
                        )
                        .await?;
                    info!(
                        connector,
                        attempt = delivery.attempts,
                        delay_ms = delay.as_millis() as u64,
                        "delivery will be retried"
                    );
                }
            }
        }
        Ok(())
    }
}

/// What a send attempt found before calling a channel.
/// A message's attachments, opened, and the attachment memory they hold.
type Loaded = (Vec<Attachment>, Option<tokio::sync::OwnedSemaphorePermit>);

enum Prepared {
    /// The delivery, the gate's permit, and the attachment memory it holds.
    Send(
        Box<OutboundDelivery>,
        Permit,
        Option<tokio::sync::OwnedSemaphorePermit>,
    ),
    /// The gate refused.
    Refused(Refusal),
    /// The message cannot be sent at all (content unreadable).
    Broken(String),
}
