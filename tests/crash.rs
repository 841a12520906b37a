//! The `switchboard` binary as an operator runs it: `kill -9` in the middle of a burst loses
//! nothing and sends nothing twice; SIGTERM drains and exits cleanly; the logs hold no PHI.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Backend, TestDb, count_files};

const MESSAGES: usize = 5_000;
const PATIENT_NAME: &str = "Zebediah Quarterman";
const PHONE: &str = "+15558675309";

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_switchboard")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn write_config(db: &TestDb, port: u16) -> PathBuf {
    let path = db.dir.path().join("switchboard.toml");
    let text = format!(
        r#"data_dir = "{dir}"
[server]
listen = "127.0.0.1:{port}"
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

fn spawn_daemon(config: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    Command::new(binary())
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "debug,sqlx=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn switchboard")
}

fn create_key(config: &Path) -> String {
    let output = Command::new(binary())
        .args(["keys", "create", "--org", "north", "--new-org", "--config"])
        .arg(config)
        .output()
        .expect("keys create");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

async fn wait_healthy(base: &str) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "daemon did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Posts message `i` until the daemon acknowledges it, as a well-behaved client would
/// (same Idempotency-Key on every try).
async fn post_until_acknowledged(client: &reqwest::Client, base: &str, key: &str, i: usize) {
    let body = serde_json::json!({
        "subject": format!("For {PATIENT_NAME}"),
        "body": format!("Dear {PATIENT_NAME}, reminder number {i}."),
        "recipients": [{"address": PHONE, "channel": "sms"}],
    });
    let started = Instant::now();
    loop {
        let sent = client
            .post(format!("{base}/v1/messages"))
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
    let port = free_port();
    let config = write_config(&db, port);
    let key = create_key(&config);
    let base = format!("http://127.0.0.1:{port}");
    let logs = [
        db.dir.path().join("first.log"),
        db.dir.path().join("second.log"),
    ];

    let mut daemon = spawn_daemon(&config, &logs[0]);
    wait_healthy(&base).await;

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

    // Kill while messages are being accepted and delivered.
    let started = Instant::now();
    // ...once a third is acknowledged and the worker has started delivering.
    while acknowledged.load(Ordering::SeqCst) < MESSAGES / 3 || count_files(&db.outbox()) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "burst too slow"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.kill().expect("kill -9");
    daemon.wait().expect("reap");
    let delivered_before_restart = count_files(&db.outbox());
    let mut daemon = spawn_daemon(&config, &logs[1]);
    wait_healthy(&base).await;
    for client in clients {
        client.await.expect("client task");
    }
    assert_eq!(acknowledged.load(Ordering::SeqCst), MESSAGES);

    // Every delivery ends delivered, exactly once.
    let core_config = switchboard::config::Config::load(Some(&config)).expect("config");
    let core = switchboard::daemon::Core::open(core_config)
        .await
        .expect("core");
    let started = Instant::now();
    loop {
        let counts = core.store.delivery_counts().await.expect("counts");
        let delivered: i64 = counts
            .iter()
            .filter(|(_, s, _)| s == "delivered")
            .map(|(_, _, n)| n)
            .sum();
        let total: i64 = counts.iter().map(|(_, _, n)| n).sum();
        assert_eq!(
            total, MESSAGES as i64,
            "one delivery per acknowledged message: {counts:?}"
        );
        if delivered == total {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "not all delivered: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        count_files(&db.outbox()),
        MESSAGES,
        "one outbox file per delivery"
    );
    assert!(delivered_before_restart > 0 && delivered_before_restart < MESSAGES);

    // SIGTERM: drains and exits 0.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(daemon.id().to_string())
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let exit = wait_exit(&mut daemon, Duration::from_secs(30));
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

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            panic!("daemon did not exit within {timeout:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
