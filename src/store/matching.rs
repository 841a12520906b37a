//! The lookups patient matching asks of the store (`intake::matching` decides). Each returns
//! the surviving patient of a merge (`merged_into`), never a merged-away record.

use super::{Result, Store, on_db};

/// A patient as demographic matching compares it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PatientDemographics {
    pub id: String,
    pub family_name: Option<String>,
    pub given_name: Option<String>,
    pub sex: Option<String>,
}

impl Store {
    /// Patients holding identifier `id` from `authority`.
    pub async fn patients_by_identifier(
        &self,
        organization_id: &str,
        authority: &str,
        id: &str,
    ) -> Result<Vec<String>> {
        let sql = "SELECT DISTINCT COALESCE(p.merged_into, p.id) FROM patient_identifiers i \
                   JOIN patients p ON p.id = i.patient_id \
                   WHERE i.organization_id = $1 AND i.assigning_authority = $2 AND i.identifier = $3";
        let rows: Vec<(String,)> = on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(organization_id)
            .bind(authority)
            .bind(id)
            .fetch_all(pool)
            .await)?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Patients born on `birth_date` (`YYYY-MM-DD`), not merged away.
    pub async fn patients_born_on(
        &self,
        organization_id: &str,
        birth_date: &str,
    ) -> Result<Vec<PatientDemographics>> {
        let sql = "SELECT id, family_name, given_name, sex FROM patients \
                   WHERE organization_id = $1 AND birth_date = $2 AND merged_into IS NULL";
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(organization_id)
            .bind(birth_date)
            .fetch_all(pool)
            .await)?)
    }

    /// Patients with a contact point whose value (or E.164 form) is `value`.
    pub async fn patients_by_contact(
        &self,
        organization_id: &str,
        value: &str,
    ) -> Result<Vec<String>> {
        let sql = "SELECT DISTINCT COALESCE(p.merged_into, p.id) FROM contact_points c \
                   JOIN patients p ON p.id = c.patient_id \
                   WHERE c.organization_id = $1 AND (c.e164 = $2 OR LOWER(c.value) = LOWER($2))";
        let rows: Vec<(String,)> = on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(organization_id)
            .bind(value)
            .fetch_all(pool)
            .await)?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// The patient and thread of one of our messages (a reply's correlation), if it has a
    /// patient.
    pub async fn message_patient(
        &self,
        organization_id: &str,
        message_id: &str,
    ) -> Result<Option<(String, String)>> {
        let sql = "SELECT COALESCE(p.merged_into, p.id), t.id FROM messages m \
                   JOIN threads t ON t.id = m.thread_id \
                   JOIN patients p ON p.id = t.patient_id \
                   WHERE m.organization_id = $1 AND m.id = $2";
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(organization_id)
            .bind(message_id)
            .fetch_optional(pool)
            .await)?)
    }
}
