//! Everything that arrives from outside is bound to its organization by what it cannot forge:
//! inbound SMS by the number it was sent to, status webhooks by the connector they arrive
//! through and a keyed reference token — on SQLite and PostgreSQL, through the real daemon and
//! a loopback provider.

mod common;

use std::time::{Duration, Instant};

use common::provider::{
    FakeProvider, Flavor, TWILIO_ACCOUNT as ACCOUNT, signed_twilio_post as signed_post,
    telnyx_connector, telnyx_post, telnyx_sign, twilio_connector,
};
use common::{Backend, TestDaemon, TestDb};
use openssl::pkey::PKey;
use serde_json::json;
use switchboard::config::{ChannelConfig, Config, ConnectorConfig, OrganizationConfig};

const WAIT: Duration = Duration::from_secs(20);
const NORTH_NUMBER: &str = "+12125550100";
const SOUTH_NUMBER: &str = "+13055550100";
const NOBODYS_NUMBER: &str = "+14155550199";
const PATIENT: &str = "+14155552671";

fn twilio(db: &TestDb, base_url: &str, organization: Option<&str>) -> ConnectorConfig {
    twilio_connector(db, base_url, NORTH_NUMBER, organization, 2)
}

/// Two organizations sharing one Twilio account (a connector owned by neither), each owning
/// its number; a second connector `other` on the same account carries no channel.
fn shared_config(db: &TestDb, base_url: &str) -> Config {
    let mut config = db.config();
    config
        .connectors
        .insert("twilio".into(), twilio(db, base_url, None));
    config
        .connectors
        .insert("other".into(), twilio(db, base_url, None));
    config.channels.insert(
        "sms".into(),
        ChannelConfig {
            connector: "twilio".into(),
            ..ChannelConfig::default()
        },
    );
    for (slug, number) in [("north", NORTH_NUMBER), ("south", SOUTH_NUMBER)] {
        config.organizations.insert(
            slug.into(),
            OrganizationConfig {
                numbers: vec![number.into()],
                ..OrganizationConfig::default()
            },
        );
    }
    config
}

async fn inbound(daemon: &TestDaemon, sid: &str, to: &str, body: &str) {
    let params = [
        ("AccountSid", ACCOUNT),
        ("MessageSid", sid),
        ("From", PATIENT),
        ("To", to),
        ("Body", body),
        ("NumMedia", "0"),
    ];
    let response = signed_post(daemon, "/hooks/twilio/inbound", &params).await;
    assert!(response.status().is_success(), "{}", response.status());
}

async fn get(daemon: &TestDaemon, key: &str, path: &str) -> serde_json::Value {
    let response = daemon
        .http
        .get(daemon.url(path))
        .bearer_auth(key)
        .send()
        .await
        .expect("GET");
    assert!(
        response.status().is_success(),
        "GET {path}: {}",
        response.status()
    );
    response.json().await.expect("json")
}

async fn send_sms(daemon: &TestDaemon, key: &str, body: &str) -> String {
    let response = daemon
        .http
        .post(daemon.url("/v1/messages"))
        .bearer_auth(key)
        .json(&json!({"body": body, "recipients": [{"address": PATIENT, "channel": "sms"}]}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 201);
    let view: serde_json::Value = response.json().await.expect("json");
    view["id"].as_str().expect("id").to_string()
}

async fn wait_delivery(
    daemon: &TestDaemon,
    key: &str,
    message: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let view = get(daemon, key, &format!("/v1/messages/{message}")).await;
        let delivery = view["deliveries"][0].clone();
        if done(&delivery) {
            return delivery;
        }
        assert!(
            started.elapsed() < WAIT,
            "not as expected in time: {delivery:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn items(list: &serde_json::Value) -> usize {
    list["items"].as_array().map_or(0, Vec::len)
}

async fn inbound_goes_to_the_owner_of_the_number(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FakeProvider::start(Flavor::Twilio).await;
    let mut daemon = TestDaemon::start(shared_config(&db, &provider.base_url())).await;
    let north = daemon.key.clone();
    let south = daemon.key_for("south").await;
    let response = daemon
        .http
        .put(daemon.url("/v1/patients/S-1"))
        .bearer_auth(&south)
        .json(&json!({"family_name": "Rivera", "given_name": "Ana",
                      "contact_points": [{"system": "sms", "value": PATIENT}]}))
        .send()
        .await
        .expect("put patient");
    assert!(response.status().is_success());

    // South's patient texts South's number: filed for South (North, the oldest organization,
    // sees nothing).
    inbound(&daemon, "SM-in-1", SOUTH_NUMBER, "my results?").await;
    assert_eq!(
        items(&get(&daemon, &south, "/v1/inbound?status=filed").await),
        1
    );
    for status in ["filed", "unmatched", "received", "processed"] {
        let list = get(&daemon, &north, &format!("/v1/inbound?status={status}")).await;
        assert_eq!(items(&list), 0, "North got a {status} item: {list:#}");
    }

    // STOP to South's number opts the number out of South's texts only.
    inbound(&daemon, "SM-in-2", SOUTH_NUMBER, "STOP").await;
    let from_south = send_sms(&daemon, &south, "South reminder").await;
    let refused = wait_delivery(&daemon, &south, &from_south, |d| d["status"] == "failed").await;
    assert!(
        refused["reason"].as_str().unwrap_or("").contains("opted"),
        "{refused:#}"
    );
    let from_north = send_sms(&daemon, &north, "North reminder").await;
    wait_delivery(&daemon, &north, &from_north, |d| d["status"] == "sent").await;

    // A text to a number nobody owns, through the shared connector: an orphan for the
    // operator, in no tenant's queue, and no keyword applied.
    inbound(&daemon, "SM-in-3", NOBODYS_NUMBER, "STOP").await;
    inbound(&daemon, "SM-in-3", NOBODYS_NUMBER, "STOP").await; // redelivered: kept once
    let orphans = daemon
        .core
        .store
        .inbound()
        .orphans(10)
        .await
        .expect("orphans");
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    assert_eq!(orphans[0].recipient.as_deref(), Some(NOBODYS_NUMBER));
    assert!(
        orphans[0].reason.contains("no organization"),
        "{:?}",
        orphans[0]
    );
    for key in [&north, &south] {
        let list = get(&daemon, key, "/v1/inbound?status=unmatched").await;
        assert_eq!(items(&list), 0, "{list:#}");
    }
    let from_north = send_sms(&daemon, &north, "still allowed").await;
    wait_delivery(&daemon, &north, &from_north, |d| d["status"] == "sent").await;

    // The operator lists orphans from the command line.
    let config_path = db.dir.path().join("cli.toml");
    std::fs::write(
        &config_path,
        format!(
            "data_dir = {:?}\n[database]\nurl = {:?}\n",
            db.dir.path().display().to_string(),
            db.url
        ),
    )
    .expect("config");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--config"])
        .arg(&config_path)
        .args(["inbound", "orphans"])
        .output()
        .expect("run switchboard");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(&orphans[0].id), "{stdout}");
    assert!(
        !stdout.contains(PATIENT),
        "the sender's number is masked: {stdout}"
    );
    daemon.stop().await;
}
both_databases!(
    inbound_routing,
    crate::inbound_goes_to_the_owner_of_the_number
);

async fn status_webhooks_bind_to_their_connector(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FakeProvider::start(Flavor::Twilio).await;
    let mut daemon = TestDaemon::start(shared_config(&db, &provider.base_url())).await;
    let key = daemon.key.clone();
    let message = send_sms(&daemon, &key, "hello").await;
    let sent = wait_delivery(&daemon, &key, &message, |d| d["status"] == "sent").await;
    let delivery_id = sent["id"].as_str().expect("id").to_string();
    let sid = sent["provider_ref"]
        .as_str()
        .expect("provider ref")
        .to_string();
    let reference = daemon
        .core
        .keyring
        .delivery_token(&delivery_id)
        .expect("reference");
    let report = |sid: &'static str| {
        [
            ("AccountSid", ACCOUNT),
            ("MessageSid", sid),
            ("MessageStatus", "delivered"),
            ("ApiVersion", "2010-04-01"),
        ]
    };

    // Validly signed reports that must not touch the delivery:
    // another connector naming it by id, another connector naming it by its reference,
    // and its own connector with a reference that disagrees with the provider id.
    for path in [
        format!("/hooks/other/status?delivery={delivery_id}"),
        format!("/hooks/other/status?delivery={reference}"),
        format!("/hooks/twilio/status?delivery={reference}"),
        format!("/hooks/twilio/status?delivery={delivery_id}"),
    ] {
        let response =
            signed_post(&daemon, &path, &report("SMforged000000000000000000000000")).await;
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
    }
    // ... nor a report from another connector that knows the real provider id.
    let leaked: &'static str = Box::leak(sid.clone().into_boxed_str());
    let response = signed_post(&daemon, "/hooks/other/status", &report(leaked)).await;
    assert!(response.status().is_success());
    let view = get(&daemon, &key, &format!("/v1/messages/{message}")).await;
    let delivery = &view["deliveries"][0];
    assert_eq!(delivery["status"], "sent", "{delivery:#}");
    assert_eq!(delivery["provider_ref"], sid.as_str());
    assert_eq!(delivery["connector"], "twilio");

    // The real report, through the connector that carried it, with its own reference.
    let path = format!("/hooks/twilio/status?delivery={reference}");
    let response = signed_post(&daemon, &path, &report(leaked)).await;
    assert!(response.status().is_success());
    let delivered = wait_delivery(&daemon, &key, &message, |d| d["status"] == "delivered").await;
    assert_eq!(delivered["provider_ref"], sid.as_str());
    assert_eq!(delivered["connector"], "twilio");
    daemon.stop().await;
}
both_databases!(
    status_binding,
    crate::status_webhooks_bind_to_their_connector
);

async fn replayed_telnyx_events_are_no_ops(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FakeProvider::start(Flavor::Telnyx).await;
    let key = PKey::generate_ed25519().expect("ed25519");
    let mut config = db.config();
    config.connectors.insert(
        "telnyx".into(),
        telnyx_connector(&db, &provider.base_url(), NORTH_NUMBER, "north", &key),
    );
    config.channels.insert(
        "sms".into(),
        ChannelConfig {
            connector: "telnyx".into(),
            ..ChannelConfig::default()
        },
    );
    let mut daemon = TestDaemon::start(config).await;
    let api_key = daemon.key.clone();
    let message = send_sms(&daemon, &api_key, "hola").await;
    let sent = wait_delivery(&daemon, &api_key, &message, |d| d["status"] == "sent").await;
    let id = sent["provider_ref"]
        .as_str()
        .expect("provider ref")
        .to_string();
    let post = |event: &str, status: &str| {
        let body = json!({"data": {"id": event, "event_type": "message.finalized",
                                   "payload": {"id": id, "to": [{"status": status}]}}})
        .to_string();
        let ts = chrono::Utc::now().timestamp().to_string();
        let signature = telnyx_sign(&key, &ts, &body);
        let daemon = &daemon;
        async move { telnyx_post(daemon, body, &ts, signature).await }
    };
    for _ in 0..3 {
        let response = post("ev-delivered-1", "delivered").await;
        assert!(response.status().is_success(), "{}", response.status());
    }
    let delivered =
        wait_delivery(&daemon, &api_key, &message, |d| d["status"] == "delivered").await;
    let from_webhooks = delivered["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|h| h["source"] == "webhook:telnyx")
        .count();
    assert_eq!(
        from_webhooks, 1,
        "a replayed event was applied again: {delivered:#}"
    );
    daemon.stop().await;
}
both_databases!(telnyx_replay, crate::replayed_telnyx_events_are_no_ops);
