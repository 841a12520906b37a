//! The fax office: what the fax channel needs from the records, behind
//! [`crate::channels::fax::FaxDesk`] so the channel never touches the store.
//!
//! - **Served documents** (Telnyx fetches the fax from a `media_url`): the PDF is sealed at
//!   rest under `fax-media:<delivery id>` and found by the SHA-256 of a random 256-bit token
//!   that exists only in the URL handed to the provider (`<public_url>/media/<token>`). It
//!   works for one fetch (the first fetch marks it, atomically) and until it expires
//!   (`media_ttl_secs`, minutes); every later or late fetch gets 404, the same answer as an
//!   unknown token. The token is not a credential we keep: losing it only means another send.
//! - **Fax records**: the provider's id of each fax we sent, keyed by (provider, direction,
//!   provider id), with the pages submitted and, from callbacks, pages sent and the state.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use tracing::info;

use crate::channels::fax::FaxDesk;
use crate::channels::{ChannelError, OutboundDelivery};
use crate::crypto::Keyring;
use crate::store::{Store, now_ms};

/// Default lifetime of a served document's URL.
pub const DEFAULT_MEDIA_TTL_SECS: u64 = 600;

#[derive(Clone)]
pub struct FaxOffice {
    pub store: Store,
    pub keyring: Keyring,
}

/// A served document, as fetched.
#[derive(Debug)]
pub struct Media {
    pub delivery_id: String,
    pub content_type: String,
    pub data: Vec<u8>,
}

fn token_hash(token: &str) -> String {
    hex::encode(openssl::sha::sha256(token.as_bytes()))
}

fn context(delivery_id: &str) -> String {
    format!("fax-media:{delivery_id}")
}

impl FaxOffice {
    /// The document behind `token`, taken for its one fetch. `Ok(None)`: unknown, expired or
    /// already fetched (indistinguishable to the caller).
    pub async fn take(&self, token: &str) -> Result<Option<Media>, crate::store::StoreError> {
        if token.len() > 128
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Ok(None);
        }
        let Some(row) = self
            .store
            .faxes()
            .take_media(&token_hash(token), now_ms())
            .await?
        else {
            return Ok(None);
        };
        match self.keyring.open(&row.content, &context(&row.delivery_id)) {
            Ok(data) => {
                info!(delivery_id = %row.delivery_id, "fax document fetched by the provider");
                Ok(Some(Media {
                    delivery_id: row.delivery_id,
                    content_type: row.content_type,
                    data,
                }))
            }
            Err(e) => {
                tracing::warn!(delivery_id = %row.delivery_id, error = %e, "served fax document cannot be opened");
                Ok(None)
            }
        }
    }
}

#[async_trait::async_trait]
impl FaxDesk for FaxOffice {
    async fn publish(
        &self,
        public_url: &str,
        delivery: &OutboundDelivery,
        content_type: &str,
        data: Vec<u8>,
        ttl_secs: u64,
    ) -> Result<String, ChannelError> {
        let mut raw = [0u8; 32];
        openssl::rand::rand_bytes(&mut raw)
            .map_err(|_| ChannelError::Transient("no randomness for a media token".into()))?;
        let token = B64URL.encode(raw);
        let sealed = self
            .keyring
            .seal(&data, &context(&delivery.delivery_id))
            .map_err(|e| ChannelError::Transient(format!("cannot seal the fax document: {e}")))?;
        let ttl_ms = i64::try_from(ttl_secs.max(1).saturating_mul(1000)).unwrap_or(i64::MAX / 4);
        self.store
            .faxes()
            .insert_media(
                &token_hash(&token),
                &delivery.organization_id,
                &delivery.delivery_id,
                content_type,
                &sealed,
                now_ms() + ttl_ms,
            )
            .await
            .map_err(|e| ChannelError::Transient(format!("cannot store the fax document: {e}")))?;
        Ok(format!(
            "{}/media/{token}",
            public_url.trim_end_matches('/')
        ))
    }

    async fn sent(
        &self,
        provider: &str,
        provider_id: &str,
        delivery: &OutboundDelivery,
        pages: u32,
    ) -> Result<(), ChannelError> {
        self.store
            .faxes()
            .record_sent(
                provider,
                provider_id,
                &delivery.organization_id,
                &delivery.delivery_id,
                pages,
            )
            .await
            .map_err(|e| ChannelError::Transient(format!("cannot record the fax: {e}")))
    }
}
