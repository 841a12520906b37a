//! The fleet's at-rest key canary: one row holding a known value sealed with the key every
//! daemon sharing this database must hold. Sealing and checking are `crate::daemon`'s business.

use super::{Canary, Result, now_ms, on_db};

impl Canary<'_> {
    /// The sealed canary, when a daemon has written one.
    pub async fn get(self) -> Result<Option<Vec<u8>>> {
        let row: Option<(Vec<u8>,)> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT sealed FROM keyring_canary WHERE id = 1",
        )
        .fetch_optional(pool)
        .await)?;
        Ok(row.map(|(sealed,)| sealed))
    }

    /// Writes the canary unless another daemon already did (the first one wins).
    pub async fn insert(self, sealed: &[u8]) -> Result<()> {
        let now = now_ms();
        on_db!(self.db(), |pool| sqlx::query(
            "INSERT INTO keyring_canary (id, sealed, created_at, updated_at) VALUES (1, $1, $2, $2)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(sealed)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Replaces the canary with one sealed under a newer key, if it is still `old` (a daemon
    /// that resealed first wins; the loser's value would be the same key's anyway).
    pub async fn reseal(self, old: &[u8], new: &[u8]) -> Result<bool> {
        let changed = on_db!(self.db(), |pool| {
            sqlx::query(
            "UPDATE keyring_canary SET sealed = $2, updated_at = $3 WHERE id = 1 AND sealed = $1",
        )
        .bind(old).bind(new).bind(now_ms())
        .execute(pool).await.map(|r| r.rows_affected())
        })?;
        Ok(changed > 0)
    }
}
