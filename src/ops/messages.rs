//! `GET /v1/messages?status=&channel=&patient=&since=&until=&cursor=&limit=` (admin scope):
//! the organization's messages newest first, with keyset cursors — ids, direction, flags,
//! the summary status and the channels of their deliveries; never a subject, body or address.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Ops, Page, channel_param, cursor_after, page_params, status_param};
use crate::messages::{rfc3339, summarize};
use crate::service::{FieldError, ServiceError};
use crate::store::{MessageFilter, StoreError};

/// The filters of `GET /v1/messages`, every one optional.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MessageQuery {
    /// Messages with a delivery in this status (`failed`, `sent`, …).
    #[param(value_type = Option<crate::domain::DeliveryStatus>)]
    pub status: Option<String>,
    /// Messages with a delivery on this channel (sms, email, fax, direct, outbox).
    #[param(value_type = Option<crate::domain::Channel>)]
    pub channel: Option<String>,
    /// The patient's external id (as in `/v1/patients/{external_id}`).
    #[param(min_length = 1, max_length = 256)]
    pub patient: Option<String>,
    /// Created at or after, RFC 3339.
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Created before, RFC 3339.
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// One message as the list shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MessageItem {
    /// `msg_…`
    pub id: String,
    pub thread_id: String,
    /// The patient's gateway id (`pat_…`), if any.
    pub patient_id: Option<String>,
    /// outbound or inbound.
    pub direction: String,
    /// Summary over deliveries, as `GET /v1/messages/{id}` gives it.
    pub status: String,
    /// The channels of its deliveries, each once.
    pub channels: Vec<String>,
    /// How many deliveries it has.
    pub deliveries: usize,
    pub urgent: bool,
    pub part2: bool,
    /// RFC 3339 (UTC).
    pub created_at: String,
}

/// A page of messages, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MessageList {
    pub messages: Vec<MessageItem>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl Ops {
    /// `GET /v1/messages`
    pub async fn messages(
        &self,
        organization_id: &str,
        query: &MessageQuery,
    ) -> Result<MessageList, ServiceError> {
        let mut errors = Vec::new();
        let status = status_param(query.status.as_deref(), &mut errors);
        let channel = channel_param(query.channel.as_deref(), &mut errors);
        if query
            .patient
            .as_deref()
            .is_some_and(|p| p.trim().is_empty() || p.len() > 256)
        {
            errors.push(FieldError::parameter(
                "patient",
                "a patient's external id (1 to 256 characters)",
            ));
        }
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
        if !errors.is_empty() {
            return Err(ServiceError::Invalid(errors));
        }
        let patient_id = match &query.patient {
            None => None,
            Some(external_id) => match self
                .store
                .patients()
                .by_external_id(organization_id, external_id)
                .await
            {
                Ok(patient) => Some(patient.id),
                // No such patient: no messages of theirs.
                Err(StoreError::NotFound) => {
                    return Ok(MessageList {
                        messages: Vec::new(),
                        next_cursor: None,
                    });
                }
                Err(e) => return Err(e.into()),
            },
        };
        let filter = MessageFilter {
            status: status.map(|s| s.as_str().to_string()),
            channel,
            patient_id,
            since,
            until,
        };
        let rows = self
            .store
            .messages()
            .page(organization_id, &filter, after, limit)
            .await?;
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let mut states: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for (message_id, channel, status) in self.store.messages().delivery_states_of(&ids).await? {
            states
                .entry(message_id)
                .or_default()
                .push((channel, status));
        }
        let next_cursor = cursor_after(
            rows.len(),
            limit,
            rows.last().map(|r| (r.created_at, r.id.as_str())),
        );
        let messages = rows
            .into_iter()
            .map(|row| {
                let deliveries = states.remove(&row.id).unwrap_or_default();
                let mut channels: Vec<String> = deliveries.iter().map(|(c, _)| c.clone()).collect();
                channels.sort();
                channels.dedup();
                MessageItem {
                    status: summarize(deliveries.iter().map(|(_, s)| s.as_str())),
                    deliveries: deliveries.len(),
                    channels,
                    created_at: rfc3339(row.created_at),
                    id: row.id,
                    thread_id: row.thread_id,
                    patient_id: row.patient_id,
                    direction: row.direction,
                    urgent: row.urgent,
                    part2: row.part2,
                }
            })
            .collect();
        Ok(MessageList {
            messages,
            next_cursor,
        })
    }
}
