//! The delivery queue under faults: retries with backoff, dead letters, lost jobs, monotonic
//! status updates — on SQLite and PostgreSQL.

mod common;

use std::time::Duration;

use common::{Backend, TestDaemon, TestDb, count_files, fixtures};
use serde_json::json;
use switchboard::delivery::DeliveryStatus;
use switchboard::messages::MessageContent;
use switchboard::store::{AcceptOutcome, DeliveryUpdate, NewDelivery};

const WAIT: Duration = Duration::from_secs(20);

/// The outbox directory replaced by a plain file: every write fails (a transient error).
fn break_outbox(db: &TestDb) {
    let dir = db.outbox();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::write(&dir, b"not a directory").expect("replace outbox with a file");
}

fn repair_outbox(db: &TestDb) {
    let dir = db.outbox();
    let _ = std::fs::remove_file(&dir);
    std::fs::create_dir_all(&dir).expect("outbox dir");
}

async fn transient_failures_are_retried_then_succeed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    let sms = config.channels.entry("sms".into()).or_default();
    sms.backoff_initial_ms = 1_000;
    sms.max_attempts = 10;
    let mut daemon = TestDaemon::start(config).await;
    break_outbox(&db);
    let created: serde_json::Value = daemon
        .post_message(json!({"body": "Retry me", "recipients": [{"address": "+14155550010", "channel": "sms"}]}))
        .await
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id").to_string();
    // Wait for two failed attempts (their retries recorded: the attempt count alone also
    // counts an attempt still running, which may succeed once the sink works), then let the
    // sink work again.
    let retries_of = |view: &serde_json::Value| {
        view["deliveries"][0]["history"].as_array().map_or(0, |h| {
            h.iter()
                .filter(|e| e["status"] == "retry_scheduled")
                .count()
        })
    };
    let started = std::time::Instant::now();
    loop {
        let view = daemon.get_json(&format!("/v1/messages/{id}")).await;
        if retries_of(&view) >= 2 {
            assert_eq!(view["deliveries"][0]["status"], "sending", "{view:#}");
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "no second failed attempt: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    repair_outbox(&db);
    let view = daemon.wait_terminal(&id, WAIT).await;
    let delivery = &view["deliveries"][0];
    assert_eq!(delivery["status"], "delivered");
    assert!(retries_of(&view) >= 2, "{delivery:#}");
    assert_eq!(count_files(&db.outbox()), 1);
    daemon.stop().await;
}
both_databases!(
    transient_failures_are_retried_then_succeed,
    super::transient_failures_are_retried_then_succeed
);

async fn exhausted_deliveries_are_dead_lettered(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    let fax = config.channels.entry("fax".into()).or_default();
    fax.backoff_initial_ms = 200;
    fax.max_attempts = 2;
    let mut daemon = TestDaemon::start(config).await;
    break_outbox(&db);
    let created: serde_json::Value = daemon
        .post_message(json!({"body": "Never arrives", "recipients": [{"address": "+14155550011", "channel": "fax"}]}))
        .await
        .json()
        .await
        .expect("json");
    let view = daemon
        .wait_terminal(created["id"].as_str().expect("id"), WAIT)
        .await;
    let delivery = &view["deliveries"][0];
    assert_eq!(delivery["status"], "failed");
    assert_eq!(delivery["attempts"], 2);
    assert!(
        delivery["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("gave up after 2 attempts"),
        "{delivery:#}"
    );
    let dead = daemon
        .core
        .store
        .deliveries()
        .dead_letters(None, 10)
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].delivery_id, delivery["id"].as_str().expect("id"));

    // An operator retries it once the fault is fixed: a new delivery of the same message.
    repair_outbox(&db);
    let (retry_id, channel) = daemon
        .core
        .store
        .deliveries()
        .requeue_dead_letter(&dead[0].delivery_id)
        .await
        .expect("requeue");
    daemon
        .core
        .queue
        .push(&channel, std::slice::from_ref(&retry_id), None)
        .await
        .expect("push");
    let view = daemon
        .wait_terminal(created["id"].as_str().expect("id"), WAIT)
        .await;
    let statuses: Vec<&str> = view["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| d["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        statuses,
        ["failed", "delivered"],
        "the failed delivery never moves backwards"
    );
    daemon.stop().await;
}
both_databases!(
    exhausted_deliveries_are_dead_lettered,
    super::exhausted_deliveries_are_dead_lettered
);

/// A message committed but never enqueued (the daemon died between the two) is still sent.
async fn committed_but_unqueued_deliveries_are_swept(backend: Backend) {
    let db = TestDb::new(backend).await;
    let config = db.config();
    let core = switchboard::daemon::Core::open(config.clone())
        .await
        .expect("core");
    let (message_id, delivery_id) = accept_without_job(&core).await;
    core.store.close().await;

    let mut daemon = TestDaemon::start(config).await;
    let view = daemon.wait_terminal(&message_id, WAIT).await;
    assert_eq!(view["deliveries"][0]["status"], "delivered");
    assert!(db.outbox().join(format!("{delivery_id}.json")).exists());
    daemon.stop().await;
}
both_databases!(
    committed_but_unqueued_deliveries_are_swept,
    super::committed_but_unqueued_deliveries_are_swept
);

/// A fleet sweeps once per tick: the daemon holding the sweeper's lease; the others take over
/// when it gives the lease up (shutdown) or stops renewing it (dies), and the one taking over
/// runs the start-up recovery first.
async fn one_sweeper_across_a_fleet(backend: Backend) {
    use switchboard::queue::sweeper::{Sweeper, Tick};
    let db = TestDb::new(backend).await;
    let config = db.config();
    let core = switchboard::daemon::Core::open(config.clone())
        .await
        .expect("core");
    accept_without_job(&core).await;
    let interval = Duration::from_secs(1);
    let sweeper = |holder: &str| {
        Sweeper::new(
            core.store.clone(),
            core.queue.clone(),
            interval,
            Duration::from_secs(300),
            switchboard::queue::pause::Routes::of(&config),
            holder.to_string(),
        )
    };
    let (mut a, mut b) = (sweeper("gw-a:1"), sweeper("gw-b:1"));
    let taken = a.tick().await.expect("tick");
    assert_eq!(
        taken,
        Tick::Swept {
            recovered: 1,
            swept: 0
        },
        "the first holder recovers the queued delivery"
    );
    assert_eq!(b.tick().await.expect("tick"), Tick::Elsewhere);
    assert_eq!(
        a.tick().await.expect("tick"),
        Tick::Swept {
            recovered: 0,
            swept: 0
        },
        "the holder renews; no second recovery"
    );
    a.release().await;
    assert_eq!(
        b.tick().await.expect("tick"),
        Tick::Swept {
            recovered: 1,
            swept: 0
        },
        "taken over at once after a release, with a recovery pass"
    );
    assert_eq!(a.tick().await.expect("tick"), Tick::Elsewhere);
    // The holder dies without releasing: another takes over once the lease's two intervals
    // pass unrenewed.
    drop(b);
    let died = std::time::Instant::now();
    common::wait::wait_for(
        "the lease taken over",
        Duration::from_secs(10),
        async || a.tick().await.expect("tick") != Tick::Elsewhere,
    )
    .await;
    assert!(
        died.elapsed() >= interval,
        "not taken while the dead holder's lease ran"
    );
    core.store.close().await;
}
both_databases!(
    one_sweeper_across_a_fleet,
    super::one_sweeper_across_a_fleet
);

/// A message's record is read as one snapshot: while deliveries move, every read shows each
/// delivery in the status its own history last applied (the message view once read the
/// deliveries and their history in two statements, and a worker committing in between showed a
/// delivery one step behind its history).
async fn a_message_record_is_one_snapshot(backend: Backend) {
    let db = TestDb::new(backend).await;
    let core = switchboard::daemon::Core::open(db.config())
        .await
        .expect("core");
    let deliveries = sms_deliveries(30);
    let (org_id, message_id) = accept_in_store(&core, "Moving", &deliveries).await;

    let store = core.store.clone();
    let ids: Vec<String> = deliveries.iter().map(|d| d.id.clone()).collect();
    let writer = tokio::spawn(async move {
        for id in &ids {
            for status in [
                DeliveryStatus::Sending,
                DeliveryStatus::Sent,
                DeliveryStatus::Delivered,
            ] {
                let applied = store
                    .deliveries()
                    .update(id, &DeliveryUpdate::new(status, "test:writer"))
                    .await
                    .expect("update");
                assert!(applied, "{status:?}");
            }
        }
    });
    let mut reads = 0;
    loop {
        let done = writer.is_finished();
        let record = core
            .store
            .messages()
            .record(&org_id, &message_id)
            .await
            .expect("record");
        reads += 1;
        assert_eq!(record.deliveries.len(), 30);
        for delivery in &record.deliveries {
            let last_applied = record
                .history
                .iter()
                .rfind(|e| e.delivery_id == delivery.id && e.applied)
                .map(|e| e.status.as_str());
            assert_eq!(
                last_applied,
                Some(delivery.status.as_str()),
                "read {reads}: delivery {} shows {} but its history says {last_applied:?}",
                delivery.id,
                delivery.status
            );
        }
        if done {
            break;
        }
    }
    writer.await.expect("writer");
    assert!(reads > 1, "the reads never overlapped the writer");
    core.store.close().await;
}
both_databases!(
    a_message_record_is_one_snapshot,
    super::a_message_record_is_one_snapshot
);

/// A batch of reports (what the group commit hands the store) applies exactly as the same
/// reports one after another: moved with the provider's id, refused by the state machine but
/// its provider id remembered, refused for another connector, and for no such delivery.
async fn a_batch_of_reports_applies_as_one_by_one(backend: Backend) {
    let db = TestDb::new(backend).await;
    let core = switchboard::daemon::Core::open(db.config())
        .await
        .expect("core");
    let deliveries = sms_deliveries(4);
    let (org_id, message_id) = accept_in_store(&core, "Batch", &deliveries).await;
    let id = |n: usize| deliveries[n].id.clone();
    let deliveries_store = core.store.deliveries();
    for n in 0..4 {
        let mut sending = DeliveryUpdate::new(DeliveryStatus::Sending, "test:claim");
        sending.connector = Some("loop".into());
        assert!(
            deliveries_store
                .update(&id(n), &sending)
                .await
                .expect("sending")
        );
    }
    let with_ref = |status: DeliveryStatus, reference: &str| {
        let mut update = DeliveryUpdate::new(status, "test:batch");
        update.provider_ref = Some(reference.into());
        update
    };
    let mut wrong_connector = with_ref(DeliveryStatus::Sent, "SM-3");
    wrong_connector.expect_connector = Some("other".into());
    let mut refused = with_ref(DeliveryStatus::Queued, "SM-2");
    refused.reason = Some("a late queued report".into());
    let batch = vec![
        (id(0), with_ref(DeliveryStatus::Sent, "SM-0")),
        (id(1), with_ref(DeliveryStatus::Delivered, "SM-1")),
        (id(2), refused),
        (id(3), wrong_connector),
        (
            "dlv_nosuchdelivery".to_string(),
            with_ref(DeliveryStatus::Sent, "SM-X"),
        ),
    ];
    let applied = deliveries_store.update_many(&batch).await.expect("batch");
    assert_eq!(applied, [true, true, false, false, false]);

    let record = core
        .store
        .messages()
        .record(&org_id, &message_id)
        .await
        .expect("record");
    let row = |n: usize| {
        record
            .deliveries
            .iter()
            .find(|d| d.id == id(n))
            .expect("delivery")
    };
    let shown = |n: usize| {
        let d = row(n);
        (
            d.status.clone(),
            d.provider_ref.clone(),
            d.connector.clone(),
        )
    };
    assert_eq!(
        shown(0),
        ("sent".into(), Some("SM-0".into()), Some("loop".into()))
    );
    assert_eq!(
        shown(1),
        ("delivered".into(), Some("SM-1".into()), Some("loop".into()))
    );
    // Not moved, but the provider's id is kept where none was known.
    assert_eq!(
        shown(2),
        ("sending".into(), Some("SM-2".into()), Some("loop".into()))
    );
    assert_eq!(row(2).reason, None, "a refused report changes no reason");
    assert_eq!(
        shown(3),
        ("sending".into(), Some("SM-3".into()), Some("loop".into()))
    );
    let history: Vec<(String, String, bool)> = record
        .history
        .iter()
        .filter(|e| e.source == "test:batch")
        .map(|e| {
            let n = (0..4).find(|&n| e.delivery_id == id(n)).expect("known");
            (format!("{n}"), e.status.clone(), e.applied)
        })
        .collect();
    let mut history = history;
    history.sort();
    assert_eq!(
        history,
        [
            ("0".into(), "sent".into(), true),
            ("1".into(), "delivered".into(), true),
            ("2".into(), "queued".into(), false),
            ("3".into(), "sent".into(), false),
        ]
    );
    core.store.close().await;
}
both_databases!(
    a_batch_of_reports_applies_as_one_by_one,
    super::a_batch_of_reports_applies_as_one_by_one
);

/// `n` SMS deliveries to distinct numbers, three attempts each.
fn sms_deliveries(n: usize) -> Vec<NewDelivery> {
    (0..n)
        .map(|n| fixtures::delivery("sms", &format!("+1415555{n:04}")))
        .collect()
}

/// A message accepted and committed whose job was never pushed (the daemon died in between).
async fn accept_without_job(core: &switchboard::daemon::Core) -> (String, String) {
    let delivery = fixtures::delivery("email", "x@example.org");
    let delivery_id = delivery.id.clone();
    let (_, message_id) = accept_in_store(core, "Orphan", &[delivery]).await;
    (message_id, delivery_id)
}

/// Records a message of organization "north" with `deliveries` straight in the store (no job
/// pushed); returns the organization's id and the message's id.
async fn accept_in_store(
    core: &switchboard::daemon::Core,
    body: &str,
    deliveries: &[NewDelivery],
) -> (String, String) {
    let org = core
        .store
        .organizations()
        .ensure("north", "North")
        .await
        .expect("org");
    let mut message = fixtures::outbound_message(&org.id, Vec::new());
    message.content = MessageContent {
        subject: None,
        body: body.into(),
    }
    .seal(&core.keyring, &message.id)
    .expect("seal");
    let outcome = core
        .store
        .messages()
        .accept(&message, deliveries, None)
        .await
        .expect("accept");
    assert_eq!(outcome, AcceptOutcome::Created);
    (org.id, message.id)
}

/// Late and duplicate reports are recorded but never move a delivery backwards.
async fn status_updates_are_monotonic(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut daemon = TestDaemon::start(db.config()).await;
    let created: serde_json::Value = daemon
        .post_message(
            json!({"body": "x", "recipients": [{"address": "+14155550012", "channel": "sms"}]}),
        )
        .await
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id");
    daemon.wait_terminal(id, WAIT).await;
    let delivery_id = created["deliveries"][0]["id"].as_str().expect("delivery");
    let store = &daemon.core.store;
    for status in [
        DeliveryStatus::Sent,
        DeliveryStatus::Failed,
        DeliveryStatus::Delivered,
    ] {
        let applied = store
            .deliveries()
            .update(delivery_id, &DeliveryUpdate::new(status, "test:late"))
            .await
            .expect("update");
        assert!(!applied, "{status:?} must not apply after delivered");
    }
    let view = daemon.get_json(&format!("/v1/messages/{id}")).await;
    let delivery = &view["deliveries"][0];
    assert_eq!(delivery["status"], "delivered");
    let late: Vec<(&str, bool)> = delivery["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|h| h["source"] == "test:late")
        .map(|h| {
            (
                h["status"].as_str().unwrap_or(""),
                h["applied"].as_bool().unwrap_or(true),
            )
        })
        .collect();
    assert_eq!(
        late,
        [("sent", false), ("failed", false), ("delivered", false)]
    );
    daemon.stop().await;
}
both_databases!(
    status_updates_are_monotonic,
    super::status_updates_are_monotonic
);

/// Bodies are sealed at rest: the raw database never holds the plaintext.
async fn bodies_are_encrypted_at_rest(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut daemon = TestDaemon::start(db.config()).await;
    let secret = "Patient Zebediah has condition X";
    let created: serde_json::Value = daemon
        .post_message(json!({"subject": "Zebediah", "body": secret, "recipients": [{"address": "+14155550013", "channel": "sms"}]}))
        .await
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id");
    let row = daemon
        .core
        .store
        .messages()
        .get(&daemon.organization_id, id)
        .await
        .expect("row");
    assert!(!String::from_utf8_lossy(&row.content).contains("Zebediah"));
    assert!(row.content.starts_with(b"SB1"));
    daemon.stop().await;
    if backend == Backend::Sqlite {
        let file = std::fs::read(db.dir.path().join("switchboard.db")).expect("db file");
        let wal = std::fs::read(db.dir.path().join("switchboard.db-wal")).unwrap_or_default();
        for bytes in [file, wal] {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
        }
    }
}
both_databases!(
    bodies_are_encrypted_at_rest,
    super::bodies_are_encrypted_at_rest
);

/// apalis acks a worker's finished jobs in one statement over a JSON array of ids. On SQLite
/// its planner must look each acked id up by the unique index: walking every job the worker
/// ever locked (as it did with no statistics) parsed the batch's JSON once per job, so acks
/// slowed as the table grew and that parsing was the queue's largest cost under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_acks_find_jobs_by_id() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut daemon = TestDaemon::start(db.config()).await;
    let switchboard::store::Db::Sqlite(pool) = daemon.core.store.db() else {
        panic!("a SQLite store");
    };
    // The statement of apalis-sqlite's `queries/task/ack.sql`.
    let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
        "EXPLAIN QUERY PLAN
         WITH j AS (SELECT value ->> 'task_id' AS task_id, value ->> 'attempt' AS attempt,
                           value ->> 'result' AS result, value ->> 'status' AS status
                      FROM json_each(?1))
         UPDATE Jobs SET status = j.status, attempts = j.attempt, last_result = j.result,
                         done_at = strftime('%s', 'now')
           FROM j WHERE Jobs.id = j.task_id AND Jobs.lock_by = ?2",
    )
    .bind("[]")
    .bind("worker")
    .fetch_all(pool)
    .await
    .expect("plan");
    let steps: Vec<&str> = plan.iter().map(|(_, _, _, step)| step.as_str()).collect();
    assert!(
        steps.iter().any(|s| s.contains("(id=?)")),
        "acked jobs are found by id: {steps:?}"
    );
    assert!(
        !steps.iter().any(|s| s.contains("lock_by=?")),
        "not by walking the worker's jobs: {steps:?}"
    );
    daemon.stop().await;
}

/// Forty deliveries of one message committed without jobs (the daemon died before pushing):
/// the start-up recovery wakes them with two jobs (32 and 8), not forty, and a daemon whose SMS
/// channel sends two at a time delivers each of them once.
async fn deliveries_woken_together_share_jobs(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.channels.entry("sms".into()).or_default().concurrency = 2;
    let core = switchboard::daemon::Core::open(config.clone())
        .await
        .expect("core");
    let deliveries = sms_deliveries(40);
    let (_, message_id) = accept_in_store(&core, "Forty", &deliveries).await;
    let pushed = switchboard::queue::sweeper::recover(
        &core.store,
        &core.queue,
        switchboard::store::now_ms() + 1,
    )
    .await
    .expect("recover");
    assert_eq!(pushed, 40);
    let queue = "switchboard.deliver.sms";
    let jobs: i64 = match core.store.db() {
        switchboard::store::Db::Sqlite(pool) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM Jobs WHERE job_type = $1")
                .bind(queue)
                .fetch_one(pool)
                .await
        }
        switchboard::store::Db::Postgres(pool) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM apalis.jobs WHERE job_type = $1")
                .bind(queue)
                .fetch_one(pool)
                .await
        }
    }
    .expect("count jobs");
    assert_eq!(jobs, 2, "one job per 32 deliveries");
    core.store.close().await;

    let mut daemon = TestDaemon::start(config).await;
    let view = daemon.wait_terminal(&message_id, WAIT).await;
    let statuses: Vec<&str> = view["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| d["status"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(statuses, ["delivered"; 40], "{view:#}");
    assert_eq!(count_files(&db.outbox()), 40);
    daemon.stop().await;
}
both_databases!(
    deliveries_woken_together_share_jobs,
    super::deliveries_woken_together_share_jobs
);

/// A job queue slow to take pushes (its table locked by another session) does not hold up
/// accepts: the 201 comes back while the lock is held, and the message is delivered once the
/// queue takes jobs again. PostgreSQL only: there the queue's table can be locked from
/// outside without locking the store's.
#[tokio::test]
async fn a_slow_job_queue_does_not_hold_up_accepts() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut daemon = TestDaemon::start(db.config()).await;
    let locker = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let mut lock = locker.begin().await.expect("begin");
    sqlx::query("LOCK TABLE apalis.jobs IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock the queue's table");
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        daemon.post_message(
            json!({"body": "Queue is slow", "recipients": [{"address": "+14155550011", "channel": "sms"}]}),
        ),
    )
    .await
    .expect("answered while the queue's table is locked");
    assert_eq!(response.status(), 201);
    let created: serde_json::Value = response.json().await.expect("json");
    let id = created["id"].as_str().expect("id").to_string();
    lock.rollback().await.expect("unlock");
    let view = daemon.wait_terminal(&id, WAIT).await;
    assert_eq!(view["deliveries"][0]["status"], "delivered", "{view:#}");
    assert_eq!(count_files(&db.outbox()), 1);
    locker.close().await;
    daemon.stop().await;
}
