//! Campaigns on SQLite and PostgreSQL: the cohort excludes patients with something booked,
//! preview sends nothing, attempts are spaced and stop once the patient books, reruns never
//! send twice, and the report counts it all; the API creates, shows, previews, pauses, resumes,
//! cancels and reports them; a scheduled campaign runs by itself over two weeks of a driven
//! clock (business days, quiet hours, the organization's time zone); a bulk closure notice
//! reaches everyone booked that day but the opted-out and the Part 2 patient without consent.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::wait::wait_for;
use common::{Backend, TestDaemon, TestDb};
use serde_json::json;
use switchboard::campaigns::{Campaign, CampaignKind, Campaigns};
use switchboard::config::OrganizationConfig;

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
        ..Campaign::default()
    };
    let id = campaigns
        .create(&daemon.organization_id, &campaign, chrono::Utc::now())
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

async fn api(
    daemon: &TestDaemon,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = daemon
        .http
        .request(method, daemon.url(path))
        .bearer_auth(&daemon.key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let json = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, json)
}

fn org(zone: &str) -> OrganizationConfig {
    OrganizationConfig {
        display_name: Some("North Clinic".into()),
        time_zone: zone.into(),
        part2_appointment_types: vec!["SUD".into()],
        ..OrganizationConfig::default()
    }
}

/// Outbox files (delivered messages) by recipient.
fn outbox_by_recipient(db: &TestDb) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for entry in std::fs::read_dir(db.outbox())
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.path().extension().is_some_and(|x| x == "json")
            && let Ok(bytes) = std::fs::read(entry.path())
            && let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes)
        {
            *by.entry(json["to"].as_str().unwrap_or("").to_string())
                .or_default() += 1;
        }
    }
    by
}

async fn campaigns_over_the_api(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.reminders.enabled = false;
    config
        .organizations
        .insert("north".into(), org("America/New_York"));
    let mut daemon = TestDaemon::start(config).await;
    put(
        &daemon,
        "/v1/patients/p1",
        json!({"family_name": "T", "given_name": "T",
               "contact_points": [{"system": "sms", "value": "+12125550121"}]}),
    )
    .await;
    put(
        &daemon,
        "/v1/patients/p2",
        json!({"family_name": "T", "given_name": "T"}),
    )
    .await;
    for (id, patient) in [("r1", "p1"), ("r2", "p2")] {
        put(
            &daemon,
            &format!("/v1/recalls/{id}"),
            json!({"patient": patient, "recall_type": "WELLNESS", "due_date": "2027-02-01"}),
        )
        .await;
    }

    // Every field at fault, each with its pointer.
    let (status, problem) = api(
        &daemon,
        reqwest::Method::POST,
        "/v1/campaigns",
        Some(
            json!({"name": "Bad", "due_from": "soon", "due_to": "2027-03-31",
                    "channels": ["sms", "pigeon"], "schedule": "every day"}),
        ),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    let pointers: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["pointer"].as_str())
        .collect();
    assert_eq!(
        pointers,
        ["/due_from", "/channels/1", "/schedule"],
        "{problem}"
    );
    let (status, problem) = api(
        &daemon,
        reqwest::Method::POST,
        "/v1/campaigns",
        Some(json!({"name": "Bad", "kind": "notice"})),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["pointer"], "/appointments_on", "{problem}");

    let (status, created) = api(
        &daemon,
        reqwest::Method::POST,
        "/v1/campaigns",
        Some(
            json!({"name": "Wellness", "recall_type": "WELLNESS", "due_from": "2027-01-01",
                    "due_to": "2027-03-31", "attempts": 2, "channels": ["sms"],
                    "throttle_per_minute": 600, "schedule": "0 0 10 * * Mon-Fri"}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["state"], "active");
    assert_eq!(created["kind"], "recall");
    assert!(created["next_run_at"].is_string(), "{created}");
    assert_eq!(created["progress"]["sent"], 0);

    let (status, listed) = api(&daemon, reqwest::Method::GET, "/v1/campaigns", None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["campaigns"][0]["id"], id.as_str());

    // The preview names who would get a message and who would not, by id only.
    let (status, preview) = api(
        &daemon,
        reqwest::Method::POST,
        &format!("/v1/campaigns/{id}/preview"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["cohort"], 2);
    assert_eq!(preview["by_channel"]["sms"], 1);
    let who = preview["who"].as_array().unwrap();
    assert!(
        who.iter()
            .any(|w| w["patient"] == "p1" && w["outcome"] == "send")
    );
    assert!(
        who.iter()
            .any(|w| w["patient"] == "p2" && w["outcome"] == "skip" && w["reason"].is_string()),
        "{preview}"
    );

    let transition = async |action: &str| {
        api(
            &daemon,
            reqwest::Method::POST,
            &format!("/v1/campaigns/{id}/{action}"),
            None,
        )
        .await
    };
    let (status, paused) = transition("pause").await;
    assert_eq!((status, paused["state"].as_str()), (200, Some("paused")));
    let (status, resumed) = transition("resume").await;
    assert_eq!((status, resumed["state"].as_str()), (200, Some("active")));
    let (status, cancelled) = transition("cancel").await;
    assert_eq!(
        (status, cancelled["state"].as_str()),
        (200, Some("cancelled"))
    );
    let (status, problem) = transition("resume").await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["code"], "campaign_wrong_state");
    let campaigns = Campaigns {
        store: daemon.core.store.clone(),
        messages: daemon.core.messages(),
        config: daemon.core.config.clone(),
        templates: daemon.core.templates().unwrap(),
    };
    let none = |_: usize, _: usize| {};
    assert!(
        campaigns
            .run(&id, utc("2027-01-04T15:00:00Z"), 0, &none)
            .await
            .is_err(),
        "a cancelled campaign does not run"
    );

    let (status, report) = api(
        &daemon,
        reqwest::Method::GET,
        &format!("/v1/campaigns/{id}/report"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["targeted"], 0);
    assert!(report["skipped_by_reason"].is_object());

    // Campaigns need the admin scope.
    let token = switchboard::http::new_token().unwrap();
    daemon
        .core
        .store
        .api_keys()
        .create(&switchboard::store::NewApiKey {
            organization_id: daemon.organization_id.clone(),
            name: "no admin".into(),
            key_hash: switchboard::http::hash_token(&token),
            scopes: "send read".into(),
            expires_at: None,
        })
        .await
        .unwrap();
    let response = daemon
        .http
        .get(daemon.url("/v1/campaigns"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);

    // Another organization sees none of it.
    let other = daemon.key_for("south").await;
    let response = daemon
        .http
        .get(daemon.url(&format!("/v1/campaigns/{id}")))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    daemon.stop().await;
}
both_databases!(over_the_api, crate::campaigns_over_the_api);

/// Two weeks of a driven clock: a campaign scheduled daily at 10:00 New York time sends three
/// attempts four days apart, on business days within open hours, each once; the patient who
/// books after the first gets no more; a paused campaign sends nothing until resumed.
async fn scheduled_over_two_weeks(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.reminders.enabled = false; // the test drives the clock
    let mut settings = org("America/New_York");
    settings.holidays = vec![chrono::NaiveDate::from_ymd_opt(2027, 3, 9).unwrap()];
    config.organizations.insert("north".into(), settings);
    let mut daemon = TestDaemon::start(config).await;
    let templates = daemon.core.templates().unwrap();
    let reminders = daemon.core.reminders(templates.clone());
    let campaigns = Campaigns {
        store: daemon.core.store.clone(),
        messages: daemon.core.messages(),
        config: daemon.core.config.clone(),
        templates,
    };
    for (patient, number) in [
        ("a", "+12125550131"),
        ("b", "+12125550132"),
        ("c", "+12125550133"),
    ] {
        put(
            &daemon,
            &format!("/v1/patients/{patient}"),
            json!({"family_name": "T", "given_name": "T",
                   "contact_points": [{"system": "sms", "value": number}]}),
        )
        .await;
        put(
            &daemon,
            &format!("/v1/recalls/r-{patient}"),
            json!({"patient": patient, "recall_type": "WELLNESS", "due_date": "2027-02-15"}),
        )
        .await;
    }
    // Created on Sunday 2027-02-28 after 10:00 New York: the first run is Monday 10:00
    // (15:00Z; a Sunday tick would have moved to Monday's opening, 08:00).
    let start = utc("2027-02-28T16:00:00Z");
    let campaign = Campaign {
        name: "Wellness, scheduled".into(),
        due_from: "2027-01-01".into(),
        due_to: "2027-03-31".into(),
        attempts: 3,
        spacing_days: 4,
        channels: vec!["sms".into()],
        schedule: Some("0 0 10 * * *".into()),
        ..Campaign::default()
    };
    let id = campaigns
        .create(&daemon.organization_id, &campaign, start)
        .await
        .unwrap();
    let row = daemon.core.store.campaigns().get(&id).await.unwrap();
    assert_eq!(
        row.next_run_at,
        Some(utc("2027-03-01T15:00:00Z").timestamp_millis())
    );

    let zone: chrono_tz::Tz = "America/New_York".parse().unwrap();
    let mut now = start;
    let end = start + chrono::Duration::days(14);
    let mut booked = false;
    while now <= end {
        // Paused on Thursday 2027-03-04 (10:00 local) until Friday 10:30: Friday's run waits.
        if now == utc("2027-03-04T15:00:00Z") {
            campaigns
                .api_transition(&daemon.organization_id, &id, "pause")
                .await
                .unwrap();
        }
        if now == utc("2027-03-05T15:30:00Z") {
            assert_eq!(
                daemon
                    .core
                    .store
                    .campaigns()
                    .targets(&id)
                    .await
                    .unwrap()
                    .len(),
                3,
                "nothing sent while paused"
            );
            campaigns
                .api_transition(&daemon.organization_id, &id, "resume")
                .await
                .unwrap();
        }
        reminders.run_once(now).await.expect("run");
        // After the first attempts, b books a visit.
        if !booked {
            let targets = daemon.core.store.campaigns().targets(&id).await.unwrap();
            if !targets.is_empty() {
                put(
                    &daemon,
                    "/v1/appointments/B-1",
                    json!({"patient": "b", "start": "2027-04-20T09:00:00-04:00"}),
                )
                .await;
                booked = true;
            }
        }
        now += chrono::Duration::minutes(30);
    }

    let targets = daemon.core.store.campaigns().targets(&id).await.unwrap();
    let patient_id = |external: &str| {
        let store = daemon.core.store.clone();
        let org = daemon.organization_id.clone();
        let external = external.to_string();
        async move {
            store
                .patients()
                .by_external_id(&org, &external)
                .await
                .unwrap()
                .id
        }
    };
    let (a, b, c) = (
        patient_id("a").await,
        patient_id("b").await,
        patient_id("c").await,
    );
    let sent_at = |patient: &str| -> Vec<chrono::DateTime<chrono_tz::Tz>> {
        targets
            .iter()
            .filter(|t| t.patient_id == patient && t.status == "sent")
            .map(|t| {
                chrono::DateTime::from_timestamp_millis(t.created_at)
                    .unwrap()
                    .with_timezone(&zone)
            })
            .collect()
    };
    let local = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .with_timezone(&zone)
    };
    // Monday 03-01 10:00; Friday 03-05 10:30 (four days later, once resumed); four days on
    // is Tuesday 03-09, a holiday, whose run moves to Wednesday's opening, 08:00.
    let expected = [
        local("2027-03-01T10:00:00-05:00"),
        local("2027-03-05T10:30:00-05:00"),
        local("2027-03-10T08:00:00-05:00"),
    ];
    assert_eq!(sent_at(&a), expected, "{targets:#?}");
    assert_eq!(sent_at(&c), expected);
    assert_eq!(
        sent_at(&b),
        expected[..1],
        "b booked after the first attempt"
    );
    assert!(targets.iter().all(|t| t.status == "sent"));

    // Each attempt reached the outbox once.
    wait_for(
        "seven campaign messages delivered",
        Duration::from_secs(30),
        async || outbox_by_recipient(&db).values().sum::<usize>() == 7,
    )
    .await;
    let by = outbox_by_recipient(&db);
    assert_eq!(by.get("+12125550131"), Some(&3));
    assert_eq!(by.get("+12125550132"), Some(&1));
    assert_eq!(by.get("+12125550133"), Some(&3));
    let report = campaigns.report(&id, end).await.unwrap();
    assert_eq!((report.targeted, report.sent, report.booked), (3, 7, 1));
    daemon.stop().await;
}
both_databases!(scheduled, crate::scheduled_over_two_weeks);

/// A closure notice for everyone booked on a day at one location: the opted-out patient and
/// the Part 2 patient without consent are skipped (audited `disclosure_refused`); the Part 2
/// patient with consent, the email-only patient and the rest get it once; patients booked
/// another day, elsewhere, or cancelled are not in it. A listed notice reaches the listed.
async fn closure_notice(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.reminders.enabled = false;
    config
        .organizations
        .insert("north".into(), org("America/New_York"));
    let mut daemon = TestDaemon::start(config).await;
    let sms = |n: &str| json!([{"system": "sms", "value": n}]);
    let patients = [
        ("sms", sms("+12125550141"), json!([])),
        (
            "mail",
            json!([{"system": "email", "value": "mail@example.org"}]),
            json!([]),
        ),
        (
            "optout",
            sms("+12125550143"),
            json!([{"channel": "sms", "purpose": "*", "status": "revoked", "recipient": "*"}]),
        ),
        ("sud", sms("+12125550144"), json!([])),
        (
            "sud-ok",
            sms("+12125550145"),
            json!([{"channel": "*", "purpose": "part2", "recipient": "*", "status": "granted"}]),
        ),
        ("other-day", sms("+12125550146"), json!([])),
        ("elsewhere", sms("+12125550147"), json!([])),
        ("cancelled", sms("+12125550148"), json!([])),
    ];
    for (id, points, consents) in &patients {
        put(
            &daemon,
            &format!("/v1/patients/{id}"),
            json!({"family_name": "T", "given_name": "T", "contact_points": points,
                   "consents": consents}),
        )
        .await;
    }
    for (filler, patient, start, extra) in [
        ("A1", "sms", "2027-03-10T09:00:00-05:00", json!({})),
        // Two appointments that day: one notice.
        ("A1b", "sms", "2027-03-10T15:00:00-05:00", json!({})),
        ("A2", "mail", "2027-03-10T10:00:00-05:00", json!({})),
        ("A3", "optout", "2027-03-10T11:00:00-05:00", json!({})),
        (
            "A4",
            "sud",
            "2027-03-10T12:00:00-05:00",
            json!({"appointment_type": "SUD"}),
        ),
        (
            "A5",
            "sud-ok",
            "2027-03-10T13:00:00-05:00",
            json!({"appointment_type": "SUD"}),
        ),
        // 23:30 New York on 03-09 is 03-10 in UTC: not that day.
        ("A6", "other-day", "2027-03-09T23:30:00-05:00", json!({})),
        (
            "A7",
            "elsewhere",
            "2027-03-10T09:00:00-05:00",
            json!({"location": "Annex"}),
        ),
        (
            "A8",
            "cancelled",
            "2027-03-10T09:00:00-05:00",
            json!({"status": "cancelled"}),
        ),
    ] {
        let mut body = json!({"patient": patient, "start": start, "location": "Main"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        put(&daemon, &format!("/v1/appointments/{filler}"), body).await;
    }

    let (status, created) = api(
        &daemon,
        reqwest::Method::POST,
        "/v1/campaigns",
        Some(
            json!({"name": "Closed for snow", "kind": "notice", "appointments_on": "2027-03-10",
                    "location": "Main", "channels": ["sms", "email"], "throttle_per_minute": 0}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let templates = daemon.core.templates().unwrap();
    let campaigns = Campaigns {
        store: daemon.core.store.clone(),
        messages: daemon.core.messages(),
        config: daemon.core.config.clone(),
        templates,
    };
    let t0 = utc("2027-03-09T20:00:00Z");
    let preview = campaigns.preview(&id, t0).await.unwrap();
    assert_eq!(preview.cohort, 5, "{preview:?}");
    assert_eq!(
        (
            preview.by_channel.get("sms"),
            preview.by_channel.get("email")
        ),
        (Some(&2), Some(&1))
    );
    assert!(
        preview
            .samples
            .iter()
            .any(|s| s.contains("closed Wed Mar 10")),
        "{preview:?}"
    );

    let none = |_: usize, _: usize| {};
    assert_eq!(campaigns.run(&id, t0, 1000, &none).await.unwrap(), (3, 2));
    assert_eq!(
        campaigns.run(&id, t0, 0, &none).await.unwrap(),
        (0, 0),
        "once each"
    );

    wait_for(
        "three notices delivered",
        Duration::from_secs(20),
        async || outbox_by_recipient(&db).values().sum::<usize>() == 3,
    )
    .await;
    let by = outbox_by_recipient(&db);
    assert_eq!(by.get("+12125550141"), Some(&1));
    assert_eq!(by.get("mail@example.org"), Some(&1));
    assert_eq!(by.get("+12125550145"), Some(&1));

    wait_for(
        "three deliveries reported",
        Duration::from_secs(20),
        async || campaigns.report(&id, t0).await.unwrap().delivered == 3,
    )
    .await;
    let audit = daemon
        .core
        .store
        .audit()
        .entries(&daemon.organization_id, 1000)
        .await
        .unwrap();
    let actor = format!("campaign:{id}");
    let mut refused = BTreeMap::new();
    for external in ["optout", "sud", "sud-ok", "sms"] {
        let patient = daemon
            .core
            .store
            .patients()
            .by_external_id(&daemon.organization_id, external)
            .await
            .unwrap();
        let details: Vec<String> = audit
            .iter()
            .filter(|a| {
                a.action == "disclosure_refused"
                    && a.actor == actor
                    && a.patient_id.as_deref() == Some(&patient.id)
            })
            .filter_map(|a| a.detail.clone())
            .collect();
        refused.insert(external, details);
    }
    assert_eq!(refused["optout"].len(), 1, "{audit:#?}");
    assert_eq!(refused["sud"], ["part2_consent_required"]);
    assert!(refused["sud-ok"].is_empty() && refused["sms"].is_empty());

    let (status, report) = api(
        &daemon,
        reqwest::Method::GET,
        &format!("/v1/campaigns/{id}/report"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            report["targeted"].as_i64(),
            report["sent"].as_i64(),
            report["skipped"].as_i64()
        ),
        (Some(5), Some(3), Some(2)),
        "{report}"
    );
    assert_eq!(report["delivered"], 3, "{report}");
    assert_eq!(
        report["skipped_by_reason"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(|v| v.as_i64())
            .sum::<i64>(),
        2
    );

    // A notice to a list of patients (unknown ids are left out).
    let listed = Campaign {
        name: "Dr. Lee out".into(),
        kind: CampaignKind::Notice,
        patients: vec!["sms".into(), "nobody".into()],
        channels: vec!["sms".into()],
        ..Campaign::default()
    };
    let listed = campaigns
        .create(&daemon.organization_id, &listed, t0)
        .await
        .unwrap();
    assert_eq!(campaigns.run(&listed, t0, 0, &none).await.unwrap(), (1, 0));

    // Scheduled and throttled to one message a minute: the reminder pass sends one per minute.
    let throttled = Campaign {
        name: "Parking closed".into(),
        kind: CampaignKind::Notice,
        patients: vec!["sms".into(), "mail".into(), "sud-ok".into()],
        channels: vec!["sms".into(), "email".into()],
        throttle_per_minute: 1,
        schedule: Some("0 0 * * * *".into()),
        business_days: false,
        ..Campaign::default()
    };
    let throttled = campaigns
        .create(&daemon.organization_id, &throttled, t0)
        .await
        .unwrap();
    let reminders = daemon.core.reminders(daemon.core.templates().unwrap());
    let hour = utc("2027-03-09T21:00:00Z"); // 16:00 New York, the next hourly tick
    let mut sent = Vec::new();
    for seconds in [0, 30, 60, 61, 90, 120, 180] {
        let report = reminders
            .run_once(hour + chrono::Duration::seconds(seconds))
            .await
            .unwrap();
        sent.push(report.campaign_sent);
    }
    assert_eq!(sent, [1, 0, 1, 0, 0, 1, 0]);
    let row = daemon.core.store.campaigns().get(&throttled).await.unwrap();
    assert_eq!(
        row.next_run_at,
        Some(utc("2027-03-09T22:00:00Z").timestamp_millis()),
        "finished: the next hour's run is planned"
    );
    daemon.stop().await;
}
both_databases!(notice, crate::closure_notice);
