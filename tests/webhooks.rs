//! Webhooks out (Standard Webhooks): a receiver written with the reference library
//! (`tests/peers/webhook_receiver.py`, PyPI `standardwebhooks`) verifies every delivery; it is
//! stopped mid-stream and restarted, and every event still arrives, duplicates only with the
//! same `webhook-id`, one message's events in feed order, each organization's endpoint with
//! its own events only. Endpoints outside `[webhooks] allow_hosts` are refused and never
//! contacted; what cannot be delivered within the retry window is dead-lettered and can be
//! retried; a rotated secret signs alongside the previous one for the overlap window.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::ports::Reserved;
use common::wait::wait_for;
use common::{Backend, TestDaemon, TestDb};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// The Python receiver, killed when dropped.
struct Receiver {
    child: Child,
}

impl Receiver {
    fn start(port: &Reserved, out: &Path, secrets: &[&str], drop_first: usize) -> Self {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/webhook_receiver.py"
        );
        let mut command = Command::new("python3");
        command
            .arg(script)
            .arg("--port")
            .arg(port.port().to_string())
            .arg("--out")
            .arg(out)
            .arg("--drop-first")
            .arg(drop_first.to_string());
        for secret in secrets {
            command.arg("--secret").arg(secret);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with standardwebhooks (pip install standardwebhooks)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("receiver output");
        assert_eq!(line.trim(), "READY", "the webhook receiver did not start");
        Self { child }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the receiver recorded, in arrival order.
fn received(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn config(db: &TestDb) -> switchboard::config::Config {
    let mut config = db.config();
    config.webhooks.allow_hosts = vec!["127.0.0.1".into()];
    config.webhooks.backoff_initial_ms = 100;
    config.webhooks.backoff_max_secs = 1;
    config.webhooks.timeout_secs = 5;
    config
}

async fn put_endpoint(daemon: &TestDaemon, key: &str, id: &str, body: Value) -> reqwest::Response {
    daemon
        .http
        .put(daemon.url(&format!("/v1/webhook-endpoints/{id}")))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("PUT endpoint")
}

/// Creates an endpoint and returns its secret.
async fn create_endpoint(daemon: &TestDaemon, key: &str, id: &str, url: &str) -> String {
    let response = put_endpoint(daemon, key, id, json!({ "url": url })).await;
    assert_eq!(response.status(), 201);
    let view: Value = response.json().await.expect("json");
    let secret = view["secret"].as_str().expect("secret once").to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    // Never shown again.
    let again: Value = get(daemon, key, &format!("/v1/webhook-endpoints/{id}")).await;
    assert!(again.get("secret").is_none(), "{again}");
    let update = put_endpoint(daemon, key, id, json!({ "url": url })).await;
    assert_eq!(update.status(), 200);
    let update: Value = update.json().await.expect("json");
    assert!(update.get("secret").is_none(), "{update}");
    secret
}

async fn get(daemon: &TestDaemon, key: &str, path: &str) -> Value {
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

async fn send(daemon: &TestDaemon, key: &str, n: usize) {
    for i in 0..n {
        let response = daemon
            .http
            .post(daemon.url("/v1/messages"))
            .bearer_auth(key)
            .json(&json!({
                "subject": "Hello",
                "body": format!("Body {i}"),
                "recipients": [{"address": format!("+1415555{:04}", 100 + i), "channel": "sms"}],
            }))
            .send()
            .await
            .expect("POST message");
        assert_eq!(response.status(), 201);
    }
}

/// Every event id of an organization's feed, in feed order (paged to the end, waiting until
/// the feed holds `at_least` events).
async fn feed_ids(daemon: &TestDaemon, key: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut after = String::new();
    loop {
        let page = get(daemon, key, &format!("/v1/events?limit=1000&after={after}")).await;
        let events = page["events"].as_array().expect("events");
        ids.extend(events.iter().map(|e| e["id"].as_i64().expect("id")));
        after = page["next_after"].as_str().expect("cursor").to_string();
        if events.is_empty() {
            return ids;
        }
    }
}

fn cursor_key(cursor: &str) -> (i64, i64) {
    let (tx, id) = cursor.split_once('.').expect("tx.id cursor");
    (tx.parse().expect("tx"), id.parse().expect("id"))
}

async fn survives_a_receiver_restart(backend: Backend) {
    let db = TestDb::new(backend).await;
    let port = Reserved::new();
    let mut daemon = TestDaemon::start(config(&db)).await;
    let north_key = daemon.key.clone();
    let south_key = daemon.key_for("south").await;
    let base = format!("http://127.0.0.1:{}", port.port());
    let north_secret = create_endpoint(&daemon, &north_key, "app", &format!("{base}/north")).await;
    let south_secret = create_endpoint(&daemon, &south_key, "app", &format!("{base}/south")).await;
    let out: PathBuf = db.dir.path().join("received.jsonl");
    // The first two deliveries are processed but never acknowledged: they come again.
    let receiver = Receiver::start(&port, &out, &[&north_secret, &south_secret], 2);

    send(&daemon, &north_key, 5).await;
    send(&daemon, &south_key, 3).await;
    wait_for("some deliveries", WAIT, async || received(&out).len() >= 8).await;
    drop(receiver); // stopped mid-stream

    send(&daemon, &north_key, 5).await;
    wait_for("an attempt while the receiver is down", WAIT, async || {
        let page = get(
            &daemon,
            &north_key,
            "/v1/webhook-endpoints/app/deliveries?status=pending",
        )
        .await;
        page["deliveries"].as_array().is_some_and(|d| {
            d.iter()
                .any(|d| d["attempts"].as_i64() >= Some(1) && d["last_error"].is_string())
        })
    })
    .await;
    let _receiver = Receiver::start(&port, &out, &[&north_secret, &south_secret], 0);

    let north_feed = feed_ids(&daemon, &north_key).await;
    let south_feed = feed_ids(&daemon, &south_key).await;
    assert!(north_feed.len() >= 20 && south_feed.len() >= 6);
    let arrived = |path: &'static str| {
        let out = out.clone();
        move || -> BTreeSet<i64> {
            received(&out)
                .iter()
                .filter(|r| r["path"] == path)
                .filter_map(|r| r["event_id"].as_i64())
                .collect()
        }
    };
    let (north_arrived, south_arrived) = (arrived("/north"), arrived("/south"));
    wait_for("every event of both feeds", WAIT, async || {
        north_feed.iter().all(|id| north_arrived().contains(id))
            && south_feed.iter().all(|id| south_arrived().contains(id))
    })
    .await;
    // Late events (a delivery's `sent`/`delivered` may still be committing): settle first.
    let north_feed = feed_ids(&daemon, &north_key).await;
    wait_for("the north feed's later events", WAIT, async || {
        north_feed.iter().all(|id| north_arrived().contains(id))
    })
    .await;

    let records = received(&out);
    let mut id_of_event: HashMap<i64, String> = HashMap::new();
    let mut event_of_id: HashMap<String, i64> = HashMap::new();
    let mut copies: HashMap<String, usize> = HashMap::new();
    for r in &records {
        assert_eq!(r["verified"], true, "every signature verifies: {r}");
        assert_eq!(r["signatures"], 1, "one secret, one signature: {r}");
        assert_eq!(r["event_version"], 1, "{r}");
        let event = r["event_id"].as_i64().expect("event id");
        let webhook_id = r["webhook_id"].as_str().expect("webhook-id").to_string();
        assert_eq!(
            id_of_event
                .entry(event)
                .or_insert_with(|| webhook_id.clone()),
            &webhook_id,
            "an event always comes with the same webhook-id"
        );
        assert_eq!(
            event_of_id.entry(webhook_id.clone()).or_insert(event),
            &event,
            "a webhook-id always carries the same event"
        );
        *copies.entry(webhook_id).or_default() += 1;
        // Tenant isolation: each endpoint has its own organization's events only.
        let (feed, org) = if r["path"] == "/north" {
            (&north_feed, &daemon.organization_id)
        } else {
            assert_eq!(r["path"], "/south");
            (
                &south_feed,
                &r["organization_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        };
        assert!(
            feed.contains(&event),
            "event {event} is not of {}",
            r["path"]
        );
        if r["path"] == "/north" {
            assert_eq!(r["organization_id"].as_str(), Some(org.as_str()));
        }
    }
    assert!(
        copies.values().any(|n| *n > 1),
        "the unacknowledged deliveries came again, with the same webhook-id"
    );
    let south_orgs: BTreeSet<&str> = records
        .iter()
        .filter(|r| r["path"] == "/south")
        .filter_map(|r| r["organization_id"].as_str())
        .collect();
    assert_eq!(south_orgs.len(), 1);
    assert!(!south_orgs.contains(daemon.organization_id.as_str()));

    // One message's events arrive in feed order (first arrivals).
    let mut first_seen = BTreeSet::new();
    let mut by_message: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for r in &records {
        let event = r["event_id"].as_i64().expect("id");
        if !first_seen.insert((r["path"].to_string(), event)) {
            continue;
        }
        if let Some(message) = r["message_id"].as_str() {
            by_message
                .entry(format!("{}{message}", r["path"]))
                .or_default()
                .push(cursor_key(r["cursor"].as_str().expect("cursor")));
        }
    }
    for (message, cursors) in &by_message {
        let mut sorted = cursors.clone();
        sorted.sort();
        assert_eq!(cursors, &sorted, "events of {message} out of order");
    }
    daemon.stop().await;
    common::contracts::assert_events_honour_contracts(&daemon.core.store).await;
}
both_databases!(
    signed_deliveries_survive_a_receiver_restart,
    super::survives_a_receiver_restart
);

async fn refuses_hosts_outside_the_allow_list(backend: Backend) {
    let db = TestDb::new(backend).await;
    let port = Reserved::new();
    let mut daemon = TestDaemon::start(config(&db)).await;
    // A listener the daemon must never reach: `localhost` is not on the list (127.0.0.1 is).
    let trap = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    trap.set_nonblocking(true).expect("nonblocking");
    let trap_port = trap.local_addr().expect("addr").port();
    for url in [
        format!("http://localhost:{trap_port}/hook"),
        "http://169.254.169.254/latest/meta-data".to_string(),
        format!("ftp://127.0.0.1:{trap_port}/"),
    ] {
        let response = put_endpoint(&daemon, &daemon.key, "bad", json!({ "url": url })).await;
        assert_eq!(response.status(), 422, "{url}");
        let problem: Value = response.json().await.expect("json");
        assert_eq!(problem["errors"][0]["pointer"], "/url", "{problem}");
    }
    let missing = daemon
        .http
        .get(daemon.url("/v1/webhook-endpoints/bad"))
        .bearer_auth(&daemon.key)
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);

    // Positive marker: an allowed endpoint receives the message's events...
    let secret = create_endpoint(
        &daemon,
        &daemon.key,
        "app",
        &format!("http://127.0.0.1:{}/hook", port.port()),
    )
    .await;
    let out = db.dir.path().join("received.jsonl");
    let _receiver = Receiver::start(&port, &out, &[&secret], 0);
    send(&daemon, &daemon.key, 1).await;
    wait_for("the allowed endpoint's delivery", WAIT, async || {
        received(&out)
            .iter()
            .any(|r| r["type"] == "message.accepted")
    })
    .await;
    // ... and the refused one was never contacted.
    match trap.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the refused host was contacted: {other:?}"),
    }
    daemon.stop().await;
}
both_databases!(
    an_endpoint_outside_the_allow_list_is_refused_and_never_contacted,
    super::refuses_hosts_outside_the_allow_list
);

async fn dead_letters_are_listed_and_retried(backend: Backend) {
    let db = TestDb::new(backend).await;
    let port = Reserved::new(); // nobody listens yet: connections are refused
    let mut config = config(&db);
    config.webhooks.retry_window_secs = 1;
    let mut daemon = TestDaemon::start(config).await;
    let secret = create_endpoint(
        &daemon,
        &daemon.key,
        "app",
        &format!("http://127.0.0.1:{}/hook", port.port()),
    )
    .await;
    let put = put_endpoint(
        &daemon,
        &daemon.key,
        "app",
        json!({ "url": format!("http://127.0.0.1:{}/hook", port.port()), "event_types": ["message.accepted"] }),
    )
    .await;
    assert_eq!(put.status(), 200);
    send(&daemon, &daemon.key, 1).await;
    let dead = common::wait::wait_until("a dead-lettered delivery", WAIT, async || {
        let page = get(
            &daemon,
            &daemon.key,
            "/v1/webhook-endpoints/app/deliveries?status=dead",
        )
        .await;
        page["deliveries"]
            .as_array()
            .and_then(|d| d.first().cloned())
    })
    .await;
    assert_eq!(dead["kind"], "message.accepted");
    assert!(dead["attempts"].as_i64() >= Some(1), "{dead}");
    assert_eq!(dead["last_error"], "connection failed", "{dead}");
    let id = dead["id"].as_str().expect("id").to_string();

    let out = db.dir.path().join("received.jsonl");
    let _receiver = Receiver::start(&port, &out, &[&secret], 0);
    let response = daemon
        .http
        .post(daemon.url(&format!("/v1/webhook-endpoints/app/deliveries/{id}/retry")))
        .bearer_auth(&daemon.key)
        .send()
        .await
        .expect("retry");
    assert_eq!(response.status(), 202);
    wait_for("the retried delivery", WAIT, async || {
        received(&out)
            .iter()
            .any(|r| r["webhook_id"] == id.as_str() && r["verified"] == true)
    })
    .await;
    wait_for("its status", WAIT, async || {
        let page = get(
            &daemon,
            &daemon.key,
            "/v1/webhook-endpoints/app/deliveries?status=delivered",
        )
        .await;
        page["deliveries"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["id"] == id.as_str()))
    })
    .await;
    // Only the filtered kind was ever queued.
    let all = get(&daemon, &daemon.key, "/v1/webhook-endpoints/app/deliveries").await;
    assert!(
        all["deliveries"]
            .as_array()
            .expect("list")
            .iter()
            .all(|d| d["kind"] == "message.accepted"),
        "{all}"
    );
    // Another organization sees none of it.
    let south = daemon.key_for("south").await;
    let other = daemon
        .http
        .get(daemon.url("/v1/webhook-endpoints/app/deliveries"))
        .bearer_auth(&south)
        .send()
        .await
        .expect("GET");
    assert_eq!(other.status(), 404);
    daemon.stop().await;
}
both_databases!(
    dead_letters_are_listed_and_retried,
    super::dead_letters_are_listed_and_retried
);

async fn rotation_signs_with_both_secrets(backend: Backend) {
    let db = TestDb::new(backend).await;
    let port = Reserved::new();
    let mut daemon = TestDaemon::start(config(&db)).await;
    let url = format!("http://127.0.0.1:{}/hook", port.port());
    let old = create_endpoint(&daemon, &daemon.key, "app", &url).await;
    let rotate = async |body: Value| -> Value {
        let response = daemon
            .http
            .post(daemon.url("/v1/webhook-endpoints/app/rotate"))
            .bearer_auth(&daemon.key)
            .json(&body)
            .send()
            .await
            .expect("rotate");
        assert_eq!(response.status(), 200);
        response.json().await.expect("json")
    };
    let rotated = rotate(json!({})).await;
    let new = rotated["secret"].as_str().expect("new secret").to_string();
    assert_ne!(new, old);
    assert!(rotated["previous_secret_until"].is_string(), "{rotated}");

    // The receiver still knows only the old secret: the overlap keeps it signing.
    let out = db.dir.path().join("received.jsonl");
    let receiver = Receiver::start(&port, &out, &[&old], 0);
    send(&daemon, &daemon.key, 1).await;
    wait_for("a delivery during the overlap", WAIT, async || {
        received(&out).iter().any(|r| r["verified"] == true)
    })
    .await;
    assert!(
        received(&out)
            .iter()
            .all(|r| r["verified"] == true && r["signatures"] == 2),
        "both signatures, the old one verifying"
    );
    drop(receiver);

    // Rotated again with no overlap: only the newest secret signs.
    let newest = rotate(json!({"overlap_secs": 0})).await["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    let out = db.dir.path().join("received2.jsonl");
    let _receiver = Receiver::start(&port, &out, &[&old, &new], 0);
    send(&daemon, &daemon.key, 1).await;
    wait_for("a refused delivery", WAIT, async || {
        received(&out).iter().any(|r| r["verified"] == false)
    })
    .await;
    assert!(received(&out).iter().all(|r| r["verified"] == false));
    drop(_receiver);
    let _receiver = Receiver::start(&port, &out, &[&newest], 0);
    wait_for(
        "the retried delivery, signed by the newest secret",
        WAIT,
        async || {
            received(&out)
                .iter()
                .any(|r| r["verified"] == true && r["signatures"] == 1)
        },
    )
    .await;
    daemon.stop().await;
}
both_databases!(
    a_rotated_secret_signs_alongside_the_old_one,
    super::rotation_signs_with_both_secrets
);
