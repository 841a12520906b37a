//! No panics from input, one organization's failure confined to it, on SQLite and PostgreSQL:
//! a reminder rule with an absurd duration is refused with a pointer to the field, and an
//! invalid rule already in the database (as older versions stored them) skips only its
//! organization while the daemon keeps reminding the others.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{Backend, TestDaemon, TestDb};
use serde_json::json;
use switchboard::config::OrganizationConfig;

/// Everything the daemons of this test binary log, for checks on what was logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        captured
    })
}

fn logged() -> String {
    String::from_utf8_lossy(&logs().0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// An organization in UTC with no quiet hours (touches are due exactly at their offset).
fn around_the_clock() -> OrganizationConfig {
    OrganizationConfig {
        time_zone: "UTC".into(),
        quiet_hours_start: "00:00".into(),
        quiet_hours_end: "23:59".into(),
        ..OrganizationConfig::default()
    }
}

async fn put(
    daemon: &TestDaemon,
    key: &str,
    path: &str,
    body: serde_json::Value,
) -> reqwest::Response {
    daemon
        .http
        .put(daemon.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("PUT")
}

async fn get(daemon: &TestDaemon, key: &str, path: &str) -> serde_json::Value {
    let response = daemon
        .http
        .get(daemon.url(path))
        .bearer_auth(key)
        .send()
        .await
        .expect("GET");
    assert!(
        response.status().is_success(),
        "GET {path}: {}",
        response.status()
    );
    response.json().await.expect("json")
}

/// `PUT /v1/reminder-rules/x` with `before: "100000000d"` is a 422 problem naming the field;
/// nothing is stored (the organization still uses the configured rules).
async fn absurd_rule_is_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.reminders.enabled = false;
    let mut daemon = TestDaemon::start(config).await;
    let key = daemon.key.clone();
    let rule = json!({"id": "x", "touches": [
        {"id": "week", "before": "7d", "channels": ["email"]},
        {"id": "forever", "before": "100000000d", "channels": ["sms"]},
    ]});
    let response = put(&daemon, &key, "/v1/reminder-rules/x", rule).await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = response.json().await.expect("problem");
    assert_eq!(problem["pointer"], "/touches/1/before", "{problem:#}");
    assert_eq!(problem["status"], 422);
    let too_many_business_days = json!({"id": "x", "touches": [
        {"id": "t", "at": "4000000000 business days before at 10:00", "channels": ["sms"]},
    ]});
    let response = put(
        &daemon,
        &key,
        "/v1/reminder-rules/x",
        too_many_business_days,
    )
    .await;
    assert_eq!(response.status(), 422);
    let problem: serde_json::Value = response.json().await.expect("problem");
    assert_eq!(problem["pointer"], "/touches/0/at", "{problem:#}");

    let rules = get(&daemon, &key, "/v1/reminder-rules").await;
    assert_eq!(rules["source"], "config", "nothing stored: {rules:#}");
    let stored = daemon
        .core
        .store
        .reminders()
        .rules(&daemon.organization_id)
        .await
        .expect("rules");
    assert!(stored.is_empty());
    daemon.stop().await;
}
both_databases!(absurd_rule, crate::absurd_rule_is_refused);

/// An invalid rule stored for organization `south` (as the old code accepted it) while
/// `north` has a valid appointment: the daemon's scheduled run keeps reminding `north`,
/// `south` is skipped with an error in the log naming only its id, and the reminder task
/// never panicked (`/metrics`).
async fn invalid_stored_rule_skips_only_its_organization(backend: Backend) {
    logs();
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.reminders.schedule = "* * * * * *".into();
    config
        .organizations
        .insert("north".into(), around_the_clock());
    config
        .organizations
        .insert("south".into(), around_the_clock());
    let mut daemon = TestDaemon::start(config).await;
    let north = daemon.key.clone();
    let south = daemon.key_for("south").await;
    let south_id = daemon
        .core
        .store
        .organizations()
        .by_slug("south")
        .await
        .expect("south")
        .id;
    // What `PUT` stored before it checked durations.
    daemon
        .core
        .store
        .reminders()
        .put_rule(
            &south_id,
            "absurd",
            &json!({"id": "absurd", "touches": [
                {"id": "forever", "before": "100000000d", "channels": ["sms"]}
            ]})
            .to_string(),
        )
        .await
        .expect("store the rule");

    let start =
        (Utc::now() + chrono::Duration::hours(2) - chrono::Duration::minutes(1)).to_rfc3339();
    for (key, patient, number) in [
        (&south, "s-pat", "+12125550402"),
        (&north, "n-pat", "+12125550401"),
    ] {
        let response = put(
            &daemon,
            key,
            &format!("/v1/patients/{patient}"),
            json!({"family_name": "Test", "given_name": "Pat",
                   "contact_points": [{"system": "sms", "value": number}]}),
        )
        .await;
        assert!(
            response.status().is_success(),
            "{}\n{}",
            response.status(),
            logged()
        );
        let response = put(
            &daemon,
            key,
            &format!("/v1/appointments/{patient}-appt"),
            json!({"patient": patient, "start": start, "status": "booked"}),
        )
        .await;
        assert!(response.status().is_success(), "{}", response.status());
    }

    let booked = Instant::now();
    loop {
        let plan = get(&daemon, &north, "/v1/appointments/n-pat-appt/reminders").await;
        let sent = plan["touches"].as_array().is_some_and(|t| {
            t.iter()
                .any(|t| t["touch"] == "sms-2h" && t["status"] == "sent")
        });
        if sent {
            break;
        }
        assert!(
            booked.elapsed() < Duration::from_secs(20),
            "north not reminded: {plan:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let plan = get(&daemon, &south, "/v1/appointments/s-pat-appt/reminders").await;
    assert_eq!(plan["touches"], json!([]), "south is not planned: {plan:#}");
    while !logged()
        .lines()
        .any(|l| l.contains("reminder rules invalid") && l.contains(&south_id))
    {
        assert!(
            booked.elapsed() < Duration::from_secs(20),
            "no error logged for south"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = logged()
        .lines()
        .find(|l| l.contains("reminder rules invalid") && l.contains(&south_id))
        .map(String::from)
        .unwrap_or_default();
    assert!(line.contains("/touches/0/before"), "{line}");
    assert!(!line.contains("+1212"), "no PHI in the log: {line}");

    let metrics = daemon
        .http
        .get(daemon.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("switchboard_task_panics_total{task=\"reminders\"} 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_task_restarts_total{task=\"reminders\"} 0\n"),
        "{metrics}"
    );
    daemon.stop().await;
}
both_databases!(
    invalid_stored_rule,
    crate::invalid_stored_rule_skips_only_its_organization
);
