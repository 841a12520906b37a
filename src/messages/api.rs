//! What the API asks of the message service besides accepting and showing one message: a
//! client's accept (its `metadata.purpose` must be one a client may give), a thread with its
//! messages, and read receipts. The types here are the wire shapes of
//! `GET /v1/threads/{id}/messages`.

use serde::Serialize;

use super::{Accepted, MessageError, MessageService, MessageView, SendRequest, rfc3339};
use crate::service::Location;

/// Most messages one thread page shows.
pub const MAX_THREAD_PAGE: i64 = 500;

/// A thread (conversation) as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ThreadView {
    pub id: String,
    /// The patient the conversation is about, if any (internal id).
    pub patient_id: Option<String>,
    /// clinical, administrative, urgent or routine.
    pub category: String,
    /// open or closed.
    pub status: String,
    /// RFC 3339 (UTC).
    pub created_at: String,
}

/// `GET /v1/threads/{id}/messages`: the thread and its messages, oldest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ThreadMessages {
    pub thread: ThreadView,
    pub messages: Vec<MessageView>,
}

impl MessageService {
    /// [`MessageService::accept`] for a request from an API client: the purposes that relax
    /// the PHI rule (`notification`, `reminder`, …) are the gateway's own, so a client's
    /// `metadata.purpose` must be on the client list.
    pub async fn accept_from_client(
        &self,
        organization_id: &str,
        request: SendRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Accepted, MessageError> {
        crate::disclosure::client_purpose(&request.metadata).map_err(|e| {
            MessageError::Invalid {
                field: "metadata.purpose".into(),
                reason: e.to_string(),
                at: Location::Pointer("/metadata/purpose".into()),
            }
        })?;
        self.accept_owned(organization_id, request, idempotency_key)
            .await
    }

    /// The record of an accepted message: the one the accept built, else read back (a replay).
    pub async fn accepted_view(
        &self,
        organization_id: &str,
        accepted: Accepted,
    ) -> Result<MessageView, MessageError> {
        match accepted.view {
            Some(view) => Ok(view),
            None => self.view(organization_id, &accepted.message_id).await,
        }
    }

    /// A thread of the organization with up to `limit` (1 to [`MAX_THREAD_PAGE`]) of its
    /// messages, oldest first.
    pub async fn thread(
        &self,
        organization_id: &str,
        thread_id: &str,
        limit: i64,
    ) -> Result<ThreadMessages, MessageError> {
        let thread = match self
            .store
            .messages()
            .thread(organization_id, thread_id)
            .await
        {
            Err(crate::store::StoreError::NotFound) => {
                return Err(MessageError::NotFound("thread"));
            }
            other => other?,
        };
        let limit = limit.clamp(1, MAX_THREAD_PAGE);
        let records = self
            .store
            .messages()
            .thread_records(organization_id, &thread.id, limit)
            .await?;
        let messages = records
            .into_iter()
            .map(|record| MessageView::from_record(&self.keyring, record))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ThreadMessages {
            thread: ThreadView {
                id: thread.id,
                patient_id: thread.patient_id,
                category: thread.category,
                status: thread.status,
                created_at: rfc3339(thread.created_at),
            },
            messages,
        })
    }

    /// A person read the message: an urgent alert about it stops escalating, and a
    /// `message.read` event is recorded. Another organization's message is not found.
    pub async fn mark_read(
        &self,
        organization_id: &str,
        message_id: &str,
    ) -> Result<(), MessageError> {
        match self.store.messages().get(organization_id, message_id).await {
            Err(crate::store::StoreError::NotFound) => {
                return Err(MessageError::NotFound("message"));
            }
            other => other?,
        };
        self.store
            .urgent()
            .mark_read(organization_id, message_id)
            .await?;
        self.store
            .events()
            .record(
                organization_id,
                "message.read",
                message_id,
                &serde_json::json!({ "message_id": message_id }),
            )
            .await?;
        Ok(())
    }
}
