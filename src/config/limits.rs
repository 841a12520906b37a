//! `[limits]`: how big and of what kind an accepted attachment may be.

use serde::{Deserialize, Serialize};

/// One MiB.
const MIB: u64 = 1024 * 1024;

/// Attachment limits, applied when a message is accepted (`POST /v1/messages`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest attachment, bytes (decoded); larger: 413 naming the file.
    pub max_attachment_bytes: u64,
    /// Largest total of one message's attachments, bytes; larger: 413 naming the first file
    /// over it.
    pub max_message_attachment_bytes: u64,
    /// Most attachments one message carries; more: 413.
    pub max_attachments: usize,
    /// Media types an attachment may have (lower case, no parameters). Each is also checked
    /// against the bytes: PDF, TIFF, PNG, JPEG and ZIP by magic number, `text/plain` as UTF-8
    /// without NUL, XML as a document that starts with `<`. A type not in this list, or one the
    /// gateway cannot check, is refused (422).
    pub allowed_attachment_types: Vec<String>,
    /// Attachment bytes the daemon holds in memory at once (uploads being read and sealed,
    /// deliveries being sent); beyond it, uploads and deliveries with attachments wait their
    /// turn. One message larger than this still goes, alone.
    pub attachment_memory_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_attachment_bytes: 25 * MIB,
            max_message_attachment_bytes: 50 * MIB,
            max_attachments: 20,
            allowed_attachment_types: crate::attachments::CHECKED_TYPES
                .iter()
                .map(|t| t.to_string())
                .collect(),
            attachment_memory_bytes: 32 * MIB,
        }
    }
}

impl LimitsConfig {
    /// Largest `POST /v1/messages` body: the message itself (`server.max_body_bytes`) plus
    /// the attachments at their largest, base64-encoded (4/3) with room for JSON or
    /// multipart framing.
    pub fn message_body_bytes(&self, max_body_bytes: usize) -> usize {
        let encoded = self.max_message_attachment_bytes.div_ceil(3) * 4;
        let framing = 4096 * self.max_attachments as u64;
        usize::try_from(encoded + framing)
            .unwrap_or(usize::MAX)
            .saturating_add(max_body_bytes)
    }
}

impl LimitsConfig {
    /// Refuses limits of zero and types the gateway cannot check against the bytes.
    pub(super) fn check(&self) -> Result<(), super::ConfigError> {
        let invalid = |m: String| Err(super::ConfigError::Invalid(m));
        if self.max_attachment_bytes == 0
            || self.max_message_attachment_bytes == 0
            || self.max_attachments == 0
            || self.attachment_memory_bytes == 0
        {
            return invalid("limits: max_attachment_bytes, max_message_attachment_bytes, max_attachments and attachment_memory_bytes must be at least 1".into());
        }
        for (i, kind) in self.allowed_attachment_types.iter().enumerate() {
            if crate::attachments::Checked::of(kind).is_none() {
                return invalid(format!(
                    "limits.allowed_attachment_types[{i}] {kind:?}: not a type the gateway can check (one of {})",
                    crate::attachments::CHECKED_TYPES.join(", ")
                ));
            }
        }
        Ok(())
    }
}
