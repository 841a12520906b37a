//! Inbound Direct: what arrives in a Direct connector's mailbox (or `switchboard direct
//! receive`) on its way to a patient's thread, the unmatched queue or the quarantine.
//!
//! Per message, in order:
//! 1. **security** (`sign` mode: we are the STA): decrypt with one of the connector's keys,
//!    verify, apply the v1.3 policy, chain each signer to the connector's *inbound* anchors
//!    for the sender's domain and check its revocation (`switchboard_direct::inbound::accept`).
//!    What opens to an MDN or DSN is a notification about our own sending: it goes back to the
//!    tracker and is never recorded or answered here;
//! 2. **received**: the raw message recorded sealed under the connector's organization (never
//!    an id it carries), with the dedupe key sender + Message-ID, before the mailbox message is
//!    flagged; a redelivery is recorded once and answered never again;
//! 3. **verified** or **quarantined**: the opened message stored sealed (`opened:<id>`) and
//!    the `processed` MDN queued — before matching, so filing time never reaches the sender's
//!    timeout — or the item quarantined with the failing check and no MDN at all. A check that
//!    could not be made (a CRL that could not be fetched under `crl = "hard"`) is retried;
//! 4. intake's parse, match and file (`crate::intake`, [`DirectSource`]), then the
//!    `dispatched` MDN when the sender asked for final-destination delivery, or a `failed` MDN
//!    when the item cannot be filed.
//!
//! Each step is idempotent and resumable: a daemon stopped anywhere leaves the item `received`
//! (with or without its opened message), and the resume pass takes it on from there. MDNs are
//! one per item and disposition (unique in the store). In `edge` mode the HISP did the
//! security and answers the sender: the message is filed as it arrived and we send no MDN.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mail_parser::MimeHeaders;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::anchors::Anchors;
use super::discovery::revocation::Fetcher;
use super::mdn::{Disposition, MdnOutbox, NewMdn};
use crate::channels::direct::{DirectChannelError, direct_connectors, fetch_policy, keys};
use crate::config::{Config, DirectMode};
use crate::crypto::{CryptoError, Keyring};
use crate::intake::{DirectSource, Filing, Intake, IntakeError, Received, opened_context};
use crate::store::{
    AuditEntry, DirectQuarantine, InboundRow, NewOrphan, Store, StoreError, new_id, now_ms,
};
use crate::tenancy::{Route, Tenancy};

/// How long a `received` item may sit untouched before the resume pass takes it on (the live
/// path is still working on anything younger).
const STALE_AFTER: Duration = Duration::from_secs(60);
/// How often the resume pass runs.
const RESUME_EVERY: Duration = Duration::from_secs(30);
/// When a check that could not be made (a CRL) is tried again, and for how long.
const RETRY_AFTER: Duration = Duration::from_secs(600);
const RETRY_FOR: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum DirectInboundError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Intake(#[from] IntakeError),
    #[error("no Direct connector named {0:?}")]
    UnknownConnector(String),
    #[error("{0}")]
    NotReleasable(String),
}

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Filed,
    Unmatched,
    /// Recorded before (same sender and Message-ID): nothing filed or answered again.
    Duplicate,
    Quarantined,
    /// No organization owns the connector's address: kept for the operator.
    Orphaned,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Filed => "filed",
            Outcome::Unmatched => "unmatched",
            Outcome::Duplicate => "duplicate",
            Outcome::Quarantined => "quarantined",
            Outcome::Orphaned => "orphaned",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message recorded, and what became of it.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub item_id: String,
    pub outcome: Outcome,
    /// Why it is quarantined or unmatched (checks and counts; no addresses or content).
    pub reason: Option<String>,
}

/// What [`DirectInbound::take`] did with a mailbox message.
#[derive(Debug)]
pub enum Taken {
    /// It opened to a notification (MDN/DSN) about our own sending: the tracker's.
    Notification { inner: Vec<u8>, sender: String },
    /// It was recorded as an inbound item.
    Item(Receipt),
}

/// One Direct connector as inbound sees it.
struct Endpoint {
    name: String,
    address: String,
    organization: Option<String>,
    mode: DirectMode,
    keys: Vec<(X509, PKey<Private>)>,
    anchors: Arc<Anchors>,
    fetcher: Option<Arc<Fetcher>>,
}

/// The inbound Direct service (see the module docs).
#[derive(Clone)]
pub struct DirectInbound {
    intake: Intake,
    mdns: MdnOutbox,
    tenancy: Arc<Tenancy>,
    endpoints: Arc<BTreeMap<String, Endpoint>>,
}

/// The outer message's From, lower-case, and its Message-ID (without brackets).
fn envelope_of(raw: &[u8]) -> (Option<String>, Option<String>) {
    let Some(msg) = switchboard_mail::parse_message(raw) else {
        return (None, None);
    };
    let from = msg
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(|a| a.trim().to_ascii_lowercase());
    let id = msg.message_id().map(|id| id.trim().to_string());
    (from, id)
}

/// Whether an (opened) message is a delivery notification: an MDN or a DSN.
pub fn is_notification(message: &[u8]) -> bool {
    switchboard_mail::parse_message(message).is_some_and(|m| {
        m.content_type().is_some_and(|ct| {
            ct.ctype().eq_ignore_ascii_case("multipart")
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case("report"))
        })
    })
}

/// Whether the sender asked for a dispatched MDN on final delivery
/// (`Disposition-Notification-Options: X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true`).
pub fn wants_final_delivery(message: &[u8]) -> bool {
    let Some(msg) = switchboard_mail::parse_message(message) else {
        return false;
    };
    msg.headers().iter().any(|h| {
        h.name()
            .eq_ignore_ascii_case("Disposition-Notification-Options")
            && h.value().as_text().is_some_and(|v| {
                v.to_ascii_lowercase()
                    .contains("x-direct-final-destination-delivery")
            })
    })
}

/// The dedupe key of a message: sender and Message-ID (a digest when it has none).
fn dedupe_key(sender: &str, message_id: Option<&str>, raw: &[u8]) -> String {
    match message_id {
        Some(id) if !id.is_empty() => format!("{sender} <{id}>"),
        _ => format!("{sender} sha256:{}", crate::attachments::sha256_hex(raw)),
    }
}

impl DirectInbound {
    /// The service over every Direct connector of `config` whose keys load.
    pub fn new(
        intake: Intake,
        mdns: MdnOutbox,
        tenancy: Arc<Tenancy>,
        config: &Config,
    ) -> Result<Self, DirectChannelError> {
        let mut endpoints = BTreeMap::new();
        for (name, direct) in direct_connectors(config) {
            let material = keys::load(direct)?;
            let fetcher =
                if direct.revocation.crl == crate::config::CrlMode::Off && !direct.revocation.aia {
                    None
                } else {
                    Some(Arc::new(Fetcher::new(
                        direct.revocation.clone(),
                        fetch_policy(direct, &config.security)?,
                    )))
                };
            endpoints.insert(
                name.clone(),
                Endpoint {
                    name: name.clone(),
                    address: direct.address.trim().to_ascii_lowercase(),
                    organization: direct.organization.clone(),
                    mode: direct.mode,
                    keys: material.decryption,
                    anchors: material.anchors,
                    fetcher,
                },
            );
        }
        Ok(Self {
            intake,
            mdns,
            tenancy,
            endpoints: Arc::new(endpoints),
        })
    }

    /// The Direct connectors' names.
    pub fn connectors(&self) -> impl Iterator<Item = &str> {
        self.endpoints.keys().map(String::as_str)
    }

    fn endpoint(&self, name: &str) -> Result<&Endpoint, DirectInboundError> {
        self.endpoints
            .get(name)
            .ok_or_else(|| DirectInboundError::UnknownConnector(name.to_string()))
    }

    fn store(&self) -> &Store {
        &self.intake.store
    }

    fn keyring(&self) -> &Keyring {
        &self.intake.keyring
    }

    /// Takes one message as it was read from `connector`'s mailbox (see the module docs).
    /// Durable when it returns `Item`: the mailbox message may then be flagged.
    pub async fn take(&self, connector: &str, raw: &[u8]) -> Result<Taken, DirectInboundError> {
        let endpoint = self.endpoint(connector)?;
        let (from, message_id) = envelope_of(raw);
        let sender = from.unwrap_or_default();
        let security = if endpoint.mode == DirectMode::Sign {
            let verdict = security::accept(raw, endpoint).await;
            if let Ok(accepted) = &verdict
                && is_notification(&accepted.opened.inner)
            {
                return Ok(Taken::Notification {
                    inner: accepted.opened.inner.clone(),
                    sender: accepted.sender.clone(),
                });
            }
            Some(verdict)
        } else {
            None
        };
        let key = dedupe_key(&sender, message_id.as_deref(), raw);
        let organization_id = match self
            .tenancy
            .route_address(&endpoint.address, endpoint.organization.as_deref())
        {
            Route::Organization(slug) => self.store().organizations().by_slug(&slug).await?.id,
            Route::Orphan(reason) => {
                let id = new_id("orp");
                let orphan = NewOrphan {
                    channel: "direct".into(),
                    connector: Some(endpoint.name.clone()),
                    provider_ref: Some(key),
                    sender: sender.clone(),
                    recipient: Some(endpoint.address.clone()),
                    reason,
                    raw: self.keyring().seal(raw, &id)?,
                };
                let (item_id, fresh) = self.store().inbound().record_orphan(&id, &orphan).await?;
                warn!(orphan_id = %item_id, connector = %endpoint.name, fresh, "inbound Direct message belongs to no organization; kept for the operator");
                return Ok(Taken::Item(Receipt {
                    item_id,
                    outcome: if fresh {
                        Outcome::Orphaned
                    } else {
                        Outcome::Duplicate
                    },
                    reason: None,
                }));
            }
        };
        let (item_id, fresh) = self
            .intake
            .record(
                &DirectSource,
                &Received {
                    organization_id: &organization_id,
                    connector: Some(endpoint.name.clone()),
                    provider_ref: Some(key),
                    sender,
                    recipient: Some(endpoint.address.clone()),
                    raw,
                },
            )
            .await?;
        let item = self
            .store()
            .inbound()
            .item(&organization_id, &item_id)
            .await?;
        if !fresh && item.status != "received" {
            info!(inbound_item_id = %item_id, "inbound Direct message recorded before; not filed or answered again");
            return Ok(Taken::Item(Receipt {
                item_id,
                outcome: Outcome::Duplicate,
                reason: None,
            }));
        }
        Ok(Taken::Item(self.carry_on(endpoint, item, security).await?))
    }

    /// Takes a recorded item further from wherever it stopped: security (with `security`
    /// when the caller already ran it on these bytes), then content.
    async fn carry_on(
        &self,
        endpoint: &Endpoint,
        mut item: InboundRow,
        security: Option<Result<security::Accepted, security::Refusal>>,
    ) -> Result<Receipt, DirectInboundError> {
        let org = item.organization_id.clone();
        let mut signers = Vec::new();
        let mut inner = None;
        if item.opened.is_none() {
            let raw = self.keyring().open(&item.raw, &item.id)?;
            let opened = match endpoint.mode {
                DirectMode::Edge if switchboard_mail::mime::is_pkcs7_mime(&raw) => {
                    let refusal = security::Refusal {
                        check: crate::direct::Check::Decrypt,
                        reason: "an edge-mode connector holds no decryption key: the HISP should have decrypted it".into(),
                        retryable: false,
                        verdicts: Vec::new(),
                    };
                    return self.quarantine(&item, &refusal).await;
                }
                DirectMode::Edge => {
                    let detail = serde_json::json!({"security": "hisp"}).to_string();
                    (raw.clone(), detail)
                }
                DirectMode::Sign => {
                    let verdict = match security {
                        Some(v) => v,
                        None => security::accept(&raw, endpoint).await,
                    };
                    match verdict {
                        Ok(accepted) => {
                            let detail = serde_json::json!({
                                "signers": accepted.signers.len().max(accepted.opened.signer_subjects.len()),
                                "cipher": accepted.opened.cipher.to_string(),
                                "wrapped": accepted.opened.wrapped,
                            })
                            .to_string();
                            signers = accepted.signers;
                            (accepted.opened.inner, detail)
                        }
                        Err(refusal) => return self.quarantine(&item, &refusal).await,
                    }
                }
            };
            let sealed = self.keyring().seal(&opened.0, &opened_context(&item.id))?;
            let first = self
                .store()
                .direct()
                .record_opened(&org, &item.id, &sealed, &opened.1)
                .await?;
            if first {
                item.opened = Some(sealed);
                inner = Some(opened.0);
            } else {
                // Another pass (or daemon) opened it meanwhile: go on from what it stored.
                item = self.store().inbound().item(&org, &item.id).await?;
                if item.status != "received" {
                    return Ok(receipt_of(&item));
                }
            }
        }
        let inner = match inner {
            Some(inner) => inner,
            None => match &item.opened {
                Some(sealed) => self.keyring().open(sealed, &opened_context(&item.id))?,
                None => return Ok(receipt_of(&item)),
            },
        };
        let (_, original_id) = envelope_of(&inner);
        let original_id = original_id.or_else(|| {
            self.keyring()
                .open(&item.raw, &item.id)
                .ok()
                .and_then(|raw| envelope_of(&raw).1)
        });
        let mdn = |disposition: Disposition, final_destination: bool, certs: Vec<X509>| NewMdn {
            organization_id: org.clone(),
            inbound_item_id: item.id.clone(),
            connector: endpoint.name.clone(),
            disposition,
            recipient: item.sender.clone(),
            original_message_id: original_id.clone().unwrap_or_default(),
            final_destination,
            recipient_certs: certs,
        };
        // An MDN needs the message's id to name; one without is filed unanswered.
        let answer = endpoint.mode == DirectMode::Sign && original_id.is_some();
        if answer {
            self.mdns
                .enqueue(&mdn(Disposition::Processed, false, signers.clone()))
                .await?;
        }
        let filing = match self.intake.process(&DirectSource, &item).await {
            Ok(filing) => filing,
            Err(IntakeError::Store(e)) => return Err(e.into()),
            Err(other) => {
                // Processed, but it cannot be filed: say so to the sender.
                warn!(inbound_item_id = %item.id, error = %other, "inbound Direct message could not be filed");
                if answer {
                    self.mdns
                        .enqueue(&mdn(Disposition::Failed, false, signers))
                        .await?;
                }
                return Err(other.into());
            }
        };
        crate::intake::log_filing(&item.id, &filing);
        if answer && wants_final_delivery(&inner) {
            self.mdns
                .enqueue(&mdn(Disposition::Dispatched, true, signers))
                .await?;
        }
        Ok(match filing {
            Filing::Filed { .. } => Receipt {
                item_id: item.id.clone(),
                outcome: Outcome::Filed,
                reason: None,
            },
            Filing::Unmatched { reason, .. } => Receipt {
                item_id: item.id.clone(),
                outcome: Outcome::Unmatched,
                reason: Some(reason),
            },
        })
    }

    async fn quarantine(
        &self,
        item: &InboundRow,
        refusal: &security::Refusal,
    ) -> Result<Receipt, DirectInboundError> {
        let check = refusal.check.to_string();
        let reason = refusal.to_string();
        let retry_for = i64::try_from(RETRY_FOR.as_millis()).unwrap_or(i64::MAX);
        let retry_at = (refusal.retryable && now_ms() - item.created_at < retry_for)
            .then(|| now_ms() + i64::try_from(RETRY_AFTER.as_millis()).unwrap_or(0));
        self.store()
            .direct()
            .quarantine(&DirectQuarantine {
                organization_id: &item.organization_id,
                item_id: &item.id,
                check: &check,
                reason: &reason,
                retry_at,
            })
            .await?;
        warn!(inbound_item_id = %item.id, %check, retry = retry_at.is_some(), "inbound Direct message quarantined; no MDN sent");
        Ok(Receipt {
            item_id: item.id.clone(),
            outcome: Outcome::Quarantined,
            reason: Some(reason),
        })
    }

    /// Takes an item on from its stored state: `received` (stopped half-way) or quarantined
    /// with a retry due (processed again as a scheduled retry).
    pub async fn resume(&self, item: InboundRow) -> Result<Receipt, DirectInboundError> {
        let connector = item.connector.clone().unwrap_or_default();
        let endpoint = self.endpoint(&connector)?;
        let item = if item.status == "quarantined" {
            self.store()
                .direct()
                .release(&item.organization_id, &item.id, None)
                .await?;
            self.store()
                .inbound()
                .item(&item.organization_id, &item.id)
                .await?
        } else {
            item
        };
        if item.status != "received" {
            return Ok(receipt_of(&item));
        }
        self.carry_on(endpoint, item, None).await
    }

    /// An operator's release of a quarantined item: security processing runs again (after
    /// an anchor was added, a CRL came back…), audited as `actor`. With `organization_id`
    /// (an organization's admin, through the API or the console) an item of another
    /// organization is not found; without it (the gateway's operator, on the CLI) any item.
    pub async fn release(
        &self,
        organization_id: Option<&str>,
        item_id: &str,
        actor: &str,
    ) -> Result<Receipt, DirectInboundError> {
        let item = match organization_id {
            Some(org) => self.store().inbound().item(org, item_id).await?,
            None => self.store().inbound().item_by_id(item_id).await?,
        };
        if item.channel != "direct" || item.status != "quarantined" {
            return Err(DirectInboundError::NotReleasable(format!(
                "{item_id} is a {} item in status {}: only quarantined Direct items are released",
                item.channel, item.status
            )));
        }
        let endpoint = self.endpoint(item.connector.as_deref().unwrap_or_default())?;
        let audit = AuditEntry {
            organization_id: item.organization_id.clone(),
            action: "direct_quarantine_released".into(),
            actor: actor.to_string(),
            patient_id: None,
            message_id: None,
            delivery_id: None,
            channel: Some("direct".into()),
            recipient: None,
            outcome: None,
            detail: Some(
                serde_json::json!({"inbound_item_id": item.id, "check": item.quarantine_check})
                    .to_string(),
            ),
        };
        self.store()
            .direct()
            .release(&item.organization_id, &item.id, Some(&audit))
            .await?;
        let item = self
            .store()
            .inbound()
            .item(&item.organization_id, &item.id)
            .await?;
        self.carry_on(endpoint, item, None).await
    }

    /// One resume pass: returns how many items it took on.
    pub async fn resume_due(&self) -> Result<usize, DirectInboundError> {
        let now = now_ms();
        let stale = now - i64::try_from(STALE_AFTER.as_millis()).unwrap_or(0);
        let items = self
            .store()
            .direct()
            .items_to_resume(stale, now, 100)
            .await?;
        let mut done = 0;
        for item in items {
            let id = item.id.clone();
            match self.resume(item).await {
                Ok(receipt) => {
                    info!(inbound_item_id = %id, outcome = %receipt.outcome, "inbound Direct item taken on");
                    done += 1;
                }
                Err(e) => {
                    warn!(inbound_item_id = %id, error = %e, "inbound Direct item not taken on; will retry")
                }
            }
        }
        Ok(done)
    }

    /// The resume pass every [`RESUME_EVERY`] until `stop` (a supervised task).
    pub async fn resume_regularly(&self, stop: &CancellationToken) {
        loop {
            if let Err(e) = self.resume_due().await {
                warn!(error = %e, "inbound Direct resume pass failed");
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(RESUME_EVERY) => {}
            }
        }
    }
}

fn receipt_of(item: &InboundRow) -> Receipt {
    let outcome = match item.status.as_str() {
        "filed" | "resolved" => Outcome::Filed,
        "quarantined" => Outcome::Quarantined,
        "unmatched" => Outcome::Unmatched,
        _ => Outcome::Duplicate,
    };
    Receipt {
        item_id: item.id.clone(),
        outcome,
        reason: item.reason.clone(),
    }
}

#[async_trait::async_trait]
impl crate::channels::direct::tracker::MessageSink for DirectInbound {
    async fn take(
        &self,
        connector: &str,
        raw: &[u8],
    ) -> Result<crate::channels::direct::tracker::Taken, Box<dyn std::error::Error + Send + Sync>>
    {
        use crate::channels::direct::tracker::Taken as T;
        Ok(match DirectInbound::take(self, connector, raw).await? {
            Taken::Notification { inner, sender } => T::Notification { inner, sender },
            Taken::Item(receipt) => T::Recorded {
                item_id: receipt.item_id,
                outcome: receipt.outcome.as_str(),
            },
        })
    }
}

/// Security processing: the protocol crate's `accept` with the connector's keys, anchors and
/// CRL fetcher (the daemon's fetch policy).
mod security {
    use super::Endpoint;
    pub use switchboard_direct::inbound::{Accepted, Refusal};

    pub async fn accept(raw: &[u8], endpoint: &Endpoint) -> Result<Accepted, Refusal> {
        switchboard_direct::inbound::accept(
            raw,
            &endpoint.keys,
            &endpoint.anchors,
            endpoint.fetcher.as_deref(),
            chrono::Utc::now(),
        )
        .await
    }
}
