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

/// The connections of the test database that last ran a `LISTEN` (a listener runs nothing
/// else).
async fn listeners(pool: &sqlx::PgPool) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
          WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_all(pool)
    .await
    .expect("pg_stat_activity")
}

/// On PostgreSQL the workers are woken by `NOTIFY` (apalis's insert trigger), not their poll:
/// with a one-minute poll a message queued by another process is still picked up within
/// seconds. One connection per daemon listens for every worker and the events feed (not one
/// per worker: each costs the daemon about 1.8 MB), and when that connection is killed (a
/// PostgreSQL restart, a proxy dropping it) it comes back and the wake-ups with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_workers_wake_on_notify_through_one_listener() {
    let db = TestDb::new(Backend::Postgres).await;
    let config = write_config(&db, 60_000, "[channels.sms]\nconnector = \"outbox\"\n");
    let daemon = Spawned::start(&config, &db.dir.path().join("daemon.log"), "warn").await;
    let created = switchboard(&config, &["keys", "create", "--org", "north", "--new-org"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");

    let delivered_promptly = async |what: &str| {
        let id = send(&config, "+15005550006");
        daemon
            .wait_for(
                format!("{what}: delivered within 5 s of `send` (the poll is 60 s)"),
                Duration::from_secs(5),
                async || delivered(&config, &id),
            )
            .await;
    };
    delivered_promptly("the first message").await;
    assert_eq!(listeners(&pool).await.len(), 1, "one LISTEN connection");

    let killed = listeners(&pool).await;
    for &pid in &killed {
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&pool)
            .await
            .expect("terminate the listener");
    }
    // Back, listening again: a message queued now wakes its worker, not the poll.
    daemon
        .wait_for(
            "the listener reconnected",
            Duration::from_secs(10),
            async || {
                let now = listeners(&pool).await;
                now.len() == 1 && !killed.contains(&now[0])
            },
        )
        .await;
    for n in 0..3 {
        delivered_promptly(&format!("message {n} after the reconnect")).await;
    }
}

/// One `error:` line on stderr (never the same cause twice), exit status 1.
fn error_line(output: &Output) -> String {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{text}");
    errors[0].to_string()
}

async fn errors_name_what_is_at_fault(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config = write_config(&db, 200, "[channels.sms]\nconnector = \"outbox\"\n");
    let migrated = switchboard(&config, &["migrate"]);
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    let created = switchboard(&config, &["keys", "create", "--org", "north", "--new-org"]);
    assert!(created.status.success(), "{}", stderr(&created));

    // Unknown ids: the record named, no library text ("no rows returned by a query").
    for (args, expected) in [
        (
            vec!["status", "msg_nope"],
            "error: message msg_nope does not exist",
        ),
        (
            vec!["hl7", "reprocess", "hl7_nope"],
            "error: archived HL7 message hl7_nope: does not exist",
        ),
        (
            vec!["dead-letters", "retry", "dlv_nope"],
            "error: dead letter dlv_nope (see `switchboard dead-letters list`) does not exist",
        ),
        (
            vec!["reminders", "why", "--org", "north", "A1"],
            "error: appointment A1 of north does not exist",
        ),
    ] {
        let line = error_line(&switchboard(&config, &args));
        assert_eq!(line, expected, "{args:?}");
    }

    // `--org` is looked up the same way by every command that takes it.
    let campaign = db.dir.path().join("campaign.json");
    std::fs::write(&campaign, "{}").expect("campaign file");
    let campaign = campaign.display().to_string();
    for args in [
        vec![
            "send",
            "--org",
            "nope",
            "--channel",
            "sms",
            "--to",
            "+15005550006",
            "--body",
            "x",
        ],
        vec!["dead-letters", "list", "--org", "nope"],
        vec!["dead-letters", "--org", "nope"],
        vec!["keys", "list", "--org", "nope"],
        vec!["keys", "create", "--org", "nope"],
        vec!["reminders", "why", "--org", "nope", "A1"],
        vec!["campaign", "create", "--org", "nope", campaign.as_str()],
        vec!["direct", "quarantine", "list", "--org", "nope"],
    ] {
        let line = error_line(&switchboard(&config, &args));
        assert!(
            line.starts_with("error: --org nope: no such organization (existing: ")
                && line.contains("north"),
            "{args:?}: {line}"
        );
    }
    // ... and accepted in the same places (before or after `list`).
    for args in [
        vec!["dead-letters", "list", "--org", "north"],
        vec!["dead-letters", "--org", "north", "list"],
        vec!["dead-letters", "--org", "north"],
        vec!["keys", "list", "--org", "north"],
    ] {
        let out = switchboard(&config, &args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
}

both_databases!(errors, super::errors_name_what_is_at_fault);

/// Errors that need no database: a configuration error printed once, an unreadable
/// certificate named by its flag without OpenSSL's error stack, and value enums refused as
/// usage errors (exit 2) listing the possible values.
#[test]
fn configuration_and_tool_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "data_dir = 5\n").expect("config");
    let line = error_line(&switchboard(&bad, &["status", "msg_x"]));
    assert!(line.contains("bad.toml"), "{line}");
    assert_eq!(line.matches("invalid type").count(), 1, "{line}");

    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").expect("junk");
    let input = dir.path().join("message.eml");
    std::fs::write(&input, "From: a@b.example\r\n\r\nhi\r\n").expect("message");
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "direct",
            "seal",
            "--from",
            "a@b.example",
            "--to",
            "c@d.example",
        ])
        .arg(&input)
        .arg("--sign-cert")
        .arg(&junk)
        .arg("--sign-key")
        .arg(&junk)
        .arg("--recipient-cert")
        .arg(&junk)
        .output()
        .expect("seal");
    let line = error_line(&out);
    assert!(
        line.starts_with(&format!(
            "error: --sign-cert {}: not a certificate: expected PEM, DER or a PKCS#7 bundle",
            junk.display()
        )),
        "{line}"
    );
    assert!(!line.contains("asn1") && !line.contains(".c:"), "{line}");

    for (args, values) in [
        (
            vec![
                "send",
                "--org",
                "x",
                "--to",
                "y",
                "--body",
                "z",
                "--channel",
                "pigeon",
            ],
            "sms, email, fax, direct, outbox",
        ),
        (
            vec![
                "direct",
                "seal",
                "in",
                "--from",
                "a",
                "--to",
                "b",
                "--sign-cert",
                "c",
                "--sign-key",
                "d",
                "--recipient-cert",
                "e",
                "--cipher",
                "rot13",
            ],
            "aes128-cbc, aes256-cbc, aes128-gcm, aes256-gcm",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(&args)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(values), "{}", stderr(&out));
    }
    // `send` has no default channel: the operator says which.
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["send", "--org", "x", "--to", "y", "--body", "z"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--channel <CHANNEL>"),
        "{}",
        stderr(&out)
    );
}

/// `hl7 send` against the daemon's listener: one line per ACK, a refused message's code and
/// reason, exit 3 when any was not accepted, and an ISO-8859-1 file archived byte for byte.
async fn hl7_send_prints_each_ack(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.hl7.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.hl7.organization = "north".into();
    config.hl7.time_zone = "America/Chicago".into();
    let daemon = common::TestDaemon::start(config).await;
    let addr = daemon
        .daemon
        .as_ref()
        .and_then(|d| d.hl7_addr)
        .expect("hl7 listener");
    let file = db.dir.path().join("latin1.hl7");
    let mut bytes = b"MSH|^~\\&|A|B|C|D|2024||ADT^A04|LAT1|P|2.5|||||||8859/1\n\
                      PID|1||LAT1^^^^MR||Mu"
        .to_vec();
    bytes.push(0xF1); // ñ in ISO-8859-1
    bytes.extend_from_slice(
        b"oz^Ana\n\
          MSH|^~\\&|A|B|C|D|2024||ORU^R01|U1|P|2.5\nPID|1||X^^^^MR\n\
          MSH|^~\\&|A|B|C|D|2024||SIU^S12|NOSTART|P|2.5\nSCH||F1\nPID|1||X^^^^MR\n",
    );
    std::fs::write(&file, &bytes).expect("file");
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["hl7", "send", "--to", &addr.to_string()])
        .arg(&file)
        .env("RUST_LOG", "warn")
        .output()
        .expect("hl7 send");
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(out.status.code(), Some(3), "{lines:?} {}", stderr(&out));
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], "AA LAT1");
    assert!(
        lines[1].starts_with("AR U1: ") && lines[1].len() > "AR U1: ".len(),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("AE NOSTART: ") && lines[2].len() > "AE NOSTART: ".len(),
        "{lines:?}"
    );
    assert!(
        stderr(&out).contains("2 message(s) not accepted"),
        "{}",
        stderr(&out)
    );

    let rows = daemon
        .core
        .store
        .hl7()
        .by_status(&["applied", "error", "received"], 100)
        .await
        .expect("archive");
    let row = rows
        .iter()
        .find(|r| r.control_id.as_deref() == Some("LAT1"))
        .expect("LAT1 archived");
    let raw = daemon.core.keyring.open(&row.raw, &row.id).expect("open");
    assert!(
        raw.windows(6).any(|w| w == b"Mu\xF1oz^"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
}

both_databases!(hl7_send, super::hl7_send_prints_each_ack);

/// A listener that acknowledges the first message and never the second: the first ACK is
/// printed, then the timeout is reported naming what is missing (exit 1).
#[test]
fn hl7_send_keeps_acks_received_before_a_timeout() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let mut answered = false;
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            seen.extend_from_slice(&buf[..n]);
            if !answered && seen.windows(2).any(|w| w == [0x1C, 0x0D]) {
                answered = true;
                stream
                    .write_all(b"\x0bMSH|^~\\&|R|R|S|S|2024||ACK|A1|P|2.5\rMSA|AA|X1\r\x1c\x0d")
                    .expect("ack");
            }
        }
    });
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("two.hl7");
    std::fs::write(
        &file,
        "MSH|^~\\&|A|B|C|D|2024||ADT^A04|X1|P|2.5\rPID|1||X1^^^^MR\r\
         MSH|^~\\&|A|B|C|D|2024||ADT^A04|X2|P|2.5\rPID|1||X2^^^^MR\r",
    )
    .expect("file");
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["hl7", "send", "--timeout", "1", "--to", &addr.to_string()])
        .arg(&file)
        .output()
        .expect("hl7 send");
    assert_eq!(stdout(&out), "AA X1");
    let line = error_line(&out);
    assert!(
        line.contains(&format!("--to {addr}"))
            && line.contains("no ACK within 1 s")
            && line.contains("1 ACK(s) received, 1 message(s) without an ACK"),
        "{line}"
    );
    server.join().expect("server");
}

fn json(config: &Path, args: &[&str]) -> serde_json::Value {
    let mut with_flag = args.to_vec();
    with_flag.push("--json");
    let out = switchboard(config, &with_flag);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?} --json: {e}: {}", stdout(&out)))
}

/// `--json` on the commands that print records: one document, stable field names.
async fn json_output(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config = write_config(&db, 200, "[channels.sms]\nconnector = \"outbox\"\n");
    assert!(switchboard(&config, &["migrate"]).status.success());
    let created = switchboard(&config, &["keys", "create", "--org", "north", "--new-org"]);
    assert!(created.status.success(), "{}", stderr(&created));

    let keys = json(&config, &["keys", "list"]);
    assert_eq!(keys.as_array().map(Vec::len), Some(1), "{keys}");
    let key = &keys[0];
    assert!(
        key["id"].as_str().is_some_and(|id| id.starts_with("key_")),
        "{key}"
    );
    assert_eq!(key["organization"], "north");
    assert_eq!(key["name"], "default");
    assert_eq!(key["scopes"], serde_json::json!(["send", "read"]));
    assert_eq!(key["state"], "active");
    assert!(
        key["expires_at"].is_null() && key["revoked_at"].is_null(),
        "{key}"
    );
    assert!(
        key["created_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{key}"
    );

    let id = send(&config, "+15005550006");
    let status = json(&config, &["status", &id]);
    assert_eq!(status["id"], id.as_str(), "{status}");
    assert_eq!(status["deliveries"][0]["channel"], "sms", "{status}");
    assert_eq!(status["deliveries"][0]["status"], "queued", "{status}");

    for args in [
        vec!["dead-letters", "list", "--org", "north"],
        vec!["dead-letters"],
        vec!["inbound", "orphans"],
        vec!["direct", "quarantine", "list"],
        vec!["certs", "list"],
    ] {
        assert_eq!(json(&config, &args), serde_json::json!([]), "{args:?}");
    }

    let definition = db.dir.path().join("campaign.json");
    std::fs::write(
        &definition,
        r#"{"name": "Wellness", "recall_type": "WELLNESS", "due_from": "2027-01-01",
            "due_to": "2027-03-31", "channels": ["sms"]}"#,
    )
    .expect("definition");
    let out = switchboard(
        &config,
        &[
            "campaign",
            "create",
            "--org",
            "north",
            &definition.display().to_string(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let campaign = stdout(&out);
    let report = json(&config, &["campaign", "report", &campaign]);
    assert_eq!(report["campaign"], campaign.as_str());
    for field in [
        "targeted",
        "sent",
        "skipped",
        "delivered",
        "failed",
        "confirmed",
        "booked",
    ] {
        assert_eq!(report[field], 0, "{field}: {report}");
    }
    let preview = json(&config, &["campaign", "preview", &campaign]);
    assert_eq!(preview["cohort"], 0, "{preview}");
    assert!(
        preview["by_channel"].is_object() && preview["samples"].is_array(),
        "{preview}"
    );
    for (action, state) in [
        ("pause", "paused"),
        ("resume", "active"),
        ("cancel", "cancelled"),
    ] {
        let out = switchboard(&config, &["campaign", action, &campaign]);
        assert!(out.status.success(), "{action}: {}", stderr(&out));
        assert_eq!(stdout(&out), format!("{campaign} {state}"));
    }
    let out = switchboard(&config, &["campaign", "resume", &campaign]);
    assert!(
        !out.status.success() && stderr(&out).contains("cancelled"),
        "{}",
        stderr(&out)
    );
}

both_databases!(json, super::json_output);
