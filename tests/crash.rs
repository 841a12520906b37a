//! The `switchboard` binary as an operator runs it: `kill -9` in the middle of a burst loses
//! nothing and sends nothing twice; SIGTERM drains and exits cleanly; the logs hold no PHI.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use common::process::{Spawned, run_command};
use common::{Backend, TestDb, count_files};

const MESSAGES: usize = 5_000;
const PATIENT_NAME: &str = "Zebediah Quarterman";
const PHONE: &str = "+14158675309";
/// The daemon's log filter: debug, so that the logs have content to search for PHI.
const LOG: &str = "debug,sqlx=warn";

fn write_config(db: &TestDb) -> PathBuf {
    let path = db.dir.path().join("switchboard.toml");
    let text = format!(
        r#"data_dir = "{dir}"
[server]
listen = "127.0.0.1:0"
[database]
url = "{url}"
max_connections = 8
[queue]
poll_interval_ms = 50
sweep_interval_secs = 1
lease_secs = 5
stuck_after_secs = 30
shutdown_grace_secs = 10
[channels.sms]
connector = "outbox"
"#,
        dir = db.dir.path().display(),
        url = db.url,
    );
    std::fs::write(&path, text).expect("config");
    path
}

/// Posts message `i` until the daemon acknowledges it, as a well-behaved client would
/// (same Idempotency-Key on every try), to wherever the daemon listens now (`base`: a
/// restarted daemon listens on another port).
async fn post_until_acknowledged(
    client: &reqwest::Client,
    base: &RwLock<String>,
    key: &str,
    i: usize,
) {
    let body = serde_json::json!({
        "subject": format!("For {PATIENT_NAME}"),
        "body": format!("Dear {PATIENT_NAME}, reminder number {i}."),
        "recipients": [{"address": PHONE, "channel": "sms"}],
    });
    let started = Instant::now();
    loop {
        let url = format!(
            "{}/v1/messages",
            base.read().unwrap_or_else(|e| e.into_inner())
        );
        let sent = client
            .post(url)
            .bearer_auth(key)
            .header("Idempotency-Key", format!("burst-{i}"))
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if sent.is_ok_and(|response| response.status().is_success()) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "message {i} never acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn kill_nine_mid_burst_loses_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config = write_config(&db);
    run_command(&config, &["migrate"]);
    let key = run_command(&config, &["keys", "create", "--org", "north", "--new-org"]);
    let logs = [
        db.dir.path().join("first.log"),
        db.dir.path().join("second.log"),
    ];

    let mut daemon = Spawned::start(&config, &logs[0], LOG).await;
    let base = Arc::new(RwLock::new(daemon.base()));

    let acknowledged = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::new();
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (client, base, key, next, acknowledged) = (
            client.clone(),
            base.clone(),
            key.clone(),
            next.clone(),
            acknowledged.clone(),
        );
        clients.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= MESSAGES {
                    return;
                }
                post_until_acknowledged(&client, &base, &key, i).await;
                acknowledged.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }

    // Kill while messages are being accepted and delivered: once a third is acknowledged and
    // the worker has started delivering.
    daemon
        .wait_for(
            "a third acknowledged and deliveries started",
            Duration::from_secs(120),
            async || {
                acknowledged.load(Ordering::SeqCst) >= MESSAGES / 3 && count_files(&db.outbox()) > 0
            },
        )
        .await;
    daemon.kill9();
    let delivered_before_restart = count_files(&db.outbox());
    let mut daemon = Spawned::start(&config, &logs[1], LOG).await;
    *base.write().unwrap_or_else(|e| e.into_inner()) = daemon.base();
    for client in clients {
        client.await.expect("client task");
    }
    assert_eq!(acknowledged.load(Ordering::SeqCst), MESSAGES);

    // Every delivery ends delivered, exactly once.
    let core_config = switchboard::config::Config::load(Some(&config)).expect("config");
    let core = switchboard::daemon::Core::open(core_config)
        .await
        .expect("core");
    daemon
        .wait_for(
            "every delivery delivered",
            Duration::from_secs(180),
            async || {
                let counts = core.store.deliveries().counts().await.expect("counts");
                let total: i64 = counts.iter().map(|(_, _, n)| n).sum();
                assert_eq!(
                    total, MESSAGES as i64,
                    "one delivery per acknowledged message: {counts:?}"
                );
                counts.iter().all(|(_, status, _)| status == "delivered")
            },
        )
        .await;
    assert_eq!(
        count_files(&db.outbox()),
        MESSAGES,
        "one outbox file per delivery"
    );
    assert!(delivered_before_restart > 0 && delivered_before_restart < MESSAGES);

    // SIGTERM: drains and exits 0.
    let exit = daemon.terminate(Duration::from_secs(30));
    assert!(exit.success(), "exit status {exit:?}");
    core.store.close().await;

    // No PHI in the logs: not the name, not the number, not the body.
    // The first daemon may be killed between writing an outbox file and
    // logging it, so "has debug content" is asserted over both runs.
    let texts: Vec<String> = logs
        .iter()
        .map(|log| std::fs::read_to_string(log).expect("log"))
        .collect();
    assert!(
        texts.iter().any(|text| text.contains("delivery sent")),
        "the logs have content at debug level"
    );
    for (log, text) in logs.iter().zip(&texts) {
        for secret in [
            PATIENT_NAME,
            "Zebediah",
            PHONE,
            "8675309",
            "reminder number",
        ] {
            assert!(
                !text.contains(secret),
                "{} contains {secret:?}",
                log.display()
            );
        }
    }
}
both_databases!(
    kill_nine_mid_burst_loses_nothing,
    super::kill_nine_mid_burst_loses_nothing
);
