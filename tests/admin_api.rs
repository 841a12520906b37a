//! The admin lists an operator works from: failed deliveries by filter with cursors, the dead
//! letters, one retry and a bulk retry that is safe to repeat — on SQLite and PostgreSQL.

mod common;

use std::time::Duration;

use common::{Backend, TestDaemon, TestDb};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

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
    let (status, first) = daemon
        .request(
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
    let (_, second) = daemon
        .request(
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
    let (_, theirs) = daemon
        .request(&other, "GET", "/v1/deliveries?status=failed", None)
        .await;
    assert_eq!(theirs["deliveries"], json!([]));

    // A bad filter names every parameter at fault.
    let (status, problem) = daemon
        .request(
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
    let (_, dead) = daemon
        .request(&key, "GET", "/v1/dead-letters?channel=fax", None)
        .await;
    let dead: Vec<String> = dead["dead_letters"]
        .as_array()
        .expect("dead letters")
        .iter()
        .map(|d| d["delivery_id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(dead.len(), 3);
    std::fs::remove_file(&outbox).expect("unbreak");
    std::fs::create_dir_all(&outbox).expect("outbox");
    let (status, one) = daemon
        .request(
            &key,
            "POST",
            &format!("/v1/dead-letters/{}/retry", dead[0]),
            None,
        )
        .await;
    assert_eq!(status, 202, "{one:#}");
    assert_eq!(one["retried"], 1);
    let (status, again) = daemon
        .request(
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
    let (status, _) = daemon
        .request(
            &other,
            "POST",
            &format!("/v1/dead-letters/{}/retry", dead[1]),
            None,
        )
        .await;
    assert_eq!(status, 404, "another organization's dead letter");
    let (status, bulk) = daemon
        .request(
            &key,
            "POST",
            "/v1/dead-letters/retry",
            Some(json!({"channel": "fax"})),
        )
        .await;
    assert_eq!(status, 202, "{bulk:#}");
    assert_eq!(bulk["retried"], 2);
    let (_, repeat) = daemon
        .request(
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
    let (_, left) = daemon.request(&key, "GET", "/v1/dead-letters", None).await;
    assert_eq!(
        left["dead_letters"],
        json!([]),
        "retried ones are not listed by default"
    );
    let (_, all) = daemon
        .request(&key, "GET", "/v1/dead-letters?include_retried=true", None)
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

/// `GET /v1/messages`: newest first with cursors, by delivery status, channel, patient and
/// time; ids and states only (no body); the organization's own; bad filters named at once.
async fn messages_are_listed_by_filter(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    let fax = config.channels.entry("fax".into()).or_default();
    fax.backoff_initial_ms = 100;
    fax.max_attempts = 1;
    let mut daemon = TestDaemon::start(config).await;
    let key = daemon.key.clone();
    let (status, _) = daemon
        .request(
            &key,
            "PUT",
            "/v1/patients/MRN-77",
            Some(json!({"family_name": "Rivera", "given_name": "Ana",
            "contact_points": [{"system": "sms", "value": "+14155552671"}]})),
        )
        .await;
    assert!(status == 200 || status == 201, "{status}");
    let send = async |body: Value| -> String {
        let created: Value = daemon.post_message(body).await.json().await.expect("json");
        let id = created["id"].as_str().expect("id").to_string();
        daemon.wait_terminal(&id, WAIT).await;
        id
    };
    let sms1 = send(json!({"body": "Your appointment", "patient": "MRN-77",
        "recipients": [{"address": "+14155552671", "channel": "sms"}]}))
    .await;
    let sms2 = send(json!({"body": "Reminder", "patient": "MRN-77",
        "recipients": [{"address": "+14155552671", "channel": "sms"}]}))
    .await;
    let email = send(json!({"body": "Newsletter",
        "recipients": [{"address": "ops@example.org", "channel": "email"}]}))
    .await;
    // The outbox sink cannot write: the fax fails.
    let outbox = db.outbox();
    let _ = std::fs::remove_dir_all(&outbox);
    std::fs::write(&outbox, b"not a directory").expect("break the outbox");
    let fax = send(json!({"body": "Referral",
        "recipients": [{"address": "+14155550100", "channel": "fax"}]}))
    .await;

    let ids = |page: &Value| -> Vec<String> {
        page["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["id"].as_str().expect("id").to_string())
            .collect()
    };
    // Newest first, two per page.
    let (status, first) = daemon
        .request(&key, "GET", "/v1/messages?limit=2", None)
        .await;
    assert_eq!(status, 200, "{first:#}");
    assert_eq!(ids(&first), [fax.clone(), email.clone()]);
    assert_eq!(first["messages"][0]["status"], "failed");
    assert_eq!(first["messages"][0]["channels"], json!(["fax"]));
    assert_eq!(first["messages"][0]["deliveries"], 1);
    assert!(first["messages"][0].get("body").is_none(), "{first:#}");
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let (_, second) = daemon
        .request(
            &key,
            "GET",
            &format!("/v1/messages?limit=2&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(ids(&second), [sms2.clone(), sms1.clone()]);
    // A full page has a cursor; past the last message the page is empty and has none.
    let cursor = second["next_cursor"].as_str().expect("a next page");
    let (_, third) = daemon
        .request(
            &key,
            "GET",
            &format!("/v1/messages?limit=2&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(third["messages"], json!([]));
    assert!(third.get("next_cursor").is_none(), "{third:#}");

    // By delivery status, channel, patient (external id) and time.
    let list = async |query: &str| -> Vec<String> {
        let (status, page) = daemon
            .request(&key, "GET", &format!("/v1/messages?{query}"), None)
            .await;
        assert_eq!(status, 200, "{query}: {page:#}");
        ids(&page)
    };
    assert_eq!(list("status=failed").await, vec![fax.clone()]);
    assert_eq!(
        list("status=delivered&channel=sms").await,
        [sms2.clone(), sms1.clone()]
    );
    assert_eq!(list("channel=email").await, vec![email.clone()]);
    assert_eq!(list("patient=MRN-77").await, [sms2.clone(), sms1.clone()]);
    assert_eq!(list("patient=MRN-nobody").await, Vec::<String>::new());
    let created_at = first["messages"][1]["created_at"]
        .as_str()
        .expect("time")
        .to_string();
    let encoded: String = form_urlencoded::byte_serialize(created_at.as_bytes()).collect();
    let until = list(&format!("until={encoded}")).await;
    assert!(
        !until.contains(&email) && !until.contains(&fax),
        "{until:?}"
    );
    assert!(list(&format!("since={encoded}")).await.contains(&email));

    // Another organization sees none of them.
    let other = daemon.key_for("south").await;
    let (_, theirs) = daemon.request(&other, "GET", "/v1/messages", None).await;
    assert_eq!(theirs["messages"], json!([]));

    // A bad filter names every parameter at fault.
    let (status, problem) = daemon
        .request(
            &key,
            "GET",
            "/v1/messages?status=lost&channel=pigeon&since=yesterday&cursor=x&limit=0",
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
    assert_eq!(
        at,
        ["status", "channel", "since", "cursor", "limit"],
        "{problem:#}"
    );
    let (status, _) = daemon
        .request(&key, "GET", "/v1/messages?colour=red", None)
        .await;
    assert_eq!(status, 400);
    daemon.stop().await;
}
both_databases!(
    messages_are_listed_by_filter,
    super::messages_are_listed_by_filter
);
