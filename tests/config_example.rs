//! The shipped example configuration parses, and says what the defaults are.

#[test]
fn example_config_parses_and_matches_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/switchboard.toml");
    let text = std::fs::read_to_string(path).expect("example config");
    let example = switchboard::config::Config::from_toml(&text).expect("example parses");
    let defaults = switchboard::config::Config::from_toml("").expect("defaults");
    assert_eq!(example.server.listen, defaults.server.listen);
    assert_eq!(example.queue.lease_secs, defaults.queue.lease_secs);
    // The reference is the installed configuration: state where the unit keeps it.
    assert_eq!(
        example.data_dir,
        std::path::PathBuf::from("/var/lib/switchboard")
    );
    assert_eq!(
        example.database_url(),
        "sqlite:///var/lib/switchboard/switchboard.db"
    );
    assert_eq!(
        example.channel("sms").max_attempts,
        defaults.channel("sms").max_attempts
    );
    assert_eq!(example.reminders.schedule, defaults.reminders.schedule);
    assert_eq!(example.reminders.enabled, defaults.reminders.enabled);
    assert_eq!(example.limits, defaults.limits);
    assert_eq!(example.security.fetch_allow, defaults.security.fetch_allow);
    assert_eq!(example.webhooks, defaults.webhooks);
    assert_eq!(example.metrics.refresh_secs, defaults.metrics.refresh_secs);
    assert_eq!(
        (
            example.alerting.evaluate_secs,
            example.alerting.min_interval_secs,
            &example.alerting.business_hours_start,
            &example.alerting.business_hours_end,
            &example.alerting.business_days,
        ),
        (
            defaults.alerting.evaluate_secs,
            defaults.alerting.min_interval_secs,
            &defaults.alerting.business_hours_start,
            &defaults.alerting.business_hours_end,
            &defaults.alerting.business_days,
        )
    );
    assert!(example.alerts.is_empty(), "no alert rule by default");
    // The commented example rules parse.
    let rules: String = text
        .lines()
        .skip_while(|l| !l.starts_with("# [[alerts]]"))
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{}\n", l.trim_start_matches('#').trim_start()))
        .collect();
    let with_rules =
        switchboard::config::Config::from_toml(&rules).expect("the example rules parse");
    assert_eq!(with_rules.alerts.len(), 5);
    assert_eq!(
        (
            example.security.fetch_max_cert_bytes,
            example.security.fetch_max_crl_bytes
        ),
        (1024 * 1024, 10 * 1024 * 1024)
    );
}

/// A `fetch_allow` entry that is not `host` or `host:port` stops the start, naming the key.
#[test]
fn a_bad_fetch_allow_entry_is_refused() {
    let ok = switchboard::config::Config::from_toml(
        "[security]\nfetch_allow = [\"127.0.0.1:18080\", \"crl.internal.example\", \"[::1]:8080\"]\n",
    );
    assert!(ok.is_ok(), "{ok:?}");
    let err = switchboard::config::Config::from_toml(
        "[security]\nfetch_allow = [\"127.0.0.1\", \"crl.example:http\"]\n",
    )
    .expect_err("refused");
    assert!(err.to_string().contains("security.fetch_allow[1]"), "{err}");
}

/// The commented examples for SMS connectors, organizations, reminders and templates are valid
/// configuration once uncommented (unknown keys would be refused).
#[test]
fn commented_examples_are_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/switchboard.toml");
    let text = std::fs::read_to_string(path).expect("example config");
    let start = text.find("# [connectors.twilio]").expect("twilio example");
    let end = text[start..]
        .find("# Direct secure messaging")
        .map_or(text.len(), |i| start + i);
    let uncommented: String = text[start..end]
        .lines()
        .filter_map(|l| l.strip_prefix("# ").or_else(|| (l == "#").then_some("")))
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let config = switchboard::config::Config::from_toml(&uncommented)
        .unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    assert!(config.connectors.contains_key("twilio_voice"));
    let org = config.organization("riverside");
    assert_eq!(org.time_zone, "America/Chicago");
    assert_eq!(org.reminder_rules[0].touches.len(), 3);
    assert!(config.connectors.contains_key("twilio"));
    assert_eq!(config.reminders.schedule, "0 * * * * *");
}

/// The commented Direct connector is valid configuration once uncommented, and its discovery
/// settings are the defaults.
#[test]
fn direct_example_is_valid_and_says_the_defaults() {
    use switchboard::config::{ConnectorConfig, DnsDiscoveryConfig, LdapDiscoveryConfig};
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/switchboard.toml");
    let text = std::fs::read_to_string(path).expect("example config");
    let start = text
        .find("# Direct secure messaging")
        .and_then(|i| text[i..].find('\n').map(|n| i + n + 1))
        .expect("direct example");
    let uncommented: String = text[start..]
        .lines()
        .filter_map(|l| l.strip_prefix("# ").or_else(|| (l == "#").then_some("")))
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let config = switchboard::config::Config::from_toml(&uncommented)
        .unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    let Some(ConnectorConfig::Direct(direct)) = config.connectors.get("hisp") else {
        panic!("hisp is a direct connector");
    };
    assert_eq!(direct.ldap, LdapDiscoveryConfig::default());
    // inbound_crl included: hard for the signers of received messages.
    assert_eq!(
        direct.revocation,
        switchboard::direct::discovery::options::RevocationConfig::default()
    );
    let dns = DnsDiscoveryConfig::default();
    assert_eq!(
        (
            direct.dns.enabled,
            &direct.dns.nameservers,
            direct.dns.timeout_secs
        ),
        (dns.enabled, &dns.nameservers, dns.timeout_secs)
    );
}

/// The commented email relay and Direct examples are valid once uncommented, and their mailbox
/// settings (`poll_interval_secs`, `idle`, ...) are the defaults.
#[test]
fn commented_mail_examples_match_defaults() {
    use switchboard::config::{ConnectorConfig, ImapMailboxConfig};
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/switchboard.toml");
    let text = std::fs::read_to_string(path).expect("example config");
    let section = |from: &str, to: Option<&str>| {
        let start = text.find(from).unwrap_or_else(|| panic!("{from} example"));
        let end = to
            .and_then(|t| text[start..].find(t).map(|i| start + i))
            .unwrap_or(text.len());
        text[start..end]
            .lines()
            .filter_map(|l| l.strip_prefix("# ").or_else(|| (l == "#").then_some("")))
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let uncommented = format!(
        "{}\n{}",
        section("# [connectors.relay]", Some("## SMS")),
        section("# [connectors.hisp]", None)
    );
    let config = switchboard::config::Config::from_toml(&uncommented)
        .unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    let defaults: ImapMailboxConfig = toml::from_str(
        "host = \"imap.example.org\"\nusername = \"u\"\npassword = { credential = \"p\" }\n",
    )
    .expect("minimal mailbox");
    assert!(defaults.idle, "IDLE is on by default");
    let relay = match config.connectors.get("relay") {
        Some(ConnectorConfig::Smtp(s)) => s.bounces.clone().expect("bounces"),
        _ => panic!("relay is an smtp connector"),
    };
    let hisp = match config.connectors.get("hisp") {
        Some(ConnectorConfig::Direct(d)) => {
            let direct_defaults: switchboard::config::DirectConnectorConfig =
                toml::from_str("address = \"a@b.example\"\nsmtp = { host = \"smtp.b.example\" }\n")
                    .expect("minimal direct connector");
            assert_eq!(d.expiry_interval_secs, direct_defaults.expiry_interval_secs);
            assert_eq!(
                d.processed_timeout_secs,
                direct_defaults.processed_timeout_secs
            );
            d.mailbox.clone().expect("mailbox")
        }
        _ => panic!("hisp is a direct connector"),
    };
    for mailbox in [relay, hisp] {
        assert_eq!(mailbox.idle, defaults.idle);
        assert_eq!(mailbox.poll_interval_secs, defaults.poll_interval_secs);
        assert_eq!(mailbox.port, defaults.port);
    }
}

/// The commented `app_listen` example is valid once uncommented, on PostgreSQL (on SQLite it is
/// refused, and the comment says so).
#[test]
fn app_listen_example_is_valid_on_postgres() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/switchboard.toml"
    ))
    .expect("reference config");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("# app_listen = "))
        .expect("app_listen example");
    let toml = format!(
        "[database]\nurl = \"postgres://switchboard@127.0.0.1/switchboard\"\n[webhooks]\napp_listen = {line}\n"
    );
    let config =
        switchboard::config::Config::from_toml(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(config.webhooks.app_listen.len(), 1);
    assert_eq!(config.webhooks.app_listen[0].channel, "pm_events");
    let sqlite = format!("[webhooks]\napp_listen = {line}\n");
    let err = switchboard::config::Config::from_toml(&sqlite).expect_err("SQLite");
    assert!(
        err.to_string().contains("app_listen needs PostgreSQL"),
        "{err}"
    );
    assert!(text.contains("NOTIFY is not durable"));
}
