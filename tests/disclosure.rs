//! The disclosure gate on every external path, on SQLite and PostgreSQL, through the real
//! daemon: a plain message, an urgent notice, a reminder, a campaign message and the inline
//! answer to a reminder reply ("C"), each for a Part 2 patient without a Part 2 consent —
//! nothing reaches the provider or the outbox, and an audit row says why — and with one, when it
//! goes out. SMS goes to a loopback Twilio (`provider.rs`); other channels to the outbox sink.

mod common;

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use common::provider::{
    FakeProvider, Flavor, TWILIO_ACCOUNT as ACCOUNT, quick_retries, signed_twilio_post,
    twilio_connector,
};
use common::wait::wait_for;
use common::{Backend, TestDaemon, TestDb};
use serde_json::json;
use switchboard::campaigns::{Campaign, Campaigns};
use switchboard::config::{Config, OrganizationConfig};
use switchboard::store::AuditRow;

const WAIT: Duration = Duration::from_secs(20);
const FROM: &str = "+15005550006";

/// Organization `north`: UTC, no quiet hours, `SUD` is the Part 2 program's type. With a
/// provider, SMS goes to the loopback Twilio (a single-tenant connector of `north`).
fn config(db: &TestDb, provider: Option<&FakeProvider>) -> Config {
    let mut config = db.config();
    config.reminders.enabled = false; // the tests drive reminder runs
    config.organizations.insert(
        "north".into(),
        OrganizationConfig {
            display_name: Some("North Clinic".into()),
            portal_url: "https://portal.north.example".into(),
            time_zone: "UTC".into(),
            quiet_hours_start: "00:00".into(),
            quiet_hours_end: "23:59".into(),
            reminder_cap_per_day: 10,
            reminder_cap_per_week: 20,
            part2_appointment_types: vec!["SUD".into()],
            ..OrganizationConfig::default()
        },
    );
    if let Some(provider) = provider {
        config.connectors.insert(
            "twilio".into(),
            twilio_connector(db, &provider.base_url(), FROM, Some("north"), 2),
        );
        config
            .channels
            .insert("sms".into(), quick_retries("twilio", 4));
    }
    config
}

async fn put(daemon: &TestDaemon, path: &str, body: serde_json::Value) {
    let response = daemon
        .http
        .put(daemon.url(path))
        .bearer_auth(&daemon.key)
        .json(&body)
        .send()
        .await
        .expect("PUT");
    assert!(
        response.status().is_success(),
        "PUT {path}: {} {}",
        response.status(),
        response.text().await.unwrap_or_default()
    );
}

/// A patient with these contact points and, if `consent`, a Part 2 consent for everyone.
async fn patient(daemon: &TestDaemon, id: &str, points: serde_json::Value, consent: bool) {
    let consents = if consent {
        json!([{"channel": "*", "purpose": "part2", "recipient": "*", "status": "granted"}])
    } else {
        json!([])
    };
    put(
        daemon,
        &format!("/v1/patients/{id}"),
        json!({"family_name": "Doe", "given_name": id, "contact_points": points, "consents": consents}),
    )
    .await;
}

fn sms(number: &str) -> serde_json::Value {
    json!([{"system": "sms", "value": number}])
}

async fn audit(daemon: &TestDaemon) -> Vec<AuditRow> {
    daemon
        .core
        .store
        .audit()
        .entries(&daemon.organization_id, 1000)
        .await
        .expect("audit")
}

/// `disclosure_refused` rows for a patient (by external id).
async fn refusals_for(daemon: &TestDaemon, external_id: &str) -> Vec<AuditRow> {
    let patient = daemon
        .core
        .store
        .patients()
        .by_external_id(&daemon.organization_id, external_id)
        .await
        .expect("patient");
    audit(daemon)
        .await
        .into_iter()
        .filter(|a| {
            a.action == "disclosure_refused" && a.patient_id.as_deref() == Some(&patient.id)
        })
        .collect()
}

fn sends_to(provider: &FakeProvider, number: &str) -> usize {
    provider
        .sends()
        .iter()
        .filter(|r| r.form("To").as_deref() == Some(number))
        .count()
}

fn outbox_bodies(db: &TestDb) -> Vec<serde_json::Value> {
    let Ok(entries) = std::fs::read_dir(db.outbox()) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

/// Polls the message until its first delivery is `sent` (what Twilio's answer makes it) or
/// terminal.
async fn wait_settled(daemon: &TestDaemon, message_id: &str) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let view = daemon.get_json(&format!("/v1/messages/{message_id}")).await;
        let status = view["deliveries"][0]["status"].as_str().unwrap_or("");
        if status == "sent" || common::is_terminal(status) {
            return view;
        }
        assert!(
            started.elapsed() < WAIT,
            "delivery not settled in time: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A signed inbound text; returns the TwiML answer.
async fn inbound_sms(daemon: &TestDaemon, sid: &str, from: &str, body: &str) -> String {
    let params = [
        ("AccountSid", ACCOUNT),
        ("MessageSid", sid),
        ("From", from),
        ("To", FROM),
        ("Body", body),
        ("NumMedia", "0"),
    ];
    let response = signed_twilio_post(daemon, "/hooks/twilio/inbound", &params).await;
    assert_eq!(response.status(), 200);
    response.text().await.expect("TwiML")
}

// ---------------------------------------------------------------------------------------------

/// A plain Part 2 message: refused without consent; a consent recorded for the number in
/// E.164 covers a delivery addressed to the same number written nationally.
async fn plain_message(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FakeProvider::start(Flavor::Twilio).await;
    let mut daemon = TestDaemon::start(config(&db, Some(&provider))).await;
    patient(&daemon, "p2", sms("+14155552671"), false).await;
    let send = |to: &'static str| {
        daemon.post_message(
            json!({"patient": "p2", "part2": true, "body": "SUD counseling note",
            "recipients": [{"address": to, "channel": "sms"}]}),
        )
    };

    let refused: serde_json::Value = send("(415) 555-2671").await.json().await.expect("json");
    let view = daemon
        .wait_terminal(refused["id"].as_str().expect("id"), WAIT)
        .await;
    assert_eq!(view["deliveries"][0]["status"], "failed");
    assert_eq!(view["deliveries"][0]["reason"], "part2_consent_required");
    assert_eq!(provider.sends().len(), 0, "nothing reached the provider");
    let rows = refusals_for(&daemon, "p2").await;
    assert!(
        rows.iter()
            .any(|a| a.message_id.as_deref() == view["id"].as_str()
                && a.detail.as_deref() == Some("part2_consent_required")),
        "{rows:#?}"
    );

    put(
        &daemon,
        "/v1/patients/p2",
        json!({"family_name": "Doe", "consents": [
        {"channel": "sms", "purpose": "part2", "recipient": "+14155552671", "status": "granted"}]}),
    )
    .await;
    let allowed: serde_json::Value = send("(415) 555-2671").await.json().await.expect("json");
    let view = wait_settled(&daemon, allowed["id"].as_str().expect("id")).await;
    assert_eq!(
        view["deliveries"][0]["status"], "sent",
        "the consent covers the number however it is written: {view:#}"
    );
    assert_eq!(sends_to(&provider, "+14155552671"), 1);
    let disclosed = audit(&daemon)
        .await
        .into_iter()
        .any(|a| a.action == "disclosure" && a.message_id.as_deref() == view["id"].as_str());
    assert!(disclosed, "the disclosure is audited");
    daemon.stop().await;
}
both_databases!(plain_message_needs_part2_consent, crate::plain_message);

/// An urgent Part 2 message: its patient is told only on a channel their Part 2 consent covers.
async fn urgent_notice(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut daemon = TestDaemon::start(config(&db, None)).await;
    let points =
        |n: &str, e: &str| json!([{"system": "sms", "value": n}, {"system": "email", "value": e}]);
    patient(
        &daemon,
        "p2",
        points("+14155550101", "p2@example.org"),
        false,
    )
    .await;
    patient(
        &daemon,
        "p2-ok",
        points("+14155550102", "ok@example.org"),
        true,
    )
    .await;
    let post = |who: &'static str| {
        daemon.post_message(json!({"patient": who, "part2": true, "urgent": true,
            "body": "Your SUD treatment plan changed", "metadata": {"notify": "patient"},
            "recipients": [{"patient": true, "channel": "email"}]}))
    };
    let done = |message_id: String| {
        let daemon = &daemon;
        move || {
            let message_id = message_id.clone();
            async move {
                audit(daemon).await.iter().any(|a| {
                    a.message_id.as_deref() == Some(&message_id)
                        && matches!(
                            a.action.as_str(),
                            "urgent_notification" | "urgent_notification_skipped"
                        )
                })
            }
        }
    };

    let refused: serde_json::Value = post("p2").await.json().await.expect("json");
    let refused_id = refused["id"].as_str().expect("id").to_string();
    wait_for("the notifier's decision", WAIT, done(refused_id.clone())).await;
    let rows: Vec<AuditRow> = audit(&daemon)
        .await
        .into_iter()
        .filter(|a| a.message_id.as_deref() == Some(&refused_id))
        .collect();
    assert!(
        !rows.iter().any(|a| a.action == "urgent_notification"),
        "no notice for a Part 2 message without consent: {rows:#?}"
    );
    for channel in ["sms", "email"] {
        assert!(
            rows.iter().any(|a| a.action == "disclosure_refused"
                && a.actor == "notifier"
                && a.channel.as_deref() == Some(channel)
                && a.detail.as_deref() == Some("part2_consent_required")),
            "{channel}: {rows:#?}"
        );
    }
    assert!(
        rows.iter()
            .any(|a| a.action == "urgent_notification_skipped")
    );
    daemon.wait_terminal(&refused_id, WAIT).await;
    assert!(
        outbox_bodies(&db).is_empty(),
        "nothing in the outbox: {:#?}",
        outbox_bodies(&db)
    );

    let allowed: serde_json::Value = post("p2-ok").await.json().await.expect("json");
    let allowed_id = allowed["id"].as_str().expect("id").to_string();
    wait_for("the notifier's decision", WAIT, done(allowed_id.clone())).await;
    wait_for("the notice in the outbox", WAIT, || async {
        outbox_bodies(&db).iter().any(|f| {
            f["to"] == "+14155550102"
                && f["body"]
                    .as_str()
                    .is_some_and(|b| b.contains("urgent secure message"))
        })
    })
    .await;
    daemon.stop().await;
}
both_databases!(urgent_notice_needs_part2_consent, crate::urgent_notice);

/// Reminders of a Part 2 appointment type: skipped and audited without consent; with it the
/// message is flagged `part2`, so a consent revoked before the send stops it at the worker.
async fn reminder(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FakeProvider::start(Flavor::Twilio).await;
    let mut daemon = TestDaemon::start(config(&db, Some(&provider))).await;
    let reminders = daemon
        .core
        .reminders(daemon.core.templates().expect("templates"));
    let t0 = Utc.timestamp_opt(Utc::now().timestamp(), 0).unwrap();
    let start = (t0 + chrono::Duration::hours(2) + chrono::Duration::minutes(3)).to_rfc3339();
    patient(&daemon, "no", sms("+12125550401"), false).await;
    patient(&daemon, "yes", sms("+12125550402"), true).await;
    patient(&daemon, "late", sms("+12125550403"), true).await;
    let book = |filler: &'static str, who: &'static str| {
        let (daemon, start) = (&daemon, start.clone());
        async move {
            put(
                daemon,
                &format!("/v1/appointments/{filler}"),
                json!({
                "patient": who, "start": start, "status": "booked", "appointment_type": "SUD"}),
            )
            .await
        }
    };
    book("A-NO", "no").await;
    book("A-YES", "yes").await;
    let run = t0 + chrono::Duration::minutes(10);
    let report = reminders.run_once(run).await.expect("run");
    assert_eq!((report.sent, report.skipped), (1, 1), "{report:?}");
    wait_for("the reminder with consent sent", WAIT, || async {
        sends_to(&provider, "+12125550402") == 1
    })
    .await;

    // `late`'s reminder meets a provider outage on its first try; its consent is revoked
    // before the retry.
    provider.script(vec![FakeProvider::twilio_error(
        503,
        20500,
        "Service unavailable",
    )]);
    book("A-LATE", "late").await;
    let report = reminders.run_once(run).await.expect("run");
    assert_eq!((report.sent, report.skipped), (1, 0), "{report:?}");
    wait_for("the outage answered", WAIT, || async {
        sends_to(&provider, "+12125550403") == 1
    })
    .await;
    put(
        &daemon,
        "/v1/patients/late",
        json!({"family_name": "Doe", "consents": [
        {"channel": "*", "purpose": "part2", "recipient": "*", "status": "revoked"}]}),
    )
    .await;

    let plan = |filler: &'static str| {
        let daemon = &daemon;
        async move {
            daemon
                .get_json(&format!("/v1/appointments/{filler}/reminders"))
                .await["touches"]
                .as_array()
                .expect("touches")
                .iter()
                .find(|t| t["touch"] == "sms-2h")
                .cloned()
                .expect("sms-2h touch")
        }
    };
    let no = plan("A-NO").await;
    assert_eq!(no["status"], "skipped");
    assert_eq!(
        no["reason"],
        "Part 2 restricted: no Part 2 consent to remind"
    );
    let rows = refusals_for(&daemon, "no").await;
    assert!(
        rows.iter().any(|a| a.channel.as_deref() == Some("sms")
            && a.recipient.as_deref() == Some("+12125550401")
            && a.detail.as_deref() == Some("part2_consent_required")),
        "an audit row says why: {rows:#?}"
    );

    for (filler, number, status) in [
        ("A-YES", "+12125550402", "sent"),
        ("A-LATE", "+12125550403", "failed"),
    ] {
        let touch = plan(filler).await;
        assert_eq!(touch["status"], "sent", "{touch:#}");
        let message_id = touch["message_id"].as_str().expect("message id");
        let view = wait_settled(&daemon, message_id).await;
        assert_eq!(
            view["part2"], true,
            "a Part 2 reminder is flagged: {view:#}"
        );
        let delivery = &view["deliveries"][0];
        assert_eq!(delivery["status"], status, "{filler}: {view:#}");
        if status == "failed" {
            assert_eq!(delivery["reason"], "part2_consent_required");
            assert_eq!(sends_to(&provider, number), 1, "only the failed first try");
        } else {
            assert!(sends_to(&provider, number) >= 1);
        }
    }
    assert!(
        refusals_for(&daemon, "late")
            .await
            .iter()
            .any(|a| a.detail.as_deref() == Some("part2_consent_required")),
        "the worker's refusal is audited"
    );
    assert_eq!(sends_to(&provider, "+12125550401"), 0);
    daemon.stop().await;
}
both_databases!(reminder_needs_part2_consent, crate::reminder);

/// A recall campaign over a Part 2 recall type: the patient without consent is skipped (and
/// audited; a preview records nothing), the one with consent gets a `part2` message.
async fn campaign(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut daemon = TestDaemon::start(config(&db, None)).await;
    patient(&daemon, "no", sms("+12125550501"), false).await;
    patient(&daemon, "yes", sms("+12125550502"), true).await;
    for (id, who) in [("r-no", "no"), ("r-yes", "yes")] {
        put(
            &daemon,
            &format!("/v1/recalls/{id}"),
            json!({
            "patient": who, "recall_type": "SUD", "due_date": "2027-02-01"}),
        )
        .await;
    }
    let campaigns = Campaigns {
        store: daemon.core.store.clone(),
        messages: daemon.core.messages(),
        config: daemon.core.config.clone(),
        templates: daemon.core.templates().expect("templates"),
    };
    let definition = Campaign {
        name: "Recovery check-in".into(),
        recall_type: Some("SUD".into()),
        due_from: "2027-01-01".into(),
        due_to: "2027-03-31".into(),
        provider: None,
        location: None,
        attempts: 1,
        spacing_days: 7,
        channels: vec!["sms".into()],
        template: "recall".into(),
        ..Campaign::default()
    };
    let id = campaigns
        .create(&daemon.organization_id, &definition, chrono::Utc::now())
        .await
        .expect("campaign");
    let t0 = Utc.with_ymd_and_hms(2027, 1, 4, 15, 0, 0).unwrap();
    let preview = campaigns.preview(&id, t0).await.expect("preview");
    assert_eq!(preview.by_channel.get("sms"), Some(&1), "{preview:?}");
    assert!(
        refusals_for(&daemon, "no").await.is_empty(),
        "a preview records nothing"
    );

    let none = |_: usize, _: usize| {};
    assert_eq!(campaigns.run(&id, t0, 0, &none).await.expect("run"), (1, 1));
    let rows = refusals_for(&daemon, "no").await;
    assert!(
        rows.iter()
            .any(|a| a.recipient.as_deref() == Some("+12125550501")
                && a.detail.as_deref() == Some("part2_consent_required")),
        "{rows:#?}"
    );
    wait_for("the consented patient's message", WAIT, || async {
        outbox_bodies(&db).iter().any(|f| f["to"] == "+12125550502")
    })
    .await;
    assert!(
        !outbox_bodies(&db).iter().any(|f| f["to"] == "+12125550501"),
        "nothing for the patient without consent"
    );
    let messages = daemon.events().await;
    let accepted: Vec<String> = messages["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "message.accepted")
        .filter_map(|e| e["subject_id"].as_str().map(String::from))
        .collect();
    assert_eq!(accepted.len(), 1);
    let view = daemon
        .get_json(&format!("/v1/messages/{}", accepted[0]))
        .await;
    assert_eq!(view["part2"], true, "{view:#}");
    daemon.stop().await;
}
both_databases!(campaign_needs_part2_consent, crate::campaign);

/// "C" to a reminder of a Part 2 appointment: the inline answer (date, time, place) is given
/// only while the patient's Part 2 consent covers their number; the confirmation is recorded
/// either way.
async fn confirm_reply(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FakeProvider::start(Flavor::Twilio).await;
    let mut daemon = TestDaemon::start(config(&db, Some(&provider))).await;
    let reminders = daemon
        .core
        .reminders(daemon.core.templates().expect("templates"));
    let t0 = Utc.timestamp_opt(Utc::now().timestamp(), 0).unwrap();
    let start = (t0 + chrono::Duration::hours(2) + chrono::Duration::minutes(3)).to_rfc3339();
    patient(&daemon, "gone", sms("+12125550601"), true).await;
    patient(&daemon, "kept", sms("+12125550602"), true).await;
    for (filler, who) in [("C-GONE", "gone"), ("C-KEPT", "kept")] {
        put(
            &daemon,
            &format!("/v1/appointments/{filler}"),
            json!({
            "patient": who, "start": start, "status": "booked", "appointment_type": "SUD"}),
        )
        .await;
    }
    let report = reminders
        .run_once(t0 + chrono::Duration::minutes(10))
        .await
        .expect("run");
    assert_eq!(report.sent, 2, "{report:?}");
    wait_for("both reminders sent", WAIT, || async {
        provider.sends().len() == 2
    })
    .await;
    put(
        &daemon,
        "/v1/patients/gone",
        json!({"family_name": "Doe", "consents": [
        {"channel": "*", "purpose": "part2", "recipient": "*", "status": "revoked"}]}),
    )
    .await;

    let twiml = inbound_sms(
        &daemon,
        "SM00000000000000000000000000000c01",
        "+12125550601",
        "C",
    )
    .await;
    assert!(
        !twiml.contains("<Message>"),
        "no answer without consent: {twiml}"
    );
    let appointment = daemon.get_json("/v1/appointments/C-GONE").await;
    assert_eq!(appointment["confirmation"], "confirmed");
    let rows = refusals_for(&daemon, "gone").await;
    assert!(
        rows.iter().any(|a| a.actor == "webhook:twilio"
            && a.recipient.as_deref() == Some("+12125550601")
            && a.detail.as_deref() == Some("part2_consent_required")),
        "{rows:#?}"
    );

    let twiml = inbound_sms(
        &daemon,
        "SM00000000000000000000000000000c02",
        "+12125550602",
        "C",
    )
    .await;
    assert!(
        twiml.contains("<Message>") && twiml.contains("confirmed"),
        "{twiml}"
    );
    let kept = daemon
        .core
        .store
        .patients()
        .by_external_id(&daemon.organization_id, "kept")
        .await
        .expect("patient");
    assert!(
        audit(&daemon).await.iter().any(|a| a.action == "disclosure"
            && a.outcome.as_deref() == Some("answered")
            && a.patient_id.as_deref() == Some(&kept.id)),
        "the inline answer is audited"
    );
    assert_eq!(provider.sends().len(), 2, "answers travel inline only");
    daemon.stop().await;
}
both_databases!(confirm_reply_needs_part2_consent, crate::confirm_reply);
