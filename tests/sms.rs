//! SMS through provider connectors, against loopback providers that follow the published API
//! contracts (Twilio's OpenAPI spec served by Prism; scripted Twilio/Telnyx servers for faults
//! and callbacks) — on SQLite and PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::provider::{
    Answer, FakeProvider, Flavor, TWILIO_ACCOUNT as ACCOUNT, TWILIO_TOKEN as TOKEN, quick_retries,
    signed_twilio_post, telnyx_connector, telnyx_post, telnyx_sign, twilio_connector, twilio_post,
    twilio_sign,
};
use common::{Backend, TestDaemon, TestDb};
use openssl::pkey::PKey;
use serde_json::json;
use switchboard::config::{ChannelConfig, Config, ConnectorConfig};

/// Generous: under a loaded CI machine a retry has been seen waiting for the queue's 10 s
/// heartbeat rather than its 0.1 s backoff.
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
    config
}

async fn send_sms(daemon: &TestDaemon, to: &str, body: &str) -> (String, String) {
    let response = daemon
        .post_message(json!({
            "body": body,
            "recipients": [{"address": to, "channel": "sms"}],
        }))
        .await;
    assert_eq!(
        response.status(),
        201,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let view: serde_json::Value = response.json().await.expect("json");
    (
        view["id"].as_str().unwrap().to_string(),
        view["deliveries"][0]["id"].as_str().unwrap().to_string(),
    )
}

/// Polls the message until its one delivery satisfies `done`.
async fn wait_delivery(
    daemon: &TestDaemon,
    message_id: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let view = daemon.get_json(&format!("/v1/messages/{message_id}")).await;
        let delivery = view["deliveries"][0].clone();
        if done(&delivery) {
            return delivery;
        }
        assert!(
            started.elapsed() < WAIT,
            "delivery not as expected in time: {delivery:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status_callback(daemon: &TestDaemon, sid: &str, status: &str) {
    let params = [
        ("AccountSid", ACCOUNT),
        ("MessageSid", sid),
        ("MessageStatus", status),
        ("To", PATIENT_PHONE),
        ("From", FROM),
        ("ApiVersion", "2010-04-01"),
    ];
    let response = signed_twilio_post(daemon, "/hooks/twilio/status", &params).await;
    assert!(
        response.status().is_success(),
        "callback {status}: {}",
        response.status()
    );
}

async fn inbound_sms(daemon: &TestDaemon, sid: &str, from: &str, body: &str) -> reqwest::Response {
    let params = [
        ("AccountSid", ACCOUNT),
        ("MessageSid", sid),
        ("From", from),
        ("To", FROM),
        ("Body", body),
        ("NumMedia", "0"),
    ];
    signed_twilio_post(daemon, "/hooks/twilio/inbound", &params).await
}

async fn put_patient(daemon: &TestDaemon, external_id: &str, phone: &str) {
    let response = daemon
        .http
        .put(daemon.url(&format!("/v1/patients/{external_id}")))
        .bearer_auth(&daemon.key)
        .json(&json!({
            "family_name": "Rivera", "given_name": "Ana",
            "contact_points": [{"system": "sms", "value": phone}],
        }))
        .send()
        .await
        .expect("put patient");
    assert!(response.status().is_success(), "{}", response.status());
}

// ---------------------------------------------------------------------------------------------

async fn callbacks_apply_monotonically_in_any_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FakeProvider::start(Flavor::Twilio).await;
    let mut daemon = TestDaemon::start(twilio_config(&db, &provider.base_url())).await;

    let (message, _) = send_sms(
        &daemon,
        "(415) 555-2671",
        "Your lab results are ready in the portal.",
    )
    .await;
    let delivery = wait_delivery(&daemon, &message, |d| d["status"] == "sent").await;
    let sid = delivery["provider_ref"].as_str().unwrap().to_string();
    let sends = provider.sends();
    assert_eq!(sends.len(), 1);
    assert_eq!(
        sends[0].path,
        format!("/2010-04-01/Accounts/{ACCOUNT}/Messages.json")
    );
    assert_eq!(
        sends[0].form("To").as_deref(),
        Some(PATIENT_PHONE),
        "normalized to E.164"
    );
    assert_eq!(sends[0].form("From").as_deref(), Some(FROM));
    let expected_auth = format!("Basic {}", B64.encode(format!("{ACCOUNT}:{TOKEN}")));
    assert_eq!(
        sends[0].authorization.as_deref(),
        Some(expected_auth.as_str())
    );

    // Reverse order, then the full sequence twice.
    for status in [
        "delivered",
        "sent",
        "queued",
        "queued",
        "sent",
        "delivered",
        "delivered",
    ] {
        status_callback(&daemon, &sid, status).await;
    }
    let delivery = wait_delivery(&daemon, &message, |d| d["status"] == "delivered").await;
    let history = delivery["history"].as_array().unwrap();
    let applied: Vec<&str> = history
        .iter()
        .filter(|h| h["applied"] == true)
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        applied,
        ["queued", "sending", "sent", "delivered"],
        "{history:#?}"
    );
    let late = history
        .iter()
        .filter(|h| h["applied"] == false && h["source"] == "webhook:twilio")
        .count();
    assert_eq!(
        late, 6,
        "every late or duplicate callback is recorded: {history:#?}"
    );

    // A callback for a message we never sent is acknowledged and ignored.
    status_callback(&daemon, "SMffffffffffffffffffffffffffffffff", "delivered").await;
    daemon.stop().await;
}
both_databases!(
    callbacks_apply_monotonically,
    crate::callbacks_apply_monotonically_in_any_order
);

async fn forged_and_missing_signatures_are_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FakeProvider::start(Flavor::Twilio).await;
    let mut daemon = TestDaemon::start(twilio_config(&db, &provider.base_url())).await;
    let (message, _) = send_sms(&daemon, PATIENT_PHONE, "hello").await;
    let delivery = wait_delivery(&daemon, &message, |d| d["status"] == "sent").await;
    let sid = delivery["provider_ref"].as_str().unwrap().to_string();

    let params = [("MessageSid", sid.as_str()), ("MessageStatus", "failed")];
    let missing = twilio_post(&daemon, "/hooks/twilio/status", &params, None).await;
    assert_eq!(missing.status(), 403);
    let forged = twilio_post(
        &daemon,
        "/hooks/twilio/status",
        &params,
        Some(twilio_sign("https://elsewhere/", &params)),
    )
    .await;
    assert_eq!(forged.status(), 403);
    let problem: serde_json::Value = forged.json().await.unwrap();
    assert_eq!(problem["status"], 403);
    // Signed for other parameters.
    let sig = twilio_sign(
        &daemon.url("/hooks/twilio/status"),
        &[("MessageSid", &sid), ("MessageStatus", "delivered")],
    );
    let swapped = twilio_post(&daemon, "/hooks/twilio/status", &params, Some(sig)).await;
    assert_eq!(swapped.status(), 403);
    let inbound = twilio_post(
        &daemon,
        "/hooks/twilio/inbound",
        &[("From", PATIENT_PHONE), ("Body", "STOP")],
        None,
    )
    .await;
    assert_eq!(inbound.status(), 403);

    let delivery = wait_delivery(&daemon, &message, |_| true).await;
    assert_eq!(delivery["status"], "sent", "forgeries change nothing");
    let audit = daemon
        .core
        .store
        .audit()
        .entries(&daemon.organization_id, 100)
        .await
        .unwrap();
    let refused = audit
        .iter()
        .filter(|a| a.action == "webhook_refused")
        .count();
    assert_eq!(refused, 4);
    daemon.stop().await;
}
both_databases!(
    forged_signatures,
    crate::forged_and_missing_signatures_are_refused
);

async fn stop_blocks_later_texts_and_start_allows_them(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FakeProvider::start(Flavor::Twilio).await;
    let mut daemon = TestDaemon::start(twilio_config(&db, &provider.base_url())).await;
    put_patient(&daemon, "p-1", "415-555-2671").await;

    let answer = inbound_sms(
        &daemon,
        "SM00000000000000000000000000000001",
        PATIENT_PHONE,
        "Stop",
    )
    .await;
    assert_eq!(answer.status(), 200);
    assert!(
        answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/xml")
    );
    let twiml = answer.text().await.unwrap();
    assert!(
        twiml.contains("<Response><Message>") && twiml.contains("unsubscribed"),
        "{twiml}"
    );

    // A text to that number (written differently) makes no provider call.
    let (message, _) = send_sms(
        &daemon,
        "+1 (415) 555-2671",
        "Reminder: appointment tomorrow",
    )
    .await;
    let delivery = wait_delivery(&daemon, &message, |d| d["status"] == "failed").await;
    assert!(
        delivery["reason"]
            .as_str()
            .unwrap()
            .starts_with("opted_out"),
        "{delivery:#}"
    );
    assert_eq!(provider.sends().len(), 0, "no provider call after STOP");

    let patient = daemon.get_json("/v1/patients/p-1").await;
    let consents = patient["consents"].as_array().unwrap();
    assert!(
        consents
            .iter()
            .any(|c| c["status"] == "revoked" && c["source"] == "sms-keyword"),
        "{patient:#}"
    );

    // HELP answers with help text; START opts back in.
    let help = inbound_sms(
        &daemon,
        "SM00000000000000000000000000000002",
        PATIENT_PHONE,
        "HELP",
    )
    .await;
    assert!(help.text().await.unwrap().contains("Reply STOP to opt out"));
    let start = inbound_sms(
        &daemon,
        "SM00000000000000000000000000000003",
        PATIENT_PHONE,
        "START",
    )
    .await;
    assert!(
        start
            .text()
            .await
            .unwrap()
            .contains("subscribed to texts again")
    );
    let (message, _) = send_sms(&daemon, PATIENT_PHONE, "Reminder: appointment tomorrow").await;
    wait_delivery(&daemon, &message, |d| d["status"] == "sent").await;
    assert_eq!(provider.sends().len(), 1);
    daemon.stop().await;
}
both_databases!(
    stop_and_start,
    crate::stop_blocks_later_texts_and_start_allows_them
);

async fn inbound_texts_are_filed_or_wait_for_a_person(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FakeProvider::start(Flavor::Twilio).await;
    let mut daemon = TestDaemon::start(twilio_config(&db, &provider.base_url())).await;
    put_patient(&daemon, "p-1", "(415) 555-2671").await;
    put_patient(&daemon, "twin-a", "+1 415 555 0199").await;
    put_patient(&daemon, "twin-b", "4155550199").await;

    // Known sender → the patient's thread; redelivery of the same webhook → recorded once.
    for _ in 0..2 {
        let answer = inbound_sms(
            &daemon,
            "SM10000000000000000000000000000001",
            PATIENT_PHONE,
            "Running 10 min late",
        )
        .await;
        assert_eq!(answer.status(), 200);
        assert!(
            !answer.text().await.unwrap().contains("<Message>"),
            "no reply to free text"
        );
    }
    let events = daemon.events().await;
    let filed: Vec<_> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "inbound.filed")
        .collect();
    assert_eq!(filed.len(), 1, "{events:#}");
    let thread_id = filed[0]["payload"]["thread_id"].as_str().unwrap();
    let thread = daemon
        .get_json(&format!("/v1/threads/{thread_id}/messages"))
        .await;
    let messages = thread["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["direction"], "inbound");
    assert_eq!(messages[0]["body"], "Running 10 min late");

    // Unknown and ambiguous senders wait in the unmatched queue.
    inbound_sms(
        &daemon,
        "SM10000000000000000000000000000002",
        "+14155550100",
        "Who is this?",
    )
    .await;
    inbound_sms(
        &daemon,
        "SM10000000000000000000000000000003",
        "+14155550199",
        "Is this for me or my sister?",
    )
    .await;
    let unmatched = daemon.get_json("/v1/inbound?status=unmatched").await;
    let items = unmatched["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{unmatched:#}");
    assert!(
        items
            .iter()
            .any(|i| i["reason"].as_str().unwrap().contains("ambiguous"))
    );
    assert!(
        items.iter().all(|i| i.get("raw").is_none()),
        "list carries no content"
    );

    // A person resolves one.
    let id = items
        .iter()
        .find(|i| i["sender"] == "+14155550199")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let item = daemon.get_json(&format!("/v1/inbound/{id}")).await;
    assert_eq!(item["body"], "Is this for me or my sister?");
    let resolved = daemon
        .http
        .post(daemon.url(&format!("/v1/inbound/{id}/resolve")))
        .bearer_auth(&daemon.key)
        .json(&json!({"patient": "twin-b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resolved.status(), 200);
    let again = daemon
        .http
        .post(daemon.url(&format!("/v1/inbound/{id}/resolve")))
        .bearer_auth(&daemon.key)
        .json(&json!({"patient": "twin-b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let unmatched = daemon.get_json("/v1/inbound?status=unmatched").await;
    assert_eq!(unmatched["items"].as_array().unwrap().len(), 1);

    // Reminder answers are routed as events (and shown to staff in the thread).
    inbound_sms(
        &daemon,
        "SM10000000000000000000000000000004",
        PATIENT_PHONE,
        "Y",
    )
    .await;
    let events = daemon.events().await;
    let reply = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "reminder.reply")
        .cloned();
    assert_eq!(
        reply.expect("reminder.reply event")["payload"]["reply"],
        "confirm"
    );
    daemon.stop().await;
}
both_databases!(
    inbound_filing,
    crate::inbound_texts_are_filed_or_wait_for_a_person
);

async fn provider_faults_retry_or_fail(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FakeProvider::start(Flavor::Twilio).await;
    provider.script(vec![
        FakeProvider::twilio_error(429, 20429, "Too Many Requests"),
        FakeProvider::twilio_error(503, 20503, "Service Unavailable"),
        Answer {
            status: 201,
            body: "{}".into(),
            delay: Duration::from_secs(3),
        }, // timeout (1 s)
    ]);
    let mut daemon = TestDaemon::start(twilio_config(&db, &provider.base_url())).await;
    let (message, _) = send_sms(&daemon, PATIENT_PHONE, "hello").await;
    let delivery = wait_delivery(&daemon, &message, |d| d["status"] == "sent").await;
    assert_eq!(delivery["attempts"], 4, "{delivery:#}");
    let retries = delivery["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["detail"].as_str().is_some_and(|d| d.contains("retry")))
        .count();
    assert!(retries >= 3 || delivery["attempts"] == 4, "{delivery:#}");

    // A permanent provider error ends the delivery with the provider's reason, numbers masked.
    provider.script(vec![FakeProvider::twilio_error(
        400,
        21211,
        "The 'To' number +15005550001 is not a valid phone number.",
    )]);
    let (message, _) = send_sms(&daemon, "+14155550123", "hello").await;
    let delivery = wait_delivery(&daemon, &message, |d| d["status"] == "failed").await;
    let reason = delivery["reason"].as_str().unwrap();
    assert!(
        reason.contains("21211") && reason.contains("not a valid phone number"),
        "{reason}"
    );
    assert!(!reason.contains("5005550001"), "{reason}");
    assert_eq!(delivery["attempts"], 1);

    // An invalid number is refused when the message is accepted: it never reaches the
    // provider, and no delivery is created to fail later.
    let before = provider.sends().len();
    let response = daemon
        .http
        .post(daemon.url("/v1/messages"))
        .bearer_auth(&daemon.key)
        .json(&json!({"body": "hello", "recipients": [{"address": "555-01", "channel": "sms"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["errors"][0]["pointer"], "/recipients/0/address");
    assert!(
        problem["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("not a valid phone number"),
        "{problem:#}"
    );
    assert_eq!(provider.sends().len(), before);
    daemon.stop().await;
}
both_databases!(provider_faults, crate::provider_faults_retry_or_fail);

async fn telnyx_sends_json_and_verifies_ed25519(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FakeProvider::start(Flavor::Telnyx).await;
    let key = PKey::generate_ed25519().unwrap();
    let mut config = db.config();
    config.connectors.insert(
        "telnyx".into(),
        telnyx_connector(&db, &provider.base_url(), FROM, "north", &key),
    );
    config.channels.insert(
        "sms".into(),
        ChannelConfig {
            connector: "telnyx".into(),
            ..ChannelConfig::default()
        },
    );
    let mut daemon = TestDaemon::start(config).await;
    let (message, _) = send_sms(&daemon, PATIENT_PHONE, "hola").await;
    let delivery = wait_delivery(&daemon, &message, |d| d["status"] == "sent").await;
    let id = delivery["provider_ref"].as_str().unwrap().to_string();
    let sent = provider.sends();
    assert_eq!(sent[0].path, "/v2/messages");
    assert_eq!(sent[0].authorization.as_deref(), Some("Bearer KEYtelnyx"));
    assert_eq!(sent[0].json()["to"], PATIENT_PHONE);
    assert_eq!(sent[0].json()["text"], "hola");

    let body = json!({"data": {"event_type": "message.finalized", "payload": {"id": id, "to": [{"status": "delivered"}]}}}).to_string();
    let ts = chrono::Utc::now().timestamp().to_string();
    let forged = telnyx_post(
        &daemon,
        body.replace("delivered", "delivery_failed"),
        &ts,
        telnyx_sign(&key, &ts, &body),
    )
    .await;
    assert_eq!(forged.status(), 403);
    let ok = telnyx_post(&daemon, body.clone(), &ts, telnyx_sign(&key, &ts, &body)).await;
    assert!(ok.status().is_success());
    wait_delivery(&daemon, &message, |d| d["status"] == "delivered").await;
    daemon.stop().await;
}
both_databases!(telnyx, crate::telnyx_sends_json_and_verifies_ed25519);

async fn stuck_sent_deliveries_are_reconciled(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FakeProvider::start(Flavor::Twilio).await;
    let mut config = twilio_config(&db, &provider.base_url());
    if let Some(ConnectorConfig::Http(http)) = config.connectors.get_mut("twilio") {
        http.reconcile_after_secs = 1;
    }
    let mut daemon = TestDaemon::start(config).await;
    let (message, _) = send_sms(&daemon, PATIENT_PHONE, "hello").await;
    wait_delivery(&daemon, &message, |d| d["status"] == "sent").await;
    provider.set_lookup_status("delivered");
    let templates = daemon.core.templates().expect("templates");
    let connectors = daemon.core.connectors(&templates).expect("connectors");
    // A pass before the delivery has been `sent` for a second finds nothing to do.
    let moved = common::wait::wait_until("a reconciliation pass that moves", WAIT, async || {
        let moved = switchboard::queue::reconcile::reconcile_once(
            &daemon.core.store,
            &connectors,
            &daemon.core.config,
        )
        .await
        .unwrap();
        (moved > 0).then_some(moved)
    })
    .await;
    assert_eq!(moved, 1);
    let delivery = wait_delivery(&daemon, &message, |d| d["status"] == "delivered").await;
    assert!(
        delivery["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["source"] == "reconcile:twilio")
    );
    assert!(
        provider
            .received()
            .iter()
            .any(|r| r.method == "GET" && r.path.ends_with(".json"))
    );
    daemon.stop().await;
}
both_databases!(reconciliation, crate::stuck_sent_deliveries_are_reconciled);

// --- contract: Twilio's published OpenAPI spec, served by Prism ------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_requests_pass_the_published_contract() {
    let (_prism, base) = common::prism::start("twilio_api_v2010.json").await;
    let db = TestDb::new(Backend::Sqlite).await;
    let mut daemon = TestDaemon::start(twilio_config(&db, &base)).await;
    let (message, _) = send_sms(
        &daemon,
        PATIENT_PHONE,
        "Your appointment is confirmed. Reply HELP for help.",
    )
    .await;
    let delivery = wait_delivery(&daemon, &message, |d| {
        d["status"] != "queued" && d["status"] != "sending"
    })
    .await;
    assert_eq!(
        delivery["status"], "sent",
        "Prism accepted the request: {delivery:#}"
    );
    assert!(delivery["provider_ref"].as_str().unwrap().starts_with("SM"));
    daemon.stop().await;

    // The mock does enforce the contract: a manifest that sends `to` instead of `To` is refused
    // with 422, a permanent failure with Prism's reason.
    let broken = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/connectors/twilio.toml"
    ))
    .unwrap()
    .replace("To = \"{{ to }}\"", "to = \"{{ to }}\"");
    let path = db.dir.path().join("broken-twilio.toml");
    std::fs::write(&path, broken).unwrap();
    let db2 = TestDb::new(Backend::Sqlite).await;
    let mut config = twilio_config(&db2, &base);
    if let Some(ConnectorConfig::Http(http)) = config.connectors.get_mut("twilio") {
        http.manifest = path.to_string_lossy().into_owned();
    }
    let mut daemon = TestDaemon::start(config).await;
    let (message, _) = send_sms(&daemon, PATIENT_PHONE, "hello").await;
    let delivery = wait_delivery(&daemon, &message, |d| d["status"] == "failed").await;
    assert!(
        delivery["reason"].as_str().unwrap().contains("HTTP 422"),
        "{delivery:#}"
    );
    daemon.stop().await;
}

/// A channel sends at most its `concurrency` at once however many messages wait (a send slot
/// is held from the claim until the provider has answered, and given to the next attempt
/// before the outcome is recorded): twelve messages to a provider taking 300 ms a send, with
/// `concurrency = 3`, are all sent, three at a time and never more.
async fn sends_stay_within_the_channels_concurrency(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FakeProvider::start(Flavor::Twilio).await;
    let mut config = twilio_config(&db, &provider.base_url());
    config
        .channels
        .get_mut("sms")
        .expect("sms channel")
        .concurrency = 3;
    provider.script(
        (0..12)
            .map(|n| Answer {
                status: 201,
                body: json!({
                    "sid": format!("SM{:032x}", 0xabc000 + n), "status": "queued",
                    "to": PATIENT_PHONE, "from": FROM, "num_segments": "1",
                    "direction": "outbound-api", "api_version": "2010-04-01",
                    "error_code": null, "error_message": null,
                })
                .to_string(),
                delay: Duration::from_millis(300),
            })
            .collect(),
    );
    let mut daemon = TestDaemon::start(config).await;
    let mut messages = Vec::new();
    for n in 0..12 {
        messages.push(send_sms(&daemon, PATIENT_PHONE, &format!("Slow send {n}")).await);
    }
    for (message_id, _) in &messages {
        wait_delivery(&daemon, message_id, |d| d["status"] == "sent").await;
    }
    assert_eq!(provider.sends().len(), 12);
    assert_eq!(provider.max_in_flight(), 3, "sends at once");
    daemon.stop().await;
}
both_databases!(
    concurrency,
    crate::sends_stay_within_the_channels_concurrency
);
