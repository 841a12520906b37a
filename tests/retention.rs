//! Retention: the maintenance pass prunes each kind past its age, in batches, and keeps what
//! must stay — recent rows, events a webhook endpoint has not passed yet, inbound items still
//! being worked, errors in the HL7 archive, audit rows younger than six years.

mod common;

use std::time::Duration;

use common::{Backend, TestDb};
use switchboard::config::{Config, RetentionConfig};
use switchboard::retention::Retention;
use switchboard::store::{EventCursor, Prunable, Store, now_ms};

const DAY: i64 = 24 * 60 * 60 * 1000;

async fn exec(store: &Store, sql: &'static str, binds: &[&str], at: i64) {
    switchboard::on_db!(store.db(), |pool| {
        let mut q = sqlx::query(sql);
        for b in binds {
            q = q.bind(*b);
        }
        q.bind(at).execute(pool).await.map(|_| ())
    })
    .expect(sql);
}

async fn count(store: &Store, sql: &'static str) -> i64 {
    switchboard::on_db!(store.db(), |pool| sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await)
    .expect(sql)
}

async fn prunes_by_age_and_keeps_what_must_stay(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url, 4, false).await.expect("connect");
    store.migrate().await.expect("migrate");
    let org = store
        .organizations()
        .ensure("north", "North")
        .await
        .expect("organization")
        .id;
    let now = now_ms();
    let old = now - 500 * DAY;
    let recent = now - DAY;

    // The event feed: three old events (one statement each, so each its own transaction),
    // one recent. An endpoint has passed only the first two.
    for at in [old, old, old, recent] {
        exec(
            &store,
            "INSERT INTO events (organization_id, kind, subject_id, payload, created_at)
             VALUES ($1, 'message.accepted', 'msg_x', '{}', $2)",
            &[&org],
            at,
        )
        .await;
    }
    let positions: Vec<(i64, i64)> = switchboard::on_db!(store.db(), |pool| sqlx::query_as(
        "SELECT tx, id FROM events ORDER BY tx, id"
    )
    .fetch_all(pool)
    .await)
    .expect("events");
    let (tx, id) = positions[1];
    store
        .webhooks()
        .put_endpoint(
            &org,
            "app",
            "https://app.example/hooks",
            "*",
            b"sealed",
            EventCursor { tx, id, floor: 0 },
        )
        .await
        .expect("endpoint");

    for at in [old, recent] {
        exec(
            &store,
            "INSERT INTO delivery_events (organization_id, delivery_id, status, applied, source, created_at)
             VALUES ($1, 'dlv_x', 'sent', TRUE, 'worker', $2)",
            &[&org],
            at,
        )
        .await;
    }
    for (key, at) in [("k-old", old), ("k-new", recent)] {
        exec(
            &store,
            "INSERT INTO idempotency_keys (organization_id, key, request_hash, message_id, created_at)
             VALUES ($1, $2, 'h', 'msg_x', $3)",
            &[&org, key],
            at,
        )
        .await;
    }
    // HL7: an old applied message goes; an old error stays for the operator; a recent one stays.
    for (id, status, at) in [
        ("h1", "applied", old),
        ("h2", "error", old),
        ("h3", "applied", recent),
    ] {
        exec(
            &store,
            "INSERT INTO hl7_messages (id, organization_id, raw, status, received_at)
             VALUES ($2, $1, 'sealed', $3, $4)",
            &[&org, id, status],
            at,
        )
        .await;
    }
    // Inbound: an old filed item loses its raw bytes (the row stays); an old unmatched item
    // (still to be worked) and a recent filed one keep theirs.
    for (id, status, at) in [
        ("in1", "filed", old),
        ("in2", "unmatched", old),
        ("in3", "filed", recent),
    ] {
        exec(
            &store,
            "INSERT INTO inbound_items (id, organization_id, channel, sender, status, raw, created_at, updated_at)
             VALUES ($2, $1, 'sms', '+15005550006', $3, 'sealed-bytes', $4, $4)",
            &[&org, id, status],
            at,
        )
        .await;
    }
    // A received fax's webhook body goes once it was filed; one still waiting keeps it.
    for (id, status, provider_id) in [("fin1", "filed", "f1"), ("fin2", "received", "f2")] {
        exec(
            &store,
            "INSERT INTO fax_inbound (id, provider, direction, provider_id, connector, raw, status,
                not_before, created_at, updated_at)
             VALUES ($1, 'phaxio', 'inbound', $3, 'phaxio', 'sealed-body', $2, $4, $4, $4)",
            &[id, status, provider_id],
            old,
        )
        .await;
    }
    for (id, at) in [("orph1", old), ("orph2", recent)] {
        exec(
            &store,
            "INSERT INTO inbound_orphans (id, channel, sender, reason, raw, created_at)
             VALUES ($1, 'sms', '+15005550006', 'no owner', 'sealed', $2)",
            &[id],
            at,
        )
        .await;
    }
    for (event, at) in [("ev-old", old), ("ev-new", recent)] {
        exec(
            &store,
            "INSERT INTO webhook_events (connector, event_id, created_at) VALUES ('twilio', $1, $2)",
            &[event],
            at,
        )
        .await;
    }
    // Audit: kept six years at least; 3,000 days old goes under `audit_days = 2190`.
    for at in [now - 3000 * DAY, old] {
        exec(
            &store,
            "INSERT INTO audit_events (organization_id, action, actor, created_at)
             VALUES ($1, 'disclosure', 'worker', $2)",
            &[&org],
            at,
        )
        .await;
    }

    let config = RetentionConfig {
        batch_size: 1, // every kind takes several batches
        audit_days: 2190,
        ..RetentionConfig::default()
    };
    let retention = Retention::new(store.clone(), config, "test".into());
    let report = retention.run_once(now, Duration::ZERO).await.expect("pass");

    assert_eq!(report.get(&Prunable::Events), Some(&2), "{report:?}");
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM events").await,
        2,
        "the event the endpoint has not passed, and the recent one"
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM delivery_events").await,
        1
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM idempotency_keys WHERE key = 'k-new'"
        )
        .await,
        1
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM idempotency_keys").await,
        1
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM hl7_messages WHERE id IN ('h2', 'h3')"
        )
        .await,
        2
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM hl7_messages").await, 2);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM inbound_items").await,
        3,
        "inbound rows stay"
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM inbound_items WHERE LENGTH(raw) = 0"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM inbound_items WHERE id = 'in1' AND LENGTH(raw) = 0"
        )
        .await,
        1
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM inbound_orphans").await,
        1
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM fax_inbound WHERE LENGTH(raw) = 0"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM fax_inbound WHERE id = 'fin2' AND LENGTH(raw) > 0"
        )
        .await,
        1,
        "a fax still to be filed keeps its body"
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM webhook_events").await,
        1
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM audit_events").await, 1);

    // A second pass finds nothing left.
    let again = retention
        .run_once(now, Duration::ZERO)
        .await
        .expect("again");
    assert!(again.is_empty(), "{again:?}");
    store.close().await;
}
both_databases!(
    prunes_by_age_and_keeps_what_must_stay,
    super::prunes_by_age_and_keeps_what_must_stay
);

#[test]
fn audit_retention_under_six_years_is_refused() {
    let err = Config::from_toml("[retention]\naudit_days = 365\n")
        .expect_err("a year of audit")
        .to_string();
    assert!(err.contains("retention.audit_days"), "{err}");
    assert!(err.contains("six years"), "{err}");
    let config = Config::from_toml("[retention]\naudit_days = 2190\n").expect("six years");
    assert_eq!(config.retention.audit_days, 2190);
    assert_eq!(
        Config::from_toml("").expect("default").retention.audit_days,
        0,
        "kept forever by default"
    );
}
