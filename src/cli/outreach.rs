//! `switchboard reminders ...` and `switchboard campaign ...`: operator commands over the same
//! store a daemon uses. Messages they create are delivered by the running daemon(s).

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::Subcommand;

use switchboard::campaigns::{Campaign, Campaigns};
use switchboard::daemon::Core;

#[derive(Subcommand)]
pub enum RemindersCommand {
    /// Plan and send what is due now (or at --at, RFC 3339, for rehearsals).
    Run {
        #[arg(long)]
        at: Option<String>,
    },
    /// Show an appointment's reminder plan and every skip with its reason.
    Why {
        /// Organization slug.
        #[arg(long)]
        org: String,
        /// Appointment filler id (SCH-2 / the API id).
        appointment: String,
    },
}

#[derive(Subcommand)]
pub enum CampaignCommand {
    /// Create a campaign from a JSON definition file; prints its id.
    Create {
        #[arg(long)]
        org: String,
        /// {"name", "kind", "recall_type", "due_from", "due_to", "appointments_on", "patients",
        /// "attempts", "spacing_days", "channels", "template", "throttle_per_minute", "schedule"}
        file: std::path::PathBuf,
    },
    /// Dry run: counts per channel and skip reason, sample texts. Sends nothing.
    Preview { id: String },
    /// Send the attempts due now, throttled.
    Run {
        id: String,
        /// Messages per minute (0 = as fast as the store takes them); default: the
        /// definition's `throttle_per_minute`, else 60.
        #[arg(long)]
        throttle: Option<u32>,
    },
    /// Pause a campaign's scheduled runs.
    Pause { id: String },
    /// Resume a paused campaign.
    Resume { id: String },
    /// Cancel a campaign for good.
    Cancel { id: String },
    /// Targeted, sent, delivered, failed, confirmed, booked.
    Report { id: String },
}

fn at(text: Option<&str>) -> Result<DateTime<Utc>> {
    match text {
        None => Ok(Utc::now()),
        Some(t) => Ok(DateTime::parse_from_rfc3339(t)
            .with_context(|| format!("--at {t:?} is not RFC 3339"))?
            .with_timezone(&Utc)),
    }
}

pub async fn reminders(core: Core, command: RemindersCommand, json: bool) -> Result<()> {
    let templates = core.templates()?;
    let reminders = core.reminders(templates);
    match command {
        RemindersCommand::Run { at: when } => {
            let when = at(when.as_deref())?;
            let spinner = super::progress::spinner("planning and sending reminders");
            let report = reminders.run_once(when).await?;
            drop(spinner);
            println!(
                "planned {}, sent {}, skipped {}, cancelled {}",
                report.planned, report.sent, report.skipped, report.cancelled
            );
        }
        RemindersCommand::Why { org, appointment } => {
            let org = super::organization(&core, &org).await?;
            let row = core
                .store
                .appointments()
                .by_filler(&org.id, &appointment)
                .await
                .map_err(|e| {
                    super::not_found(e, format!("appointment {appointment} of {}", org.slug))
                })?;
            if json {
                let touches = reminders.why(&row).await?;
                let rfc = switchboard::messages::rfc3339;
                super::print_json(&serde_json::json!({
                    "appointment": {
                        "id": row.filler_id,
                        "start_at": rfc(row.start_at),
                        "status": row.status,
                        "confirmation": row.confirmation,
                    },
                    "touches": touches.iter().map(|t| serde_json::json!({
                        "rule": t.rule_id,
                        "touch": t.touch_id,
                        "due_at": rfc(t.due_at),
                        "status": t.status,
                        "channel": t.channel,
                        "reason": t.reason,
                        "message_id": t.message_id,
                    })).collect::<Vec<_>>(),
                }));
                return Ok(());
            }
            println!(
                "appointment {} at {} ({}){}",
                row.filler_id,
                switchboard::messages::rfc3339(row.start_at),
                row.status,
                row.confirmation
                    .as_deref()
                    .map(|c| format!(", patient answered: {c}"))
                    .unwrap_or_default()
            );
            let touches = reminders.why(&row).await?;
            if touches.is_empty() {
                println!("  no touches planned yet (the next reminder run plans it)");
            }
            for t in touches {
                println!(
                    "  {:<10} {:<10} due {}  {:<9} {}{}",
                    t.rule_id,
                    t.touch_id,
                    switchboard::messages::rfc3339(t.due_at),
                    t.status,
                    t.channel
                        .as_deref()
                        .map(|c| format!("via {c} "))
                        .unwrap_or_default(),
                    t.reason.as_deref().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

pub async fn campaign(core: Core, command: CampaignCommand, json: bool) -> Result<()> {
    let templates = core.templates()?;
    let campaigns = Campaigns {
        store: core.store.clone(),
        messages: core.messages(),
        config: core.config.clone(),
        templates,
    };
    let now = Utc::now();
    match command {
        CampaignCommand::Create { org, file } => {
            let org = super::organization(&core, &org).await?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let campaign: Campaign = serde_json::from_str(&text).context("campaign definition")?;
            let id = campaigns.create(&org.id, &campaign, now).await?;
            println!("{id}");
        }
        CampaignCommand::Preview { id } => {
            let p = campaigns
                .preview(&id, now)
                .await
                .with_context(|| format!("campaign {id}"))?;
            if json {
                super::print_json(&serde_json::json!({
                    "cohort": p.cohort,
                    "due_now": p.due_now,
                    "by_channel": p.by_channel,
                    "skips": p.skips,
                    "samples": p.samples,
                }));
                return Ok(());
            }
            println!(
                "cohort {} (open recalls, nothing booked); due now {}",
                p.cohort, p.due_now
            );
            for (channel, n) in &p.by_channel {
                println!("  would send {n} by {channel}");
            }
            for (reason, n) in &p.skips {
                println!("  would skip {n}: {reason}");
            }
            for sample in &p.samples {
                println!("  sample: {sample}");
            }
        }
        CampaignCommand::Run { id, throttle } => {
            let row = core
                .store
                .campaigns()
                .get(&id)
                .await
                .map_err(|e| super::not_found(e, format!("campaign {id}")))?;
            let throttle = match throttle {
                Some(t) => t,
                None => match switchboard::campaigns::definition(&row)?.throttle_per_minute {
                    0 => 60,
                    t => t,
                },
            };
            let bar = super::progress::bar(0, "sending");
            let progress = |done: usize, total: usize| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            };
            let (sent, skipped) = campaigns
                .run(&id, now, throttle, &progress)
                .await
                .with_context(|| format!("campaign {id}"))?;
            drop(bar);
            println!("sent {sent}, skipped {skipped}");
        }
        CampaignCommand::Pause { id } => transition(&campaigns, &id, "pause").await?,
        CampaignCommand::Resume { id } => transition(&campaigns, &id, "resume").await?,
        CampaignCommand::Cancel { id } => transition(&campaigns, &id, "cancel").await?,
        CampaignCommand::Report { id } => {
            let r = campaigns
                .report(&id, now)
                .await
                .with_context(|| format!("campaign {id}"))?;
            if json {
                super::print_json(&serde_json::json!({
                    "campaign": id,
                    "targeted": r.targeted,
                    "sent": r.sent,
                    "skipped": r.skipped,
                    "delivered": r.delivered,
                    "failed": r.failed,
                    "confirmed": r.confirmed,
                    "booked": r.booked,
                }));
                return Ok(());
            }
            println!(
                "targeted {}  sent {}  skipped {}  delivered {}  failed {}  confirmed {}  booked {}",
                r.targeted, r.sent, r.skipped, r.delivered, r.failed, r.confirmed, r.booked
            );
        }
    }
    Ok(())
}

/// Pause, resume or cancel; prints the campaign's state.
async fn transition(campaigns: &Campaigns, id: &str, action: &str) -> Result<()> {
    let row = campaigns
        .store
        .campaigns()
        .get(id)
        .await
        .map_err(|e| super::not_found(e, format!("campaign {id}")))?;
    let view = campaigns
        .api_transition(&row.organization_id, id, action)
        .await
        .with_context(|| format!("campaign {id}"))?;
    println!("{} {}", view.id, view.state);
    Ok(())
}
