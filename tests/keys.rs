//! API keys as an operator and a client see them: `switchboard keys create|list|revoke|rotate`
//! through the binary, scopes enforced per route (403 naming the scope), expiry, and a
//! revocation that reaches every daemon of a fleet within a second.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Backend, TestDaemon, TestDb};
use switchboard::config::Config;

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_switchboard")
}

/// A configuration file for the CLI on this database.
fn write_config(db: &TestDb) -> PathBuf {
    let path = db.dir.path().join("switchboard.toml");
    let text = format!(
        "data_dir = \"{dir}\"\n[database]\nurl = \"{url}\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
         [channels.sms]\nconnector = \"outbox\"\n",
        dir = db.dir.path().display(),
        url = db.url,
    );
    std::fs::write(&path, text).expect("config");
    // Only `migrate` (and `run`) create the schema; the admin commands refuse a database
    // without it.
    ok(cli(&path, &["migrate"]));
    path
}

fn cli(config: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("switchboard")
}

fn ok(output: Output) -> (String, String) {
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "switchboard failed: {stderr}");
    (
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        stderr,
    )
}

/// `keys create`: (key id from the notice, the token).
fn create(config: &Path, args: &[&str]) -> (String, String) {
    let mut all = vec!["keys", "create"];
    all.extend_from_slice(args);
    let (token, notice) = ok(cli(config, &all));
    let id = notice
        .split_whitespace()
        .find(|w| w.starts_with("key_"))
        .unwrap_or_else(|| panic!("no key id in {notice:?}"))
        .to_string();
    assert!(token.starts_with("sbk_"), "{token}");
    (id, token)
}

async fn status(daemon: &TestDaemon, method: reqwest::Method, path: &str, key: &str) -> u16 {
    let mut request = daemon
        .http
        .request(method.clone(), daemon.url(path))
        .bearer_auth(key);
    if method != reqwest::Method::GET {
        request = request.json(&serde_json::json!({}));
    }
    request.send().await.expect("request").status().as_u16()
}

/// Polls until the key answers 401 on `daemon`, within `deadline` of `since`.
async fn wait_refused(daemon: &TestDaemon, key: &str, since: Instant, deadline: Duration) {
    loop {
        let code = status(daemon, reqwest::Method::GET, "/v1/events", key).await;
        if code == 401 {
            return;
        }
        assert_eq!(code, 200, "unexpected status while waiting for 401");
        assert!(
            since.elapsed() < deadline,
            "the key still works {:?} after it was revoked",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn daemon_on(config_path: &Path) -> TestDaemon {
    let mut config = Config::load(Some(config_path)).expect("config");
    config.queue.poll_interval_ms = 50;
    TestDaemon::start(config).await
}

/// A typo in `--org` creates nothing; scopes, list, rotate and revoke work end to end.
async fn cli_manages_keys(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config = write_config(&db);

    let output = cli(&config, &["keys", "create", "--org", "nortclinic"]);
    assert!(
        !output.status.success(),
        "an unknown organization needs --new-org"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--org nortclinic: no such organization") && stderr.contains("--new-org"),
        "{stderr}"
    );
    let (listed, _) = ok(cli(&config, &["keys", "list"]));
    assert_eq!(listed, "no API keys");

    let (reader_id, reader) = create(
        &config,
        &[
            "--org",
            "south",
            "--new-org",
            "--name",
            "dashboard",
            "--scopes",
            "read",
            "--expires-in",
            "90d",
        ],
    );
    let (sender_id, sender) = create(&config, &["--org", "south", "--name", "ehr"]);
    let (listed, _) = ok(cli(&config, &["keys", "list", "--org", "south"]));
    let line = |id: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} not listed:\n{listed}"))
            .to_string()
    };
    let reader_line = line(&reader_id);
    assert!(
        reader_line.contains("dashboard") && reader_line.contains(" read "),
        "{reader_line}"
    );
    assert!(reader_line.ends_with("active") && !reader_line.contains("never"));
    let sender_line = line(&sender_id);
    assert!(
        sender_line.contains("send,read") && sender_line.contains("never"),
        "{sender_line}"
    );
    assert!(!listed.contains(&reader) && !listed.contains(&sender));

    let daemon = daemon_on(&config).await;
    // A read-only key reads, and may not send.
    assert_eq!(
        status(&daemon, reqwest::Method::GET, "/v1/events", &reader).await,
        200
    );
    let response = daemon
        .http
        .post(daemon.url("/v1/messages"))
        .bearer_auth(&reader)
        .json(&serde_json::json!({"body": "hi", "recipients": [{"address": "+14155550000", "channel": "sms"}]}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status().as_u16(), 403);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .expect("header")
            .contains("scope=\"send\"")
    );
    let problem: serde_json::Value = response.json().await.expect("json");
    assert_eq!(problem["code"], "insufficient_scope", "{problem}");
    assert_eq!(problem["scope"], "send", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("`send`")
    );

    // Rotation: the new key works at once, the old one is refused.
    let (rotated, _) = ok(cli(&config, &["keys", "rotate", &sender_id]));
    assert!(rotated.starts_with("sbk_") && rotated != sender);
    let since = Instant::now();
    assert_eq!(
        status(&daemon, reqwest::Method::GET, "/v1/events", &rotated).await,
        200
    );
    wait_refused(&daemon, &sender, since, Duration::from_millis(1500)).await;
    let (listed, _) = ok(cli(&config, &["keys", "list"]));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&sender_id) && l.contains("revoked")),
        "{listed}"
    );

    let (said, _) = ok(cli(&config, &["keys", "revoke", &reader_id]));
    assert_eq!(said, format!("revoked {reader_id}"));
    wait_refused(
        &daemon,
        &reader,
        Instant::now(),
        Duration::from_millis(1500),
    )
    .await;
    let output = cli(&config, &["keys", "revoke", "key_nosuch"]);
    assert!(!output.status.success());
}
both_databases!(cli_manages_keys, crate::cli_manages_keys);

/// Every `/v1` route needs the scope the README table gives it; keys made before scopes
/// existed keep them all.
async fn scopes_per_route(backend: Backend) {
    use reqwest::Method;
    let db = TestDb::new(backend).await;
    let daemon = TestDaemon::start(db.config()).await;
    let config = write_config(&db);
    let (_, send_read) = create(&config, &["--org", "north"]);
    let (_, send_only) = create(&config, &["--org", "north", "--scopes", "send"]);
    let (_, admin_only) = create(&config, &["--org", "north", "--scopes", "admin"]);

    let admin_routes = [
        (Method::GET, "/v1/messages"),
        (Method::PUT, "/v1/staff/s1"),
        (Method::PUT, "/v1/reminder-rules/r1"),
        (Method::POST, "/v1/inbound/inb_x/resolve"),
    ];
    for (method, path) in &admin_routes {
        assert_eq!(
            status(&daemon, method.clone(), path, &send_read).await,
            403,
            "{method} {path} needs admin"
        );
        assert_ne!(
            status(&daemon, method.clone(), path, &admin_only).await,
            403,
            "{method} {path} with admin"
        );
    }
    let read_routes = [
        "/v1/events",
        "/v1/staff",
        "/v1/reminder-rules",
        "/v1/inbound",
        "/v1/messages/msg_x",
        "/v1/patients/p1",
    ];
    for path in read_routes {
        assert_eq!(
            status(&daemon, Method::GET, path, &send_only).await,
            403,
            "GET {path} needs read"
        );
        assert_ne!(
            status(&daemon, Method::GET, path, &send_read).await,
            403,
            "GET {path}"
        );
        assert_eq!(
            status(&daemon, Method::GET, path, &admin_only).await,
            403,
            "admin does not imply read: GET {path}"
        );
    }
    let send_routes = [
        (Method::POST, "/v1/messages"),
        (Method::PUT, "/v1/patients/p1"),
        (Method::PUT, "/v1/appointments/a1"),
        (Method::PUT, "/v1/recalls/r1"),
        (Method::POST, "/v1/messages/msg_x/read"),
    ];
    for (method, path) in &send_routes {
        assert_ne!(
            status(&daemon, method.clone(), path, &send_only).await,
            403,
            "{method} {path} with send"
        );
        assert_eq!(
            status(&daemon, method.clone(), path, &admin_only).await,
            403,
            "{method} {path} needs send"
        );
    }

    // A key stored before migration 0008 (no scopes written) keeps every scope.
    let old = switchboard::http::new_token().expect("token");
    let org = daemon
        .core
        .store
        .organizations()
        .by_slug("north")
        .await
        .expect("org");
    switchboard::store::on_db!(daemon.core.store.db(), |pool| sqlx::query(
        "INSERT INTO api_keys (id, organization_id, name, key_hash, created_at) VALUES ('key_old', $1, 'old', $2, 0)",
    )
    .bind(&org.id)
    .bind(switchboard::http::hash_token(&old))
    .execute(pool)
    .await
    .map(|_| ()))
    .expect("old key");
    for (method, path) in admin_routes.iter().chain(send_routes.iter()) {
        assert_ne!(status(&daemon, method.clone(), path, &old).await, 403);
    }
    assert_eq!(status(&daemon, Method::GET, "/v1/events", &old).await, 200);
}
both_databases!(scopes_per_route, crate::scopes_per_route);

/// An expired key is refused; a key may not be created already expired.
async fn expiry_is_enforced(backend: Backend) {
    let db = TestDb::new(backend).await;
    let daemon = TestDaemon::start(db.config()).await;
    let config = write_config(&db);
    let output = cli(
        &config,
        &[
            "keys",
            "create",
            "--org",
            "north",
            "--expires-at",
            "2001-01-01",
        ],
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not in the future"));

    let token = switchboard::http::new_token().expect("token");
    daemon
        .core
        .store
        .api_keys()
        .create(&switchboard::store::NewApiKey {
            organization_id: daemon.organization_id.clone(),
            name: "short".into(),
            key_hash: switchboard::http::hash_token(&token),
            scopes: "read".into(),
            // Long enough for the first request to arrive on a loaded machine.
            expires_at: Some(switchboard::store::now_ms() + 2_000),
        })
        .await
        .expect("key");
    let since = Instant::now();
    assert_eq!(
        status(&daemon, reqwest::Method::GET, "/v1/events", &token).await,
        200
    );
    wait_refused(&daemon, &token, since, Duration::from_secs(10)).await;
}
both_databases!(expiry_is_enforced, crate::expiry_is_enforced);

/// Two daemons on one database: `switchboard keys revoke` makes both refuse the key within a
/// second (the verified-key cache lives at most `CACHE_TTL`, asserted ≤ 1 s in the unit tests;
/// here the poll allows 1.5 s so a loaded machine does not flake).
async fn revocation_reaches_the_fleet(backend: Backend) {
    let db = TestDb::new(backend).await;
    let first = TestDaemon::start(db.config()).await;
    let second = TestDaemon::start(db.config()).await;
    let config = write_config(&db);
    let (id, token) = create(&config, &["--org", "north"]);
    // Both daemons have verified (and cached) the key.
    for daemon in [&first, &second] {
        assert_eq!(
            status(daemon, reqwest::Method::GET, "/v1/events", &token).await,
            200
        );
    }
    ok(cli(&config, &["keys", "revoke", &id]));
    let revoked = Instant::now();
    for daemon in [&first, &second] {
        wait_refused(daemon, &token, revoked, Duration::from_millis(1500)).await;
    }
    println!(
        "refused on both daemons {:?} after revoke",
        revoked.elapsed()
    );
}
both_databases!(
    revocation_reaches_the_fleet,
    crate::revocation_reaches_the_fleet
);

/// An admin command never creates or migrates a database: on a path with none it fails,
/// naming the fix, and leaves nothing behind; on a migrated one it says which it opened.
#[test]
fn admin_commands_do_not_create_a_database() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("switchboard.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{}\"\n[server]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("state").display()
        ),
    )
    .expect("config");
    let output = cli(&path, &["keys", "create", "--org", "north", "--new-org"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("switchboard migrate"), "{stderr}");
    assert!(stderr.contains("database SQLite"), "{stderr}");
    assert!(!dir.path().join("state").exists(), "created {stderr}");
    ok(cli(&path, &["migrate"]));
    let (_, notice) = ok(cli(&path, &["keys", "list"]));
    assert!(
        notice.contains(&format!("configuration {}", path.display())),
        "{notice}"
    );
}
