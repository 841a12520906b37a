//! `switchboard certs import|list|check`: the local certificate store of a Direct connector
//! (a directory, see `discovery::local`) and a dry run of discovery for one address. Output is
//! for the operator's terminal (it names the address asked about); nothing here logs.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};

use switchboard::channels::direct::{direct_connectors, keys, local_store};
use switchboard::config::{
    Config, DirectConnectorConfig, DnsDiscoveryConfig, LdapDiscoveryConfig, RevocationConfig,
};
use switchboard::direct::anchors::Anchors;
use switchboard::direct::discovery::dns::{DnsCerts, resolver};
use switchboard::direct::discovery::ldap::LdapCerts;
use switchboard::direct::discovery::revocation::Fetcher;
use switchboard::direct::discovery::{Discovery, LocalStore, bound_names};
use switchboard::fetch::FetchPolicy;

/// The subcommands.
#[derive(clap::Subcommand)]
pub enum CertsCommand {
    /// Add certificates (PEM, DER or .p7b) to the local store, filed by the address or domain
    /// they bind.
    Import { files: Vec<PathBuf> },
    /// List the local store.
    List,
    /// Show how discovery resolves an address: each lookup and the verdict on each certificate.
    Check { address: String },
}

/// Shared options.
#[derive(clap::Args)]
pub struct CertsArgs {
    /// The Direct connector whose store, anchors and DNS settings to use (default: the only one).
    #[arg(long)]
    pub connector: Option<String>,
    /// Use this store directory instead of the connector's.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CertsCommand,
}

fn connector<'a>(
    config: &'a Config,
    wanted: Option<&str>,
) -> Result<Option<(&'a String, &'a DirectConnectorConfig)>> {
    let mut all = direct_connectors(config);
    match wanted {
        Some(name) => all
            .find(|(n, _)| n.as_str() == name)
            .map(Some)
            .with_context(|| format!("no direct connector named {name}")),
        None => {
            let first = all.next();
            if all.next().is_some() {
                anyhow::bail!("several direct connectors: pick one with --connector");
            }
            Ok(first)
        }
    }
}

pub async fn run(config: &Config, args: &CertsArgs, json: bool) -> Result<()> {
    let conn = connector(config, args.connector.as_deref())?;
    let store = match (&args.dir, conn) {
        (Some(dir), _) => LocalStore::new(dir.clone()),
        (None, Some((_, c))) => local_store(c, &config.data_dir),
        (None, None) => LocalStore::new(config.data_dir.join("direct-certs")),
    };
    match &args.command {
        CertsCommand::Import { files } => {
            if files.is_empty() {
                anyhow::bail!("give at least one certificate file");
            }
            for file in files {
                let bytes =
                    std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
                let stored = store
                    .import(&bytes)
                    .with_context(|| format!("importing {}", file.display()))?;
                for s in stored {
                    println!("imported {} {}", s.name, s.fingerprint);
                }
            }
        }
        CertsCommand::List if json => {
            let listed = store.list()?;
            super::print_json(&serde_json::Value::Array(
                listed
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "name": s.name,
                            "fingerprint": s.fingerprint,
                            "not_after": s.cert.not_after().to_string(),
                            "subject": switchboard::direct::smime::subject_string(&s.cert),
                        })
                    })
                    .collect(),
            ));
        }
        CertsCommand::List => {
            for s in store.list()? {
                println!(
                    "{}\t{}\tnot after {}\t{}",
                    s.name,
                    s.fingerprint,
                    s.cert.not_after(),
                    switchboard::direct::smime::subject_string(&s.cert)
                );
            }
        }
        CertsCommand::Check { address } => {
            let discovery = match conn {
                Some((_, c)) => switchboard::channels::direct::discovery(
                    c,
                    &config.security,
                    &config.data_dir,
                    Arc::new(keys::load_anchors(c)?),
                )?,
                None => {
                    // No connector: the defaults, no anchors (every verdict is a rejection).
                    let (dns, ldap) = (
                        DnsDiscoveryConfig::default(),
                        LdapDiscoveryConfig::default(),
                    );
                    let revocation = RevocationConfig::default();
                    let policy = Arc::new(
                        FetchPolicy::new(
                            &config.security,
                            std::time::Duration::from_secs(revocation.timeout_secs),
                        )
                        .map_err(anyhow::Error::msg)?,
                    );
                    let resolver = resolver(&dns)?;
                    Discovery {
                        local: None,
                        dns: Some(DnsCerts::with_resolver(resolver.clone(), policy.clone())),
                        ldap: Some(LdapCerts::new(&ldap, resolver, policy.clone())),
                        anchors: Arc::new(Anchors::default()),
                        fetcher: Some(Arc::new(Fetcher::new(revocation, policy))),
                    }
                }
            };
            let discovery = Discovery {
                local: Some(store),
                ..discovery
            };
            let found = discovery.find(address, chrono::Utc::now()).await?;
            for step in &found.steps {
                let kind = if step.address_bound {
                    "address"
                } else {
                    "domain"
                };
                for note in &step.notes {
                    println!("{} {kind} {}: {note}", step.source, step.name);
                }
                if step.verdicts.is_empty() {
                    println!("{} {kind} {}: nothing", step.source, step.name);
                }
                for (fp, verdict) in &step.verdicts {
                    match verdict {
                        Ok(()) => println!("{} {kind} {}: {fp} OK", step.source, step.name),
                        Err(v) => {
                            println!("{} {kind} {}: {fp} REJECTED: {v}", step.source, step.name)
                        }
                    }
                }
            }
            if found.certs.is_empty() {
                anyhow::bail!("no trusted certificate for {address}");
            }
            for cert in &found.certs {
                println!("usable: {}", bound_names(cert).join(", "));
            }
        }
    }
    Ok(())
}
