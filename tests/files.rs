//! What the gateway leaves on disk and where deliveries may go: under an ordinary umask (022)
//! the data directory is 0700 and the database, its `-wal`/`-shm`, the generated at-rest key
//! and the outbox files are 0600; with a configuration file, a channel it does not configure
//! is refused at accept (422 `channel_not_configured`) instead of being sunk into the outbox.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::Spawned;
use common::{Backend, TestDaemon, TestDb, count_files};
use switchboard::config::Config;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The binary under `umask 022`, as a shell started by an operator would run it.
fn under_umask(args: &[&str], config: &Path) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("umask 022; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn");
    command
}

async fn files_are_owner_only(backend: Backend) {
    let db = TestDb::new(backend).await;
    let data = db.dir.path().join("state"); // does not exist yet: the daemon creates it
    let config = db.dir.path().join("switchboard.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{data}\"\n[server]\nlisten = \"127.0.0.1:0\"\n[database]\n\
             url = \"{url}\"\n[queue]\npoll_interval_ms = 50\n[channels.sms]\nconnector = \"outbox\"\n",
            data = data.display(),
            url = if backend == Backend::Sqlite {
                "sqlite://switchboard.db".to_string()
            } else {
                db.url.clone()
            },
        ),
    )
    .expect("config");
    let migrated = under_umask(&["migrate"], &config)
        .output()
        .expect("migrate");
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let output = under_umask(&["keys", "create", "--org", "north", "--new-org"], &config)
        .output()
        .expect("keys create");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let key = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let log = db.dir.path().join("daemon.log");
    let daemon = Spawned::start_command(under_umask(&["run"], &config), &log, "warn").await;
    let base = daemon.base();
    let http = reqwest::Client::new();
    daemon
        .wait_for("the daemon ready", Duration::from_secs(30), async || {
            http.get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
    let response = http
        .post(format!("{base}/v1/messages"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"body": "Your results are in.", "recipients": [{"address": "+14155550000", "channel": "sms"}]}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status().as_u16(), 201);
    let outbox = data.join("outbox");
    let started = Instant::now();
    while count_files(&outbox) < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "nothing delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert_eq!(mode(&data), 0o700, "data dir");
    assert_eq!(mode(&outbox), 0o700, "outbox dir");
    assert_eq!(mode(&data.join("at-rest.key")), 0o600, "generated key");
    for entry in std::fs::read_dir(&outbox).expect("outbox") {
        let path = entry.expect("entry").path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    if backend == Backend::Sqlite {
        for name in ["switchboard.db", "switchboard.db-wal", "switchboard.db-shm"] {
            assert_eq!(mode(&data.join(name)), 0o600, "{name}");
        }
    }
}
both_databases!(files_are_owner_only, crate::files_are_owner_only);

fn only_sms(db: &TestDb) -> PathBuf {
    let path = db.dir.path().join("switchboard.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{dir}\"\n[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"{url}\"\n\
             [queue]\npoll_interval_ms = 50\n[channels.sms]\nconnector = \"outbox\"\n",
            dir = db.dir.path().display(),
            url = db.url,
        ),
    )
    .expect("config");
    path
}

/// A fax message on a configuration that configures only SMS is a 422 naming the field, and
/// nothing reaches the outbox; SMS still goes through.
async fn unconfigured_channel_is_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config = Config::load(Some(&only_sms(&db))).expect("config");
    let daemon = TestDaemon::start(config).await;

    let response = daemon
        .post_message(serde_json::json!({
            "body": "Fax for the referral.",
            "recipients": [{"address": "+14155550001", "channel": "fax"}],
        }))
        .await;
    assert_eq!(response.status().as_u16(), 422);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = response.json().await.expect("json");
    assert_eq!(problem["code"], "channel_not_configured", "{problem}");
    assert_eq!(
        problem["type"], "urn:switchboard:problem:channel_not_configured",
        "{problem}"
    );
    assert_eq!(problem["pointer"], "/recipients/0/channel", "{problem}");

    // Channels given for recipients without one: the pointer names the list entry.
    let response = daemon
        .post_message(serde_json::json!({
            "body": "Hello.",
            "recipients": [{"address": "a@example.org"}],
            "channels": ["email"],
        }))
        .await;
    assert_eq!(response.status().as_u16(), 422);
    let problem: serde_json::Value = response.json().await.expect("json");
    assert_eq!(problem["pointer"], "/channels/0", "{problem}");

    let response = daemon
        .post_message(serde_json::json!({
            "body": "Your results are in.",
            "recipients": [{"address": "+14155550002", "channel": "sms"}],
        }))
        .await;
    assert_eq!(response.status().as_u16(), 201);
    let id = response.json::<serde_json::Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let view = daemon.wait_terminal(&id, Duration::from_secs(30)).await;
    assert_eq!(view["status"], "delivered");
    // Only the SMS reached the sink.
    assert_eq!(count_files(&db.outbox()), 1);
}
both_databases!(
    unconfigured_channel_is_refused,
    crate::unconfigured_channel_is_refused
);

/// Without a file (the embedded default) every channel still goes to the outbox sink.
async fn zero_config_keeps_the_outbox(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = Config::load(None).expect("zero config");
    config.data_dir = db.dir.path().to_path_buf();
    config.outbox.dir = db.outbox();
    config.database.url = Some(db.url.clone());
    config.server.listen = "127.0.0.1:0".parse().expect("addr");
    config.queue.poll_interval_ms = 50;
    let daemon = TestDaemon::start(config).await;
    let response = daemon
        .post_message(serde_json::json!({
            "body": "Fax for the referral.",
            "recipients": [{"address": "+14155550001", "channel": "fax"}],
        }))
        .await;
    assert_eq!(response.status().as_u16(), 201);
}
both_databases!(
    zero_config_keeps_the_outbox,
    crate::zero_config_keeps_the_outbox
);
