//! `switchboard direct receive` and `switchboard direct quarantine list|show|release`: the
//! operator's side of inbound Direct (`switchboard::direct::inbound`). `receive` runs raw
//! messages, as fetched from a HISP mailbox, through exactly the daemon's inbound path.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use switchboard::channels::direct::NotificationSink;
use switchboard::daemon::Core;
use switchboard::direct::inbound::{DirectInbound, Outcome, Taken};
use switchboard::queue::direct::StoreNotifications;

/// `receive` quarantined at least one message: the binary exits with status 3.
#[derive(Debug, thiserror::Error)]
#[error("{0} message(s) quarantined")]
pub struct SomeQuarantined(pub usize);

#[derive(Subcommand)]
pub enum QuarantineCommand {
    /// Quarantined Direct messages, newest first (every organization, or one).
    List {
        /// Only this organization (slug).
        #[arg(long)]
        org: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// One quarantined message: the failing check, its reason and the item's steps.
    Show { id: String },
    /// Run security processing again (after adding an anchor, a CRL being back…): the message
    /// is filed and answered if it now passes, else stays quarantined with the new reason.
    Release { id: String },
}

fn inbound(core: &Core) -> Result<DirectInbound> {
    let tenancy = Arc::new(switchboard::tenancy::Tenancy::from_config(&core.config)?);
    Ok(core.direct_inbound(tenancy)?)
}

/// `direct receive [--connector NAME] FILE...`: one line per file, `FILE: ID OUTCOME [REASON]`.
pub async fn receive(core: Core, connector: Option<String>, files: &[PathBuf]) -> Result<()> {
    let inbound = inbound(&core)?;
    let connector = match connector {
        Some(name) => name,
        None => {
            let names: Vec<&str> = inbound.connectors().collect();
            match names.as_slice() {
                [one] => one.to_string(),
                [] => bail!("no Direct connector is configured"),
                _ => bail!(
                    "several Direct connectors are configured ({}): name one with --connector",
                    names.join(", ")
                ),
            }
        }
    };
    let mut quarantined = 0;
    for file in files {
        let raw = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        match inbound.take(&connector, &raw).await? {
            Taken::Item(receipt) => {
                if receipt.outcome == Outcome::Quarantined {
                    quarantined += 1;
                }
                println!(
                    "{}: {} {}{}",
                    file.display(),
                    receipt.item_id,
                    receipt.outcome,
                    receipt
                        .reason
                        .filter(|_| receipt.outcome != Outcome::Filed)
                        .map(|r| format!(" {r}"))
                        .unwrap_or_default()
                );
            }
            Taken::Notification { inner, sender } => {
                let sink = StoreNotifications {
                    store: core.store.clone(),
                };
                let applied =
                    match switchboard::channels::direct::tracker::read_opened(&inner, &sender) {
                        Ok(tracked) => {
                            let mut applied = 0;
                            for t in &tracked {
                                if sink
                                    .apply(&connector, t)
                                    .await
                                    .map_err(|e| anyhow::anyhow!(e))?
                                    .is_some()
                                {
                                    applied += 1;
                                }
                            }
                            format!("{applied} applied")
                        }
                        Err(why) => format!("ignored: {why}"),
                    };
                println!("{}: - notification {applied}", file.display());
            }
        }
    }
    if quarantined > 0 {
        return Err(SomeQuarantined(quarantined).into());
    }
    Ok(())
}

fn at(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

pub async fn quarantine(core: Core, command: QuarantineCommand, json: bool) -> Result<()> {
    match command {
        QuarantineCommand::List { org, limit } => {
            let organization_id = match org {
                Some(slug) => Some(super::organization(&core, &slug).await?.id),
                None => None,
            };
            let items = core
                .store
                .direct()
                .quarantined(organization_id.as_deref(), limit.clamp(1, 10_000))
                .await?;
            if json {
                super::print_json(&serde_json::Value::Array(
                    items
                        .iter()
                        .map(|item| {
                            serde_json::json!({
                                "id": item.id,
                                "created_at": at(item.created_at),
                                "organization_id": item.organization_id,
                                "connector": item.connector,
                                "reason": item.reason,
                                "retry_at": item.retry_at.map(at),
                            })
                        })
                        .collect(),
                ));
                return Ok(());
            }
            if items.is_empty() {
                eprintln!("no quarantined Direct messages");
            }
            for item in items {
                println!(
                    "{}  {}  {}  via {}  {}{}",
                    item.id,
                    at(item.created_at),
                    item.organization_id,
                    item.connector.as_deref().unwrap_or("-"),
                    item.reason.as_deref().unwrap_or("-"),
                    item.retry_at
                        .map(|t| format!("  (retry at {})", at(t)))
                        .unwrap_or_default()
                );
            }
        }
        QuarantineCommand::Show { id } => {
            let item = core
                .store
                .inbound()
                .item_by_id(&id)
                .await
                .map_err(|e| super::not_found(e, format!("inbound item {id}")))?;
            if item.channel != "direct" {
                bail!("{id} is not a Direct item");
            }
            println!("id:           {}", item.id);
            println!("organization: {}", item.organization_id);
            println!("connector:    {}", item.connector.as_deref().unwrap_or("-"));
            println!("from:         {}", item.sender);
            println!("to:           {}", item.recipient.as_deref().unwrap_or("-"));
            println!("status:       {}", item.status);
            println!(
                "check:        {}",
                item.quarantine_check.as_deref().unwrap_or("-")
            );
            println!("reason:       {}", item.reason.as_deref().unwrap_or("-"));
            if let Some(t) = item.retry_at {
                println!("retry at:     {}", at(t));
            }
            println!("received:     {}", at(item.created_at));
            for step in core
                .store
                .inbound()
                .steps(&item.organization_id, &item.id)
                .await?
            {
                println!(
                    "  {}  {:<12} -> {}  {}",
                    at(step.created_at),
                    step.step,
                    step.status,
                    step.detail.unwrap_or_default()
                );
            }
        }
        QuarantineCommand::Release { id } => {
            let inbound = inbound(&core)?;
            let actor = format!(
                "cli:{}",
                std::env::var("USER").unwrap_or_else(|_| "operator".into())
            );
            let receipt = inbound
                .release(None, &id, &actor)
                .await
                .with_context(|| format!("quarantined item {id}"))?;
            println!(
                "{}: {}{}",
                receipt.item_id,
                receipt.outcome,
                receipt
                    .reason
                    .filter(|_| receipt.outcome != Outcome::Filed)
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}
