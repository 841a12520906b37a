//! Attachments of messages: written in the accept transaction (`Store::accept_messages`), read
//! back as metadata for the message record, one sealed blob for a download, and all of a
//! message's blobs for the delivery worker. The store holds sealed bytes only.

use sqlx::Connection;

use super::{Attachments, Result, StoreError, on_db};

/// One attachment to record with its message. `sealed` is already sealed; cheap to clone (the
/// group commit clones items).
#[derive(Debug, Clone)]
pub struct NewAttachment {
    pub id: String,
    /// Order within the message, from 0.
    pub position: i64,
    pub filename: String,
    pub content_type: String,
    /// Plaintext size, bytes.
    pub size: i64,
    /// SHA-256 of the plaintext, lower-case hex.
    pub sha256: String,
    pub sealed: bytes::Bytes,
}

/// An attachment's metadata, as the message record lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttachmentRow {
    pub id: String,
    pub message_id: String,
    pub filename: Option<String>,
    pub content_type: String,
    pub size_bytes: i64,
    pub sha256: String,
}

/// An attachment with its sealed bytes.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttachmentBlob {
    pub id: String,
    pub message_id: String,
    pub filename: Option<String>,
    pub content_type: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub content: Vec<u8>,
}

pub(super) const INSERT_ATTACHMENT: &str =
    "INSERT INTO attachments (id, organization_id, message_id,
    filename, content_type, size_bytes, sha256, content, position, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// Binds a [`NewAttachment`] of `message` to [`INSERT_ATTACHMENT`] (one row a statement: a
/// multi-row insert would hold every file of a batch in one statement buffer).
macro_rules! bind_attachment {
    ($attachment:expr, $message:expr) => {
        sqlx::query($crate::store::attachments::INSERT_ATTACHMENT)
            .bind(&$attachment.id)
            .bind(&$message.organization_id)
            .bind(&$message.id)
            .bind(&$attachment.filename)
            .bind(&$attachment.content_type)
            .bind($attachment.size)
            .bind(&$attachment.sha256)
            .bind(&$attachment.sealed[..])
            .bind($attachment.position)
            .bind($message.created_at)
    };
}
pub(super) use bind_attachment;

impl Attachments<'_> {
    /// One attachment of a message of the organization, sealed.
    pub async fn get(
        self,
        organization_id: &str,
        message_id: &str,
        attachment_id: &str,
    ) -> Result<AttachmentBlob> {
        on_db!(self.db(), |pool| {
            let mut conn = pool.acquire().await?;
            let row = sqlx::query_as(
                "SELECT id, message_id, filename, content_type, size_bytes, sha256, content
                 FROM attachments WHERE organization_id = $1 AND message_id = $2 AND id = $3",
            )
            .bind(organization_id)
            .bind(message_id)
            .bind(attachment_id)
            .fetch_optional(&mut *conn)
            .await;
            // The connection's buffers grew to the file's size: give that back to the
            // allocator rather than keep it for the connection's life.
            conn.shrink_buffers();
            row
        })?
        .ok_or(StoreError::NotFound)
    }

    /// Every attachment of a message, sealed, in the sender's order (the delivery worker).
    pub async fn blobs(
        self,
        organization_id: &str,
        message_id: &str,
    ) -> Result<Vec<AttachmentBlob>> {
        Ok(on_db!(self.db(), |pool| {
            let mut conn = pool.acquire().await?;
            let rows = sqlx::query_as(
                "SELECT id, message_id, filename, content_type, size_bytes, sha256, content
                 FROM attachments WHERE organization_id = $1 AND message_id = $2
                 ORDER BY position, id",
            )
            .bind(organization_id)
            .bind(message_id)
            .fetch_all(&mut *conn)
            .await;
            conn.shrink_buffers();
            rows
        })?)
    }
}
