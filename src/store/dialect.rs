//! Where SQLite and PostgreSQL differ, and only here. Every other statement of the store is
//! written once in the dialect both accept (`$n` placeholders, `RETURNING`, `ON CONFLICT`) and
//! run through [`on_db!`]; what cannot be — connecting, migrations, the event feed's settled
//! horizon, `LISTEN`, statement sizes — is a method of [`Db`] below.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgSslMode};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Row, SqlitePool};
use tokio::sync::watch;

use super::{Result, StoreError};

/// Which database, with its pool.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same expression against whichever pool is configured:
/// `on_db!(self.db(), |pool| sqlx::query(sql).execute(pool).await)`. The expression is
/// compiled once per backend, so every bound value must encode for both. Written like a
/// closure so rustfmt formats the body (it leaves `pool => …` macro arguments alone).
#[macro_export]
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}

/// [`on_db!`] for a body that runs in one transaction `$tx`, which the body commits:
/// `on_tx!(self.db(), held, |tx| { …; tx.commit().await?; value })`. On PostgreSQL with
/// `held` (a group-commit writer's [`HeldConnections`]) it runs on a kept connection, kept
/// again once the body has succeeded (one that failed, or a body that returned early, lets
/// its connection go back to the pool: the next batch takes a fresh one).
macro_rules! on_tx {
    ($db:expr, $held:expr, |$tx:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite(pool) => {
                let mut $tx = pool.begin().await?;
                $body
            }
            $crate::store::Db::Postgres(pool) => {
                let held: Option<&$crate::store::HeldConnections> = $held;
                let mut conn = $crate::store::HeldConnections::checkout(held, pool).await?;
                let out = {
                    let mut $tx = sqlx::Connection::begin(&mut *conn).await?;
                    $body
                };
                $crate::store::HeldConnections::checkin(held, conn);
                out
            }
        }
    };
}
pub(crate) use on_tx;

/// One column of `rows`, as PostgreSQL's `UNNEST` takes it (one array parameter), for the
/// batch writers that send rows as arrays (`hl7_pg`, `accept_pg`).
pub(super) fn column<'r, T, V>(rows: &'r [T], f: impl FnMut(&'r T) -> V) -> Vec<V> {
    rows.iter().map(f).collect()
}

/// How long a group-commit writer keeps a connection it has not used before it goes back to
/// the pool.
const HELD_IDLE: Duration = Duration::from_secs(1);

/// Connections the group-commit writers keep between batches (PostgreSQL only): at most one
/// per writer, each out of the pool while kept, so a steady load pays no pool hand-over per
/// batch (sqlx pings every connection given back to the pool: a round trip). One unused for
/// [`HELD_IDLE`] goes back ([`HeldConnections::keep_swept`]), so the writers of a quiet kind
/// (HL7 while the API is busy) do not sit on connections the rest of the daemon needs.
#[derive(Default)]
pub(crate) struct HeldConnections(
    std::sync::Mutex<
        Vec<(
            sqlx::pool::PoolConnection<sqlx::Postgres>,
            std::time::Instant,
        )>,
    >,
);

impl HeldConnections {
    /// A connection for one batch: one `held` keeps, else one from `pool`.
    pub(crate) async fn checkout(
        held: Option<&Self>,
        pool: &PgPool,
    ) -> std::result::Result<sqlx::pool::PoolConnection<sqlx::Postgres>, sqlx::Error> {
        match held.and_then(Self::take) {
            Some(conn) => Ok(conn),
            None => pool.acquire().await,
        }
    }

    /// After a batch that succeeded: `conn` is kept for the next one (with `held`), else it
    /// goes back to the pool. (One whose batch failed is simply dropped, never checked in.)
    pub(crate) fn checkin(held: Option<&Self>, conn: sqlx::pool::PoolConnection<sqlx::Postgres>) {
        if let Some(held) = held {
            held.put(conn);
        }
    }

    fn take(&self) -> Option<sqlx::pool::PoolConnection<sqlx::Postgres>> {
        Some(self.0.lock().ok()?.pop()?.0)
    }

    fn put(&self, conn: sqlx::pool::PoolConnection<sqlx::Postgres>) {
        if let Ok(mut held) = self.0.lock() {
            held.push((conn, std::time::Instant::now()));
        }
    }

    /// Gives back to the pool every connection kept unused for `idle` or longer.
    fn sweep(&self, idle: Duration) {
        let expired: Vec<_> = match self.0.lock() {
            Ok(mut held) => {
                let (expired, kept) = held.drain(..).partition(|(_, at)| at.elapsed() >= idle);
                *held = kept;
                expired
            }
            Err(_) => return,
        };
        // Dropped outside the lock: each goes back to the pool in a task of its own.
        drop(expired);
    }

    /// Sweeps `held` every [`HELD_IDLE`] for as long as anything else holds it. Needs a
    /// tokio runtime.
    pub(crate) fn keep_swept(held: &std::sync::Arc<Self>) {
        let held = std::sync::Arc::downgrade(held);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HELD_IDLE).await;
                let Some(held) = held.upgrade() else { return };
                held.sweep(HELD_IDLE);
            }
        });
    }
}

/// The settled horizon of PostgreSQL's event feed: below the oldest transaction of *this
/// database* still running, every transaction that could write an event has ended. The
/// snapshot's own xmin will not do: it covers the whole cluster, so any open transaction in
/// another database held the feed back. Of the snapshot's running ids we keep those a backend
/// of this database holds; none running means everything below xmax is final.
const PG_SETTLED_TX: &str = "SELECT COALESCE(
        (SELECT MIN(x::text::bigint) FROM pg_snapshot_xip(s) AS x
          WHERE xid(x) IN (SELECT backend_xid FROM pg_stat_activity
                            WHERE datname = current_database()
                              AND backend_xid IS NOT NULL)),
        pg_snapshot_xmax(s)::text::bigint)
     FROM pg_current_snapshot() AS s";

/// True unless the session is inside a transaction block (sent alone, by the simple query
/// protocol): a block's transaction started at its `BEGIN`, before this statement.
const OUTSIDE_A_BLOCK: &str = "SELECT now() = statement_timestamp()";

/// How long a pooled PostgreSQL connection may sit idle before it is tested (pinged) on its
/// way out of the pool.
const PG_IDLE_TEST: Duration = Duration::from_secs(1);

/// The PostgreSQL connection options of a URL. Unless the URL (or `PGSSLMODE`) names an
/// `sslmode`, a server on a loopback address or a Unix socket is reached without TLS: there TLS
/// protects nothing, and every pooled connection would pay a handshake and hold its own
/// OpenSSL context with the system's root store loaded (about 1.8 MB resident). Any other host
/// keeps sqlx's default, `prefer`; `sslmode=require`/`verify-full` are honoured everywhere.
pub fn pg_options(url: &str) -> Result<PgConnectOptions> {
    let options = PgConnectOptions::from_str(url)?;
    let explicit = std::env::var_os("PGSSLMODE").is_some()
        || url::Url::parse(url).is_ok_and(|u| {
            u.query_pairs()
                .any(|(key, _)| key == "sslmode" || key == "ssl-mode")
        });
    let local = options.get_socket().is_some() || is_loopback(options.get_host());
    Ok(if local && !explicit {
        options.ssl_mode(PgSslMode::Disable)
    } else {
        options
    })
}

/// The daemon's sessions run without PostgreSQL's JIT compiler (`jit = off`), unless the URL's
/// `options` set `jit` themselves. Its statements are short, and JIT starts at an estimated
/// cost, not a measured one: a batch read whose estimate a table without statistics yet
/// inflated (a per-key lookup of 1,000 ids estimated at 1.1 million) spent 88 ms compiling a
/// statement that ran in 6.
fn without_jit(options: PgConnectOptions) -> PgConnectOptions {
    if options.get_options().is_some_and(|o| o.contains("jit")) {
        options
    } else {
        options.options([("jit", "off")])
    }
}

/// `localhost`, a loopback address or a socket directory.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.starts_with('/')
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Db {
    /// The statement that makes a just-begun transaction one read snapshot, if the backend
    /// needs one: PostgreSQL's default `READ COMMITTED` takes a new snapshot per statement,
    /// while a SQLite transaction in WAL mode already reads one snapshot throughout.
    pub(super) fn snapshot_read(&self) -> Option<&'static str> {
        match self {
            Db::Sqlite(_) => None,
            Db::Postgres(_) => Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"),
        }
    }

    /// Connects by URL scheme (`sqlite:` or `postgres:`/`postgresql:`). On SQLite the file is
    /// made owner-only first, and every connection wakes `events_written` when a statement
    /// writes the events table.
    pub(super) async fn connect(
        url: &str,
        max_connections: u32,
        sqlite_full_sync: bool,
        events_written: &Arc<watch::Sender<u64>>,
    ) -> Result<Self> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(if sqlite_full_sync {
                    SqliteSynchronous::Full
                } else {
                    SqliteSynchronous::Normal
                })
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(30));
            prepare_sqlite_file(options.get_filename()).map_err(sqlx::Error::Io)?;
            let pool = SqlitePoolOptions::new()
                // SQLite has one writer. One connection queues writers in-process (fair, no
                // waiting) instead of letting them collide and sleep in SQLite's busy handler,
                // which measured 2x slower with p99 latencies in the hundreds of ms.
                .max_connections(1)
                // No idle timeout and no lifetime, so sqlx spawns no pool maintenance task: in
                // sqlx 0.9 that task loops `for _ in 0..num_idle` over an atomic count that can
                // wrap, and was caught spinning a core for minutes (a `switchboard dead-letters
                // list` that never exited). One connection to a file gains nothing from either.
                .idle_timeout(None)
                .max_lifetime(None)
                .after_connect({
                    let events_written = events_written.clone();
                    move |conn, _| {
                        let events_written = events_written.clone();
                        Box::pin(async move {
                            // Fires inside the writing statement; a follower woken by it reads
                            // through the same single connection, so after the commit.
                            conn.lock_handle().await?.set_update_hook(move |change| {
                                if change.table == "events" {
                                    events_written.send_modify(|n| *n = n.wrapping_add(1));
                                }
                            });
                            Ok(())
                        })
                    }
                })
                .connect_with(options)
                .await?;
            Ok(Db::Sqlite(pool))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = without_jit(pg_options(url)?);
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(30))
                // As on SQLite: no maintenance task to spin. A connection that breaks is
                // replaced on its next use; idle ones stay (at most `max_connections`).
                .idle_timeout(None)
                .max_lifetime(None)
                // sqlx pings every connection it hands out (a round trip before each
                // transaction or statement, about a third of a small batch's time on a busy
                // machine). Only a connection idle for a while is tested: one in steady use
                // has just shown it is alive, and one that broke since fails its statement,
                // which callers retry, as they would a failure a moment later.
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= PG_IDLE_TEST {
                            sqlx::Connection::ping(conn).await?;
                        }
                        Ok(true)
                    })
                })
                // A connection the server still holds inside a transaction block is closed,
                // not pooled: sqlx 0.9.0 leaves one so when a future is dropped during
                // `begin()`'s round trip (an HTTP client gone, a timeout, an aborted task), and
                // its release check does not look (transact-rs/sqlx#4393, fixed upstream after
                // 0.9.0). Pooled, every later statement on it would run inside that transaction:
                // never committed, holding its locks. Outside a block, a statement's
                // transaction starts with the statement.
                .after_release(|conn, _| {
                    Box::pin(async move {
                        // One simple-protocol message: outside a block its implicit
                        // transaction and the statement start together (with the extended
                        // protocol they start at different messages).
                        let outside: bool = sqlx::raw_sql(OUTSIDE_A_BLOCK)
                            .fetch_one(&mut *conn)
                            .await?
                            .try_get(0)?;
                        if !outside {
                            tracing::warn!(
                                "a PostgreSQL connection was released inside a transaction block; closed"
                            );
                        }
                        Ok(outside)
                    })
                })
                .connect_with(options)
                .await?;
            Ok(Db::Postgres(pool))
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    pub(super) fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// Applies our migrations (tracked in `switchboard_migrations`) and the job queue's.
    pub(super) async fn migrate(&self) -> Result<()> {
        match self {
            Db::Sqlite(pool) => {
                let mut ours = sqlx::migrate!("migrations/sqlite");
                ours.dangerous_set_table_name("switchboard_migrations");
                ours.run(pool).await?;
                // apalis's own migrations; its `setup()` would also turn synchronous OFF on a
                // pooled connection, which we do not want for a store of record.
                let mut queue = apalis_sqlite::SqliteStorage::<()>::migrations();
                queue.set_ignore_missing(true);
                queue.run(pool).await?;
                pin_job_statistics(pool).await?;
            }
            Db::Postgres(pool) => {
                let mut ours = sqlx::migrate!("migrations/postgres");
                ours.dangerous_set_table_name("switchboard_migrations");
                ours.run(pool).await?;
                apalis_postgres::PostgresStorage::<()>::setup(pool)
                    .await
                    .map_err(StoreError::Queue)?;
            }
        }
        Ok(())
    }

    /// The versions of our migrations this binary knows, and those the database has applied
    /// (none when it has no migrations table yet).
    pub(super) async fn migration_versions(&self) -> Result<(Vec<i64>, Vec<i64>)> {
        let known: Vec<i64> = match self {
            Db::Sqlite(_) => sqlx::migrate!("migrations/sqlite")
                .iter()
                .map(|m| m.version)
                .collect(),
            Db::Postgres(_) => sqlx::migrate!("migrations/postgres")
                .iter()
                .map(|m| m.version)
                .collect(),
        };
        let exists: bool = match self {
            Db::Sqlite(pool) => {
                sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_master
                  WHERE type = 'table' AND name = 'switchboard_migrations')",
                )
                .fetch_one(pool)
                .await?
            }
            Db::Postgres(pool) => {
                sqlx::query_scalar("SELECT to_regclass('switchboard_migrations') IS NOT NULL")
                    .fetch_one(pool)
                    .await?
            }
        };
        let applied = if exists {
            on_db!(self, |pool| sqlx::query_scalar(
                "SELECT version FROM switchboard_migrations WHERE success ORDER BY version",
            )
            .fetch_all(pool)
            .await)?
        } else {
            Vec::new()
        };
        Ok((known, applied))
    }

    /// The transaction id below which the event feed is final, on PostgreSQL (see
    /// [`PG_SETTLED_TX`]); `None` on SQLite, whose one writer makes every committed event final.
    pub(super) async fn settled_tx(&self) -> Result<Option<i64>> {
        match self {
            Db::Sqlite(_) => Ok(None),
            Db::Postgres(pool) => Ok(Some(
                sqlx::query_scalar(PG_SETTLED_TX).fetch_one(pool).await?,
            )),
        }
    }

    /// A `LISTEN`/`NOTIFY` listener on PostgreSQL; SQLite has none.
    pub(super) async fn listener(&self) -> std::result::Result<Option<PgListener>, sqlx::Error> {
        match self {
            Db::Sqlite(_) => Ok(None),
            Db::Postgres(pool) => Ok(Some(PgListener::connect_with(pool).await?)),
        }
    }

    /// Rows per multi-row INSERT for a statement of `params_per_row` parameters: under
    /// PostgreSQL's 65,535 and SQLite's 32,766 bind parameters.
    pub(super) fn rows_per_statement(&self, params_per_row: usize) -> usize {
        let limit = match self {
            Db::Sqlite(_) => 32_766,
            Db::Postgres(_) => 65_535,
        };
        (limit / params_per_row.max(1)).clamp(1, 5_000)
    }

    /// Deletes up to `batch` of the job queue's finished jobs (done, failed or killed) that
    /// finished before `cutoff_ms`. apalis keeps them in `Jobs` (SQLite, `done_at` in unix
    /// seconds) or `apalis.jobs` (PostgreSQL, `timestamptz`).
    pub(super) async fn prune_finished_jobs(&self, cutoff_ms: i64, batch: i64) -> Result<u64> {
        let removed = match self {
            Db::Sqlite(pool) => sqlx::query(
                "DELETE FROM Jobs WHERE rowid IN (
                    SELECT rowid FROM Jobs WHERE status IN ('Done', 'Failed', 'Killed')
                       AND done_at IS NOT NULL AND done_at < $1 LIMIT $2)",
            )
            .bind(cutoff_ms / 1000)
            .bind(batch)
            .execute(pool)
            .await?
            .rows_affected(),
            Db::Postgres(pool) => sqlx::query(
                "DELETE FROM apalis.jobs WHERE id IN (
                    SELECT id FROM apalis.jobs WHERE status IN ('Done', 'Failed', 'Killed')
                       AND done_at IS NOT NULL AND done_at < to_timestamp($1::double precision / 1000)
                     LIMIT $2)",
            )
            .bind(cutoff_ms)
            .bind(batch)
            .execute(pool)
            .await?
            .rows_affected(),
        };
        Ok(removed)
    }

    /// How many group-commit flushers of each kind: one on SQLite, whose writes serialize
    /// anyway; two on PostgreSQL.
    pub(super) fn flushers(&self) -> usize {
        match self {
            Db::Sqlite(_) => 1,
            Db::Postgres(_) => 2,
        }
    }
}

/// Rows per distinct value of a column of apalis's `Jobs` table, for [`pin_job_statistics`].
/// `id` is unique; a fleet has a handful of workers, statuses and channels, so `lock_by`,
/// `status` and `job_type` each match a large part of the table; times are nearly distinct.
fn jobs_rows_per_value(column: &str) -> i64 {
    match column {
        "id" => 1,
        "lock_by" | "status" | "job_type" => JOBS_NOTIONAL_ROWS / 5,
        _ => 10,
    }
}

/// The table size the pinned statistics describe. Only the shape matters: how selective
/// each index is next to the others.
const JOBS_NOTIONAL_ROWS: i64 = 1_000_000;

/// Gives SQLite's planner the shape of apalis's `Jobs` table (`sqlite_stat1` rows, as
/// `ANALYZE` would write for a large queue) and reloads it.
///
/// Without statistics SQLite takes any index equality to match about ten rows. apalis acks
/// a batch with `UPDATE Jobs … FROM json_each(?) … WHERE Jobs.id = j.task_id AND
/// Jobs.lock_by = ?`, and the planner then walks every job the worker ever locked (done
/// ones included) and parses the batch's JSON again for each: the queue slowed down as the
/// table grew, and that JSON parsing was the SQLite connection's largest cost under load.
/// With `lock_by` known to match a large part of the table, it looks each acked id up by
/// the unique index instead; `lock.sql` and `fetch_completed_tasks.sql` likewise. Written
/// on every start, so a later `ANALYZE` of a small table does not leave the planner with
/// figures that stop being true as the queue grows.
async fn pin_job_statistics(pool: &SqlitePool) -> Result<()> {
    let mut conn = pool.acquire().await?;
    // Creates `sqlite_stat1` when missing, analysing only our one-row-per-migration table.
    sqlx::query("ANALYZE switchboard_migrations")
        .execute(&mut *conn)
        .await?;
    let indexes: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'Jobs' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut rows = Vec::with_capacity(indexes.len());
    for (index,) in indexes {
        let columns: Vec<(Option<String>,)> =
            sqlx::query_as("SELECT name FROM pragma_index_info($1) ORDER BY seqno")
                .bind(&index)
                .fetch_all(&mut *conn)
                .await?;
        let mut stat = vec![JOBS_NOTIONAL_ROWS];
        for (column,) in columns {
            let previous = stat.last().copied().unwrap_or(JOBS_NOTIONAL_ROWS);
            let per_value = jobs_rows_per_value(column.as_deref().unwrap_or(""));
            stat.push(per_value.clamp(1, previous));
        }
        let stat = stat
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        rows.push((index, stat));
    }
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query("DELETE FROM sqlite_stat1 WHERE tbl = 'Jobs'")
        .execute(&mut *tx)
        .await?;
    for (index, stat) in &rows {
        sqlx::query("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES ('Jobs', $1, $2)")
            .bind(index)
            .bind(stat)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    // Loads the statistics into this connection's planner (the pool's only one).
    sqlx::query("ANALYZE sqlite_schema")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Makes the database file owner-only before SQLite opens it: its directory 0700 when we
/// create it, the file created 0600 (SQLite gives `-wal` and `-shm` the database file's
/// mode), and an existing file and its `-wal`/`-shm` tightened to 0600.
fn prepare_sqlite_file(path: &std::path::Path) -> std::io::Result<()> {
    let name = path.as_os_str().to_string_lossy();
    if name.is_empty() || name.starts_with(':') {
        return Ok(()); // in memory
    }
    if let Some(dir) = path.parent() {
        crate::files::private_dir(dir)?;
    }
    match crate::files::create_private(path, b"") {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        other => other?,
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let file = format!("{name}{suffix}");
        crate::files::restrict_file(std::path::Path::new(&file))?;
        if let Some(dir) = path.parent() {
            crate::files::give_to_dir_owner(std::path::Path::new(&file), dir)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test server's URL.
    fn test_url() -> String {
        std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    /// A pool of at most `max` connections to `url` as the daemon opens one.
    async fn daemon_pool(url: &str, max: u32) -> PgPool {
        let events = Arc::new(watch::channel(0).0);
        let Db::Postgres(pool) = Db::connect(url, max, false, &events)
            .await
            .expect("PostgreSQL")
        else {
            panic!("PostgreSQL");
        };
        pool
    }

    /// Whether the connection `url` gives is encrypted, by the server's own account.
    async fn encrypted(url: &str) -> bool {
        let pool = PgPool::connect_with(pg_options(url).expect("URL"))
            .await
            .expect("PostgreSQL");
        let (ssl,): (bool,) =
            sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(&pool)
                .await
                .expect("pg_stat_ssl");
        pool.close().await;
        ssl
    }

    /// The test server (Debian's, `ssl = on`) on loopback: no TLS unless the URL asks for it.
    #[tokio::test]
    async fn loopback_postgres_without_tls_unless_asked() {
        let url = test_url();
        assert!(
            !url.contains("sslmode"),
            "the test URL names no sslmode: {url}"
        );
        assert!(!encrypted(&url).await, "loopback, no sslmode: plain");
        let separator = if url.contains('?') { '&' } else { '?' };
        assert!(
            encrypted(&format!("{url}{separator}sslmode=require")).await,
            "sslmode=require is honoured"
        );
    }

    /// The daemon's sessions run without JIT (the server's default is `on`), unless the URL's
    /// `options` say otherwise.
    #[tokio::test]
    async fn the_daemons_sessions_run_without_jit_unless_the_url_says() {
        let url = test_url();
        // The session's setting, and the server's own.
        let jit = |url: String| async move {
            let pool = daemon_pool(&url, 1).await;
            let settings: (String, String) = sqlx::query_as(
                "SELECT current_setting('jit'), boot_val FROM pg_settings WHERE name = 'jit'",
            )
            .fetch_one(&pool)
            .await
            .expect("jit");
            pool.close().await;
            settings
        };
        assert_eq!(
            jit(url.clone()).await,
            ("off".into(), "on".into()),
            "the server would compile"
        );
        let separator = if url.contains('?') { '&' } else { '?' };
        assert_eq!(
            jit(format!("{url}{separator}options=-c%20jit%3Don"))
                .await
                .0,
            "on",
            "the operator's own choice is kept"
        );
    }

    /// A connection released while the server holds it inside a transaction block (as a
    /// future dropped during `begin()` leaves it: the server in a transaction sqlx does not
    /// count) is closed: the next statement runs in a transaction of its own, and what the
    /// abandoned block wrote is rolled back.
    #[tokio::test]
    async fn a_connection_left_inside_a_transaction_is_not_pooled() {
        let url = test_url();
        let pool = daemon_pool(&url, 1).await;
        let table = format!("sb_left_open_{}", std::process::id());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (n INT)"
        )))
        .execute(&pool)
        .await
        .expect("table");
        {
            let mut conn = pool.acquire().await.expect("connection");
            sqlx::raw_sql("BEGIN")
                .execute(&mut *conn)
                .await
                .expect("BEGIN");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} VALUES (1)"
            )))
            .execute(&mut *conn)
            .await
            .expect("insert");
        }
        // The pool has one connection: the next statement waits for the released one (or
        // its replacement).
        let outside: bool = sqlx::raw_sql(OUTSIDE_A_BLOCK)
            .fetch_one(&pool)
            .await
            .expect("statement")
            .get(0);
        assert!(outside, "the next statement ran inside the abandoned block");
        let (rows,): (i64,) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&pool)
                .await
                .expect("count");
        assert_eq!(rows, 0, "the abandoned block's write was rolled back");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
            .execute(&pool)
            .await
            .expect("drop");
        pool.close().await;
    }

    /// A writer's kept connection stays out of the pool while it is in use, and goes back to
    /// the pool once it has been unused for the sweep's idle time.
    #[tokio::test]
    async fn a_kept_connection_goes_back_to_the_pool_once_unused() {
        let url = test_url();
        let pool = daemon_pool(&url, 2).await;
        let held = HeldConnections::default();
        held.put(pool.acquire().await.expect("a connection"));
        held.sweep(Duration::from_secs(60));
        let kept = held.take().expect("kept while recently used");
        held.put(kept);
        held.sweep(Duration::ZERO);
        assert!(held.take().is_none(), "swept");
        // Given back in a task of its own: every connection of the pool is idle once it lands.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.num_idle() < pool.size() as usize {
            assert!(
                std::time::Instant::now() < deadline,
                "the swept connection is back in the pool ({} of {} idle)",
                pool.num_idle(),
                pool.size()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        pool.close().await;
    }

    /// Neither pool sets an idle timeout or a lifetime, so sqlx starts no maintenance task
    /// (the task that was caught spinning a core; see `Db::connect`).
    #[tokio::test]
    async fn pools_have_no_maintenance_task() {
        let dir = tempfile::tempdir().expect("dir");
        let events = Arc::new(watch::channel(0).0);
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let Db::Sqlite(pool) = Db::connect(&url, 1, false, &events).await.expect("SQLite") else {
            panic!("SQLite");
        };
        assert_eq!(pool.options().get_idle_timeout(), None);
        assert_eq!(pool.options().get_max_lifetime(), None);
        let pool = daemon_pool(&test_url(), 2).await;
        assert_eq!(pool.options().get_idle_timeout(), None);
        assert_eq!(pool.options().get_max_lifetime(), None);
        pool.close().await;
    }

    #[test]
    fn which_hosts_are_local() {
        for local in [
            "localhost",
            "127.0.0.1",
            "127.8.9.10",
            "[::1]",
            "::1",
            "/run/postgresql",
        ] {
            assert!(is_loopback(local), "{local}");
        }
        for remote in [
            "db.example.org",
            "10.0.0.5",
            "[2001:db8::1]",
            "localhost.example.org",
        ] {
            assert!(!is_loopback(remote), "{remote}");
        }
        let remote = pg_options("postgres://u@db.example.org/x").expect("URL");
        assert!(matches!(remote.get_ssl_mode(), PgSslMode::Prefer));
        let local = pg_options("postgres://u@127.0.0.1/x").expect("URL");
        assert!(matches!(local.get_ssl_mode(), PgSslMode::Disable));
        let asked = pg_options("postgres://u@localhost/x?sslmode=verify-full").expect("URL");
        assert!(matches!(asked.get_ssl_mode(), PgSslMode::VerifyFull));
    }
}
