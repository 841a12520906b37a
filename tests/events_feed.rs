//! The events feed (`GET /v1/events`) as a follower sees it: paging with `next_after` never
//! steps past an event whose transaction commits late (PostgreSQL hands out identity ids at
//! insert time, so a lower id can commit after a higher one).

mod common;

use common::{Backend, TestDaemon, TestDb};
use serde_json::{Value, json};
use sqlx::Connection;

fn ids(page: &Value) -> Vec<i64> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect()
}

async fn insert_event(conn: &mut sqlx::PgConnection, organization_id: &str, kind: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO events (organization_id, kind, subject_id, payload, created_at)
         VALUES ($1, $2, 'test', '{}', 0) RETURNING id",
    )
    .bind(organization_id)
    .bind(kind)
    .fetch_one(conn)
    .await
    .expect("insert event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_is_not_skipped_by_followers() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut daemon = TestDaemon::start(db.config()).await;
    let org = daemon.organization_id.clone();
    let start = daemon.get_json("/v1/events").await;
    let mut cursor = start["next_after"].as_str().expect("cursor").to_string();

    // Transaction A takes the lower id and stays open; B takes a higher id and commits.
    let mut slow = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    let mut quick = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    let mut open = slow.begin().await.expect("begin");
    let late = insert_event(&mut open, &org, "test.late").await;
    let early = insert_event(&mut quick, &org, "test.early").await;
    assert!(late < early, "the open transaction holds the lower id");

    // While A is open the feed does not move past it (B is held back, not handed out early).
    let page = daemon.get_json(&format!("/v1/events?after={cursor}")).await;
    assert!(ids(&page).is_empty(), "held back while A is open: {page}");
    cursor = page["next_after"].as_str().expect("cursor").to_string();

    open.commit().await.expect("commit");
    let page = daemon.get_json(&format!("/v1/events?after={cursor}")).await;
    let mut seen = ids(&page);
    seen.sort_unstable();
    assert_eq!(seen, vec![late, early], "the follower sees both: {page}");

    // A bare id cursor (older followers) still means "events with a larger id".
    let page = daemon.get_json(&format!("/v1/events?after={late}")).await;
    assert_eq!(ids(&page), vec![early]);
    daemon.stop().await;
}

async fn bad_cursors_are_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut daemon = TestDaemon::start(db.config()).await;
    daemon
        .post_message(json!({
            "subject": "Hello",
            "body": "A body.",
            "recipients": [{"address": "+14155550001", "channel": "sms"}],
        }))
        .await;
    let page = daemon.get_json("/v1/events?after=0").await;
    assert!(!ids(&page).is_empty(), "{page}");
    let next = page["next_after"].as_str().expect("cursor").to_string();
    let again = daemon.get_json(&format!("/v1/events?after={next}")).await;
    assert!(
        ids(&again).iter().all(|id| !ids(&page).contains(id)),
        "no event twice"
    );
    let response = daemon
        .http
        .get(daemon.url("/v1/events?after=yesterday"))
        .bearer_auth(&daemon.key)
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    daemon.stop().await;
}
both_databases!(bad_cursors_are_refused, super::bad_cursors_are_refused);

/// A transaction open in another database of the same PostgreSQL cluster (another
/// application, another daemon's test) holds nothing of ours: the feed hands out our committed
/// events regardless. (The horizon used to be the cluster-wide snapshot xmin, so such a
/// transaction held the whole feed back until it ended.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_in_another_database_does_not_hold_the_feed_back() {
    let db = TestDb::new(Backend::Postgres).await;
    let other = TestDb::new(Backend::Postgres).await;
    let mut daemon = TestDaemon::start(db.config()).await;
    let org = daemon.organization_id.clone();
    let start = daemon.get_json("/v1/events").await;
    let cursor = start["next_after"].as_str().expect("cursor").to_string();

    let mut elsewhere = sqlx::PgConnection::connect(&other.url)
        .await
        .expect("connect");
    let mut open = elsewhere.begin().await.expect("begin");
    let _: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
        .fetch_one(&mut *open)
        .await
        .expect("take a transaction id");

    let mut ours = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    let id = insert_event(&mut ours, &org, "test.committed").await;
    let page = daemon.get_json(&format!("/v1/events?after={cursor}")).await;
    assert_eq!(ids(&page), vec![id], "our committed event is final: {page}");
    open.rollback().await.expect("rollback");
    daemon.stop().await;
}
