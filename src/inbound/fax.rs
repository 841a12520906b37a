//! Received faxes: a provider's webhook, once its signature is verified (`http::hooks`), is
//! recorded here sealed — the fax's details and, when the provider posted it (Phaxio), its
//! document — once per (provider, direction, provider id), before the provider is answered.
//! The `fax-inbound` job then finishes the work, each step idempotent:
//!
//! ```text
//! webhook ─► verify ─► record (fax_inbound: sealed, `received`)  [commit] ─► 200
//!                          └─ wake ─► fax-inbound job (also every 2 s)
//! job: claim (lease 5 min) ─► document posted? ─► else download media_url
//!          (https only — plain http only for a `[security] fetch_allow` host —, a host the
//!           manifest lists, the fetch policy's address checks, no redirect, size cap,
//!           timeout; 403/404/410: refresh the URL at the provider, then again)
//!      ─► route: the organization owning the number it was sent to (else the connector's
//!         owner) ─► none: inbound_orphans (sealed, operator-only) ─► `orphaned`
//!      ─► intake (FaxSource): record (dedupe by provider id) ─► parse ─► match (the sender's
//!         number only proposes) ─► unmatched queue with sender, pages and the document
//!         ─► `filed`
//!      failure: retried with backoff (`[fax_inbound]`), `failed` after `max_attempts`
//! ```
//!
//! What this module does not own: the signature (`connectors::signature`), reading the
//! provider's fields (the manifest, `connectors::HttpConnector::read_fax`), matching and
//! filing (`intake`).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

use crate::connectors::{Connectors, HttpConnector, InboundFaxEvent};
use crate::crypto::{CryptoError, Keyring};
use crate::domain::{Address, Channel};
use crate::fetch::FetchPolicy;
use crate::intake::{FaxSource, Intake, IntakeError, Received};
use crate::store::{
    FaxInboundRow, GroupCommit, NewFaxInbound, NewOrphan, Store, StoreError, new_id, now_ms,
};
use crate::tenancy::{Route, Tenancy};

/// The direction of every record here (the key is (provider, direction, provider id), as in
/// `fax_records`, where the provider is the connector's name).
pub const RECEIVED: &str = "inbound";

/// How long the job waits for a burst of webhooks to end before it takes faxes on.
const SETTLE: Duration = Duration::from_millis(20);

/// How long one attempt holds a received fax before another worker may take it.
const LEASE_MS: i64 = 5 * 60 * 1000;

/// The first bytes of a stored fax (what [`FaxDocument::encode`] writes).
const MAGIC: &[u8] = b"SBFAX1\n";

#[derive(Debug, thiserror::Error)]
pub enum FaxError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Intake(#[from] IntakeError),
    /// Worth another attempt later (a download that failed, a provider that did not answer).
    #[error("{0}")]
    Transient(String),
    /// Never going to work (a media host the manifest does not list, a document too large).
    #[error("{0}")]
    Permanent(String),
}

/// A fax as stored: its details, then the document (empty until downloaded).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FaxHeader {
    /// The manifest's name (`phaxio`, `telnyx_fax`).
    pub provider: String,
    pub connector: String,
    pub provider_ref: String,
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub pages: Option<i64>,
    #[serde(default)]
    pub partial: bool,
    #[serde(default)]
    pub provider_status: Option<String>,
    /// The temporary URL the provider gave (Telnyx), until the document is downloaded.
    #[serde(default)]
    pub media_url: Option<String>,
    /// The document's declared type, when posted.
    #[serde(default)]
    pub content_type: Option<String>,
}

/// A fax with its document: `SBFAX1\n` + the header as JSON + `\n` + the document's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaxDocument {
    pub header: FaxHeader,
    pub document: Vec<u8>,
}

impl FaxDocument {
    pub fn encode(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&self.header).unwrap_or_default();
        let mut out = Vec::with_capacity(MAGIC.len() + header.len() + 1 + self.document.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&header);
        out.push(b'\n');
        out.extend_from_slice(&self.document);
        out
    }

    pub fn decode(raw: &[u8]) -> Result<Self, String> {
        let rest = raw
            .strip_prefix(MAGIC)
            .ok_or_else(|| "not a stored fax".to_string())?;
        let end = memchr::memchr(b'\n', rest).ok_or_else(|| "no fax header".to_string())?;
        let header: FaxHeader =
            serde_json::from_slice(&rest[..end]).map_err(|e| format!("fax header: {e}"))?;
        Ok(Self {
            header,
            document: rest[end + 1..].to_vec(),
        })
    }
}

/// What became of a fax webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaxReceipt {
    /// The `fax_inbound` row.
    pub id: String,
    /// `false`: this fax was recorded before (a redelivery); nothing changed.
    pub fresh: bool,
}

/// Received faxes: recording (the webhook edge) and the job that finishes them.
#[derive(Clone)]
pub struct FaxInbound {
    pub store: Store,
    pub keyring: Keyring,
    pub intake: Intake,
    pub tenancy: Arc<Tenancy>,
    pub connectors: Connectors,
    /// Records webhooks in shared commits.
    pub group: GroupCommit,
    pub fetch: FetchPolicy,
    /// Wakes the job when a fax was recorded.
    pub wake: Arc<Notify>,
}

impl FaxInbound {
    pub fn new(
        intake: Intake,
        tenancy: Arc<Tenancy>,
        connectors: Connectors,
        group: GroupCommit,
    ) -> Result<Self, String> {
        let config = &intake.config;
        let fetch = FetchPolicy::new(
            &config.security,
            Duration::from_secs(config.fax_inbound.media_timeout_secs.max(1)),
        )?;
        Ok(Self {
            store: intake.store.clone(),
            keyring: intake.keyring.clone(),
            tenancy,
            connectors,
            group,
            fetch,
            wake: Arc::new(Notify::new()),
            intake,
        })
    }

    /// Records a verified fax webhook (sealed), once per provider fax id, and wakes the job.
    /// `document`: the posted file part's type and bytes (Phaxio); none when the provider
    /// gave a media URL (Telnyx).
    pub async fn record(
        &self,
        connector: &HttpConnector,
        event: &InboundFaxEvent,
        document: Option<(Option<String>, &[u8])>,
    ) -> Result<FaxReceipt, FaxError> {
        let name = crate::channels::Channel::name(connector).to_string();
        let provider = name.clone();
        let (content_type, bytes) = match document {
            Some((content_type, bytes)) => (content_type, bytes.to_vec()),
            None => (None, Vec::new()),
        };
        let fax = FaxDocument {
            header: FaxHeader {
                provider: connector.manifest().name.clone(),
                connector: name.clone(),
                provider_ref: event.provider_ref.clone(),
                from: event.from.clone(),
                to: event.to.clone(),
                pages: event.pages,
                partial: event.partial,
                provider_status: event.provider_status.clone(),
                media_url: event.media_url.clone(),
                content_type,
            },
            document: bytes,
        };
        let id = new_id("fax");
        let sealed = self.keyring.seal(&fax.encode(), &id)?;
        // The fax and the provider's event id are committed together, in a transaction
        // shared with concurrent webhooks (group commit), before the provider is answered.
        let (id, fresh) = self
            .group
            .record_fax(NewFaxInbound {
                id,
                provider,
                direction: RECEIVED.to_string(),
                provider_id: event.provider_ref.clone(),
                connector: name.clone(),
                raw: sealed,
                event_id: event.event_id.clone(),
            })
            .await?;
        if fresh {
            self.wake.notify_one();
        } else {
            info!(fax_id = %id, connector = %name, "fax redelivered; already recorded");
        }
        Ok(FaxReceipt { id, fresh })
    }

    /// The job: works through due faxes until `stop`, waking on [`Self::wake`] and every 2 s.
    pub async fn run(self, stop: CancellationToken) -> Result<(), std::convert::Infallible> {
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            match self.work_due().await {
                Ok(_) => {}
                Err(e) => warn!(error = %e, "fax-inbound pass failed"),
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = self.wake.notified() => self.settle().await,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }

    /// Lets a burst of webhooks be answered first: waits until none was recorded for 20 ms
    /// (at most 1 s). The job shares the database with the hook (on SQLite its one
    /// connection), and a provider's 2xx matters more than filing a fax a moment sooner.
    async fn settle(&self) {
        let until = tokio::time::Instant::now() + Duration::from_secs(1);
        while tokio::time::Instant::now() < until {
            if tokio::time::timeout(SETTLE, self.wake.notified())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Takes every due fax, `[fax_inbound] concurrency` at a time; returns how many were
    /// attempted. A store failure ends the pass (faxes in flight keep their lease and are
    /// taken again when it runs out).
    pub async fn work_due(&self) -> Result<usize, FaxError> {
        let workers = self.intake.config.fax_inbound.concurrency.max(1);
        // Tasks, not futures polled here: an attempt must progress (and give back its
        // connection, SQLite's only one) while this loop waits to claim the next fax.
        let mut running = tokio::task::JoinSet::new();
        let mut done = 0;
        let mut drained = false;
        loop {
            while !drained && running.len() < workers {
                // A webhook recorded since the last fax: let its burst be answered first.
                if tokio::time::timeout(Duration::ZERO, self.wake.notified())
                    .await
                    .is_ok()
                {
                    self.settle().await;
                }
                let now = now_ms();
                match self
                    .store
                    .received_faxes()
                    .claim(now, now + LEASE_MS)
                    .await?
                {
                    Some(row) => {
                        done += 1;
                        let this = self.clone();
                        running.spawn(async move { this.attempt(row).await });
                    }
                    None => drained = true,
                }
            }
            match running.join_next().await {
                Some(Ok(result)) => result?,
                Some(Err(e)) => warn!(error = %e, "received fax attempt ended abnormally"),
                None => return Ok(done),
            }
        }
    }

    /// One attempt at one fax; its outcome written. Only a store failure is an error.
    #[instrument(skip_all, fields(fax_id = %row.id))]
    async fn attempt(&self, row: FaxInboundRow) -> Result<(), FaxError> {
        let settings = &self.intake.config.fax_inbound;
        match self.finish(&row).await {
            Ok((status, item_id)) => {
                self.store
                    .received_faxes()
                    .done(&row.id, status, &item_id)
                    .await?;
                info!(fax_id = %row.id, inbound_item_id = %item_id, status, "received fax handled");
                Ok(())
            }
            Err(FaxError::Store(e)) => Err(e.into()),
            Err(e) => {
                let permanent = matches!(e, FaxError::Permanent(_) | FaxError::Crypto(_));
                let attempts = u32::try_from(row.attempts).unwrap_or(0).saturating_add(1);
                let reason = e.to_string();
                let status = self
                    .store
                    .received_faxes()
                    .attempt_failed(
                        &row.id,
                        &reason,
                        permanent,
                        now_ms() + settings.backoff_ms(attempts),
                        i32::try_from(settings.max_attempts.max(1)).unwrap_or(i32::MAX),
                    )
                    .await?;
                warn!(fax_id = %row.id, attempts, status = %status, reason = %reason, "received fax attempt failed");
                Ok(())
            }
        }
    }

    /// The process's attachment memory budget.
    fn memory(&self) -> &'static crate::attachments::MemoryBudget {
        crate::attachments::MemoryBudget::of_process(
            self.intake.config.limits.attachment_memory_bytes,
        )
    }

    /// Download (if needed), route, hand to intake. Returns the status and the item's id.
    async fn finish(&self, row: &FaxInboundRow) -> Result<(&'static str, String), FaxError> {
        // The sealed webhook, its opened copy and the filed document are held at once; a
        // download re-reserves once its size is known (never waiting while holding a share).
        let raw_len = row.raw.len() as u64;
        let mut _memory = self.memory().reserve(raw_len.saturating_mul(3)).await;
        let mut fax = FaxDocument::decode(&self.keyring.open(&row.raw, &row.id)?)
            .map_err(FaxError::Permanent)?;
        let connector = self.connectors.http(&row.connector).ok_or_else(|| {
            FaxError::Transient(format!("connector {} is not configured", row.connector))
        })?;
        if fax.document.is_empty() {
            fax.document = self.download(&connector, &fax.header).await?;
            drop(_memory.take());
            let held = raw_len.saturating_add(fax.document.len() as u64);
            _memory = self.memory().reserve(held.saturating_mul(3)).await;
        }
        fax.header.media_url = None;
        let raw = fax.encode();
        let header = &fax.header;
        let organization_id = match self
            .tenancy
            .route_number(&header.to, connector.organization())
        {
            Route::Organization(slug) => match self.store.organizations().by_slug(&slug).await {
                Ok(org) => Ok(org.id),
                Err(StoreError::NotFound) => Err(format!("organization {slug} is not set up")),
                Err(e) => return Err(e.into()),
            },
            Route::Orphan(reason) => Err(reason),
        };
        let organization_id = match organization_id {
            Ok(id) => id,
            Err(reason) => {
                let id = new_id("orp");
                let orphan = NewOrphan {
                    channel: Channel::Fax.to_string(),
                    connector: Some(header.connector.clone()),
                    provider_ref: Some(header.provider_ref.clone()),
                    sender: Address::canonical(Channel::Fax, &header.from, crate::tenancy::REGION)
                        .into_string(),
                    recipient: Some(header.to.clone()),
                    reason,
                    raw: self.keyring.seal(&raw, &id)?,
                };
                let (orphan_id, _) = self.store.inbound().record_orphan(&id, &orphan).await?;
                warn!(fax_id = %row.id, orphan_id = %orphan_id, "received fax belongs to no organization; quarantined for the operator");
                return Ok(("orphaned", orphan_id));
            }
        };
        let org = self.store.organizations().get(&organization_id).await?;
        let region = self.intake.config.organization(&org.slug).phone_region;
        let sender = Address::canonical(Channel::Fax, &header.from, &region);
        let received = Received {
            organization_id: &organization_id,
            connector: Some(header.connector.clone()),
            provider_ref: Some(header.provider_ref.clone()),
            sender: sender.to_string(),
            recipient: Some(header.to.clone()),
            raw: &raw,
        };
        let (item_id, fresh) = self.intake.record(&FaxSource, &received).await?;
        let item = self
            .store
            .inbound()
            .item(&organization_id, &item_id)
            .await?;
        self.store
            .received_faxes()
            .record_received(
                &header.connector,
                &header.provider_ref,
                &organization_id,
                &item_id,
                header.pages,
                header.provider_status.as_deref(),
                header.partial,
            )
            .await?;
        // A fresh item, or one a crash left `received` half-way: the pipeline takes it on.
        if fresh || item.status == "received" {
            let filing = self.intake.process(&FaxSource, &item).await?;
            crate::intake::log_filing(&item_id, &filing);
            self.intake.acknowledge(&organization_id, &item_id).await?;
        }
        Ok(("filed", item_id))
    }

    /// Downloads the document from the media URL the provider gave, refreshing the URL once
    /// when the provider says it expired.
    async fn download(
        &self,
        connector: &HttpConnector,
        header: &FaxHeader,
    ) -> Result<Vec<u8>, FaxError> {
        let url = header.media_url.as_deref().ok_or_else(|| {
            FaxError::Permanent("the fax has no document and no media URL".into())
        })?;
        match self.fetch_media(connector, url).await {
            Err(FaxError::Transient(reason)) if expired(&reason) => {
                let fresh = connector
                    .refresh_media(&header.provider_ref)
                    .await
                    .map_err(|e| FaxError::Transient(format!("refreshing the media URL: {e}")))?
                    .ok_or_else(|| FaxError::Transient(reason.clone()))?;
                self.fetch_media(connector, &fresh).await
            }
            other => other,
        }
    }

    async fn fetch_media(&self, connector: &HttpConnector, url: &str) -> Result<Vec<u8>, FaxError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|_| FaxError::Permanent("media URL unusable".into()))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| FaxError::Permanent("media URL has no host".into()))?
            .to_ascii_lowercase();
        let port = parsed.port_or_known_default().unwrap_or(0);
        if !connector.media_host_listed(&host) {
            return Err(FaxError::Permanent(format!(
                "media host {host} is not listed in the connector manifest's media_hosts"
            )));
        }
        match parsed.scheme() {
            "https" => {}
            "http" if self.fetch.allows(&host, port) => {}
            other => {
                return Err(FaxError::Permanent(format!(
                    "media URL scheme {other} refused (https only)"
                )));
            }
        }
        let settings = &self.intake.config.fax_inbound;
        let limit = usize::try_from(settings.max_document_bytes).unwrap_or(usize::MAX);
        let timeout = Duration::from_secs(settings.media_timeout_secs.max(1));
        self.fetch
            .get_media(url, limit, timeout)
            .await
            .map_err(|e| match e {
                e if e.is_refusal() => FaxError::Permanent(e.to_string()),
                // The document is where the provider said, or nowhere: a redirect is never
                // followed (it could lead anywhere), nor tried again.
                crate::fetch::FetchError::Status { host, port, status }
                    if (300..400).contains(&status) =>
                {
                    FaxError::Permanent(format!(
                        "{host}:{port}: HTTP status {status}: media redirects are not followed"
                    ))
                }
                e @ crate::fetch::FetchError::TooLarge { .. } => FaxError::Permanent(e.to_string()),
                e => FaxError::Transient(e.to_string()),
            })
    }
}

/// Whether a download failure says the temporary URL expired (S3 answers 403 to an expired
/// signature; 404/410 for a URL that is gone).
fn expired(reason: &str) -> bool {
    ["HTTP status 403", "HTTP status 404", "HTTP status 410"]
        .iter()
        .any(|s| reason.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_fax_round_trips_and_refuses_other_bytes() {
        let fax = FaxDocument {
            header: FaxHeader {
                provider: "phaxio".into(),
                connector: "phaxio".into(),
                provider_ref: "123".into(),
                from: "+15555550111".into(),
                to: "+15555550100".into(),
                pages: Some(3),
                partial: true,
                provider_status: Some("partialsuccess".into()),
                media_url: None,
                content_type: Some("application/pdf".into()),
            },
            document: b"%PDF-1.4\n\n\x00binary\n".to_vec(),
        };
        assert_eq!(FaxDocument::decode(&fax.encode()), Ok(fax));
        assert!(FaxDocument::decode(b"{}").is_err());
        assert!(FaxDocument::decode(b"SBFAX1\n{\"provider\":1}").is_err());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let config = crate::config::FaxInboundConfig {
            retry_base_ms: 100,
            ..Default::default()
        };
        assert_eq!(config.backoff_ms(1), 100);
        assert_eq!(config.backoff_ms(2), 200);
        assert_eq!(config.backoff_ms(40), 3_600_000);
    }
}
