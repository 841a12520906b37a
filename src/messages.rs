//! Accepting outbound messages: validation, recipient resolution, sealing the content,
//! one durable transaction (message + deliveries + events, idempotent per key), then one job
//! per delivery. Also the read model of a message record. Used by the HTTP API and the CLI.

mod api;

use std::collections::BTreeMap;
use std::sync::Arc;

use openssl::hash::{MessageDigest, hash};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::attachments::{AttachmentProblem, AttachmentUpload};
use crate::config::Config;
use crate::crypto::{CryptoError, Keyring};
use crate::domain::{Address, Channel, DeliveryStatus, UnknownChannel};
use crate::service::Location;
use crate::store::{
    AcceptItem, AcceptOutcome, AttachmentRow, AuditEntry, GroupCommit, NewAttachment, NewDelivery,
    NewMessage, Store, StoreError, new_id, now_ms,
};

/// What is sealed at rest for a message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct MessageContent {
    pub subject: Option<String>,
    pub body: String,
}

impl MessageContent {
    pub fn seal(&self, keyring: &Keyring, message_id: &str) -> Result<Vec<u8>, CryptoError> {
        let plain = serde_json::to_vec(self).map_err(|_| CryptoError::Malformed)?;
        keyring.seal(&plain, message_id)
    }

    pub fn open(keyring: &Keyring, message_id: &str, sealed: &[u8]) -> Result<Self, CryptoError> {
        let plain = keyring.open(sealed, message_id)?;
        serde_json::from_slice(&plain).map_err(|_| CryptoError::Malformed)
    }
}

/// `POST /v1/messages` (and `switchboard send`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// Post into this thread...
    #[serde(default)]
    pub thread_id: Option<String>,
    /// ...or into the open thread of this patient (by the organization's external id).
    #[serde(default)]
    pub patient: Option<String>,
    /// Kept with the body, sealed; not every channel shows it.
    #[serde(default)]
    pub subject: Option<String>,
    /// The text. Not empty.
    #[schema(min_length = 1)]
    pub body: String,
    /// At least one.
    #[schema(min_items = 1)]
    pub recipients: Vec<Recipient>,
    /// Channels for recipients that name none.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Staff are notified (and escalated to) until someone reads it.
    #[serde(default)]
    pub urgent: bool,
    /// 42 CFR Part 2 record: never disclosed without the patient's Part 2 consent.
    #[serde(default)]
    pub part2: bool,
    /// Category of a new thread: clinical, administrative, urgent, routine.
    #[serde(default)]
    pub category: Option<String>,
    /// Free-form; `purpose` (one of the client purposes, `message` when absent) drives the
    /// disclosure rules.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Files to send with the message (JSON: `content_base64`; or multipart file parts).
    /// Checked against `[limits]`; stored sealed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentUpload>,
}

impl SendRequest {
    /// An administrative message to one address on one channel (reminders, campaigns,
    /// notifications, keyword answers): in the patient's open thread when `patient` (external
    /// id) is given, else in a new administrative thread.
    pub fn notice(
        patient: Option<String>,
        channel: &str,
        address: String,
        subject: Option<String>,
        body: String,
        metadata: serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        Self {
            thread_id: None,
            patient,
            subject,
            body,
            recipients: vec![Recipient {
                address: Some(address),
                channel: Some(channel.to_string()),
                patient: false,
            }],
            channels: Vec::new(),
            urgent: false,
            part2: false,
            category: Some("administrative".into()),
            metadata,
            attachments: Vec::new(),
        }
    }
}

/// A recipient: an explicit address, or the thread's patient (their contact points).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    /// A phone number, email or Direct address, fax number (1 to 320 characters).
    #[serde(default)]
    pub address: Option<String>,
    /// sms, email, fax or direct; absent: the request's `channels`.
    #[serde(default)]
    pub channel: Option<String>,
    /// Send to the patient's own contact point for the channel (lowest rank wins).
    #[serde(default)]
    pub patient: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("{field}: {reason}")]
    Invalid {
        field: String,
        reason: String,
        /// Where the field is in the request (a JSON pointer into the body, or a header).
        at: Location,
    },
    /// The configuration gives the channel no connector (a file is present and has no
    /// `[channels.<channel>]`): nothing would carry it, so it is refused rather than sunk.
    #[error("{field}: channel {channel} is not configured on this gateway")]
    ChannelNotConfigured {
        field: String,
        /// JSON Pointer to the field naming the channel.
        pointer: String,
        channel: String,
    },
    /// An attachment (or all of them together) is over a `[limits]` size or count: 413.
    #[error("{field}: {reason}")]
    TooLarge {
        field: String,
        reason: String,
        /// JSON pointer to the attachment (`/attachments/0`) or the list.
        pointer: String,
    },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("Idempotency-Key was already used with a different request")]
    KeyReused,
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl From<StoreError> for MessageError {
    fn from(error: StoreError) -> Self {
        match error {
            // A record the service did not name is still "not found", never internal.
            StoreError::NotFound => MessageError::NotFound("record"),
            other => MessageError::Store(other),
        }
    }
}

/// A body field at fault: `field` as a person reads it (`recipients[0].channel`), `pointer`
/// as a JSON pointer (`/recipients/0/channel`).
fn invalid(field: &str, pointer: impl Into<String>, reason: impl Into<String>) -> MessageError {
    MessageError::Invalid {
        field: field.to_string(),
        reason: reason.into(),
        at: Location::Pointer(pointer.into()),
    }
}

/// The thread a message goes into, as [`MessageService::accept`] would resolve it: an open
/// thread's id, or a new id with the category to create it with.
#[derive(Debug, Clone)]
pub struct ResolvedThread {
    pub thread_id: String,
    /// `Some(category)`: create the thread with the message.
    pub new_thread_category: Option<String>,
    pub patient_id: Option<String>,
}

pub use api::{MAX_THREAD_PAGE, ThreadMessages, ThreadView};

/// The result of an accept: which message, and whether it was a replay.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub message_id: String,
    pub replayed: bool,
    /// The record of a newly created message, as the store now holds it (saves reading it back).
    pub view: Option<MessageView>,
}

/// The accept and read paths.
#[derive(Clone)]
pub struct MessageService {
    pub store: Store,
    pub group: GroupCommit,
    pub keyring: Keyring,
    pub config: Arc<Config>,
    /// Phone region per organization id, read once per process: an accept checks numbers
    /// without a database read of its own (batch senders accept hundreds at once).
    pub regions: PhoneRegions,
}

/// Organization id → its `phone_region` (organizations never change slug).
#[derive(Clone, Default)]
pub struct PhoneRegions(Arc<std::sync::RwLock<std::collections::HashMap<String, String>>>);

impl PhoneRegions {
    /// The organization's phone region, from the cache or read once.
    pub async fn of(
        &self,
        store: &Store,
        config: &Config,
        organization_id: &str,
    ) -> Result<String, StoreError> {
        let cached = self
            .0
            .read()
            .ok()
            .and_then(|map| map.get(organization_id).cloned());
        if let Some(region) = cached {
            return Ok(region);
        }
        let slug = store.organizations().get(organization_id).await?.slug;
        let region = config.organization(&slug).phone_region;
        if let Ok(mut map) = self.0.write() {
            map.insert(organization_id.to_string(), region.clone());
        }
        Ok(region)
    }
}

impl MessageService {
    /// Validates, records durably, then enqueues its deliveries (one job per channel and batch).
    pub async fn accept(
        &self,
        organization_id: &str,
        request: &SendRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Accepted, MessageError> {
        self.accept_owned(organization_id, request.clone(), idempotency_key)
            .await
    }

    /// [`MessageService::accept`] taking the request: its attachments are sealed one by one
    /// and each plaintext dropped once sealed, so a file is not held twice while the message
    /// waits for its commit.
    pub async fn accept_owned(
        &self,
        organization_id: &str,
        mut request: SendRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Accepted, MessageError> {
        validate(&request, idempotency_key)?;
        let (thread_id, new_thread_category, patient_id) =
            self.resolve_thread(organization_id, &request).await?;
        let uploads = std::mem::take(&mut request.attachments);
        self.accept_resolved(
            organization_id,
            &request,
            uploads,
            idempotency_key,
            ResolvedThread {
                thread_id,
                new_thread_category,
                patient_id,
            },
        )
        .await
    }

    /// [`MessageService::accept`] for a caller that has already found the thread (and the
    /// patient) — batch senders that look threads up for many patients at once. The request
    /// is validated the same way; `request.patient` still goes into the idempotency
    /// fingerprint.
    pub async fn accept_in_thread(
        &self,
        organization_id: &str,
        request: &SendRequest,
        idempotency_key: Option<&str>,
        thread: ResolvedThread,
    ) -> Result<Accepted, MessageError> {
        validate(request, idempotency_key)?;
        let mut request = request.clone();
        let uploads = std::mem::take(&mut request.attachments);
        self.accept_resolved(organization_id, &request, uploads, idempotency_key, thread)
            .await
    }

    /// `request.attachments` is empty here: the files are `uploads`.
    async fn accept_resolved(
        &self,
        organization_id: &str,
        request: &SendRequest,
        uploads: Vec<AttachmentUpload>,
        idempotency_key: Option<&str>,
        thread: ResolvedThread,
    ) -> Result<Accepted, MessageError> {
        let ResolvedThread {
            thread_id,
            new_thread_category,
            patient_id,
        } = thread;
        let deliveries = self
            .resolve_recipients(organization_id, request, patient_id.as_deref())
            .await?;
        if !uploads.is_empty() && deliveries.iter().any(|d| d.channel == "sms") {
            return Err(invalid(
                "attachments",
                "/attachments",
                "SMS cannot carry attachments",
            ));
        }

        let message_id = new_id("msg");
        let attachments = self.seal_attachments(&message_id, uploads)?;
        let content = MessageContent {
            subject: request.subject.clone(),
            body: request.body.clone(),
        }
        .seal(&self.keyring, &message_id)?;
        let message = NewMessage {
            id: message_id.clone(),
            organization_id: organization_id.to_string(),
            thread_id,
            new_thread_category,
            patient_id,
            direction: "outbound".into(),
            content,
            urgent: request.urgent,
            part2: request.part2,
            metadata: serde_json::Value::Object(request.metadata.clone()).to_string(),
            created_at: now_ms(),
        };
        let request_hash = idempotency_key.map(|_| request_fingerprint(request, &attachments));
        let idempotency = idempotency_key.zip(request_hash.as_deref());
        let item = AcceptItem {
            message,
            deliveries,
            attachments,
            idempotency: idempotency.map(|(k, h)| (k.to_string(), h.to_string())),
        };
        match self.group.accept(item.clone()).await? {
            AcceptOutcome::Replayed(existing) => {
                return Ok(Accepted {
                    message_id: existing,
                    replayed: true,
                    view: None,
                });
            }
            AcceptOutcome::KeyReused => return Err(MessageError::KeyReused),
            AcceptOutcome::Created => {}
        }
        info!(message_id = %message_id, deliveries = item.deliveries.len(), "message accepted");
        let view =
            MessageView::accepted(&item.message, request, &item.deliveries, &item.attachments);
        Ok(Accepted {
            message_id,
            replayed: false,
            view: Some(view),
        })
    }

    /// Checks the uploads against `[limits]` (count, sizes: 413; type and bytes: 422) and seals
    /// each, bound to its row (`attachment:<message id>:<attachment id>`). Each plaintext is
    /// dropped as soon as it is sealed.
    fn seal_attachments(
        &self,
        message_id: &str,
        uploads: Vec<AttachmentUpload>,
    ) -> Result<Vec<NewAttachment>, MessageError> {
        let limits = &self.config.limits;
        if uploads.len() > limits.max_attachments {
            return Err(MessageError::TooLarge {
                field: "attachments".into(),
                reason: format!(
                    "{} attachments, over the limit of {}",
                    uploads.len(),
                    limits.max_attachments
                ),
                pointer: "/attachments".into(),
            });
        }
        let mut total = 0u64;
        for (i, upload) in uploads.iter().enumerate() {
            let size = upload.content.len() as u64;
            let name = crate::attachments::safe_filename(&upload.filename);
            if size > limits.max_attachment_bytes {
                return Err(MessageError::TooLarge {
                    field: format!("attachments[{i}]"),
                    reason: format!(
                        "{name:?} is {size} bytes, over the limit of {} bytes a file",
                        limits.max_attachment_bytes
                    ),
                    pointer: format!("/attachments/{i}"),
                });
            }
            total += size;
            if total > limits.max_message_attachment_bytes {
                return Err(MessageError::TooLarge {
                    field: format!("attachments[{i}]"),
                    reason: format!(
                        "{name:?} brings the attachments to {total} bytes, over the limit of {} bytes a message",
                        limits.max_message_attachment_bytes
                    ),
                    pointer: format!("/attachments/{i}"),
                });
            }
        }
        for (i, upload) in uploads.iter().enumerate() {
            crate::attachments::check(
                &upload.content_type,
                &limits.allowed_attachment_types,
                &upload.content,
            )
            .map_err(|problem| {
                let at = match problem {
                    AttachmentProblem::Empty => "content_base64",
                    _ => "content_type",
                };
                invalid(
                    &format!("attachments[{i}].{at}"),
                    format!("/attachments/{i}/{at}"),
                    problem.to_string(),
                )
            })?;
        }
        let mut sealed = Vec::with_capacity(uploads.len());
        for (i, upload) in uploads.into_iter().enumerate() {
            let id = new_id("att");
            let sha256 = crate::attachments::sha256_hex(&upload.content);
            let bytes = self
                .keyring
                .seal(&upload.content, &attachment_context(message_id, &id))?;
            sealed.push(NewAttachment {
                id,
                position: i as i64,
                filename: crate::attachments::safe_filename(&upload.filename),
                content_type: crate::attachments::essence(&upload.content_type),
                size: upload.content.len() as i64,
                sha256,
                sealed: bytes.into(),
            });
            // `upload` (the plaintext) is dropped here, before the next is sealed.
        }
        Ok(sealed)
    }

    /// One attachment of a message of the organization, opened, for `actor` (recorded in the
    /// audit table as `attachment_read`). Another organization's is not found.
    pub async fn attachment(
        &self,
        organization_id: &str,
        message_id: &str,
        attachment_id: &str,
        actor: &str,
    ) -> Result<AttachmentContent, MessageError> {
        let blob = match self
            .store
            .attachments()
            .get(organization_id, message_id, attachment_id)
            .await
        {
            Err(StoreError::NotFound) => return Err(MessageError::NotFound("attachment")),
            other => other?,
        };
        let bytes = self
            .keyring
            .open(&blob.content, &attachment_context(message_id, &blob.id))?;
        let patient_id = self
            .store
            .messages()
            .get(organization_id, message_id)
            .await?
            .patient_id;
        self.store
            .audit()
            .record(&AuditEntry {
                organization_id: organization_id.to_string(),
                action: "attachment_read".into(),
                actor: actor.to_string(),
                patient_id,
                message_id: Some(message_id.to_string()),
                outcome: Some("ok".into()),
                detail: Some(blob.id.clone()),
                ..AuditEntry::default()
            })
            .await?;
        Ok(AttachmentContent {
            filename: blob.filename.unwrap_or_else(|| "attachment".into()),
            content_type: blob.content_type,
            bytes,
        })
    }

    async fn resolve_thread(
        &self,
        organization_id: &str,
        request: &SendRequest,
    ) -> Result<(String, Option<String>, Option<String>), MessageError> {
        let category = request.category.clone().unwrap_or_else(|| {
            if request.urgent {
                "urgent".into()
            } else {
                "routine".into()
            }
        });
        if !matches!(
            category.as_str(),
            "clinical" | "administrative" | "urgent" | "routine"
        ) {
            return Err(invalid(
                "category",
                "/category",
                "must be clinical, administrative, urgent or routine",
            ));
        }
        match (&request.thread_id, &request.patient) {
            (Some(_), Some(_)) => Err(invalid(
                "thread_id",
                "/thread_id",
                "give thread_id or patient, not both",
            )),
            (Some(thread_id), None) => {
                let thread = match self
                    .store
                    .messages()
                    .thread(organization_id, thread_id)
                    .await
                {
                    Err(StoreError::NotFound) => return Err(MessageError::NotFound("thread")),
                    other => other?,
                };
                Ok((thread.id, None, thread.patient_id))
            }
            (None, Some(external_id)) => {
                let patient = match self
                    .store
                    .patients()
                    .by_external_id(organization_id, external_id)
                    .await
                {
                    Err(StoreError::NotFound) => return Err(MessageError::NotFound("patient")),
                    other => other?,
                };
                match self
                    .store
                    .messages()
                    .open_thread_of(organization_id, &patient.id)
                    .await?
                {
                    Some(thread) => Ok((thread.id, None, Some(patient.id))),
                    None => Ok((new_id("thr"), Some(category), Some(patient.id))),
                }
            }
            (None, None) => Ok((new_id("thr"), Some(category), None)),
        }
    }

    async fn resolve_recipients(
        &self,
        organization_id: &str,
        request: &SendRequest,
        patient_id: Option<&str>,
    ) -> Result<Vec<NewDelivery>, MessageError> {
        let mut deliveries = Vec::new();
        // The organization's phone region, read once and only when a phone number needs it.
        let mut region: Option<String> = None;
        for (i, recipient) in request.recipients.iter().enumerate() {
            let field = format!("recipients[{i}]");
            let at = format!("/recipients/{i}");
            let channels: Vec<String> = match &recipient.channel {
                Some(channel) => vec![channel.clone()],
                None => request.channels.clone(),
            };
            if channels.is_empty() {
                return Err(invalid(
                    &field,
                    &at,
                    "no channel: set recipients[].channel or channels",
                ));
            }
            for (j, channel) in channels.iter().enumerate() {
                match recipient.channel {
                    Some(_) => check_channel(&field, &format!("{at}/channel"), channel)?,
                    None => check_channel("channels", &format!("/channels/{j}"), channel)?,
                }
                if self.config.connector_for(channel).is_none() {
                    let (field, pointer) = match recipient.channel {
                        Some(_) => (
                            format!("{field}.channel"),
                            format!("/recipients/{i}/channel"),
                        ),
                        None => (format!("channels[{j}]"), format!("/channels/{j}")),
                    };
                    return Err(MessageError::ChannelNotConfigured {
                        field,
                        pointer,
                        channel: channel.clone(),
                    });
                }
            }
            match (&recipient.address, recipient.patient) {
                (Some(address), false) => {
                    if channels.len() != 1 {
                        return Err(invalid(
                            &field,
                            &at,
                            "an address goes over exactly one channel",
                        ));
                    }
                    let address = address.trim();
                    // Checked above: every name here is a channel.
                    let channel: Channel = channels[0]
                        .parse()
                        .map_err(|e: UnknownChannel| invalid(&field, &at, e.to_string()))?;
                    let region = match (channel.is_phone(), &region) {
                        (false, _) => String::new(),
                        (true, Some(region)) => region.clone(),
                        (true, None) => {
                            let found = self
                                .regions
                                .of(&self.store, &self.config, organization_id)
                                .await?;
                            region = Some(found.clone());
                            found
                        }
                    };
                    if let Err(e) = Address::parse(channel, address, &region) {
                        return Err(invalid(
                            &format!("{field}.address"),
                            format!("{at}/address"),
                            e.to_string(),
                        ));
                    }
                    deliveries.push(self.new_delivery(&channels[0], address));
                }
                (None, true) => {
                    let Some(patient_id) = patient_id else {
                        return Err(invalid(
                            &field,
                            format!("{at}/patient"),
                            "patient recipient needs a patient or a patient's thread",
                        ));
                    };
                    let points = self.store.patients().contact_points(patient_id).await?;
                    for channel in &channels {
                        // Checked above: every name here is a channel.
                        let systems = channel.parse().map_or(&[][..], Channel::contact_systems);
                        let point = points.iter().find(|p| systems.contains(&p.system.as_str()));
                        match point {
                            Some(point) => {
                                deliveries.push(self.new_delivery(channel, &point.value))
                            }
                            None => {
                                return Err(invalid(
                                    &field,
                                    format!("{at}/patient"),
                                    format!("the patient has no contact point for {channel}"),
                                ));
                            }
                        }
                    }
                }
                _ => {
                    return Err(invalid(
                        &field,
                        &at,
                        "give either address or \"patient\": true",
                    ));
                }
            }
        }
        let sms = Channel::Sms.to_string();
        if deliveries.iter().any(|d| d.channel == sms) {
            check_sms_body(&request.body)?;
        }
        Ok(deliveries)
    }

    fn new_delivery(&self, channel: &str, recipient: &str) -> NewDelivery {
        NewDelivery {
            id: new_id("dlv"),
            channel: channel.to_string(),
            recipient: recipient.to_string(),
            max_attempts: i64::from(self.config.channel(channel).max_attempts),
        }
    }

    /// The message record with each delivery's latest status and history.
    pub async fn view(
        &self,
        organization_id: &str,
        message_id: &str,
    ) -> Result<MessageView, MessageError> {
        let record = match self
            .store
            .messages()
            .record(organization_id, message_id)
            .await
        {
            Err(StoreError::NotFound) => return Err(MessageError::NotFound("message")),
            other => other?,
        };
        MessageView::from_record(&self.keyring, record)
    }
}

/// The checks every accept makes before touching the store.
fn validate(request: &SendRequest, idempotency_key: Option<&str>) -> Result<(), MessageError> {
    if request.body.trim().is_empty() {
        return Err(invalid("body", "/body", "must not be empty"));
    }
    if request.recipients.is_empty() {
        return Err(invalid(
            "recipients",
            "/recipients",
            "at least one recipient is required",
        ));
    }
    for (j, channel) in request.channels.iter().enumerate() {
        check_channel("channels", &format!("/channels/{j}"), channel)?;
    }
    if idempotency_key.is_some_and(|key| key.is_empty() || key.len() > 255) {
        return Err(MessageError::Invalid {
            field: "Idempotency-Key".into(),
            reason: "must be 1 to 255 characters".into(),
            at: Location::Header("Idempotency-Key".into()),
        });
    }
    Ok(())
}

/// Most characters an SMS body may have: 10 concatenated segments, what providers accept.
pub const MAX_SMS_CHARS: usize = 1600;

/// A body that goes out by SMS must fit the segments the SMS channel sends
/// ([`crate::connectors::MAX_SMS_SEGMENTS`]): refused when accepted, not failed later.
fn check_sms_body(body: &str) -> Result<(), MessageError> {
    let chars = body.chars().count();
    if chars > MAX_SMS_CHARS {
        return Err(invalid(
            "body",
            "/body",
            format!("an SMS body is at most {MAX_SMS_CHARS} characters; this one has {chars}"),
        ));
    }
    let segments = crate::phone::segments(body).segments;
    if segments > crate::connectors::MAX_SMS_SEGMENTS {
        return Err(invalid(
            "body",
            "/body",
            format!(
                "the text needs {segments} SMS segments; at most {} are sent",
                crate::connectors::MAX_SMS_SEGMENTS
            ),
        ));
    }
    Ok(())
}

fn check_channel(field: &str, pointer: &str, channel: &str) -> Result<(), MessageError> {
    channel
        .parse::<Channel>()
        .map(|_| ())
        .map_err(|e| invalid(field, pointer, e.to_string()))
}

/// The context an attachment is sealed with: its message and its own id, so sealed bytes
/// copied to another row do not open.
pub fn attachment_context(message_id: &str, attachment_id: &str) -> String {
    format!("attachment:{message_id}:{attachment_id}")
}

/// An attachment opened for a reader.
#[derive(Debug, Clone)]
pub struct AttachmentContent {
    pub filename: String,
    /// The stored media type (essence).
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// SHA-256 of the request as parsed (its attachments by name, type and digest): a repeat
/// with the same key must be the same request. Without attachments it is what it was before
/// attachments existed.
fn request_fingerprint(request: &SendRequest, attachments: &[NewAttachment]) -> String {
    let mut bytes = serde_json::to_vec(request).unwrap_or_default();
    for a in attachments {
        bytes.extend_from_slice(
            format!("\n{}\0{}\0{}", a.filename, a.content_type, a.sha256).as_bytes(),
        );
    }
    hash(MessageDigest::sha256(), &bytes)
        .map(hex::encode)
        .unwrap_or_default()
}

/// Milliseconds → RFC 3339 (UTC).
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A message record as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    /// The gateway's id (`msg_…`).
    pub id: String,
    pub thread_id: String,
    /// The patient the thread is about (gateway id), if any.
    pub patient_id: Option<String>,
    /// outbound or inbound.
    pub direction: String,
    /// Summary over deliveries: the one delivery's status, or in_progress / completed /
    /// failed / partially_failed.
    pub status: String,
    pub subject: Option<String>,
    pub body: String,
    pub urgent: bool,
    /// A 42 CFR Part 2 record.
    pub part2: bool,
    /// The request's metadata (`purpose`, …) as given.
    pub metadata: serde_json::Value,
    /// RFC 3339 (UTC).
    pub created_at: String,
    /// One per recipient and channel.
    pub deliveries: Vec<DeliveryView>,
    /// The message's files, in the sender's order (the bytes:
    /// `GET /v1/messages/{id}/attachments/{attachment_id}`).
    pub attachments: Vec<AttachmentView>,
}

/// An attachment as the message record lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AttachmentView {
    /// The gateway's id (`att_…`).
    pub id: String,
    /// As stored (paths and control characters removed).
    pub filename: String,
    /// Media type, lower case.
    pub content_type: String,
    /// Bytes.
    pub size: i64,
    /// SHA-256 of the bytes, lower-case hex.
    pub sha256: String,
}

impl From<&NewAttachment> for AttachmentView {
    fn from(a: &NewAttachment) -> Self {
        Self {
            id: a.id.clone(),
            filename: a.filename.clone(),
            content_type: a.content_type.clone(),
            size: a.size,
            sha256: a.sha256.clone(),
        }
    }
}

impl From<AttachmentRow> for AttachmentView {
    fn from(a: AttachmentRow) -> Self {
        Self {
            id: a.id,
            filename: a.filename.unwrap_or_else(|| "attachment".into()),
            content_type: a.content_type,
            size: a.size_bytes,
            sha256: a.sha256,
        }
    }
}

/// One delivery of a message: one recipient over one channel.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    /// The gateway's id (`dlv_…`).
    pub id: String,
    /// sms, email, fax or direct.
    pub channel: String,
    /// The address it goes to.
    pub recipient: String,
    /// queued, sending, sent, processed, dispatched, delivered, failed or expired.
    pub status: String,
    pub attempts: i64,
    /// The connector that carried it, once known.
    pub connector: Option<String>,
    /// The provider's id for it, once known.
    pub provider_ref: Option<String>,
    /// Why it failed, for a person.
    pub reason: Option<String>,
    /// RFC 3339 (UTC).
    pub updated_at: String,
    /// Every report, oldest first, applied or not.
    pub history: Vec<HistoryView>,
    /// A fax delivery: the provider's record of the fax (absent until the provider accepted it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fax: Option<FaxView>,
}

/// What the fax provider reports of a fax we sent.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FaxView {
    /// Pages handed to the provider (the cover page included).
    pub pages_submitted: Option<i64>,
    /// Pages the provider reports transmitted.
    pub pages_sent: Option<i64>,
    /// The provider's own state (`success`, `failure`, `fax.delivered`, …).
    pub provider_status: Option<String>,
}

/// One report about a delivery.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HistoryView {
    pub status: String,
    /// Whether it moved the delivery (a late or duplicate report is recorded, not applied).
    pub applied: bool,
    /// Who reported: api, worker, `webhook:<connector>`, dsn, mdn, …
    pub source: String,
    pub detail: Option<String>,
    /// RFC 3339 (UTC).
    pub at: String,
}

impl MessageView {
    /// The record of a message just accepted: every delivery `queued`.
    pub fn accepted(
        message: &NewMessage,
        request: &SendRequest,
        deliveries: &[NewDelivery],
        attachments: &[NewAttachment],
    ) -> Self {
        let at = rfc3339(message.created_at);
        let deliveries: Vec<DeliveryView> = deliveries
            .iter()
            .map(|d| DeliveryView {
                id: d.id.clone(),
                channel: d.channel.clone(),
                recipient: d.recipient.clone(),
                status: "queued".into(),
                attempts: 0,
                connector: None,
                provider_ref: None,
                reason: None,
                updated_at: at.clone(),
                history: vec![HistoryView {
                    status: "queued".into(),
                    applied: true,
                    source: "api".into(),
                    detail: None,
                    at: at.clone(),
                }],
                fax: None,
            })
            .collect();
        Self {
            id: message.id.clone(),
            thread_id: message.thread_id.clone(),
            patient_id: message.patient_id.clone(),
            direction: message.direction.clone(),
            status: summarize(deliveries.iter().map(|d| d.status.as_str())),
            subject: request.subject.clone(),
            body: request.body.clone(),
            urgent: message.urgent,
            part2: message.part2,
            metadata: serde_json::Value::Object(request.metadata.clone()),
            created_at: at,
            deliveries,
            attachments: attachments.iter().map(AttachmentView::from).collect(),
        }
    }

    /// The view of a message's rows as [`crate::store::Messages::record`] read them.
    pub fn from_record(
        keyring: &Keyring,
        record: crate::store::MessageRecord,
    ) -> Result<Self, MessageError> {
        let crate::store::MessageRecord {
            message,
            deliveries,
            history,
            attachments,
            faxes,
        } = record;
        let content = MessageContent::open(keyring, &message.id, &message.content)?;
        let mut by_delivery: BTreeMap<String, Vec<HistoryView>> = BTreeMap::new();
        for event in history {
            by_delivery
                .entry(event.delivery_id)
                .or_default()
                .push(HistoryView {
                    status: event.status,
                    applied: event.applied,
                    source: event.source,
                    detail: event.detail,
                    at: rfc3339(event.created_at),
                });
        }
        let status = summarize(deliveries.iter().map(|d| d.status.as_str()));
        let deliveries = deliveries
            .into_iter()
            .map(|d| DeliveryView {
                history: by_delivery.remove(&d.id).unwrap_or_default(),
                fax: faxes
                    .iter()
                    .find(|f| f.delivery_id.as_deref() == Some(d.id.as_str()))
                    .map(|f| FaxView {
                        pages_submitted: f.pages_submitted,
                        pages_sent: f.pages,
                        provider_status: f.provider_status.clone(),
                    }),
                id: d.id,
                channel: d.channel,
                recipient: d.recipient,
                status: d.status,
                attempts: d.attempts,
                connector: d.connector,
                provider_ref: d.provider_ref,
                reason: d.reason,
                updated_at: rfc3339(d.updated_at),
            })
            .collect();
        Ok(Self {
            id: message.id,
            thread_id: message.thread_id,
            patient_id: message.patient_id,
            direction: message.direction,
            status,
            subject: content.subject,
            body: content.body,
            urgent: message.urgent,
            part2: message.part2,
            metadata: serde_json::from_str(&message.metadata).unwrap_or_default(),
            created_at: rfc3339(message.created_at),
            deliveries,
            attachments: attachments.into_iter().map(AttachmentView::from).collect(),
        })
    }
}

pub(crate) fn summarize<'a>(statuses: impl Iterator<Item = &'a str>) -> String {
    let statuses: Vec<&str> = statuses.collect();
    if let [only] = statuses.as_slice() {
        return only.to_string();
    }
    let parsed: Vec<DeliveryStatus> = statuses
        .iter()
        .filter_map(|s| DeliveryStatus::parse(s))
        .collect();
    if parsed.is_empty() {
        return "none".into();
    }
    let failed = |s: &DeliveryStatus| matches!(s, DeliveryStatus::Failed | DeliveryStatus::Expired);
    if parsed.iter().any(|s| !s.is_terminal()) {
        "in_progress".into()
    } else if parsed.iter().all(failed) {
        "failed".into()
    } else if parsed.iter().any(failed) {
        "partially_failed".into()
    } else {
        "completed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::summarize;

    #[test]
    fn summary_over_deliveries() {
        assert_eq!(summarize(["delivered"].into_iter()), "delivered");
        assert_eq!(
            summarize(["delivered", "sending"].into_iter()),
            "in_progress"
        );
        assert_eq!(
            summarize(["delivered", "failed"].into_iter()),
            "partially_failed"
        );
        assert_eq!(summarize(["failed", "expired"].into_iter()), "failed");
        assert_eq!(summarize(["delivered", "sent"].into_iter()), "in_progress");
    }
}
