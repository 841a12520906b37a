//! Named cursors: how far a follower of the event feed has read (urgent alerts, sweeps).

use super::{Cursors, Result, on_db};

impl Cursors<'_> {
    pub async fn get(self, name: &str) -> Result<Option<i64>> {
        let row: Option<(i64,)> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT position FROM cursors WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(pool)
        .await)?;
        Ok(row.map(|(p,)| p))
    }

    pub async fn set(self, name: &str, position: i64) -> Result<()> {
        on_db!(self.db(), |pool| {
            sqlx::query(
            "INSERT INTO cursors (name, position) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET position = excluded.position WHERE cursors.position < excluded.position",
        ).bind(name).bind(position).execute(pool).await.map(|_| ())
        })?;
        Ok(())
    }
}
