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
    let all = daemon.events().await;
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
        .patients()
        .by_external_id(&daemon.organization_id, "ny")
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
    assert!(reply.unwrap().text.contains("confirmed"));
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
    let events = daemon.events().await;
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

/// An organization in UTC with no quiet hours (touches are due exactly at their offset).
fn around_the_clock(cap_per_day: u32) -> OrganizationConfig {
    OrganizationConfig {
        display_name: Some("North Clinic".into()),
        time_zone: "UTC".into(),
        quiet_hours_start: "00:00".into(),
        quiet_hours_end: "23:59".into(),
        reminder_cap_per_day: cap_per_day,
        reminder_cap_per_week: 10,
        part2_appointment_types: vec!["SUD".into()],
        ..OrganizationConfig::default()
    }
}

/// A daemon whose organization "north" is [`around_the_clock`] with `cap_per_day`, the
/// reminder cron off (the test drives the clock), and its reminders. Keep the database.
async fn north_around_the_clock(
    backend: Backend,
    cap_per_day: u32,
) -> (TestDb, TestDaemon, Reminders) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.reminders.enabled = false;
    config
        .organizations
        .insert("north".into(), around_the_clock(cap_per_day));
    let daemon = TestDaemon::start(config).await;
    let reminders = daemon.core.reminders(daemon.core.templates().unwrap());
    (db, daemon, reminders)
}

fn status_of(plan: &[serde_json::Value], touch: &str) -> (String, String, String) {
    plan.iter()
        .find(|t| t["touch"] == touch)
        .map(|t| {
            (
                t["status"].as_str().unwrap_or("").to_string(),
                t["reason"].as_str().unwrap_or("").to_string(),
                t["message_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .unwrap_or_else(|| panic!("no touch {touch} in {plan:#?}"))
}

/// The send-time checks read a whole batch at once: a frequency cap still counts a reminder
/// sent earlier in the same batch, Part 2 needs its consent, an opt-out recorded for the
/// number (not the patient) holds, and a touch whose message a crashed run accepted is marked
/// with that message instead of getting a second one.
async fn batched_send_checks(backend: Backend) {
    let (_db, mut daemon, reminders) = north_around_the_clock(backend, 1).await;
    let t0 = Utc.timestamp_opt(Utc::now().timestamp(), 0).unwrap();
    let at = |minutes: i64| {
        (t0 + chrono::Duration::hours(2) + chrono::Duration::minutes(minutes)).to_rfc3339()
    };
    let sms = |n: &str| json!({"contact_points": [{"system": "sms", "value": n}]});
    patient(&daemon, "capped", sms("+12125550201")).await;
    patient(&daemon, "sud", sms("+12125550202")).await;
    patient(
        &daemon,
        "sud-ok",
        json!({"contact_points": [{"system": "sms", "value": "+12125550203"}],
            "consents": [{"channel": "*", "purpose": "part2", "status": "granted", "recipient": "*"}]}),
    )
    .await;
    patient(&daemon, "number-out", sms("+12125550204")).await;
    patient(&daemon, "replay", sms("+12125550205")).await;
    for (filler, who, minutes, kind) in [
        ("C-1", "capped", 1, "FOLLOWUP"),
        ("C-2", "capped", 2, "FOLLOWUP"),
        ("S-1", "sud", 3, "SUD"),
        ("S-2", "sud-ok", 3, "SUD"),
        ("N-1", "number-out", 4, "FOLLOWUP"),
        ("R-1", "replay", 5, "FOLLOWUP"),
    ] {
        put(
            &daemon,
            &format!("/v1/appointments/{filler}"),
            json!({"patient": who, "start": at(minutes), "status": "booked", "appointment_type": kind}),
        )
        .await;
    }
    daemon
        .core
        .store
        .consents()
        .record(&switchboard::store::ConsentChange {
            organization_id: daemon.organization_id.clone(),
            patient_id: None,
            channel: "sms".into(),
            purpose: "*".into(),
            recipient: "+12125550204".into(),
            status: "revoked".into(),
            source: "sms-keyword".into(),
        })
        .await
        .unwrap();
    reminders.plan(t0).await.unwrap();

    // A run accepted R-1's reminder and died before marking the touch.
    let r1 = daemon
        .core
        .store
        .appointments()
        .by_filler(&daemon.organization_id, "R-1")
        .await
        .unwrap();
    let touch = daemon
        .core
        .store
        .reminders()
        .touches_of(&r1.id)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.touch_id == "sms-2h" && t.status == "planned")
        .expect("planned 2-hour touch");
    let earlier = daemon
        .core
        .messages()
        .accept(
            &daemon.organization_id,
            &switchboard::messages::SendRequest::notice(
                Some("replay".into()),
                "sms",
                "+12125550205".into(),
                None,
                "Reminder from before the crash".into(),
                serde_json::Map::new(),
            ),
            Some(&format!("touch:{}", touch.id)),
        )
        .await
        .unwrap();

    let report = reminders
        .run_once(t0 + chrono::Duration::minutes(10))
        .await
        .unwrap();
    assert_eq!((report.sent, report.skipped), (3, 3), "{report:?}");
    let c1 = status_of(&plan_of(&daemon, "C-1").await, "sms-2h");
    assert_eq!(c1.0, "sent");
    let c2 = status_of(&plan_of(&daemon, "C-2").await, "sms-2h");
    assert_eq!(c2.0, "skipped");
    assert!(c2.1.starts_with("frequency cap: 1 today"), "{c2:?}");
    let s1 = status_of(&plan_of(&daemon, "S-1").await, "sms-2h");
    assert_eq!(
        (s1.0.as_str(), s1.1.as_str()),
        ("skipped", "Part 2 restricted: no Part 2 consent to remind")
    );
    assert_eq!(
        status_of(&plan_of(&daemon, "S-2").await, "sms-2h").0,
        "sent"
    );
    let n1 = status_of(&plan_of(&daemon, "N-1").await, "sms-2h");
    assert_eq!(
        (n1.0.as_str(), n1.1.as_str()),
        ("skipped", "no consent: opted out of sms")
    );
    let r1 = status_of(&plan_of(&daemon, "R-1").await, "sms-2h");
    assert_eq!(
        (r1.0.as_str(), r1.2.as_str()),
        ("sent", earlier.message_id.as_str())
    );
    let message = daemon.get_json(&format!("/v1/messages/{}", c1.2)).await;
    assert_eq!(message["deliveries"][0]["recipient"], "+12125550201");
    assert!(
        message["body"].as_str().unwrap().contains("North Clinic"),
        "{message:#}"
    );

    // Nothing more to do; one message per sent touch (R-1's is the one from before the crash).
    let again = reminders
        .run_once(t0 + chrono::Duration::minutes(11))
        .await
        .unwrap();
    assert_eq!((again.sent, again.skipped), (0, 0));
    let events = daemon.events().await;
    let accepted = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "message.accepted")
        .count();
    assert_eq!(accepted, 3);
    daemon.stop().await;
}
both_databases!(batched_checks, crate::batched_send_checks);

/// Touches are recorded a day ahead of their time (`reminders.plan_ahead_hours`), not a week:
/// the plan API computes the rest; a touch whose time had passed when the appointment was
/// booked is explained there but gets no row; later runs record each touch as it comes into
/// the window, looking only at the appointments that came in.
async fn touches_are_recorded_a_day_ahead(backend: Backend) {
    let (_db, mut daemon, reminders) = north_around_the_clock(backend, 10).await;
    patient(
        &daemon,
        "p",
        json!({"contact_points": [{"system": "sms", "value": "+12125550301"},
            {"system": "email", "value": "p@example.org"}]}),
    )
    .await;
    let t0 = Utc.timestamp_opt(Utc::now().timestamp(), 0).unwrap();
    let hours = chrono::Duration::hours;
    let far = t0 + hours(240);
    let near = t0 + hours(60);
    appointment(&daemon, "FAR", "p", &far.to_rfc3339(), "booked").await;
    appointment(&daemon, "NEAR", "p", &near.to_rfc3339(), "booked").await;
    let rows = |filler: &'static str| {
        let store = daemon.core.store.clone();
        let org = daemon.organization_id.clone();
        async move {
            let a = store.appointments().by_filler(&org, filler).await.unwrap();
            let mut touches: Vec<String> = store
                .reminders()
                .touches_of(&a.id)
                .await
                .unwrap()
                .into_iter()
                .map(|t| format!("{} {}", t.touch_id, t.status))
                .collect();
            touches.sort();
            touches
        }
    };
    let ms = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);

    // Only NEAR's 2-day touch (due in 12 h) comes inside the first day.
    let first = reminders.plan(t0).await.unwrap();
    assert_eq!(first.planned, 1, "{first:?}");
    assert!(rows("FAR").await.is_empty());
    assert_eq!(rows("NEAR").await, ["sms-2d planned"]);
    // The API shows the whole plan all the same.
    let plan = plan_of(&daemon, "FAR").await;
    assert_eq!(plan.len(), 3, "{plan:#?}");
    for (touch, lead) in [("email-7d", 168), ("sms-2d", 48), ("sms-2h", 2)] {
        let t = plan.iter().find(|t| t["touch"] == touch).unwrap();
        assert_eq!(t["status"], "planned", "{t}");
        assert_eq!(t["due_at"], ms(far - hours(lead)), "{t}");
    }
    let plan = plan_of(&daemon, "NEAR").await;
    let (status, reason, _) = status_of(&plan, "email-7d");
    assert_eq!(status, "skipped");
    assert!(
        reason.starts_with("too soon: booked after the touch time"),
        "{reason}"
    );
    assert_eq!(status_of(&plan, "sms-2h").0, "planned");

    // A minute later nothing has come in.
    let again = reminders
        .plan(t0 + chrono::Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(again.planned, 0, "{again:?}");
    // Two days on: FAR's 7-day touch (due within the day) and NEAR's 2-hour touch come in.
    let later = reminders.plan(t0 + hours(49)).await.unwrap();
    assert_eq!(later.planned, 2, "{later:?}");
    assert_eq!(rows("FAR").await, ["email-7d planned"]);
    assert_eq!(rows("NEAR").await, ["sms-2d planned", "sms-2h planned"]);
    daemon.stop().await;
}

both_databases!(
    recorded_a_day_ahead,
    crate::touches_are_recorded_a_day_ahead
);

/// The daemon's cron worker fires the run on its schedule (here every second): an appointment
/// booked after start-up is reminded within seconds, without anyone calling `run_once`; and a
/// shutdown stops the worker and releases the lease.
async fn the_daemon_reminds_on_schedule(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.reminders.schedule = "* * * * * *".into();
    config
        .organizations
        .insert("north".into(), around_the_clock(3));
    let mut daemon = TestDaemon::start(config).await;
    // Let the start-up pass finish first: what follows is the schedule's doing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    patient(
        &daemon,
        "ticked",
        json!({"contact_points": [{"system": "sms", "value": "+12125550301"}]}),
    )
    .await;
    let start = Utc::now() + chrono::Duration::hours(2) - chrono::Duration::minutes(1);
    appointment(&daemon, "T-1", "ticked", &start.to_rfc3339(), "booked").await;
    let booked = std::time::Instant::now();
    loop {
        let plan = plan_of(&daemon, "T-1").await;
        if plan
            .iter()
            .any(|t| t["touch"] == "sms-2h" && t["status"] == "sent")
        {
            break;
        }
        assert!(
            booked.elapsed() < Duration::from_secs(10),
            "not reminded on schedule: {plan:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outbox = db.outbox();
    while common::count_files(&outbox) < 1 {
        assert!(booked.elapsed() < Duration::from_secs(20), "not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lease = daemon.core.store.leases().get("reminders").await.unwrap();
    assert!(lease.is_some(), "the running daemon holds the lease");
    tokio::time::timeout(Duration::from_secs(30), daemon.stop())
        .await
        .expect("the daemon stops");
    assert_eq!(
        daemon.core.store.leases().get("reminders").await.unwrap(),
        None,
        "the lease is released at shutdown"
    );
}
both_databases!(on_schedule, crate::the_daemon_reminds_on_schedule);

/// Two daemons' cron workers on one PostgreSQL database, ticking at the same seconds: one
/// holds the lease and runs every pass, the other skips each tick; every reminder goes out
/// once. When the holder stops (releasing the lease) the other takes over at its next tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cron_workers_share_one_run() {
    use switchboard::reminders::cron::ReminderCron;
    use tokio_util::sync::CancellationToken;

    let db = TestDb::new(Backend::Postgres).await;
    let mut config = db.config();
    config.reminders.enabled = false;
    config.reminders.schedule = "* * * * * *".into();
    config
        .organizations
        .insert("north".into(), around_the_clock(3));
    let core_a = switchboard::daemon::Core::open(config.clone())
        .await
        .unwrap();
    let core_b = switchboard::daemon::Core::open(config.clone())
        .await
        .unwrap();
    let org = core_a
        .store
        .organizations()
        .ensure("north", "North Clinic")
        .await
        .unwrap();
    const DUE: usize = 100;
    let start = Utc::now().timestamp_millis() + 2 * 3_600_000 - 60_000;
    core_a
        .store
        .reminders()
        .seed_appointments(&org.id, "pair", &vec![start; DUE])
        .await
        .unwrap();
    let schedule = config.reminders.cron_schedule().unwrap();
    let cron = |core: &switchboard::daemon::Core, holder: &str| {
        ReminderCron::new(
            core.reminders(core.templates().unwrap()),
            holder.to_string(),
            schedule.clone(),
        )
    };
    let (a, b) = (cron(&core_a, "node-a:1"), cron(&core_b, "node-b:1"));
    let stats = [a.stats(), b.stats()];
    let stops = [CancellationToken::new(), CancellationToken::new()];
    let mut handles = [
        Some(tokio::spawn(a.run(stops[0].clone()))),
        Some(tokio::spawn(b.run(stops[1].clone()))),
    ];
    let started = std::time::Instant::now();
    while stats.iter().all(|s| s.counts().passes < 2) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no second pass: {:?} {:?}",
            stats[0].counts(),
            stats[1].counts()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let counts = [stats[0].counts(), stats[1].counts()];
    let holder = usize::from(counts[0].passes == 0);
    let other = 1 - holder;
    assert!(
        counts[holder].passes >= 2 && counts[other].passes == 0,
        "one daemon runs every pass: {counts:?}"
    );
    assert!(counts[other].leased_elsewhere >= 2, "{counts:?}");
    let names = ["node-a:1", "node-b:1"];
    let lease = core_a.store.leases().get("reminders").await.unwrap();
    assert_eq!(lease.map(|(h, _)| h).as_deref(), Some(names[holder]));
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let (sent, distinct): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT message_id) FROM reminder_touches WHERE status = 'sent'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((sent, distinct), (DUE as i64, DUE as i64));
    let (messages,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(messages, DUE as i64, "one message per reminder");

    // The holder stops: its worker ends, the lease is released, the other takes over.
    stops[holder].cancel();
    tokio::time::timeout(Duration::from_secs(10), handles[holder].take().unwrap())
        .await
        .expect("the cron worker stops on shutdown")
        .unwrap();
    let stopped = std::time::Instant::now();
    while stats[other].counts().passes == 0 {
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "no takeover: {:?}",
            stats[other].counts()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lease = core_a.store.leases().get("reminders").await.unwrap();
    assert_eq!(lease.map(|(h, _)| h).as_deref(), Some(names[other]));
    stops[other].cancel();
    tokio::time::timeout(Duration::from_secs(10), handles[other].take().unwrap())
        .await
        .expect("the cron worker stops on shutdown")
        .unwrap();
    pool.close().await;
    core_a.store.close().await;
    core_b.store.close().await;
}
