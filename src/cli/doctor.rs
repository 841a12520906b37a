//! `switchboard doctor`: what an operator checks before (and after) starting the daemon, one
//! `PASS`/`WARN`/`FAIL` line per check, exit 1 on any failure. Nothing is sent and nothing is
//! created: the database is opened only if it exists, the key only read, hosts only resolved.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Result;

use switchboard::config::{Config, ConnectorConfig, Secret};
use switchboard::daemon::{Core, DaemonError};
use switchboard::store::Store;

/// Days before a certificate's expiry from which it is a warning.
const EXPIRY_WARNING_DAYS: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Pass,
    Warn,
    Fail,
}

#[derive(Default)]
struct Report {
    worst: Option<Level>,
}

impl Report {
    fn line(&mut self, level: Level, what: &str, detail: impl std::fmt::Display) {
        let word = match level {
            Level::Pass => "PASS",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        println!("{word}  {what}: {detail}");
        self.worst = self.worst.max(Some(level));
    }
}

/// `Some(mode)` of a path that exists.
fn mode_of(path: &Path) -> Option<u32> {
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

fn secret(report: &mut Report, what: &str, secret: &Secret) {
    match secret.read() {
        Ok(value) if value.is_empty() => report.line(Level::Fail, what, "the secret is empty"),
        Ok(_) => match secret.path().ok().as_deref().and_then(mode_of) {
            Some(mode) if mode & 0o007 != 0 => report.line(
                Level::Warn,
                what,
                format!("readable by every user (mode {mode:o}); chmod 0600 or 0640"),
            ),
            _ => report.line(Level::Pass, what, "present"),
        },
        Err(e) => report.line(Level::Fail, what, e),
    }
}

async fn resolves(report: &mut Report, what: &str, host: &str, port: u16) {
    match tokio::net::lookup_host((host, port))
        .await
        .map(|addrs| addrs.count())
    {
        Ok(n) if n > 0 => report.line(Level::Pass, what, format!("{host}:{port} resolves")),
        Ok(_) => report.line(Level::Fail, what, format!("{host} has no address")),
        Err(e) => report.line(Level::Fail, what, format!("{host}: {e}")),
    }
}

fn expiry(report: &mut Report, what: &str, cert: &openssl::x509::X509Ref) {
    let days = openssl::asn1::Asn1Time::days_from_now(0)
        .ok()
        .and_then(|now| now.diff(cert.not_after()).ok())
        .map(|d| i64::from(d.days));
    match days {
        Some(d) if d < 0 => report.line(Level::Fail, what, format!("expired {} days ago", -d)),
        Some(d) if d < EXPIRY_WARNING_DAYS => {
            report.line(Level::Warn, what, format!("expires in {d} days"))
        }
        Some(d) => report.line(Level::Pass, what, format!("valid, {d} days to expiry")),
        None => report.line(Level::Warn, what, "expiry unreadable"),
    }
}

/// Runs every check; `Ok(false)` when one failed.
pub async fn run(source: &str, config_path: Option<&Path>, config: Config) -> Result<bool> {
    let mut report = Report::default();
    report.line(Level::Pass, "configuration", format!("{source} parses"));
    if let Some(path) = config_path
        && let Some(mode) = mode_of(path)
        && mode & 0o007 != 0
    {
        report.line(
            Level::Warn,
            "configuration file",
            format!("readable by every user (mode {mode:o}); install it root:switchboard 0640"),
        );
    }

    // Files: the state directory and what is in it.
    match mode_of(&config.data_dir) {
        None => report.line(
            Level::Warn,
            "data directory",
            format!(
                "{} does not exist yet (the daemon creates it)",
                config.data_dir.display()
            ),
        ),
        Some(mode) if mode & 0o077 != 0 => report.line(
            Level::Warn,
            "data directory",
            format!(
                "{} is open to other users (mode {mode:o}); chmod 0700",
                config.data_dir.display()
            ),
        ),
        Some(_) => report.line(
            Level::Pass,
            "data directory",
            format!("{} owner-only", config.data_dir.display()),
        ),
    }

    // The at-rest key: never generated here.
    let key_file = config.data_dir.join("at-rest.key");
    let key_known = match &config.security.at_rest_key {
        Some(secret) => {
            self::secret(&mut report, "at-rest key", secret);
            true
        }
        None => match mode_of(&key_file) {
            Some(mode) if mode & 0o077 != 0 => {
                report.line(
                    Level::Fail,
                    "at-rest key",
                    format!(
                        "{} is open to other users (mode {mode:o}); chmod 0600",
                        key_file.display()
                    ),
                );
                true
            }
            Some(_) => true,
            None if std::env::var_os("CREDENTIALS_DIRECTORY").is_some() => true,
            None => {
                report.line(
                    Level::Warn,
                    "at-rest key",
                    format!(
                        "{} does not exist yet (the daemon's first start generates it; back it up with the database)",
                        key_file.display()
                    ),
                );
                false
            }
        },
    };

    // The database: reachable, on this binary's schema; the key opens its canary.
    let url = config.database_url();
    let sqlite_missing = url
        .strip_prefix("sqlite://")
        .is_some_and(|p| !p.starts_with(':') && !Path::new(p).exists());
    if sqlite_missing {
        report.line(
            Level::Fail,
            "database",
            "no database yet: run `switchboard migrate` (or start the daemon)",
        );
    } else {
        match Store::connect(&url, 2, false).await {
            Err(e) => report.line(Level::Fail, "database", format!("unreachable: {e}")),
            Ok(store) => {
                match store.schema_state().await {
                    Err(e) => report.line(Level::Fail, "database", e),
                    Ok(state) => match state.problem() {
                        Some(problem) => report.line(Level::Fail, "database", problem),
                        None => report.line(
                            Level::Pass,
                            "database",
                            format!("reachable, {} migrations applied", state.applied.len()),
                        ),
                    },
                }
                if let Some(path) = url.strip_prefix("sqlite://")
                    && let Some(mode) = mode_of(Path::new(path))
                    && mode & 0o077 != 0
                {
                    report.line(
                        Level::Warn,
                        "database file",
                        format!("{path} is open to other users (mode {mode:o}); chmod 0600"),
                    );
                }
                store.close().await;
                if key_known && report.worst < Some(Level::Fail) {
                    match Core::attach(config.clone()).await {
                        Ok(core) => {
                            report.line(
                                Level::Pass,
                                "at-rest key",
                                "opens the database's key canary",
                            );
                            core.store.close().await;
                        }
                        Err(e @ DaemonError::KeyMismatch { .. }) => {
                            report.line(Level::Fail, "at-rest key", e)
                        }
                        Err(e) => report.line(Level::Fail, "database", e),
                    }
                }
            }
        }
    }

    // Connectors: credentials present, endpoints resolvable, Direct certificates valid.
    for (name, connector) in &config.connectors {
        let what = |part: &str| format!("connector {name}: {part}");
        match connector {
            ConnectorConfig::Smtp(smtp) => {
                resolves(&mut report, &what("relay"), &smtp.host, smtp.port).await;
                if let Some(password) = &smtp.password {
                    secret(&mut report, &what("password"), password);
                }
            }
            ConnectorConfig::Http(http) => {
                for (key, value) in &http.credentials {
                    secret(&mut report, &what(&format!("credentials.{key}")), value);
                }
                match switchboard::connectors::manifest::Manifest::load(&http.manifest) {
                    Err(e) => report.line(Level::Fail, &what("manifest"), e),
                    Ok(manifest) => {
                        let base = http.base_url.clone().unwrap_or(manifest.base_url.clone());
                        match url::Url::parse(&base) {
                            Ok(u) => {
                                let host = u.host_str().unwrap_or_default().to_string();
                                let port = u.port_or_known_default().unwrap_or(443);
                                resolves(&mut report, &what("endpoint"), &host, port).await;
                            }
                            Err(e) => {
                                report.line(Level::Fail, &what("endpoint"), format!("{base}: {e}"))
                            }
                        }
                    }
                }
            }
            ConnectorConfig::Direct(direct) => {
                match switchboard::channels::direct::keys::load(direct) {
                    Err(e) => report.line(Level::Fail, &what("keys"), e),
                    Ok(material) => {
                        if let Some(signer) = &material.signer {
                            expiry(&mut report, &what("signing certificate"), &signer.cert);
                        }
                        for (i, (cert, _)) in material
                            .decryption
                            .iter()
                            .enumerate()
                            .skip(usize::from(material.signer.is_some()))
                        {
                            expiry(&mut report, &what(&format!("decryption key {i}")), cert);
                        }
                        let _ = material;
                        let mut anchors = Vec::new();
                        for file in direct.trust.iter().flat_map(|t| &t.files) {
                            match std::fs::read(file)
                                .map_err(|e| e.to_string())
                                .and_then(|b| {
                                    switchboard::direct::load_certs(&b).map_err(|e| e.to_string())
                                }) {
                                Ok(certs) => anchors.extend(certs),
                                Err(e) => report.line(
                                    Level::Fail,
                                    &what("trust"),
                                    format!("{}: {e}", file.display()),
                                ),
                            }
                        }
                        if anchors.is_empty() {
                            report.line(
                                Level::Warn,
                                &what("trust"),
                                "no trust anchors: nothing can be sent or received",
                            );
                        }
                        for cert in &anchors {
                            let subject = switchboard::direct::smime::subject_string(cert);
                            expiry(&mut report, &what(&format!("anchor {subject}")), cert);
                        }
                    }
                }
                resolves(
                    &mut report,
                    &what("smtp"),
                    &direct.smtp.host,
                    direct.smtp.port,
                )
                .await;
                if let Some(password) = &direct.smtp.password {
                    secret(&mut report, &what("smtp password"), password);
                }
                if let Some(mailbox) = &direct.mailbox {
                    resolves(&mut report, &what("mailbox"), &mailbox.host, mailbox.port).await;
                    secret(&mut report, &what("mailbox password"), &mailbox.password);
                }
                if direct.organization.is_none() {
                    report.line(
                        Level::Warn,
                        &what("organization"),
                        "unset: inbound messages are kept as orphans unless an organization claims the address",
                    );
                }
            }
        }
    }

    // The HL7 listener (start-up refuses an exposed one; this says how it is protected).
    let hl7 = &config.hl7;
    match hl7.listen {
        None => report.line(Level::Pass, "hl7 listener", "off"),
        Some(addr) if addr.ip().is_loopback() => {
            report.line(Level::Pass, "hl7 listener", format!("{addr}, loopback only"))
        }
        Some(addr) if hl7.tls_client_ca.is_some() => report.line(
            Level::Pass,
            "hl7 listener",
            format!("{addr}, mutual TLS ({} allowed subjects)", hl7.allowed_subjects.len()),
        ),
        Some(addr) => report.line(
            Level::Warn,
            "hl7 listener",
            format!(
                "{addr}, plain MLLP restricted by source address only ({} entries); prefer mutual TLS",
                hl7.allow_from.len()
            ),
        ),
    }
    Ok(report.worst < Some(Level::Fail))
}
