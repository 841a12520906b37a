//! Alerts that don't flood: a channel failing against a loopback provider through dozens of
//! retries is one firing notice, and its recovery one resolved notice — across a restart of
//! the daemon — delivered as Standard Webhooks-signed POSTs that the reference library
//! (`tests/peers/webhook_receiver.py`, PyPI `standardwebhooks`) verifies; on SQLite and
//! PostgreSQL.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::ports::Reserved;
use common::provider::{FakeProvider, Flavor, quick_retries, secret_file, twilio_connector};
use common::wait::wait_for;
use common::{Backend, TestDaemon, TestDb};
use serde_json::{Value, json};
use switchboard::config::{AlertKind, AlertRule, Config};

const WAIT: Duration = Duration::from_secs(90);
const SECRET: &str = "whsec_c2VjcmV0LWZvci10aGUtYWxlcnQtcmVjZWl2ZXI=";

/// The Python receiver, killed when dropped.
struct Receiver(Child);

impl Receiver {
    fn start(port: &Reserved, out: &Path) -> Self {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/webhook_receiver.py"
        );
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--port", &port.port().to_string()])
            .arg("--out")
            .arg(out)
            .args(["--secret", SECRET])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with standardwebhooks (pip install standardwebhooks)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("receiver output");
        assert_eq!(line.trim(), "READY", "the webhook receiver did not start");
        Self(child)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The notices received so far: (type, subject), verified ones only.
fn notices(out: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            assert_eq!(v["verified"], true, "an unsigned notice: {v}");
            (
                v["type"].as_str().unwrap_or_default().to_string(),
                v["subject_id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn config(db: &TestDb, provider: &FakeProvider, port: &Reserved) -> Config {
    let mut config = db.config();
    config.connectors.insert(
        "twilio".into(),
        twilio_connector(db, &provider.base_url(), "+15005550006", Some("north"), 1),
    );
    config
        .channels
        .insert("sms".into(), quick_retries("twilio", 200));
    config.alerting.evaluate_secs = 1;
    config.alerting.min_interval_secs = 0;
    config.alerting.webhook_url = Some(format!("http://127.0.0.1:{}/alerts", port.port()));
    config.alerting.webhook_secret = Some(secret_file(db, "alert-secret", SECRET));
    config.alerts = vec![AlertRule {
        name: "sms-failing".into(),
        kind: AlertKind::ChannelFailing,
        channel: Some("sms".into()),
        minutes: None,
        seconds: Some(1),
        count: None,
        days: None,
    }];
    config
}

async fn failing_channel_is_one_firing_and_one_resolved_notice(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FakeProvider::start(Flavor::Twilio).await;
    provider.script(
        (0..10_000)
            .map(|_| FakeProvider::twilio_error(503, 20503, "Service Unavailable"))
            .collect(),
    );
    let port = Reserved::new();
    let out = db.dir.path().join("notices.jsonl");
    let _receiver = Receiver::start(&port, &out);
    let config = config(&db, &provider, &port);
    let mut daemon = TestDaemon::start(config.clone()).await;
    let mut messages = Vec::new();
    for phone in ["+14155552671", "+14155552672", "+14155552673"] {
        let created: Value = daemon
            .post_message(json!({"body": "hello",
                "recipients": [{"address": phone, "channel": "sms"}]}))
            .await
            .json()
            .await
            .expect("json");
        messages.push(created["id"].as_str().expect("id").to_string());
    }
    // Many retries, one notice.
    wait_for("the firing notice", WAIT, async || {
        !notices(&out).is_empty()
    })
    .await;
    assert_eq!(
        notices(&out),
        [("alert.firing".to_string(), "sms/twilio".to_string())]
    );
    wait_for("dozens of failed attempts", WAIT, async || {
        provider.sends().len() >= 30
    })
    .await;

    // A restart while it still fails: the new daemon takes the lease and evaluates, and
    // announces nothing again.
    let old_holder = daemon
        .core
        .store
        .leases()
        .get("alerts")
        .await
        .expect("lease")
        .map(|(holder, _)| holder);
    daemon.stop().await;
    let mut daemon = TestDaemon::start(config).await;
    wait_for("the new daemon evaluating", WAIT, async || {
        let holder = daemon
            .core
            .store
            .leases()
            .get("alerts")
            .await
            .expect("lease")
            .map(|(holder, _)| holder);
        holder.is_some() && holder != old_holder
    })
    .await;
    let sends = provider.sends().len();
    wait_for("more failed attempts after the restart", WAIT, async || {
        provider.sends().len() >= sends + 5
    })
    .await;

    // The provider recovers: every message is sent, and one resolved notice follows.
    provider.clear_script();
    for message in &messages {
        wait_for("the message sent", WAIT, async || {
            daemon.get_json(&format!("/v1/messages/{message}")).await["deliveries"][0]["status"]
                == "sent"
        })
        .await;
    }
    wait_for("the resolved notice", WAIT, async || {
        notices(&out).len() >= 2
    })
    .await;
    assert_eq!(
        notices(&out),
        [
            ("alert.firing".to_string(), "sms/twilio".to_string()),
            ("alert.resolved".to_string(), "sms/twilio".to_string()),
        ],
        "{} sends to the provider",
        provider.sends().len()
    );
    // The state is persisted: resolved and announced.
    let states = daemon.core.store.alerts().all().await.expect("states");
    assert_eq!(states.len(), 1, "{states:?}");
    assert!(!states[0].firing && states[0].notified, "{states:?}");
    daemon.stop().await;
}
both_databases!(
    failing_channel,
    crate::failing_channel_is_one_firing_and_one_resolved_notice
);
