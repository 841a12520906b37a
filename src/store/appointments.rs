//! Appointments and recalls (fed by HL7 SIU or the API), patient identifiers from PID-3, and
//! patient merges (ADT^A40).

use serde::Serialize;

use super::{Appointments, Result, StoreError, new_id, now_ms, on_db};
use crate::domain::AppointmentStatus;

/// An appointment as fed by HL7 or the API.
#[derive(Debug, Clone)]
pub struct AppointmentInput {
    pub filler_id: String,
    pub placer_id: Option<String>,
    pub start_at: i64,
    pub start_offset_minutes: i64,
    pub duration_minutes: Option<i64>,
    pub status: AppointmentStatus,
    pub appointment_type: Option<String>,
    pub reason: Option<String>,
    pub location: Option<String>,
    pub location_code: Option<String>,
    pub provider_id: Option<String>,
    pub provider_name: Option<String>,
    pub source: String,
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct AppointmentRow {
    pub id: String,
    pub organization_id: String,
    pub patient_id: String,
    pub filler_id: String,
    pub placer_id: Option<String>,
    pub start_at: i64,
    pub start_offset_minutes: i64,
    pub duration_minutes: Option<i64>,
    /// An [`AppointmentStatus`] name ([`AppointmentRow::status`] reads it).
    pub status: String,
    pub appointment_type: Option<String>,
    pub reason: Option<String>,
    pub location: Option<String>,
    pub location_code: Option<String>,
    pub provider_id: Option<String>,
    pub provider_name: Option<String>,
    pub source: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// What the patient answered to a reminder (`confirmed`, `cancel_requested`, ...).
    pub confirmation: Option<String>,
}

impl AppointmentRow {
    /// The status, typed.
    pub fn status(&self) -> AppointmentStatus {
        AppointmentStatus::from_stored(&self.status)
    }
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct RecallRow {
    pub id: String,
    pub patient_id: String,
    pub external_id: String,
    pub recall_type: String,
    pub due_date: String,
    pub provider: Option<String>,
    pub location: Option<String>,
    pub status: String,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct RecallInput {
    pub external_id: String,
    pub recall_type: String,
    pub due_date: String,
    pub provider: Option<String>,
    pub location: Option<String>,
    pub status: String,
}

/// The statements of an appointment upsert (and its `appointment.changed` event) inside the
/// caller's transaction `$tx`; evaluates to the row.
macro_rules! upsert_appointment_in {
    ($tx:expr, $organization_id:expr, $patient_id:expr, $a:expr, $trigger:expr, $now:expr, $new:expr) => {{
        let (organization_id, patient_id, a, trigger, now): (&str, &str, &$crate::store::AppointmentInput, &str, i64) =
            ($organization_id, $patient_id, $a, $trigger, $now);
        let row: $crate::store::AppointmentRow = sqlx::query_as(concat!(
            "INSERT INTO appointments (id, organization_id, patient_id, filler_id, placer_id, start_at, start_offset_minutes,
                duration_minutes, status, appointment_type, reason, location, location_code, provider_id, provider_name,
                source, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17)
             ON CONFLICT (organization_id, filler_id) DO UPDATE SET
                patient_id = excluded.patient_id, placer_id = excluded.placer_id, start_at = excluded.start_at,
                start_offset_minutes = excluded.start_offset_minutes, duration_minutes = excluded.duration_minutes,
                status = excluded.status, appointment_type = excluded.appointment_type, reason = excluded.reason,
                location = excluded.location, location_code = excluded.location_code, provider_id = excluded.provider_id,
                provider_name = excluded.provider_name, source = excluded.source, updated_at = excluded.updated_at
             RETURNING ", appointment_columns!()
        ))
        .bind($new).bind(organization_id).bind(patient_id).bind(&a.filler_id).bind(&a.placer_id)
        .bind(a.start_at).bind(a.start_offset_minutes).bind(a.duration_minutes).bind(a.status.as_str())
        .bind(&a.appointment_type).bind(&a.reason).bind(&a.location).bind(&a.location_code)
        .bind(&a.provider_id).bind(&a.provider_name).bind(&a.source).bind(now)
        .fetch_one(&mut *$tx).await?;
        let payload = serde_json::json!({
            "appointment_id": row.id, "filler_id": row.filler_id, "status": row.status,
            "start_at": row.start_at, "trigger": trigger,
        }).to_string();
        sqlx::query("INSERT INTO events (organization_id, kind, subject_id, payload, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(organization_id).bind("appointment.changed").bind(&row.id).bind(payload).bind(now)
            .execute(&mut *$tx).await?;
        row
    }};
}

impl Appointments<'_> {
    /// Creates or updates an appointment keyed by its filler id; appends an
    /// `appointment.changed` event. Returns the row and whether it was new.
    pub async fn upsert(
        self,
        organization_id: &str,
        patient_id: &str,
        a: &AppointmentInput,
        trigger: &str,
    ) -> Result<(AppointmentRow, bool)> {
        let now = now_ms();
        let new = new_id("apt");
        let row: AppointmentRow = on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let row =
                upsert_appointment_in!(tx, organization_id, patient_id, a, trigger, now, &new);
            tx.commit().await?;
            row
        });
        let created = row.id == new;
        Ok((row, created))
    }

    pub async fn by_filler(self, organization_id: &str, filler_id: &str) -> Result<AppointmentRow> {
        on_db!(self.db(), |pool| sqlx::query_as(concat!(
            "SELECT ",
            appointment_columns!(),
            " FROM appointments WHERE organization_id = $1 AND filler_id = $2"
        ))
        .bind(organization_id)
        .bind(filler_id)
        .fetch_optional(pool)
        .await)?
        .ok_or(StoreError::NotFound)
    }

    pub async fn get(self, id: &str) -> Result<AppointmentRow> {
        on_db!(self.db(), |pool| sqlx::query_as(concat!(
            "SELECT ",
            appointment_columns!(),
            " FROM appointments WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(pool)
        .await)?
        .ok_or(StoreError::NotFound)
    }

    pub async fn of_patient(self, patient_id: &str) -> Result<Vec<AppointmentRow>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_as(concat!(
            "SELECT ",
            appointment_columns!(),
            " FROM appointments WHERE patient_id = $1 ORDER BY start_at, id"
        ))
        .bind(patient_id)
        .fetch_all(pool)
        .await)?)
    }

    pub async fn upsert_recall(
        self,
        organization_id: &str,
        patient_id: &str,
        r: &RecallInput,
    ) -> Result<(RecallRow, bool)> {
        let now = now_ms();
        let new = new_id("rcl");
        let row: RecallRow = on_db!(self.db(), |pool| {
            sqlx::query_as(
            "INSERT INTO recalls (id, organization_id, patient_id, external_id, recall_type, due_date, provider, location,
                status, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
             ON CONFLICT (organization_id, external_id) DO UPDATE SET patient_id = excluded.patient_id,
                recall_type = excluded.recall_type, due_date = excluded.due_date, provider = excluded.provider,
                location = excluded.location, status = excluded.status, updated_at = excluded.updated_at
             RETURNING id, patient_id, external_id, recall_type, due_date, provider, location, status, updated_at",
        )
        .bind(&new).bind(organization_id).bind(patient_id).bind(&r.external_id).bind(&r.recall_type)
        .bind(&r.due_date).bind(&r.provider).bind(&r.location).bind(&r.status).bind(now)
        .fetch_one(pool).await
        })?;
        let created = row.id == new;
        Ok((row, created))
    }

    pub async fn recall(self, organization_id: &str, external_id: &str) -> Result<RecallRow> {
        on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT id, patient_id, external_id, recall_type, due_date, provider, location, status, updated_at
             FROM recalls WHERE organization_id = $1 AND external_id = $2",
        )
        .bind(organization_id).bind(external_id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)
    }
}
