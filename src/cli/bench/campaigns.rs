//! `switchboard bench --campaign-recalls N`: a recall campaign over N open recalls (one SMS
//! number each) — the dry run (preview), the run that sends one attempt each (accepted,
//! idempotent, the gate's reads per batch of due members), and a rerun with nothing due —
//! beside the reminder send rate of the same bench run (batched checks), the baseline.

use std::time::Instant;

use anyhow::Result;
use chrono::Utc;

use switchboard::campaigns::{Campaign, Campaigns};
use switchboard::config::{Config, OrganizationConfig};
use switchboard::daemon::Core;

/// Runs the campaign benchmark on a scratch database at `url`, files under `dir`.
pub async fn bench(recalls: usize, url: &str, dir: &std::path::Path) -> Result<()> {
    let mut config = Config::from_toml("")?;
    config.data_dir = dir.to_path_buf();
    config.outbox.dir = dir.join("campaign-outbox");
    config.database.url = Some(url.to_string());
    config.reminders.enabled = false;
    config.organizations.insert(
        "campaigns".into(),
        OrganizationConfig {
            time_zone: "UTC".into(),
            ..OrganizationConfig::default()
        },
    );
    let core = Core::open(config).await?;
    let org = core
        .store
        .organizations()
        .ensure("campaigns", "Campaign Bench")
        .await?;
    let seeded = Instant::now();
    core.store
        .campaigns()
        .seed_recalls(&org.id, "BENCH", "2026-01-15", recalls)
        .await?;
    println!(
        "  campaigns    : seeded {recalls} open recalls in {:.1}s",
        seeded.elapsed().as_secs_f64()
    );
    let campaigns = Campaigns {
        store: core.store.clone(),
        messages: core.messages(),
        config: core.config.clone(),
        templates: core.templates()?,
    };
    let definition = Campaign {
        name: "Bench".into(),
        recall_type: Some("BENCH".into()),
        due_from: "2026-01-01".into(),
        due_to: "2026-12-31".into(),
        attempts: 1,
        channels: vec!["sms".into()],
        ..Campaign::default()
    };
    let now = Utc::now();
    let id = campaigns.create(&org.id, &definition, now).await?;
    let none = |_: usize, _: usize| {};

    let started = Instant::now();
    let preview = campaigns.preview(&id, now).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "  campaigns    : preview (dry run) over {} recalls: {secs:.2}s ({:.0}/s)",
        preview.cohort,
        preview.cohort as f64 / secs.max(1e-9)
    );
    let started = Instant::now();
    let (sent, skipped) = campaigns.run(&id, now, 0, &none).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "  campaigns    : run: {sent} sent, {skipped} skipped in {secs:.2}s ({:.0}/s; baseline: the reminder send rate above)",
        (sent + skipped) as f64 / secs.max(1e-9)
    );
    let started = Instant::now();
    let again = campaigns.run(&id, now, 0, &none).await?;
    println!(
        "  campaigns    : rerun, nothing due ({} sent): {:.2}s",
        again.0,
        started.elapsed().as_secs_f64()
    );
    core.store.close().await;
    Ok(())
}
