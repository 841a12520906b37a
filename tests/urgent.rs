//! Urgent notifications end to end on SQLite and PostgreSQL: PHI-free SMS and email through the
//! outbox sink, digests within the window, escalation along the on-call order, none once read.

mod common;

use std::time::Duration;

use common::wait::{wait_for, wait_until};
use common::{Backend, TestDaemon, TestDb};
use serde_json::json;
use switchboard::config::OrganizationConfig;

const SECRET: &str = "Your biopsy result shows a malignancy";

fn outbox_files(db: &TestDb) -> Vec<serde_json::Value> {
    let Ok(entries) = std::fs::read_dir(db.outbox()) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

fn notifications(db: &TestDb) -> Vec<serde_json::Value> {
    outbox_files(db)
        .into_iter()
        .filter(|f| {
            f["body"]
                .as_str()
                .is_some_and(|b| b.contains("urgent secure message"))
        })
        .collect()
}

async fn audit_count(daemon: &TestDaemon, action: &str, message_id: &str) -> usize {
    daemon
        .core
        .store
        .audit()
        .entries(&daemon.organization_id, 1000)
        .await
        .unwrap()
        .iter()
        .filter(|a| a.action == action && a.message_id.as_deref() == Some(message_id))
        .count()
}

/// A message's urgent alert as the notifier keeps it: (when its read was recorded, how many
/// times it escalated).
async fn alert(daemon: &TestDaemon, message_id: &str) -> (Option<i64>, i64) {
    switchboard::store::on_db!(daemon.core.store.db(), |pool| sqlx::query_as(
        "SELECT read_at, escalation_level FROM urgent_alerts WHERE message_id = $1",
    )
    .bind(message_id)
    .fetch_one(pool)
    .await)
    .expect("urgent alert")
}

async fn put(daemon: &TestDaemon, path: &str, body: serde_json::Value) {
    let response = daemon
        .http
        .put(daemon.url(path))
        .bearer_auth(&daemon.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "PUT {path}: {}",
        response.status()
    );
}

async fn post_urgent(daemon: &TestDaemon, body: &str) -> String {
    let response = daemon
        .post_message(json!({
            "patient": "p-1", "body": body, "urgent": true,
            "recipients": [{"patient": true, "channel": "email"}],
            "metadata": {"notify": "both"},
        }))
        .await;
    assert_eq!(response.status(), 201);
    let view: serde_json::Value = response.json().await.unwrap();
    view["id"].as_str().unwrap().to_string()
}

async fn urgent_messages_notify_digest_and_escalate(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.organizations.insert(
        "north".into(),
        OrganizationConfig {
            display_name: Some("North Clinic".into()),
            portal_url: "https://portal.north.example".into(),
            urgent_escalation_secs: 2,
            ..OrganizationConfig::default()
        },
    );
    let mut daemon = TestDaemon::start(config).await;
    put(&daemon, "/v1/patients/p-1", json!({
        "family_name": "Rivera", "given_name": "Ana",
        "contact_points": [{"system": "sms", "value": "(415) 555-2671"}, {"system": "email", "value": "ana@example.org"}],
    })).await;
    put(
        &daemon,
        "/v1/staff/nurse-a",
        json!({"name": "Nurse A", "email": "a@clinic.example", "on_call_rank": 1}),
    )
    .await;
    put(
        &daemon,
        "/v1/staff/dr-b",
        json!({"name": "Dr B", "sms": "+14155550142", "on_call_rank": 2}),
    )
    .await;

    // First urgent message: the patient by SMS, the first on call (email only) by email.
    let first = post_urgent(&daemon, SECRET).await;
    // (By address: on a slow machine the escalation to Dr B, 2 s on, may land as early.)
    let to = |address: &str| notifications(&db).into_iter().find(|n| n["to"] == address);
    wait_for(
        "the patient's and Nurse A's notifications",
        Duration::from_secs(20),
        async || to("+14155552671").is_some() && to("a@clinic.example").is_some(),
    )
    .await;
    let sms = to("+14155552671").expect("SMS notification");
    assert_eq!(sms["channel"], "sms");
    assert!(sms["body"].as_str().unwrap().contains("North Clinic"));
    assert!(
        sms["body"]
            .as_str()
            .unwrap()
            .contains("https://portal.north.example")
    );
    let email = to("a@clinic.example").expect("email notification");
    assert_eq!(email["channel"], "email");
    for file in outbox_files(&db) {
        if file["body"]
            .as_str()
            .is_some_and(|b| b.contains("urgent secure message"))
        {
            assert!(
                !file.to_string().contains("biopsy"),
                "no PHI in notifications: {file}"
            );
            assert!(
                !file.to_string().contains("Rivera"),
                "no name in notifications: {file}"
            );
        }
    }
    // Both audited as the first round (level 0; Dr B's, if already there, is level 1).
    let first_round = daemon
        .core
        .store
        .audit()
        .entries(&daemon.organization_id, 1000)
        .await
        .unwrap()
        .iter()
        .filter(|a| {
            a.action == "urgent_notification"
                && a.message_id.as_deref() == Some(first.as_str())
                && a.detail.as_deref().is_some_and(|d| d.contains("(level 0)"))
        })
        .count();
    assert_eq!(first_round, 2);

    // A second urgent message within the window is folded in: no second SMS or email.
    let second = post_urgent(&daemon, "Please call us today").await;
    wait_for("the digest recorded", Duration::from_secs(20), async || {
        audit_count(&daemon, "urgent_notification_digested", &second).await >= 2
    })
    .await;
    // The second one is read at once: it never escalates.
    let read = daemon
        .http
        .post(daemon.url(&format!("/v1/messages/{second}/read")))
        .bearer_auth(&daemon.key)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 204);

    // The first is not read: after 2 s it goes to the next person on call (Dr B, by SMS)...
    wait_for("escalation to Dr B", Duration::from_secs(20), async || {
        notifications(&db).iter().any(|n| n["to"] == "+14155550142")
    })
    .await;
    assert_eq!(audit_count(&daemon, "urgent_escalated", &first).await, 1);
    // ... and 2 s later, with nobody left on call, its escalation ends.
    wait_for(
        "the first escalation exhausted",
        Duration::from_secs(20),
        async || audit_count(&daemon, "urgent_escalation_exhausted", &first).await >= 1,
    )
    .await;
    assert_eq!(
        audit_count(&daemon, "urgent_escalation_exhausted", &first).await,
        1
    );
    // Once the notifier has recorded the second one's read, it can never escalate (an
    // escalation needs an unread alert); it had not escalated before either.
    let level = wait_until(
        "the second one's read recorded",
        Duration::from_secs(20),
        async || {
            let (read_at, level) = alert(&daemon, &second).await;
            read_at.map(|_| level)
        },
    )
    .await;
    assert_eq!(level, 0, "read messages never escalate");
    assert_eq!(
        audit_count(&daemon, "urgent_escalated", &second).await,
        0,
        "read messages never escalate"
    );
    let sms_to_patient = notifications(&db)
        .iter()
        .filter(|n| n["to"] == "+14155552671")
        .count();
    assert_eq!(sms_to_patient, 1, "one SMS for the burst");
    assert_eq!(notifications(&db).len(), 3);

    // Another organization cannot mark it read.
    let other = daemon.key_for("south").await;
    let foreign = daemon
        .http
        .post(daemon.url(&format!("/v1/messages/{first}/read")))
        .bearer_auth(other)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 404);
    daemon.stop().await;
}
both_databases!(
    urgent_flow,
    crate::urgent_messages_notify_digest_and_escalate
);

async fn fallback_to_email_when_sms_is_opted_out(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut daemon = TestDaemon::start(db.config()).await;
    put(&daemon, "/v1/patients/p-1", json!({
        "family_name": "Rivera", "given_name": "Ana",
        "contact_points": [{"system": "sms", "value": "+14155552671"}, {"system": "email", "value": "ana@example.org"}],
        "consents": [{"channel": "sms", "purpose": "*", "status": "revoked", "recipient": "*"}],
    })).await;
    let response = daemon
        .post_message(json!({"patient": "p-1", "body": SECRET, "urgent": true,
            "recipients": [{"patient": true, "channel": "email"}]}))
        .await;
    assert_eq!(response.status(), 201);
    wait_for("email notification", Duration::from_secs(20), async || {
        notifications(&db)
            .iter()
            .any(|n| n["channel"] == "email" && n["to"] == "ana@example.org")
    })
    .await;
    assert!(
        notifications(&db).iter().all(|n| n["channel"] != "sms"),
        "never to an opted-out channel"
    );
    daemon.stop().await;
}
both_databases!(
    opted_out_fallback,
    crate::fallback_to_email_when_sms_is_opted_out
);
