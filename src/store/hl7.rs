//! The HL7 archive: every message as received (sealed), with its outcome and ACK, keyed by
//! (organization, sending application, sending facility, MSH-10, content hash), so a
//! redelivery (same control id, same bytes) is answered with the same ACK and has no second
//! effect, while a different message that reuses a control id (engines do, after a reset) is
//! still processed rather than silently dropped.

use super::appointments::upsert_appointment_in;
use super::patients::upsert_patient_in;
use super::{AppointmentInput, Hl7, PatientInput, Result, new_id, now_ms, on_db};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Hl7Row {
    pub id: String,
    pub organization_id: String,
    pub control_id: Option<String>,
    pub message_type: Option<String>,
    pub raw: Vec<u8>,
    pub status: String,
    pub error: Option<String>,
    pub ack: Option<String>,
    pub attempts: i64,
    pub received_at: i64,
}

/// The identity and header of a message to archive.
#[derive(Debug, Clone)]
pub struct Hl7Arrival {
    pub id: String,
    pub organization_id: String,
    pub control_id: Option<String>,
    pub sending_application: String,
    pub sending_facility: String,
    pub message_type: Option<String>,
    pub version: Option<String>,
    /// Hex SHA-256 of the raw bytes.
    pub content_hash: String,
    /// Sealed with the archive row id as context.
    pub raw: Vec<u8>,
}

/// What one message changes, written with its archive row in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Hl7Effects {
    pub patient: Option<PatientInput>,
    /// The appointment (for the patient above) and the trigger event.
    pub appointment: Option<(AppointmentInput, String)>,
}

/// One message for [`Hl7::record_many`]: its archive row, effects and outcome.
#[derive(Debug, Clone)]
pub struct Hl7Record {
    pub arrival: Hl7Arrival,
    pub effects: Hl7Effects,
    pub outcome: Hl7Outcome,
}

/// The outcome to archive with a message.
#[derive(Debug, Clone)]
pub struct Hl7Outcome {
    pub status: String,
    pub error: Option<String>,
    pub ack: String,
}

const COLUMNS: &str =
    "id, organization_id, control_id, message_type, raw, status, error, ack, attempts, received_at";

impl Hl7<'_> {
    /// Archives a message as `received`, or returns the row already archived under the same
    /// control id (a redelivery).
    pub async fn archive(self, arrival: &Hl7Arrival) -> Result<(Hl7Row, bool)> {
        let now = now_ms();
        let inserted: Option<Hl7Row> = on_db!(self.db(), |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO hl7_messages (id, organization_id, control_id, sending_application, sending_facility,
                message_type, version, raw, status, received_at, content_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'received', $9, $10)
             ON CONFLICT DO NOTHING RETURNING {COLUMNS}"
        )))
        .bind(&arrival.id).bind(&arrival.organization_id).bind(&arrival.control_id)
        .bind(&arrival.sending_application).bind(&arrival.sending_facility)
        .bind(&arrival.message_type).bind(&arrival.version).bind(&arrival.raw).bind(now).bind(&arrival.content_hash)
        .fetch_optional(pool).await
        })?;
        if let Some(row) = inserted {
            return Ok((row, true));
        }
        let row: Hl7Row = on_db!(self.db(), |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM hl7_messages WHERE organization_id = $1 AND sending_application = $2
               AND sending_facility = $3 AND control_id = $4 AND content_hash = $5"
        )))
        .bind(&arrival.organization_id).bind(&arrival.sending_application)
        .bind(&arrival.sending_facility).bind(&arrival.control_id).bind(&arrival.content_hash)
        .fetch_one(pool).await
        })?;
        Ok((row, false))
    }

    /// Archives a message, applies its effects and records its outcome in ONE transaction
    /// (one commit per message). `Ok(None)`: done; `Ok(Some(row))`: the same message was
    /// archived before (a redelivery) and nothing was written.
    pub async fn record(
        self,
        arrival: &Hl7Arrival,
        effects: &Hl7Effects,
        outcome: &Hl7Outcome,
    ) -> Result<Option<Hl7Row>> {
        let one = Hl7Record {
            arrival: arrival.clone(),
            effects: effects.clone(),
            outcome: outcome.clone(),
        };
        Ok(self
            .record_many(std::slice::from_ref(&one))
            .await?
            .pop()
            .flatten())
    }

    /// [`Hl7::record`] for several messages (concurrent connections' messages, grouped by
    /// `GroupCommit::record_hl7`) in ONE transaction, in order: each message's archive row and
    /// effects, one commit for all. An answer per message, as `record` gives it. Any failure
    /// fails the whole batch (nothing is written); the group commit then records each alone.
    pub async fn record_many(self, records: &[Hl7Record]) -> Result<Vec<Option<Hl7Row>>> {
        let now = now_ms();
        let replays: Vec<bool> = on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let mut replays = Vec::with_capacity(records.len());
            for Hl7Record {
                arrival,
                effects,
                outcome,
            } in records
            {
                let inserted = sqlx::query(
                    "INSERT INTO hl7_messages (id, organization_id, control_id, sending_application, sending_facility,
                        message_type, version, raw, status, error, ack, attempts, received_at, processed_at, content_hash)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $12, $12, $13)
                     ON CONFLICT DO NOTHING",
                )
                .bind(&arrival.id).bind(&arrival.organization_id).bind(&arrival.control_id)
                .bind(&arrival.sending_application).bind(&arrival.sending_facility)
                .bind(&arrival.message_type).bind(&arrival.version).bind(&arrival.raw)
                .bind(&outcome.status).bind(&outcome.error).bind(&outcome.ack).bind(now).bind(&arrival.content_hash)
                .execute(&mut *tx).await?.rows_affected();
                // Archived before (a redelivery, or the same message earlier in this batch):
                // nothing of it is written again.
                replays.push(inserted == 0);
                if inserted == 0 {
                    continue;
                }
                if let Some(patient) = &effects.patient {
                    let new_patient = new_id("pat");
                    let row = upsert_patient_in!(
                        tx,
                        arrival.organization_id.as_str(),
                        patient,
                        now,
                        &new_patient
                    );
                    if let Some((appointment, trigger)) = &effects.appointment {
                        let new_appointment = new_id("apt");
                        upsert_appointment_in!(
                            tx,
                            arrival.organization_id.as_str(),
                            row.id.as_str(),
                            appointment,
                            trigger.as_str(),
                            now,
                            &new_appointment
                        );
                    }
                }
            }
            tx.commit().await?;
            replays
        });
        let mut answers = Vec::with_capacity(records.len());
        for (record, replay) in records.iter().zip(replays) {
            if !replay {
                answers.push(None);
                continue;
            }
            let arrival = &record.arrival;
            let row: Hl7Row = on_db!(self.db(), |pool| {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM hl7_messages WHERE organization_id = $1 AND sending_application = $2
                   AND sending_facility = $3 AND control_id = $4 AND content_hash = $5"
            )))
            .bind(&arrival.organization_id).bind(&arrival.sending_application)
            .bind(&arrival.sending_facility).bind(&arrival.control_id).bind(&arrival.content_hash)
            .fetch_one(pool).await
            })?;
            answers.push(Some(row));
        }
        Ok(answers)
    }

    pub async fn get(self, id: &str) -> Result<Hl7Row> {
        Ok(on_db!(self.db(), |pool| sqlx::query_as(
            sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM hl7_messages WHERE id = $1"))
        )
        .bind(id)
        .fetch_one(pool)
        .await)?)
    }

    /// One archived message of the organization, if it is theirs.
    pub async fn of_organization(self, organization_id: &str, id: &str) -> Result<Option<Hl7Row>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_as(
            sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM hl7_messages WHERE id = $1 AND organization_id = $2"
            ))
        )
        .bind(id)
        .bind(organization_id)
        .fetch_optional(pool)
        .await)?)
    }

    /// A page of the organization's archive, newest first: by status, message type (`SIU^S12`,
    /// or a prefix such as `SIU`), control id and receipt time, after the keyset `after`
    /// (`(received_at, id)` of the previous page's last row).
    #[allow(clippy::too_many_arguments)]
    pub async fn page(
        self,
        organization_id: &str,
        status: Option<&str>,
        message_type: Option<&str>,
        control_id: Option<&str>,
        since: Option<i64>,
        until: Option<i64>,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<Hl7Row>> {
        let (after_at, after_id) = after.map_or((None, None), |(at, id)| (Some(at), Some(id)));
        let type_prefix = message_type.map(|t| format!("{t}%"));
        Ok(on_db!(self.db(), |pool| sqlx::query_as(
            sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM hl7_messages WHERE organization_id = $1
                   AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR message_type LIKE $3)
                   AND ($4 IS NULL OR control_id = $4)
                   AND received_at >= $5 AND received_at < $6
                   AND ($7 IS NULL OR received_at < $7 OR (received_at = $7 AND id < $8))
                 ORDER BY received_at DESC, id DESC LIMIT $9"
            ))
        )
        .bind(organization_id)
        .bind(status)
        .bind(type_prefix.as_deref())
        .bind(control_id)
        .bind(since.unwrap_or(0))
        .bind(until.unwrap_or(i64::MAX))
        .bind(after_at)
        .bind(after_id.as_deref())
        .bind(limit)
        .fetch_all(pool)
        .await)?)
    }

    /// Records the outcome and the ACK sent.
    pub async fn finish(
        self,
        id: &str,
        status: &str,
        error: Option<&str>,
        ack: &str,
    ) -> Result<()> {
        on_db!(self.db(), |pool| {
            sqlx::query(
            "UPDATE hl7_messages SET status = $2, error = $3, ack = $4, attempts = attempts + 1, processed_at = $5
             WHERE id = $1",
        )
        .bind(id).bind(status).bind(error).bind(ack).bind(now_ms())
        .execute(pool).await.map(|_| ())
        })?;
        Ok(())
    }

    /// Archived messages in a status (`error`, `rejected`, ...), oldest first.
    pub async fn by_status(self, statuses: &[&str], limit: i64) -> Result<Vec<Hl7Row>> {
        let mut rows = Vec::new();
        for status in statuses {
            let mut some: Vec<Hl7Row> = on_db!(self.db(), |pool| {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM hl7_messages WHERE status = $1 ORDER BY received_at, id LIMIT $2"
            )))
            .bind(*status).bind(limit).fetch_all(pool).await
            })?;
            rows.append(&mut some);
        }
        Ok(rows)
    }

    /// Archives something that is not even a message (no readable header): kept, rejected.
    pub async fn archive_unparsable(
        self,
        organization_id: &str,
        sealed: impl FnOnce(&str) -> Vec<u8>,
        error: &str,
        ack: &str,
    ) -> Result<String> {
        let id = new_id("hl7");
        let raw = sealed(&id);
        let now = now_ms();
        on_db!(self.db(), |pool| {
            sqlx::query(
            "INSERT INTO hl7_messages (id, organization_id, raw, status, error, ack, attempts, received_at, processed_at)
             VALUES ($1, $2, $3, 'rejected', $4, $5, 1, $6, $6)",
        )
        .bind(&id).bind(organization_id).bind(raw).bind(error).bind(ack).bind(now)
        .execute(pool).await.map(|_| ())
        })?;
        Ok(id)
    }
}
