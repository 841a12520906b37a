//! The audit log: every external disclosure and every security-relevant refusal.

use super::{Audit, AuditRow, Result, now_ms, on_db};

/// One audit event to record.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry {
    pub organization_id: String,
    pub action: String,
    pub actor: String,
    pub patient_id: Option<String>,
    pub message_id: Option<String>,
    pub delivery_id: Option<String>,
    pub channel: Option<String>,
    pub recipient: Option<String>,
    pub outcome: Option<String>,
    pub detail: Option<String>,
}

pub(super) const INSERT_AUDIT: &str = "INSERT INTO audit_events (organization_id, action, actor,
    patient_id, message_id, delivery_id, channel, recipient, outcome, detail, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// Binds an [`AuditEntry`] to [`INSERT_AUDIT`]; usable inside any transaction.
macro_rules! bind_audit {
    ($entry:expr, $now:expr) => {
        sqlx::query($crate::store::audit::INSERT_AUDIT)
            .bind(&$entry.organization_id)
            .bind(&$entry.action)
            .bind(&$entry.actor)
            .bind(&$entry.patient_id)
            .bind(&$entry.message_id)
            .bind(&$entry.delivery_id)
            .bind(&$entry.channel)
            .bind(&$entry.recipient)
            .bind(&$entry.outcome)
            .bind(&$entry.detail)
            .bind($now)
    };
}
pub(super) use bind_audit;

/// The most audit rows one multi-row `INSERT` carries (11 parameters each).
pub(super) const AUDIT_CHUNK: usize = 500;

/// One multi-row `INSERT` of `entries` (at most [`AUDIT_CHUNK`]), in order.
pub(super) fn insert_all<'e, DB>(
    entries: impl IntoIterator<Item = &'e AuditEntry>,
    now: i64,
) -> sqlx::QueryBuilder<DB>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Arguments: Default,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<String>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let mut qb = sqlx::QueryBuilder::new(
        "INSERT INTO audit_events (organization_id, action, actor, patient_id, message_id,
            delivery_id, channel, recipient, outcome, detail, created_at) ",
    );
    qb.push_values(entries, |mut row, e| {
        row.push_bind(e.organization_id.clone())
            .push_bind(e.action.clone())
            .push_bind(e.actor.clone())
            .push_bind(e.patient_id.clone())
            .push_bind(e.message_id.clone())
            .push_bind(e.delivery_id.clone())
            .push_bind(e.channel.clone())
            .push_bind(e.recipient.clone())
            .push_bind(e.outcome.clone())
            .push_bind(e.detail.clone())
            .push_bind(now);
    });
    qb
}

impl Audit<'_> {
    pub async fn record(self, entry: &AuditEntry) -> Result<()> {
        let now = now_ms();
        on_db!(self.db(), |pool| bind_audit!(entry, now)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Several audit events in one statement (a batch's refusals).
    pub async fn record_all(self, entries: &[AuditEntry]) -> Result<()> {
        let now = now_ms();
        for chunk in entries.chunks(AUDIT_CHUNK) {
            on_db!(self.db(), |pool| insert_all(chunk.iter(), now)
                .build()
                .execute(pool)
                .await
                .map(|_| ()))?;
        }
        Ok(())
    }

    /// Audit events of an organization, newest first.
    pub async fn entries(self, organization_id: &str, limit: i64) -> Result<Vec<AuditRow>> {
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as(
            "SELECT id, organization_id, action, actor, patient_id, message_id, delivery_id, channel,
                    recipient, outcome, detail, created_at
             FROM audit_events WHERE organization_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(organization_id).bind(limit)
        .fetch_all(pool).await
        })?)
    }
}
