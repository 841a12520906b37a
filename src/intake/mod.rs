//! Intake: the one path everything that arrives from outside takes (inbound SMS today; Direct
//! and fax plug in next), on its way to a patient's thread or the unmatched queue. Each step is
//! recorded on the item (`inbound_steps`, in order), so a person can see how far an item got
//! and `switchboard inbound reprocess` can take it further:
//!
//! 1. **received** — the raw item stored sealed, with its source (channel, connector), its
//!    organization (from the trust-boundary routing, never a fallback) and the provider's id
//!    as the dedupe key, before anything is acknowledged; a redelivery is recorded once;
//! 2. **parsed** — a [`Source`] turns the raw bytes into [`Parsed`] content, attachments and,
//!    where it knows the format, document metadata;
//! 3. **matched** — [`matching`] decides the patient; the rule is stored as `match_method`,
//!    and when it cannot decide, every candidate with the rule that proposed it;
//! 4. **filed** / **unmatched** — a new inbound message in the patient's open thread, or the
//!    unmatched queue (two candidates always are);
//! 5. the `inbound.filed` / `inbound.unmatched` event, in the same transaction as step 4;
//! 6. **acknowledged** — recorded by the caller once the pipeline returned, just before it
//!    answers the provider.
//!
//! A source may handle an item itself between 3 and 4 (SMS keywords: STOP/START/HELP are
//! `processed`, never filed; see `crate::inbound`). What this module does not own: routing an
//! item to its organization (`crate::tenancy`), answering the sender (`crate::inbound`), and
//! filing attachments (sealed into `attachments` with the message, in its transaction).

pub mod matching;
mod sources;

pub use sources::{
    CdaSource, DIRECT_MAX_ATTACHMENTS, DIRECT_MAX_BODY_BYTES, DirectSource, FaxSource, SmsSource,
    source_for,
};

use std::sync::Arc;

use serde::Serialize;
use tracing::info;

use crate::config::Config;
use crate::crypto::{CryptoError, Keyring};
use crate::messages::MessageContent;
use crate::store::{FileInbound, InboundRow, NewInbound, Store, StoreError, new_id, now_ms};
use matching::{Candidate, Decision, Demographics, Evidence, Identifier, MatchMethod};

/// How far back an inbound text may answer our last text to that number (SMS reply
/// correlation); older conversations decide nothing.
pub const REPLY_WINDOW_MS: i64 = 30 * 24 * 3600 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The stored raw item is not what its source reads.
    #[error("unreadable {channel} item: {detail}")]
    Unreadable { channel: String, detail: String },
    /// No source reads items of this channel.
    #[error("no intake source for channel {0}")]
    NoSource(String),
}

/// An attachment as a source found it: filed with the message, sealed, in `attachments`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAttachment {
    pub filename: Option<String>,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// What a document says about its patient (a C-CDA header, XDM metadata).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocumentMeta {
    /// `(authority, id)`: the authority is an OID for CDA/XDM.
    pub identifiers: Vec<Identifier>,
    pub family: Option<String>,
    pub given: Option<String>,
    /// As written (`YYYYMMDD…` or `YYYY-MM-DD`).
    pub birth_date: Option<String>,
    pub sex: Option<String>,
    /// The document's title, type code and id, for the message metadata (no PHI).
    pub type_code: Option<String>,
}

/// An item parsed: its content, its attachments and what it says about its patient.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub subject: Option<String>,
    pub body: String,
    pub attachments: Vec<ParsedAttachment>,
    /// Media the provider holds (SMS/MMS URLs): listed, never fetched.
    pub links: Vec<String>,
    pub document: Option<DocumentMeta>,
    /// Mail `In-Reply-To`, then `References` (message ids, `<token@domain>`): one of our
    /// deliveries' reference tokens among them correlates a reply.
    pub in_reply_to: Vec<String>,
    /// What did not read as it should, though the item is still filed (an XDM hash or size
    /// mismatch, an unreadable C-CDA or XDM package, a body cut to the limit). Codes and
    /// positions only — never a name, an identifier or content: they are stored in the
    /// `parsed` step's detail and shown.
    pub warnings: Vec<String>,
}

/// A kind of inbound item: how its raw bytes read, and what its sender's address may decide.
pub trait Source: Send + Sync {
    /// The item's `channel` (`sms`, later `direct`, `fax`).
    fn channel(&self) -> &'static str;
    /// Reads a raw item as stored.
    fn parse(&self, raw: &[u8]) -> Result<Parsed, String>;
    /// Whether the sender's number or address alone may choose the patient (SMS replies);
    /// otherwise it only proposes candidates.
    fn contact_decides(&self) -> bool {
        false
    }
    /// Whether a text from a number answers our last text to it through the same connector
    /// (the provider's conversation).
    fn conversation_replies(&self) -> bool {
        false
    }
}

/// An item as received, before it is recorded (step 1).
#[derive(Debug, Clone)]
pub struct Received<'a> {
    pub organization_id: &'a str,
    pub connector: Option<String>,
    /// The provider's id: a redelivery with the same one is recorded once.
    pub provider_ref: Option<String>,
    /// The sender's canonical address (E.164 for SMS).
    pub sender: String,
    pub recipient: Option<String>,
    pub raw: &'a [u8],
}

/// Where an item came from, as matching needs it.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub organization_id: String,
    pub item_id: String,
    pub connector: Option<String>,
    pub sender: String,
}

impl From<&InboundRow> for Envelope {
    fn from(row: &InboundRow) -> Self {
        Self {
            organization_id: row.organization_id.clone(),
            item_id: row.id.clone(),
            connector: row.connector.clone(),
            sender: row.sender.clone(),
        }
    }
}

/// A candidate as stored in `inbound_items.candidates`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct StoredCandidate {
    pub patient_id: String,
    /// The rule that proposed it.
    pub method: String,
}

/// What steps 4–5 did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filing {
    Filed {
        patient_id: String,
        thread_id: String,
        message_id: String,
    },
    Unmatched {
        reason: String,
        candidates: usize,
    },
}

/// The pipeline over the store and the at-rest key.
#[derive(Clone)]
pub struct Intake {
    pub store: Store,
    pub keyring: Keyring,
    pub config: Arc<Config>,
}

impl Intake {
    /// Step 1: records the raw item sealed (the item id as associated data) as `received`.
    /// Returns the item's id and whether it is new (`false`: a redelivery, already recorded).
    pub async fn record(
        &self,
        source: &dyn Source,
        item: &Received<'_>,
    ) -> Result<(String, bool), IntakeError> {
        let id = new_id("inb");
        let row = NewInbound {
            organization_id: item.organization_id.to_string(),
            channel: source.channel().to_string(),
            connector: item.connector.clone(),
            provider_ref: item.provider_ref.clone(),
            sender: item.sender.clone(),
            recipient: item.recipient.clone(),
            raw: self.keyring.seal(item.raw, &id)?,
        };
        let (item_id, fresh) = self.store.inbound().record(&id, &row).await?;
        crate::metrics::metrics().inbound(
            source.channel(),
            if fresh { "received" } else { "duplicate" },
        );
        if !fresh {
            info!(inbound_item_id = %item_id, channel = source.channel(), "inbound item redelivered; already recorded");
        }
        Ok((item_id, fresh))
    }

    /// Step 2: opens the stored raw item and parses it.
    pub async fn parse(
        &self,
        source: &dyn Source,
        item: &InboundRow,
    ) -> Result<Parsed, IntakeError> {
        // What security processing opened the item to, when it went through one (Direct).
        let raw = match &item.opened {
            Some(opened) => self.keyring.open(opened, &opened_context(&item.id))?,
            None => self.keyring.open(&item.raw, &item.id)?,
        };
        let parsed = source
            .parse(&raw)
            .map_err(|detail| IntakeError::Unreadable {
                channel: source.channel().to_string(),
                detail,
            })?;
        let mut detail = serde_json::json!({
            "attachments": parsed.attachments.len(),
            "links": parsed.links.len(),
            "document": parsed.document.is_some(),
        });
        if !parsed.warnings.is_empty() {
            detail["warnings"] = parsed.warnings.clone().into();
        }
        self.store
            .inbound()
            .record_step(
                &item.organization_id,
                &item.id,
                "parsed",
                &item.status,
                Some(&detail.to_string()),
            )
            .await?;
        Ok(parsed)
    }

    /// Step 3: decides the patient and records the rule (or the candidates).
    pub async fn decide(
        &self,
        source: &dyn Source,
        envelope: &Envelope,
        parsed: &Parsed,
    ) -> Result<Decision, IntakeError> {
        let evidence = self.evidence(source, envelope, parsed).await?;
        let decision = matching::decide(&self.store, &envelope.organization_id, &evidence).await?;
        let (method, candidates) = match &decision {
            Decision::Matched { method, .. } => (Some(method.as_str()), Vec::new()),
            Decision::Unmatched { candidates } => (None, stored(candidates)),
        };
        let candidates_json = serde_json::to_string(&candidates).unwrap_or_else(|_| "[]".into());
        let detail = serde_json::json!({"method": method, "candidates": candidates.len()});
        self.store
            .inbound()
            .record_match(
                &envelope.organization_id,
                &envelope.item_id,
                method,
                &candidates_json,
                &detail.to_string(),
            )
            .await?;
        Ok(decision)
    }

    /// What the item offers matching: the message it answers, the document's identifiers
    /// (with the organization's authority aliases) and demographics, the sender's address.
    async fn evidence(
        &self,
        source: &dyn Source,
        envelope: &Envelope,
        parsed: &Parsed,
    ) -> Result<Evidence, IntakeError> {
        let mut reply_to = None;
        // Our mail names a delivery by its reference token (`Message-ID: <token@domain>`): a
        // reference that opens to a delivery of this organization is the message it answers.
        'references: for reference in &parsed.in_reply_to {
            let token = reference
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>');
            let local = token.split('@').next().unwrap_or_default();
            for delivery_id in self.keyring.delivery_ids_for_token(local) {
                match self.store.deliveries().get(&delivery_id).await {
                    Ok(delivery) if delivery.organization_id == envelope.organization_id => {
                        reply_to = Some(delivery.message_id);
                        break 'references;
                    }
                    Ok(_) | Err(StoreError::NotFound) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if reply_to.is_none()
            && source.conversation_replies()
            && let Some(connector) = &envelope.connector
        {
            reply_to = self
                .store
                .inbound()
                .last_outbound_sms(
                    &envelope.organization_id,
                    connector,
                    &envelope.sender,
                    now_ms() - REPLY_WINDOW_MS,
                )
                .await?;
        }
        let (identifiers, demographics) = match &parsed.document {
            None => (Vec::new(), Demographics::default()),
            Some(document) => {
                let slug = self
                    .store
                    .organizations()
                    .get(&envelope.organization_id)
                    .await?
                    .slug;
                let aliases = self.config.organization(&slug).identifier_authorities;
                (
                    // An SSN is compared only as its keyed digests (stored that way).
                    matching::with_aliases(&document.identifiers, &aliases)
                        .into_iter()
                        .flat_map(|i| {
                            if crate::domain::identifier::is_ssn(&i.authority, None) {
                                self.keyring
                                    .identifier_digests(&i.id)
                                    .into_iter()
                                    .map(|id| Identifier {
                                        authority: i.authority.clone(),
                                        id,
                                    })
                                    .collect()
                            } else {
                                vec![i]
                            }
                        })
                        .collect(),
                    Demographics {
                        family: document.family.clone(),
                        given: document.given.clone(),
                        birth_date: document.birth_date.clone(),
                        sex: document.sex.clone(),
                    },
                )
            }
        };
        Ok(Evidence {
            reply_to,
            identifiers,
            demographics,
            contact: Some(envelope.sender.clone()),
            contact_decides: source.contact_decides(),
        })
    }

    /// Steps 4–5: files the item for the patient matching chose (into the thread of the
    /// message it answers, else the patient's open thread), or leaves it unmatched.
    pub async fn file(
        &self,
        source: &dyn Source,
        envelope: &Envelope,
        decision: &Decision,
        parsed: &Parsed,
    ) -> Result<Filing, IntakeError> {
        match decision {
            Decision::Matched {
                patient_id,
                thread_id,
                method,
            } => {
                let detail = serde_json::json!({"method": method.as_str()}).to_string();
                let (thread_id, message_id) = self
                    .file_for(
                        source,
                        envelope,
                        patient_id,
                        thread_id.clone(),
                        parsed,
                        "filed",
                        detail,
                        None,
                    )
                    .await?;
                Ok(Filing::Filed {
                    patient_id: patient_id.clone(),
                    thread_id,
                    message_id,
                })
            }
            Decision::Unmatched { candidates } => {
                let reason = unmatched_reason(candidates);
                let detail = serde_json::json!({"candidates": candidates.len()}).to_string();
                self.store
                    .inbound()
                    .park(
                        &envelope.organization_id,
                        &envelope.item_id,
                        &reason,
                        &detail,
                    )
                    .await?;
                crate::metrics::metrics().inbound(source.channel(), "unmatched");
                Ok(Filing::Unmatched {
                    reason,
                    candidates: candidates.len(),
                })
            }
        }
    }

    /// Files the parsed item as an inbound message of `patient_id`, in `thread_id` (when it
    /// is the thread of the message replied to) or the patient's open thread (opened when
    /// there is none). Returns `(thread_id, message_id)`.
    #[allow(clippy::too_many_arguments)]
    pub async fn file_for(
        &self,
        source: &dyn Source,
        envelope: &Envelope,
        patient_id: &str,
        thread_id: Option<String>,
        parsed: &Parsed,
        step: &'static str,
        detail: String,
        audit: Option<crate::store::AuditEntry>,
    ) -> Result<(String, String), IntakeError> {
        let organization_id = &envelope.organization_id;
        let thread_id = match thread_id {
            Some(thread)
                if self
                    .store
                    .messages()
                    .thread_is_open(organization_id, &thread)
                    .await? =>
            {
                Some(thread)
            }
            _ => self
                .store
                .messages()
                .open_thread_of(organization_id, patient_id)
                .await?
                .map(|t| t.id),
        };
        let new_thread = thread_id.is_none();
        let thread_id = thread_id.unwrap_or_else(|| new_id("thr"));
        let message_id = new_id("msg");
        let content = MessageContent {
            subject: parsed.subject.clone(),
            body: parsed.body.clone(),
        }
        .seal(&self.keyring, &message_id)?;
        // Each file sealed bound to its row, as an outbound message's are: kept whatever its
        // type (what arrived is the record; nothing here is executed or served inline).
        let attachments = parsed
            .attachments
            .iter()
            .enumerate()
            .map(|(position, file)| {
                let id = new_id("att");
                let filename = crate::attachments::safe_filename(
                    file.filename.as_deref().unwrap_or("attachment"),
                );
                let sealed = self.keyring.seal(
                    &file.bytes,
                    &crate::messages::attachment_context(&message_id, &id),
                )?;
                Ok(crate::store::NewAttachment {
                    position: i64::try_from(position).unwrap_or(i64::MAX),
                    filename,
                    content_type: crate::attachments::essence(&file.content_type),
                    size: i64::try_from(file.bytes.len()).unwrap_or(i64::MAX),
                    sha256: crate::attachments::sha256_hex(&file.bytes),
                    sealed: sealed.into(),
                    id,
                })
            })
            .collect::<Result<Vec<_>, crate::crypto::CryptoError>>()?;
        let mut metadata = serde_json::json!({
            "channel": source.channel(), "inbound_item_id": envelope.item_id,
            "media_count": parsed.links.len(), "attachment_count": parsed.attachments.len(),
        });
        if let Some(code) = parsed.document.as_ref().and_then(|d| d.type_code.clone()) {
            metadata["document_type"] = code.into();
        }
        // A person's decision names the thread it filed into.
        let audit = audit.map(|mut audit| {
            let mut detail: serde_json::Value = audit
                .detail
                .as_deref()
                .and_then(|d| serde_json::from_str(d).ok())
                .unwrap_or_else(|| serde_json::json!({}));
            detail["to_thread_id"] = thread_id.clone().into();
            detail["message_id"] = message_id.clone().into();
            audit.message_id = Some(message_id.clone());
            audit.detail = Some(detail.to_string());
            audit
        });
        let thread_id = self
            .store
            .inbound()
            .file(&FileInbound {
                item_id: envelope.item_id.clone(),
                organization_id: organization_id.clone(),
                patient_id: patient_id.to_string(),
                thread_id,
                new_thread,
                message_id: message_id.clone(),
                content,
                metadata: metadata.to_string(),
                step,
                detail,
                audit,
                attachments,
            })
            .await?;
        crate::metrics::metrics().inbound(source.channel(), step);
        Ok((thread_id, message_id))
    }

    /// Step 6: the caller is about to answer the provider.
    pub async fn acknowledge(
        &self,
        organization_id: &str,
        item_id: &str,
    ) -> Result<(), IntakeError> {
        let status = self
            .store
            .inbound()
            .item(organization_id, item_id)
            .await?
            .status;
        self.store
            .inbound()
            .record_step(organization_id, item_id, "acknowledged", &status, None)
            .await?;
        Ok(())
    }

    /// Steps 2–5 for a recorded item of a source that handles nothing itself. An item whose
    /// raw bytes its source cannot read is left unmatched with the reason.
    pub async fn process(
        &self,
        source: &dyn Source,
        item: &InboundRow,
    ) -> Result<Filing, IntakeError> {
        let envelope = Envelope::from(item);
        let parsed = match self.parse(source, item).await {
            Ok(parsed) => parsed,
            Err(IntakeError::Unreadable { detail, .. }) => {
                let reason = format!("unreadable: {detail}");
                let detail = serde_json::json!({"unreadable": true}).to_string();
                self.store
                    .inbound()
                    .park(&item.organization_id, &item.id, &reason, &detail)
                    .await?;
                crate::metrics::metrics().inbound(source.channel(), "unreadable");
                return Ok(Filing::Unmatched {
                    reason,
                    candidates: 0,
                });
            }
            Err(other) => return Err(other),
        };
        let decision = self.decide(source, &envelope, &parsed).await?;
        self.file(source, &envelope, &decision, &parsed).await
    }

    /// Steps 1–5 for an item of a source that handles nothing itself; `None` for a
    /// redelivery (recorded before).
    pub async fn receive(
        &self,
        source: &dyn Source,
        item: &Received<'_>,
    ) -> Result<(String, Option<Filing>), IntakeError> {
        let (item_id, fresh) = self.record(source, item).await?;
        if !fresh {
            return Ok((item_id, None));
        }
        let row = self
            .store
            .inbound()
            .item(item.organization_id, &item_id)
            .await?;
        let filing = self.process(source, &row).await?;
        log_filing(&item_id, &filing);
        Ok((item_id, Some(filing)))
    }
}

/// The associated data `inbound_items.opened` is sealed with.
pub fn opened_context(item_id: &str) -> String {
    format!("opened:{item_id}")
}

/// The candidates as stored.
pub fn stored(candidates: &[Candidate]) -> Vec<StoredCandidate> {
    candidates
        .iter()
        .map(|c| StoredCandidate {
            patient_id: c.patient_id.clone(),
            method: c.method.as_str().to_string(),
        })
        .collect()
}

/// Why an item is unmatched, in words a person reads (no PHI: counts and rule names).
fn unmatched_reason(candidates: &[Candidate]) -> String {
    if candidates.is_empty() {
        return "no patient matched".into();
    }
    if candidates.iter().all(|c| c.method == MatchMethod::Contact) {
        if candidates.len() == 1 {
            return "one patient has the sender's address; it only proposes".into();
        }
        return format!(
            "ambiguous sender: {} patients share the number or address",
            candidates.len()
        );
    }
    let mut methods: Vec<&str> = candidates.iter().map(|c| c.method.as_str()).collect();
    methods.dedup();
    format!(
        "ambiguous: {} candidates ({})",
        candidates.len(),
        methods.join(", ")
    )
}

/// Logs what was done with an item (ids only).
pub fn log_filing(item_id: &str, filing: &Filing) {
    match filing {
        Filing::Filed {
            thread_id,
            message_id,
            ..
        } => info!(inbound_item_id = %item_id, %thread_id, %message_id, "inbound item filed"),
        Filing::Unmatched { candidates, .. } => {
            info!(inbound_item_id = %item_id, candidates, "inbound item unmatched")
        }
    }
}
