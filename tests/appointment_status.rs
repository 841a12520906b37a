//! Appointment status is a fixed vocabulary (`domain::AppointmentStatus`): HL7 SIU filler
//! status codes (table 0278) and the API's values are read into it, and only a booked
//! appointment gets reminders. An SIU saying DC (discontinued) stops the reminders of an
//! appointment already planned — at send time too, before any plan ran again — and an
//! appointment that arrives discontinued is never planned. On SQLite and PostgreSQL, through
//! the HL7 listener and the reminder run.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use common::{Backend, TestDaemon, TestDb};
use serde_json::json;
use switchboard::config::OrganizationConfig;
use switchboard::hl7::client;
use switchboard::reminders::Reminders;
use switchboard::store::TouchRow;

/// The appointments start on Monday 2030-06-10 at 10:00 in Chicago.
const START: &str = "20300610100000-0500";

async fn start(db: &TestDb) -> (TestDaemon, SocketAddr) {
    let mut config = db.config();
    config.reminders.enabled = false; // the test drives the clock
    config.hl7.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.hl7.organization = "north".into();
    config.hl7.time_zone = "America/Chicago".into();
    config.organizations.insert(
        "north".into(),
        OrganizationConfig {
            display_name: Some("North Clinic".into()),
            time_zone: "America/Chicago".into(),
            ..OrganizationConfig::default()
        },
    );
    let daemon = TestDaemon::start(config).await;
    let addr = daemon
        .daemon
        .as_ref()
        .and_then(|d| d.hl7_addr)
        .expect("hl7 listener");
    (daemon, addr)
}

/// An SIU for appointment `filler` of patient `mrn` (who has a mobile number), with filler
/// status SCH-25 `status`.
fn siu(
    trigger: &str,
    control: &str,
    filler: &str,
    mrn: &str,
    number: &str,
    status: &str,
) -> String {
    let mut sch = vec![""; 26];
    sch[0] = "SCH";
    sch[1] = "P1";
    sch[2] = filler;
    sch[7] = "R^Follow-up";
    sch[8] = "FOLLOWUP^Follow-up visit";
    sch[9] = "30";
    sch[10] = "min";
    let timing = format!("^^30^{START}");
    sch[11] = &timing;
    sch[25] = status;
    format!(
        "MSH|^~\\&|EHR|CLINIC|SB|SB|20300501120000-0500||SIU^{trigger}|{control}|P|2.5.1\r\
         {}\r\
         PID|1||{mrn}^^^CLINIC^MR||Doe^Jane||19800101|F|||||^PRN^CP^^1^212^{number}\r",
        sch.join("|")
    )
}

async fn feed(addr: SocketAddr, message: String) {
    let acks = client::send(&addr.to_string(), &[message], Duration::from_secs(10))
        .await
        .expect("send");
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].0, "AA", "{acks:?}");
}

/// The touches recorded for the appointment (`why` adds the ones still to come, computed
/// as of the wall clock; this test drives its own).
async fn touches(daemon: &TestDaemon, reminders: &Reminders, filler: &str) -> Vec<TouchRow> {
    let appointment = daemon
        .core
        .store
        .appointments()
        .by_filler(&daemon.organization_id, filler)
        .await
        .expect("appointment");
    let mut touches = reminders.why(&appointment).await.expect("touches");
    touches.retain(|t| !t.id.is_empty());
    touches
}

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().expect("time")
}

async fn a_discontinued_appointment_gets_no_reminder(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (mut daemon, addr) = start(&db).await;
    let reminders = daemon
        .core
        .reminders(daemon.core.templates().expect("templates"));

    // Two booked appointments, planned the afternoon before their 2-day touches: only those
    // come inside the day ahead that touches are recorded (the 7-day ones had passed).
    feed(
        addr,
        siu("S12", "M1", "F-DC", "MRN-DC", "5550101", "Booked"),
    )
    .await;
    feed(
        addr,
        siu("S12", "M2", "F-OK", "MRN-OK", "5550102", "Booked"),
    )
    .await;
    let planning = Utc
        .with_ymd_and_hms(2030, 6, 7, 18, 0, 0)
        .single()
        .expect("time");
    let report = reminders.run_once(planning).await.expect("plan");
    assert_eq!(report.planned, 2, "{report:?}");
    assert_eq!(report.sent, 0);
    let dc_plan = touches(&daemon, &reminders, "F-DC").await;
    let first = dc_plan
        .iter()
        .filter(|t| t.status == "planned")
        .min_by_key(|t| t.due_at)
        .expect("a planned touch")
        .clone();
    let ok_first = touches(&daemon, &reminders, "F-OK")
        .await
        .into_iter()
        .filter(|t| t.status == "planned")
        .min_by_key(|t| t.due_at)
        .expect("a planned touch");
    assert_eq!(ok_first.due_at, first.due_at, "both follow the same rule");

    // The EHR discontinues F-DC (S14, filler status DC). Its first touch falls due before
    // any plan runs again: the send-time check must stop it.
    feed(addr, siu("S14", "M3", "F-DC", "MRN-DC", "5550101", "DC")).await;
    let shown = daemon.get_json("/v1/appointments/F-DC").await;
    assert_eq!(shown["status"], "discontinued");
    let (sent, skipped) = reminders
        .send_due(at(first.due_at + 60_000), 500)
        .await
        .expect("send");
    assert_eq!(
        (sent, skipped),
        (1, 1),
        "F-OK's reminder goes, F-DC's does not"
    );
    let after = touches(&daemon, &reminders, "F-DC").await;
    let touch = after.iter().find(|t| t.id == first.id).expect("touch");
    assert_eq!(touch.status, "skipped");
    assert_eq!(touch.reason.as_deref(), Some("appointment discontinued"));
    assert_eq!(touch.message_id, None, "no reminder message was accepted");
    let ok = touches(&daemon, &reminders, "F-OK").await;
    let ok_touch = ok.iter().find(|t| t.id == ok_first.id).expect("touch");
    assert_eq!(ok_touch.status, "sent");
    assert!(ok_touch.message_id.is_some());

    // The next run cancels the rest of F-DC's plan, and sends none of it.
    let report = reminders
        .run_once(at(first.due_at + 120_000))
        .await
        .expect("run");
    assert_eq!(report.sent, 0, "{report:?}");
    for t in touches(&daemon, &reminders, "F-DC").await {
        assert_ne!(t.status, "sent", "{t:?}");
        assert_ne!(t.status, "planned", "{t:?}");
        if t.status == "cancelled" {
            assert_eq!(t.reason.as_deref(), Some("appointment discontinued"));
        }
    }

    // An appointment that arrives discontinued is never planned.
    feed(addr, siu("S12", "M4", "F-NEW", "MRN-NEW", "5550103", "Dc")).await;
    let report = reminders
        .run_once(at(first.due_at + 180_000))
        .await
        .expect("run");
    assert_eq!(report.sent, 0, "{report:?}");
    assert!(touches(&daemon, &reminders, "F-NEW").await.is_empty());
    daemon.stop().await;
}
both_databases!(
    discontinued,
    crate::a_discontinued_appointment_gets_no_reminder
);

async fn put_appointment(daemon: &TestDaemon, filler: &str, status: &str) -> reqwest::Response {
    daemon
        .http
        .put(daemon.url(&format!("/v1/appointments/{filler}")))
        .bearer_auth(&daemon.key)
        .json(&json!({"patient": "p-1", "start": "2030-06-10T10:00:00-05:00", "status": status}))
        .send()
        .await
        .expect("PUT")
}

/// The API reads its values (and HL7's codes) into the vocabulary and refuses the rest with a
/// problem naming the field.
async fn the_api_takes_known_statuses_only(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (mut daemon, _) = start(&db).await;
    let response = daemon
        .http
        .put(daemon.url("/v1/patients/p-1"))
        .bearer_auth(&daemon.key)
        .json(&json!({"family_name": "Roe"}))
        .send()
        .await
        .expect("PUT patient");
    assert!(response.status().is_success());
    for (given, stored) in [
        ("booked", "booked"),
        ("Completed", "completed"),
        ("no-show", "noshow"),
        ("noshow", "noshow"),
        ("canceled", "cancelled"),
        ("DC", "discontinued"),
        ("discontinued", "discontinued"),
        ("arrived", "arrived"),
    ] {
        let response = put_appointment(&daemon, "A-1", given).await;
        assert!(
            response.status().is_success(),
            "{given}: {}",
            response.status()
        );
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["status"], stored, "{given}");
    }
    let response = put_appointment(&daemon, "A-2", "postponed").await;
    assert_eq!(response.status().as_u16(), 422);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let problem: serde_json::Value = response.json().await.expect("problem");
    assert_eq!(problem["pointer"], "/status");
    assert_eq!(problem["errors"][0]["pointer"], "/status");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("postponed") && d.contains("discontinued")),
        "{problem}"
    );
    let missing = daemon
        .http
        .get(daemon.url("/v1/appointments/A-2"))
        .bearer_auth(&daemon.key)
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status().as_u16(), 404, "nothing was stored");
    daemon.stop().await;
}
both_databases!(api, crate::the_api_takes_known_statuses_only);
