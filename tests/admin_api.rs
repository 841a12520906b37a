//! The admin lists an operator works from: failed deliveries by filter with cursors, the dead
//! letters, one retry and a bulk retry that is safe to repeat — on SQLite and PostgreSQL.

mod common;

use std::time::Duration;

use common::{Backend, TestDaemon, TestDb};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

async fn request(
    daemon: &TestDaemon,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = daemon
        .http
        .request(method.parse().expect("method"), daemon.url(path))
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn failed_deliveries_are_listed_and_retried(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    let fax = config.channels.entry("fax".into()).or_default();
    fax.backoff_initial_ms = 100;
    fax.max_attempts = 1;
    let daemon = TestDaemon::start(config).await;
    // The outbox sink cannot write: every send fails.
    let outbox = db.outbox();
    let _ = std::fs::remove_dir_all(&outbox);
    std::fs::write(&outbox, b"not a directory").expect("break the outbox");
    let mut messages = Vec::new();
    for i in 0..3 {
        let created: Value = daemon
            .post_message(json!({"body": format!("Referral {i}"),
                "recipients": [{"address": format!("+1415555001{i}"), "channel": "fax"}]}))
            .await
            .json()
            .await
            .expect("json");
        let id = created["id"].as_str().expect("id").to_string();
        let view = daemon.wait_terminal(&id, WAIT).await;
        assert_eq!(view["deliveries"][0]["status"], "failed", "{view:#}");
        messages.push(id);
    }
    let key = daemon.key.clone();

    // Failed fax deliveries, two per page, newest first.
    let (status, first) = request(
        &daemon,
        &key,
        "GET",
        "/v1/deliveries?status=failed&channel=fax&limit=2",
        None,
    )
    .await;
    assert_eq!(status, 200, "{first:#}");
    let page: Vec<&str> = first["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| d["message_id"].as_str().expect("message id"))
        .collect();
    assert_eq!(page, [messages[2].as_str(), messages[1].as_str()]);
    assert_eq!(first["deliveries"][0]["status"], "failed");
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let (_, second) = request(
        &daemon,
        &key,
        "GET",
        &format!("/v1/deliveries?status=failed&channel=fax&limit=2&cursor={cursor}"),
        None,
    )
    .await;
    let rest = second["deliveries"].as_array().expect("deliveries");
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["message_id"], messages[0].as_str());
    assert!(second.get("next_cursor").is_none(), "{second:#}");

    // Another organization sees none of them.
    let other = daemon.key_for("south").await;
    let (_, theirs) = request(&daemon, &other, "GET", "/v1/deliveries?status=failed", None).await;
    assert_eq!(theirs["deliveries"], json!([]));

    // A bad filter names every parameter at fault.
    let (status, problem) = request(
        &daemon,
        &key,
        "GET",
        "/v1/deliveries?status=lost&channel=pigeon&limit=0",
        None,
    )
    .await;
    assert_eq!(status, 422, "{problem:#}");
    let at: Vec<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["parameter"].as_str())
        .collect();
    assert_eq!(at, ["status", "channel", "limit"], "{problem:#}");

    // The dead letters; one retried by id, then the rest in bulk, after the fault is fixed.
    let (_, dead) = request(&daemon, &key, "GET", "/v1/dead-letters?channel=fax", None).await;
    let dead: Vec<String> = dead["dead_letters"]
        .as_array()
        .expect("dead letters")
        .iter()
        .map(|d| d["delivery_id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(dead.len(), 3);
    std::fs::remove_file(&outbox).expect("unbreak");
    std::fs::create_dir_all(&outbox).expect("outbox");
    let (status, one) = request(
        &daemon,
        &key,
        "POST",
        &format!("/v1/dead-letters/{}/retry", dead[0]),
        None,
    )
    .await;
    assert_eq!(status, 202, "{one:#}");
    assert_eq!(one["retried"], 1);
    let (status, again) = request(
        &daemon,
        &key,
        "POST",
        &format!("/v1/dead-letters/{}/retry", dead[0]),
        None,
    )
    .await;
    assert_eq!(status, 409, "{again:#}");
    assert!(
        again["type"]
            .as_str()
            .unwrap_or("")
            .ends_with("dead_letter_retried"),
        "{again:#}"
    );
    let (status, _) = request(
        &daemon,
        &other,
        "POST",
        &format!("/v1/dead-letters/{}/retry", dead[1]),
        None,
    )
    .await;
    assert_eq!(status, 404, "another organization's dead letter");
    let (status, bulk) = request(
        &daemon,
        &key,
        "POST",
        "/v1/dead-letters/retry",
        Some(json!({"channel": "fax"})),
    )
    .await;
    assert_eq!(status, 202, "{bulk:#}");
    assert_eq!(bulk["retried"], 2);
    let (_, repeat) = request(
        &daemon,
        &key,
        "POST",
        "/v1/dead-letters/retry",
        Some(json!({"channel": "fax"})),
    )
    .await;
    assert_eq!(repeat["retried"], 0, "a repeat retries nothing twice");

    // Every message ends with its failed delivery and a delivered retry.
    for id in &messages {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let view = daemon.get_json(&format!("/v1/messages/{id}")).await;
            let statuses: Vec<&str> = view["deliveries"]
                .as_array()
                .expect("deliveries")
                .iter()
                .map(|d| d["status"].as_str().unwrap_or(""))
                .collect();
            if statuses == ["failed", "delivered"] {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{view:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (_, left) = request(&daemon, &key, "GET", "/v1/dead-letters", None).await;
    assert_eq!(
        left["dead_letters"],
        json!([]),
        "retried ones are not listed by default"
    );
    let (_, all) = request(
        &daemon,
        &key,
        "GET",
        "/v1/dead-letters?include_retried=true",
        None,
    )
    .await;
    assert_eq!(all["dead_letters"].as_array().map(Vec::len), Some(3));
    assert!(all["dead_letters"][0]["retried_at"].is_string());
    let mut daemon = daemon;
    daemon.stop().await;
}
both_databases!(
    failed_deliveries_are_listed_and_retried,
    super::failed_deliveries_are_listed_and_retried
);
