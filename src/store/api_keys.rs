//! API keys: stored as SHA-256 hashes, each scoped to one organization, with its scopes
//! (space-separated words: `send`, `read`, `admin`), an optional expiry and a revocation time.
//! What a scope allows is decided in `crate::http::auth`; the store only keeps the words.

use super::{ApiKeys, Result, StoreError, new_id, now_ms, on_db};

/// Every scope, as keys created before scopes existed (migration 0008) were given.
pub const ALL_SCOPES: &str = "send read admin";

/// A key to record.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub organization_id: String,
    pub name: String,
    /// Hex SHA-256 of the whole token.
    pub key_hash: String,
    /// Space-separated scopes.
    pub scopes: String,
    /// Unix ms after which the key is refused.
    pub expires_at: Option<i64>,
}

/// What a live key grants.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyGrant {
    pub id: String,
    pub organization_id: String,
    pub scopes: String,
    pub expires_at: Option<i64>,
}

/// A key as `switchboard keys list` shows it (never its hash).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: String,
    pub organization_id: String,
    pub organization_slug: String,
    pub name: String,
    pub scopes: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl ApiKeys<'_> {
    /// Records a key's hash with every scope and no expiry; returns the key's id.
    pub async fn insert(self, organization_id: &str, name: &str, key_hash: &str) -> Result<String> {
        self.create(&NewApiKey {
            organization_id: organization_id.to_string(),
            name: name.to_string(),
            key_hash: key_hash.to_string(),
            scopes: ALL_SCOPES.to_string(),
            expires_at: None,
        })
        .await
    }

    /// Records a key; returns its id.
    pub async fn create(self, key: &NewApiKey) -> Result<String> {
        let id = new_id("key");
        on_db!(self.db(), |pool| {
            sqlx::query(
            "INSERT INTO api_keys (id, organization_id, name, key_hash, created_at, scopes, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id).bind(&key.organization_id).bind(&key.name).bind(&key.key_hash)
        .bind(now_ms()).bind(&key.scopes).bind(key.expires_at)
        .execute(pool).await.map(|_| ())
        })?;
        Ok(id)
    }

    /// What an unrevoked key grants (its expiry is the caller's to check, against its clock).
    pub async fn grant(self, key_hash: &str) -> Result<Option<KeyGrant>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT id, organization_id, scopes, expires_at FROM api_keys
             WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(pool)
        .await)?)
    }

    /// Every key (of one organization), newest first.
    pub async fn list(self, organization_id: Option<&str>) -> Result<Vec<ApiKeyRow>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT k.id, k.organization_id, o.slug AS organization_slug, k.name, k.scopes,
                    k.created_at, k.expires_at, k.revoked_at
             FROM api_keys k JOIN organizations o ON o.id = k.organization_id
             WHERE ($1 IS NULL OR k.organization_id = $1)
             ORDER BY k.created_at DESC, k.id DESC",
        )
        .bind(organization_id)
        .fetch_all(pool)
        .await)?)
    }

    /// One key by id.
    pub async fn get(self, id: &str) -> Result<ApiKeyRow> {
        on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT k.id, k.organization_id, o.slug AS organization_slug, k.name, k.scopes,
                    k.created_at, k.expires_at, k.revoked_at
             FROM api_keys k JOIN organizations o ON o.id = k.organization_id
             WHERE k.id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await)?
        .ok_or(StoreError::NotFound)
    }

    /// Revokes a key now. Returns false when it was already revoked (`NotFound` when no such key).
    pub async fn revoke(self, id: &str) -> Result<bool> {
        let changed = on_db!(self.db(), |pool| sqlx::query(
            "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(now_ms())
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        if changed == 0 {
            self.get(id).await?;
        }
        Ok(changed > 0)
    }

    /// Brings a key's expiry forward to `at` (never later than it already is).
    pub async fn expire(self, id: &str, at: i64) -> Result<()> {
        on_db!(self.db(), |pool| sqlx::query(
            "UPDATE api_keys SET expires_at = $2
             WHERE id = $1 AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(id)
        .bind(at)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }
}
