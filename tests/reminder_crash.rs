//! The reminder run under `kill -9`: 10,000 reminders due on PostgreSQL, the daemon binary
//! killed twice in the middle of sending and restarted — every reminder reaches the outbox
//! sink exactly once.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, TestDb, count_files};
use switchboard::config::Config;
use switchboard::daemon::Core;

const REMINDERS: usize = 10_000;

fn write_config(db: &TestDb, port: u16) -> PathBuf {
    let path = db.dir.path().join("switchboard.toml");
    let text = format!(
        r#"data_dir = "{dir}"
[server]
listen = "127.0.0.1:{port}"
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

/// The daemon's process, killed when dropped: a failing assertion must not leave a daemon
/// running (it would load the machine for every later test).
struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn(config: &Path, log: &Path) -> Running {
    let log = std::fs::File::create(log).expect("log");
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Running)
        .expect("spawn switchboard")
}

/// Waits for `at_least` files; on timeout the panic shows the end of the daemon's log.
async fn wait_for_files(dir: &Path, at_least: usize, timeout: Duration, log: &Path) {
    let started = Instant::now();
    while count_files(dir) < at_least {
        if started.elapsed() >= timeout {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            let problems: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .take(30)
                .collect();
            panic!(
                "only {} of {at_least} reminders delivered; {} says:\n{}\n... warnings and errors:\n{}",
                count_files(dir),
                log.display(),
                tail.join("\n"),
                problems.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_twice_during_a_reminder_run() {
    let db = TestDb::new(Backend::Postgres).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config_path = write_config(&db, port);
    let config = Config::load(Some(&config_path)).expect("config");
    {
        let core = Core::open(config.clone()).await.expect("core");
        let org = core
            .store
            .ensure_organization("north", "North Clinic")
            .await
            .unwrap();
        // Their 2-hour touch is due a minute ago; the 48-hour and 7-day touches are long past
        // (skipped as too soon), so exactly one reminder each is due.
        let start = chrono::Utc::now().timestamp_millis() + 2 * 3_600_000 - 60_000;
        core.store
            .seed_appointments(&org.id, "crash", &vec![start; REMINDERS])
            .await
            .unwrap();
        core.store.close().await;
    }
    let outbox = db.outbox();
    let log = db.dir.path().join("run1.log");
    let mut daemon = spawn(&config_path, &log);
    wait_for_files(&outbox, 1_000, Duration::from_secs(120), &log).await;
    daemon.kill().expect("kill -9");
    daemon.wait().expect("reap");
    let log = db.dir.path().join("run2.log");
    let mut daemon = spawn(&config_path, &log);
    wait_for_files(
        &outbox,
        count_files(&outbox) + 2_000,
        Duration::from_secs(120),
        &log,
    )
    .await;
    daemon.kill().expect("kill -9");
    daemon.wait().expect("reap");
    let log = db.dir.path().join("run3.log");
    let mut daemon = spawn(&config_path, &log);
    wait_for_files(&outbox, REMINDERS, Duration::from_secs(240), &log).await;
    // Let any duplicate show up before counting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        count_files(&outbox),
        REMINDERS,
        "every reminder exactly once"
    );

    let core = Core::open(config).await.expect("core");
    let org = core.store.organization_by_slug("north").await.unwrap();
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
    let term = Command::new("kill")
        .arg("-TERM")
        .arg(daemon.id().to_string())
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let status = daemon.wait().expect("reap");
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
    core.store.close().await;
}
