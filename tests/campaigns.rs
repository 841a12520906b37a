//! Recall campaigns on SQLite and PostgreSQL: the cohort excludes patients with something
//! booked, preview sends nothing, attempts are spaced and stop once the patient books, reruns
//! never send twice, and the report counts it all; the CLI prints the same.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{Backend, TestDaemon, TestDb};
use serde_json::json;
use switchboard::campaigns::{Campaign, Campaigns};

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
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

async fn recall_campaign(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.reminders.enabled = false;
    let mut daemon = TestDaemon::start(config).await;
    let points =
        |p: serde_json::Value| json!({"family_name": "T", "given_name": "T", "contact_points": p});
    put(
        &daemon,
        "/v1/patients/sms",
        points(json!([{"system": "sms", "value": "+12125550111"}])),
    )
    .await;
    put(
        &daemon,
        "/v1/patients/mail",
        points(json!([{"system": "email", "value": "mail@example.org"}])),
    )
    .await;
    put(
        &daemon,
        "/v1/patients/booked",
        points(json!([{"system": "sms", "value": "+12125550112"}])),
    )
    .await;
    put(&daemon, "/v1/patients/none", points(json!([]))).await;
    put(
        &daemon,
        "/v1/patients/later",
        points(json!([{"system": "sms", "value": "+12125550113"}])),
    )
    .await;
    for (id, patient, due) in [
        ("r1", "sms", "2027-02-01"),
        ("r2", "mail", "2027-02-15"),
        ("r3", "booked", "2027-02-20"),
        ("r4", "none", "2027-02-25"),
        ("r5", "later", "2027-06-01"),
    ] {
        put(
            &daemon,
            &format!("/v1/recalls/{id}"),
            json!({"patient": patient, "recall_type": "WELLNESS", "due_date": due}),
        )
        .await;
    }
    put(
        &daemon,
        "/v1/appointments/B1",
        json!({"patient": "booked", "start": "2030-01-10T09:00:00-05:00"}),
    )
    .await;

    let templates = daemon.core.templates().unwrap();
    let campaigns = Campaigns {
        store: daemon.core.store.clone(),
        messages: daemon.core.messages(),
        config: daemon.core.config.clone(),
        templates,
    };
    let campaign = Campaign {
        name: "Wellness Q1".into(),
        recall_type: Some("WELLNESS".into()),
        due_from: "2027-01-01".into(),
        due_to: "2027-03-31".into(),
        provider: None,
        location: None,
        attempts: 2,
        spacing_days: 7,
        channels: vec!["sms".into(), "email".into()],
        template: "recall".into(),
    };
    let id = daemon
        .core
        .store
        .campaigns()
        .create(
            &daemon.organization_id,
            &campaign.name,
            &serde_json::to_string(&campaign).unwrap(),
        )
        .await
        .unwrap();

    let t0 = utc("2027-01-04T15:00:00Z");
    let preview = campaigns.preview(&id, t0).await.unwrap();
    assert_eq!(
        preview.cohort, 3,
        "booked and out-of-range recalls are not in the cohort"
    );
    assert_eq!(preview.by_channel.get("sms"), Some(&1));
    assert_eq!(preview.by_channel.get("email"), Some(&1));
    assert_eq!(preview.skips.values().sum::<usize>(), 1);
    assert!(
        preview
            .samples
            .iter()
            .any(|s| s.contains("due for a visit"))
    );
    let events = daemon.events().await;
    assert!(
        !events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "message.accepted"),
        "preview sends nothing"
    );

    let none = |_: usize, _: usize| {};
    assert_eq!(campaigns.run(&id, t0, 0, &none).await.unwrap(), (2, 1));
    assert_eq!(
        campaigns.run(&id, t0, 0, &none).await.unwrap(),
        (0, 0),
        "a rerun sends nothing twice"
    );
    assert_eq!(
        campaigns
            .run(&id, t0 + chrono::Duration::days(3), 0, &none)
            .await
            .unwrap(),
        (0, 0),
        "spacing"
    );

    // The SMS patient books: their attempts stop.
    put(
        &daemon,
        "/v1/appointments/B2",
        json!({"patient": "sms", "start": "2030-02-01T09:00:00-05:00"}),
    )
    .await;
    let t1 = t0 + chrono::Duration::days(8);
    assert_eq!(campaigns.run(&id, t1, 0, &none).await.unwrap(), (1, 1));
    assert_eq!(
        campaigns
            .run(&id, t1 + chrono::Duration::days(8), 0, &none)
            .await
            .unwrap(),
        (0, 0),
        "two attempts at most"
    );

    // Deliveries go through the queue to the outbox sink.
    let started = std::time::Instant::now();
    loop {
        let report = campaigns.report(&id, t1).await.unwrap();
        if report.delivered == 3 {
            assert_eq!(
                (
                    report.targeted,
                    report.sent,
                    report.skipped,
                    report.failed,
                    report.booked
                ),
                (3, 3, 2, 0, 1)
            );
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{report:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.stop().await;
}
both_databases!(recall, crate::recall_campaign);
