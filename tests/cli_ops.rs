//! The command line against a daemon running in its own process, on SQLite and PostgreSQL:
//! a message queued by `switchboard send` (another process) is picked up within the queue's
//! poll interval, not at apalis's 10-second heartbeat.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::process::Spawned;
use common::{Backend, TestDb};

fn switchboard(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .expect("switchboard")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_string()
}

/// A configuration file for `db`: state under the temp dir, HTTP on port 0, the queue polled
/// every `poll_ms`, the sweeper slow (it must not be what delivers).
fn write_config(db: &TestDb, poll_ms: u64, extra: &str) -> PathBuf {
    let config = db.dir.path().join("switchboard.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{dir}\"\n[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"{url}\"\n\
             [queue]\npoll_interval_ms = {poll_ms}\nsweep_interval_secs = 120\n{extra}",
            dir = db.dir.path().display(),
            url = db.url,
        ),
    )
    .expect("config");
    config
}

fn send(config: &Path, to: &str) -> String {
    let out = switchboard(
        config,
        &[
            "send",
            "--org",
            "north",
            "--channel",
            "sms",
            "--to",
            to,
            "--body",
            "hello",
        ],
    );
    assert!(out.status.success(), "send: {}", stderr(&out));
    let id = stdout(&out);
    assert!(id.starts_with("msg_"), "{id}");
    id
}

fn delivered(config: &Path, id: &str) -> bool {
    let out = switchboard(config, &["status", id]);
    assert!(out.status.success(), "status: {}", stderr(&out));
    stdout(&out).contains("→ delivered")
}

async fn cli_send_is_picked_up_within_the_poll_interval(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config = write_config(&db, 200, "[channels.sms]\nconnector = \"outbox\"\n");
    let daemon = Spawned::start(&config, &db.dir.path().join("daemon.log"), "warn").await;
    let created = switchboard(&config, &["keys", "create", "--org", "north", "--new-org"]);
    assert!(created.status.success(), "{}", stderr(&created));

    // The first one may meet workers still starting; once it is delivered they are idle,
    // waiting on their poll interval.
    let first = send(&config, "+15005550006");
    daemon
        .wait_for(
            "the first message delivered",
            Duration::from_secs(60),
            async || delivered(&config, &first),
        )
        .await;
    let mut pickups = Vec::new();
    for n in 0..5 {
        let id = send(&config, "+15005550006");
        // apalis's heartbeat (10 s) must not be what wakes the worker: with a 200 ms poll
        // interval a message queued by another process is delivered well within 5 s.
        daemon
            .wait_for(
                format!("message {n} delivered within 5 s of `send`"),
                Duration::from_secs(5),
                async || delivered(&config, &id),
            )
            .await;
        let pickup = pickup(&config, &id);
        assert!(
            pickup < Duration::from_secs(3),
            "message {n} waited {pickup:?} between queued and sending"
        );
        pickups.push(pickup);
    }
    eprintln!("{backend:?}: queued → sending {pickups:?}");
}

/// The time between a delivery's `queued` and `sending` entries in `switchboard status`.
fn pickup(config: &Path, id: &str) -> Duration {
    let out = stdout(&switchboard(config, &["status", id]));
    let at = |status: &str| {
        out.lines()
            .find_map(|line| {
                let mut words = line.split_whitespace();
                let at = words.next()?;
                (words.next()? == status)
                    .then(|| chrono::DateTime::parse_from_rfc3339(at).expect("history time"))
            })
            .unwrap_or_else(|| panic!("no {status} entry: {out}"))
    };
    (at("sending") - at("queued")).to_std().unwrap_or_default()
}

both_databases!(
    cli_send_pickup,
    super::cli_send_is_picked_up_within_the_poll_interval
);
