//! `/metrics` as Prometheus sees it: counters that move when a delivery is sent, a provider
//! webhook arrives and an HL7 message is answered; the queue gauges; and text that an
//! independent OpenMetrics parser (PyPI `prometheus_client`) accepts — on SQLite and PostgreSQL.

mod common;

use std::time::Duration;

use common::provider::{
    FakeProvider, Flavor, TWILIO_ACCOUNT, quick_retries, signed_twilio_post, twilio_connector,
};
use common::wait::wait_for;
use common::{Backend, TestDaemon, TestDb};
use serde_json::json;
use switchboard::config::Config;
use switchboard::hl7::client;

const WAIT: Duration = Duration::from_secs(60);
const FROM: &str = "+15005550006";
const PATIENT_PHONE: &str = "+14155552671";

fn twilio_config(db: &TestDb, base_url: &str) -> Config {
    let mut config = db.config();
    config.connectors.insert(
        "twilio".into(),
        twilio_connector(db, base_url, FROM, Some("north"), 1),
    );
    config
        .channels
        .insert("sms".into(), quick_retries("twilio", 6));
    config.metrics.refresh_secs = 1;
    config
}

async fn scrape(daemon: &TestDaemon) -> String {
    let response = daemon
        .http
        .get(daemon.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    response.text().await.expect("text")
}

/// The value of the sample `series` (name and labels exactly as printed), 0 when absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Parses `text` with `prometheus_client.openmetrics.parser` (strict: the `# EOF`, names,
/// types, suffixes, label escaping); returns the metric family names it read.
fn parse_openmetrics(text: &str, dir: &std::path::Path) -> Vec<String> {
    let file = dir.join("scrape.txt");
    std::fs::write(&file, text).expect("write scrape");
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sys\n\
             from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
             for f in text_string_to_metric_families(open(sys.argv[1]).read()):\n    print(f.name)\n",
        )
        .arg(&file)
        .output()
        .expect("python3 (pip install prometheus_client)");
    assert!(
        output.status.success(),
        "not OpenMetrics: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(String::from)
        .collect()
}

async fn counters_move_and_the_text_parses(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FakeProvider::start(Flavor::Twilio).await;
    let mut config = twilio_config(&db, &provider.base_url());
    config.hl7.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.hl7.organization = "north".into();
    let mut daemon = TestDaemon::start(config).await;
    let hl7 = daemon
        .daemon
        .as_ref()
        .and_then(|d| d.hl7_addr)
        .expect("hl7 listener");

    // Counters are per process, and the other backend's test may share it: compare deltas.
    let sent = "switchboard_deliveries_total{channel=\"sms\",connector=\"twilio\",status=\"sent\"}";
    let delivered =
        "switchboard_deliveries_total{channel=\"sms\",connector=\"twilio\",status=\"delivered\"}";
    let latency = "switchboard_delivery_accept_to_sent_seconds_count{channel=\"sms\"}";
    let final_latency =
        "switchboard_delivery_accept_to_final_seconds_count{channel=\"sms\",status=\"delivered\"}";
    let webhook = "switchboard_provider_webhooks_total{connector=\"twilio\",kind=\"status\",result=\"accepted\"}";
    let forged = "switchboard_provider_webhooks_total{connector=\"twilio\",kind=\"status\",result=\"webhook_signature_invalid\"}";
    let adt = "switchboard_hl7_messages_total{type=\"ADT^A04\",ack=\"AA\"}";
    let ack_latency = "switchboard_hl7_ack_seconds_count";
    let before = scrape(&daemon).await;

    // A delivery: sent by the provider, then delivered by its signed status callback.
    let created: serde_json::Value = daemon
        .post_message(json!({"body": "hello",
            "recipients": [{"address": PATIENT_PHONE, "channel": "sms"}]}))
        .await
        .json()
        .await
        .expect("json");
    let message_id = created["id"].as_str().expect("id").to_string();
    let mut sid = String::new();
    wait_for("the delivery sent", WAIT, async || {
        let view = daemon.get_json(&format!("/v1/messages/{message_id}")).await;
        sid = view["deliveries"][0]["provider_ref"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        view["deliveries"][0]["status"] == "sent"
    })
    .await;
    let params = [
        ("AccountSid", TWILIO_ACCOUNT),
        ("MessageSid", sid.as_str()),
        ("MessageStatus", "delivered"),
        ("To", PATIENT_PHONE),
        ("From", FROM),
        ("ApiVersion", "2010-04-01"),
    ];
    let response = signed_twilio_post(&daemon, "/hooks/twilio/status", &params).await;
    assert!(response.status().is_success(), "{}", response.status());
    // A forgery is counted by its refusal.
    let response = daemon
        .http
        .post(daemon.url("/hooks/twilio/status"))
        .header("X-Twilio-Signature", "forged")
        .form(&params)
        .send()
        .await
        .expect("forged");
    assert_eq!(response.status(), 403);

    // An HL7 message, answered AA.
    let adt_message = "MSH|^~\\&|EHR|CLINIC|SB|SB|20240101120000||ADT^A04|metrics-1|P|2.5.1\rEVN|A04|20240101\rPID|1||M-1^^^CLINIC^MR||Doe^Pat||19700101|F\r".to_string();
    let acks = client::send(&hl7.to_string(), &[adt_message], Duration::from_secs(10))
        .await
        .expect("send HL7");
    assert_eq!(acks[0].0, "AA");

    let after = scrape(&daemon).await;
    for series in [
        sent,
        delivered,
        latency,
        final_latency,
        webhook,
        forged,
        adt,
        ack_latency,
    ] {
        assert!(
            value(&after, series) >= value(&before, series) + 1.0,
            "{series} did not move:\n{after}"
        );
    }
    // The queue gauges come from the refresh task: the sms channel, empty again.
    wait_for("the queue gauges", WAIT, async || {
        let text = scrape(&daemon).await;
        text.contains("switchboard_queue_depth{channel=\"sms\"} 0\n")
            && text.contains("switchboard_queue_oldest_age_seconds{channel=\"sms\"} 0.0\n")
            && text.contains("switchboard_dead_letters 0\n")
    })
    .await;

    // Families with samples here (a family shows once it has one).
    let names = parse_openmetrics(&scrape(&daemon).await, db.dir.path());
    for family in [
        "switchboard_deliveries",
        "switchboard_delivery_accept_to_sent_seconds",
        "switchboard_delivery_accept_to_final_seconds",
        "switchboard_queue_depth",
        "switchboard_queue_oldest_age_seconds",
        "switchboard_dead_letters",
        "switchboard_provider_webhooks",
        "switchboard_hl7_messages",
        "switchboard_hl7_ack_seconds",
        "switchboard_task_panics",
        "switchboard_task_restarts",
    ] {
        assert!(names.iter().any(|n| n == family), "{family} in {names:?}");
    }
    daemon.stop().await;
}
both_databases!(
    counters_move_and_the_text_parses,
    crate::counters_move_and_the_text_parses
);

/// Waiting deliveries show in the queue gauges with their age, without a scrape querying.
async fn queue_depth_and_age(backend: Backend) {
    let db = TestDb::new(backend).await;
    // A provider that is never reached: the channel's connector sends nowhere in time.
    let provider = FakeProvider::start(Flavor::Twilio).await;
    provider.script(
        (0..50)
            .map(|_| FakeProvider::twilio_error(503, 20503, "Service Unavailable"))
            .collect(),
    );
    let mut config = twilio_config(&db, &provider.base_url());
    config
        .channels
        .insert("sms".into(), quick_retries("twilio", 50));
    if let Some(sms) = config.channels.get_mut("sms") {
        sms.backoff_initial_ms = 5_000;
        sms.backoff_max_secs = 60;
    }
    let mut daemon = TestDaemon::start(config).await;
    for _ in 0..2 {
        let response = daemon
            .post_message(json!({"body": "hello",
                "recipients": [{"address": PATIENT_PHONE, "channel": "sms"}]}))
            .await;
        assert_eq!(response.status(), 201);
    }
    wait_for("two deliveries waiting on sms", WAIT, async || {
        let text = scrape(&daemon).await;
        value(&text, "switchboard_queue_depth{channel=\"sms\"}") == 2.0
            && value(
                &text,
                "switchboard_queue_oldest_age_seconds{channel=\"sms\"}",
            ) > 0.0
    })
    .await;
    let text = scrape(&daemon).await;
    assert!(
        value(
            &text,
            "switchboard_delivery_attempts_failed_total{channel=\"sms\",connector=\"twilio\"}"
        ) >= 1.0,
        "{text}"
    );
    daemon.stop().await;
}
both_databases!(queue_depth_and_age, crate::queue_depth_and_age);
