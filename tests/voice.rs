//! Voice reminders through Twilio Programmable Voice, on SQLite and PostgreSQL: the call is
//! placed through Prism serving Twilio's published API document (the request must pass its
//! contract), then the test is Twilio — it fetches the call's script, signed as Twilio signs,
//! as a person and as an answering machine, presses keys, and reports the call's states.
//! And quiet hours, strictly: a call due in quiet hours is not placed.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{Timelike, Utc};
use common::provider::{
    FakeProvider, Flavor, TWILIO_ACCOUNT, TWILIO_TOKEN, quick_retries, secret_file, twilio_post,
    twilio_sign,
};
use common::{Backend, TestDaemon, TestDb};
use serde_json::{Value, json};
use switchboard::config::{
    Config, ConnectorConfig, HttpConnectorConfig, OrganizationConfig, ReminderRule, Touch,
};

const PUBLIC: &str = "https://gw.example.org";
const FROM: &str = "+15005550006";
const PATIENT_PHONE: &str = "+12125550101";
const WAIT: Duration = Duration::from_secs(60);

fn voice_connector(db: &TestDb, base_url: &str) -> ConnectorConfig {
    ConnectorConfig::Http(HttpConnectorConfig {
        manifest: "twilio_voice".into(),
        base_url: Some(base_url.to_string()),
        params: BTreeMap::from([
            ("account_sid".into(), TWILIO_ACCOUNT.into()),
            ("from".into(), FROM.into()),
            ("ring_timeout_secs".into(), "25".into()),
        ]),
        credentials: BTreeMap::from([(
            "auth_token".into(),
            secret_file(db, "twilio-token", TWILIO_TOKEN),
        )]),
        public_url: Some(PUBLIC.into()),
        organization: Some("north".into()),
        rate_per_sec: 0.0,
        timeout_secs: 5,
        reconcile_after_secs: 0,
        media_ttl_secs: 600,
    })
}

fn voice_config(db: &TestDb, base_url: &str, settings: OrganizationConfig) -> Config {
    let mut config = db.config();
    config.reminders.enabled = false; // the test runs the reminders
    config
        .connectors
        .insert("twilio_voice".into(), voice_connector(db, base_url));
    config
        .channels
        .insert("voice".into(), quick_retries("twilio_voice", 3));
    config.organizations.insert("north".into(), settings);
    config
}

async fn put(daemon: &TestDaemon, path: &str, body: Value) {
    let (status, answer) = daemon.request(&daemon.key, "PUT", path, Some(body)).await;
    assert!(
        (200..300).contains(&status),
        "PUT {path}: {status} {answer}"
    );
}

/// Polls `GET path` until `done` holds.
async fn wait_json(daemon: &TestDaemon, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    common::wait::wait_until(path, WAIT, async || {
        let view = daemon.get_json(path).await;
        done(&view).then_some(view)
    })
    .await
}

/// Twilio asking for the call's script (or posting keys) at `path_and_query`, signed over the
/// public URL as Twilio signs it.
async fn twilio(daemon: &TestDaemon, path_and_query: &str, params: &[(&str, &str)]) -> String {
    let signature = twilio_sign(&format!("{PUBLIC}{path_and_query}"), params);
    let response = twilio_post(daemon, path_and_query, params, Some(signature)).await;
    assert_eq!(response.status(), 200, "{path_and_query}");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(content_type.starts_with("text/xml"), "{content_type}");
    response.text().await.expect("TwiML")
}

/// Disclosures audited as a call's answer read out, for one delivery.
async fn answers_read_out(daemon: &TestDaemon, delivery_id: &str) -> i64 {
    let (answered,): (i64,) = switchboard::store::on_db!(daemon.core.store.db(), |pool| {
        sqlx::query_as(
            "SELECT COUNT(*) FROM audit_events WHERE action = 'disclosure' AND outcome = 'answered'
             AND delivery_id = $1 AND channel = 'voice'",
        )
        .bind(delivery_id)
        .fetch_one(pool)
        .await
    })
    .expect("audit");
    answered
}

/// The `action` URL of a TwiML `<Gather>`, as a path on the daemon.
fn gather_action(twiml: &str) -> String {
    let at = twiml.find("action=\"").expect("a Gather action") + "action=\"".len();
    let url = &twiml[at..at + twiml[at..].find('"').expect("end of action")];
    // XML character references as the template escaped them (`&#x2f;`, `&amp;`).
    url.replace("&#x2f;", "/")
        .replace("&amp;", "&")
        .strip_prefix(PUBLIC)
        .expect("the action is on public_url")
        .to_string()
}

async fn a_voice_reminder_is_confirmed_with_1(backend: Backend) {
    let (_prism, base) = common::prism::start("twilio_api_v2010.json").await;
    let db = TestDb::new(backend).await;
    let settings = OrganizationConfig {
        display_name: Some("North Clinic".into()),
        time_zone: "America/New_York".into(),
        help_phone: Some("+1 212 555 0100".into()),
        // No quiet hours: the call goes whatever the wall clock says (quiet hours: below).
        quiet_hours_start: "00:00".into(),
        quiet_hours_end: "00:00".into(),
        reminder_rules: vec![ReminderRule {
            id: "calls".into(),
            appointment_types: vec![],
            locations: vec![],
            providers: vec![],
            touches: vec![Touch {
                id: "call-1d".into(),
                before: Some("1d".into()),
                at: None,
                channels: vec!["voice".into()],
                template: "reminder".into(),
            }],
            replies: true,
        }],
        ..OrganizationConfig::default()
    };
    let mut daemon = TestDaemon::start(voice_config(&db, &base, settings)).await;
    let reminders = daemon.core.reminders(daemon.core.templates().unwrap());
    put(
        &daemon,
        "/v1/patients/p1",
        json!({"family_name": "Doe", "given_name": "Jane",
               "contact_points": [{"system": "phone", "value": PATIENT_PHONE}]}),
    )
    .await;
    let start = Utc::now() + chrono::Duration::days(2);
    put(
        &daemon,
        "/v1/appointments/A-1",
        json!({"patient": "p1", "start": start.to_rfc3339(), "status": "booked",
               "location": "Main St", "reason": "Chemotherapy follow-up"}),
    )
    .await;

    // The touch is due a day before; the run at that time places the call.
    let due = start - chrono::Duration::days(1) + chrono::Duration::minutes(1);
    let report = reminders.run_once(due).await.expect("run");
    let plan = daemon.get_json("/v1/appointments/A-1/reminders").await;
    assert_eq!(report.sent, 1, "{report:?} {plan:#}");
    let touch = &plan["touches"][0];
    assert_eq!(touch["channel"], "voice", "{plan:#}");
    let message_id = touch["message_id"].as_str().expect("message").to_string();

    // Prism took the call (the request passed the published contract).
    let view = wait_json(&daemon, &format!("/v1/messages/{message_id}"), |v| {
        v["deliveries"][0]["status"] != "queued" && v["deliveries"][0]["status"] != "sending"
    })
    .await;
    let delivery = &view["deliveries"][0];
    assert_eq!(delivery["status"], "sent", "{view:#}");
    let call_sid = delivery["provider_ref"].as_str().unwrap().to_string();
    assert!(call_sid.starts_with("CA"), "{call_sid}");
    let delivery_id = delivery["id"].as_str().unwrap().to_string();
    let reference = daemon.core.keyring.delivery_token(&delivery_id).unwrap();
    assert!(!reference.contains(&delivery_id[4..]));
    let script = format!("/hooks/twilio_voice/voice?delivery={reference}");
    let call = |answered_by: &'static str| {
        vec![
            ("AccountSid", TWILIO_ACCOUNT),
            ("CallSid", call_sid.as_str()),
            ("CallStatus", "in-progress"),
            ("Direction", "outbound-api"),
            ("From", FROM),
            ("To", PATIENT_PHONE),
            ("AnsweredBy", answered_by),
        ]
    };

    // Unsigned or forged: refused, nothing read.
    let forged = twilio_post(&daemon, &script, &call("human"), Some("Zm9yZ2Vk".into())).await;
    assert_eq!(forged.status(), 403);

    // An answering machine: a short message, no details, no question.
    let machine = twilio(&daemon, &script, &call("machine_end_beep")).await;
    assert!(
        machine.contains("North Clinic") && machine.contains("<Hangup/>"),
        "{machine}"
    );
    assert!(
        !machine.contains("<Gather") && !machine.contains("Main St"),
        "{machine}"
    );

    // A person: the reminder, then 1 or 2.
    let person = twilio(&daemon, &script, &call("human")).await;
    assert!(person.contains("<Gather"), "{person}");
    assert!(
        person.contains("Main St") && person.contains("press 1"),
        "{person}"
    );
    assert!(person.contains(r#"language="en-US""#), "{person}");
    assert!(
        !person.contains("Chemotherapy") && !person.contains("Jane"),
        "minimum necessary: {person}"
    );
    let action = gather_action(&person);
    assert!(action.contains(&reference) && !action.contains(&delivery_id));

    // A wrong key: asked once more.
    let mut keys = call("human");
    keys.push(("Digits", "7"));
    let again = twilio(&daemon, &action, &keys).await;
    assert!(
        again.contains("<Gather") && again.contains("press 1 or 2"),
        "{again}"
    );
    let action = gather_action(&again);
    assert!(action.ends_with("step=gather-2"), "{action}");

    // 1: confirmed, as C by text would.
    let mut keys = call("human");
    keys.push(("Digits", "1"));
    let answer = twilio(&daemon, &action, &keys).await;
    assert!(
        answer.contains("is confirmed") && answer.contains("<Hangup/>"),
        "{answer}"
    );
    let appointment = daemon.get_json("/v1/appointments/A-1").await;
    assert_eq!(appointment["confirmation"], "confirmed", "{appointment:#}");
    assert_eq!(
        appointment["status"], "booked",
        "staff-owned status untouched"
    );
    let events = daemon.events().await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"appointment.confirmed"), "{kinds:?}");
    assert!(kinds.contains(&"reminder.reply"), "{kinds:?}");
    // The answer read out is a disclosure: audited.
    let answered = answers_read_out(&daemon, &delivery_id).await;
    assert_eq!(answered, 1);

    // The same signed post replayed: goodbye, and nothing recorded again.
    let replayed = twilio(&daemon, &action, &keys).await;
    assert!(
        !replayed.contains("is confirmed") && replayed.contains("<Hangup/>"),
        "{replayed}"
    );
    let replies = daemon.events().await["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "reminder.reply")
        .count();
    assert_eq!(replies, 1, "one reply event for one key");
    let answered = answers_read_out(&daemon, &delivery_id).await;
    assert_eq!(answered, 1, "the answer read out once");

    // The call ends: completed is delivered, and the script has nothing more to say.
    let status = format!("/hooks/twilio_voice/status?delivery={reference}");
    let completed = [
        ("AccountSid", TWILIO_ACCOUNT),
        ("CallSid", call_sid.as_str()),
        ("CallStatus", "completed"),
        ("CallDuration", "31"),
    ];
    let response = twilio_post(
        &daemon,
        &status,
        &completed,
        Some(twilio_sign(&format!("{PUBLIC}{status}"), &completed)),
    )
    .await;
    assert_eq!(response.status(), 204);
    wait_json(&daemon, &format!("/v1/messages/{message_id}"), |v| {
        v["deliveries"][0]["status"] == "delivered"
    })
    .await;
    let after = twilio(&daemon, &script, &call("human")).await;
    assert!(
        !after.contains("<Say") && after.contains("<Hangup/>"),
        "{after}"
    );
    // The events of a call's answer keep the published contracts (no PHI, ids only).
    let kinds = common::contracts::assert_events_honour_contracts(&daemon.core.store).await;
    assert!(kinds.iter().any(|k| k == "reminder.reply"), "{kinds:?}");

    // The next appointment's call: 9 stops automated calls to the number.
    let start = Utc::now() + chrono::Duration::days(3);
    put(
        &daemon,
        "/v1/appointments/A-2",
        json!({"patient": "p1", "start": start.to_rfc3339(), "status": "booked"}),
    )
    .await;
    let due = start - chrono::Duration::days(1) + chrono::Duration::minutes(1);
    assert_eq!(reminders.run_once(due).await.expect("run").sent, 1);
    let plan = daemon.get_json("/v1/appointments/A-2/reminders").await;
    let message_id = plan["touches"][0]["message_id"].as_str().expect("message");
    let view = wait_json(&daemon, &format!("/v1/messages/{message_id}"), |v| {
        v["deliveries"][0]["status"] == "sent"
    })
    .await;
    let delivery_id = view["deliveries"][0]["id"].as_str().unwrap().to_string();
    // Prism answers every call with its example's CallSid; Twilio's are unique per call.
    let call_sid = "CA00000000000000000000000000000002";
    switchboard::store::on_db!(daemon.core.store.db(), |pool| sqlx::query(
        "UPDATE deliveries SET provider_ref = $1 WHERE id = $2"
    )
    .bind(call_sid)
    .bind(&delivery_id)
    .execute(pool)
    .await
    .map(|_| ()))
    .expect("a call's own sid");
    let reference = daemon.core.keyring.delivery_token(&delivery_id).unwrap();
    let person = [
        ("AccountSid", TWILIO_ACCOUNT),
        ("CallSid", call_sid),
        ("CallStatus", "in-progress"),
        ("Direction", "outbound-api"),
        ("From", FROM),
        ("To", PATIENT_PHONE),
        ("AnsweredBy", "human"),
    ];
    let asked = twilio(
        &daemon,
        &format!("/hooks/twilio_voice/voice?delivery={reference}"),
        &person,
    )
    .await;
    assert!(asked.contains("To stop these calls, press 9"), "{asked}");
    let mut keys = person.to_vec();
    keys.push(("Digits", "9"));
    let stopped = twilio(&daemon, &gather_action(&asked), &keys).await;
    assert!(
        stopped.contains("not receive more automated calls") && stopped.contains("<Hangup/>"),
        "{stopped}"
    );
    let (revoked,): (i64,) = switchboard::store::on_db!(daemon.core.store.db(), |pool| {
        sqlx::query_as(
            "SELECT COUNT(*) FROM consents WHERE channel = 'voice' AND status = 'revoked'
             AND source = 'voice-keypad' AND recipient = $1 AND patient_id IS NOT NULL",
        )
        .bind(PATIENT_PHONE)
        .fetch_one(pool)
        .await
    })
    .expect("consents");
    assert_eq!(revoked, 1);
    // And the gate holds it: the next reminder is not called.
    let start = Utc::now() + chrono::Duration::days(4);
    put(
        &daemon,
        "/v1/appointments/A-3",
        json!({"patient": "p1", "start": start.to_rfc3339(), "status": "booked"}),
    )
    .await;
    let due = start - chrono::Duration::days(1) + chrono::Duration::minutes(1);
    let report = reminders.run_once(due).await.expect("run");
    let plan = daemon.get_json("/v1/appointments/A-3/reminders").await;
    assert_eq!(report.sent, 0, "{report:?} {plan:#}");
    assert!(
        plan["touches"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("opted out of voice")),
        "{plan:#}"
    );
    daemon.stop().await;
}
both_databases!(
    confirmed_with_1,
    crate::a_voice_reminder_is_confirmed_with_1
);

/// A zone where it is now about 03:00: in quiet hours whatever the wall clock says.
fn zone_at_3am() -> String {
    let hour = i64::from(Utc::now().hour());
    let mut offset = 3 - hour;
    if offset < -12 {
        offset += 24;
    }
    if offset > 14 {
        offset -= 24;
    }
    // POSIX signs: Etc/GMT-3 is UTC+3.
    match offset {
        0 => "Etc/GMT".into(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    }
}

async fn calls_wait_out_quiet_hours(backend: Backend) {
    let provider = FakeProvider::start(Flavor::Twilio).await;
    let db = TestDb::new(backend).await;
    let settings = OrganizationConfig {
        display_name: Some("North Clinic".into()),
        time_zone: zone_at_3am(),
        quiet_hours_start: "08:00".into(),
        quiet_hours_end: "21:00".into(),
        ..OrganizationConfig::default()
    };
    let mut daemon = TestDaemon::start(voice_config(&db, &provider.base_url(), settings)).await;
    let response = daemon
        .post_message(json!({
            "body": "Please call the clinic.",
            "recipients": [{"address": PATIENT_PHONE, "channel": "voice"}],
        }))
        .await;
    assert_eq!(response.status(), 201);
    let view: Value = response.json().await.unwrap();
    let message_id = view["id"].as_str().unwrap().to_string();
    // The worker took the delivery and put it back until 08:00, its attempt not spent. (The
    // view reads the delivery and its history in two statements: wait for the row too.)
    let view = wait_json(&daemon, &format!("/v1/messages/{message_id}"), |v| {
        v["deliveries"][0]["history"]
            .as_array()
            .is_some_and(|h| h.iter().any(|e| e["status"] == "retry_scheduled"))
            && v["deliveries"][0]["reason"].is_string()
    })
    .await;
    let delivery = &view["deliveries"][0];
    let deferred = delivery["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["status"] == "retry_scheduled")
        .unwrap();
    assert!(
        deferred["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("quiet hours"),
        "{delivery:#}"
    );
    assert_eq!(delivery["attempts"], 0, "{delivery:#}");
    assert!(provider.sends().is_empty(), "no call placed in quiet hours");
    daemon.stop().await;
}
both_databases!(quiet_hours, crate::calls_wait_out_quiet_hours);

/// A reminder call reported `status`, signed as Twilio signs it, on the delivery's status hook.
async fn call_status(daemon: &TestDaemon, delivery: &Value, status: &str) {
    let delivery_id = delivery["id"].as_str().unwrap();
    let reference = daemon.core.keyring.delivery_token(delivery_id).unwrap();
    let path = format!("/hooks/twilio_voice/status?delivery={reference}");
    let params = [
        ("AccountSid", TWILIO_ACCOUNT),
        ("CallSid", delivery["provider_ref"].as_str().unwrap()),
        ("CallStatus", status),
    ];
    let signature = twilio_sign(&format!("{PUBLIC}{path}"), &params);
    let response = twilio_post(daemon, &path, &params, Some(signature)).await;
    assert_eq!(response.status(), 204);
}

async fn busy_calls_are_retried_within_the_window(backend: Backend) {
    let provider = FakeProvider::start(Flavor::Twilio).await;
    let db = TestDb::new(backend).await;
    let settings = OrganizationConfig {
        display_name: Some("North Clinic".into()),
        time_zone: "America/New_York".into(),
        quiet_hours_start: "00:00".into(),
        quiet_hours_end: "00:00".into(),
        reminder_rules: vec![ReminderRule {
            id: "calls".into(),
            appointment_types: vec![],
            locations: vec![],
            providers: vec![],
            touches: vec![Touch {
                id: "call".into(),
                before: Some("2m".into()),
                at: None,
                channels: vec!["voice".into()],
                template: "reminder".into(),
            }],
            replies: true,
        }],
        ..OrganizationConfig::default()
    };
    let mut config = voice_config(&db, &provider.base_url(), settings);
    // The next call would come about five minutes after a busy line.
    let mut channel = quick_retries("twilio_voice", 3);
    channel.backoff_initial_ms = 300_000;
    channel.backoff_max_secs = 600;
    config.channels.insert("voice".into(), channel);
    let mut daemon = TestDaemon::start(config).await;
    let reminders = daemon.core.reminders(daemon.core.templates().unwrap());
    for (patient, phone) in [("far", "+12125550111"), ("near", "+12125550112")] {
        put(
            &daemon,
            &format!("/v1/patients/{patient}"),
            json!({"family_name": "Doe", "given_name": patient,
                   "contact_points": [{"system": "phone", "value": phone}]}),
        )
        .await;
    }
    // Both touches are due now. The far appointment's window is the touch's grace hour; the
    // near one starts in three minutes, before a retry could be placed.
    let now = Utc::now();
    for (filler, patient, start) in [
        ("A-FAR", "far", now + chrono::Duration::hours(5)),
        ("A-NEAR", "near", now + chrono::Duration::minutes(3)),
    ] {
        put(
            &daemon,
            &format!("/v1/appointments/{filler}"),
            json!({"patient": patient, "start": start.to_rfc3339(), "status": "booked"}),
        )
        .await;
    }
    let report = reminders
        .run_once(now + chrono::Duration::seconds(61))
        .await;
    assert_eq!(report.expect("run").sent, 1, "the near one");
    let far_due = now + chrono::Duration::hours(5) - chrono::Duration::minutes(2);
    let report = reminders.run_once(far_due).await.expect("run");
    assert_eq!(report.sent, 1, "the far one: {report:?}");
    let mut messages = Vec::new();
    for filler in ["A-FAR", "A-NEAR"] {
        let plan = daemon
            .get_json(&format!("/v1/appointments/{filler}/reminders"))
            .await;
        let message_id = plan["touches"][0]["message_id"]
            .as_str()
            .unwrap()
            .to_string();
        let view = wait_json(&daemon, &format!("/v1/messages/{message_id}"), |v| {
            v["deliveries"][0]["status"] == "sent"
        })
        .await;
        call_status(&daemon, &view["deliveries"][0], "busy").await;
        messages.push(message_id);
    }
    // Far: failed busy, and a new delivery of the same message waits for the next call.
    let far = wait_json(&daemon, &format!("/v1/messages/{}", messages[0]), |v| {
        v["deliveries"].as_array().is_some_and(|d| d.len() == 2)
    })
    .await;
    let statuses: Vec<&str> = far["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert!(
        statuses.contains(&"failed") && statuses.contains(&"queued"),
        "{far:#}"
    );
    // Near: failed busy, and no other call: the appointment starts before one could be placed.
    let near = wait_json(&daemon, &format!("/v1/messages/{}", messages[1]), |v| {
        v["deliveries"][0]["status"] == "failed"
    })
    .await;
    assert_eq!(near["deliveries"].as_array().unwrap().len(), 1, "{near:#}");
    assert_eq!(
        provider.sends().len(),
        2,
        "one call each, no retry placed yet"
    );
    daemon.stop().await;
}
both_databases!(
    busy_retried,
    crate::busy_calls_are_retried_within_the_window
);
