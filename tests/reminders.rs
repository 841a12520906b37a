//! Appointment reminders with a driven clock, on SQLite and PostgreSQL: a week of runs every
//! 15 minutes across the US spring-forward change, patients in two time zones, quiet hours,
//! fallbacks and every skip reason, reschedule and cancel, answers, and the plan API.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use common::{Backend, TestDaemon, TestDb};
use serde_json::json;
use switchboard::config::OrganizationConfig;
use switchboard::inbound::ReplyRouter;
use switchboard::inbound::keywords::ReminderReply;
use switchboard::reminders::Reminders;

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
        "PUT {path}: {} {}",
        response.status(),
        response.text().await.unwrap_or_default()
    );
}

async fn patient(daemon: &TestDaemon, id: &str, extra: serde_json::Value) {
    let mut body = json!({"family_name": "Test", "given_name": id});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    put(daemon, &format!("/v1/patients/{id}"), body).await;
}

async fn appointment(daemon: &TestDaemon, filler: &str, patient: &str, start: &str, status: &str) {
    put(
        daemon,
        &format!("/v1/appointments/{filler}"),
        json!({
            "patient": patient, "start": start, "status": status, "location": "Main St",
            "reason": "Chemotherapy follow-up", "appointment_type": "FOLLOWUP",
        }),
    )
    .await;
}

async fn plan_of(daemon: &TestDaemon, filler: &str) -> Vec<serde_json::Value> {
    daemon
        .get_json(&format!("/v1/appointments/{filler}/reminders"))
        .await["touches"]
        .as_array()
        .unwrap()
        .clone()
}

fn by_touch(plan: &[serde_json::Value]) -> HashMap<String, serde_json::Value> {
    plan.iter()
        .filter(|t| t["status"] != "cancelled")
        .map(|t| (t["touch"].as_str().unwrap().to_string(), t.clone()))
        .collect()
}

async fn a_week_of_reminders(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.reminders.enabled = false; // the test drives the clock
    config.organizations.insert(
        "north".into(),
        OrganizationConfig {
            display_name: Some("North Clinic".into()),
            time_zone: "America/New_York".into(),
            ..OrganizationConfig::default()
        },
    );
    let mut daemon = TestDaemon::start(config).await;
    let templates = daemon.core.templates().unwrap();
    let reminders: Reminders = daemon.core.reminders(templates);

    // Monday 2027-03-15, the day after US clocks spring forward.
    patient(&daemon, "ny", json!({"contact_points": [
        {"system": "sms", "value": "(212) 555-0101"}, {"system": "email", "value": "ny@example.org"}]})).await;
    patient(
        &daemon,
        "la",
        json!({"time_zone": "America/Los_Angeles",
        "contact_points": [{"system": "sms", "value": "+1 213 555 0102"}], "language": "es"}),
    )
    .await;
    patient(&daemon, "kid", json!({"birth_date": "2016-05-01", "contact_points": [
        {"system": "sms", "value": "+12125550103"}, {"system": "sms", "value": "+12125550104", "use": "guardian"}]})).await;
    patient(&daemon, "kid-alone", json!({"birth_date": "2016-05-01", "contact_points": [{"system": "sms", "value": "+12125550105"}]})).await;
    patient(
        &daemon,
        "optout",
        json!({"contact_points": [{"system": "sms", "value": "+12125550106"}],
        "consents": [{"channel": "sms", "purpose": "*", "status": "revoked", "recipient": "*"}]}),
    )
    .await;
    patient(&daemon, "nocontact", json!({})).await;
    appointment(&daemon, "A-NY", "ny", "2027-03-15T09:00:00-04:00", "booked").await;
    appointment(&daemon, "A-LA", "la", "2027-03-15T09:00:00-07:00", "booked").await;
    appointment(
        &daemon,
        "A-KID",
        "kid",
        "2027-03-15T10:00:00-04:00",
        "booked",
    )
    .await;
    appointment(
        &daemon,
        "A-KID2",
        "kid-alone",
        "2027-03-15T10:00:00-04:00",
        "booked",
    )
    .await;
    appointment(
        &daemon,
        "A-OPT",
        "optout",
        "2027-03-15T11:00:00-04:00",
        "booked",
    )
    .await;
    appointment(
        &daemon,
        "A-NONE",
        "nocontact",
        "2027-03-15T11:00:00-04:00",
        "booked",
    )
    .await;
    appointment(
        &daemon,
        "A-MOVE",
        "ny",
        "2027-03-12T15:00:00-05:00",
        "booked",
    )
    .await;
    appointment(
        &daemon,
        "A-CXL",
        "ny",
        "2027-03-16T15:00:00-04:00",
        "booked",
    )
    .await;

    let mut now = utc("2027-03-05T00:00:00Z");
    let end = utc("2027-03-15T19:00:00Z");
    let mut sent_at: HashMap<String, DateTime<Utc>> = HashMap::new();
    while now <= end {
        reminders.run_once(now).await.expect("run");
        // Mid-week the clinic moves A-MOVE to the next Friday and cancels A-CXL.
        if now == utc("2027-03-10T15:00:00Z") {
            appointment(
                &daemon,
                "A-MOVE",
                "ny",
                "2027-03-19T15:00:00-04:00",
                "booked",
            )
            .await;
            appointment(
                &daemon,
                "A-CXL",
                "ny",
                "2027-03-16T15:00:00-04:00",
                "cancelled",
            )
            .await;
        }
        for filler in ["A-NY", "A-LA", "A-KID"] {
            for t in plan_of(&daemon, filler).await {
                if t["status"] == "sent" {
                    sent_at
                        .entry(format!("{filler}/{}", t["touch"].as_str().unwrap()))
                        .or_insert(now);
                }
            }
        }
        now += chrono::Duration::minutes(15);
    }

    // NY: every touch once, none in quiet hours (local time of sending), 2 h touch held to 8:00.
    let ny: Tz = "America/New_York".parse().unwrap();
    let la: Tz = "America/Los_Angeles".parse().unwrap();
    for (key, at) in &sent_at {
        let zone = if key.starts_with("A-LA") { la } else { ny };
        let hour = at.with_timezone(&zone).hour();
        assert!(
            (8..21).contains(&hour),
            "{key} sent at {} local",
            at.with_timezone(&zone)
        );
    }
    let plan = by_touch(&plan_of(&daemon, "A-NY").await);
    assert_eq!(plan.len(), 3, "{plan:#?}");
    assert!(plan.values().all(|t| t["status"] == "sent"), "{plan:#?}");
    assert_eq!(plan["email-7d"]["channel"], "email");
    assert_eq!(plan["sms-2d"]["channel"], "sms");
    // 2 h before 9:00 EDT is 7:00 — quiet — so 8:00 EDT (12:00Z).
    assert_eq!(plan["sms-2h"]["due_at"], "2027-03-15T12:00:00.000Z");
    // LA (Pacific): no email → the 7-day touch falls back to SMS; 2 h touch at 8:00 PDT.
    let plan = by_touch(&plan_of(&daemon, "A-LA").await);
    assert!(
        plan.values()
            .all(|t| t["status"] == "sent" && t["channel"] == "sms"),
        "{plan:#?}"
    );
    assert_eq!(plan["sms-2h"]["due_at"], "2027-03-15T15:00:00.000Z");
    // The minor is reminded through the guardian's number.
    let plan = by_touch(&plan_of(&daemon, "A-KID").await);
    assert!(plan.values().all(|t| t["status"] == "sent"), "{plan:#?}");
    let message = daemon
        .get_json(&format!(
            "/v1/messages/{}",
            plan["sms-2d"]["message_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(message["deliveries"][0]["recipient"], "+12125550104");
    // Minimum necessary: clinic, date, time, how to confirm; never the reason.
    let body = message["body"].as_str().unwrap();
    assert!(
        body.contains("North Clinic") && body.contains("Reply C to confirm, N to cancel"),
        "{body}"
    );
    assert!(!body.contains("Chemotherapy"), "{body}");
    // Spanish for the LA patient.
    let plan_la = by_touch(&plan_of(&daemon, "A-LA").await);
    let message = daemon
        .get_json(&format!(
            "/v1/messages/{}",
            plan_la["sms-2d"]["message_id"].as_str().unwrap()
        ))
        .await;
    assert!(
        message["body"]
            .as_str()
            .unwrap()
            .contains("le recordamos su cita"),
        "{message:#}"
    );

    // Skips with readable reasons.
    let reason = |plan: &[serde_json::Value], touch: &str| {
        plan.iter()
            .find(|t| t["touch"] == touch)
            .map(|t| {
                (
                    t["status"].as_str().unwrap().to_string(),
                    t["reason"].as_str().unwrap_or("").to_string(),
                )
            })
            .unwrap()
    };
    let p = plan_of(&daemon, "A-KID2").await;
    assert_eq!(
        reason(&p, "sms-2d"),
        ("skipped".into(), "minor without a guardian contact".into())
    );
    let p = plan_of(&daemon, "A-OPT").await;
    assert_eq!(
        reason(&p, "sms-2h"),
        ("skipped".into(), "no consent: opted out of sms".into())
    );
    let p = plan_of(&daemon, "A-NONE").await;
    assert!(
        reason(&p, "email-7d").1.starts_with("no contact point"),
        "{p:#?}"
    );
    // Rescheduled: the pending touch for the old time cancelled, the new time reminded anew.
    let p = plan_of(&daemon, "A-MOVE").await;
    assert!(
        p.iter().any(|t| t["status"] == "cancelled"
            && t["reason"] == "appointment rescheduled"
            && t["for_start"] == "2027-03-12T20:00:00.000Z"),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|t| t["for_start"] == "2027-03-19T19:00:00.000Z"
                && t["touch"] == "email-7d"
                && t["status"] == "sent"),
        "{p:#?}"
    );
    let p = plan_of(&daemon, "A-CXL").await;
    assert!(
        p.iter()
            .filter(|t| t["status"] != "sent")
            .all(|t| t["status"] == "cancelled" && t["reason"] == "appointment cancelled"),
        "{p:#?}"
    );

    // Runs are idempotent: running the last minute again sends nothing new.
    let again = reminders.run_once(end).await.unwrap();
    assert_eq!((again.sent, again.planned), (0, 0));
    let all = daemon.get_json("/v1/events?limit=1000").await;
    let reminder_messages = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "message.accepted")
        .count();
    let sent_touches: usize = {
        let mut n = 0;
        for f in [
            "A-NY", "A-LA", "A-KID", "A-KID2", "A-OPT", "A-NONE", "A-MOVE", "A-CXL",
        ] {
            n += plan_of(&daemon, f)
                .await
                .iter()
                .filter(|t| t["status"] == "sent")
                .count();
        }
        n
    };
    assert_eq!(
        reminder_messages, sent_touches,
        "one message per sent touch"
    );

    // The patient answers: C confirms (status untouched), N asks staff to cancel.
    let ny_patient = daemon
        .core
        .store
        .patient_by_external_id(&daemon.organization_id, "ny")
        .await
        .unwrap();
    let reply = reminders
        .reminder_reply(
            &daemon.organization_id,
            Some(&ny_patient.id),
            "inb_test",
            ReminderReply::Confirm,
        )
        .await
        .unwrap();
    assert!(reply.unwrap().contains("confirmed"));
    let appt = daemon.get_json("/v1/appointments/A-NY").await;
    assert_eq!(appt["confirmation"], "confirmed");
    assert_eq!(appt["status"], "booked", "staff-owned status untouched");
    reminders
        .reminder_reply(
            &daemon.organization_id,
            Some(&ny_patient.id),
            "inb_test2",
            ReminderReply::Decline,
        )
        .await
        .unwrap();
    let events = daemon.get_json("/v1/events?limit=1000").await;
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "appointment.cancel_requested")
    );
    let _ = Duration::ZERO;
    daemon.stop().await;
}
both_databases!(a_week, crate::a_week_of_reminders);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_through_the_api_replace_the_defaults() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = db.config();
    config.reminders.enabled = false;
    let mut daemon = TestDaemon::start(config).await;
    let rules = daemon.get_json("/v1/reminder-rules").await;
    assert_eq!(rules["source"], "config");
    assert_eq!(rules["rules"][0]["touches"].as_array().unwrap().len(), 3);
    let bad = daemon.http.put(daemon.url("/v1/reminder-rules/dental")).bearer_auth(&daemon.key)
        .json(&json!({"id": "dental", "touches": [{"id": "t", "before": "soon", "channels": ["sms"]}]}))
        .send().await.unwrap();
    assert_eq!(bad.status(), 422);
    put(&daemon, "/v1/reminder-rules/dental", json!({"id": "dental", "appointment_types": ["CLEANING"],
        "touches": [{"id": "day-before", "at": "1 business day before at 10:00", "channels": ["sms"]}]})).await;
    let rules = daemon.get_json("/v1/reminder-rules").await;
    assert_eq!(rules["source"], "api");
    assert_eq!(rules["rules"][0]["id"], "dental");
    daemon.stop().await;
    let _ = Utc.timestamp_millis_opt(0);
}
