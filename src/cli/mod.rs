//! The command line: `run`, `migrate`, `send`, `status`, `keys` (`cli_keys`), `dead-letters`,
//! `bench`. `anyhow` lives here and nowhere deeper.

pub mod bench;
mod certs;
mod direct;
mod doctor;
mod keys;
mod outreach;
use switchboard::progress;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use switchboard::config::Config;
use switchboard::daemon::{self, Core};
use switchboard::messages::{Recipient, SendRequest};
use switchboard::store::StoreError;

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Healthcare interoperability gateway"
)]
pub struct Cli {
    /// Configuration file (TOML). Without one, the embedded default runs: SQLite under ./data,
    /// HTTP on 127.0.0.1:8080, every channel to the local outbox sink.
    #[arg(long, short, global = true, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Print records as JSON (one document on stdout; stable field names, times in RFC 3339)
    /// for scripts: status, keys list, dead-letters, inbound orphans, certs list, campaign
    /// preview/report, reminders why, direct quarantine list, channels.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (HTTP API, delivery workers, sweeper) until SIGTERM/SIGINT.
    Run,
    /// Apply database migrations and exit.
    Migrate,
    /// Queue one message (a running daemon, or the next one started, delivers it).
    Send {
        /// Organization slug.
        #[arg(long)]
        org: String,
        /// Recipient address (phone, email, fax, Direct address).
        #[arg(long)]
        to: String,
        /// The channel to send on (it must be configured: `[channels.<name>]`).
        #[arg(long, value_enum)]
        channel: ChannelArg,
        #[arg(long)]
        subject: Option<String>,
        /// Message body ("-" reads standard input).
        #[arg(long)]
        body: String,
        /// Patient external id (files the message in the patient's open thread).
        #[arg(long)]
        patient: Option<String>,
        #[arg(long)]
        urgent: bool,
    },
    /// Show a message's deliveries and their history.
    Status {
        /// Message id (msg_...).
        id: String,
    },
    /// Manage API keys: create, list, revoke, rotate.
    Keys {
        #[command(subcommand)]
        command: self::keys::KeysCommand,
    },
    /// List deliveries that exhausted their attempts, or retry one.
    DeadLetters {
        #[command(subcommand)]
        command: Option<DeadLettersCommand>,
        /// Only this organization (slug); before or after `list`.
        #[arg(long, global = true)]
        org: Option<String>,
    },
    /// Channels and connectors: their state, and pausing or resuming them (fleet-wide: every
    /// daemon on the database holds a paused channel's deliveries until the resume).
    Channels {
        #[command(subcommand)]
        command: Option<ChannelsCommand>,
        /// The organization whose figures are shown and whose audit log records the change
        /// (slug; may be left out when there is only one).
        #[arg(long, global = true)]
        org: Option<String>,
    },
    /// Inbound items: the operator's quarantine of items no organization owns.
    Inbound {
        #[command(subcommand)]
        command: InboundCommand,
    },
    /// HL7 v2: send files over MLLP, replay archived messages.
    Hl7 {
        #[command(subcommand)]
        command: Hl7Command,
    },
    /// Direct S/MIME interop tools (no daemon needed).
    Direct {
        #[command(subcommand)]
        command: DirectCommand,
    },
    /// Appointment reminders: run now, or explain an appointment's plan.
    Reminders {
        #[command(subcommand)]
        command: self::outreach::RemindersCommand,
    },
    /// Recall campaigns: create, preview (dry run), run (throttled), report.
    Campaign {
        #[command(subcommand)]
        command: self::outreach::CampaignCommand,
    },
    /// Check the installation: configuration, database and schema, at-rest key, file modes,
    /// connector credentials and endpoints, Direct certificates, the HL7 listener. One
    /// PASS/WARN/FAIL line per check; exit 1 on any FAIL. Sends nothing, creates nothing.
    Doctor,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout, e.g.
    /// `switchboard completions bash > /usr/share/bash-completion/completions/switchboard`.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) to stdout: `switchboard man | man -l -`.
    Man,
    /// Print the OpenAPI 3.1 document of the HTTP API (what `GET /v1/openapi.json` serves):
    /// `switchboard openapi > docs/openapi.json`.
    Openapi,
    /// Measure throughput and latency (prints figures).
    Bench(self::bench::BenchArgs),
    /// Direct recipient certificates: the local store, and how discovery resolves an address.
    Certs(self::certs::CertsArgs),
}

/// `send --channel`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ChannelArg {
    Sms,
    Email,
    Fax,
    Direct,
    /// The local outbox sink (files under `outbox.dir`; for trials).
    Outbox,
}

/// `direct seal --cipher`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum CipherArg {
    #[value(name = "aes128-cbc")]
    Aes128Cbc,
    #[value(name = "aes256-cbc")]
    Aes256Cbc,
    #[value(name = "aes128-gcm")]
    Aes128Gcm,
    #[value(name = "aes256-gcm")]
    Aes256Gcm,
}

/// The name clap shows and parses for a value.
trait ValueName: clap::ValueEnum {
    fn name(&self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

impl ValueName for ChannelArg {}
impl ValueName for CipherArg {}

#[derive(Subcommand)]
enum InboundCommand {
    /// Items sent to a number or address no organization owns (newest first). They are kept
    /// sealed and filed into no tenant; claim the number in `organizations.<slug>.numbers` so
    /// that later ones are routed.
    Orphans {
        /// How many to list.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Re-run intake's parse, match and file steps from an item's stored raw bytes: for an
    /// item still `received` (handling failed half-way), or with `--force` one left
    /// `unmatched` (after adding the patient or their contact point). Filed, processed and
    /// dismissed items are refused. Nothing is answered to the sender.
    Reprocess {
        /// The inbound item's id (`inb_...`).
        id: String,
        /// Also match an `unmatched` item again.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum Hl7Command {
    /// Send HL7 files to an MLLP listener and print each ACK.
    Send {
        files: Vec<PathBuf>,
        /// HOST:PORT of the listener.
        #[arg(long)]
        to: String,
        /// Seconds to wait for each ACK.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Apply archived messages again (after a fix): one by archive id, or every failed one.
    Reprocess {
        /// Archive id (hl7_...).
        id: Option<String>,
        /// Every message archived as `error` (AE) or `received` (interrupted).
        #[arg(long)]
        failed: bool,
    },
}

#[derive(Subcommand)]
enum DirectCommand {
    /// Sign and encrypt a message as our STA would; writes the S/MIME message to stdout.
    Seal {
        /// The message to send (RFC 5322).
        input: PathBuf,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// Signing certificate (PEM or DER; further certificates in the file are the chain).
        #[arg(long)]
        sign_cert: PathBuf,
        /// Its private key (PEM or DER).
        #[arg(long)]
        sign_key: PathBuf,
        /// Recipient certificate(s): the message is encrypted to every one.
        #[arg(long, required = true)]
        recipient_cert: Vec<PathBuf>,
        /// The content cipher.
        #[arg(long, value_enum, default_value = "aes128-cbc")]
        cipher: CipherArg,
    },
    /// Decrypt and verify a message; prints every policy check's verdict, then the message.
    Open {
        input: PathBuf,
        /// Our decryption certificate.
        #[arg(long)]
        cert: PathBuf,
        /// Its private key.
        #[arg(long)]
        key: PathBuf,
        /// Trust anchors (PEM, DER or .p7b bundles).
        #[arg(long, required = true)]
        anchors: Vec<PathBuf>,
        /// The sender's address (default: the outer From).
        #[arg(long)]
        sender: Option<String>,
    },
    /// Run raw messages (as fetched from the HISP mailbox) through the daemon's inbound path:
    /// store, security, MDNs, content, matching, filing. Prints `FILE: ID OUTCOME [REASON]`
    /// per file (filed, unmatched, duplicate, quarantined, orphaned); exits 3 when any was
    /// quarantined.
    Receive {
        /// The Direct connector the messages arrived through (default: the only one).
        #[arg(long)]
        connector: Option<String>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Messages that failed a trust check: list, show, release.
    Quarantine {
        #[command(subcommand)]
        command: self::direct::QuarantineCommand,
    },
}

impl DirectCommand {
    /// `seal` and `open` need no configuration or database.
    fn is_tool(&self) -> bool {
        matches!(
            self,
            DirectCommand::Seal { .. } | DirectCommand::Open { .. }
        )
    }
}

#[derive(Subcommand)]
enum ChannelsCommand {
    /// Every channel and connector with its state (the default).
    List,
    /// Pause a channel (sms, email, fax, direct, outbox) or, with `--connector`, a connector.
    Pause {
        name: String,
        #[arg(long)]
        connector: bool,
        /// Why (shown with the state; no PHI).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a paused channel or connector; what waited is enqueued.
    Resume {
        name: String,
        #[arg(long)]
        connector: bool,
    },
}

#[derive(Subcommand)]
enum DeadLettersCommand {
    /// List them (the default).
    List,
    /// Retry one as a new delivery of the same message.
    Retry { delivery_id: String },
}

/// A closed pipe on stdout (`switchboard ... | head`) ends the command quietly with status 0,
/// as a Unix filter does, instead of `println!`'s panic (exit 101). Every other panic keeps the
/// default report.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if payload.starts_with("failed printing to stdout") && payload.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info)
    }));
}

/// Writes `bytes` to stdout; a closed pipe is not an error.
fn write_out(bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    match &cli.command {
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(
                *shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "switchboard",
                &mut script,
            );
            return write_out(&script);
        }
        Command::Openapi => return write_out(switchboard::http::openapi_json().as_bytes()),
        Command::Man => {
            let mut page = Vec::new();
            if let Err(e) =
                clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut page)
            {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            return write_out(&page);
        }
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<DoctorFailed>().is_some() => ExitCode::FAILURE,
        Err(e)
            if e.downcast_ref::<self::direct::SomeQuarantined>().is_some()
                || e.downcast_ref::<NotAccepted>().is_some() =>
        {
            eprintln!("{}", render(&e));
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("error: {}", render(&e));
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<()> {
    if let Command::Bench(args) = cli.command {
        // Quiet unless asked: RUST_LOG=switchboard::reminders=debug shows each reminder batch.
        if std::env::var_os("RUST_LOG").is_some() {
            switchboard::logging::init_with_writer(
                &switchboard::config::LogConfig::default(),
                || progress::LogWriter,
            );
        }
        return self::bench::run(args).await;
    }
    if let Command::Hl7 {
        command: Hl7Command::Send { files, to, timeout },
    } = &cli.command
    {
        return hl7_send(files, to, *timeout).await;
    }
    if let Command::Direct { command } = &cli.command
        && command.is_tool()
    {
        return direct_tool(command);
    }
    let config_path = config_path(cli.config.clone());
    let config_source = config_path.as_ref().map_or_else(
        || "the embedded default configuration".to_string(),
        |p| format!("configuration {}", p.display()),
    );
    let config = Config::load(config_path.as_deref())?;
    if let Command::Certs(args) = &cli.command {
        return self::certs::run(&config, args, cli.json).await;
    }
    if let Command::Doctor = &cli.command {
        if !self::doctor::run(&config_source, config_path.as_deref(), config).await? {
            return Err(DoctorFailed.into());
        }
        return Ok(());
    }
    switchboard::logging::init_with_writer(&config.log, || progress::LogWriter);
    let json = cli.json;
    match cli.command {
        Command::Run => daemon::run(config).await?,
        Command::Migrate => {
            eprintln!("{}", describe(&config_source, &config));
            Core::open(config).await?;
            println!("migrations applied");
        }
        Command::Send {
            org,
            to,
            channel,
            subject,
            body,
            patient,
            urgent,
        } => {
            let core = admin(&config_source, config).await?;
            let organization = organization(&core, &org).await?;
            let body = if body == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading the body from stdin")?
            } else {
                body
            };
            let request = SendRequest {
                thread_id: None,
                patient,
                subject,
                body,
                recipients: vec![Recipient {
                    address: Some(to),
                    channel: Some(channel.name().to_string()),
                    patient: false,
                }],
                channels: vec![],
                urgent,
                part2: false,
                category: None,
                metadata: Default::default(),
                attachments: Vec::new(),
            };
            let accepted = core
                .messages()
                .accept(&organization.id, &request, None)
                .await?;
            println!("{}", accepted.message_id);
        }
        Command::Status { id } => {
            let core = admin(&config_source, config).await?;
            let organization_id = core
                .store
                .messages()
                .organization_of(&id)
                .await
                .map_err(|e| not_found(e, format!("message {id}")))?;
            let view = core.messages().view(&organization_id, &id).await?;
            if json {
                // The API's message record (GET /v1/messages/{id}).
                print_json(&serde_json::to_value(&view)?);
                return Ok(());
            }
            println!("message {} ({}): {}", view.id, view.created_at, view.status);
            for delivery in &view.deliveries {
                println!(
                    "  delivery {} via {} → {} after {} attempt(s){}",
                    delivery.id,
                    delivery.channel,
                    delivery.status,
                    delivery.attempts,
                    delivery
                        .reason
                        .as_ref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                );
                for event in &delivery.history {
                    println!(
                        "    {} {:<16} {}{}{}",
                        event.at,
                        event.status,
                        event.source,
                        if event.applied {
                            ""
                        } else {
                            " (recorded, not applied)"
                        },
                        event
                            .detail
                            .as_ref()
                            .map(|d| format!(" — {d}"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        Command::Keys { command } => {
            self::keys::run(admin(&config_source, config).await?, command, json).await?;
        }
        Command::Inbound {
            command: InboundCommand::Reprocess { id, force },
        } => {
            let core = admin(&config_source, config).await?;
            let templates = core.templates()?;
            let tenancy =
                std::sync::Arc::new(switchboard::tenancy::Tenancy::from_config(&core.config)?);
            let done = core
                .inbound(templates, tenancy)
                .reprocess(&id, force)
                .await
                .with_context(|| format!("inbound item {id}"))?;
            println!(
                "{}: {} -> {} ({}){}{}{}",
                done.item_id,
                done.before,
                done.after,
                done.outcome,
                done.match_method
                    .as_ref()
                    .map(|m| format!(" match={m}"))
                    .unwrap_or_default(),
                done.thread_id
                    .as_ref()
                    .map(|t| format!(" thread={t}"))
                    .unwrap_or_default(),
                done.reason
                    .as_ref()
                    .filter(|_| done.after != "filed")
                    .map(|r| format!(" reason: {r}"))
                    .unwrap_or_default(),
            );
        }
        Command::Inbound {
            command: InboundCommand::Orphans { limit },
        } => {
            let core = admin(&config_source, config).await?;
            let orphans = core.store.inbound().orphans(limit.clamp(1, 10_000)).await?;
            if json {
                print_json(&serde_json::Value::Array(
                    orphans
                        .iter()
                        .map(|o| {
                            serde_json::json!({
                                "id": o.id,
                                "created_at": switchboard::messages::rfc3339(o.created_at),
                                "channel": o.channel,
                                "connector": o.connector,
                                "recipient": o.recipient,
                                "sender": mask(&o.sender),
                                "reason": o.reason,
                            })
                        })
                        .collect(),
                ));
                return Ok(());
            }
            if orphans.is_empty() {
                eprintln!("no orphaned inbound items");
            }
            for orphan in orphans {
                let at = chrono::DateTime::from_timestamp_millis(orphan.created_at)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default();
                println!(
                    "{}  {at}  {}  via {}  to {}  from {}  {}",
                    orphan.id,
                    orphan.channel,
                    orphan.connector.as_deref().unwrap_or("-"),
                    orphan.recipient.as_deref().unwrap_or("-"),
                    mask(&orphan.sender),
                    orphan.reason
                );
            }
        }
        Command::Channels { command, org } => {
            let core = admin(&config_source, config).await?;
            channels(&core, command, org, json).await?;
        }
        Command::DeadLetters { command, org } => {
            let core = admin(&config_source, config).await?;
            match command {
                None | Some(DeadLettersCommand::List) => {
                    let organization_id = match org {
                        Some(slug) => Some(organization(&core, &slug).await?.id),
                        None => None,
                    };
                    let rows = core
                        .store
                        .deliveries()
                        .dead_letters(organization_id.as_deref(), 1000)
                        .await?;
                    if json {
                        print_json(&serde_json::Value::Array(
                            rows.iter()
                                .map(|row| {
                                    serde_json::json!({
                                        "delivery_id": row.delivery_id,
                                        "organization_id": row.organization_id,
                                        "channel": row.channel,
                                        "attempts": row.attempts,
                                        "reason": row.reason,
                                        "created_at": switchboard::messages::rfc3339(row.created_at),
                                        "requeued_at": row.requeued_at.map(switchboard::messages::rfc3339),
                                    })
                                })
                                .collect(),
                        ));
                        return Ok(());
                    }
                    if rows.is_empty() {
                        println!("no dead letters");
                    }
                    for row in rows {
                        println!(
                            "{}  {}  {:<7} attempts={}  {}{}",
                            switchboard::messages::rfc3339(row.created_at),
                            row.delivery_id,
                            row.channel,
                            row.attempts,
                            row.reason,
                            if row.requeued_at.is_some() {
                                "  (requeued)"
                            } else {
                                ""
                            }
                        );
                    }
                }
                Some(DeadLettersCommand::Retry { delivery_id }) => {
                    let (new_id, channel) = core
                        .store
                        .deliveries()
                        .requeue_dead_letter(&delivery_id)
                        .await
                        .map_err(|e| {
                            not_found(e, format!("dead letter {delivery_id} (see `switchboard dead-letters list`)"))
                        })?;
                    core.queue
                        .push(&channel, std::slice::from_ref(&new_id), None)
                        .await?;
                    core.store
                        .deliveries()
                        .mark_enqueued(std::slice::from_ref(&new_id), switchboard::store::now_ms())
                        .await?;
                    println!("{new_id}");
                }
            }
        }
        Command::Hl7 {
            command: Hl7Command::Reprocess { id, failed },
        } => {
            let core = admin(&config_source, config).await?;
            let processor = switchboard::hl7::processor::Hl7Processor::new(
                core.store.clone(),
                core.keyring.clone(),
                core.config.hl7.clone(),
                &core
                    .config
                    .organization(&core.config.hl7.organization)
                    .phone_region,
                None,
            )
            .await?;
            let ids: Vec<String> = match (id, failed) {
                (Some(id), false) => vec![id],
                (None, true) => core
                    .store
                    .hl7()
                    .by_status(&["error", "received"], 100_000)
                    .await?
                    .into_iter()
                    .map(|row| row.id)
                    .collect(),
                _ => anyhow::bail!("give an archive id or --failed"),
            };
            for id in ids {
                let outcome = processor
                    .reprocess(&id)
                    .await
                    .with_context(|| format!("archived HL7 message {id}"))?;
                println!("{id}  {}", outcome.code.as_str());
            }
        }
        Command::Reminders { command } => {
            self::outreach::reminders(admin(&config_source, config).await?, command, json).await?;
        }
        Command::Campaign { command } => {
            self::outreach::campaign(admin(&config_source, config).await?, command, json).await?;
        }
        Command::Direct {
            command: DirectCommand::Receive { connector, files },
        } => {
            self::direct::receive(admin(&config_source, config).await?, connector, &files).await?;
        }
        Command::Direct {
            command: DirectCommand::Quarantine { command },
        } => {
            self::direct::quarantine(admin(&config_source, config).await?, command, json).await?;
        }
        Command::Bench(_)
        | Command::Hl7 { .. }
        | Command::Direct { .. }
        | Command::Certs(_)
        | Command::Doctor
        | Command::Completions { .. }
        | Command::Openapi
        | Command::Man => {
            unreachable!("handled above")
        }
    }
    Ok(())
}

/// A sender's number or address with all but its last four characters hidden.
/// `doctor` found a failure (its lines say which): exit 1 without a second message.
#[derive(Debug, thiserror::Error)]
#[error("")]
struct DoctorFailed;

/// Where the daemon's configuration is installed by the package.
const SYSTEM_CONFIG: &str = "/etc/switchboard/switchboard.toml";

/// The configuration file: `--config` (or `SWITCHBOARD_CONFIG`), else the system's
/// [`SYSTEM_CONFIG`] when it exists, else none (the embedded default).
fn config_path(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| {
        let system = PathBuf::from(SYSTEM_CONFIG);
        system.exists().then_some(system)
    })
}

/// `configuration X; database Y` (the database without its password).
fn describe(source: &str, config: &Config) -> String {
    let url = config.database_url();
    let database = match url.strip_prefix("sqlite://") {
        Some(path) => format!("SQLite {path}"),
        None => match url::Url::parse(&url) {
            Ok(parsed) => format!(
                "PostgreSQL {}{}{}",
                parsed.host_str().unwrap_or("localhost"),
                parsed.port().map(|p| format!(":{p}")).unwrap_or_default(),
                parsed.path()
            ),
            Err(_) => "PostgreSQL".into(),
        },
    };
    format!("switchboard: {source}; database {database}")
}

/// The store for an admin command: already migrated to this binary's schema (only `migrate`
/// and `run` change it), named on stderr so that an operator sees which one was opened.
/// `switchboard channels list|pause|resume`.
async fn channels(
    core: &Core,
    command: Option<ChannelsCommand>,
    org: Option<String>,
    json: bool,
) -> Result<()> {
    let organization_id = match org {
        Some(slug) => organization(core, &slug).await?.id,
        None => {
            let slugs = core.store.organizations().slugs(2).await?;
            match slugs.as_slice() {
                [only] => organization(core, only).await?.id,
                [] => anyhow::bail!("no organization yet"),
                _ => anyhow::bail!("more than one organization: name one with --org"),
            }
        }
    };
    let ops = switchboard::ops::Ops::new(
        core.store.clone(),
        core.group.clone(),
        core.keyring.clone(),
        &core.config,
    );
    let (kind, name, pause, reason) = match command {
        None | Some(ChannelsCommand::List) => {
            let view = ops.channels(&organization_id).await?;
            if json {
                print_json(&serde_json::to_value(&view)?);
                return Ok(());
            }
            for c in &view.channels {
                println!(
                    "channel    {:<10} {:<8} connector={:<10} waiting={:<5} oldest={}{}",
                    c.channel,
                    c.state,
                    c.connector.as_deref().unwrap_or("-"),
                    c.queue_depth,
                    c.oldest_waiting_secs
                        .map_or("-".to_string(), |s| format!("{s}s")),
                    c.paused.as_ref().map_or(String::new(), |p| format!(
                        "  paused {} by {} ({})",
                        p.paused_at, p.paused_by, p.kind
                    )),
                );
            }
            for c in &view.connectors {
                println!(
                    "connector  {:<10} {:<8} channels={}{}",
                    c.name,
                    c.state,
                    c.channels.join(","),
                    c.paused.as_ref().map_or(String::new(), |p| format!(
                        "  paused {} by {}",
                        p.paused_at, p.paused_by
                    )),
                );
            }
            return Ok(());
        }
        Some(ChannelsCommand::Pause {
            name,
            connector,
            reason,
        }) => (connector, name, true, reason),
        Some(ChannelsCommand::Resume { name, connector }) => (connector, name, false, None),
    };
    let kind = if kind { "connector" } else { "channel" };
    let done = ops
        .set_paused(
            &organization_id,
            "cli",
            kind,
            &name,
            pause,
            reason.as_deref(),
        )
        .await?;
    if json {
        print_json(&serde_json::to_value(&done)?);
    } else {
        println!(
            "{kind} {name} {}{}{}",
            if pause { "paused" } else { "resumed" },
            if done.changed { "" } else { " (already)" },
            if pause {
                String::new()
            } else {
                format!("; {} waiting deliveries enqueued", done.enqueued)
            }
        );
    }
    Ok(())
}

async fn admin(source: &str, config: Config) -> Result<Core> {
    eprintln!("{}", describe(source, &config));
    Ok(Core::attach(config).await?)
}

fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let keep = chars.len().min(4);
    let hidden = chars.len() - keep;
    let tail: String = chars[hidden..].iter().collect();
    format!("{}{tail}", "*".repeat(hidden))
}

/// `StoreError::NotFound` as the operator should read it: `{what} does not exist`.
pub(crate) fn not_found(error: StoreError, what: impl std::fmt::Display) -> anyhow::Error {
    match error {
        StoreError::NotFound => anyhow::anyhow!("{what} does not exist"),
        other => other.into(),
    }
}

/// The organization `--org SLUG` names; an unknown slug is refused naming the flag and the
/// organizations that do exist. Every command taking `--org` looks it up here.
pub(crate) async fn organization(
    core: &Core,
    slug: &str,
) -> Result<switchboard::store::Organization> {
    match core.store.organizations().by_slug(slug).await {
        Ok(organization) => Ok(organization),
        Err(StoreError::NotFound) => Err(unknown_organization(core, slug).await),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn unknown_organization(core: &Core, slug: &str) -> anyhow::Error {
    let known = core
        .store
        .organizations()
        .slugs(20)
        .await
        .unwrap_or_default();
    anyhow::anyhow!(
        "--org {slug}: no such organization ({})",
        if known.is_empty() {
            "there are none yet; `switchboard keys create --org SLUG --new-org` creates one".into()
        } else {
            format!("existing: {}", known.join(", "))
        }
    )
}

/// An error and its causes on one line, each cause once: a cause whose text the line already
/// carries (an error that prints its source in its own message) is left out, and library
/// internals are said in the operator's terms.
pub(crate) fn render(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = match cause.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::RowNotFound) => "does not exist".to_string(),
            _ => match cause.downcast_ref::<StoreError>() {
                Some(StoreError::NotFound | StoreError::Database(sqlx::Error::RowNotFound)) => {
                    "does not exist".to_string()
                }
                _ => cause.to_string(),
            },
        };
        let text = text
            .replace(
                "no rows returned by a query that expected to return at least one row",
                "no such record",
            )
            .replace("database: no such record", "no such record")
            .trim()
            .to_string();
        let text = match text.as_str() {
            "no such record" | "not found" => "does not exist".to_string(),
            _ => text,
        };
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// `--json` output: one compact document and a newline on stdout.
pub(crate) fn print_json(value: &serde_json::Value) {
    println!("{value}");
}

/// `hl7 send` had messages not accepted (AE/AR): exit 3, after every ACK was printed.
#[derive(Debug, thiserror::Error)]
#[error("{0} message(s) not accepted")]
struct NotAccepted(usize);

/// `hl7 send`: each file's messages as bytes (byte-exact, whatever the character set), one
/// line per ACK as it arrives (`AA MSG1`, `AE MSG2: PID-3 required`), the ACKs received kept
/// when a later one times out.
async fn hl7_send(files: &[PathBuf], to: &str, timeout: u64) -> Result<()> {
    use std::io::Write;
    let mut messages = Vec::new();
    for file in files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let found = switchboard::hl7::client::split_message_bytes(&bytes);
        if found.is_empty() {
            anyhow::bail!("{}: no HL7 message in the file", file.display());
        }
        messages.extend(found);
    }
    let total = messages.len();
    let progress = progress::bar(total as u64, "sending");
    let sent = switchboard::hl7::client::send_each(
        to,
        &messages,
        std::time::Duration::from_secs(timeout),
        |_, ack| {
            let line = if ack.accepted() || ack.reason.is_empty() {
                format!("{} {}", ack.code, ack.control_id)
            } else {
                format!("{} {}: {}", ack.code, ack.control_id, ack.reason)
            };
            progress.suspend(|| {
                let _ = writeln!(std::io::stdout().lock(), "{line}");
            });
            progress.inc(1);
        },
    )
    .await;
    progress.finish_and_clear();
    let refused = sent.acks.iter().filter(|a| !a.accepted()).count();
    if let Some(error) = sent.error {
        let missing = total - sent.acks.len();
        anyhow::bail!(
            "--to {to}: {error}; {} ACK(s) received, {missing} message(s) without an ACK{}",
            sent.acks.len(),
            if refused > 0 {
                format!(", {refused} not accepted")
            } else {
                String::new()
            }
        );
    }
    if refused > 0 {
        return Err(NotAccepted(refused).into());
    }
    Ok(())
}

fn direct_tool(command: &DirectCommand) -> Result<()> {
    use std::io::Write;
    use switchboard::direct::tools;
    match command {
        DirectCommand::Seal {
            input,
            from,
            to,
            sign_cert,
            sign_key,
            recipient_cert,
            cipher,
        } => {
            let sealed = tools::seal_file(
                input,
                from,
                to,
                sign_cert,
                sign_key,
                recipient_cert,
                tools::cipher(&cipher.name())?,
            )?;
            std::io::stdout().write_all(&sealed)?;
        }
        DirectCommand::Receive { .. } | DirectCommand::Quarantine { .. } => {
            anyhow::bail!("this command reads the configuration")
        }
        DirectCommand::Open {
            input,
            cert,
            key,
            anchors,
            sender,
        } => {
            let (report, inner) = tools::open_file(input, cert, key, anchors, sender.as_deref())?;
            for line in report {
                eprintln!("{line}");
            }
            match inner {
                Some(message) => std::io::stdout().write_all(&message)?,
                None => anyhow::bail!("message rejected"),
            }
        }
    }
    Ok(())
}
