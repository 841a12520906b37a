//! Operator console sessions: a row per signed-in browser, found by the SHA-256 of its
//! cookie's token (the token itself is never stored), with the session's CSRF token and the
//! API key it was opened with (re-verified on each request).

use super::{ConsoleSessions, Result, now_ms, on_db};

/// One session.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConsoleSessionRow {
    pub token_hash: String,
    pub organization_id: String,
    pub key_id: String,
    /// The API key's hash (as `api_keys` stores it), to re-check it is still valid.
    pub key_hash: String,
    pub csrf_token: String,
    pub created_at: i64,
    pub last_seen_at: i64,
}

impl ConsoleSessions<'_> {
    pub async fn create(self, row: &ConsoleSessionRow) -> Result<()> {
        on_db!(self.db(), |pool| {
            sqlx::query(
            "INSERT INTO console_sessions (token_hash, organization_id, key_id, key_hash, csrf_token, created_at, last_seen_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&row.token_hash)
        .bind(&row.organization_id)
        .bind(&row.key_id)
        .bind(&row.key_hash)
        .bind(&row.csrf_token)
        .bind(row.created_at)
        .bind(row.last_seen_at)
        .execute(pool)
        .await
        .map(|_| ())
        })?;
        Ok(())
    }

    /// The session, if it was seen within `idle_ms`; its last-seen time moves to now. An idle
    /// one is deleted.
    pub async fn touch(self, token_hash: &str, idle_ms: i64) -> Result<Option<ConsoleSessionRow>> {
        let now = now_ms();
        let row: Option<ConsoleSessionRow> = on_db!(self.db(), |pool| {
            sqlx::query_as(
            "UPDATE console_sessions SET last_seen_at = $2 WHERE token_hash = $1 AND last_seen_at >= $3
             RETURNING token_hash, organization_id, key_id, key_hash, csrf_token, created_at, last_seen_at",
        )
        .bind(token_hash)
        .bind(now)
        .bind(now - idle_ms)
        .fetch_optional(pool)
        .await
        })?;
        if row.is_none() {
            self.delete(token_hash).await?;
        }
        Ok(row)
    }

    pub async fn delete(self, token_hash: &str) -> Result<()> {
        on_db!(self.db(), |pool| sqlx::query(
            "DELETE FROM console_sessions WHERE token_hash = $1"
        )
        .bind(token_hash)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Deletes sessions idle since before `before` (ms); returns how many.
    pub async fn prune(self, before: i64) -> Result<u64> {
        Ok(on_db!(self.db(), |pool| sqlx::query(
            "DELETE FROM console_sessions WHERE last_seen_at < $1"
        )
        .bind(before)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?)
    }
}
