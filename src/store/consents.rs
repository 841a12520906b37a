//! The consent ledger: opt-outs and opt-ins per channel, purpose and address (SMS keywords
//! record the number; the API and HL7 record them per patient), and Part 2 consents. This file
//! writes and reads entries; what they decide is `crate::disclosure`'s (one rule for every
//! path).

use super::touch_batch::{IN_CHUNK, push_list, unique};
use super::{
    ConsentLedger, LedgerEntry, Part2Consents, Part2Entry, Result, Store, new_id, now_ms, on_db,
};

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

    /// The consent entries of one organization and purpose (or `*`) that can decide for one
    /// address on one channel: entries for the address, and the patient's entries for every
    /// address (`*`); `granted`/`revoked`, unexpired now. The decision is
    /// `disclosure::opted_out`'s; [`Store::consent_ledger`] loads the same for a batch.
    pub async fn consent_entries(
        &self,
        organization_id: &str,
        purpose: &str,
        channel: &str,
        recipient: &str,
        patient_id: Option<&str>,
    ) -> Result<ConsentLedger> {
        let now = now_ms();
        let entries: Vec<LedgerEntry> = on_db!(self.db(), pool => sqlx::query_as(
            "SELECT id, patient_id, channel, recipient, status, recorded_at FROM consents
             WHERE organization_id = $1 AND channel IN ($2, '*') AND purpose IN ($5, '*')
               AND status IN ('granted', 'revoked')
               AND (recipient = $3 OR (recipient = '*' AND patient_id = $4))
               AND (expires_at IS NULL OR expires_at > $6)",
        )
        .bind(organization_id).bind(channel).bind(recipient).bind(patient_id).bind(purpose).bind(now)
        .fetch_all(pool).await)?;
        Ok(ConsentLedger::new(entries))
    }

    /// Every Part 2 consent entry of these patients (any channel, recipient, status or
    /// expiry: the newest covering one decides, in `disclosure`).
    pub async fn part2_consents(&self, patient_ids: &[&str]) -> Result<Part2Consents> {
        let mut entries = Vec::new();
        for chunk in unique(patient_ids.iter().copied()).chunks(IN_CHUNK) {
            let rows: Vec<Part2Entry> = on_db!(self.db(), pool => {
                let mut qb = sqlx::QueryBuilder::new(
                    "SELECT id, patient_id, channel, recipient, status, recorded_at, expires_at FROM consents
                     WHERE purpose = 'part2' AND patient_id IN (",
                );
                push_list(&mut qb, chunk);
                qb.push(")");
                qb.build_query_as().fetch_all(pool).await
            })?;
            entries.extend(rows);
        }
        Ok(Part2Consents::new(entries))
    }
}
