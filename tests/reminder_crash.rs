//! The reminder run under `kill -9`: 10,000 reminders due on PostgreSQL, the daemon binary
//! killed twice in the middle of sending and restarted — every reminder reaches the outbox
//! sink exactly once.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::process::Spawned;
use common::{Backend, TestDb, count_files};
use switchboard::config::Config;
use switchboard::daemon::Core;

const REMINDERS: usize = 10_000;
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
reminder_cap_per_day = 10
reminder_cap_per_week = 10
"#,
        dir = db.dir.path().display(),
        url = db.url,
    );
    std::fs::write(&path, text).expect("config");
    path
}

/// Waits for `at_least` files in the outbox; on timeout the panic shows the daemon's log.
async fn wait_for_files(
    daemon: &Spawned,
    dir: &std::path::Path,
    at_least: usize,
    timeout: Duration,
) {
    daemon
        .wait_for(
            format!("{at_least} reminders in the outbox"),
            timeout,
            async || count_files(dir) >= at_least,
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_twice_during_a_reminder_run() {
    let db = TestDb::new(Backend::Postgres).await;
    let config_path = write_config(&db);
    let config = Config::load(Some(&config_path)).expect("config");
    {
        let core = Core::open(config.clone()).await.expect("core");
        let org = core
            .store
            .organizations()
            .ensure("north", "North Clinic")
            .await
            .unwrap();
        // Their 2-hour touch is due a minute ago; the 48-hour and 7-day touches are long past
        // (skipped as too soon), so exactly one reminder each is due.
        let start = chrono::Utc::now().timestamp_millis() + 2 * 3_600_000 - 60_000;
        core.store
            .reminders()
            .seed_appointments(&org.id, "crash", &vec![start; REMINDERS])
            .await
            .unwrap();
        core.store.close().await;
    }
    let outbox = db.outbox();
    let log = db.dir.path().join("run1.log");
    let mut daemon = Spawned::start(&config_path, &log, LOG).await;
    wait_for_files(&daemon, &outbox, 1_000, Duration::from_secs(300)).await;
    daemon.kill9();
    let log = db.dir.path().join("run2.log");
    let mut daemon = Spawned::start(&config_path, &log, LOG).await;
    let target = count_files(&outbox) + 2_000;
    wait_for_files(&daemon, &outbox, target, Duration::from_secs(300)).await;
    daemon.kill9();
    let log = db.dir.path().join("run3.log");
    let mut daemon = Spawned::start(&config_path, &log, LOG).await;
    wait_for_files(&daemon, &outbox, REMINDERS, Duration::from_secs(480)).await;

    // Before counting, nothing is left that could still send a reminder: no touch is due
    // (each was sent or skipped) and every delivery is delivered (its outbox file written).
    let core = Core::open(config).await.expect("core");
    daemon
        .wait_for(
            "no touch due and every delivery delivered",
            Duration::from_secs(120),
            async || {
                let due = core
                    .store
                    .reminders()
                    .due_touches(chrono::Utc::now().timestamp_millis(), 1)
                    .await
                    .expect("due touches");
                let counts = core.store.deliveries().counts().await.expect("counts");
                due.is_empty() && counts.iter().all(|(_, status, _)| status == "delivered")
            },
        )
        .await;
    // ... and a reminder pass run now sends nothing.
    let templates = core.templates().expect("templates");
    let report = core
        .reminders(templates)
        .run_once(chrono::Utc::now())
        .await
        .expect("a reminder pass");
    assert_eq!((report.sent, report.skipped), (0, 0), "{report:?}");
    let counts = core.store.deliveries().counts().await.expect("counts");
    let deliveries: i64 = counts.iter().map(|(_, _, n)| n).sum();
    assert_eq!(
        deliveries, REMINDERS as i64,
        "one delivery per reminder: {counts:?}"
    );
    assert_eq!(
        count_files(&outbox),
        REMINDERS,
        "every reminder exactly once"
    );

    let org = core.store.organizations().by_slug("north").await.unwrap();
    let mut recipients = std::collections::HashSet::new();
    for entry in std::fs::read_dir(&outbox).unwrap().flatten() {
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
        assert_eq!(file["organization_id"], org.id.as_str());
        assert!(
            recipients.insert(file["to"].as_str().unwrap().to_string()),
            "a second reminder to {}",
            file["to"]
        );
    }
    assert_eq!(recipients.len(), REMINDERS);
    let status = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
    core.store.close().await;
}
