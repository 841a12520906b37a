//! A scheduled campaign under `kill -9`, on PostgreSQL: 1,000 recalls, one attempt each, run
//! by the daemon's own leased schedule. The daemon kills itself right after accepting a
//! message and before recording the attempt (`SB_TEST_KILL_AT=campaign-accepted`), is
//! restarted and killed again mid-run from outside, then restarted to finish — every patient
//! gets exactly one message.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::process::{Spawned, binary};
use common::{Backend, TestDb, count_files};
use switchboard::campaigns::{Campaign, Campaigns};
use switchboard::config::Config;
use switchboard::daemon::Core;

const RECALLS: usize = 1_000;
const LOG: &str = "info";

fn write_config(db: &TestDb) -> PathBuf {
    let path = db.dir.path().join("switchboard.toml");
    let text = format!(
        r#"data_dir = "{dir}"
[server]
listen = "127.0.0.1:0"
[database]
url = "{url}"
max_connections = 16
[queue]
poll_interval_ms = 50
sweep_interval_secs = 1
lease_secs = 5
stuck_after_secs = 30
[channels.sms]
connector = "outbox"
[reminders]
schedule = "* * * * * *"
[organizations.north]
time_zone = "UTC"
quiet_hours_start = "00:00"
quiet_hours_end = "23:59"
"#,
        dir = db.dir.path().display(),
        url = db.url,
    );
    std::fs::write(&path, text).expect("config");
    path
}

async fn attempts(core: &Core, id: &str) -> usize {
    core.store
        .campaigns()
        .targets(id)
        .await
        .expect("targets")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_during_a_scheduled_campaign() {
    let db = TestDb::new(Backend::Postgres).await;
    let config_path = write_config(&db);
    let config = Config::load(Some(&config_path)).expect("config");
    let core = Core::open(config.clone()).await.expect("core");
    let org = core
        .store
        .organizations()
        .ensure("north", "North Clinic")
        .await
        .unwrap();
    core.store
        .campaigns()
        .seed_recalls(&org.id, "CRASH", "2026-01-15", RECALLS)
        .await
        .unwrap();
    let campaigns = Campaigns {
        store: core.store.clone(),
        messages: core.messages(),
        config: core.config.clone(),
        templates: core.templates().expect("templates"),
    };
    let campaign = Campaign {
        name: "Crash".into(),
        recall_type: Some("CRASH".into()),
        due_from: "2026-01-01".into(),
        due_to: "2026-12-31".into(),
        attempts: 1,
        channels: vec!["sms".into()],
        // Every second of every day: the organization is always open.
        schedule: Some("* * * * * *".into()),
        business_days: false,
        ..Campaign::default()
    };
    let id = campaigns
        .create(&org.id, &campaign, chrono::Utc::now())
        .await
        .expect("campaign");
    // Paused until run 1 is up (it must die mid-run, not during start-up).
    assert!(
        core.store
            .campaigns()
            .set_state(&id, &["active"], "paused")
            .await
            .unwrap()
    );

    // Run 1 kills itself after accepting the first message, before recording its attempt.
    let log = db.dir.path().join("run1.log");
    let mut command = Command::new(binary());
    command
        .args(["run", "--config"])
        .arg(&config_path)
        .env("SB_TEST_KILL_AT", "campaign-accepted");
    let mut daemon = Spawned::start_command(command, &log, LOG).await;
    assert!(
        core.store
            .campaigns()
            .set_state(&id, &["paused"], "active")
            .await
            .unwrap()
    );
    let started = std::time::Instant::now();
    while daemon.exited().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the daemon did not kill itself: {}",
            std::fs::read_to_string(&daemon.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        attempts(&core, &id).await,
        0,
        "killed before the attempt was recorded"
    );

    // Run 2 is killed from outside in the middle of the run.
    let log = db.dir.path().join("run2.log");
    let mut daemon = Spawned::start(&config_path, &log, LOG).await;
    let started = std::time::Instant::now();
    loop {
        let n = attempts(&core, &id).await;
        if n >= 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{n} attempts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.kill9();
    let after_kill = attempts(&core, &id).await;
    assert!(after_kill < RECALLS, "killed mid-run: {after_kill}");

    // Run 3 finishes.
    let log = db.dir.path().join("run3.log");
    let mut daemon = Spawned::start(&config_path, &log, LOG).await;
    let outbox = db.outbox();
    daemon
        .wait_for(
            "every attempt recorded and delivered",
            Duration::from_secs(300),
            async || {
                let counts = core.store.deliveries().counts().await.expect("counts");
                attempts(&core, &id).await == RECALLS
                    && count_files(&outbox) >= RECALLS
                    && counts.iter().all(|(_, status, _)| status == "delivered")
            },
        )
        .await;

    let counts = core.store.deliveries().counts().await.expect("counts");
    let deliveries: i64 = counts.iter().map(|(_, _, n)| n).sum();
    assert_eq!(
        deliveries, RECALLS as i64,
        "one delivery per recall: {counts:?}"
    );
    let mut recipients = std::collections::HashSet::new();
    for entry in std::fs::read_dir(&outbox).unwrap().flatten() {
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
        assert!(
            recipients.insert(file["to"].as_str().unwrap().to_string()),
            "a second message to {}",
            file["to"]
        );
    }
    assert_eq!(recipients.len(), RECALLS);
    let report = campaigns.report(&id, chrono::Utc::now()).await.unwrap();
    assert_eq!(
        (report.targeted, report.sent),
        (RECALLS as i64, RECALLS as i64)
    );
    let status = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
    core.store.close().await;
}
