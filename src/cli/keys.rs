//! `switchboard keys create|list|revoke|rotate`: API keys as an operator manages them. A key
//! is printed once, at creation; afterwards only its id, organization, name, scopes and dates
//! are shown. Revocation takes effect on every daemon within `http::CACHE_TTL`.

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use switchboard::daemon::Core;
use switchboard::http::{Scope, format_scopes, parse_scopes};
use switchboard::messages::rfc3339;
use switchboard::store::{NewApiKey, StoreError, now_ms};

/// The longest lifetime `--expires-in` accepts (ten years).
const MAX_LIFETIME_MS: i64 = 10 * 366 * 86_400_000;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create an API key for an organization; prints the key once.
    Create {
        /// Organization slug, e.g. `northclinic`. It must exist, unless `--new-org`.
        #[arg(long)]
        org: String,
        /// Create the organization when it does not exist (without it, an unknown slug is an
        /// error: a typo would otherwise silently start a new tenant).
        #[arg(long)]
        new_org: bool,
        /// Display name of a new organization.
        #[arg(long)]
        org_name: Option<String>,
        /// A label for the key.
        #[arg(long, default_value = "default")]
        name: String,
        /// What the key may do: send, read, admin (comma-separated or repeated).
        #[arg(long, value_delimiter = ',', default_value = "send,read")]
        scopes: Vec<Scope>,
        /// Lifetime: `90d`, `12h`, `30m`, `2w`. Default: no expiry.
        #[arg(long, conflicts_with = "expires_at")]
        expires_in: Option<String>,
        /// Expiry instant: RFC 3339 (`2027-01-31T00:00:00Z`) or a date (`2027-01-31`, 00:00 UTC).
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// List keys (never the keys themselves): id, organization, name, scopes, dates, state.
    List {
        /// Only this organization's keys (slug).
        #[arg(long)]
        org: Option<String>,
    },
    /// Revoke a key: every daemon refuses it within a second.
    Revoke {
        /// Key id (key_...), as `keys list` shows it.
        id: String,
    },
    /// Replace a key: a new key with the same organization, name and scopes is printed once,
    /// and the old one is revoked (or expires after `--overlap`).
    Rotate {
        /// Key id (key_...) of the key to replace.
        id: String,
        /// Keep the old key working this long (`1h`, `1d`) while clients switch. Default: revoke now.
        #[arg(long)]
        overlap: Option<String>,
        /// Lifetime of the new key. Default: the old key's lifetime, or no expiry.
        #[arg(long, conflicts_with = "expires_at")]
        expires_in: Option<String>,
        /// Expiry instant of the new key (RFC 3339 or a date).
        #[arg(long)]
        expires_at: Option<String>,
    },
}

/// Runs one `keys` command.
pub async fn run(core: Core, command: KeysCommand, json: bool) -> Result<()> {
    match command {
        KeysCommand::Create {
            org,
            new_org,
            org_name,
            name,
            scopes,
            expires_in,
            expires_at,
        } => {
            let organization = match core.store.organizations().by_slug(&org).await {
                Ok(organization) => organization,
                Err(StoreError::NotFound) if new_org => {
                    core.store
                        .organizations()
                        .ensure(&org, org_name.as_deref().unwrap_or(&org))
                        .await?
                }
                Err(StoreError::NotFound) => {
                    let unknown = super::unknown_organization(&core, &org).await;
                    bail!("{unknown}; add --new-org to create it");
                }
                Err(e) => return Err(e.into()),
            };
            if scopes.is_empty() {
                bail!("give at least one scope: send, read, admin");
            }
            let now = now_ms();
            let expires_at = expiry(now, expires_in.as_deref(), expires_at.as_deref())?;
            let (id, token) = create(&core, &organization.id, &name, &scopes, expires_at).await?;
            eprintln!(
                "API key {id} for organization {} ({}), scopes {}, {}; shown once, store it now:",
                organization.slug,
                organization.id,
                format_scopes(&scopes).replace(' ', ","),
                describe_expiry(expires_at),
            );
            println!("{token}");
        }
        KeysCommand::List { org } => {
            let organization_id = match org {
                Some(slug) => Some(super::organization(&core, &slug).await?.id),
                None => None,
            };
            let keys = core
                .store
                .api_keys()
                .list(organization_id.as_deref())
                .await?;
            let now = now_ms();
            let state = |key: &switchboard::store::ApiKeyRow| match (key.revoked_at, key.expires_at)
            {
                (Some(_), _) => "revoked",
                (None, Some(at)) if at <= now => "expired",
                _ => "active",
            };
            if json {
                super::print_json(&serde_json::Value::Array(
                    keys.iter()
                        .map(|key| {
                            serde_json::json!({
                                "id": key.id,
                                "organization": key.organization_slug,
                                "name": key.name,
                                "scopes": parse_scopes(&key.scopes)
                                    .iter()
                                    .map(|s| s.as_str())
                                    .collect::<Vec<_>>(),
                                "created_at": rfc3339(key.created_at),
                                "expires_at": key.expires_at.map(rfc3339),
                                "revoked_at": key.revoked_at.map(rfc3339),
                                "state": state(key),
                            })
                        })
                        .collect(),
                ));
                return Ok(());
            }
            if keys.is_empty() {
                println!("no API keys");
                return Ok(());
            }
            println!(
                "{:<30}  {:<16}  {:<12}  {:<16}  {:<24}  {:<24}  STATE",
                "ID", "ORGANIZATION", "NAME", "SCOPES", "CREATED", "EXPIRES"
            );
            for key in keys {
                let state = match (key.revoked_at, key.expires_at) {
                    (Some(at), _) => format!("revoked {}", rfc3339(at)),
                    (None, Some(at)) if at <= now => "expired".to_string(),
                    _ => "active".to_string(),
                };
                println!(
                    "{:<30}  {:<16}  {:<12}  {:<16}  {:<24}  {:<24}  {state}",
                    key.id,
                    key.organization_slug,
                    key.name,
                    format_scopes(&parse_scopes(&key.scopes)).replace(' ', ","),
                    rfc3339(key.created_at),
                    key.expires_at.map_or("never".to_string(), rfc3339),
                );
            }
        }
        KeysCommand::Revoke { id } => match core.store.api_keys().revoke(&id).await {
            Ok(true) => println!("revoked {id}"),
            Ok(false) => println!("{id} was already revoked"),
            Err(StoreError::NotFound) => bail!("no API key {id:?} (see `switchboard keys list`)"),
            Err(e) => return Err(e.into()),
        },
        KeysCommand::Rotate {
            id,
            overlap,
            expires_in,
            expires_at,
        } => {
            let old = match core.store.api_keys().get(&id).await {
                Ok(old) => old,
                Err(StoreError::NotFound) => {
                    bail!("no API key {id:?} (see `switchboard keys list`)")
                }
                Err(e) => return Err(e.into()),
            };
            if old.revoked_at.is_some() {
                bail!("{id} is revoked; create a new key with `switchboard keys create`");
            }
            let now = now_ms();
            let overlap_ms = overlap.as_deref().map(parse_duration).transpose()?;
            let expires_at = match (expires_in.as_deref(), expires_at.as_deref()) {
                (None, None) => old
                    .expires_at
                    .map(|at| now.saturating_add(at.saturating_sub(old.created_at))),
                (given_in, given_at) => expiry(now, given_in, given_at)?,
            };
            let scopes = parse_scopes(&old.scopes);
            let (new_id, token) =
                create(&core, &old.organization_id, &old.name, &scopes, expires_at).await?;
            match overlap_ms {
                None | Some(0) => {
                    core.store.api_keys().revoke(&id).await?;
                    eprintln!(
                        "{id} revoked; its replacement {new_id} is shown once, store it now:"
                    );
                }
                Some(ms) => {
                    let until = now.saturating_add(ms);
                    core.store.api_keys().expire(&id, until).await?;
                    eprintln!(
                        "{id} keeps working until {}; its replacement {new_id} is shown once, \
                         store it now:",
                        rfc3339(until)
                    );
                }
            }
            println!("{token}");
        }
    }
    Ok(())
}

async fn create(
    core: &Core,
    organization_id: &str,
    name: &str,
    scopes: &[Scope],
    expires_at: Option<i64>,
) -> Result<(String, String)> {
    let token = switchboard::http::new_token()?;
    let id = core
        .store
        .api_keys()
        .create(&NewApiKey {
            organization_id: organization_id.to_string(),
            name: name.to_string(),
            key_hash: switchboard::http::hash_token(&token),
            scopes: format_scopes(scopes),
            expires_at,
        })
        .await?;
    Ok((id, token))
}

fn describe_expiry(expires_at: Option<i64>) -> String {
    match expires_at {
        Some(at) => format!("expires {}", rfc3339(at)),
        None => "no expiry".into(),
    }
}

/// The expiry instant from `--expires-in` or `--expires-at` (at most one is given).
fn expiry(now: i64, expires_in: Option<&str>, expires_at: Option<&str>) -> Result<Option<i64>> {
    let at = match (expires_in, expires_at) {
        (Some(lifetime), _) => now.saturating_add(parse_duration(lifetime)?),
        (None, Some(instant)) => parse_instant(instant)?,
        (None, None) => return Ok(None),
    };
    if at <= now {
        bail!("the expiry {} is not in the future", rfc3339(at));
    }
    Ok(Some(at))
}

/// `90d`, `12h`, `30m`, `45s`, `2w` → milliseconds (at most ten years).
pub fn parse_duration(text: &str) -> Result<i64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .with_context(|| format!("{text:?}: give a number and a unit (s, m, h, d, w), e.g. 90d"))?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number
        .parse()
        .with_context(|| format!("{text:?}: give a number and a unit, e.g. 90d"))?;
    let unit_ms: i64 = match unit.trim() {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        other => bail!("{text:?}: unknown unit {other:?} (s, m, h, d, w)"),
    };
    n.checked_mul(unit_ms)
        .filter(|ms| *ms <= MAX_LIFETIME_MS)
        .with_context(|| format!("{text:?} is longer than ten years"))
}

/// RFC 3339, or a date (`2027-01-31`, 00:00 UTC) → unix ms.
fn parse_instant(text: &str) -> Result<i64> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(at.timestamp_millis());
    }
    let date = chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").with_context(|| {
        format!("{text:?}: give an RFC 3339 instant (2027-01-31T00:00:00Z) or a date (2027-01-31)")
    })?;
    Ok(date
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90d").expect("90d"), 90 * 86_400_000);
        assert_eq!(parse_duration("2w").expect("2w"), 14 * 86_400_000);
        assert_eq!(parse_duration("30m").expect("30m"), 1_800_000);
        assert!(parse_duration("90").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("99999999999999999w").is_err());
        assert!(parse_duration("4000d").is_err());
    }

    #[test]
    fn instants() {
        assert_eq!(
            parse_instant("2027-01-31").expect("date"),
            parse_instant("2027-01-31T00:00:00Z").expect("rfc3339")
        );
        assert!(parse_instant("31/01/2027").is_err());
        assert!(expiry(now_ms(), None, Some("2001-01-01")).is_err());
    }
}
