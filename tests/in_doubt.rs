//! A send whose outcome the daemon never recorded: the provider answered, and the daemon was
//! killed before it wrote the answer down (`SB_TEST_KILL_AT=provider-answered`, an exact
//! crash point). The delivery is left `sending`, in doubt. The restarted daemon must not send
//! it again while the provider may still say it has it (`queue.in_doubt_secs`); the
//! provider's status callback, matched by the delivery's token in the callback URL, settles
//! it; and a provider that never reports gets the message again once the hold is over
//! (at least once: nothing lost).

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use common::process::{Spawned, binary, run_command, tail};
use common::provider::{FakeProvider, Flavor, TWILIO_ACCOUNT, TWILIO_TOKEN};
use common::wait::wait_until;
use common::{Backend, TestDb};

const LEASE_SECS: u64 = 2;
const IN_DOUBT_SECS: u64 = 4;
/// How long the sweeper lets a `sending` delivery sit past its lease and hold before it counts
/// as stuck (`GRACE_MS` in `src/queue/sweeper.rs`).
const SWEEP_GRACE: Duration = Duration::from_secs(5);
const LOG: &str = "info,switchboard::queue::sweeper=debug,sqlx=warn";
const PHONE: &str = "+14158675309";

fn write_config(db: &TestDb, provider: &FakeProvider) -> PathBuf {
    let dir = db.dir.path();
    std::fs::write(dir.join("twilio-token"), TWILIO_TOKEN).expect("token");
    let path = dir.join("switchboard.toml");
    let text = format!(
        r#"data_dir = "{data}"
[server]
listen = "127.0.0.1:0"
[database]
url = "{url}"
max_connections = 12
[queue]
poll_interval_ms = 50
sweep_interval_secs = 1
lease_secs = {LEASE_SECS}
stuck_after_secs = 30
in_doubt_secs = {IN_DOUBT_SECS}
shutdown_grace_secs = 5
[channels.sms]
connector = "twilio"
max_attempts = 5
backoff_initial_ms = 500
backoff_max_secs = 2
[connectors.twilio]
kind = "http"
manifest = "twilio"
base_url = "{base}"
params = {{ account_sid = "{TWILIO_ACCOUNT}", from = "+15005550006" }}
credentials = {{ auth_token = {{ file = "{token}" }} }}
timeout_secs = 5
public_url = "http://gateway.test"
"#,
        data = dir.display(),
        url = db.url,
        base = provider.base_url(),
        token = dir.join("twilio-token").display(),
    );
    std::fs::write(&path, text).expect("config");
    path
}

/// Starts a daemon that kills itself once the provider has answered its first send, posts one
/// message, and returns its id once the daemon is dead.
async fn send_and_die(config: &Path, log: &Path, key: &str, provider: &FakeProvider) -> String {
    let mut command = std::process::Command::new(binary());
    command
        .args(["run", "--config"])
        .arg(config)
        .env("SB_TEST_KILL_AT", "provider-answered");
    let mut daemon = Spawned::start_command(command, log, LOG).await;
    let created: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/messages", daemon.base()))
        .bearer_auth(key)
        .json(&serde_json::json!({
            "body": "Your lab results are ready in the portal.",
            "recipients": [{"address": PHONE, "channel": "sms"}],
        }))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("message id").to_string();
    let status = wait_until(
        "the daemon to kill itself after the provider answered",
        Duration::from_secs(60),
        async || daemon.exited(),
    )
    .await;
    assert!(
        !status.success(),
        "killed, not exited: {status}; {}",
        tail(log)
    );
    assert_eq!(provider.sends().len(), 1, "the provider took it once");
    id
}

async fn delivery(base: &str, key: &str, id: &str) -> serde_json::Value {
    let view: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/v1/messages/{id}"))
        .bearer_auth(key)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    view["deliveries"][0].clone()
}

fn sweep_passes(daemon: &Spawned) -> usize {
    daemon.log_text().matches("sweep pass").count()
}

async fn reported_while_in_doubt_is_not_sent_again(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FakeProvider::start(Flavor::Twilio).await;
    let config = write_config(&db, &provider);
    run_command(&config, &["migrate"]);
    let key = run_command(&config, &["keys", "create", "--org", "north", "--new-org"]);
    // The provider reports `sent` for what it takes, retrying until a daemon accepts it.
    let bases = Arc::new(RwLock::new(Vec::<String>::new()));
    provider.report_to(bases.clone(), Duration::ZERO);

    let id = send_and_die(&config, &db.dir.path().join("first.log"), &key, &provider).await;
    let taken_at = provider.sends()[0].at;

    let daemon = Spawned::start(&config, &db.dir.path().join("second.log"), LOG).await;
    *bases.write().unwrap_or_else(|e| e.into_inner()) = vec![daemon.base()];
    let settled = wait_until(
        "the provider's callback to settle the delivery",
        Duration::from_secs(60),
        async || {
            let d = delivery(&daemon.base(), &key, &id).await;
            (d["status"] == "sent").then_some(d)
        },
    )
    .await;
    assert_eq!(provider.reported(), 1, "the callback was accepted");
    assert!(
        taken_at.elapsed() < Duration::from_secs(LEASE_SECS + IN_DOUBT_SECS),
        "settled by the callback inside the hold, not by a resend"
    );
    assert_eq!(settled["attempts"], 1, "{settled:#}");

    // Past the hold and the sweeper's grace, two more sweep passes: the second began after
    // the point where an unsettled delivery would have been taken up again.
    let deadline = taken_at + Duration::from_secs(LEASE_SECS + IN_DOUBT_SECS) + SWEEP_GRACE;
    wait_until("the hold to pass", Duration::from_secs(60), async || {
        (Instant::now() > deadline).then_some(())
    })
    .await;
    let passes = sweep_passes(&daemon);
    daemon
        .wait_for("two sweep passes", Duration::from_secs(30), async || {
            sweep_passes(&daemon) >= passes + 2
        })
        .await;
    assert_eq!(
        provider.sends().len(),
        1,
        "sent once: {}",
        tail(&daemon.log)
    );
    assert_eq!(delivery(&daemon.base(), &key, &id).await["status"], "sent");
}

async fn unreported_is_sent_again_after_the_hold(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FakeProvider::start(Flavor::Twilio).await;
    let config = write_config(&db, &provider);
    run_command(&config, &["migrate"]);
    let key = run_command(&config, &["keys", "create", "--org", "north", "--new-org"]);

    let id = send_and_die(&config, &db.dir.path().join("first.log"), &key, &provider).await;
    let taken_at = provider.sends()[0].at;

    let daemon = Spawned::start(&config, &db.dir.path().join("second.log"), LOG).await;
    assert_eq!(
        delivery(&daemon.base(), &key, &id).await["status"],
        "sending",
        "in doubt after the restart"
    );
    let delivered = wait_until(
        "the message to be sent again",
        Duration::from_secs(60),
        async || {
            let d = delivery(&daemon.base(), &key, &id).await;
            (d["status"] == "sent").then_some(d)
        },
    )
    .await;
    let sends = provider.sends();
    assert_eq!(sends.len(), 2, "sent again once: {}", tail(&daemon.log));
    let gap = sends[1].at.duration_since(taken_at);
    assert!(
        gap >= Duration::from_secs(LEASE_SECS + IN_DOUBT_SECS),
        "not sent again before the lease and the in-doubt hold were over ({gap:?})"
    );
    assert_eq!(sends[0].form("Body"), sends[1].form("Body"));
    assert_eq!(delivered["attempts"], 2, "{delivered:#}");
}

both_databases!(
    reported_while_in_doubt,
    super::reported_while_in_doubt_is_not_sent_again
);
both_databases!(
    unreported_is_sent_again,
    super::unreported_is_sent_again_after_the_hold
);
