//! Recall campaigns: definitions, the cohort (open recalls whose patient has nothing booked),
//! attempts per recall (unique on campaign, recall and attempt) and the report.

use super::{Campaigns, Result, StoreError, new_id, now_ms, on_db};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CampaignRow {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub definition: String,
    pub created_at: i64,
}

/// A cohort member with its campaign history.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CohortRow {
    pub recall_id: String,
    pub recall_type: String,
    pub patient_id: String,
    pub external_id: String,
    pub language: Option<String>,
    pub attempts: i64,
    pub last_attempt_at: Option<i64>,
}

/// The report's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CampaignCounts {
    pub targeted: i64,
    pub sent: i64,
    pub skipped: i64,
    pub delivered: i64,
    pub failed: i64,
    pub confirmed: i64,
    pub booked: i64,
}

impl Campaigns<'_> {
    pub async fn create(
        self,
        organization_id: &str,
        name: &str,
        definition: &str,
    ) -> Result<String> {
        let id = new_id("cmp");
        let now = now_ms();
        on_db!(self.db(), |pool| {
            sqlx::query(
            "INSERT INTO campaigns (id, organization_id, name, definition, created_at) VALUES ($1, $2, $3, $4, $5)",
        ).bind(&id).bind(organization_id).bind(name).bind(definition).bind(now).execute(pool).await.map(|_| ())
        })?;
        Ok(id)
    }

    pub async fn get(self, id: &str) -> Result<CampaignRow> {
        on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT id, organization_id, name, definition, created_at FROM campaigns WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await)?
        .ok_or(StoreError::NotFound)
    }

    /// Open recalls due between the dates (YYYY-MM-DD, inclusive) of a type (or any), whose
    /// patient has no appointment booked after `now`, with this campaign's attempts so far.
    #[allow(clippy::too_many_arguments)]
    pub async fn cohort(
        self,
        organization_id: &str,
        campaign_id: &str,
        recall_type: Option<&str>,
        due_from: &str,
        due_to: &str,
        provider: Option<&str>,
        location: Option<&str>,
        now: i64,
    ) -> Result<Vec<CohortRow>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT r.id AS recall_id, r.recall_type, r.patient_id, p.external_id, p.language,
                    (SELECT COUNT(*) FROM campaign_targets t WHERE t.campaign_id = $2 AND t.recall_id = r.id) AS attempts,
                    (SELECT MAX(t.created_at) FROM campaign_targets t WHERE t.campaign_id = $2 AND t.recall_id = r.id) AS last_attempt_at
             FROM recalls r JOIN patients p ON p.id = r.patient_id
             WHERE r.organization_id = $1 AND r.status = 'open' AND r.due_date >= $4 AND r.due_date <= $5
               AND ($3 IS NULL OR r.recall_type = $3) AND ($6 IS NULL OR r.provider = $6) AND ($7 IS NULL OR r.location = $7)
               AND NOT EXISTS (SELECT 1 FROM appointments a WHERE a.patient_id = r.patient_id AND a.start_at > $8
                               AND a.status IN {})
             ORDER BY r.due_date, r.id",
            super::reminders::reminded_sql()
        ));
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(organization_id)
            .bind(campaign_id)
            .bind(recall_type)
            .bind(due_from)
            .bind(due_to)
            .bind(provider)
            .bind(location)
            .bind(now)
            .fetch_all(pool)
            .await)?)
    }

    /// Records one attempt; `false` when this attempt exists (a concurrent or repeated run).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_target(
        self,
        campaign_id: &str,
        organization_id: &str,
        recall_id: &str,
        patient_id: &str,
        attempt: i64,
        status: &str,
        reason: Option<&str>,
        channel: Option<&str>,
        message_id: Option<&str>,
        at: i64,
    ) -> Result<bool> {
        let row: Option<(String,)> = on_db!(self.db(), |pool| {
            sqlx::query_as(
            "INSERT INTO campaign_targets (id, campaign_id, organization_id, recall_id, patient_id, attempt, status, reason, channel, message_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (campaign_id, recall_id, attempt) DO NOTHING RETURNING id",
        ).bind(new_id("ctg")).bind(campaign_id).bind(organization_id).bind(recall_id).bind(patient_id).bind(attempt)
        .bind(status).bind(reason).bind(channel).bind(message_id).bind(at).fetch_optional(pool).await
        })?;
        Ok(row.is_some())
    }

    pub async fn counts(self, campaign_id: &str, now: i64) -> Result<CampaignCounts> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT
               (SELECT COUNT(DISTINCT recall_id) FROM campaign_targets WHERE campaign_id = $1),
               (SELECT COUNT(*) FROM campaign_targets WHERE campaign_id = $1 AND status = 'sent'),
               (SELECT COUNT(*) FROM campaign_targets WHERE campaign_id = $1 AND status = 'skipped'),
               (SELECT COUNT(*) FROM deliveries d JOIN campaign_targets t ON t.message_id = d.message_id
                  WHERE t.campaign_id = $1 AND d.status IN ('delivered', 'dispatched')),
               (SELECT COUNT(*) FROM deliveries d JOIN campaign_targets t ON t.message_id = d.message_id
                  WHERE t.campaign_id = $1 AND d.status IN ('failed', 'expired')),
               (SELECT COUNT(DISTINCT a.patient_id) FROM appointments a
                  WHERE a.confirmation = 'confirmed' AND a.patient_id IN (SELECT patient_id FROM campaign_targets WHERE campaign_id = $1)),
               (SELECT COUNT(DISTINCT a.patient_id) FROM appointments a
                  WHERE a.start_at > $2 AND a.status IN {}
                    AND a.patient_id IN (SELECT patient_id FROM campaign_targets WHERE campaign_id = $1))",
            super::reminders::reminded_sql()
        ));
        let row: (i64, i64, i64, i64, i64, i64, i64) =
            on_db!(self.db(), |pool| sqlx::query_as(sql)
                .bind(campaign_id)
                .bind(now)
                .fetch_one(pool)
                .await)?;
        Ok(CampaignCounts {
            targeted: row.0,
            sent: row.1,
            skipped: row.2,
            delivered: row.3,
            failed: row.4,
            confirmed: row.5,
            booked: row.6,
        })
    }
}
