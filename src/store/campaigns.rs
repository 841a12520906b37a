//! Campaigns: definitions with their kind, state and next scheduled run; the cohort of a
//! recall campaign (open recalls whose patient has nothing booked) or of a bulk notice
//! (patients booked in a window, or listed); attempts per target (unique on campaign, target
//! and attempt; a notice's target is the patient) and the report.

use super::touch_batch::{IN_CHUNK, push_list};
use super::{Campaigns, Result, StoreError, new_id, now_ms, on_db};

const COLUMNS: &str = "id, organization_id, name, definition, created_at, kind, state, next_run_at, last_pass_at, updated_at";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CampaignRow {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub definition: String,
    pub created_at: i64,
    /// recall | notice
    pub kind: String,
    /// active | paused | cancelled
    pub state: String,
    /// When the next scheduled run is due (unix ms); `None`: runs only when asked.
    pub next_run_at: Option<i64>,
    /// The last pass that sent for the campaign (the throttle counts from it).
    pub last_pass_at: Option<i64>,
    pub updated_at: i64,
}

/// A member of a notice's cohort: one booked appointment (or a listed patient).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NoticeRow {
    pub patient_id: String,
    pub external_id: String,
    pub language: Option<String>,
    pub appointment_type: Option<String>,
    pub attempts: i64,
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

/// One attempt of a campaign.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TargetRow {
    /// The recall (a notice: the patient).
    pub recall_id: String,
    pub patient_id: String,
    pub attempt: i64,
    /// sent | skipped
    pub status: String,
    pub reason: Option<String>,
    pub channel: Option<String>,
    pub message_id: Option<String>,
    pub created_at: i64,
}

/// The targets skipped, per reason.
pub type SkipCounts = std::collections::BTreeMap<String, i64>;

impl Campaigns<'_> {
    /// Stores a campaign (state `active`); `next_run_at` is its first scheduled run, if any.
    pub async fn create(
        self,
        organization_id: &str,
        name: &str,
        kind: &str,
        definition: &str,
        next_run_at: Option<i64>,
    ) -> Result<String> {
        let id = new_id("cmp");
        let now = now_ms();
        on_db!(self.db(), |pool| {
            sqlx::query(
            "INSERT INTO campaigns (id, organization_id, name, definition, created_at, kind, state, next_run_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $5)",
        ).bind(&id).bind(organization_id).bind(name).bind(definition).bind(now).bind(kind).bind(next_run_at)
        .execute(pool).await.map(|_| ())
        })?;
        Ok(id)
    }

    pub async fn get(self, id: &str) -> Result<CampaignRow> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM campaigns WHERE id = $1"));
        on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(pool)
            .await)?
        .ok_or(StoreError::NotFound)
    }

    /// The campaign if it belongs to the organization.
    pub async fn get_of(self, organization_id: &str, id: &str) -> Result<CampaignRow> {
        let row = self.get(id).await?;
        if row.organization_id != organization_id {
            return Err(StoreError::NotFound);
        }
        Ok(row)
    }

    /// The organization's campaigns, newest first.
    pub async fn list(self, organization_id: &str, limit: i64) -> Result<Vec<CampaignRow>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM campaigns WHERE organization_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
        ));
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(organization_id)
            .bind(limit)
            .fetch_all(pool)
            .await)?)
    }

    /// Moves the campaign to `to` if its state is one of `from`; `false` if it was not.
    pub async fn set_state(self, id: &str, from: &[&str], to: &str) -> Result<bool> {
        let list: Vec<String> = from.iter().map(|s| format!("'{s}'")).collect();
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE campaigns SET state = $2, updated_at = $3 WHERE id = $1 AND state IN ({})",
            list.join(", ")
        ));
        let done = on_db!(self.db(), |pool| sqlx::query(sql)
            .bind(id)
            .bind(to)
            .bind(now_ms())
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(done > 0)
    }

    /// Active campaigns whose scheduled run is due at `now`, oldest due first.
    pub async fn due(self, now: i64, limit: i64) -> Result<Vec<CampaignRow>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM campaigns WHERE state = 'active' AND next_run_at IS NOT NULL AND next_run_at <= $1
             ORDER BY next_run_at, id LIMIT $2"
        ));
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await)?)
    }

    /// Records a pass over a scheduled campaign: when it sent (`last_pass_at`) and when its
    /// next run is due (`None`: not scheduled any more).
    pub async fn passed(self, id: &str, last_pass_at: i64, next_run_at: Option<i64>) -> Result<()> {
        on_db!(self.db(), |pool| {
            sqlx::query(
            "UPDATE campaigns SET last_pass_at = $2, next_run_at = $3, updated_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(last_pass_at)
        .bind(next_run_at)
        .bind(now_ms())
        .execute(pool)
        .await
        .map(|_| ())
        })?;
        Ok(())
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

    /// A notice's cohort: the patients with an appointment (booked or confirmed) starting in
    /// `[from, to)` at the location (name or code) and with the provider (id or name) given,
    /// one row per appointment, with the notices sent to the patient so far.
    #[allow(clippy::too_many_arguments)]
    pub async fn notice_booked(
        self,
        organization_id: &str,
        campaign_id: &str,
        from: i64,
        to: i64,
        location: Option<&str>,
        provider: Option<&str>,
    ) -> Result<Vec<NoticeRow>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT a.patient_id, p.external_id, p.language, a.appointment_type,
                    (SELECT COUNT(*) FROM campaign_targets t WHERE t.campaign_id = $2 AND t.recall_id = a.patient_id) AS attempts
             FROM appointments a JOIN patients p ON p.id = a.patient_id
             WHERE a.organization_id = $1 AND a.start_at >= $3 AND a.start_at < $4 AND a.status IN {}
               AND ($5 IS NULL OR a.location = $5 OR a.location_code = $5)
               AND ($6 IS NULL OR a.provider_id = $6 OR a.provider_name = $6)
             ORDER BY p.external_id, a.start_at",
            super::reminders::reminded_sql()
        ));
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(organization_id)
            .bind(campaign_id)
            .bind(from)
            .bind(to)
            .bind(location)
            .bind(provider)
            .fetch_all(pool)
            .await)?)
    }

    /// A notice's cohort from a list of patients (external ids; unknown ones are left out).
    pub async fn notice_listed(
        self,
        organization_id: &str,
        campaign_id: &str,
        external_ids: &[String],
    ) -> Result<Vec<NoticeRow>> {
        let mut rows = Vec::new();
        for chunk in external_ids.chunks(IN_CHUNK) {
            let part: Vec<NoticeRow> = on_db!(self.db(), |pool| {
                let mut qb = sqlx::QueryBuilder::new(
                    "SELECT p.id AS patient_id, p.external_id, p.language, NULL AS appointment_type,
                            (SELECT COUNT(*) FROM campaign_targets t WHERE t.campaign_id = ",
                );
                qb.push_bind(campaign_id.to_string())
                    .push(" AND t.recall_id = p.id) AS attempts FROM patients p WHERE p.organization_id = ")
                    .push_bind(organization_id.to_string())
                    .push(" AND p.external_id IN (");
                push_list(&mut qb, chunk);
                qb.push(") ORDER BY p.external_id");
                qb.build_query_as().fetch_all(pool).await
            })?;
            rows.extend(part);
        }
        Ok(rows)
    }

    /// Every attempt of the campaign, in the order they were made.
    pub async fn targets(self, campaign_id: &str) -> Result<Vec<TargetRow>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT recall_id, patient_id, attempt, status, reason, channel, message_id, created_at
             FROM campaign_targets WHERE campaign_id = $1 ORDER BY created_at, recall_id, attempt",
        )
        .bind(campaign_id)
        .fetch_all(pool)
        .await)?)
    }

    /// Skipped targets per reason.
    pub async fn skips(self, campaign_id: &str) -> Result<SkipCounts> {
        let rows: Vec<(Option<String>, i64)> = on_db!(self.db(), |pool| {
            sqlx::query_as(
            "SELECT reason, COUNT(*) FROM campaign_targets WHERE campaign_id = $1 AND status = 'skipped' GROUP BY reason",
        )
        .bind(campaign_id)
        .fetch_all(pool)
        .await
        })?;
        Ok(rows
            .into_iter()
            .map(|(reason, n)| (reason.unwrap_or_default(), n))
            .collect())
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

    /// Load and crash tests: `count` patients (one SMS number each, `+1415…`) with one open
    /// recall each (type `prefix`, due `due_date`), in transactions of 1,000.
    #[doc(hidden)]
    pub async fn seed_recalls(
        self,
        organization_id: &str,
        prefix: &str,
        due_date: &str,
        count: usize,
    ) -> Result<()> {
        let now = now_ms();
        let all: Vec<usize> = (0..count).collect();
        for chunk in all.chunks(1000) {
            let rows: Vec<(String, usize)> = chunk.iter().map(|n| (new_id("pat"), *n)).collect();
            on_db!(self.db(), |pool| {
                let mut tx = pool.begin().await?;
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO patients (id, organization_id, external_id, family_name, given_name, created_at, updated_at) ",
                );
                qb.push_values(&rows, |mut b, (pid, n)| {
                    b.push_bind(pid.clone())
                        .push_bind(organization_id.to_string())
                        .push_bind(format!("{prefix}-{n}"))
                        .push_bind("Load")
                        .push_bind("Test")
                        .push_bind(now)
                        .push_bind(now);
                });
                qb.build().execute(&mut *tx).await?;
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO contact_points (id, organization_id, patient_id, system, value, rank, created_at, e164) ",
                );
                qb.push_values(&rows, |mut b, (pid, n)| {
                    let number = format!("+1415{:07}", 2_000_000 + n % 8_000_000);
                    b.push_bind(new_id("cp"))
                        .push_bind(organization_id.to_string())
                        .push_bind(pid.clone())
                        .push_bind("sms")
                        .push_bind(number.clone())
                        .push_bind(1_i64)
                        .push_bind(now)
                        .push_bind(number);
                });
                qb.build().execute(&mut *tx).await?;
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO recalls (id, organization_id, patient_id, external_id, recall_type, due_date, status, created_at, updated_at) ",
                );
                qb.push_values(&rows, |mut b, (pid, n)| {
                    b.push_bind(new_id("rcl"))
                        .push_bind(organization_id.to_string())
                        .push_bind(pid.clone())
                        .push_bind(format!("{prefix}-{n}"))
                        .push_bind(prefix.to_string())
                        .push_bind(due_date.to_string())
                        .push_bind("open")
                        .push_bind(now)
                        .push_bind(now);
                });
                qb.build().execute(&mut *tx).await?;
                tx.commit().await?;
            });
        }
        Ok(())
    }
}
