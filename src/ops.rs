//! What operators' endpoints ask: readiness, the refresh of the gauges `/metrics` shows, the audit trail
//! of refusals at the edges (a provider webhook whose signature failed), and the admin lists:
//! deliveries by status/channel/connector/time and the dead letters, with their retries.

mod channels;
mod hl7;
mod messages;
mod overview;

use serde::{Deserialize, Serialize};

pub use channels::{ChannelState, ChannelsView, ConnectorState, PauseBody, PauseView, Paused};
pub use hl7::{
    Hl7Item, Hl7List, Hl7MessageView, Hl7Query, Hl7ReprocessFilter, Hl7Reprocessed,
    MAX_REPROCESS_BATCH,
};
pub use messages::{MessageItem, MessageList, MessageQuery};
pub use overview::{
    CertificateView, DirectOverview, EXPIRY_WARNING_DAYS, Hl7Overview, Hl7Peer, LastRun, Overview,
    RemindersOverview, TouchCount,
};

use crate::crypto::Keyring;
use crate::domain::{Channel, DeliveryStatus};
use crate::messages::rfc3339;
use crate::service::{FieldError, Refusal, ServiceError};
use crate::store::{
    AuditEntry, DeadLetterRow, DeliveryFilter, DeliveryRow, GroupCommit, Store, StoreError,
};

/// A refused provider webhook, for the audit trail.
#[derive(Debug, Clone)]
pub struct RefusedWebhook<'a> {
    /// The connector's organization (a slug), if it has one.
    pub connector_owner: Option<&'a str>,
    pub connector: &'a str,
    pub channel: &'a str,
    /// `status` or `inbound`.
    pub kind: &'a str,
    /// Why (no PHI: the signature check's reason).
    pub reason: String,
}

/// The operations service.
#[derive(Clone)]
pub struct Ops {
    pub store: Store,
    /// Enqueues what a retry creates.
    pub group: GroupCommit,
    /// Opens the HL7 archive.
    pub keyring: Keyring,
    /// The database-derived gauges of `/metrics` (and of alert rules), refreshed by
    /// [`Ops::refresh_metrics`].
    pub gauges: crate::metrics::Gauges,
    /// Which connector each channel is routed to (pauses, `GET /v1/channels`).
    pub routes: crate::queue::pause::Routes,
    /// The connectors configured (`outbox` first).
    pub connector_names: Vec<String>,
    /// The HL7 intake, for reprocessing archived messages (set by the daemon when it runs
    /// the listener's processor).
    pub hl7: Hl7Intake,
    /// The configuration (reminder schedule, Direct connectors for the overview).
    pub config: std::sync::Arc<crate::config::Config>,
}

impl Ops {
    /// The operations service of a daemon (or an admin command) on `store` with `config`:
    /// routes and connector names from the configuration, fresh gauges, no HL7 processor yet.
    pub fn new(
        store: Store,
        group: GroupCommit,
        keyring: Keyring,
        config: &crate::config::Config,
    ) -> Self {
        Self {
            store,
            group,
            keyring,
            gauges: crate::metrics::Gauges::default(),
            routes: crate::queue::pause::Routes::of(config),
            connector_names: std::iter::once("outbox".to_string())
                .chain(config.connectors.keys().cloned())
                .collect(),
            hl7: Hl7Intake::default(),
            config: std::sync::Arc::new(config.clone()),
        }
    }
}

/// The HL7 processor the listener uses, shared with the reprocess endpoints.
#[derive(Clone, Default)]
pub struct Hl7Intake(
    pub std::sync::Arc<std::sync::OnceLock<std::sync::Arc<crate::hl7::processor::Hl7Processor>>>,
);

/// The filters of `GET /v1/deliveries` and `GET /v1/dead-letters` (and of
/// `POST /v1/dead-letters/retry`'s body), as given; every one optional.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// A delivery status (`failed`, `sent`, …); deliveries only.
    #[param(value_type = Option<crate::domain::DeliveryStatus>)]
    #[schema(value_type = Option<crate::domain::DeliveryStatus>)]
    pub status: Option<String>,
    /// sms, email, fax or direct.
    #[param(value_type = Option<crate::domain::Channel>)]
    #[schema(value_type = Option<crate::domain::Channel>)]
    pub channel: Option<String>,
    /// A connector's name; deliveries only.
    pub connector: Option<String>,
    /// Created at or after, RFC 3339.
    #[param(format = DateTime)]
    #[schema(format = DateTime)]
    pub since: Option<String>,
    /// Created before, RFC 3339.
    #[param(format = DateTime)]
    #[schema(format = DateTime)]
    pub until: Option<String>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Dead letters only: list those already retried too (default false).
    #[serde(default)]
    pub include_retried: bool,
}

/// One delivery, as an operator sees it (ids, states, reasons; the recipient as addressed).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryItem {
    pub id: String,
    pub message_id: String,
    pub channel: String,
    pub recipient: String,
    pub status: String,
    pub attempts: i64,
    pub connector: Option<String>,
    pub provider_ref: Option<String>,
    pub reason: Option<String>,
    /// RFC 3339 (UTC).
    pub created_at: String,
    pub updated_at: String,
}

/// A page of deliveries, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryItem>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A delivery that used its attempts and failed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetterItem {
    pub delivery_id: String,
    pub channel: String,
    pub attempts: i64,
    pub reason: String,
    /// RFC 3339 (UTC).
    pub created_at: String,
    /// When it was retried (as a new delivery), if it was.
    pub retried_at: Option<String>,
}

/// A page of dead letters, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetterItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// What a retry made.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Retried {
    /// The new deliveries, one per dead letter retried.
    pub delivery_ids: Vec<String>,
    /// How many were retried.
    pub retried: usize,
}

/// The most dead letters one `POST /v1/dead-letters/retry` takes; more answer a partial count
/// and the caller repeats (already-retried ones are skipped, so a repeat is safe).
pub const MAX_RETRY_BATCH: i64 = 1000;

/// A list filter read and checked: every parameter at fault is reported at once.
struct Checked {
    filter: DeliveryFilter,
    after: Option<(i64, String)>,
    limit: i64,
}

fn check(query: &ListQuery) -> Result<Checked, ServiceError> {
    let mut errors = Vec::new();
    let status = status_param(query.status.as_deref(), &mut errors);
    let channel = channel_param(query.channel.as_deref(), &mut errors);
    let Page {
        since,
        until,
        after,
        limit,
    } = page_params(
        query.since.as_deref(),
        query.until.as_deref(),
        query.cursor.as_deref(),
        query.limit,
        &mut errors,
    );
    let filter = DeliveryFilter {
        status,
        channel,
        connector: query.connector.clone(),
        since,
        until,
    };
    if errors.is_empty() {
        Ok(Checked {
            filter,
            after,
            limit,
        })
    } else {
        Err(ServiceError::Invalid(errors))
    }
}

/// `status`: a delivery status.
pub(crate) fn status_param(
    value: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Option<DeliveryStatus> {
    let status = value?;
    let parsed = DeliveryStatus::parse(status);
    if parsed.is_none() {
        errors.push(FieldError::parameter(
            "status",
            "not a delivery status (queued, sending, sent, processed, dispatched, delivered, \
             failed, expired)",
        ));
    }
    parsed
}

/// `channel`: a channel's name, as stored.
pub(crate) fn channel_param(value: Option<&str>, errors: &mut Vec<FieldError>) -> Option<String> {
    match value?.parse::<Channel>() {
        Ok(channel) => Some(channel.as_str().to_string()),
        Err(e) => {
            errors.push(FieldError::parameter("channel", e.to_string()));
            None
        }
    }
}

/// The paging parameters every admin list shares, read and checked.
#[derive(Debug, Clone, Default)]
pub(crate) struct Page {
    /// At or after (unix ms).
    pub since: Option<i64>,
    /// Before (unix ms).
    pub until: Option<i64>,
    /// The keyset of the previous page's last row: `(time, id)`.
    pub after: Option<(i64, String)>,
    /// 1 to 1000 (default 100).
    pub limit: i64,
}

/// Reads `since` and `until` (RFC 3339), `cursor` (a `next_cursor` of the same list) and
/// `limit` (1 to 1000, default 100), pushing a parameter error for each one at fault.
pub(crate) fn page_params(
    since: Option<&str>,
    until: Option<&str>,
    cursor: Option<&str>,
    limit: Option<i64>,
    errors: &mut Vec<FieldError>,
) -> Page {
    let mut time = |name: &str, value: Option<&str>| {
        value.and_then(|t| match chrono::DateTime::parse_from_rfc3339(t) {
            Ok(t) => Some(t.timestamp_millis()),
            Err(_) => {
                errors.push(FieldError::parameter(name, "not an RFC 3339 time"));
                None
            }
        })
    };
    let since = time("since", since);
    let until = time("until", until);
    let after = match cursor.map(parse_cursor) {
        None => None,
        Some(Some(after)) => Some(after),
        Some(None) => {
            errors.push(FieldError::parameter("cursor", "not a cursor of this list"));
            None
        }
    };
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        errors.push(FieldError::parameter("limit", "must be 1 to 1000"));
    }
    Page {
        since,
        until,
        after,
        limit,
    }
}

/// `"<created_at ms>.<id>"`.
fn parse_cursor(cursor: &str) -> Option<(i64, String)> {
    let (at, id) = cursor.split_once('.')?;
    let valid = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    valid.then_some((at.parse().ok()?, id.to_string()))
}

fn cursor_after(len: usize, limit: i64, last: Option<(i64, &str)>) -> Option<String> {
    if i64::try_from(len).unwrap_or(i64::MAX) < limit {
        return None;
    }
    last.map(|(at, id)| format!("{at}.{id}"))
}

fn delivery_item(row: DeliveryRow) -> DeliveryItem {
    DeliveryItem {
        created_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
        id: row.id,
        message_id: row.message_id,
        channel: row.channel,
        recipient: row.recipient,
        status: row.status,
        attempts: row.attempts,
        connector: row.connector,
        provider_ref: row.provider_ref,
        reason: row.reason,
    }
}

fn dead_letter_item(row: DeadLetterRow) -> DeadLetterItem {
    DeadLetterItem {
        created_at: rfc3339(row.created_at),
        retried_at: row.requeued_at.map(rfc3339),
        delivery_id: row.delivery_id,
        channel: row.channel,
        attempts: row.attempts,
        reason: row.reason,
    }
}

impl Ops {
    /// Whether the database answers.
    pub async fn ready(&self) -> Result<(), ServiceError> {
        Ok(self.store.ping().await?)
    }

    /// Sets the queue and dead-letter gauges of `/metrics` from two indexed queries (the
    /// daemon's `metrics` task calls it every `[metrics] refresh_secs`; scrapes never query).
    pub async fn refresh_metrics(&self) -> Result<(), ServiceError> {
        let waiting = self.store.deliveries().waiting().await?;
        let dead_letters = self.store.deliveries().dead_letter_count().await?;
        let queues = waiting
            .into_iter()
            .map(|(channel, depth, oldest_created_at)| {
                (
                    channel,
                    crate::metrics::Queue {
                        depth,
                        oldest_created_at,
                    },
                )
            })
            .collect();
        self.gauges.refreshed(queues, dead_letters);
        Ok(())
    }

    /// Refreshes the gauges every `every` until `stop` (the daemon's supervised `metrics` task).
    /// A failed refresh is logged and the gauges keep their last values.
    pub async fn refresh_metrics_regularly(
        self,
        every: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            if let Err(e) = self.refresh_metrics().await {
                tracing::warn!(error = %e, "metrics refresh failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// `GET /v1/deliveries`: the organization's deliveries matching the query, newest first.
    pub async fn deliveries(
        &self,
        organization_id: &str,
        query: &ListQuery,
    ) -> Result<DeliveryList, ServiceError> {
        let Checked {
            filter,
            after,
            limit,
        } = check(query)?;
        let rows = self
            .store
            .deliveries()
            .page(organization_id, &filter, after, limit)
            .await?;
        let next_cursor = cursor_after(
            rows.len(),
            limit,
            rows.last().map(|r| (r.created_at, r.id.as_str())),
        );
        Ok(DeliveryList {
            deliveries: rows.into_iter().map(delivery_item).collect(),
            next_cursor,
        })
    }

    /// `GET /v1/dead-letters`: the organization's dead letters, newest first (not yet
    /// retried, unless `include_retried`).
    pub async fn dead_letters(
        &self,
        organization_id: &str,
        query: &ListQuery,
    ) -> Result<DeadLetterList, ServiceError> {
        let Checked {
            filter,
            after,
            limit,
        } = check(query)?;
        let rows = self
            .store
            .deliveries()
            .dead_letter_page(
                organization_id,
                &filter,
                query.include_retried,
                after,
                limit,
            )
            .await?;
        let next_cursor = cursor_after(
            rows.len(),
            limit,
            rows.last().map(|r| (r.created_at, r.delivery_id.as_str())),
        );
        Ok(DeadLetterList {
            dead_letters: rows.into_iter().map(dead_letter_item).collect(),
            next_cursor,
        })
    }

    /// `POST /v1/dead-letters/{delivery_id}/retry`: one dead letter of the organization sent
    /// again, as a new delivery of the same message to the same recipient (409
    /// `dead_letter_retried` the second time).
    pub async fn retry_dead_letter(
        &self,
        organization_id: &str,
        delivery_id: &str,
    ) -> Result<Retried, ServiceError> {
        match self.store.deliveries().get(delivery_id).await {
            Ok(row) if row.organization_id == organization_id => {}
            Ok(_) | Err(StoreError::NotFound) => return Err(ServiceError::NotFound("dead letter")),
            Err(e) => return Err(e.into()),
        }
        let (new_id, channel) = match self
            .store
            .deliveries()
            .requeue_dead_letter(delivery_id)
            .await
        {
            Ok(made) => made,
            Err(StoreError::Conflict(_)) => {
                return Err(ServiceError::Refused {
                    refusal: Refusal::DeadLetterRetried,
                    detail: format!(
                        "{delivery_id} is not a dead letter waiting for a retry (retried already, \
                         or it did not fail)"
                    ),
                });
            }
            Err(e) => return Err(e.into()),
        };
        self.group.enqueue(vec![(channel, new_id.clone())]).await;
        Ok(Retried {
            delivery_ids: vec![new_id],
            retried: 1,
        })
    }

    /// `POST /v1/dead-letters/retry`: every dead letter of the organization matching the
    /// filter that was not retried yet, up to [`MAX_RETRY_BATCH`]. Repeating it is safe: what
    /// was retried is not retried again.
    pub async fn retry_dead_letters(
        &self,
        organization_id: &str,
        query: &ListQuery,
    ) -> Result<Retried, ServiceError> {
        let Checked { filter, .. } = check(query)?;
        let rows = self
            .store
            .deliveries()
            .dead_letter_page(organization_id, &filter, false, None, MAX_RETRY_BATCH)
            .await?;
        let mut made = Vec::new();
        for row in rows {
            match self
                .store
                .deliveries()
                .requeue_dead_letter(&row.delivery_id)
                .await
            {
                Ok(new) => made.push(new),
                // Retried meanwhile (by another caller): skipped.
                Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let delivery_ids: Vec<String> = made.iter().map(|(id, _)| id.clone()).collect();
        self.group
            .enqueue(
                made.into_iter()
                    .map(|(id, channel)| (channel, id))
                    .collect(),
            )
            .await;
        Ok(Retried {
            retried: delivery_ids.len(),
            delivery_ids,
        })
    }

    /// Audits a refused webhook against the connector's organization (when it has one that
    /// exists; a connector of no organization leaves only the log line the edge writes). Best
    /// effort: a failure to audit is logged, the refusal stands.
    pub async fn webhook_refused(&self, refused: RefusedWebhook<'_>) {
        let Some(slug) = refused.connector_owner else {
            return;
        };
        let organization_id = match self.store.organizations().by_slug(slug).await {
            Ok(org) => org.id,
            Err(StoreError::NotFound) => return,
            Err(e) => {
                tracing::warn!(error = %e, "refused webhook not audited");
                return;
            }
        };
        let entry = AuditEntry {
            organization_id,
            action: "webhook_refused".into(),
            actor: format!("webhook:{}", refused.connector),
            channel: Some(refused.channel.to_string()),
            outcome: Some("forbidden".into()),
            detail: Some(format!("{}: {}", refused.kind, refused.reason)),
            ..Default::default()
        };
        if let Err(e) = self.store.audit().record(&entry).await {
            tracing::warn!(error = %e, "refused webhook not audited");
        }
    }
}
