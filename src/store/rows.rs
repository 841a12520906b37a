//! Row types as read from the database. They keep sqlx out of the domain: callers get plain
//! structs; sealed columns stay sealed bytes until `crypto` opens them.

use serde::Serialize;

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct Organization {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub time_zone: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PatientRow {
    pub id: String,
    pub organization_id: String,
    pub external_id: String,
    pub family_name: Option<String>,
    pub given_name: Option<String>,
    pub birth_date: Option<String>,
    pub sex: Option<String>,
    pub language: Option<String>,
    pub time_zone: Option<String>,
    /// JSON {line1, line2, city, state, postal_code, country}.
    pub address: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ContactPointRow {
    pub id: String,
    pub system: String,
    pub value: String,
    pub use_code: Option<String>,
    pub rank: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConsentRow {
    pub id: String,
    pub channel: String,
    pub purpose: String,
    pub recipient: String,
    pub status: String,
    pub source: String,
    pub recorded_at: i64,
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ThreadRow {
    pub id: String,
    pub organization_id: String,
    pub patient_id: Option<String>,
    pub category: String,
    pub status: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageRow {
    pub id: String,
    pub organization_id: String,
    pub thread_id: String,
    pub patient_id: Option<String>,
    pub direction: String,
    pub content: Vec<u8>,
    pub urgent: bool,
    pub part2: bool,
    pub metadata: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: String,
    pub organization_id: String,
    pub message_id: String,
    pub patient_id: Option<String>,
    pub channel: String,
    pub recipient: String,
    pub status: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub not_before: Option<i64>,
    pub connector: Option<String>,
    pub provider_ref: Option<String>,
    pub reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct DeliveryEventRow {
    #[serde(skip)]
    pub delivery_id: String,
    pub status: String,
    pub applied: bool,
    pub source: String,
    pub detail: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct DeadLetterRow {
    pub delivery_id: String,
    pub organization_id: String,
    pub channel: String,
    pub attempts: i64,
    pub reason: String,
    pub created_at: i64,
    pub requeued_at: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct EventRow {
    pub id: i64,
    pub organization_id: String,
    pub kind: String,
    pub subject_id: String,
    pub payload: String,
    pub created_at: i64,
    /// The writing transaction's id on PostgreSQL (0 on SQLite and for older rows): the
    /// feed's order is (tx, id). Not selected by every query.
    #[sqlx(default)]
    pub tx: i64,
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct AuditRow {
    pub id: i64,
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
    pub created_at: i64,
}
