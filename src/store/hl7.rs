//! The HL7 archive: every message as received (sealed), with its outcome and ACK, keyed by
//! (organization, sending application, sending facility, MSH-10, content hash), so a
//! redelivery (same control id, same bytes) is answered with the same ACK and has no second
//! effect, while a different message that reuses a control id (engines do, after a reset) is
//! still processed rather than silently dropped.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use super::{
    AppointmentInput, ConsentInput, ContactPointInput, Db, Hl7, PatientInput, Result, StoreError,
    new_id, now_ms, on_db,
};

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
    /// The identifier `(authority, value)` the patient is keyed by. When set, the batch
    /// writes the patient under the external id that identifier's holder is known by now
    /// (a merged-away holder's survivor), if one holds it; else under `patient.external_id`.
    pub patient_key: Option<(String, String)>,
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

/// Bind parameters one multi-row statement may carry (SQLite allows 32,766, PostgreSQL 65,535).
const BIND_LIMIT: usize = 30_000;

/// Rows of `params` bind parameters each that fit in one statement.
fn rows_per_statement(params: usize) -> usize {
    (BIND_LIMIT / params).max(1)
}

/// The rows a batch of applied messages (in arrival order) writes, collapsed as applying them
/// one after another would leave them.
pub(super) struct Plan<'a> {
    /// Per (organization, external id), in order of first appearance: a new id (used if the
    /// patient does not exist yet), the organization and the last message's demographics.
    patients: Vec<(String, &'a str, &'a PatientInput)>,
    /// Per patient whose contact points are replaced: the last message that sends them.
    contact_points: Vec<&'a Hl7Record>,
    /// Per (organization, filler id): a new id and the last message for that appointment.
    appointments: Vec<(String, &'a Hl7Record)>,
}

impl<'a> Plan<'a> {
    pub(super) fn of(applied: &[&'a Hl7Record]) -> Self {
        let mut plan = Plan {
            patients: Vec::new(),
            contact_points: Vec::new(),
            appointments: Vec::new(),
        };
        let mut patient_at: HashMap<(&str, &str), usize> = HashMap::new();
        let mut points_at: HashMap<(&str, &str), usize> = HashMap::new();
        let mut appointment_at: HashMap<(&str, &str), usize> = HashMap::new();
        for &r in applied {
            let Some(p) = &r.effects.patient else {
                continue;
            };
            let organization_id = r.arrival.organization_id.as_str();
            let key = (organization_id, p.external_id.as_str());
            match patient_at.get(&key) {
                Some(&i) => plan.patients[i].2 = p,
                None => {
                    patient_at.insert(key, plan.patients.len());
                    plan.patients.push((new_id("pat"), organization_id, p));
                }
            }
            if p.contact_points.is_some() {
                match points_at.get(&key) {
                    Some(&i) => plan.contact_points[i] = r,
                    None => {
                        points_at.insert(key, plan.contact_points.len());
                        plan.contact_points.push(r);
                    }
                }
            }
            if let Some((a, _)) = &r.effects.appointment {
                let key = (organization_id, a.filler_id.as_str());
                match appointment_at.get(&key) {
                    Some(&i) => plan.appointments[i].1 = r,
                    None => {
                        appointment_at.insert(key, plan.appointments.len());
                        plan.appointments.push((new_id("apt"), r));
                    }
                }
            }
        }
        plan
    }

    /// The patients in key order (the upsert's lock order).
    pub(super) fn patient_order(&self) -> Vec<&(String, &'a str, &'a PatientInput)> {
        let mut order: Vec<_> = self.patients.iter().collect();
        order.sort_by(|a, b| (a.1, &a.2.external_id).cmp(&(b.1, &b.2.external_id)));
        order
    }

    /// The id of each patient of the plan, from the upsert's `(id, organization, external
    /// id)` rows.
    pub(super) fn patient_ids(
        &self,
        returned: Vec<(String, String, String)>,
    ) -> HashMap<(&'a str, &'a str), String> {
        let mut ids = HashMap::with_capacity(returned.len());
        for (id, organization_id, external_id) in returned {
            let key = self
                .patients
                .iter()
                .find(|(_, o, p)| *o == organization_id && p.external_id == external_id)
                .map(|(_, o, p)| (*o, p.external_id.as_str()));
            if let Some(key) = key {
                ids.insert(key, id);
            }
        }
        ids
    }
}

/// The archive's unique key of a message.
pub(super) fn archive_key(r: &Hl7Record) -> (&str, &str, &str, Option<&str>, &str) {
    let a = &r.arrival;
    (
        a.organization_id.as_str(),
        a.sending_application.as_str(),
        a.sending_facility.as_str(),
        a.control_id.as_deref(),
        a.content_hash.as_str(),
    )
}

/// The external id each key identifier's holder is known by now (the survivor's, for a
/// merged-away holder): `(organization, authority, identifier, external id)` per key held.
/// One branch per key, each naming the whole primary key, so every branch is a unique index
/// lookup whatever the planner's statistics say. (An OR of the keys let PostgreSQL, with
/// statistics from when the table was small, scan every identifier of the organization and
/// authority and filter them: 2-3 ms a batch, growing with the table.)
pub(super) fn push_holders<DB>(qb: &mut sqlx::QueryBuilder<DB>, keys: &[(&str, &str, &str)])
where
    DB: sqlx::Database,
    for<'t> &'t str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    for (n, (organization_id, authority, value)) in keys.iter().enumerate() {
        if n > 0 {
            qb.push(" UNION ALL ");
        }
        qb.push(
            "SELECT i.organization_id, i.assigning_authority, i.identifier,
                COALESCE(m.external_id, p.external_id)
             FROM patient_identifiers i
             JOIN patients p ON p.id = i.patient_id
             LEFT JOIN patients m ON m.id = p.merged_into
             WHERE i.organization_id = ",
        )
        .push_bind(*organization_id)
        .push(" AND i.assigning_authority = ")
        .push_bind(*authority)
        .push(" AND i.identifier = ")
        .push_bind(*value);
    }
}

/// The `ON CONFLICT` of the batch's patient upsert (after its rows, on both databases): the
/// last message's values over every column, the row's id, organization and external id back.
pub(super) const PATIENT_UPSERT: &str = " ON CONFLICT (organization_id, external_id) DO UPDATE SET
    family_name = excluded.family_name, given_name = excluded.given_name,
    birth_date = excluded.birth_date, sex = excluded.sex, language = excluded.language,
    time_zone = excluded.time_zone, address = excluded.address, updated_at = excluded.updated_at
 RETURNING id, organization_id, external_id";

/// The `ON CONFLICT` of the batch's appointment upsert: the last message's values and
/// patient, the row's id, organization and filler id back.
pub(super) const APPOINTMENT_UPSERT: &str = " ON CONFLICT (organization_id, filler_id) DO UPDATE SET
    patient_id = excluded.patient_id, placer_id = excluded.placer_id, start_at = excluded.start_at,
    start_offset_minutes = excluded.start_offset_minutes, duration_minutes = excluded.duration_minutes,
    status = excluded.status, appointment_type = excluded.appointment_type, reason = excluded.reason,
    location = excluded.location, location_code = excluded.location_code, provider_id = excluded.provider_id,
    provider_name = excluded.provider_name, source = excluded.source, updated_at = excluded.updated_at
 RETURNING id, organization_id, filler_id";

/// The key identifiers `(organization, authority, identifier)` of a batch's messages, each
/// once, in key order.
pub(super) fn key_identifiers<'r>(fresh: &[&'r Hl7Record]) -> Vec<(&'r str, &'r str, &'r str)> {
    let mut keys: Vec<(&str, &str, &str)> = fresh
        .iter()
        .filter_map(|r| {
            let (authority, value) = r.effects.patient_key.as_ref()?;
            Some((
                r.arrival.organization_id.as_str(),
                authority.as_str(),
                value.as_str(),
            ))
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The external id each key identifier's holder is known by now (the survivor's, for a
/// merged-away holder), keyed by the batch's own keys (borrowed), so each message's lookup
/// copies nothing.
#[derive(Default)]
pub(super) struct Holders<'k>(HashMap<(&'k str, &'k str, &'k str), String>);

impl<'k> Holders<'k> {
    /// A row of the lookup [`push_holders`] made for `keys`.
    pub(super) fn found(
        &mut self,
        keys: &[(&'k str, &'k str, &'k str)],
        key: (&str, &str, &str),
        external_id: String,
    ) {
        if let Some(&key) = keys.iter().find(|k| **k == key) {
            self.0.insert(key, external_id);
        }
    }
}

/// The messages of a batch that were archived now (not redeliveries), in arrival order, each
/// written under the external id its key identifier's holder is known by (when one holds it).
pub(super) fn resolve<'r>(
    fresh: &[&'r Hl7Record],
    inserted: &HashSet<String>,
    holders: &Holders<'_>,
) -> Vec<Cow<'r, Hl7Record>> {
    fresh
        .iter()
        .filter(|r| inserted.contains(&r.arrival.id))
        .map(|&r| {
            let holder = r
                .effects
                .patient_key
                .as_ref()
                .and_then(|(authority, value)| {
                    holders.0.get(&(
                        r.arrival.organization_id.as_str(),
                        authority.as_str(),
                        value.as_str(),
                    ))
                });
            match (holder, &r.effects.patient) {
                (Some(external_id), Some(p)) if *external_id != p.external_id => {
                    let mut r = r.clone();
                    if let Some(p) = r.effects.patient.as_mut() {
                        p.external_id = external_id.clone();
                    }
                    Cow::Owned(r)
                }
                _ => Cow::Borrowed(r),
            }
        })
        .collect()
}

/// An `appointment.changed` payload up to its appointment id's JSON string (`appointment_id`
/// is the first key `serde_json` writes).
pub(super) const EVENT_HEAD: &str = "{\"appointment_id\":";

/// An `appointment.changed` event of the batch: its appointment's organization and filler id
/// (the appointment's row id is known once its upsert returns), and its payload after that id.
pub(super) struct EventWrite<'a> {
    pub(super) organization_id: &'a str,
    pub(super) filler_id: &'a str,
    /// The payload after the appointment id's JSON string ([`EVENT_HEAD`] comes before it).
    pub(super) tail: String,
}

impl EventWrite<'_> {
    /// The payload with the appointment's id: `{"appointment_id": …, "filler_id": …,
    /// "start_at": …, "status": …, "trigger": …}`.
    pub(super) fn payload(&self, appointment_id: &str) -> String {
        let id = serde_json::Value::from(appointment_id).to_string();
        format!("{EVENT_HEAD}{id}{}", self.tail)
    }
}

/// A patient identifier as a message gives it: `(identifier, authority, type)`.
type Identifier = (String, String, Option<String>);

/// The rows a batch writes after its patients, each list in key order where it takes locks.
pub(super) struct Writes<'a> {
    /// Patients (that existed before the batch) whose contact points are replaced.
    pub(super) replaced: Vec<&'a str>,
    /// `(organization, patient id, point)`.
    pub(super) points: Vec<(&'a str, &'a str, &'a ContactPointInput)>,
    /// `(organization, patient id, consent)`, in arrival order.
    pub(super) consents: Vec<(&'a str, &'a str, &'a ConsentInput)>,
    /// `(organization, patient id, (identifier, authority, type))`.
    pub(super) identifiers: Vec<(&'a str, &'a str, &'a Identifier)>,
    /// `(new id, organization, patient id, appointment)`.
    pub(super) appointments: Vec<(&'a str, &'a str, &'a str, &'a AppointmentInput)>,
    /// One per message with an appointment, in arrival order.
    pub(super) events: Vec<EventWrite<'a>>,
}

impl<'a> Writes<'a> {
    pub(super) fn of(
        plan: &'a Plan<'a>,
        applied: &[&'a Hl7Record],
        patient_ids: &'a HashMap<(&'a str, &'a str), String>,
    ) -> Result<Self> {
        // Contact points: a patient's are those of the last message that sends any. A
        // patient this batch created (the upsert kept the batch's new id) has none yet: only
        // the others' are deleted.
        let created: HashSet<&str> = plan.patients.iter().map(|(id, _, _)| id.as_str()).collect();
        let mut points = Vec::new();
        let mut replaced = Vec::new();
        for r in &plan.contact_points {
            let patient_id = patient_id(patient_ids, r)?;
            if !created.contains(patient_id) {
                replaced.push(patient_id);
            }
            let p = r.effects.patient.as_ref().ok_or(StoreError::NotFound)?;
            for point in p.contact_points.iter().flatten() {
                points.push((r.arrival.organization_id.as_str(), patient_id, point));
            }
        }
        replaced.sort_unstable();
        // Consents and identifiers: every message's, in arrival order (an identifier already
        // held stays with its patient, as one message after another would leave it).
        let mut consents = Vec::new();
        let mut identifiers = Vec::new();
        for r in applied.iter().filter(|r| r.effects.patient.is_some()) {
            let patient_id = patient_id(patient_ids, r)?;
            let p = r.effects.patient.as_ref().ok_or(StoreError::NotFound)?;
            let organization_id = r.arrival.organization_id.as_str();
            consents.extend(p.consents.iter().map(|c| (organization_id, patient_id, c)));
            identifiers.extend(
                p.identifiers
                    .iter()
                    .map(|i| (organization_id, patient_id, i)),
            );
        }
        identifiers.sort_by(|a, b| (a.0, &a.2.1, &a.2.0).cmp(&(b.0, &b.2.1, &b.2.0)));
        // Appointments: one row per (organization, filler id), the last message's values and
        // patient, the first message's new id; then one `appointment.changed` event per
        // message, in order, as each upsert left the row.
        let mut appointments = Vec::with_capacity(plan.appointments.len());
        for (new_id, r) in &plan.appointments {
            if let Some((a, _)) = &r.effects.appointment {
                appointments.push((
                    new_id.as_str(),
                    r.arrival.organization_id.as_str(),
                    patient_id(patient_ids, r)?,
                    a,
                ));
            }
        }
        appointments
            .sort_by_key(|(_, organization_id, _, a)| (*organization_id, a.filler_id.as_str()));
        let mut events = Vec::new();
        for r in applied {
            let Some((a, trigger)) = &r.effects.appointment else {
                continue;
            };
            if r.effects.patient.is_none() {
                continue;
            }
            // Keys in the order `serde_json` writes them, `appointment_id` first.
            let rest = serde_json::json!({
                "filler_id": a.filler_id, "status": a.status.as_str(),
                "start_at": a.start_at, "trigger": trigger,
            })
            .to_string();
            events.push(EventWrite {
                organization_id: r.arrival.organization_id.as_str(),
                filler_id: a.filler_id.as_str(),
                tail: format!(",{}", rest.strip_prefix('{').unwrap_or(&rest)),
            });
        }
        Ok(Self {
            replaced,
            points,
            consents,
            identifiers,
            appointments,
            events,
        })
    }
}

/// The id the batch's patient upsert gave the patient of a message.
fn patient_id<'m>(ids: &'m HashMap<(&str, &str), String>, r: &'m Hl7Record) -> Result<&'m str> {
    let p = r.effects.patient.as_ref().ok_or(StoreError::NotFound)?;
    ids.get(&(r.arrival.organization_id.as_str(), p.external_id.as_str()))
        .map(String::as_str)
        .ok_or(StoreError::NotFound)
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
    /// `GroupCommit::record_hl7`) in ONE transaction, one commit for all: the archive rows,
    /// the patients, their contact points, consents and identifiers, the appointments and
    /// their events. On SQLite one multi-row statement per table; on PostgreSQL, where each
    /// round trip waits on two schedulers, four statements whatever the batch holds
    /// ([`super::hl7_pg`]). The result is what applying the messages one after another in
    /// arrival order gives: a message already archived (before, or earlier in this batch)
    /// writes nothing; of several messages for one patient (or one appointment) the last
    /// one's demographics (or appointment) stand, and every message still appends its own
    /// events, consents and identifiers in order. An answer per message, as `record` gives
    /// it. Any failure fails the whole batch (nothing is written); the group commit then
    /// records each alone.
    pub async fn record_many(self, records: &[Hl7Record]) -> Result<Vec<Option<Hl7Row>>> {
        self.record_many_on(None, records).await
    }

    /// [`Hl7::record_many`] for a group-commit flusher: on PostgreSQL it writes on a
    /// connection from `held` (put back after a success; one that failed is dropped and the
    /// next batch takes a fresh one), so a steady load pays no pool hand-over per batch.
    pub(super) async fn record_many_on(
        self,
        held: Option<&super::HeldConnections>,
        records: &[Hl7Record],
    ) -> Result<Vec<Option<Hl7Row>>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        // A later message with the same archive key as an earlier one of the batch is a
        // redelivery of it: answered from the archive, never inserted.
        let mut seen = HashSet::new();
        let fresh: Vec<&Hl7Record> = records
            .iter()
            .filter(|r| {
                let a = &r.arrival;
                a.control_id.as_ref().is_none_or(|control_id| {
                    seen.insert((
                        a.organization_id.as_str(),
                        a.sending_application.as_str(),
                        a.sending_facility.as_str(),
                        control_id.as_str(),
                        a.content_hash.as_str(),
                    ))
                })
            })
            .collect();
        // Every statement that takes row locks takes them in key order (tables always in
        // the same order too), so batches committed side by side cannot deadlock.
        let mut archive_order = fresh.clone();
        archive_order.sort_by(|a, b| archive_key(a).cmp(&archive_key(b)));
        let keys = key_identifiers(&fresh);
        let inserted = match self.db() {
            Db::Postgres(pool) => {
                let mut conn = super::HeldConnections::checkout(held, pool).await?;
                let inserted =
                    super::hl7_pg::record(&mut conn, &fresh, &archive_order, &keys, now).await?;
                super::HeldConnections::checkin(held, conn);
                inserted
            }
            Db::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let mut inserted = HashSet::with_capacity(fresh.len());
                for chunk in archive_order.chunks(rows_per_statement(15)) {
                    let mut qb = sqlx::QueryBuilder::new(
                        "INSERT INTO hl7_messages (id, organization_id, control_id, sending_application, sending_facility,
                            message_type, version, raw, status, error, ack, attempts, received_at, processed_at, content_hash) ",
                    );
                    qb.push_values(chunk, |mut b, r| {
                        let (a, o) = (&r.arrival, &r.outcome);
                        b.push_bind(&a.id)
                            .push_bind(&a.organization_id)
                            .push_bind(&a.control_id)
                            .push_bind(&a.sending_application)
                            .push_bind(&a.sending_facility)
                            .push_bind(&a.message_type)
                            .push_bind(&a.version)
                            .push_bind(&a.raw)
                            .push_bind(&o.status)
                            .push_bind(&o.error)
                            .push_bind(&o.ack)
                            .push_bind(1_i64)
                            .push_bind(now)
                            .push_bind(now)
                            .push_bind(&a.content_hash);
                    });
                    // Archived before (a redelivery): not returned, and nothing of it is written.
                    qb.push(" ON CONFLICT DO NOTHING RETURNING id");
                    let ids: Vec<String> = qb.build_query_scalar().fetch_all(&mut *tx).await?;
                    inserted.extend(ids);
                }
                // Key identifiers: the external id each one's holder is known by now (the
                // survivor's, for a merged-away holder), one query for the batch.
                let mut holders = Holders::default();
                for chunk in keys.chunks(100) {
                    let mut qb = sqlx::QueryBuilder::new("");
                    push_holders(&mut qb, chunk);
                    let rows: Vec<(String, String, String, String)> =
                        qb.build_query_as().fetch_all(&mut *tx).await?;
                    for (organization_id, authority, value, external_id) in rows {
                        holders.found(chunk, (&organization_id, &authority, &value), external_id);
                    }
                }
                let resolved = resolve(&fresh, &inserted, &holders);
                let applied: Vec<&Hl7Record> = resolved.iter().map(|r| r.as_ref()).collect();
                let plan = Plan::of(&applied);

                // Patients: one row per (organization, external id), the last message's
                // values (each upsert overwrites every column), the first message's new id.
                let mut returned = Vec::with_capacity(plan.patients.len());
                for chunk in plan.patient_order().chunks(rows_per_statement(12)) {
                    let mut qb = sqlx::QueryBuilder::new(
                        "INSERT INTO patients (id, organization_id, external_id, family_name, given_name, birth_date,
                            sex, language, time_zone, address, created_at, updated_at) ",
                    );
                    qb.push_values(chunk, |mut b, (new_id, organization_id, p)| {
                        b.push_bind(new_id.as_str())
                            .push_bind(*organization_id)
                            .push_bind(&p.external_id)
                            .push_bind(&p.family_name)
                            .push_bind(&p.given_name)
                            .push_bind(&p.birth_date)
                            .push_bind(&p.sex)
                            .push_bind(&p.language)
                            .push_bind(&p.time_zone)
                            .push_bind(&p.address)
                            .push_bind(now)
                            .push_bind(now);
                    });
                    qb.push(PATIENT_UPSERT);
                    let rows: Vec<(String, String, String)> =
                        qb.build_query_as().fetch_all(&mut *tx).await?;
                    returned.extend(rows);
                }
                let patient_ids = plan.patient_ids(returned);
                let writes = Writes::of(&plan, &applied, &patient_ids)?;

                for chunk in writes.replaced.chunks(rows_per_statement(1)) {
                    let mut qb =
                        sqlx::QueryBuilder::new("DELETE FROM contact_points WHERE patient_id IN (");
                    let mut ids = qb.separated(", ");
                    for id in chunk {
                        ids.push_bind(*id);
                    }
                    qb.push(")");
                    qb.build().execute(&mut *tx).await?;
                }
                for chunk in writes.points.chunks(rows_per_statement(9)) {
                    let mut qb = sqlx::QueryBuilder::new(
                        "INSERT INTO contact_points (id, organization_id, patient_id, system, value, use_code, rank, created_at, e164) ",
                    );
                    qb.push_values(chunk, |mut b, (organization_id, patient_id, point)| {
                        b.push_bind(new_id("cp"))
                            .push_bind(*organization_id)
                            .push_bind(*patient_id)
                            .push_bind(&point.system)
                            .push_bind(&point.value)
                            .push_bind(&point.use_code)
                            .push_bind(point.rank)
                            .push_bind(now)
                            .push_bind(&point.e164);
                    });
                    qb.build().execute(&mut *tx).await?;
                }
                for chunk in writes.consents.chunks(rows_per_statement(10)) {
                    let mut qb = sqlx::QueryBuilder::new(
                        "INSERT INTO consents (id, organization_id, patient_id, channel, purpose, recipient, status, source, recorded_at, expires_at) ",
                    );
                    qb.push_values(chunk, |mut b, (organization_id, patient_id, c)| {
                        b.push_bind(new_id("cns"))
                            .push_bind(*organization_id)
                            .push_bind(*patient_id)
                            .push_bind(&c.channel)
                            .push_bind(&c.purpose)
                            .push_bind(&c.recipient)
                            .push_bind(&c.status)
                            .push_bind(&c.source)
                            .push_bind(now)
                            .push_bind(c.expires_at);
                    });
                    qb.build().execute(&mut *tx).await?;
                }
                for chunk in writes.identifiers.chunks(rows_per_statement(5)) {
                    let mut qb = sqlx::QueryBuilder::new(
                        "INSERT INTO patient_identifiers (organization_id, patient_id, identifier, assigning_authority, identifier_type) ",
                    );
                    qb.push_values(
                        chunk,
                        |mut b, (organization_id, patient_id, (id, authority, id_type))| {
                            b.push_bind(*organization_id)
                                .push_bind(*patient_id)
                                .push_bind(id)
                                .push_bind(authority)
                                .push_bind(id_type);
                        },
                    );
                    qb.push(" ON CONFLICT DO NOTHING");
                    qb.build().execute(&mut *tx).await?;
                }
                let mut appointment_ids: HashMap<(&str, &str), String> = HashMap::new();
                for chunk in writes.appointments.chunks(rows_per_statement(18)) {
                    let mut qb = sqlx::QueryBuilder::new(
                        "INSERT INTO appointments (id, organization_id, patient_id, filler_id, placer_id, start_at, start_offset_minutes,
                            duration_minutes, status, appointment_type, reason, location, location_code, provider_id, provider_name,
                            source, created_at, updated_at) ",
                    );
                    qb.push_values(chunk, |mut b, (new_id, organization_id, patient_id, a)| {
                        b.push_bind(*new_id)
                            .push_bind(*organization_id)
                            .push_bind(*patient_id)
                            .push_bind(&a.filler_id)
                            .push_bind(&a.placer_id)
                            .push_bind(a.start_at)
                            .push_bind(a.start_offset_minutes)
                            .push_bind(a.duration_minutes)
                            .push_bind(a.status.as_str())
                            .push_bind(&a.appointment_type)
                            .push_bind(&a.reason)
                            .push_bind(&a.location)
                            .push_bind(&a.location_code)
                            .push_bind(&a.provider_id)
                            .push_bind(&a.provider_name)
                            .push_bind(&a.source)
                            .push_bind(now)
                            .push_bind(now);
                    });
                    qb.push(APPOINTMENT_UPSERT);
                    let rows: Vec<(String, String, String)> =
                        qb.build_query_as().fetch_all(&mut *tx).await?;
                    for (id, organization_id, filler_id) in rows {
                        let key = chunk
                            .iter()
                            .find(|(_, o, _, a)| *o == organization_id && a.filler_id == filler_id)
                            .map(|(_, o, _, a)| (*o, a.filler_id.as_str()));
                        if let Some(key) = key {
                            appointment_ids.insert(key, id);
                        }
                    }
                }
                let mut events = Vec::with_capacity(writes.events.len());
                for e in &writes.events {
                    let id = appointment_ids
                        .get(&(e.organization_id, e.filler_id))
                        .ok_or(StoreError::NotFound)?;
                    events.push((e.organization_id, id.as_str(), e.payload(id)));
                }
                for chunk in events.chunks(rows_per_statement(5)) {
                    let mut qb = sqlx::QueryBuilder::new(
                        "INSERT INTO events (organization_id, kind, subject_id, payload, created_at) ",
                    );
                    qb.push_values(chunk, |mut b, (organization_id, subject_id, payload)| {
                        b.push_bind(*organization_id)
                            .push_bind("appointment.changed")
                            .push_bind(*subject_id)
                            .push_bind(payload.as_str())
                            .push_bind(now);
                    });
                    qb.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                inserted
            }
        };
        let mut answers = Vec::with_capacity(records.len());
        for record in records {
            if inserted.contains(&record.arrival.id) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Db;

    /// An initial load: the statistics were gathered while the organization had two
    /// identifiers, then 5,000 came in. Resolving a batch's key identifiers still looks each
    /// one up by the whole primary key, not by walking every identifier of the organization
    /// and authority (which grows with the load).
    #[tokio::test]
    async fn a_batch_resolves_its_key_identifiers_by_primary_key_during_a_load() {
        let crate::testing::Fixture {
            core,
            org,
            guard,
            dir: _dir,
        } = crate::testing::Fixture::new(true, "load", "Load").await;
        let Db::Postgres(pool) = core.store.db() else {
            panic!("a PostgreSQL store");
        };
        crate::testing::execute_each(
            pool,
            &org.id,
            &[
            "INSERT INTO patients (id, organization_id, external_id, created_at, updated_at)
             SELECT 'pat_' || n, $1, 'MRN' || n, 0, 0 FROM generate_series(1, 2) AS n",
            "INSERT INTO patient_identifiers (organization_id, patient_id, identifier, assigning_authority)
             SELECT $1, 'pat_' || n, 'MRN' || n, 'CLINIC' FROM generate_series(1, 2) AS n",
            "ANALYZE patients",
            "ANALYZE patient_identifiers",
            "INSERT INTO patients (id, organization_id, external_id, created_at, updated_at)
             SELECT 'pat_' || n, $1, 'MRN' || n, 0, 0 FROM generate_series(3, 5000) AS n",
            "INSERT INTO patient_identifiers (organization_id, patient_id, identifier, assigning_authority)
             SELECT $1, 'pat_' || n, 'MRN' || n, 'CLINIC' FROM generate_series(3, 5000) AS n",
            ],
        )
        .await;
        let values: Vec<String> = (4990..=4997).map(|n| format!("MRN{n}")).collect();
        let keys: Vec<(&str, &str, &str)> = values
            .iter()
            .map(|v| (org.id.as_str(), "CLINIC", v.as_str()))
            .collect();
        let mut explain = sqlx::QueryBuilder::new("EXPLAIN (FORMAT JSON) ");
        push_holders(&mut explain, &keys);
        let plan: (serde_json::Value,) = explain
            .build_query_as()
            .fetch_one(pool)
            .await
            .expect("plan");
        let plan = plan.0;
        // Every scan of patient_identifiers names the identifier in its index condition.
        let scans = crate::testing::scans_of(&plan, "patient_identifiers");
        assert_eq!(scans.len(), keys.len(), "one lookup per key: {plan}");
        for scan in scans {
            let condition = scan["Index Cond"].as_str().unwrap_or_default();
            assert!(
                condition.contains("identifier ="),
                "looked up by the whole key, not filtered: {scan}"
            );
        }
        let mut batch = sqlx::QueryBuilder::new("");
        push_holders(&mut batch, &keys);
        let found: Vec<(String, String, String, String)> = batch
            .build_query_as()
            .fetch_all(pool)
            .await
            .expect("holders");
        assert_eq!(found.len(), keys.len());
        crate::testing::close(core, guard).await;
    }

    /// A message for the batch tests: patient `MRN1` keyed by its MRN, one phone, and
    /// appointment `F1` starting at `start`.
    fn record(org: &str, control_id: &str, family: &str, phone: &str, start: i64) -> Hl7Record {
        let id = new_id("hl7");
        Hl7Record {
            arrival: Hl7Arrival {
                id: id.clone(),
                organization_id: org.into(),
                control_id: Some(control_id.into()),
                sending_application: "APP".into(),
                sending_facility: "FAC".into(),
                message_type: Some("SIU^S12".into()),
                version: Some("2.5.1".into()),
                content_hash: format!("{control_id}-hash"),
                raw: control_id.as_bytes().to_vec(),
            },
            effects: Hl7Effects {
                patient: Some(PatientInput {
                    external_id: "MRN1".into(),
                    family_name: Some(family.into()),
                    contact_points: Some(vec![ContactPointInput {
                        system: "phone".into(),
                        value: phone.into(),
                        use_code: Some("PRN".into()),
                        rank: 1,
                        e164: None,
                    }]),
                    identifiers: vec![("MRN1".into(), "CLINIC".into(), Some("MR".into()))],
                    ..Default::default()
                }),
                patient_key: Some(("CLINIC".into(), "MRN1".into())),
                appointment: Some((
                    AppointmentInput {
                        filler_id: "F1".into(),
                        placer_id: None,
                        start_at: start,
                        start_offset_minutes: 0,
                        duration_minutes: Some(30),
                        status: crate::domain::AppointmentStatus::Booked,
                        appointment_type: None,
                        reason: None,
                        location: None,
                        location_code: None,
                        provider_id: None,
                        provider_name: None,
                        source: "hl7".into(),
                    },
                    "S12".into(),
                )),
            },
            outcome: Hl7Outcome {
                status: "applied".into(),
                error: None,
                ack: format!("ACK {control_id}"),
            },
        }
    }

    /// Both databases' batch writers (SQLite's statement per table, PostgreSQL's four
    /// statements) leave the same rows: an update replaces the patient's contact points and
    /// moves the appointment under its existing id, each message's event names that id in the
    /// same payload text, and a redelivery in the batch is answered from the archive.
    #[tokio::test]
    async fn a_batch_writes_the_same_rows_on_both_databases() {
        for postgres in [false, true] {
            let crate::testing::Fixture {
                core,
                org,
                guard,
                dir: _dir,
            } = crate::testing::Fixture::new(postgres, "batch", "Batch").await;
            let first = record(&org.id, "C1", "Before", "+15555550101", 1_000);
            let answers = core
                .store
                .hl7()
                .record_many(std::slice::from_ref(&first))
                .await
                .expect("first batch");
            assert!(answers[0].is_none(), "archived now");
            let second = record(&org.id, "C2", "After", "+15555550102", 2_000);
            let answers = core
                .store
                .hl7()
                .record_many(&[second, first.clone()])
                .await
                .expect("second batch");
            assert!(answers[0].is_none(), "archived now");
            let replayed = answers[1].as_ref().expect("a redelivery is answered");
            assert_eq!(replayed.id, first.arrival.id);
            assert_eq!(replayed.ack.as_deref(), Some("ACK C1"));

            let (appointment_id, start_at, family, phones, identifiers, payloads): (
                String,
                i64,
                String,
                Vec<String>,
                i64,
                Vec<String>,
            ) = on_db!(core.store.db(), |pool| async {
                let (appointment_id, start_at): (String, i64) =
                    sqlx::query_as("SELECT id, start_at FROM appointments WHERE filler_id = 'F1'")
                        .fetch_one(pool)
                        .await?;
                let family: String = sqlx::query_scalar(
                    "SELECT family_name FROM patients WHERE external_id = 'MRN1'",
                )
                .fetch_one(pool)
                .await?;
                let phones: Vec<String> = sqlx::query_scalar("SELECT value FROM contact_points")
                    .fetch_all(pool)
                    .await?;
                let identifiers: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM patient_identifiers")
                        .fetch_one(pool)
                        .await?;
                let payloads: Vec<String> = sqlx::query_scalar(
                    "SELECT payload FROM events WHERE kind = 'appointment.changed' ORDER BY id",
                )
                .fetch_all(pool)
                .await?;
                Ok::<_, sqlx::Error>((
                    appointment_id,
                    start_at,
                    family,
                    phones,
                    identifiers,
                    payloads,
                ))
            }
            .await)
            .expect("read back");
            let db = if postgres { "postgres" } else { "sqlite" };
            assert_eq!(start_at, 2_000, "{db}");
            assert_eq!(family, "After", "{db}");
            assert_eq!(phones, ["+15555550102"], "{db}: contact points replaced");
            assert_eq!(identifiers, 1, "{db}");
            let payload = |start: i64| {
                format!(
                    "{{\"appointment_id\":\"{appointment_id}\",\"filler_id\":\"F1\",\"start_at\":{start},\"status\":\"booked\",\"trigger\":\"S12\"}}"
                )
            };
            assert_eq!(payloads, [payload(1_000), payload(2_000)], "{db}");
            crate::testing::close(core, guard).await;
        }
    }
}
