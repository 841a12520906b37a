//! Staff: who is notified of urgent messages, in on-call order.

use super::{Result, Staff, new_id, now_ms, on_db};

const STAFF_COLUMNS: &str = "id, external_id, name, sms, email, on_call_rank, active";

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct StaffRow {
    pub id: String,
    pub external_id: String,
    pub name: String,
    pub sms: Option<String>,
    pub email: Option<String>,
    pub on_call_rank: Option<i64>,
    pub active: bool,
}

#[derive(Debug, Clone)]
pub struct StaffInput {
    pub external_id: String,
    pub name: String,
    pub sms: Option<String>,
    pub email: Option<String>,
    pub on_call_rank: Option<i64>,
    pub active: bool,
}

impl Staff<'_> {
    pub async fn upsert(self, organization_id: &str, input: &StaffInput) -> Result<StaffRow> {
        let now = now_ms();
        let sql = "INSERT INTO staff (id, organization_id, external_id, name, sms, email, on_call_rank, active, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
             ON CONFLICT (organization_id, external_id) DO UPDATE SET name = excluded.name, sms = excluded.sms,
                email = excluded.email, on_call_rank = excluded.on_call_rank, active = excluded.active, updated_at = excluded.updated_at
             RETURNING id, external_id, name, sms, email, on_call_rank, active";
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(new_id("stf"))
            .bind(organization_id)
            .bind(&input.external_id)
            .bind(&input.name)
            .bind(&input.sms)
            .bind(&input.email)
            .bind(input.on_call_rank)
            .bind(input.active)
            .bind(now)
            .fetch_one(pool)
            .await)?)
    }

    /// Active staff of an organization, on-call order first.
    pub async fn list(self, organization_id: &str) -> Result<Vec<StaffRow>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {STAFF_COLUMNS} FROM staff WHERE organization_id = $1
             ORDER BY CASE WHEN on_call_rank IS NULL THEN 1 ELSE 0 END, on_call_rank, external_id"
        ));
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(organization_id)
            .fetch_all(pool)
            .await)?)
    }

    /// The active staff member at this position (0-based) of the on-call order.
    pub async fn on_call(self, organization_id: &str, position: i64) -> Result<Option<StaffRow>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {STAFF_COLUMNS} FROM staff WHERE organization_id = $1 AND active AND on_call_rank IS NOT NULL
             ORDER BY on_call_rank, external_id LIMIT 1 OFFSET $2"
        ));
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(organization_id)
            .bind(position)
            .fetch_optional(pool)
            .await)?)
    }

    pub async fn get(self, id: &str) -> Result<Option<StaffRow>> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {STAFF_COLUMNS} FROM staff WHERE id = $1"));
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(pool)
            .await)?)
    }
}
