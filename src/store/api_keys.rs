//! API keys: stored as SHA-256 hashes, each scoped to one organization.

use super::{Result, Store, new_id, now_ms, on_db};

impl Store {
    /// Records a key's hash; returns the key's id.
    pub async fn insert_api_key(
        &self,
        organization_id: &str,
        name: &str,
        key_hash: &str,
    ) -> Result<String> {
        let id = new_id("key");
        on_db!(self.db(), pool => sqlx::query(
            "INSERT INTO api_keys (id, organization_id, name, key_hash, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id).bind(organization_id).bind(name).bind(key_hash).bind(now_ms())
        .execute(pool).await.map(|_| ()))?;
        Ok(id)
    }

    /// The organization a live (unrevoked) key belongs to.
    pub async fn organization_for_key(&self, key_hash: &str) -> Result<Option<String>> {
        let row: Option<(String,)> = on_db!(self.db(), pool => sqlx::query_as(
            "SELECT organization_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(pool).await)?;
        Ok(row.map(|(org,)| org))
    }
}
