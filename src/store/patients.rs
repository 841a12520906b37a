//! Patients, their contact points and the consent ledger.
//!
//! Consents are a ledger: rows are appended, never rewritten; the newest row for a
//! (patient, channel, purpose, recipient) decides.

use super::{
    ConsentRow, ContactPointRow, PatientRow, Patients, Result, StoreError, new_id, now_ms, on_db,
};
use crate::domain::{Address, Channel};

/// Demographics and contact points for an upsert keyed by the organization's external id.
#[derive(Debug, Clone, Default)]
pub struct PatientInput {
    pub external_id: String,
    pub family_name: Option<String>,
    pub given_name: Option<String>,
    pub birth_date: Option<String>,
    pub sex: Option<String>,
    pub language: Option<String>,
    pub time_zone: Option<String>,
    /// JSON address.
    pub address: Option<String>,
    /// `Some` replaces the patient's contact points; `None` keeps them.
    pub contact_points: Option<Vec<ContactPointInput>>,
    /// Appended to the consent ledger.
    pub consents: Vec<ConsentInput>,
    /// Identifiers `(id, assigning authority, type)` to record for the patient (PID-3); one
    /// already held by a patient stays with it.
    pub identifiers: Vec<(String, String, Option<String>)>,
}

#[derive(Debug, Clone)]
pub struct ContactPointInput {
    pub system: String,
    pub value: String,
    pub use_code: Option<String>,
    pub rank: i64,
    /// The number in E.164 when it is a phone number that parses (matching inbound SMS).
    pub e164: Option<String>,
}

impl ContactPointInput {
    /// A contact point; phone numbers also get their E.164 form, read in `region` (the
    /// canonical address, `domain::Address`, when it is a valid number).
    pub fn new(
        system: &str,
        value: &str,
        use_code: Option<String>,
        rank: i64,
        region: &str,
    ) -> Self {
        let e164 = Channel::of_contact_system(system)
            .filter(|channel| channel.is_phone())
            .map(|channel| Address::canonical(channel, value, region))
            .filter(Address::is_e164)
            .map(Address::into_string);
        Self {
            system: system.to_string(),
            value: value.to_string(),
            use_code,
            rank,
            e164,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ConsentInput {
    pub channel: String,
    pub purpose: String,
    pub recipient: String,
    pub status: String,
    pub source: String,
    pub expires_at: Option<i64>,
}

/// The statements of a patient upsert, inside the caller's transaction `$tx`; evaluates to the
/// patient row. (The HL7 path writes a batch of messages with multi-row statements:
/// `Hl7::record_many`.)
macro_rules! upsert_patient_in {
    ($tx:expr, $organization_id:expr, $input:expr, $now:expr, $new_patient_id:expr) => {{
        let (organization_id, input, now): (&str, &$crate::store::PatientInput, i64) = ($organization_id, $input, $now);
        let row: $crate::store::PatientRow = sqlx::query_as(concat!(
            "INSERT INTO patients (id, organization_id, external_id, family_name, given_name, birth_date,
                sex, language, time_zone, address, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $11, $10, $10)
             ON CONFLICT (organization_id, external_id) DO UPDATE SET
                family_name = excluded.family_name, given_name = excluded.given_name,
                birth_date = excluded.birth_date, sex = excluded.sex, language = excluded.language,
                time_zone = excluded.time_zone, address = excluded.address, updated_at = excluded.updated_at
             RETURNING ", patient_columns!()
        ))
        .bind($new_patient_id).bind(organization_id).bind(&input.external_id)
        .bind(&input.family_name).bind(&input.given_name).bind(&input.birth_date)
        .bind(&input.sex).bind(&input.language).bind(&input.time_zone).bind(now).bind(&input.address)
        .fetch_one(&mut *$tx).await?;
        if let Some(points) = &input.contact_points {
            sqlx::query("DELETE FROM contact_points WHERE patient_id = $1")
                .bind(&row.id).execute(&mut *$tx).await?;
            if !points.is_empty() {
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO contact_points (id, organization_id, patient_id, system, value, use_code, rank, created_at, e164) ",
                );
                qb.push_values(points, |mut b, point| {
                    b.push_bind($crate::store::new_id("cp")).push_bind(organization_id.to_string()).push_bind(row.id.clone())
                        .push_bind(point.system.clone()).push_bind(point.value.clone())
                        .push_bind(point.use_code.clone()).push_bind(point.rank).push_bind(now)
                        .push_bind(point.e164.clone());
                });
                qb.build().execute(&mut *$tx).await?;
            }
        }
        for consent in &input.consents {
            sqlx::query(
                "INSERT INTO consents (id, organization_id, patient_id, channel, purpose, recipient, status, source, recorded_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind($crate::store::new_id("cns")).bind(organization_id).bind(&row.id).bind(&consent.channel)
            .bind(&consent.purpose).bind(&consent.recipient).bind(&consent.status)
            .bind(&consent.source).bind(now).bind(consent.expires_at)
            .execute(&mut *$tx).await?;
        }
        if !input.identifiers.is_empty() {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO patient_identifiers (organization_id, patient_id, identifier, assigning_authority, identifier_type) ",
            );
            qb.push_values(&input.identifiers, |mut b, (id, authority, id_type)| {
                b.push_bind(organization_id.to_string()).push_bind(row.id.clone()).push_bind(id.clone())
                    .push_bind(authority.clone()).push_bind(id_type.clone());
            });
            qb.push(" ON CONFLICT DO NOTHING");
            qb.build().execute(&mut *$tx).await?;
        }
        row
    }};
}

impl Patients<'_> {
    /// Creates or replaces a patient's demographics; returns the row and whether it was new.
    pub async fn upsert(
        self,
        organization_id: &str,
        input: &PatientInput,
    ) -> Result<(PatientRow, bool)> {
        let now = now_ms();
        let new_patient_id = new_id("pat");
        let row: PatientRow = on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let row = upsert_patient_in!(tx, organization_id, input, now, &new_patient_id);
            tx.commit().await?;
            row
        });
        let created = row.id == new_patient_id;
        Ok((row, created))
    }

    pub async fn by_external_id(
        self,
        organization_id: &str,
        external_id: &str,
    ) -> Result<PatientRow> {
        let sql = concat!(
            "SELECT ",
            patient_columns!(),
            " FROM patients WHERE organization_id = $1 AND external_id = $2"
        );
        on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(organization_id)
            .bind(external_id)
            .fetch_optional(pool)
            .await)?
        .ok_or(StoreError::NotFound)
    }

    pub async fn get(self, organization_id: &str, id: &str) -> Result<PatientRow> {
        let sql = concat!(
            "SELECT ",
            patient_columns!(),
            " FROM patients WHERE organization_id = $1 AND id = $2"
        );
        on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(organization_id)
            .bind(id)
            .fetch_optional(pool)
            .await)?
        .ok_or(StoreError::NotFound)
    }

    pub async fn contact_points(self, patient_id: &str) -> Result<Vec<ContactPointRow>> {
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as(
            "SELECT id, system, value, use_code, rank FROM contact_points WHERE patient_id = $1 ORDER BY rank, id",
        )
        .bind(patient_id).fetch_all(pool).await
        })?)
    }

    pub async fn consents(self, patient_id: &str) -> Result<Vec<ConsentRow>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT id, channel, purpose, recipient, status, source, recorded_at, expires_at
             FROM consents WHERE patient_id = $1 ORDER BY recorded_at, id",
        )
        .bind(patient_id)
        .fetch_all(pool)
        .await)?)
    }

    /// The patient holding an identifier issued by `authority` ("" for none given).
    pub async fn id_by_identifier(
        self,
        organization_id: &str,
        authority: &str,
        id: &str,
    ) -> Result<Option<String>> {
        let row: Option<(String,)> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT patient_id FROM patient_identifiers
             WHERE organization_id = $1 AND identifier = $2 AND assigning_authority = $3",
        )
        .bind(organization_id)
        .bind(id)
        .bind(authority)
        .fetch_optional(pool)
        .await)?;
        Ok(row.map(|(p,)| p))
    }

    /// The external id under which the holder of an identifier is known now: the surviving
    /// patient's when the holder was merged away.
    pub async fn external_id_for_identifier(
        self,
        organization_id: &str,
        authority: &str,
        id: &str,
    ) -> Result<Option<String>> {
        let row: Option<(String, Option<String>)> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT p.external_id, m.external_id FROM patient_identifiers i
             JOIN patients p ON p.id = i.patient_id
             LEFT JOIN patients m ON m.id = p.merged_into
             WHERE i.organization_id = $1 AND i.identifier = $2 AND i.assigning_authority = $3",
        )
        .bind(organization_id)
        .bind(id)
        .bind(authority)
        .fetch_optional(pool)
        .await)?;
        Ok(row.map(|(own, survivor)| survivor.unwrap_or(own)))
    }

    /// Moves everything of the prior patients onto the surviving one and marks them merged.
    pub async fn merge(self, surviving: &str, prior: &[String]) -> Result<()> {
        on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            for old in prior.iter().filter(|p| p.as_str() != surviving) {
                for table in [
                    "threads",
                    "appointments",
                    "consents",
                    "recalls",
                    "messages",
                    "deliveries",
                    "patient_identifiers",
                ] {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE {table} SET patient_id = $1 WHERE patient_id = $2"
                    )))
                    .bind(surviving)
                    .bind(old)
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query("UPDATE patients SET merged_into = $1, updated_at = $3 WHERE id = $2")
                    .bind(surviving)
                    .bind(old)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The external ids of these patients of the organization (`(id, external_id)`).
    pub async fn external_ids(
        self,
        organization_id: &str,
        patient_ids: &[String],
    ) -> Result<Vec<(String, String)>> {
        if patient_ids.is_empty() {
            return Ok(Vec::new());
        }
        on_db!(self.db(), |pool| {
            let mut qb = sqlx::QueryBuilder::new(
                "SELECT id, external_id FROM patients WHERE organization_id = ",
            );
            qb.push_bind(organization_id.to_string());
            qb.push(" AND id IN (");
            let mut ids = qb.separated(", ");
            for id in patient_ids {
                ids.push_bind(id.clone());
            }
            qb.push(")");
            Ok(qb.build_query_as().fetch_all(pool).await?)
        })
    }
}
