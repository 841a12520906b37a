//! Test harness: a real store per test (a fresh SQLite file, or a fresh PostgreSQL database on
//! `TEST_DATABASE_URL`), the real daemon on a port-0 listener, and an HTTP client.
//! `both_databases!` runs one scenario on SQLite and on PostgreSQL.
//!
//! Shared helpers, each test binary using what it needs (hence `dead_code` allowed here):
//! [`wait`] (poll until, with a deadline), [`process`] (`switchboard run` in its own process),
//! [`pki`] (a test PKI from the openssl CLI), [`ports`] (ports held for peers), [`provider`]
//! (a loopback SMS provider and signed webhooks), [`prism`] (a provider's published API served
//! by Prism), [`mail`] (SMTP, IMAP and HISP peers), [`fixtures`] (message and delivery rows).
#![allow(dead_code)]

pub mod contracts;
pub mod fixtures;
pub mod hisp;
pub mod mail;
pub mod pg_cluster;
pub mod pki;
pub mod ports;
pub mod prism;
pub mod process;
pub mod provider;
pub mod smime;
pub mod wait;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use switchboard::config::Config;
use switchboard::daemon::{self, Core, Daemon};

pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Defines `mod $name { sqlite, postgres }` running `$scenario(Backend)`.
#[macro_export]
macro_rules! both_databases {
    ($name:ident, $scenario:path) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $scenario($crate::common::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $scenario($crate::common::Backend::Postgres).await
            }
        }
    };
}

/// A database that exists for one test (dropped afterwards for PostgreSQL).
pub struct TestDb {
    pub url: String,
    pub dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        match backend {
            Backend::Sqlite => TestDb {
                url: format!("sqlite://{}", dir.path().join("switchboard.db").display()),
                dir,
                pg_name: None,
            },
            Backend::Postgres => {
                let admin = admin_url();
                let name = format!("sb_test_{}", ulid::Ulid::new().to_string().to_lowercase());
                let pool = sqlx::PgPool::connect_with(
                    switchboard::store::pg_options(&admin).expect("URL"),
                )
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is required for tests: {e}"));
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&pool)
                    .await
                    .expect("create test database");
                pool.close().await;
                let url = match admin.rfind('/') {
                    Some(i) => format!("{}/{name}", &admin[..i]),
                    None => panic!("TEST_DATABASE_URL needs a database path"),
                };
                TestDb {
                    url,
                    dir,
                    pg_name: Some(name),
                }
            }
        }
    }

    /// A configuration for a daemon on this database, data under the temp dir, fast polling.
    pub fn config(&self) -> Config {
        let mut config = Config::from_toml("").expect("default config");
        config.data_dir = self.dir.path().to_path_buf();
        config.outbox.dir = self.dir.path().join("outbox");
        config.database.url = Some(self.url.clone());
        // On PostgreSQL each channel's delivery worker holds one connection for its queue's
        // notifications (six channels): eight left two for everything else and starved the
        // fleet tests once the voice channel came.
        config.database.max_connections = 12;
        config.server.listen = "127.0.0.1:0".parse().expect("addr");
        config.queue.poll_interval_ms = 50;
        config.queue.sweep_interval_secs = 1;
        config.queue.lease_secs = 5;
        config
    }

    pub fn outbox(&self) -> PathBuf {
        self.dir.path().join("outbox")
    }
}

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG.to_string())
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            let admin = admin_url();
            // A fresh runtime on another thread: Drop cannot await.
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    if let Ok(pool) = sqlx::PgPool::connect_with(
                        switchboard::store::pg_options(&admin).expect("URL"),
                    )
                    .await
                    {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&pool)
                        .await;
                        pool.close().await;
                    }
                });
            })
            .join();
        }
    }
}

/// A daemon running in this process, with an API key for organization `north`.
pub struct TestDaemon {
    pub daemon: Option<Daemon>,
    pub base: String,
    pub key: String,
    pub organization_id: String,
    pub core: Core,
    pub http: reqwest::Client,
}

impl TestDaemon {
    pub async fn start(config: Config) -> Self {
        let core = Core::open(config.clone()).await.expect("open core");
        let org = core
            .store
            .organizations()
            .ensure("north", "North Clinic")
            .await
            .expect("organization");
        let key = create_key(&core, &org.id).await;
        let daemon = daemon::start(config).await.expect("start daemon");
        let base = format!("http://{}", daemon.addr);
        Self {
            daemon: Some(daemon),
            base,
            key,
            organization_id: org.id,
            core,
            http: switchboard::http_client::builder()
                .build()
                .expect("HTTP client"),
        }
    }

    /// A key for another organization.
    pub async fn key_for(&self, slug: &str) -> String {
        let org = self
            .core
            .store
            .organizations()
            .ensure(slug, slug)
            .await
            .expect("organization");
        create_key(&self.core, &org.id).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post_message(&self, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url("/v1/messages"))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .expect("POST /v1/messages")
    }

    /// `method path` with `key` as the bearer and `body` as JSON: the status and the JSON
    /// answer (`Null` when the body is not JSON).
    pub async fn request(
        &self,
        key: &str,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self
            .http
            .request(method.parse().expect("method"), self.url(path))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("GET");
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.expect("json")
    }

    /// `GET /v1/events?limit=1000` once it hands out every event the organization has.
    /// On PostgreSQL the feed holds back events behind any transaction still open on the
    /// cluster (other tests' too) and may answer short; the store's count says when it is whole.
    pub async fn events(&self) -> serde_json::Value {
        let count = async || -> i64 {
            let (n,): (i64,) =
                switchboard::store::on_db!(self.core.store.db(), |pool| sqlx::query_as(
                    "SELECT COUNT(*) FROM events WHERE organization_id = $1",
                )
                .bind(&self.organization_id)
                .fetch_one(pool)
                .await)
                .expect("count events");
            n
        };
        wait::wait_until(
            "the whole events feed",
            Duration::from_secs(30),
            async || {
                let before = count().await;
                let feed = self.get_json("/v1/events?limit=1000").await;
                let handed_out = feed["events"].as_array().map_or(0, Vec::len) as i64;
                (handed_out == before && count().await == before).then_some(feed)
            },
        )
        .await
    }

    /// Polls the message until every delivery is terminal (or panics after `timeout`).
    pub async fn wait_terminal(&self, message_id: &str, timeout: Duration) -> serde_json::Value {
        let started = Instant::now();
        loop {
            let view = self.get_json(&format!("/v1/messages/{message_id}")).await;
            let done = view["deliveries"].as_array().is_some_and(|d| {
                d.iter()
                    .all(|d| is_terminal(d["status"].as_str().unwrap_or("")))
            });
            if done {
                return view;
            }
            assert!(
                started.elapsed() < timeout,
                "message not terminal in time: {view:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.shutdown();
            daemon.wait().await.expect("clean shutdown");
        }
    }
}

pub fn is_terminal(status: &str) -> bool {
    matches!(status, "delivered" | "dispatched" | "failed" | "expired")
}

pub async fn create_key(core: &Core, organization_id: &str) -> String {
    let token = switchboard::http::new_token().expect("token");
    core.store
        .api_keys()
        .insert(
            organization_id,
            "test",
            &switchboard::http::hash_token(&token),
        )
        .await
        .expect("key");
    token
}

/// Files in a directory (not counting temp files).
pub fn count_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}
