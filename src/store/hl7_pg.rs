//! `Hl7::record_many` on PostgreSQL: a batch of HL7 messages in four statements, whatever
//! the batch holds.
//!
//! Each round trip to PostgreSQL waits on two schedulers (the backend's wake-up and the
//! daemon's task), about 0.3 ms on a busy two-core machine, so a batch written one statement
//! per table (ten round trips with BEGIN and COMMIT) spent most of its time waiting. Here:
//!
//! 1. the archive rows (`INSERT … ON CONFLICT DO NOTHING`) and the key identifiers' holders,
//!    in one statement (the lookup reads identifiers, which the archive insert does not
//!    touch);
//! 2. the patients' upsert, which locks the batch's patients;
//! 3. (only when a patient that existed before sends contact points) their DELETE;
//! 4. contact points, consents, identifiers, appointments and their events, as
//!    data-modifying `WITH` parts of one statement. The parts share one snapshot, taken after
//!    step 2 locked the patients, so the DELETE above has seen every committed point of
//!    theirs, and the events join the appointments' upsert for its ids.
//!
//! Rows go in as arrays (`UNNEST`), so each statement has one text whatever the batch size
//! and stays prepared on its connection (a new text costs a Parse round trip, and pushes an
//! older one out of the connection's cache). The locks are taken in the same key order as on
//! SQLite (arrays built in that order).

use std::collections::HashSet;

use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::dialect::column;
use super::hl7::{
    APPOINTMENT_UPSERT, EVENT_HEAD, Hl7Record, Holders, PATIENT_UPSERT, Plan, Writes, push_holders,
    resolve,
};
use super::{Result, new_id};

/// Writes a batch (its messages in arrival order and in archive-key order, their key
/// identifiers in key order) in one transaction; returns the ids of the messages archived now
/// (not redeliveries).
pub(super) async fn record(
    conn: &mut PgConnection,
    fresh: &[&Hl7Record],
    archive_order: &[&Hl7Record],
    keys: &[(&str, &str, &str)],
    now: i64,
) -> Result<HashSet<String>> {
    let mut tx = sqlx::Connection::begin(conn).await?;

    // 1. The archive rows, and the holders of the key identifiers.
    let mut qb = QueryBuilder::<Postgres>::new(
        "WITH ins AS (
            INSERT INTO hl7_messages (id, organization_id, control_id, sending_application,
                sending_facility, message_type, version, raw, status, error, ack, content_hash,
                attempts, received_at, processed_at)
            SELECT *, 1, ",
    );
    qb.push_bind(now)
        .push(", ")
        .push_bind(now)
        .push(" FROM UNNEST(");
    {
        let rows = archive_order;
        let mut cols = qb.separated(", ");
        cols.push_bind(column(rows, |r| r.arrival.id.as_str()));
        cols.push_bind(column(rows, |r| r.arrival.organization_id.as_str()));
        cols.push_bind(column(rows, |r| r.arrival.control_id.as_deref()));
        cols.push_bind(column(rows, |r| r.arrival.sending_application.as_str()));
        cols.push_bind(column(rows, |r| r.arrival.sending_facility.as_str()));
        cols.push_bind(column(rows, |r| r.arrival.message_type.as_deref()));
        cols.push_bind(column(rows, |r| r.arrival.version.as_deref()));
        cols.push_bind(column(rows, |r| r.arrival.raw.as_slice()));
        cols.push_bind(column(rows, |r| r.outcome.status.as_str()));
        cols.push_bind(column(rows, |r| r.outcome.error.as_deref()));
        cols.push_bind(column(rows, |r| r.outcome.ack.as_str()));
        cols.push_bind(column(rows, |r| r.arrival.content_hash.as_str()));
    }
    // Archived before (a redelivery): not returned, and nothing of it is written.
    qb.push(") ON CONFLICT DO NOTHING RETURNING id) SELECT 'a', id, '', '', '' FROM ins");
    if !keys.is_empty() {
        qb.push(" UNION ALL SELECT 'h', h.* FROM (");
        push_holders(&mut qb, keys);
        qb.push(") AS h");
    }
    let rows: Vec<(String, String, String, String, String)> =
        qb.build_query_as().fetch_all(&mut *tx).await?;
    let mut inserted = HashSet::with_capacity(archive_order.len());
    let mut holders = Holders::default();
    for (tag, a, b, c, external_id) in rows {
        if tag == "a" {
            inserted.insert(a);
        } else {
            holders.found(keys, (&a, &b, &c), external_id);
        }
    }
    let resolved = resolve(fresh, &inserted, &holders);
    let applied: Vec<&Hl7Record> = resolved.iter().map(|r| r.as_ref()).collect();
    let plan = Plan::of(&applied);

    // 2. The patients: one row per (organization, external id), the last message's values,
    // the first message's new id.
    let patients = plan.patient_order();
    let mut returned = Vec::new();
    if !patients.is_empty() {
        let mut qb = QueryBuilder::<Postgres>::new(
            "INSERT INTO patients (id, organization_id, external_id, family_name, given_name,
                birth_date, sex, language, time_zone, address, created_at, updated_at)
             SELECT *, ",
        );
        qb.push_bind(now)
            .push(", ")
            .push_bind(now)
            .push(" FROM UNNEST(");
        {
            let rows = &patients;
            let mut cols = qb.separated(", ");
            cols.push_bind(column(rows, |(id, _, _)| id.as_str()));
            cols.push_bind(column(rows, |(_, o, _)| *o));
            cols.push_bind(column(rows, |(_, _, p)| p.external_id.as_str()));
            cols.push_bind(column(rows, |(_, _, p)| p.family_name.as_deref()));
            cols.push_bind(column(rows, |(_, _, p)| p.given_name.as_deref()));
            cols.push_bind(column(rows, |(_, _, p)| p.birth_date.as_deref()));
            cols.push_bind(column(rows, |(_, _, p)| p.sex.as_deref()));
            cols.push_bind(column(rows, |(_, _, p)| p.language.as_deref()));
            cols.push_bind(column(rows, |(_, _, p)| p.time_zone.as_deref()));
            cols.push_bind(column(rows, |(_, _, p)| p.address.as_deref()));
        }
        qb.push(")").push(PATIENT_UPSERT);
        returned = qb.build_query_as().fetch_all(&mut *tx).await?;
    }
    let patient_ids = plan.patient_ids(returned);
    let writes = Writes::of(&plan, &applied, &patient_ids)?;

    // 3. The contact points of patients that existed before, replaced below. Planned for its
    // own ids each time, not as a prepared statement: PostgreSQL keeps a prepared statement's
    // generic plan, and one made while the table was small scans the whole table for every
    // batch once it is not.
    if !writes.replaced.is_empty() {
        let mut qb =
            QueryBuilder::<Postgres>::new("DELETE FROM contact_points WHERE patient_id IN (");
        let mut ids = qb.separated(", ");
        for id in &writes.replaced {
            ids.push_bind(*id);
        }
        qb.push(")");
        qb.build().persistent(false).execute(&mut *tx).await?;
    }

    // 4. The rest, as the parts of one statement.
    let mut qb = QueryBuilder::<Postgres>::new("WITH ");
    let mut parts = 0;
    let mut part = |qb: &mut QueryBuilder<Postgres>, name: &str| {
        if parts > 0 {
            qb.push(", ");
        }
        parts += 1;
        qb.push(name).push(" AS (");
    };
    if !writes.points.is_empty() {
        part(&mut qb, "cp");
        qb.push(
            "INSERT INTO contact_points (id, organization_id, patient_id, system, value, use_code,
                rank, e164, created_at) SELECT *, ",
        );
        qb.push_bind(now).push(" FROM UNNEST(");
        let rows = &writes.points;
        let mut cols = qb.separated(", ");
        cols.push_bind(column(rows, |_| new_id("cp")));
        cols.push_bind(column(rows, |(o, _, _)| *o));
        cols.push_bind(column(rows, |(_, p, _)| *p));
        cols.push_bind(column(rows, |(_, _, c)| c.system.as_str()));
        cols.push_bind(column(rows, |(_, _, c)| c.value.as_str()));
        cols.push_bind(column(rows, |(_, _, c)| c.use_code.as_deref()));
        cols.push_bind(column(rows, |(_, _, c)| c.rank));
        cols.push_bind(column(rows, |(_, _, c)| c.e164.as_deref()));
        qb.push("))");
    }
    if !writes.consents.is_empty() {
        part(&mut qb, "cns");
        qb.push(
            "INSERT INTO consents (id, organization_id, patient_id, channel, purpose, recipient,
                status, source, expires_at, recorded_at) SELECT *, ",
        );
        qb.push_bind(now).push(" FROM UNNEST(");
        let rows = &writes.consents;
        let mut cols = qb.separated(", ");
        cols.push_bind(column(rows, |_| new_id("cns")));
        cols.push_bind(column(rows, |(o, _, _)| *o));
        cols.push_bind(column(rows, |(_, p, _)| *p));
        cols.push_bind(column(rows, |(_, _, c)| c.channel.as_str()));
        cols.push_bind(column(rows, |(_, _, c)| c.purpose.as_str()));
        cols.push_bind(column(rows, |(_, _, c)| c.recipient.as_str()));
        cols.push_bind(column(rows, |(_, _, c)| c.status.as_str()));
        cols.push_bind(column(rows, |(_, _, c)| c.source.as_str()));
        cols.push_bind(column(rows, |(_, _, c)| c.expires_at));
        qb.push("))");
    }
    if !writes.identifiers.is_empty() {
        part(&mut qb, "ids");
        qb.push(
            "INSERT INTO patient_identifiers (organization_id, patient_id, identifier,
                assigning_authority, identifier_type) SELECT * FROM UNNEST(",
        );
        {
            let rows = &writes.identifiers;
            let mut cols = qb.separated(", ");
            cols.push_bind(column(rows, |(o, _, _)| *o));
            cols.push_bind(column(rows, |(_, p, _)| *p));
            cols.push_bind(column(rows, |(_, _, (id, _, _))| id.as_str()));
            cols.push_bind(column(rows, |(_, _, (_, authority, _))| authority.as_str()));
            cols.push_bind(column(rows, |(_, _, (_, _, kind))| kind.as_deref()));
        }
        qb.push(") ON CONFLICT DO NOTHING)");
    }
    if !writes.appointments.is_empty() {
        part(&mut qb, "apt");
        qb.push(
            "INSERT INTO appointments (id, organization_id, patient_id, filler_id, placer_id,
                start_at, start_offset_minutes, duration_minutes, status, appointment_type, reason,
                location, location_code, provider_id, provider_name, source, created_at, updated_at)
             SELECT *, ",
        );
        qb.push_bind(now)
            .push(", ")
            .push_bind(now)
            .push(" FROM UNNEST(");
        {
            let rows = &writes.appointments;
            let mut cols = qb.separated(", ");
            cols.push_bind(column(rows, |(id, _, _, _)| *id));
            cols.push_bind(column(rows, |(_, o, _, _)| *o));
            cols.push_bind(column(rows, |(_, _, p, _)| *p));
            cols.push_bind(column(rows, |(_, _, _, a)| a.filler_id.as_str()));
            cols.push_bind(column(rows, |(_, _, _, a)| a.placer_id.as_deref()));
            cols.push_bind(column(rows, |(_, _, _, a)| a.start_at));
            cols.push_bind(column(rows, |(_, _, _, a)| a.start_offset_minutes));
            cols.push_bind(column(rows, |(_, _, _, a)| a.duration_minutes));
            cols.push_bind(column(rows, |(_, _, _, a)| a.status.as_str()));
            cols.push_bind(column(rows, |(_, _, _, a)| a.appointment_type.as_deref()));
            cols.push_bind(column(rows, |(_, _, _, a)| a.reason.as_deref()));
            cols.push_bind(column(rows, |(_, _, _, a)| a.location.as_deref()));
            cols.push_bind(column(rows, |(_, _, _, a)| a.location_code.as_deref()));
            cols.push_bind(column(rows, |(_, _, _, a)| a.provider_id.as_deref()));
            cols.push_bind(column(rows, |(_, _, _, a)| a.provider_name.as_deref()));
            cols.push_bind(column(rows, |(_, _, _, a)| a.source.as_str()));
        }
        qb.push(")").push(APPOINTMENT_UPSERT).push(")");
        if !writes.events.is_empty() {
            // Each event names its appointment as the upsert left it (the existing row's id,
            // for an update), in arrival order (the identity column follows the ORDER BY).
            part(&mut qb, "ev");
            qb.push(
                "INSERT INTO events (organization_id, kind, subject_id, payload, created_at)
                 SELECT v.o, 'appointment.changed', apt.id, ",
            );
            qb.push_bind(EVENT_HEAD)
                .push(" || to_json(apt.id)::text || v.t, ")
                .push_bind(now)
                .push(" FROM UNNEST(");
            {
                let rows = &writes.events;
                let mut cols = qb.separated(", ");
                cols.push_bind(column(rows, |e| e.organization_id));
                cols.push_bind(column(rows, |e| e.filler_id));
                cols.push_bind(column(rows, |e| e.tail.as_str()));
            }
            qb.push(
                ") WITH ORDINALITY AS v (o, f, t, n)
                 JOIN apt ON apt.organization_id = v.o AND apt.filler_id = v.f
                 ORDER BY v.n)",
            );
        }
    }
    if parts > 0 {
        qb.push(" SELECT 1");
        qb.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(inserted)
}
