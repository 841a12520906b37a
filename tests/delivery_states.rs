//! The store applies exactly the delivery state rule (`domain::DeliveryStatus::can_move_to`):
//! for every pair of states (A, B), a delivery in A asked to move to B moves if and only if the
//! rule says so, and the report is in its history either way (`applied` telling which). A
//! claim takes exactly the claimable states. A late or duplicate callback never moves a
//! delivery back. On SQLite and PostgreSQL, through the real store.

mod common;

use common::{Backend, TestDb, fixtures};
use switchboard::domain::DeliveryStatus;
use switchboard::store::{AcceptOutcome, AuditEntry, DeliveryUpdate, NewDelivery, Store, now_ms};

async fn store_for(db: &TestDb) -> Store {
    let store = Store::connect(&db.url, 4, false).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

/// A message with `n` queued deliveries; their ids.
async fn deliveries(store: &Store, n: usize) -> Vec<String> {
    let org = store
        .organizations()
        .ensure("north", "North")
        .await
        .expect("organization");
    let deliveries: Vec<NewDelivery> = (0..n)
        .map(|_| fixtures::delivery("sms", "+14155552671"))
        .collect();
    let outcome = store
        .messages()
        .accept(
            &fixtures::outbound_message(&org.id, b"sealed elsewhere".to_vec()),
            &deliveries,
            None,
        )
        .await
        .expect("accept");
    assert_eq!(outcome, AcceptOutcome::Created);
    deliveries.into_iter().map(|d| d.id).collect()
}

/// Puts a delivery in `status` directly (what earlier reports would have left).
async fn set_status(store: &Store, id: &str, status: DeliveryStatus) {
    switchboard::on_db!(store.db(), |pool| sqlx::query(
        "UPDATE deliveries SET status = $2, status_rank = $3, not_before = NULL WHERE id = $1",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(status.rank())
    .execute(pool)
    .await
    .map(|_| ()))
    .expect("set status");
}

/// The reports of a delivery's history: (status, applied).
async fn history(store: &Store, id: &str) -> Vec<(String, bool)> {
    switchboard::on_db!(store.db(), |pool| sqlx::query_as(
        "SELECT status, applied FROM delivery_events WHERE delivery_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await)
    .expect("history")
}

async fn every_pair_of_states_follows_the_rule(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store_for(&db).await;
    let pairs: Vec<(DeliveryStatus, DeliveryStatus)> = DeliveryStatus::ALL
        .into_iter()
        .flat_map(|a| DeliveryStatus::ALL.into_iter().map(move |b| (a, b)))
        .collect();
    let ids = deliveries(&store, pairs.len()).await;
    let mut moves = 0;
    for ((from, to), id) in pairs.iter().zip(&ids) {
        set_status(&store, id, *from).await;
        let moved = store
            .deliveries()
            .update(id, &DeliveryUpdate::new(*to, "test"))
            .await
            .expect("update");
        let expected = from.can_move_to(*to);
        assert_eq!(moved, expected, "{from:?} -> {to:?}");
        let now = store.deliveries().get(id).await.expect("delivery");
        let stays = if expected { *to } else { *from };
        assert_eq!(now.status, stays.as_str(), "{from:?} -> {to:?}");
        assert_eq!(
            history(&store, id).await.last(),
            Some(&(to.as_str().to_string(), expected)),
            "{from:?} -> {to:?}: the report is recorded, applied or not"
        );
        moves += usize::from(expected);
    }
    // The rule is not vacuous either way.
    assert!(moves > 10 && moves < pairs.len() - 10, "{moves} moves");

    // The same through a batch (the group commit's path), every pair at once.
    let ids = deliveries(&store, pairs.len()).await;
    for ((from, _), id) in pairs.iter().zip(&ids) {
        set_status(&store, id, *from).await;
    }
    let updates: Vec<(String, DeliveryUpdate)> = pairs
        .iter()
        .zip(&ids)
        .map(|((_, to), id)| (id.clone(), DeliveryUpdate::new(*to, "test")))
        .collect();
    let moved = store
        .deliveries()
        .update_many(&updates)
        .await
        .expect("batch");
    for (((from, to), id), moved) in pairs.iter().zip(&ids).zip(moved) {
        assert_eq!(moved, from.can_move_to(*to), "batch {from:?} -> {to:?}");
        let stays = if moved { *to } else { *from };
        assert_eq!(
            store.deliveries().get(id).await.expect("delivery").status,
            stays.as_str()
        );
    }

    // A claim takes exactly the claimable states (and leases them in `sending`).
    let ids = deliveries(&store, DeliveryStatus::ALL.len()).await;
    for (status, id) in DeliveryStatus::ALL.into_iter().zip(&ids) {
        set_status(&store, id, status).await;
        let claimed = store
            .deliveries()
            .claim(id, now_ms(), now_ms() + 60_000)
            .await
            .expect("claim");
        assert_eq!(claimed.is_some(), status.is_claimable(), "claim {status:?}");
        let after = store.deliveries().get(id).await.expect("delivery").status;
        let expected = if status.is_claimable() {
            DeliveryStatus::Sending
        } else {
            status
        };
        assert_eq!(after, expected.as_str(), "claim {status:?}");
    }
    store.close().await;
}
both_databases!(every_pair, crate::every_pair_of_states_follows_the_rule);

/// queued → sending → sent → delivered, then the provider's late `sent` and a duplicate
/// `delivered`: recorded, not applied; the delivery stays delivered. Direct: sent →
/// processed → dispatched, and a late `processed` MDN does not undo the dispatch.
async fn late_and_duplicate_reports_never_regress(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store_for(&db).await;
    let ids = deliveries(&store, 2).await;
    let report = |status| DeliveryUpdate::new(status, "webhook:test");
    use DeliveryStatus::*;

    let sms = &ids[0];
    assert!(
        store
            .deliveries()
            .claim(sms, now_ms(), now_ms() + 60_000)
            .await
            .expect("claim")
            .is_some()
    );
    for (status, applies) in [
        (Sent, true),
        (Delivered, true),
        (Sent, false),
        (Delivered, false),
    ] {
        let moved = store
            .deliveries()
            .update(sms, &report(status))
            .await
            .expect("update");
        assert_eq!(moved, applies, "{status:?}");
    }
    assert_eq!(
        store.deliveries().get(sms).await.expect("delivery").status,
        "delivered"
    );
    assert_eq!(
        history(&store, sms).await,
        [
            ("queued", true),
            ("sending", true),
            ("sent", true),
            ("delivered", true),
            ("sent", false),
            ("delivered", false)
        ]
        .map(|(s, a)| (s.to_string(), a))
    );

    let direct = &ids[1];
    assert!(
        store
            .deliveries()
            .claim(direct, now_ms(), now_ms() + 60_000)
            .await
            .expect("claim")
            .is_some()
    );
    for (status, applies) in [
        (Sent, true),
        (Processed, true),
        (Dispatched, true),
        (Processed, false),
        (Failed, false),
    ] {
        let moved = store
            .deliveries()
            .update(direct, &report(status))
            .await
            .expect("update");
        assert_eq!(moved, applies, "{status:?}");
    }
    assert_eq!(
        store
            .deliveries()
            .get(direct)
            .await
            .expect("delivery")
            .status,
        "dispatched"
    );
    store.close().await;
}
both_databases!(
    never_regress,
    crate::late_and_duplicate_reports_never_regress
);

/// One batch carrying the worker's `sent` and the provider's `delivered` for the same delivery
/// (a fast callback), next to another delivery's `sent`: the two reports apply in order, so
/// the first delivery ends delivered; a second `sent` after them is recorded, not applied.
async fn a_batch_applies_one_deliverys_reports_in_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store_for(&db).await;
    let ids = deliveries(&store, 2).await;
    for id in &ids {
        set_status(&store, id, DeliveryStatus::Sending).await;
    }
    let report = |status| DeliveryUpdate::new(status, "test");
    let batch = vec![
        (ids[0].clone(), report(DeliveryStatus::Sent)),
        (ids[1].clone(), report(DeliveryStatus::Sent)),
        (ids[0].clone(), report(DeliveryStatus::Delivered)),
        (ids[0].clone(), report(DeliveryStatus::Sent)),
    ];
    let moved = store.deliveries().update_many(&batch).await.expect("batch");
    assert_eq!(moved, [true, true, true, false]);
    let status = async |id: &str| store.deliveries().get(id).await.expect("delivery").status;
    assert_eq!(status(&ids[0]).await, "delivered");
    assert_eq!(status(&ids[1]).await, "sent");
    let recorded = history(&store, &ids[0]).await;
    assert!(
        recorded.ends_with(
            &[("sent", true), ("delivered", true), ("sent", false)]
                .map(|(s, a)| (s.to_string(), a))
        ),
        "{recorded:?}"
    );
    store.close().await;
}
both_databases!(
    same_delivery_twice,
    crate::a_batch_applies_one_deliverys_reports_in_order
);

/// A batch's reports that carry a disclosure (a send's) audit it when they move their
/// delivery, each once, in report order; a report that moves nothing audits nothing.
async fn a_batch_audits_the_disclosures_it_moved(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store_for(&db).await;
    let ids = deliveries(&store, 3).await;
    for id in &ids[..2] {
        set_status(&store, id, DeliveryStatus::Sending).await;
    }
    set_status(&store, &ids[2], DeliveryStatus::Delivered).await;
    let org = store
        .organizations()
        .ensure("north", "North")
        .await
        .expect("organization");
    let sent = |id: &str| {
        let mut update = DeliveryUpdate::new(DeliveryStatus::Sent, "worker");
        update.audit = Some(AuditEntry {
            organization_id: org.id.clone(),
            action: "disclosure".into(),
            actor: "worker".into(),
            patient_id: None,
            message_id: None,
            delivery_id: Some(id.to_string()),
            channel: Some("sms".into()),
            recipient: Some("+14155550100".into()),
            outcome: Some("sent".into()),
            detail: None,
        });
        (id.to_string(), update)
    };
    let batch: Vec<(String, DeliveryUpdate)> = [&ids[1], &ids[2], &ids[0]]
        .into_iter()
        .map(|id| sent(id))
        .collect();
    let moved = store.deliveries().update_many(&batch).await.expect("batch");
    assert_eq!(moved, [true, false, true]);
    let audited: Vec<(Option<String>,)> = switchboard::on_db!(store.db(), |pool| sqlx::query_as(
        "SELECT delivery_id FROM audit_events WHERE action = 'disclosure' ORDER BY id",
    )
    .fetch_all(pool)
    .await)
    .expect("audit rows");
    assert_eq!(
        audited,
        [(Some(ids[1].clone()),), (Some(ids[0].clone()),)],
        "the moved reports' disclosures, in report order"
    );
    store.close().await;
}
both_databases!(batch_audits, crate::a_batch_audits_the_disclosures_it_moved);
