//! Inbound fax webhooks (`fax_inbound`): recorded once per (provider, direction, provider id)
//! when the webhook arrives, claimed for one attempt by a conditional update (a lease in
//! `not_before`), then `filed` (handed to intake), `orphaned` (no organization owns the
//! number), retried later, or `failed`. The states and the backoff are
//! `crate::inbound::fax`'s; this file only stores them.
//!
//! `attempts` is an `INTEGER` column (a 32-bit integer on PostgreSQL), read as `i32`.

use super::{ReceivedFaxes, Result, now_ms, on_db};

/// A row of `fax_inbound`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FaxInboundRow {
    pub id: String,
    pub provider: String,
    pub direction: String,
    pub provider_id: String,
    pub connector: String,
    /// Sealed with the row id as associated data.
    pub raw: Vec<u8>,
    /// `received` | `filed` | `orphaned` | `failed`.
    pub status: String,
    pub attempts: i32,
    pub not_before: i64,
    pub reason: Option<String>,
    pub inbound_item_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

macro_rules! fax_columns {
    () => {
        "id, provider, direction, provider_id, connector, raw, status, attempts, not_before, \
         reason, inbound_item_id, created_at, updated_at"
    };
}

/// A fax webhook to record.
#[derive(Debug, Clone)]
pub struct NewFaxInbound {
    pub id: String,
    pub provider: String,
    pub direction: String,
    pub provider_id: String,
    pub connector: String,
    pub raw: Vec<u8>,
    /// The provider's event id (Telnyx numbers its webhooks), recorded with the fax.
    pub event_id: Option<String>,
}

/// What a batch returns: per fax, the id of its row (this batch's or an earlier one) and
/// whether this batch inserted it.
fn outcome(faxes: &[NewFaxInbound], inserted: Vec<String>) -> (Vec<(String, bool)>, Vec<usize>) {
    let inserted: std::collections::HashSet<String> = inserted.into_iter().collect();
    let mut recorded = Vec::with_capacity(faxes.len());
    let mut earlier = Vec::new();
    for (i, fax) in faxes.iter().enumerate() {
        if inserted.contains(&fax.id) {
            recorded.push((fax.id.clone(), true));
        } else {
            // Recorded before (a redelivery), or earlier in this batch: looked up below.
            recorded.push((String::new(), false));
            earlier.push(i);
        }
    }
    (recorded, earlier)
}

const EARLIER: &str =
    "SELECT id FROM fax_inbound WHERE provider = $1 AND direction = $2 AND provider_id = $3";

/// PostgreSQL: one statement text whatever the batch size (arrays, `UNNEST`), so it is
/// prepared once per connection; without event ids it commits by itself (no BEGIN/COMMIT
/// round trips on the webhook's path), with them in a transaction with the events.
async fn record_pg(
    conn: &mut sqlx::PgConnection,
    faxes: &[NewFaxInbound],
) -> Result<Vec<(String, bool)>> {
    use sqlx::Acquire as _;
    let now = now_ms();
    let column = |f: fn(&NewFaxInbound) -> &str| faxes.iter().map(f).collect::<Vec<&str>>();
    let ids = column(|f| &f.id);
    let providers = column(|f| &f.provider);
    let directions = column(|f| &f.direction);
    let provider_ids = column(|f| &f.provider_id);
    let connectors = column(|f| &f.connector);
    let raws: Vec<&[u8]> = faxes.iter().map(|f| f.raw.as_slice()).collect();
    let insert = sqlx::query_scalar::<_, String>(
        "INSERT INTO fax_inbound (id, provider, direction, provider_id, connector, raw,
            status, attempts, not_before, created_at, updated_at)
         SELECT id, provider, direction, provider_id, connector, raw, 'received', 0, $7, $7, $7
           FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[])
                AS t(id, provider, direction, provider_id, connector, raw)
         ON CONFLICT (provider, direction, provider_id) DO NOTHING RETURNING id",
    )
    .bind(&ids)
    .bind(&providers)
    .bind(&directions)
    .bind(&provider_ids)
    .bind(&connectors)
    .bind(&raws)
    .bind(now);
    let (events_connector, events): (Vec<&str>, Vec<&str>) = faxes
        .iter()
        .filter_map(|f| Some((f.connector.as_str(), f.event_id.as_deref()?)))
        .unzip();
    let inserted = if events.is_empty() {
        insert.fetch_all(&mut *conn).await?
    } else {
        let mut tx = conn.begin().await?;
        let inserted = insert.fetch_all(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO webhook_events (connector, event_id, created_at)
             SELECT connector, event_id, $3 FROM UNNEST($1::text[], $2::text[])
                 AS t(connector, event_id)
             ON CONFLICT DO NOTHING",
        )
        .bind(&events_connector)
        .bind(&events)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        inserted
    };
    let (mut recorded, earlier) = outcome(faxes, inserted);
    for i in earlier {
        let fax = &faxes[i];
        recorded[i].0 = sqlx::query_scalar(EARLIER)
            .bind(&fax.provider)
            .bind(&fax.direction)
            .bind(&fax.provider_id)
            .fetch_one(&mut *conn)
            .await?;
    }
    Ok(recorded)
}

/// SQLite: one multi-row `INSERT` (its one connection serializes writers anyway).
async fn record_sqlite(
    pool: &sqlx::SqlitePool,
    faxes: &[NewFaxInbound],
) -> Result<Vec<(String, bool)>> {
    let now = now_ms();
    let events: Vec<(&str, &str)> = faxes
        .iter()
        .filter_map(|f| Some((f.connector.as_str(), f.event_id.as_deref()?)))
        .collect();
    let mut insert = sqlx::QueryBuilder::new(
        "INSERT INTO fax_inbound (id, provider, direction, provider_id, connector, raw,
            status, attempts, not_before, created_at, updated_at) ",
    );
    insert.push_values(faxes, |mut row, fax| {
        row.push_bind(&fax.id)
            .push_bind(&fax.provider)
            .push_bind(&fax.direction)
            .push_bind(&fax.provider_id)
            .push_bind(&fax.connector)
            .push_bind(&fax.raw)
            .push_bind("received")
            .push_bind(0_i32)
            .push_bind(now)
            .push_bind(now)
            .push_bind(now);
    });
    insert.push(" ON CONFLICT (provider, direction, provider_id) DO NOTHING RETURNING id");
    let inserted: Vec<String> = if events.is_empty() {
        insert.build_query_scalar().fetch_all(pool).await?
    } else {
        let mut tx = pool.begin().await?;
        let inserted = insert.build_query_scalar().fetch_all(&mut *tx).await?;
        let mut qb = sqlx::QueryBuilder::new(
            "INSERT INTO webhook_events (connector, event_id, created_at) ",
        );
        qb.push_values(&events, |mut row, (connector, event_id)| {
            row.push_bind(*connector)
                .push_bind(*event_id)
                .push_bind(now);
        });
        qb.push(" ON CONFLICT DO NOTHING");
        qb.build().execute(&mut *tx).await?;
        tx.commit().await?;
        inserted
    };
    let (mut recorded, earlier) = outcome(faxes, inserted);
    for i in earlier {
        let fax = &faxes[i];
        recorded[i].0 = sqlx::query_scalar(EARLIER)
            .bind(&fax.provider)
            .bind(&fax.direction)
            .bind(&fax.provider_id)
            .fetch_one(pool)
            .await?;
    }
    Ok(recorded)
}

impl ReceivedFaxes<'_> {
    /// Records a received fax, due now. Returns the row's id and whether it is new (`false`:
    /// this provider's fax in this direction was recorded before; nothing changed).
    pub async fn record(self, fax: &NewFaxInbound) -> Result<(String, bool)> {
        let mut recorded = self.record_many(std::slice::from_ref(fax)).await?;
        recorded.pop().ok_or(super::StoreError::NotFound)
    }

    /// [`Self::record`] for many webhooks in one transaction (group commit), with their
    /// provider event ids: per fax, its row's id and whether it is new. A fax id seen twice
    /// in the batch is recorded once.
    pub async fn record_many(self, faxes: &[NewFaxInbound]) -> Result<Vec<(String, bool)>> {
        self.record_many_on(None, faxes).await
    }

    /// [`Self::record_many`] for the group commit's fax writers: on PostgreSQL on a
    /// connection each writer keeps between batches (`held`), so a batch waits for no pool
    /// and no liveness round trip before its one statement.
    pub(super) async fn record_many_on(
        self,
        held: Option<&super::HeldConnections>,
        faxes: &[NewFaxInbound],
    ) -> Result<Vec<(String, bool)>> {
        if faxes.is_empty() {
            return Ok(Vec::new());
        }
        match self.db() {
            super::Db::Postgres(pool) => {
                let mut conn = super::HeldConnections::checkout(held, pool).await?;
                let recorded = record_pg(&mut conn, faxes).await?;
                // Kept only after a success: a connection that failed is dropped.
                super::HeldConnections::checkin(held, conn);
                Ok(recorded)
            }
            super::Db::Sqlite(pool) => record_sqlite(pool, faxes).await,
        }
    }

    /// Takes the oldest due received fax for one attempt: it stays `received` with
    /// `not_before = lease_until`, so no other worker (of this daemon or another on the same
    /// database) takes it until the outcome is written or the lease runs out.
    pub async fn claim(self, now: i64, lease_until: i64) -> Result<Option<FaxInboundRow>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_as(concat!(
            "UPDATE fax_inbound SET not_before = $2, updated_at = $1
             WHERE id = (SELECT id FROM fax_inbound
                          WHERE status = 'received' AND not_before <= $1
                          ORDER BY not_before, id LIMIT 1)
               AND status = 'received' AND not_before <= $1
             RETURNING ",
            fax_columns!()
        ))
        .bind(now)
        .bind(lease_until)
        .fetch_optional(pool)
        .await)?)
    }

    /// When the next received fax falls due (unix ms), if any.
    pub async fn next_due(self) -> Result<Option<i64>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_scalar(
            "SELECT MIN(not_before) FROM fax_inbound WHERE status = 'received'"
        )
        .fetch_one(pool)
        .await)?)
    }

    /// The attempt finished the work: `filed` or `orphaned`, naming the item it became.
    pub async fn done(self, id: &str, status: &str, item_id: &str) -> Result<()> {
        let now = now_ms();
        on_db!(self.db(), |pool| sqlx::query(
            "UPDATE fax_inbound SET status = $2, inbound_item_id = $3, attempts = attempts + 1,
                reason = NULL, updated_at = $4
             WHERE id = $1 AND status = 'received'"
        )
        .bind(id)
        .bind(status)
        .bind(item_id)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// An attempt failed: due again at `not_before` with the reason, or `failed` for good when
    /// `permanent` or when this was attempt `max_attempts`. Returns the status now.
    pub async fn attempt_failed(
        self,
        id: &str,
        reason: &str,
        permanent: bool,
        not_before: i64,
        max_attempts: i32,
    ) -> Result<String> {
        let now = now_ms();
        let status: Option<String> = on_db!(self.db(), |pool| sqlx::query_scalar(
            "UPDATE fax_inbound SET attempts = attempts + 1, reason = $2, not_before = $3,
                updated_at = $4,
                status = CASE WHEN $5 OR attempts + 1 >= $6 THEN 'failed' ELSE 'received' END
             WHERE id = $1 AND status = 'received' RETURNING status"
        )
        .bind(id)
        .bind(reason)
        .bind(not_before)
        .bind(now)
        .bind(permanent)
        .bind(max_attempts)
        .fetch_optional(pool)
        .await)?;
        Ok(status.unwrap_or_else(|| "received".into()))
    }

    /// The provider's record of a received fax in `fax_records` (direction `inbound`, next to
    /// the outbound ones): the organization, the intake item it became, its pages and state.
    /// A repeat changes nothing.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_received(
        self,
        provider: &str,
        provider_id: &str,
        organization_id: &str,
        inbound_item_id: &str,
        pages: Option<i64>,
        provider_status: Option<&str>,
        partial: bool,
    ) -> Result<()> {
        let now = now_ms();
        let reason = partial.then_some("partial: only part of the fax arrived");
        on_db!(self.db(), |pool| {
            sqlx::query(
                "INSERT INTO fax_records (provider, direction, provider_id, organization_id,
                inbound_item_id, pages, provider_status, reason, created_at, updated_at)
             VALUES ($1, 'inbound', $2, $3, $4, $5, $6, $7, $8, $8)
             ON CONFLICT (provider, direction, provider_id) DO NOTHING",
            )
            .bind(provider)
            .bind(provider_id)
            .bind(organization_id)
            .bind(inbound_item_id)
            .bind(pages)
            .bind(provider_status)
            .bind(reason)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        Ok(())
    }

    /// How many received faxes are in `status` (benchmarks wait on it).
    pub async fn count_in(self, status: &str) -> Result<i64> {
        let (n,): (i64,) = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT COUNT(*) FROM fax_inbound WHERE status = $1"
        )
        .bind(status)
        .fetch_one(pool)
        .await)?;
        Ok(n)
    }

    /// A recorded fax by id (operator views and tests).
    pub async fn get(self, id: &str) -> Result<FaxInboundRow> {
        on_db!(self.db(), |pool| sqlx::query_as(concat!(
            "SELECT ",
            fax_columns!(),
            " FROM fax_inbound WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(pool)
        .await)?
        .ok_or(super::StoreError::NotFound)
    }
}
