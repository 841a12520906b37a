//! `switchboard bench --reminder-appointments N`: planning time for N appointments spread over
//! the next 7 days, then the send rate (due touches → accepted messages) and the delivery rate
//! to the outbox sink for the touches due now.

use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::Utc;

use switchboard::config::{Config, OrganizationConfig};
use switchboard::daemon::{self, Core};

/// Runs the reminder benchmark on a scratch database at `url`, files under `dir`.
pub async fn bench(
    appointments: usize,
    due_now: usize,
    url: &str,
    dir: &std::path::Path,
) -> Result<()> {
    let mut config = Config::from_toml("")?;
    config.data_dir = dir.to_path_buf();
    config.outbox.dir = dir.join("reminder-outbox");
    config.database.url = Some(url.to_string());
    config.server.listen = "127.0.0.1:0".parse()?;
    config.reminders.enabled = false;
    config.organizations.insert(
        "reminders".into(),
        OrganizationConfig {
            time_zone: "UTC".into(),
            quiet_hours_start: "00:00".into(),
            quiet_hours_end: "23:59".into(),
            reminder_cap_per_day: 100,
            reminder_cap_per_week: 100,
            ..OrganizationConfig::default()
        },
    );
    let core = Core::open(config.clone()).await?;
    let org = core
        .store
        .organizations()
        .ensure("reminders", "Reminder Bench")
        .await?;
    let now = Utc::now();
    let now_ms = now.timestamp_millis();
    let week = 7 * 86_400_000_i64;
    let n = i64::try_from(appointments.max(1)).unwrap_or(1);
    let starts: Vec<i64> = (0..n)
        .map(|i| now_ms + 3 * 3_600_000 + i * (week - 3 * 3_600_000) / n)
        .collect();
    let seeded = Instant::now();
    core.store
        .reminders()
        .seed_appointments(&org.id, "week", &starts)
        .await?;
    // Appointments two hours out: their 2-hour touch is due now.
    let soon: Vec<i64> = (0..due_now)
        .map(|_| now_ms + 2 * 3_600_000 + 60_000)
        .collect();
    core.store
        .reminders()
        .seed_appointments(&org.id, "soon", &soon)
        .await?;
    println!(
        "  reminders    : seeded {} appointments over 7 days + {} due now in {:.1}s",
        appointments,
        due_now,
        seeded.elapsed().as_secs_f64()
    );

    let reminders = core.reminders(core.templates()?);
    let started = Instant::now();
    let report = reminders.plan(now + chrono::Duration::seconds(61)).await?;
    let plan_secs = started.elapsed().as_secs_f64();
    println!(
        "  reminders    : planning run over {} appointments: {:.2}s ({} touches recorded; target ≤ 10 s)",
        appointments + due_now,
        plan_secs,
        report.planned
    );
    let again = Instant::now();
    reminders.plan(now + chrono::Duration::seconds(62)).await?;
    println!(
        "  reminders    : repeat planning run (nothing new): {:.2}s",
        again.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let mut sent = 0;
    loop {
        let (s, k) = reminders
            .send_due(now + chrono::Duration::seconds(62), 1000)
            .await?;
        sent += s;
        if s + k == 0 {
            break;
        }
    }
    let send_secs = started.elapsed().as_secs_f64();
    println!(
        "  reminders    : {sent} due reminders sent (accepted, idempotent) in {send_secs:.2}s ({:.0}/s)",
        sent as f64 / send_secs.max(1e-9)
    );
    core.store.close().await;

    let daemon = daemon::start(config.clone()).await?;
    let started = Instant::now();
    let deadline = Duration::from_secs(600);
    loop {
        let files = std::fs::read_dir(&config.outbox.dir)
            .map(|d| d.count())
            .unwrap_or(0);
        if files as u64 >= sent || started.elapsed() > deadline {
            let secs = started.elapsed().as_secs_f64();
            println!(
                "  reminders    : {files} delivered to the outbox sink in {secs:.2}s ({:.0}/s)",
                files as f64 / secs.max(1e-9)
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.shutdown();
    daemon.wait().await?;
    Ok(())
}
