//! The consent ledger beyond Part 2: opt-outs and opt-ins per channel and address (SMS
//! keywords record the number; the API and HL7 record them per patient). The newest entry that
//! covers a (channel, address) wins; with no entry, operational messages are allowed.

use super::{Result, Store, new_id, now_ms, on_db};

/// One ledger entry.
#[derive(Debug, Clone)]
pub struct ConsentChange {
    pub organization_id: String,
    pub patient_id: Option<String>,
    pub channel: String,
    /// `*` for every purpose.
    pub purpose: String,
    /// The address it covers (E.164 for phones), or `*` for every address of the patient.
    pub recipient: String,
    /// `granted` or `revoked`.
    pub status: String,
    /// `sms-keyword`, `api`, `hl7`, `staff`.
    pub source: String,
}

impl Store {
    pub async fn record_consent(&self, change: &ConsentChange) -> Result<()> {
        let now = now_ms();
        on_db!(self.db(), pool => sqlx::query(
            "INSERT INTO consents (id, organization_id, patient_id, channel, purpose, recipient, status, source, recorded_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(new_id("cns")).bind(&change.organization_id).bind(&change.patient_id).bind(&change.channel)
        .bind(&change.purpose).bind(&change.recipient).bind(&change.status).bind(&change.source).bind(now)
        .execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Whether the newest consent entry covering this address (or this patient on this
    /// channel) revokes it. Part 2 consents are a separate matter and not considered.
    pub async fn opted_out(
        &self,
        organization_id: &str,
        channel: &str,
        recipient: &str,
        patient_id: Option<&str>,
        purpose: &str,
    ) -> Result<bool> {
        let now = now_ms();
        let latest: Option<(String,)> = on_db!(self.db(), pool => sqlx::query_as(
            "SELECT status FROM consents
             WHERE organization_id = $1 AND channel IN ($2, '*') AND purpose IN ($5, '*')
               AND status IN ('granted', 'revoked')
               AND (recipient = $3 OR (recipient = '*' AND patient_id = $4))
               AND (expires_at IS NULL OR expires_at > $6)
             ORDER BY recorded_at DESC, id DESC LIMIT 1",
        )
        .bind(organization_id).bind(channel).bind(recipient).bind(patient_id).bind(purpose).bind(now)
        .fetch_optional(pool).await)?;
        Ok(latest.is_some_and(|(status,)| status == "revoked"))
    }
}
