//! Pausing a channel or a connector, on SQLite and PostgreSQL: its deliveries wait (`queued`,
//! no attempt spent, not picked up by the sweeper) and are delivered after the resume; the
//! state shows at `GET /v1/channels`; every pause and resume is audited. Also the HL7
//! reprocess endpoints: a message refused by configuration is applied after the fix.

mod common;

use std::time::Duration;

use common::wait::wait_for;
use common::{Backend, TestDaemon, TestDb};
use serde_json::{Value, json};
use switchboard::queue::pause::Routes;
use switchboard::queue::sweeper;

const WAIT: Duration = Duration::from_secs(30);

async fn post(daemon: &TestDaemon, path: &str, body: Option<Value>) -> Value {
    let (status, answer) = daemon.request(&daemon.key, "POST", path, body).await;
    assert_eq!(status, 200, "POST {path}: {answer:#}");
    answer
}

async fn send(daemon: &TestDaemon, channel: &str, address: &str) -> (String, String) {
    let created: Value = daemon
        .post_message(json!({"body": "Your results are ready",
            "recipients": [{"address": address, "channel": channel}]}))
        .await
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("message id").to_string();
    let delivery = created["deliveries"][0]["id"]
        .as_str()
        .expect("delivery id")
        .to_string();
    (id, delivery)
}

/// Whether a worker got the delivery's job and set it aside (no job pending any more).
async fn held(daemon: &TestDaemon, delivery_id: &str) -> bool {
    let (enqueued_at,): (Option<i64>,) = switchboard::store::on_db!(
        daemon.core.store.db(),
        |pool| sqlx::query_as("SELECT enqueued_at FROM deliveries WHERE id = $1")
            .bind(delivery_id)
            .fetch_one(pool)
            .await
    )
    .expect("delivery");
    enqueued_at.is_none()
}

/// Sends probes on `channel` until one is held: the daemon has seen a pause made elsewhere
/// (it reads the pause table at most `PAUSE_TTL` after a change). Probes sent before that
/// are delivered. The held probe's (message id, delivery id).
async fn first_held(daemon: &TestDaemon, channel: &str, address: &str) -> (String, String) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon never held a {channel} delivery"
        );
        let (message_id, delivery_id) = send(daemon, channel, address).await;
        let held_now = common::wait::wait_until("the probe held or delivered", WAIT, async || {
            if held(daemon, &delivery_id).await {
                return Some(true);
            }
            let status = delivery(daemon, &message_id).await["status"].clone();
            common::is_terminal(status.as_str().unwrap_or_default()).then_some(false)
        })
        .await;
        if held_now {
            return (message_id, delivery_id);
        }
    }
}

async fn delivery(daemon: &TestDaemon, message_id: &str) -> Value {
    daemon.get_json(&format!("/v1/messages/{message_id}")).await["deliveries"][0].clone()
}

fn channel<'v>(view: &'v Value, name: &str) -> &'v Value {
    view["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .find(|c| c["channel"] == name)
        .unwrap_or_else(|| panic!("channel {name} listed: {view:#}"))
}

async fn audited(daemon: &TestDaemon, action: &str) -> usize {
    daemon
        .core
        .store
        .audit()
        .entries(&daemon.organization_id, 1000)
        .await
        .expect("audit")
        .iter()
        .filter(|r| r.action == action)
        .count()
}

async fn paused_deliveries_wait_and_go_on_resume(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config = db.config();
    let mut daemon = TestDaemon::start(config.clone()).await;

    let paused = post(
        &daemon,
        "/v1/channels/fax/pause",
        Some(json!({"reason": "provider outage"})),
    )
    .await;
    assert_eq!(
        (&paused["paused"], &paused["changed"]),
        (&json!(true), &json!(true))
    );
    let again = post(&daemon, "/v1/channels/fax/pause", None).await;
    assert_eq!(again["changed"], false, "paused already: {again:#}");

    let view = daemon.get_json("/v1/channels").await;
    let fax = channel(&view, "fax");
    assert_eq!(fax["state"], "paused", "{view:#}");
    assert_eq!(fax["paused"]["reason"], "provider outage");
    assert!(
        fax["paused"]["paused_by"]
            .as_str()
            .is_some_and(|by| by.starts_with("api_key:")),
        "{fax:#}"
    );
    assert_eq!(channel(&view, "sms")["state"], "ok");

    // A fax accepted while paused: its job comes, the worker sets it aside unclaimed.
    let (fax_message, fax_delivery) = send(&daemon, "fax", "+14155550100").await;
    wait_for("the paused fax set aside", WAIT, async || {
        held(&daemon, &fax_delivery).await
    })
    .await;
    // Another channel is not held.
    let (sms_message, _) = send(&daemon, "sms", "+14155550101").await;
    daemon.wait_terminal(&sms_message, WAIT).await;
    // Nor does a sweep pass take it up, even long overdue for one.
    switchboard::store::on_db!(daemon.core.store.db(), |pool| sqlx::query(
        "UPDATE deliveries SET created_at = created_at - 3600000 WHERE id = $1"
    )
    .bind(&fax_delivery)
    .execute(pool)
    .await
    .map(|_| ()))
    .expect("age the delivery");
    let swept = sweeper::sweep_once(
        &daemon.core.store,
        &daemon.core.queue,
        Duration::from_secs(60),
        &Routes::of(&config),
    )
    .await
    .expect("sweep");
    assert_eq!(swept, 0, "a paused channel's delivery is not swept");
    let waiting = delivery(&daemon, &fax_message).await;
    assert_eq!(
        (&waiting["status"], &waiting["attempts"]),
        (&json!("queued"), &json!(0)),
        "{waiting:#}"
    );
    let view = daemon.get_json("/v1/channels").await;
    assert_eq!(channel(&view, "fax")["queue_depth"], 1, "{view:#}");
    assert!(channel(&view, "fax")["oldest_waiting_secs"].as_i64() >= Some(3600));

    let resumed = post(&daemon, "/v1/channels/fax/resume", None).await;
    assert_eq!(
        (&resumed["paused"], &resumed["enqueued"]),
        (&json!(false), &json!(1)),
        "{resumed:#}"
    );
    let done = daemon.wait_terminal(&fax_message, WAIT).await;
    assert_eq!(done["deliveries"][0]["status"], "delivered", "{done:#}");
    assert_eq!(
        done["deliveries"][0]["attempts"], 1,
        "one attempt, after the resume"
    );
    assert_eq!(
        channel(&daemon.get_json("/v1/channels").await, "fax")["state"],
        "ok"
    );

    // A connector's pause holds every channel routed to it.
    post(&daemon, "/v1/connectors/outbox/pause", None).await;
    let view = daemon.get_json("/v1/channels").await;
    assert_eq!(channel(&view, "sms")["state"], "paused", "{view:#}");
    assert_eq!(channel(&view, "sms")["paused"]["kind"], "connector");
    let outbox = view["connectors"]
        .as_array()
        .expect("connectors")
        .iter()
        .find(|c| c["name"] == "outbox")
        .expect("outbox listed");
    assert_eq!(outbox["state"], "paused", "{view:#}");
    let (sms_message, sms_delivery) = send(&daemon, "sms", "+14155550102").await;
    wait_for("the sms set aside", WAIT, async || {
        held(&daemon, &sms_delivery).await
    })
    .await;
    let waiting = delivery(&daemon, &sms_message).await;
    assert_eq!(
        (&waiting["status"], &waiting["attempts"]),
        (&json!("queued"), &json!(0))
    );
    post(&daemon, "/v1/connectors/outbox/resume", None).await;
    let done = daemon.wait_terminal(&sms_message, WAIT).await;
    assert_eq!(done["deliveries"][0]["status"], "delivered", "{done:#}");

    assert_eq!(
        audited(&daemon, "channel_paused").await,
        2,
        "each pause call"
    );
    assert_eq!(audited(&daemon, "channel_resumed").await, 1);
    assert_eq!(audited(&daemon, "connector_paused").await, 1);
    assert_eq!(audited(&daemon, "connector_resumed").await, 1);

    // Unknown names are refused, naming the parameter; a key without admin cannot pause.
    let (status, problem) = daemon
        .request(&daemon.key, "POST", "/v1/channels/pigeon/pause", None)
        .await;
    assert_eq!(status, 422, "{problem:#}");
    assert_eq!(problem["errors"][0]["parameter"], "channel");
    let (status, _) = daemon
        .request(&daemon.key, "POST", "/v1/connectors/nosuch/pause", None)
        .await;
    assert_eq!(status, 422);
    daemon.stop().await;
}
both_databases!(
    paused_deliveries_wait_and_go_on_resume,
    super::paused_deliveries_wait_and_go_on_resume
);

/// The daemons of a fleet share the pause: one pauses, the other's workers hold.
async fn a_pause_holds_the_whole_fleet(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config = db.config();
    let mut first = TestDaemon::start(config.clone()).await;
    let mut second = TestDaemon::start(config.clone()).await;
    post(&second, "/v1/channels/email/pause", None).await;
    // Only the first daemon works from here on, so what is held, it held: it reads the pause
    // table at most PAUSE_TTL after the other daemon changed it.
    second.stop().await;
    let mut waiting = vec![first_held(&first, "email", "probe@example.org").await];
    for i in 0..4 {
        waiting.push(send(&first, "email", &format!("p{i}@example.org")).await);
    }
    for (_, delivery_id) in &waiting {
        wait_for("the email set aside", WAIT, async || {
            held(&first, delivery_id).await
        })
        .await;
    }
    for (message_id, _) in &waiting {
        let view = delivery(&first, message_id).await;
        assert_eq!(
            (&view["status"], &view["attempts"]),
            (&json!("queued"), &json!(0))
        );
    }
    post(&first, "/v1/channels/email/resume", None).await;
    for (message_id, _) in &waiting {
        let done = first.wait_terminal(message_id, WAIT).await;
        assert_eq!(done["deliveries"][0]["status"], "delivered", "{done:#}");
    }
    first.stop().await;
}
both_databases!(
    a_pause_holds_the_whole_fleet,
    super::a_pause_holds_the_whole_fleet
);

fn adt(control: &str, mrn: &str, family: &str) -> String {
    format!(
        "MSH|^~\\&|EHR|CLINIC|SB|SB|20240101120000||ADT^A04|{control}|T|2.5.1\rEVN|A04|20240101\rPID|1||{mrn}^^^CLINIC^MR||{family}^PAT||19700101|F|||||(217)555-0100^PRN^CP\r"
    )
}

/// An HL7 message refused by configuration stays archived; after the fix (a restart with
/// the new configuration) the reprocess endpoints apply it, audited.
async fn hl7_reprocessed_after_a_fix(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.hl7.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.hl7.organization = "north".into();
    config.hl7.processing_ids = vec!["P".into()];
    let mut daemon = TestDaemon::start(config.clone()).await;
    let addr = daemon
        .daemon
        .as_ref()
        .and_then(|d| d.hl7_addr)
        .expect("listener");
    let acks = switchboard::hl7::client::send(
        &addr.to_string(),
        &[
            adt("T1", "MRN-T1", "Training"),
            adt("T2", "MRN-T2", "Second"),
        ],
        Duration::from_secs(10),
    )
    .await
    .expect("send");
    assert!(acks.iter().all(|(code, _)| code == "AR"), "{acks:?}");
    let list = daemon.get_json("/v1/hl7/messages?status=rejected").await;
    // Oldest (T1) first.
    let ids: Vec<String> = list["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .rev()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{list:#}");
    // Reprocessing without the fix records the same outcome.
    let (status, same) = daemon
        .request(
            &daemon.key,
            "POST",
            &format!("/v1/hl7/messages/{}/reprocess", ids[0]),
            None,
        )
        .await;
    assert_eq!(status, 200, "{same:#}");
    assert_eq!(same["messages"][0]["status"], "rejected");
    daemon.stop().await;

    config.hl7.processing_ids = vec!["P".into(), "T".into()];
    let mut daemon = TestDaemon::start(config.clone()).await;
    let (status, one) = daemon
        .request(
            &daemon.key,
            "POST",
            &format!("/v1/hl7/messages/{}/reprocess", ids[0]),
            None,
        )
        .await;
    assert_eq!(status, 200, "{one:#}");
    assert_eq!(one["messages"][0]["status"], "applied", "{one:#}");
    assert_eq!(
        daemon.get_json("/v1/patients/MRN-T1").await["family_name"],
        "Training"
    );
    // The rest in bulk, by status and range; a repeat finds none left.
    let (status, bulk) = daemon
        .request(
            &daemon.key,
            "POST",
            "/v1/hl7/messages/reprocess",
            Some(json!({"status": "rejected", "since": "2020-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, 200, "{bulk:#}");
    assert_eq!(bulk["reprocessed"], 1, "{bulk:#}");
    assert_eq!(bulk["messages"][0]["status"], "applied");
    assert_eq!(
        daemon.get_json("/v1/patients/MRN-T2").await["family_name"],
        "Second"
    );
    let (_, none) = daemon
        .request(
            &daemon.key,
            "POST",
            "/v1/hl7/messages/reprocess",
            Some(json!({"status": "rejected"})),
        )
        .await;
    assert_eq!(none["reprocessed"], 0);
    // Another organization's message is not found; a bad filter names its field.
    let other = daemon.key_for("south").await;
    let (status, _) = daemon
        .request(
            &other,
            "POST",
            &format!("/v1/hl7/messages/{}/reprocess", ids[1]),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, problem) = daemon
        .request(
            &daemon.key,
            "POST",
            "/v1/hl7/messages/reprocess",
            Some(json!({"status": "lost", "until": "yesterday"})),
        )
        .await;
    assert_eq!(status, 422, "{problem:#}");
    let at: Vec<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["pointer"].as_str())
        .collect();
    assert_eq!(at, ["/status", "/until"]);
    // Three reprocess runs (one by id before the fix, one after, one in bulk) are audited.
    assert_eq!(audited(&daemon, "hl7_reprocessed").await, 3);
    daemon.stop().await;

    // A daemon without the listener has no intake to reprocess with.
    config.hl7.listen = None;
    let mut daemon = TestDaemon::start(config).await;
    let (status, problem) = daemon
        .request(
            &daemon.key,
            "POST",
            "/v1/hl7/messages/reprocess",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 409, "{problem:#}");
    assert_eq!(problem["code"], "reprocess_unavailable");
    daemon.stop().await;
}
both_databases!(
    hl7_reprocessed_after_a_fix,
    super::hl7_reprocessed_after_a_fix
);

fn cli(db: &TestDb, args: &[&str]) -> std::process::Output {
    let config = db.dir.path().join("switchboard.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"{}\"\n",
            db.dir.path().display(),
            db.url
        ),
    )
    .expect("config");
    std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .output()
        .expect("switchboard")
}

/// `switchboard channels pause|list|resume` change what the running daemon does.
async fn cli_pauses_and_resumes(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut daemon = TestDaemon::start(db.config()).await;
    let out = cli(
        &db,
        &["channels", "pause", "sms", "--reason", "carrier outage"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&db, &["--json", "channels", "list", "--org", "north"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).expect("json");
    let sms = channel(&listed, "sms");
    assert_eq!(sms["state"], "paused", "{listed:#}");
    assert_eq!(sms["paused"]["paused_by"], "cli");
    assert_eq!(
        channel(&daemon.get_json("/v1/channels").await, "sms")["state"],
        "paused"
    );
    // The daemon reads the pause table at most PAUSE_TTL after another process changed it.
    let (message, _) = first_held(&daemon, "sms", "+14155550109").await;
    let out = cli(&db, &["channels", "resume", "sms"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 waiting deliveries enqueued"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let done = daemon.wait_terminal(&message, WAIT).await;
    assert_eq!(done["deliveries"][0]["status"], "delivered", "{done:#}");
    assert_eq!(audited(&daemon, "channel_paused").await, 1);
    assert_eq!(audited(&daemon, "channel_resumed").await, 1);
    daemon.stop().await;
}
both_databases!(cli_pauses_and_resumes, super::cli_pauses_and_resumes);
