//! Webhook endpoints and their deliveries (migration 0012). An endpoint holds its sealed
//! secret(s) and the dispatcher's position in its organization's events feed; a delivery is
//! one event for one endpoint, a durable job with its own retry state (see
//! `crate::webhooks::dispatch` for who moves it between states).

use super::{EventCursor, Result, StoreError, Webhooks, new_id, now_ms, on_db};

/// A webhook endpoint as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookEndpointRow {
    pub organization_id: String,
    pub id: String,
    pub url: String,
    /// A JSON array of event kinds; empty means every kind.
    pub event_types: String,
    /// The signing secret, sealed (context `webhook_secret`).
    pub secret: Vec<u8>,
    /// The secret before the last rotation, still signing until `previous_until`.
    pub previous_secret: Option<Vec<u8>>,
    pub previous_until: Option<i64>,
    pub cursor_tx: i64,
    pub cursor_id: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl WebhookEndpointRow {
    /// The dispatcher's position in the feed.
    pub fn cursor(&self) -> EventCursor {
        EventCursor {
            tx: self.cursor_tx,
            id: self.cursor_id,
            floor: 0,
        }
    }
}

/// One event for one endpoint.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookDeliveryRow {
    /// Also the `webhook-id` header: stable across attempts, so receivers dedupe by it.
    pub id: String,
    pub organization_id: String,
    pub endpoint_id: String,
    pub event_id: i64,
    pub event_tx: i64,
    pub kind: String,
    pub order_key: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub give_up_at: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub delivered_at: Option<i64>,
}

/// A delivery to create when the dispatcher fans an event out.
#[derive(Debug, Clone)]
pub struct NewWebhookDelivery {
    pub event_id: i64,
    pub event_tx: i64,
    pub kind: String,
    pub order_key: String,
}

macro_rules! endpoint_columns {
    () => {
        "organization_id, id, url, event_types, secret, previous_secret, previous_until, \
         cursor_tx, cursor_id, created_at, updated_at"
    };
}

macro_rules! webhook_delivery_columns {
    () => {
        "id, organization_id, endpoint_id, event_id, event_tx, kind, order_key, status, attempts, \
         next_attempt_at, give_up_at, last_status, last_error, created_at, updated_at, delivered_at"
    };
}

/// Due deliveries, oldest first: of each endpoint's order key, the earliest pending delivery
/// (a key's events go out in order), when it is due and no daemon holds its lease. The
/// earliest of each key is one window over the pending rows. It was a `NOT EXISTS` (no earlier
/// pending delivery of the key) per row, which PostgreSQL, holding statistics from when the
/// table was small, ran as a nested loop reading every pending row again for each: 92 ms a
/// call at 2,000 pending, and the webhook bench's dispatcher spent most of its time there
/// (`store::webhooks::tests::due_deliveries_read_the_pending_rows_once_during_a_burst`).
const DUE_DELIVERIES: &str = concat!(
    "SELECT ",
    webhook_delivery_columns!(),
    " FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY organization_id, endpoint_id, order_key
                                       ORDER BY event_tx, event_id) AS place
          FROM webhook_deliveries WHERE status = 'pending') d
     WHERE d.place = 1 AND d.next_attempt_at <= $1
       AND (d.leased_until IS NULL OR d.leased_until < $1)
     ORDER BY d.event_tx, d.event_id LIMIT $2"
);

impl Webhooks<'_> {
    /// Creates the endpoint (true) or, when it exists, changes its URL and filter (false);
    /// the secret and cursor are only used when creating.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_endpoint(
        self,
        organization_id: &str,
        id: &str,
        url: &str,
        event_types: &str,
        sealed_secret: &[u8],
        cursor: EventCursor,
    ) -> Result<(WebhookEndpointRow, bool)> {
        let now = now_ms();
        let created: Option<String> = on_db!(self.db(), |pool| {
            sqlx::query_scalar(
            "INSERT INTO webhook_endpoints (organization_id, id, url, event_types, secret, cursor_tx,
                cursor_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
             ON CONFLICT (organization_id, id) DO NOTHING RETURNING id"
        )
        .bind(organization_id)
        .bind(id)
        .bind(url)
        .bind(event_types)
        .bind(sealed_secret)
        .bind(cursor.tx)
        .bind(cursor.id)
        .bind(now)
        .fetch_optional(pool)
        .await
        })?;
        if created.is_none() {
            on_db!(self.db(), |pool| sqlx::query(
                "UPDATE webhook_endpoints SET url = $3, event_types = $4, updated_at = $5
                 WHERE organization_id = $1 AND id = $2"
            )
            .bind(organization_id)
            .bind(id)
            .bind(url)
            .bind(event_types)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        }
        self.store
            .endpoints_changed
            .send_modify(|n| *n = n.wrapping_add(1));
        let row = self.endpoint(organization_id, id).await?;
        Ok((row, created.is_some()))
    }

    pub async fn endpoint(self, organization_id: &str, id: &str) -> Result<WebhookEndpointRow> {
        on_db!(self.db(), |pool| sqlx::query_as(concat!(
            "SELECT ",
            endpoint_columns!(),
            " FROM webhook_endpoints WHERE organization_id = $1 AND id = $2"
        ))
        .bind(organization_id)
        .bind(id)
        .fetch_optional(pool)
        .await)?
        .ok_or(StoreError::NotFound)
    }

    /// Every endpoint of every organization (the dispatcher's list).
    pub async fn all_endpoints(self) -> Result<Vec<WebhookEndpointRow>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_as(concat!(
            "SELECT ",
            endpoint_columns!(),
            " FROM webhook_endpoints ORDER BY organization_id, id"
        ))
        .fetch_all(pool)
        .await)?)
    }

    /// Deletes the endpoint and its deliveries; false when there was none.
    pub async fn delete_endpoint(self, organization_id: &str, id: &str) -> Result<bool> {
        let deleted = on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "DELETE FROM webhook_deliveries WHERE organization_id = $1 AND endpoint_id = $2",
            )
            .bind(organization_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let done =
                sqlx::query("DELETE FROM webhook_endpoints WHERE organization_id = $1 AND id = $2")
                    .bind(organization_id)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            tx.commit().await?;
            done.rows_affected()
        });
        Ok(deleted > 0)
    }

    /// Replaces the secret, keeping the one it replaces (`expected`, as read) until
    /// `previous_until`; false when another rotation came first.
    pub async fn rotate_secret(
        self,
        organization_id: &str,
        id: &str,
        expected: &[u8],
        sealed_secret: &[u8],
        previous_until: i64,
    ) -> Result<bool> {
        let done = on_db!(self.db(), |pool| sqlx::query(
            "UPDATE webhook_endpoints SET previous_secret = secret, previous_until = $3,
                secret = $4, updated_at = $5
             WHERE organization_id = $1 AND id = $2 AND secret = $6"
        )
        .bind(organization_id)
        .bind(id)
        .bind(previous_until)
        .bind(sealed_secret)
        .bind(now_ms())
        .bind(expected)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(done > 0)
    }

    /// Records deliveries for events up to `cursor` and moves the endpoint's cursor there, in
    /// one transaction. Idempotent: a delivery already recorded (another daemon fanned the
    /// same events out) is kept, and the cursor never moves backwards.
    pub async fn fan_out(
        self,
        endpoint: &WebhookEndpointRow,
        deliveries: &[NewWebhookDelivery],
        cursor: EventCursor,
        give_up_after_ms: i64,
    ) -> Result<()> {
        let now = now_ms();
        on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            for d in deliveries {
                sqlx::query(
                    "INSERT INTO webhook_deliveries (id, organization_id, endpoint_id, event_id,
                        event_tx, kind, order_key, status, attempts, next_attempt_at, give_up_at,
                        created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $9, $8, $8)
                     ON CONFLICT (organization_id, endpoint_id, event_id) DO NOTHING",
                )
                .bind(new_id("whd"))
                .bind(&endpoint.organization_id)
                .bind(&endpoint.id)
                .bind(d.event_id)
                .bind(d.event_tx)
                .bind(&d.kind)
                .bind(&d.order_key)
                .bind(now)
                .bind(now.saturating_add(give_up_after_ms))
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "UPDATE webhook_endpoints SET cursor_tx = $3, cursor_id = $4
                 WHERE organization_id = $1 AND id = $2
                   AND (cursor_tx < $3 OR (cursor_tx = $3 AND cursor_id < $4))",
            )
            .bind(&endpoint.organization_id)
            .bind(&endpoint.id)
            .bind(cursor.tx)
            .bind(cursor.id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Pending deliveries due at `now` and not leased, whose subject has no earlier pending
    /// delivery to the same endpoint (one subject's events go out in feed order), oldest
    /// first.
    pub async fn due_deliveries(self, now: i64, limit: i64) -> Result<Vec<WebhookDeliveryRow>> {
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as(DUE_DELIVERIES)
                .bind(now)
                .bind(limit)
                .fetch_all(pool)
                .await
        })?)
    }

    /// When the next pending delivery falls due (unix ms), if any.
    pub async fn next_due(self) -> Result<Option<i64>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE status = 'pending'"
        )
        .fetch_one(pool)
        .await)?)
    }

    /// Takes a due delivery for one attempt until `lease_until`; false when another daemon
    /// holds it or it is no longer pending.
    pub async fn claim_delivery(self, id: &str, now: i64, lease_until: i64) -> Result<bool> {
        let done = on_db!(self.db(), |pool| sqlx::query(
            "UPDATE webhook_deliveries SET leased_until = $3
             WHERE id = $1 AND status = 'pending' AND (leased_until IS NULL OR leased_until < $2)"
        )
        .bind(id)
        .bind(now)
        .bind(lease_until)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(done > 0)
    }

    /// The receiver answered 2xx.
    pub async fn delivered(self, id: &str, http_status: i64) -> Result<()> {
        let now = now_ms();
        on_db!(self.db(), |pool| sqlx::query(
            "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1,
                last_status = $2, last_error = NULL, delivered_at = $3, updated_at = $3,
                leased_until = NULL
             WHERE id = $1 AND status = 'pending'"
        )
        .bind(id)
        .bind(http_status)
        .bind(now)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// An attempt failed: due again at `next_attempt_at`, or dead when that is past its
    /// `give_up_at`. Returns whether it is dead now.
    pub async fn attempt_failed(
        self,
        id: &str,
        http_status: Option<i64>,
        error: &str,
        next_attempt_at: i64,
    ) -> Result<bool> {
        let now = now_ms();
        let status: Option<String> = on_db!(self.db(), |pool| sqlx::query_scalar(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status = $2,
                last_error = $3, next_attempt_at = $4, updated_at = $5, leased_until = NULL,
                status = CASE WHEN $4 > give_up_at THEN 'dead' ELSE 'pending' END
             WHERE id = $1 AND status = 'pending' RETURNING status"
        )
        .bind(id)
        .bind(http_status)
        .bind(error)
        .bind(next_attempt_at)
        .bind(now)
        .fetch_optional(pool)
        .await)?;
        Ok(status.as_deref() == Some("dead"))
    }

    /// An endpoint's deliveries, newest first, optionally of one status.
    pub async fn deliveries(
        self,
        organization_id: &str,
        endpoint_id: &str,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<WebhookDeliveryRow>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_as(concat!(
            "SELECT ",
            webhook_delivery_columns!(),
            " FROM webhook_deliveries
             WHERE organization_id = $1 AND endpoint_id = $2 AND ($3 IS NULL OR status = $3)
             ORDER BY event_tx DESC, event_id DESC LIMIT $4"
        ))
        .bind(organization_id)
        .bind(endpoint_id)
        .bind(status)
        .bind(limit)
        .fetch_all(pool)
        .await)?)
    }

    /// Puts a dead delivery back in the queue, due now, with a fresh retry window; a
    /// delivery in another state is left as it is. Returns the delivery.
    pub async fn retry_delivery(
        self,
        organization_id: &str,
        endpoint_id: &str,
        id: &str,
        give_up_after_ms: i64,
    ) -> Result<WebhookDeliveryRow> {
        let now = now_ms();
        on_db!(self.db(), |pool| sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $4,
                give_up_at = $5, updated_at = $4, leased_until = NULL
             WHERE organization_id = $1 AND endpoint_id = $2 AND id = $3 AND status = 'dead'"
        )
        .bind(organization_id)
        .bind(endpoint_id)
        .bind(id)
        .bind(now)
        .bind(now.saturating_add(give_up_after_ms))
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        on_db!(self.db(), |pool| sqlx::query_as(concat!(
            "SELECT ",
            webhook_delivery_columns!(),
            " FROM webhook_deliveries WHERE organization_id = $1 AND endpoint_id = $2 AND id = $3"
        ))
        .bind(organization_id)
        .bind(endpoint_id)
        .bind(id)
        .fetch_optional(pool)
        .await)?
        .ok_or(StoreError::NotFound)
    }

    /// [`Store::claim_webhook_delivery`] for a batch in one statement: the ids claimed.
    pub async fn claim_deliveries(
        self,
        ids: &[String],
        now: i64,
        lease_until: i64,
    ) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(on_db!(self.db(), |pool| {
            let mut qb = sqlx::QueryBuilder::new("UPDATE webhook_deliveries SET leased_until = ");
            qb.push_bind(lease_until)
                .push(" WHERE status = 'pending' AND (leased_until IS NULL OR leased_until < ")
                .push_bind(now)
                .push(") AND id IN (");
            super::touch_batch::push_list(&mut qb, ids);
            qb.push(") RETURNING id");
            qb.build_query_scalar().fetch_all(pool).await
        })?)
    }

    /// Several deliveries answered 2xx (`http_status` each), in one statement per status.
    pub async fn delivered_many(self, delivered: &[(String, i64)]) -> Result<()> {
        let now = now_ms();
        let mut by_status: std::collections::BTreeMap<i64, Vec<String>> = Default::default();
        for (id, status) in delivered {
            by_status.entry(*status).or_default().push(id.clone());
        }
        for (status, ids) in by_status {
            on_db!(self.db(), |pool| {
                let mut qb = sqlx::QueryBuilder::new(
                    "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, last_error = NULL, leased_until = NULL, last_status = ",
                );
                qb.push_bind(status)
                    .push(", delivered_at = ")
                    .push_bind(now)
                    .push(", updated_at = ")
                    .push_bind(now)
                    .push(" WHERE status = 'pending' AND id IN (");
                super::touch_batch::push_list(&mut qb, &ids);
                qb.push(")");
                qb.build().execute(pool).await.map(|_| ())
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// The webhook dispatcher sleeps through writes while no endpoint exists; creating or
    /// changing one through this process is what wakes it, so an endpoint's first events are
    /// not held back by the dispatcher's poll.
    #[tokio::test]
    async fn putting_an_endpoint_wakes_the_dispatcher() {
        let crate::testing::Fixture {
            core,
            org,
            guard: _,
            dir: _dir,
        } = crate::testing::Fixture::new(false, "north", "North").await;
        let mut changed = core.store.endpoints_changed();
        changed.mark_unchanged();
        for url in ["https://127.0.0.1:9/a", "https://127.0.0.1:9/b"] {
            core.store
                .webhooks()
                .put_endpoint(
                    &org.id,
                    "app",
                    url,
                    "[]",
                    b"sealed",
                    super::super::EventCursor::default(),
                )
                .await
                .expect("put");
            assert!(
                changed.has_changed().expect("open"),
                "{url}: created, then changed"
            );
            changed.mark_unchanged();
        }
    }

    /// A burst: the statistics were gathered while two deliveries were pending, then 5,000
    /// came in. Finding the due ones still reads the pending rows once (no join that reads
    /// them again per row), and returns the earliest of each order key in event order.
    #[tokio::test]
    async fn due_deliveries_read_the_pending_rows_once_during_a_burst() {
        let crate::testing::Fixture {
            core,
            org,
            guard,
            dir: _dir,
        } = crate::testing::Fixture::new(true, "burst", "Burst").await;
        let crate::store::Db::Postgres(pool) = core.store.db() else {
            panic!("a PostgreSQL store");
        };
        let insert = |from: i64, to: i64| {
            format!(
                "INSERT INTO webhook_deliveries (id, organization_id, endpoint_id, event_id, event_tx,
                    kind, order_key, status, next_attempt_at, give_up_at, created_at, updated_at)
                 SELECT 'whd_' || n, $1, 'hook', n, n, 'message.accepted', 'key' || (n % 2500),
                    'pending', 0, 9000000000000, 0, 0
                 FROM generate_series({from}, {to}) AS n"
            )
        };
        let (two, burst) = (insert(1, 2), insert(3, 5000));
        crate::testing::execute_each(
            pool,
            &org.id,
            &[
                "INSERT INTO webhook_endpoints (organization_id, id, url, event_types, secret,
                    cursor_tx, cursor_id, created_at, updated_at)
                 VALUES ($1, 'hook', 'https://127.0.0.1:9/hook', '[]', '\\x00', 0, 0, 0, 0)",
                &two,
                "ANALYZE webhook_deliveries",
                &burst,
            ],
        )
        .await;
        let plan: (serde_json::Value,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, FORMAT JSON) {}",
            super::DUE_DELIVERIES
        )))
        .bind(1_i64)
        .bind(64_i64)
        .fetch_one(pool)
        .await
        .expect("plan");
        let plan = plan.0;
        // Rows each scan of the table read (kept and filtered out), over all its loops.
        let read: f64 = crate::testing::scans_of(&plan, "webhook_deliveries")
            .iter()
            .map(|scan| {
                let rows = scan["Actual Rows"].as_f64().unwrap_or(0.0);
                let removed = scan["Rows Removed by Filter"].as_f64().unwrap_or(0.0);
                (rows + removed) * scan["Actual Loops"].as_f64().unwrap_or(1.0)
            })
            .sum();
        assert!(
            read <= 5000.0,
            "the pending rows are read once ({read} rows read): {plan}"
        );
        let due = core
            .store
            .webhooks()
            .due_deliveries(1, 64)
            .await
            .expect("due");
        let ids: Vec<i64> = due.iter().map(|d| d.event_id).collect();
        // Keys 1..2499 and 0 (events 1..2500) come first; each key's later events wait.
        assert_eq!(ids, (1..=64).collect::<Vec<i64>>());
        crate::testing::close(core, guard).await;
    }
}
