//! Helpers for the crate's own tests that need a whole core on a real database.

/// A core on a fresh SQLite file under `dir`, or on a new PostgreSQL database (dropped with
/// the guard's `drop_now`), with the embedded default configuration.
pub(crate) async fn core_on(
    postgres: bool,
    dir: &std::path::Path,
) -> (crate::daemon::Core, Option<DropDatabase>) {
    let mut config = crate::config::Config::from_toml("").expect("config");
    config.data_dir = dir.to_path_buf();
    config.outbox.dir = dir.join("outbox");
    let mut guard = None;
    if postgres {
        let admin = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let name = format!("sb_unit_{}", ulid::Ulid::new().to_string().to_lowercase());
        let pool = sqlx::PgPool::connect_with(crate::store::pg_options(&admin).expect("URL"))
            .await
            .expect("PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .expect("create database");
        pool.close().await;
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        config.database.url = Some(format!("{base}/{name}"));
        guard = Some(DropDatabase { admin, name });
    }
    let core = crate::daemon::Core::open(config).await.expect("core");
    (core, guard)
}

/// What most of the crate's store tests start from: a core ([`core_on`]) with one
/// organization, and the directory its files live in (removed when dropped).
pub(crate) struct Fixture {
    pub(crate) core: crate::daemon::Core,
    pub(crate) org: crate::store::Organization,
    pub(crate) guard: Option<DropDatabase>,
    pub(crate) dir: tempfile::TempDir,
}

impl Fixture {
    /// A core on SQLite or a new PostgreSQL database with organization `slug` (`name`).
    pub(crate) async fn new(postgres: bool, slug: &str, name: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (core, guard) = core_on(postgres, dir.path()).await;
        let org = core
            .store
            .organizations()
            .ensure(slug, name)
            .await
            .expect("organization");
        Self {
            core,
            org,
            guard,
            dir,
        }
    }
}

/// Runs each statement on `pool` in order, binding `organization_id` to those that name `$1`
/// (a test's fixture rows and `ANALYZE`s).
pub(crate) async fn execute_each(pool: &sqlx::PgPool, organization_id: &str, statements: &[&str]) {
    for sql in statements {
        let query = sqlx::query(sqlx::AssertSqlSafe(*sql));
        let query = if sql.contains("$1") {
            query.bind(organization_id)
        } else {
            query
        };
        query.execute(pool).await.expect(sql);
    }
}

/// Every node of a PostgreSQL JSON plan (`EXPLAIN (FORMAT JSON)`) that scans `relation`.
pub(crate) fn scans_of<'v>(
    plan: &'v serde_json::Value,
    relation: &str,
) -> Vec<&'v serde_json::Value> {
    fn walk<'v>(node: &'v serde_json::Value, relation: &str, out: &mut Vec<&'v serde_json::Value>) {
        match node {
            serde_json::Value::Array(items) => items.iter().for_each(|n| walk(n, relation, out)),
            serde_json::Value::Object(map) => {
                if map.get("Relation Name").and_then(|r| r.as_str()) == Some(relation) {
                    out.push(node);
                }
                map.values().for_each(|n| walk(n, relation, out));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(plan, relation, &mut out);
    out
}

/// Closes a core from [`core_on`] and drops its PostgreSQL database, if it made one.
pub(crate) async fn close(core: crate::daemon::Core, guard: Option<DropDatabase>) {
    core.store.close().await;
    if let Some(guard) = guard {
        guard.drop_now().await;
    }
}

pub(crate) struct DropDatabase {
    admin: String,
    name: String,
}

impl DropDatabase {
    pub(crate) async fn drop_now(self) {
        if let Ok(pool) =
            sqlx::PgPool::connect_with(crate::store::pg_options(&self.admin).expect("URL")).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&pool)
            .await;
            pool.close().await;
        }
    }
}
