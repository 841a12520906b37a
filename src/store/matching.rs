//! The lookups patient matching asks of the store (`intake::matching` decides). Each returns
//! the surviving patient of a merge (`merged_into`), never a merged-away record.

use super::{Patients, Result, on_db};

/// A patient as demographic matching compares it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PatientDemographics {
    pub id: String,
    pub family_name: Option<String>,
    pub given_name: Option<String>,
    pub sex: Option<String>,
}

impl Patients<'_> {
    /// Patients holding identifier `id` from `authority`.
    pub async fn by_identifier(
        self,
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
    pub async fn born_on(
        self,
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
    pub async fn by_contact(self, organization_id: &str, value: &str) -> Result<Vec<String>> {
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

    /// Replaces every Social Security number still held in clear in `patient_identifiers`
    /// (stored before SSNs were digested: the SSA's OID, an `SSA`/`SS`/`SSN` authority or an
    /// `SS`/`SSN` type) by `digest(value)` (`Keyring::identifier_digests`' first). Idempotent
    /// (a digest is never digested again), so daemons starting together may both run it.
    /// Returns how many changed.
    pub async fn digest_clear_ssns(self, digest: impl Fn(&str) -> String) -> Result<u64> {
        let rows: Vec<(String, String, String)> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT organization_id, assigning_authority, identifier FROM patient_identifiers
             WHERE identifier NOT LIKE 'ssn-hmac:%'
               AND (assigning_authority = $1 OR UPPER(assigning_authority) IN ('SSA', 'SS', 'SSN')
                    OR UPPER(COALESCE(identifier_type, '')) IN ('SS', 'SSN'))"
        )
        .bind(crate::domain::identifier::SSN_OID)
        .fetch_all(pool)
        .await)?;
        if rows.is_empty() {
            return Ok(0);
        }
        on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            for (org, authority, value) in &rows {
                // A digest already there (the same number under the same authority): keep
                // one row.
                sqlx::query(
                    "UPDATE patient_identifiers SET identifier = $4
                     WHERE organization_id = $1 AND assigning_authority = $2 AND identifier = $3
                       AND NOT EXISTS (SELECT 1 FROM patient_identifiers
                                       WHERE organization_id = $1 AND assigning_authority = $2
                                         AND identifier = $4)",
                )
                .bind(org)
                .bind(authority)
                .bind(value)
                .bind(digest(value))
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "DELETE FROM patient_identifiers
                     WHERE organization_id = $1 AND assigning_authority = $2 AND identifier = $3",
                )
                .bind(org)
                .bind(authority)
                .bind(value)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(rows.len() as u64)
    }
}
