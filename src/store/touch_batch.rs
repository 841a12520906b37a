//! The reads and the write behind sending a batch of due reminder touches: appointments,
//! patients, contact points, open threads, consents, frequency-cap counts and messages already
//! accepted for a touch, each loaded for the whole batch in one query (per organization where
//! the table is organization-scoped), and the batch's outcomes recorded in one transaction.
//! The send-time checks themselves stay with the caller (`reminders`), and what consents
//! decide with `crate::domain::consent`: the store only loads entries.

use std::collections::{HashMap, HashSet};

use super::{AppointmentRow, ContactPointRow, PatientRow, Reminders, Result, on_db};

/// Ids per `IN (...)` list: well under SQLite's 32,766 and PostgreSQL's 65,535 parameters.
pub(super) const IN_CHUNK: usize = 1000;

/// How a touch ends, for [`Store::finish_touches`].
#[derive(Debug, Clone)]
pub struct TouchOutcome {
    pub id: String,
    /// `sent` or `skipped`.
    pub status: &'static str,
    pub reason: Option<String>,
    pub channel: Option<String>,
    pub message_id: Option<String>,
}

/// A message already accepted under a touch's idempotency key (`touch:<id>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedTouch {
    pub message_id: String,
    /// The channel of its delivery (`None` only if the message has no delivery).
    pub channel: Option<String>,
}

/// Binds `values` as a comma-separated list (the inside of an `IN (...)`).
pub(super) fn push_list<DB>(qb: &mut sqlx::QueryBuilder<DB>, values: &[String])
where
    DB: sqlx::Database,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let mut list = qb.separated(", ");
    for value in values {
        list.push_bind(value.clone());
    }
}

/// Deduplicated, in first-seen order.
pub(super) fn unique<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut seen = HashSet::new();
    values
        .into_iter()
        .filter(|v| seen.insert(*v))
        .map(str::to_string)
        .collect()
}

impl Reminders<'_> {
    /// Messages already accepted for these touches of one organization (a run that crashed
    /// between accepting and marking the touch), by touch id.
    pub async fn accepted_touches(
        self,
        organization_id: &str,
        touch_ids: &[&str],
    ) -> Result<HashMap<String, AcceptedTouch>> {
        let mut out = HashMap::new();
        for chunk in unique(touch_ids.iter().copied()).chunks(IN_CHUNK) {
            let rows: Vec<(String, String, Option<String>)> = on_db!(self.db(), |pool| {
                let mut qb = sqlx::QueryBuilder::new(
                    "SELECT k.key, k.message_id,
                        (SELECT d.channel FROM deliveries d WHERE d.message_id = k.message_id ORDER BY d.id LIMIT 1)
                     FROM idempotency_keys k WHERE k.organization_id = ",
                );
                qb.push_bind(organization_id.to_string())
                    .push(" AND k.key IN (");
                let mut list = qb.separated(", ");
                for id in chunk {
                    list.push_bind(format!("touch:{id}"));
                }
                qb.push(")");
                qb.build_query_as().fetch_all(pool).await
            })?;
            for (key, message_id, channel) in rows {
                if let Some(id) = key.strip_prefix("touch:") {
                    out.insert(
                        id.to_string(),
                        AcceptedTouch {
                            message_id,
                            channel,
                        },
                    );
                }
            }
        }
        Ok(out)
    }

    /// Appointments by id.
    pub async fn appointments_by_ids(
        self,
        ids: &[&str],
    ) -> Result<HashMap<String, AppointmentRow>> {
        let mut out = HashMap::new();
        for chunk in unique(ids.iter().copied()).chunks(IN_CHUNK) {
            let rows: Vec<AppointmentRow> = on_db!(self.db(), |pool| {
                let mut qb = sqlx::QueryBuilder::new(concat!(
                    "SELECT ",
                    appointment_columns!(),
                    " FROM appointments WHERE id IN ("
                ));
                push_list(&mut qb, chunk);
                qb.push(")");
                qb.build_query_as().fetch_all(pool).await
            })?;
            out.extend(rows.into_iter().map(|r| (r.id.clone(), r)));
        }
        Ok(out)
    }

    /// Patients by id (callers check the organization).
    pub async fn patients_by_ids(self, ids: &[&str]) -> Result<HashMap<String, PatientRow>> {
        let mut out = HashMap::new();
        for chunk in unique(ids.iter().copied()).chunks(IN_CHUNK) {
            let rows: Vec<PatientRow> = on_db!(self.db(), |pool| {
                let mut qb = sqlx::QueryBuilder::new(concat!(
                    "SELECT ",
                    patient_columns!(),
                    " FROM patients WHERE id IN ("
                ));
                push_list(&mut qb, chunk);
                qb.push(")");
                qb.build_query_as().fetch_all(pool).await
            })?;
            out.extend(rows.into_iter().map(|r| (r.id.clone(), r)));
        }
        Ok(out)
    }

    /// Contact points of each patient, by rank then id (as [`Store::contact_points`]).
    pub async fn contact_points_by_patient(
        self,
        patient_ids: &[&str],
    ) -> Result<HashMap<String, Vec<ContactPointRow>>> {
        let mut out: HashMap<String, Vec<ContactPointRow>> = HashMap::new();
        for chunk in unique(patient_ids.iter().copied()).chunks(IN_CHUNK) {
            #[derive(sqlx::FromRow)]
            struct Row {
                patient_id: String,
                #[sqlx(flatten)]
                point: ContactPointRow,
            }
            let rows: Vec<Row> = on_db!(self.db(), |pool| {
                let mut qb = sqlx::QueryBuilder::new(
                    "SELECT patient_id, id, system, value, use_code, rank FROM contact_points WHERE patient_id IN (",
                );
                push_list(&mut qb, chunk);
                qb.push(") ORDER BY patient_id, rank, id");
                qb.build_query_as().fetch_all(pool).await
            })?;
            for row in rows {
                out.entry(row.patient_id).or_default().push(row.point);
            }
        }
        Ok(out)
    }

    /// Reminders sent to each patient since `day_since` and since `week_since` (frequency
    /// caps; `week_since <= day_since`). Patients with none are absent.
    pub async fn sent_counts(
        self,
        patient_ids: &[&str],
        day_since: i64,
        week_since: i64,
    ) -> Result<HashMap<String, (i64, i64)>> {
        let mut out = HashMap::new();
        for chunk in unique(patient_ids.iter().copied()).chunks(IN_CHUNK) {
            let rows: Vec<(String, i64, i64)> = on_db!(self.db(), |pool| {
                let mut qb =
                    sqlx::QueryBuilder::new("SELECT patient_id, SUM(CASE WHEN updated_at >= ");
                qb.push_bind(day_since)
                    .push(" THEN 1 ELSE 0 END), COUNT(*) FROM reminder_touches WHERE status = 'sent' AND updated_at >= ")
                    .push_bind(week_since)
                    .push(" AND patient_id IN (");
                push_list(&mut qb, chunk);
                qb.push(") GROUP BY patient_id");
                qb.build_query_as().fetch_all(pool).await
            })?;
            out.extend(rows.into_iter().map(|(p, day, week)| (p, (day, week))));
        }
        Ok(out)
    }

    /// Each patient's open thread in one organization (the most recently updated, as
    /// [`Store::open_thread_of`]).
    pub async fn open_threads_of(
        self,
        organization_id: &str,
        patient_ids: &[&str],
    ) -> Result<HashMap<String, String>> {
        let mut newest: HashMap<String, (i64, String)> = HashMap::new();
        for chunk in unique(patient_ids.iter().copied()).chunks(IN_CHUNK) {
            let rows: Vec<(String, String, i64)> = on_db!(self.db(), |pool| {
                let mut qb = sqlx::QueryBuilder::new(
                    "SELECT patient_id, id, updated_at FROM threads WHERE organization_id = ",
                );
                qb.push_bind(organization_id.to_string())
                    .push(" AND status = 'open' AND patient_id IN (");
                push_list(&mut qb, chunk);
                qb.push(")");
                qb.build_query_as().fetch_all(pool).await
            })?;
            for (patient, id, updated_at) in rows {
                let newer = newest
                    .get(&patient)
                    .is_none_or(|(at, seen)| (updated_at, &id) > (*at, seen));
                if newer {
                    newest.insert(patient, (updated_at, id));
                }
            }
        }
        Ok(newest
            .into_iter()
            .map(|(patient, (_, id))| (patient, id))
            .collect())
    }

    /// Ends many touches in one multi-row statement per chunk of 1,000, one transaction; only
    /// planned touches move (as [`Store::finish_touch`]). Returns the ids this call moved.
    pub async fn finish_touches(
        self,
        outcomes: &[TouchOutcome],
        now: i64,
    ) -> Result<HashSet<String>> {
        if outcomes.is_empty() {
            return Ok(HashSet::new());
        }
        let moved = on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let mut moved = HashSet::new();
            for chunk in outcomes.chunks(IN_CHUNK) {
                // VALUES columns are column1..column5 on both databases.
                let mut qb = sqlx::QueryBuilder::new(
                    "UPDATE reminder_touches SET status = v.column2, reason = v.column3, channel = v.column4,
                        message_id = v.column5, updated_at = ",
                );
                qb.push_bind(now).push(" FROM (");
                qb.push_values(chunk, |mut row, o| {
                    row.push_bind(o.id.clone())
                        .push_bind(o.status)
                        .push_bind(o.reason.clone())
                        .push_bind(o.channel.clone())
                        .push_bind(o.message_id.clone());
                });
                qb.push(") AS v WHERE reminder_touches.id = v.column1 AND reminder_touches.status = 'planned' RETURNING id");
                let rows: Vec<(String,)> = qb.build_query_as().fetch_all(&mut *tx).await?;
                moved.extend(rows.into_iter().map(|(id,)| id));
            }
            tx.commit().await?;
            moved
        });
        Ok(moved)
    }
}
