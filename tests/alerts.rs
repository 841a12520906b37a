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

/// An email's decoded subject.
fn subject_of(raw: &[u8]) -> String {
    mail_parser::MessageParser::default()
        .parse(raw)
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_default()
}

/// Alert emails whose subject is `[switchboard] {state}: {rule_and_subject}…`: how many.
fn emails(dir: &Path, state: &str, rule_and_subject: &str) -> usize {
    let prefix = format!("[switchboard] {state}: {rule_and_subject}");
    common::mail::received(dir)
        .iter()
        .filter(|(_, raw)| subject_of(raw).starts_with(&prefix))
        .count()
}

/// The certificate and HL7 rules, by email through an SMTP connector to a real SMTP server
/// (aiosmtpd): a Direct certificate inside its warning window is one firing email per
/// certificate, however many evaluations pass; a silent HL7 feed (inside business hours, here
/// all day) fires once and resolves once when a message comes in. One test runs both databases
/// in turn: the HL7 and certificate figures are the process's, shared by concurrent tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_and_hl7_rules_email_the_operators() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        certificate_and_hl7_rules(backend).await;
    }
}

async fn certificate_and_hl7_rules(backend: Backend) {
    use switchboard::config::ConnectorConfig;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let db = TestDb::new(backend).await;
    let mail_dir = db.dir.path().join("mail");
    std::fs::create_dir_all(&mail_dir).expect("mail dir");
    let sink = common::mail::start_sink(&mail_dir, &[]);
    let pki = common::pki::Pki::new();
    pki.ca("ca")
        .leaf("ca", "us", "email:us@direct.north.example");

    let mut config = db.config();
    let smtp = format!(
        "host = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"Switchboard <ops@gw.example.org>\"\ntimeout_secs = 3\n",
        sink.port
    );
    config.connectors.insert(
        "ops-mail".into(),
        ConnectorConfig::Smtp(toml::from_str(&smtp).expect("smtp connector")),
    );
    let direct = format!(
        "address = \"us@direct.north.example\"\norganization = \"north\"\n\
         certificate = \"{cert}\"\nprivate_key = {{ file = \"{key}\" }}\n\
         trust = [{{ files = [\"{ca}\"] }}]\ndns = {{ enabled = false }}\n\
         ldap = {{ enabled = false }}\n\
         smtp = {{ host = \"127.0.0.1\", port = 9, tls = \"none\", timeout_secs = 1 }}\n",
        cert = pki.path("us.pem").display(),
        key = pki.path("us.key").display(),
        ca = pki.path("ca.pem").display(),
    );
    config.connectors.insert(
        "hisp".into(),
        ConnectorConfig::Direct(toml::from_str(&direct).expect("direct connector")),
    );
    config.hl7.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.hl7.organization = "north".into();
    config.alerting.evaluate_secs = 1;
    config.alerting.min_interval_secs = 0;
    config.alerting.email_to = vec!["oncall@gw.example.org".into()];
    config.alerting.email_connector = Some("ops-mail".into());
    config.alerting.business_hours_start = "00:00".into();
    config.alerting.business_hours_end = "23:59".into();
    config.alerting.business_days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .map(String::from)
        .to_vec();
    let rule = |name: &str, kind: AlertKind| AlertRule {
        name: name.into(),
        kind,
        channel: None,
        minutes: None,
        seconds: None,
        count: None,
        days: None,
    };
    config.alerts = vec![
        AlertRule {
            days: Some(45),
            ..rule("certs-45d", AlertKind::CertificateExpiring)
        },
        AlertRule {
            seconds: Some(2),
            ..rule("hl7-quiet", AlertKind::Hl7Silent)
        },
    ];
    let mut daemon = TestDaemon::start(config).await;

    // The test PKI's certificates are valid for 30 days: inside the 45-day window.
    wait_for("the certificate alert email", WAIT, async || {
        emails(&mail_dir, "FIRING", "certs-45d (us@direct.north.example/") >= 1
    })
    .await;
    wait_for("the HL7 silence alert email", WAIT, async || {
        emails(&mail_dir, "FIRING", "hl7-quiet (hl7)") == 1
    })
    .await;

    // A message on the feed resolves the silence.
    let hl7 = daemon
        .daemon
        .as_ref()
        .and_then(|d| d.hl7_addr)
        .expect("hl7 listener");
    let mut stream = tokio::net::TcpStream::connect(hl7).await.expect("connect");
    stream
        .write_all(b"\x0bMSH|^~\\&|EHR|CLINIC|SB|SB|20240101120000||ADT^A04|ALERT1|P|2.5.1\rPID|1||MRN-AL^^^CLINIC^MR||Quiet^Pat\r\x1c\r")
        .await
        .expect("send");
    let mut ack = vec![0u8; 4096];
    let n = stream.read(&mut ack).await.expect("ack");
    assert!(String::from_utf8_lossy(&ack[..n]).contains("MSA|AA"));
    wait_for("the HL7 resolved email", WAIT, async || {
        emails(&mail_dir, "RESOLVED", "hl7-quiet (hl7)") == 1
    })
    .await;

    // Many evaluations later: one firing email per subject, one resolve, nothing else.
    let evaluated = daemon.core.store.alerts().all().await.expect("states");
    for state in &evaluated {
        assert!(state.notified, "{state:?}");
    }
    let received = common::mail::received(&mail_dir);
    let mut subjects: Vec<String> = received
        .iter()
        .map(|(envelope, raw)| {
            assert_eq!(
                envelope["rcpt_tos"],
                json!(["oncall@gw.example.org"]),
                "{envelope}"
            );
            subject_of(raw)
        })
        .collect();
    subjects.sort();
    let unique: std::collections::BTreeSet<&String> = subjects.iter().collect();
    assert_eq!(
        unique.len(),
        subjects.len(),
        "a notice repeated: {subjects:#?}"
    );
    assert_eq!(
        subjects.len(),
        evaluated.len() + 1,
        "one firing email per subject and one resolve: {subjects:#?}"
    );
    daemon.stop().await;
}
