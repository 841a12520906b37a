//! Organizations (tenants) and their lookup by slug.

use super::{Organization, Organizations, Result, StoreError, new_id, now_ms, on_db};

impl Organizations<'_> {
    /// The organization with this slug, created when absent.
    pub async fn ensure(self, slug: &str, name: &str) -> Result<Organization> {
        let id = new_id("org");
        let now = now_ms();
        on_db!(self.db(), |pool| sqlx::query(
            "INSERT INTO organizations (id, organization_id, slug, name, created_at)
             VALUES ($1, $1, $2, $3, $4) ON CONFLICT (slug) DO NOTHING",
        )
        .bind(&id)
        .bind(slug)
        .bind(name)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ()))?;
        self.by_slug(slug).await
    }

    pub async fn by_slug(self, slug: &str) -> Result<Organization> {
        let sql = concat!(
            "SELECT ",
            organization_columns!(),
            " FROM organizations WHERE slug = $1"
        );
        on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(slug)
            .fetch_optional(pool)
            .await)?
        .ok_or(StoreError::NotFound)
    }

    pub async fn get(self, id: &str) -> Result<Organization> {
        let sql = concat!(
            "SELECT ",
            organization_columns!(),
            " FROM organizations WHERE id = $1"
        );
        on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(pool)
            .await)?
        .ok_or(StoreError::NotFound)
    }

    /// Slugs of existing organizations (at most `limit`), to suggest when one is mistyped.
    pub async fn slugs(self, limit: i64) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT slug FROM organizations ORDER BY slug LIMIT $1",
        )
        .bind(limit)
        .fetch_all(pool)
        .await)?;
        Ok(rows.into_iter().map(|(slug,)| slug).collect())
    }

    /// Every organization's id (the reminder planner goes through them one by one).
    pub async fn ids(self) -> Result<Vec<String>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_scalar(
            "SELECT id FROM organizations ORDER BY id"
        )
        .fetch_all(pool)
        .await)?)
    }

    /// The organization with this slug, if it exists.
    pub async fn id_by_slug(self, slug: &str) -> Result<Option<String>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_scalar(
            "SELECT id FROM organizations WHERE slug = $1"
        )
        .bind(slug)
        .fetch_optional(pool)
        .await)?)
    }
}
