//! The messaging app's events in (`POST /v1/app-events`): `pm_message_sent` accepts and
//! delivers the message once per app message id, carrying `chart_documented` untouched;
//! `pm_urgent_message_sent` makes the urgent notifier act. A request is bound to its
//! organization by its key or by the app secret it is signed with (Standard Webhooks); a
//! wrong signature or none is refused.

mod common;

use std::time::Duration;

use common::provider::secret_file;
use common::{Backend, TestDaemon, TestDb};
use serde_json::{Value, json};
use switchboard::webhooks::signature;

const WAIT: Duration = Duration::from_secs(30);

async fn post(daemon: &TestDaemon, key: Option<&str>, body: &Value) -> reqwest::Response {
    let mut request = daemon.http.post(daemon.url("/v1/app-events")).json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.expect("POST app event")
}

async fn post_signed(
    daemon: &TestDaemon,
    secret: &str,
    id: &str,
    body: &Value,
) -> reqwest::Response {
    let bytes = serde_json::to_vec(body).expect("json");
    let timestamp = chrono::Utc::now().timestamp();
    let key = signature::secret_key(secret).expect("key");
    let signed = signature::sign(&key, id, timestamp, &bytes).expect("sign");
    daemon
        .http
        .post(daemon.url("/v1/app-events"))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signed)
        .body(bytes)
        .send()
        .await
        .expect("POST signed app event")
}

fn message_sent(app_id: &str, body: &str) -> Value {
    json!({
        "type": "pm_message_sent",
        "event_version": 1,
        "data": {
            "message_id": app_id,
            "chart_documented": true,
            "message": {
                "patient": "p-1",
                "body": body,
                "recipients": [{"address": "+14155550111", "channel": "sms"}],
            },
        },
    })
}

async fn app_events_trigger_sends_and_urgent_notices(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app_secret = signature::generate_secret().expect("secret");
    let mut config = db.config();
    config
        .webhooks
        .app_secrets
        .insert("north".into(), secret_file(&db, "app-secret", &app_secret));
    let mut daemon = TestDaemon::start(config).await;
    let patient = daemon
        .http
        .put(daemon.url("/v1/patients/p-1"))
        .bearer_auth(&daemon.key)
        .json(&json!({"family_name": "Rivera", "given_name": "Ana",
                      "contact_points": [{"system": "sms", "value": "+14155550111"}]}))
        .send()
        .await
        .expect("patient");
    assert!(patient.status().is_success());

    // By key: accepted once per app message id.
    let first = post(
        &daemon,
        Some(&daemon.key),
        &message_sent("app-1", "See you Monday"),
    )
    .await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.expect("json");
    assert_eq!(first["replayed"], false);
    let again = post(
        &daemon,
        Some(&daemon.key),
        &message_sent("app-1", "See you Monday"),
    )
    .await;
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["replayed"], true);
    assert_eq!(again["message_id"], first["message_id"]);
    let changed = post(
        &daemon,
        Some(&daemon.key),
        &message_sent("app-1", "Another text"),
    )
    .await;
    assert_eq!(
        changed.status(),
        409,
        "the same app id with another message"
    );
    let message_id = first["message_id"].as_str().expect("id").to_string();
    let view = daemon.wait_terminal(&message_id, WAIT).await;
    assert_eq!(view["metadata"]["chart_documented"], true, "{view}");
    let events = daemon.events().await;
    let accepted: Vec<&Value> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "message.accepted")
        .collect();
    assert_eq!(accepted.len(), 1, "accepted once");
    assert_eq!(accepted[0]["payload"]["chart_documented"], true);

    // Signed with the app secret (no key): bound to north by the secret.
    let signed = post_signed(
        &daemon,
        &app_secret,
        "evt-2",
        &message_sent("app-2", "Hello"),
    )
    .await;
    assert_eq!(signed.status(), 202);
    let signed: Value = signed.json().await.expect("json");
    let view = daemon
        .get_json(&format!(
            "/v1/messages/{}",
            signed["message_id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(view["id"], signed["message_id"]);
    let forged = signature::generate_secret().expect("secret");
    let refused = post_signed(&daemon, &forged, "evt-3", &message_sent("app-3", "Hi")).await;
    assert_eq!(refused.status(), 403);
    let anonymous = post(&daemon, None, &message_sent("app-4", "Hi")).await;
    assert_eq!(anonymous.status(), 401);
    // Another organization's key cannot reach north's messages by the app id.
    let south = daemon.key_for("south").await;
    let elsewhere = post(
        &daemon,
        Some(&south),
        &json!({"type": "pm_urgent_message_sent", "data": {"message_id": "app-1"}}),
    )
    .await;
    assert_eq!(elsewhere.status(), 422);
    let problem: Value = elsewhere.json().await.expect("json");
    assert_eq!(problem["errors"][0]["pointer"], "/data/message_id");

    // Urgent: the notifier acts on the gateway's message.
    let urgent = post_signed(
        &daemon,
        &app_secret,
        "evt-5",
        &json!({"type": "pm_urgent_message_sent", "event_version": 1, "data": {"message_id": "app-1"}}),
    )
    .await;
    assert_eq!(urgent.status(), 202);
    let urgent: Value = urgent.json().await.expect("json");
    assert_eq!(urgent["message_id"].as_str(), Some(message_id.as_str()));
    let store = daemon.core.store.clone();
    common::wait::wait_for("the urgent notifier's alert", WAIT, async || {
        let n: i64 = switchboard::store::on_db!(store.db(), |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM urgent_alerts WHERE message_id = $1"
        )
        .bind(&message_id)
        .fetch_one(pool)
        .await)
        .expect("count");
        n == 1
    })
    .await;
    let bad = post(
        &daemon,
        Some(&daemon.key),
        &json!({"type": "pm_something_else", "data": {}}),
    )
    .await;
    assert_eq!(bad.status(), 422);
    daemon.stop().await;
    common::contracts::assert_events_honour_contracts(&daemon.core.store).await;
}
both_databases!(
    app_events_trigger_sends_and_urgent_notices,
    super::app_events_trigger_sends_and_urgent_notices
);

/// The `message.accepted` events of north's feed so far.
async fn accepted(daemon: &TestDaemon) -> usize {
    let feed = daemon.get_json("/v1/events?limit=1000").await;
    feed["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "message.accepted")
        .count()
}

/// `[webhooks] app_listen`: on PostgreSQL the app's events also arrive by `NOTIFY` on the
/// configured channel, bound to the channel's organization; a notification sent twice is one
/// message; a payload that is not an app event changes nothing and the listener goes on. On
/// SQLite the setting stops start-up.
async fn app_events_by_listen(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.webhooks.app_listen = vec![switchboard::config::AppListen {
        channel: "pm_events".into(),
        organization: "north".into(),
    }];
    if backend == Backend::Sqlite {
        let Err(err) = switchboard::daemon::start(config).await else {
            panic!("app_listen on SQLite started");
        };
        assert!(
            err.to_string().contains("app_listen needs PostgreSQL"),
            "{err}"
        );
        return;
    }
    let mut daemon = TestDaemon::start(config).await;
    let patient = daemon
        .http
        .put(daemon.url("/v1/patients/p-1"))
        .bearer_auth(&daemon.key)
        .json(&json!({"family_name": "Rivera", "given_name": "Ana",
                      "contact_points": [{"system": "sms", "value": "+14155550111"}]}))
        .send()
        .await
        .expect("patient");
    assert!(patient.status().is_success());
    let app = sqlx::PgPool::connect(&db.url)
        .await
        .expect("the app's connection");
    // NOTIFY reaches only sessions already listening: wait for the daemon's LISTEN.
    common::wait::wait_for("the daemon listening on pm_events", WAIT, async || {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN \"pm_events\"%'",
        )
        .fetch_one(&app)
        .await
        .expect("pg_stat_activity");
        n == 1
    })
    .await;
    let notify = async |payload: &str| {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind("pm_events")
            .bind(payload)
            .execute(&app)
            .await
            .expect("pg_notify");
    };
    let metric = async |outcome: &str| -> u64 {
        let text = daemon
            .http
            .get(daemon.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        let line = format!("switchboard_app_listen_notifications_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {line} in /metrics"))
    };

    // Not an app event (not JSON; JSON but not the envelope, e.g. naming an organization):
    // counted, nothing accepted, and the listener goes on to the next notification.
    notify("not json {").await;
    notify(&json!({"type": "pm_message_sent", "organization": "south", "data": {}}).to_string())
        .await;
    let good = message_sent("app-l1", "See you Monday").to_string();
    notify(&good).await;
    common::wait::wait_for("the notified message accepted", WAIT, async || {
        accepted(&daemon).await == 1
    })
    .await;
    assert_eq!(metric("malformed").await, 2);
    // The message is north's (the channel's organization), under the app's id.
    let replay = post(
        &daemon,
        Some(&daemon.key),
        &message_sent("app-l1", "See you Monday"),
    )
    .await;
    assert_eq!(replay.status(), 202);
    let replay: Value = replay.json().await.expect("json");
    assert_eq!(replay["replayed"], true, "{replay}");
    let message_id = replay["message_id"].as_str().expect("id").to_string();
    let view = daemon.wait_terminal(&message_id, WAIT).await;
    assert_eq!(view["metadata"]["chart_documented"], true, "{view}");

    // The same event notified twice more, then another: once the other is in, the repeats
    // (notified before it on the same channel) were taken, and made nothing new.
    notify(&good).await;
    notify(&good).await;
    notify(&message_sent("app-l2", "Bring your card").to_string()).await;
    common::wait::wait_for("the second notified message accepted", WAIT, async || {
        accepted(&daemon).await >= 2
    })
    .await;
    assert_eq!(accepted(&daemon).await, 2, "one message per app message id");
    assert_eq!(metric("accepted").await, 4);
    daemon.stop().await;
    app.close().await;
    common::contracts::assert_events_honour_contracts(&daemon.core.store).await;
}
both_databases!(app_events_by_listen, super::app_events_by_listen);
