//! Webhook endpoints (`/v1/webhook-endpoints/{id}`, admin scope) and their deliveries: an
//! organization names a URL on a host the operator allowed (`[webhooks] allow_hosts`), the
//! event kinds it wants, and gets a Standard Webhooks secret, shown once and stored sealed.
//! The dispatcher ([`dispatch`]) follows the organization's events feed and sends each
//! matching event, signed, at least once and in order per subject; what it could not deliver
//! within the retry window is dead-lettered, visible and retryable here.
//!
//! Owns: endpoint validation, secrets (generation, sealing, rotation), the delivery views.
//! Not: the feed (`crate::events`), the SQL (`store::webhooks`).

pub mod dispatch;
pub mod signature;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::crypto::Keyring;
use crate::messages::rfc3339;
use crate::service::{FieldError, ServiceError};
use crate::store::{Store, StoreError, WebhookDeliveryRow, WebhookEndpointRow, now_ms};

/// The sealing context of endpoint secrets.
pub(crate) const SECRET_CONTEXT: &str = "webhook_secret";
/// The longest endpoint id.
const MAX_ID: usize = 64;
/// The most event kinds in one filter.
const MAX_TYPES: usize = 64;

/// `PUT /v1/webhook-endpoints/{id}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutEndpoint {
    /// Where events are POSTed: `https://` or `http://`, on a host in `[webhooks] allow_hosts`.
    #[schema(pattern = "^https?://")]
    pub url: String,
    /// The event kinds to send (`docs/events.md`); empty or absent: every kind.
    #[serde(default)]
    pub event_types: Vec<String>,
}

/// `POST /v1/webhook-endpoints/{id}/rotate`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// How long the previous secret keeps signing too, seconds (at most, and by default,
    /// `[webhooks] rotation_overlap_secs`; 0 retires it at once).
    pub overlap_secs: Option<u64>,
}

/// A webhook endpoint as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EndpointView {
    pub id: String,
    pub url: String,
    /// Empty: every kind.
    pub event_types: Vec<String>,
    /// The signing secret (`whsec_…`): only in the answer to the `PUT` that created the
    /// endpoint and to a rotation. Keep it; it is never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Until when (RFC 3339) the previous secret still signs too, after a rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_until: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// One event's delivery to an endpoint.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookDelivery)]
pub struct DeliveryView {
    /// Also the `webhook-id` header of every attempt.
    pub id: String,
    pub event_id: i64,
    pub kind: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    pub attempts: i64,
    /// The HTTP status of the last attempt, when the receiver answered.
    pub last_status: Option<i64>,
    /// Why the last attempt failed (`HTTP 503`, `timeout`, `connection refused`…).
    pub last_error: Option<String>,
    /// When a pending delivery is tried next (RFC 3339).
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

/// `GET /v1/webhook-endpoints/{id}/deliveries`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveriesPage {
    pub deliveries: Vec<DeliveryView>,
}

impl From<WebhookDeliveryRow> for DeliveryView {
    fn from(row: WebhookDeliveryRow) -> Self {
        Self {
            next_attempt_at: (row.status == "pending").then(|| rfc3339(row.next_attempt_at)),
            id: row.id,
            event_id: row.event_id,
            kind: row.kind,
            status: row.status,
            attempts: row.attempts,
            last_status: row.last_status,
            last_error: row.last_error,
            created_at: rfc3339(row.created_at),
            delivered_at: row.delivered_at.map(rfc3339),
        }
    }
}

/// The webhook endpoints of organizations.
#[derive(Clone)]
pub struct WebhookService {
    pub store: Store,
    pub keyring: Keyring,
    pub config: Arc<Config>,
}

impl WebhookService {
    /// Creates (true: the view carries the new secret) or updates the endpoint.
    pub async fn put(
        &self,
        organization_id: &str,
        id: &str,
        request: &PutEndpoint,
    ) -> Result<(EndpointView, bool), ServiceError> {
        let mut errors = Vec::new();
        if let Some(problem) = check_id(id) {
            errors.push(FieldError::parameter("id", problem));
        }
        if let Err(problem) = self.check_url(&request.url) {
            errors.push(FieldError::pointer("/url", problem));
        }
        if request.event_types.len() > MAX_TYPES {
            errors.push(FieldError::pointer(
                "/event_types",
                format!("at most {MAX_TYPES} kinds"),
            ));
        }
        for (i, kind) in request.event_types.iter().enumerate() {
            let ok = !kind.is_empty()
                && kind.len() <= 64
                && kind
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_');
            if !ok {
                errors.push(FieldError::pointer(
                    format!("/event_types/{i}"),
                    "an event kind: lower-case letters, `.` and `_` (docs/events.md)",
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ServiceError::Invalid(errors));
        }
        let mut types = request.event_types.clone();
        types.sort();
        types.dedup();
        let types_json =
            serde_json::to_string(&types).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let secret = signature::generate_secret()
            .map_err(|e| ServiceError::Crypto(crate::crypto::CryptoError::OpenSsl(e)))?;
        let sealed = self.keyring.seal(secret.as_bytes(), SECRET_CONTEXT)?;
        let head = self.store.events().head(organization_id).await?;
        let (row, created) = self
            .store
            .webhooks()
            .put_endpoint(
                organization_id,
                id,
                request.url.trim(),
                &types_json,
                &sealed,
                head,
            )
            .await?;
        let mut view = view(&row);
        if created {
            view.secret = Some(secret);
        }
        Ok((view, created))
    }

    pub async fn show(
        &self,
        organization_id: &str,
        id: &str,
    ) -> Result<EndpointView, ServiceError> {
        Ok(view(&self.endpoint(organization_id, id).await?))
    }

    pub async fn delete(&self, organization_id: &str, id: &str) -> Result<(), ServiceError> {
        if self
            .store
            .webhooks()
            .delete_endpoint(organization_id, id)
            .await?
        {
            Ok(())
        } else {
            Err(ServiceError::NotFound("webhook endpoint"))
        }
    }

    /// A new secret (in the answer, once); the previous one keeps signing for the overlap.
    pub async fn rotate(
        &self,
        organization_id: &str,
        id: &str,
        request: &RotateRequest,
    ) -> Result<EndpointView, ServiceError> {
        let max = self.config.webhooks.rotation_overlap_secs;
        let overlap = request.overlap_secs.unwrap_or(max);
        if overlap > max {
            return Err(ServiceError::Invalid(vec![FieldError::pointer(
                "/overlap_secs",
                format!("at most {max} (webhooks.rotation_overlap_secs)"),
            )]));
        }
        let row = self.endpoint(organization_id, id).await?;
        let secret = signature::generate_secret()
            .map_err(|e| ServiceError::Crypto(crate::crypto::CryptoError::OpenSsl(e)))?;
        let sealed = self.keyring.seal(secret.as_bytes(), SECRET_CONTEXT)?;
        let until = now_ms()
            .saturating_add(i64::try_from(overlap.saturating_mul(1000)).unwrap_or(i64::MAX));
        if !self
            .store
            .webhooks()
            .rotate_secret(organization_id, id, &row.secret, &sealed, until)
            .await?
        {
            return Err(ServiceError::Internal(
                "another rotation of this endpoint came first".into(),
            ));
        }
        let mut view = view(&self.endpoint(organization_id, id).await?);
        view.secret = Some(secret);
        Ok(view)
    }

    /// The endpoint's deliveries, newest first (`status`: `pending`, `delivered`, `dead`).
    pub async fn deliveries(
        &self,
        organization_id: &str,
        id: &str,
        status: Option<&str>,
        limit: i64,
    ) -> Result<DeliveriesPage, ServiceError> {
        if let Some(status) = status
            && !matches!(status, "pending" | "delivered" | "dead")
        {
            return Err(ServiceError::Invalid(vec![FieldError::parameter(
                "status",
                "pending, delivered or dead",
            )]));
        }
        self.endpoint(organization_id, id).await?;
        let rows = self
            .store
            .webhooks()
            .deliveries(organization_id, id, status, limit.clamp(1, 500))
            .await?;
        Ok(DeliveriesPage {
            deliveries: rows.into_iter().map(DeliveryView::from).collect(),
        })
    }

    /// Sends a dead delivery again (due now, with a fresh retry window); a delivery in
    /// another state is answered as it is.
    pub async fn retry(
        &self,
        organization_id: &str,
        id: &str,
        delivery_id: &str,
    ) -> Result<DeliveryView, ServiceError> {
        let window = secs_ms(self.config.webhooks.retry_window_secs);
        match self
            .store
            .webhooks()
            .retry_delivery(organization_id, id, delivery_id, window)
            .await
        {
            Ok(row) => {
                self.store.wake_event_followers();
                Ok(row.into())
            }
            Err(StoreError::NotFound) => Err(ServiceError::NotFound("webhook delivery")),
            Err(e) => Err(e.into()),
        }
    }

    async fn endpoint(
        &self,
        organization_id: &str,
        id: &str,
    ) -> Result<WebhookEndpointRow, ServiceError> {
        match self.store.webhooks().endpoint(organization_id, id).await {
            Ok(row) => Ok(row),
            Err(StoreError::NotFound) => Err(ServiceError::NotFound("webhook endpoint")),
            Err(e) => Err(e.into()),
        }
    }

    /// `Ok` when the URL is one the daemon may POST to.
    fn check_url(&self, url: &str) -> Result<(), String> {
        check_url(&self.config.webhooks, url)
    }
}

/// An endpoint URL: `http(s)://` on an allowed host, no credentials or fragment.
pub(crate) fn check_url(config: &crate::config::WebhooksConfig, url: &str) -> Result<(), String> {
    let parsed =
        reqwest::Url::parse(url.trim()).map_err(|_| "an absolute http(s) URL".to_string())?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err("the scheme must be https or http".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("credentials in the URL are not accepted".into());
    }
    if parsed.fragment().is_some() {
        return Err("a fragment is not accepted".into());
    }
    let host = parsed.host_str().unwrap_or_default();
    if host.is_empty() || !config.allows_host(host) {
        return Err("the host is not in the operator's allow-list (webhooks.allow_hosts)".into());
    }
    Ok(())
}

fn check_id(id: &str) -> Option<String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    (!ok).then(|| format!("1 to {MAX_ID} letters, digits, `-`, `_` or `.`"))
}

fn view(row: &WebhookEndpointRow) -> EndpointView {
    EndpointView {
        id: row.id.clone(),
        url: row.url.clone(),
        event_types: serde_json::from_str(&row.event_types).unwrap_or_default(),
        secret: None,
        previous_secret_until: row
            .previous_until
            .filter(|until| *until > now_ms() && row.previous_secret.is_some())
            .map(rfc3339),
        created_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
    }
}

pub(crate) fn secs_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_name_an_allowed_host() {
        let config = crate::config::WebhooksConfig {
            allow_hosts: vec![
                "messaging.internal".into(),
                "127.0.0.1".into(),
                "[::1]".into(),
            ],
            ..Default::default()
        };
        assert!(check_url(&config, "https://messaging.internal/hooks").is_ok());
        assert!(check_url(&config, "http://127.0.0.1:8080/x").is_ok());
        assert!(check_url(&config, "http://[::1]:8080/x").is_ok());
        assert!(check_url(&config, "https://MESSAGING.internal/hooks").is_ok());
        assert!(check_url(&config, "https://169.254.169.254/latest").is_err());
        assert!(check_url(&config, "https://messaging.internal.evil.example/").is_err());
        assert!(check_url(&config, "ftp://messaging.internal/").is_err());
        assert!(check_url(&config, "https://u:p@messaging.internal/").is_err());
        assert!(check_url(&config, "messaging.internal/hooks").is_err());
        assert!(check_id("app-1").is_none());
        assert!(check_id("a/b").is_some());
        assert!(check_id("").is_some());
    }
}
