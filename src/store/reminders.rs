//! Reminder touches (planned once per appointment, rule, touch and start; sent at most once),
//! the appointments planning reads, patient answers, leases for scheduled runs, and campaign
//! targets.

use super::{Reminders, Result, new_id, now_ms, on_db};
use crate::domain::AppointmentStatus;

/// An appointment as the planner sees it, with what it needs of the patient.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlanRow {
    pub id: String,
    pub organization_id: String,
    pub patient_id: String,
    pub start_at: i64,
    pub status: String,
    pub appointment_type: Option<String>,
    pub location: Option<String>,
    pub location_code: Option<String>,
    pub provider_id: Option<String>,
    pub provider_name: Option<String>,
    pub patient_time_zone: Option<String>,
    /// When the appointment was last written (store time, unix ms).
    pub updated_at: i64,
}

/// Most start-time ranges of each kind one planning query names.
pub const MAX_RANGES: usize = 32;

/// `ranges` (sorted), the ones past [`MAX_RANGES`] joined into the last.
fn at_most(ranges: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = ranges.iter().take(MAX_RANGES).copied().collect();
    if let (Some(last), Some(end)) = (out.last_mut(), ranges.iter().map(|r| r.1).max()) {
        last.1 = last.1.max(end);
    }
    out
}

/// `a.start_at` inside any of `ranges`, as `(FALSE OR …)`.
fn push_ranges<DB: sqlx::Database>(qb: &mut sqlx::QueryBuilder<DB>, ranges: &[(i64, i64)])
where
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    qb.push("(FALSE");
    for (lo, hi) in ranges {
        qb.push(" OR (a.start_at >= ");
        qb.push_bind(*lo);
        qb.push(" AND a.start_at < ");
        qb.push_bind(*hi);
        qb.push(")");
    }
    qb.push(")");
}

/// The columns of [`PlanRow`], from `appointments a JOIN patients p`.
const PLAN_COLUMNS: &str = "a.id, a.organization_id, a.patient_id, a.start_at, a.status, a.appointment_type, a.location,
    a.location_code, a.provider_id, a.provider_name, p.time_zone AS patient_time_zone, a.updated_at";

/// A touch to record.
#[derive(Debug, Clone)]
pub struct NewTouch {
    pub organization_id: String,
    pub appointment_id: String,
    pub patient_id: String,
    pub rule_id: String,
    pub touch_id: String,
    pub appointment_start: i64,
    pub due_at: i64,
    pub status: &'static str,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct TouchRow {
    pub id: String,
    pub organization_id: String,
    pub appointment_id: String,
    pub patient_id: String,
    pub rule_id: String,
    pub touch_id: String,
    pub appointment_start: i64,
    pub due_at: i64,
    pub status: String,
    pub reason: Option<String>,
    pub channel: Option<String>,
    pub message_id: Option<String>,
    pub updated_at: i64,
}

const TOUCH_COLUMNS: &str = "id, organization_id, appointment_id, patient_id, rule_id, touch_id, appointment_start, due_at, status, reason, channel, message_id, updated_at";

/// `('booked')`: the stored names of the appointment statuses that get reminders
/// (`AppointmentStatus::gets_reminders`), as an SQL list. Our own names only.
pub(super) fn reminded_sql() -> String {
    let names: Vec<String> = AppointmentStatus::ALL
        .into_iter()
        .filter(|s| s.gets_reminders())
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!("({})", names.join(", "))
}

/// Why a planned touch of an appointment whose status stopped reminders is cancelled:
/// `AppointmentStatus::reminder_stop_reason`, as SQL `WHEN` arms on `a.status`.
fn stop_reason_sql() -> String {
    AppointmentStatus::ALL
        .into_iter()
        .filter_map(|s| {
            s.reminder_stop_reason()
                .map(|reason| format!("WHEN a.status = '{}' THEN '{reason}' ", s.as_str()))
        })
        .collect()
}

/// PostgreSQL: the touches as one array per column, `UNNEST`ed into the table, 20,000 rows per
/// statement in one transaction. Binding each value as its own parameter (the SQLite path)
/// caps a statement at 5,000 rows and makes the server parse and plan 65,000 parameters per
/// statement; ten arrays are one parameter each.
async fn insert_touches_unnest(
    pool: &sqlx::PgPool,
    touches: &[NewTouch],
    now: i64,
) -> std::result::Result<u64, sqlx::Error> {
    const ROWS: usize = 20_000;
    let mut tx = pool.begin().await?;
    let mut inserted = 0;
    for chunk in touches.chunks(ROWS) {
        let mut ids = Vec::with_capacity(chunk.len());
        let mut organizations = Vec::with_capacity(chunk.len());
        let mut appointments = Vec::with_capacity(chunk.len());
        let mut patients = Vec::with_capacity(chunk.len());
        let mut rules = Vec::with_capacity(chunk.len());
        let mut touch_ids = Vec::with_capacity(chunk.len());
        let mut starts = Vec::with_capacity(chunk.len());
        let mut dues = Vec::with_capacity(chunk.len());
        let mut statuses = Vec::with_capacity(chunk.len());
        let mut reasons = Vec::with_capacity(chunk.len());
        for t in chunk {
            ids.push(new_id("tch"));
            organizations.push(t.organization_id.as_str());
            appointments.push(t.appointment_id.as_str());
            patients.push(t.patient_id.as_str());
            rules.push(t.rule_id.as_str());
            touch_ids.push(t.touch_id.as_str());
            starts.push(t.appointment_start);
            dues.push(t.due_at);
            statuses.push(t.status);
            reasons.push(t.reason.as_deref());
        }
        inserted += sqlx::query(
            "INSERT INTO reminder_touches (id, organization_id, appointment_id, patient_id, rule_id, touch_id,
                appointment_start, due_at, status, reason, created_at, updated_at)
             SELECT id, organization_id, appointment_id, patient_id, rule_id, touch_id,
                appointment_start, due_at, status, reason, $11, $11
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::int8[], $8::int8[], $9::text[], $10::text[])
                AS t(id, organization_id, appointment_id, patient_id, rule_id, touch_id,
                     appointment_start, due_at, status, reason)
             ON CONFLICT (appointment_id, rule_id, touch_id, appointment_start) DO NOTHING",
        )
        .bind(&ids)
        .bind(&organizations)
        .bind(&appointments)
        .bind(&patients)
        .bind(&rules)
        .bind(&touch_ids)
        .bind(&starts)
        .bind(&dues)
        .bind(&statuses)
        .bind(&reasons)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(inserted)
}

impl Reminders<'_> {
    /// One organization's appointments that may need (new) touches: starting inside one of
    /// `possible` (`[start, end)` ranges, unix ms) and, when `entered` is given (an incremental
    /// run), either changed since `changed_since` (store time) or starting inside one of
    /// `entered` (their touch came into the recording window since the last run). At most
    /// [`MAX_RANGES`] of each are used: further ones are joined into the last.
    pub async fn appointments_to_plan(
        self,
        organization_id: &str,
        possible: &[(i64, i64)],
        changed_since: i64,
        entered: Option<&[(i64, i64)]>,
    ) -> Result<Vec<PlanRow>> {
        let possible = at_most(possible);
        let entered = entered.map(at_most);
        let reminded = reminded_sql();
        let rows = on_db!(self.db(), |pool| {
            let mut qb = sqlx::QueryBuilder::new(format!(
                "SELECT {PLAN_COLUMNS} FROM appointments a JOIN patients p ON p.id = a.patient_id
                 WHERE a.status IN {reminded} AND a.organization_id = "
            ));
            qb.push_bind(organization_id.to_string());
            // The whole span first, so both databases read it from the start-time index.
            qb.push(" AND a.start_at >= ");
            qb.push_bind(possible.first().map_or(0, |r| r.0));
            qb.push(" AND a.start_at < ");
            qb.push_bind(possible.iter().map(|r| r.1).max().unwrap_or(0));
            qb.push(" AND ");
            push_ranges(&mut qb, &possible);
            if let Some(entered) = &entered {
                qb.push(" AND (a.updated_at >= ");
                qb.push_bind(changed_since);
                qb.push(" OR ");
                push_ranges(&mut qb, entered);
                qb.push(")");
            }
            qb.build_query_as().fetch_all(pool).await
        })?;
        Ok(rows)
    }

    /// The planner's view of one appointment, if it is one that gets reminders.
    pub async fn plan_row(self, appointment_id: &str) -> Result<Option<PlanRow>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {PLAN_COLUMNS}
             FROM appointments a JOIN patients p ON p.id = a.patient_id
             WHERE a.id = $1 AND a.status IN {reminded}",
            reminded = reminded_sql()
        ));
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(appointment_id)
            .fetch_optional(pool)
            .await)?)
    }

    /// Records touches that are not there yet, in one transaction of multi-row statements.
    /// Returns how many were new.
    pub async fn insert_touches(self, touches: &[NewTouch]) -> Result<u64> {
        let now = now_ms();
        if let super::Db::Postgres(pool) = self.db() {
            return Ok(insert_touches_unnest(pool, touches, now).await?);
        }
        let chunk_size = self.db().rows_per_statement(12);
        let inserted = on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let mut inserted = 0;
            for chunk in touches.chunks(chunk_size) {
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO reminder_touches (id, organization_id, appointment_id, patient_id, rule_id, touch_id,
                        appointment_start, due_at, status, reason, created_at, updated_at) ",
                );
                qb.push_values(chunk, |mut row, t| {
                    row.push_bind(new_id("tch"))
                        .push_bind(t.organization_id.clone())
                        .push_bind(t.appointment_id.clone())
                        .push_bind(t.patient_id.clone())
                        .push_bind(t.rule_id.clone())
                        .push_bind(t.touch_id.clone())
                        .push_bind(t.appointment_start)
                        .push_bind(t.due_at)
                        .push_bind(t.status)
                        .push_bind(t.reason.clone())
                        .push_bind(now)
                        .push_bind(now);
                });
                qb.push(" ON CONFLICT (appointment_id, rule_id, touch_id, appointment_start) DO NOTHING");
                inserted += qb.build().execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
            inserted
        });
        Ok(inserted)
    }

    /// Cancels planned touches whose appointment (changed since `changed_since`) moved, was
    /// cancelled or was a no-show. Returns how many.
    pub async fn cancel_stale_touches(self, changed_since: i64) -> Result<u64> {
        let now = now_ms();
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE reminder_touches SET status = 'cancelled', updated_at = $1,
                reason = (SELECT CASE WHEN a.start_at <> reminder_touches.appointment_start THEN 'appointment rescheduled'
                                      {stop_reasons}ELSE 'appointment ' || a.status END
                          FROM appointments a WHERE a.id = reminder_touches.appointment_id)
             WHERE status = 'planned' AND appointment_id IN (
                SELECT a.id FROM appointments a JOIN reminder_touches t ON t.appointment_id = a.id AND t.status = 'planned'
                WHERE a.updated_at >= $2 AND (a.start_at <> t.appointment_start OR a.status NOT IN {reminded}))
               AND EXISTS (SELECT 1 FROM appointments a WHERE a.id = reminder_touches.appointment_id
                  AND (a.start_at <> reminder_touches.appointment_start OR a.status NOT IN {reminded}))",
            reminded = reminded_sql(),
            stop_reasons = stop_reason_sql(),
        ));
        Ok(on_db!(self.db(), |pool| sqlx::query(sql)
            .bind(now)
            .bind(changed_since)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?)
    }

    /// Forgets a named cursor (the next reminder run plans everything again).
    pub async fn reset_cursor(self, name: &str) -> Result<()> {
        on_db!(self.db(), |pool| sqlx::query(
            "DELETE FROM cursors WHERE name = $1"
        )
        .bind(name)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Planned touches due by `now`, oldest first.
    pub async fn due_touches(self, now: i64, limit: i64) -> Result<Vec<TouchRow>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {TOUCH_COLUMNS} FROM reminder_touches WHERE status = 'planned' AND due_at <= $1 ORDER BY due_at, id LIMIT $2"
        ));
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await)?)
    }

    /// Ends a touch: `sent` (with its channel and message) or `skipped` (with a reason). Only a
    /// planned touch moves; returns whether this call moved it.
    pub async fn finish_touch(
        self,
        id: &str,
        status: &str,
        reason: Option<&str>,
        channel: Option<&str>,
        message_id: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let row: Option<(String,)> = on_db!(self.db(), |pool| {
            sqlx::query_as(
            "UPDATE reminder_touches SET status = $2, reason = $3, channel = $4, message_id = $5, updated_at = $6
             WHERE id = $1 AND status = 'planned' RETURNING id",
        ).bind(id).bind(status).bind(reason).bind(channel).bind(message_id).bind(now).fetch_optional(pool).await
        })?;
        Ok(row.is_some())
    }

    /// Every touch of an appointment (the plan and its skips), in due order.
    pub async fn touches_of(self, appointment_id: &str) -> Result<Vec<TouchRow>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {TOUCH_COLUMNS} FROM reminder_touches WHERE appointment_id = $1 ORDER BY due_at, touch_id"
        ));
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(appointment_id)
            .fetch_all(pool)
            .await)?)
    }

    /// Reminders sent to a patient since `since` (frequency caps).
    pub async fn sent_since(self, patient_id: &str, since: i64) -> Result<i64> {
        let row: (i64,) = on_db!(self.db(), |pool| {
            sqlx::query_as(
            "SELECT COUNT(*) FROM reminder_touches WHERE patient_id = $1 AND status = 'sent' AND updated_at >= $2",
        ).bind(patient_id).bind(since).fetch_one(pool).await
        })?;
        Ok(row.0)
    }

    /// The appointment a patient's latest reminder was about, if it is still ahead.
    pub async fn latest_reminded_appointment(
        self,
        patient_id: &str,
        now: i64,
    ) -> Result<Option<String>> {
        let row: Option<(String,)> = on_db!(self.db(), |pool| {
            sqlx::query_as(
            "SELECT t.appointment_id FROM reminder_touches t JOIN appointments a ON a.id = t.appointment_id
             WHERE t.patient_id = $1 AND t.status = 'sent' AND a.start_at > $2
             ORDER BY t.updated_at DESC LIMIT 1",
        ).bind(patient_id).bind(now).fetch_optional(pool).await
        })?;
        Ok(row.map(|(id,)| id))
    }

    /// Records a patient's answer on the appointment (never its status) and, for cancel or
    /// reschedule, a request for staff.
    pub async fn record_confirmation(
        self,
        organization_id: &str,
        appointment_id: &str,
        patient_id: &str,
        answer: &str,
        inbound_item_id: Option<&str>,
    ) -> Result<()> {
        let now = now_ms();
        on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "UPDATE appointments SET confirmation = $2, confirmation_at = $3 WHERE id = $1",
            )
            .bind(appointment_id)
            .bind(answer)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if answer != "confirmed" {
                let kind = if answer == "cancel_requested" {
                    "cancel"
                } else {
                    "reschedule"
                };
                sqlx::query(
                    "INSERT INTO cancellation_requests (id, organization_id, appointment_id, patient_id, kind, inbound_item_id, status, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, 'open', $7)",
                ).bind(new_id("req")).bind(organization_id).bind(appointment_id).bind(patient_id).bind(kind)
                .bind(inbound_item_id).bind(now).execute(&mut *tx).await?;
            }
            let kind = match answer {
                "confirmed" => "appointment.confirmed",
                "cancel_requested" => "appointment.cancel_requested",
                _ => "appointment.reschedule_requested",
            };
            let payload = serde_json::json!({"appointment_id": appointment_id, "patient_id": patient_id, "inbound_item_id": inbound_item_id}).to_string();
            sqlx::query("INSERT INTO events (organization_id, kind, subject_id, payload, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(organization_id).bind(kind).bind(appointment_id).bind(payload).bind(now).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Rules set through the API for an organization (JSON definitions).
    pub async fn rules(self, organization_id: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT definition FROM reminder_rules WHERE organization_id = $1 ORDER BY id",
        )
        .bind(organization_id)
        .fetch_all(pool)
        .await)?;
        Ok(rows.into_iter().map(|(d,)| d).collect())
    }

    pub async fn put_rule(self, organization_id: &str, id: &str, definition: &str) -> Result<()> {
        let now = now_ms();
        on_db!(self.db(), |pool| {
            sqlx::query(
            "INSERT INTO reminder_rules (organization_id, id, definition, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (organization_id, id) DO UPDATE SET definition = excluded.definition, updated_at = excluded.updated_at",
        ).bind(organization_id).bind(id).bind(definition).bind(now).execute(pool).await.map(|_| ())
        })?;
        Ok(())
    }

    /// Benchmarks and load tests: `starts.len()` patients (one SMS number each, `+1555…`) with one
    /// booked appointment each at the given start times, in transactions of 1,000.
    #[doc(hidden)]
    pub async fn seed_appointments(
        self,
        organization_id: &str,
        prefix: &str,
        starts: &[i64],
    ) -> Result<()> {
        let now = now_ms();
        for (chunk_index, chunk) in starts.chunks(1000).enumerate() {
            let rows: Vec<(String, String, i64, usize)> = chunk
                .iter()
                .enumerate()
                .map(|(i, start)| (new_id("pat"), new_id("apt"), *start, chunk_index * 1000 + i))
                .collect();
            on_db!(self.db(), |pool| {
                let mut tx = pool.begin().await?;
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO patients (id, organization_id, external_id, family_name, given_name, created_at, updated_at) ",
                );
                qb.push_values(&rows, |mut b, (pid, _, _, n)| {
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
                qb.push_values(&rows, |mut b, (pid, _, _, n)| {
                    // Valid US numbers (415 area, exchanges 200–999): outreach passes over invalid ones.
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
                    "INSERT INTO appointments (id, organization_id, patient_id, filler_id, start_at, status, source, created_at, updated_at) ",
                );
                qb.push_values(&rows, |mut b, (pid, aid, start, n)| {
                    b.push_bind(aid.clone())
                        .push_bind(organization_id.to_string())
                        .push_bind(pid.clone())
                        .push_bind(format!("{prefix}-{n}"))
                        .push_bind(*start)
                        .push_bind(AppointmentStatus::Booked.as_str())
                        .push_bind("api")
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

impl Reminders<'_> {
    /// The organization's reminders that reached a final status since `since` (unix ms):
    /// `(status, reason, count)` ordered by status and reason (the console's summary).
    pub async fn outcomes_since(
        self,
        organization_id: &str,
        since: i64,
    ) -> Result<Vec<(String, Option<String>, i64)>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT status, reason, COUNT(*) FROM reminder_touches
             WHERE organization_id = $1 AND status <> 'planned' AND updated_at >= $2
             GROUP BY status, reason ORDER BY status, reason"
        )
        .bind(organization_id)
        .bind(since)
        .fetch_all(pool)
        .await)?)
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::AppointmentStatus;

    const SQLITE: &str = include_str!("../../migrations/sqlite/0009_appointment_status.sql");
    const POSTGRES: &str = include_str!("../../migrations/postgres/0009_appointment_status.sql");

    /// Migration 0009 rewrites stored free text exactly as `AppointmentStatus::from_stored`
    /// reads it (run here on SQLite; the PostgreSQL file is the same statement).
    #[tokio::test]
    async fn migration_0009_reads_legacy_statuses_like_the_domain() {
        assert_eq!(SQLITE, POSTGRES);
        let pool = sqlx::SqlitePool::connect("sqlite::memory:")
            .await
            .expect("sqlite");
        sqlx::query("CREATE TABLE appointments (id INTEGER PRIMARY KEY, status TEXT NOT NULL)")
            .execute(&pool)
            .await
            .expect("table");
        let legacy = [
            "booked",
            "Booked",
            "pending",
            "waitlist",
            "overbook",
            "confirmed",
            "scheduled",
            "started",
            "arrived",
            "complete",
            "Completed",
            "fulfilled",
            "cancelled",
            "canceled",
            "deleted",
            "blocked",
            "noshow",
            "no-show",
            "no_show",
            "dc",
            "DC",
            "discontinued",
            " Dc ",
            "postponed",
            "site-code-7",
            "",
        ];
        for (i, status) in legacy.iter().enumerate() {
            sqlx::query("INSERT INTO appointments (id, status) VALUES ($1, $2)")
                .bind(i as i64)
                .bind(*status)
                .execute(&pool)
                .await
                .expect("row");
        }
        sqlx::raw_sql(SQLITE)
            .execute(&pool)
            .await
            .expect("migration");
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, status FROM appointments ORDER BY id")
                .fetch_all(&pool)
                .await
                .expect("rows");
        for (id, status) in rows {
            let before = legacy[id as usize];
            assert_eq!(
                status,
                AppointmentStatus::from_stored(before).as_str(),
                "{before:?}"
            );
        }
    }

    #[test]
    fn only_booked_is_reminded_and_every_other_status_has_a_reason_in_sql() {
        assert_eq!(super::reminded_sql(), "('booked')");
        let reasons = super::stop_reason_sql();
        for status in AppointmentStatus::ALL
            .into_iter()
            .filter(|s| !s.gets_reminders())
        {
            assert!(reasons.contains(&format!("WHEN a.status = '{}'", status.as_str())));
        }
    }
}
