//! The email channel against real peers: an SMTP server (PyPI aiosmtpd, `tests/peers/
//! smtp_sink.py`) scripted to fail in the ways relays do, and Debian's dovecot as the IMAP
//! mailbox bounces arrive in — on SQLite and PostgreSQL.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::mail::{Dovecot, received, start_sink, start_sink_on};
use common::ports::Reserved;
use common::{Backend, TestDaemon, TestDb};
use mail_parser::MessageParser;
use serde_json::{Value, json};
use switchboard::config::{Config, ConnectorConfig, OrganizationConfig};

const WAIT: Duration = Duration::from_secs(30);
const DOMAIN: &str = "mail.north.example";

/// A daemon config whose email channel goes to an SMTP connector on `port`.
fn email_config(db: &TestDb, port: u16, extra: &str) -> Config {
    let mut config = db.config();
    let smtp = format!(
        "host = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         from = \"Switchboard <bounces@{DOMAIN}>\"\ntimeout_secs = 3\nmax_connections = 2\n\
         rate_per_sec = 50.0\n{extra}"
    );
    config.connectors.insert(
        "mail".into(),
        ConnectorConfig::Smtp(toml::from_str(&smtp).expect("smtp connector")),
    );
    let email = config.channels.entry("email".into()).or_default();
    email.connector = "mail".into();
    email.backoff_initial_ms = 100;
    email.backoff_max_secs = 1;
    email.max_attempts = 8;
    config.organizations.insert(
        "north".into(),
        OrganizationConfig {
            portal_url: "https://portal.north.example".into(),
            email_from: Some("North Clinic <no-reply@north.example>".into()),
            reply_to: Some("Front Desk <desk@north.example>".into()),
            ..OrganizationConfig::default()
        },
    );
    config
}

fn secret(db: &TestDb, name: &str, value: &str) -> String {
    let path = db.dir.path().join(name);
    std::fs::write(&path, value).expect("secret");
    format!("{{ file = \"{}\" }}", path.display())
}

/// Posts an email message and returns (message id, delivery id).
async fn send(daemon: &TestDaemon, purpose: Option<&str>) -> (String, String) {
    let mut body = json!({
        "subject": "Lab results for Jane Roe",
        "body": "Jane Roe, your HbA1c is 9.1 percent.",
        "recipients": [{"address": "patient@example.org", "channel": "email"}],
    });
    if let Some(purpose) = purpose {
        body["metadata"] = json!({ "purpose": purpose });
    }
    let response = daemon.post_message(body).await;
    assert!(response.status().is_success(), "{}", response.status());
    let created: Value = response.json().await.expect("json");
    (
        created["id"].as_str().expect("id").to_string(),
        created["deliveries"][0]["id"]
            .as_str()
            .expect("delivery id")
            .to_string(),
    )
}

/// Polls the message's first delivery until `done` holds.
async fn wait_delivery(
    daemon: &TestDaemon,
    message_id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let view = daemon.get_json(&format!("/v1/messages/{message_id}")).await;
        let delivery = &view["deliveries"][0];
        if done(delivery) {
            return delivery.clone();
        }
        assert!(
            started.elapsed() < WAIT,
            "delivery not there in time: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status_is(status: &'static str) -> impl Fn(&Value) -> bool {
    move |d| d["status"] == status
}

async fn delivers_with_our_headers_and_no_phi(backend: Backend) {
    let db = TestDb::new(backend).await;
    let inbox = db.dir.path().join("smtp");
    let sink = start_sink(&inbox, &["--auth", "relay-user:relay-pass"]);
    let port = sink.port;
    let password = secret(&db, "smtp-password", "relay-pass\n");
    let config = email_config(
        &db,
        port,
        &format!("username = \"relay-user\"\npassword = {password}\n"),
    );
    let mut daemon = TestDaemon::start(config).await;

    let (message_id, delivery_id) = send(&daemon, None).await;
    let delivery = wait_delivery(&daemon, &message_id, status_is("sent")).await;
    assert_eq!(delivery["attempts"], 1);
    assert_eq!(delivery["connector"], "mail");
    assert!(
        delivery["provider_ref"]
            .as_str()
            .unwrap_or("")
            .contains("queued as Q0001"),
        "{delivery:#}"
    );

    let got = received(&inbox);
    assert_eq!(got.len(), 1);
    let (envelope, raw) = &got[0];
    // What the relay and the recipient see is the delivery's reference token, never its id.
    let reference = daemon
        .core
        .keyring
        .delivery_token(&delivery_id)
        .expect("reference");
    assert_eq!(
        envelope["mail_from"],
        format!("bounces+{reference}@{DOMAIN}"),
        "VERP return path"
    );
    let ulid = delivery_id.trim_start_matches("dlv_");
    assert!(
        !String::from_utf8_lossy(raw).contains(ulid),
        "the delivery id shows in the message"
    );
    assert_eq!(envelope["rcpt_tos"], json!(["patient@example.org"]));
    let text = String::from_utf8_lossy(raw);
    for phi in ["HbA1c", "Jane Roe", "Lab results", "9.1 percent"] {
        assert!(!text.contains(phi), "PHI {phi:?} in the email:\n{text}");
    }
    let mail = MessageParser::default().parse(raw).expect("parses");
    assert_eq!(
        mail.message_id(),
        Some(format!("{reference}@{DOMAIN}").as_str())
    );
    let from = mail.from().and_then(|a| a.first()).expect("from");
    assert_eq!(from.address(), Some("no-reply@north.example"));
    assert_eq!(from.name(), Some("North Clinic"));
    let reply_to = mail.reply_to().and_then(|a| a.first()).expect("reply-to");
    assert_eq!(reply_to.address(), Some("desk@north.example"));
    assert_eq!(
        mail.to().and_then(|a| a.first()).and_then(|a| a.address()),
        Some("patient@example.org")
    );
    assert!(mail.date().is_some(), "Date header");
    assert_eq!(mail.subject(), Some("New secure message from North Clinic"));
    let plain = mail.body_text(0).expect("text part");
    assert!(plain.contains("https://portal.north.example"), "{plain}");
    let html = mail.body_html(0).expect("html part");
    // minijinja escapes `/` in HTML (`&#x2f;`), which browsers decode in attributes.
    assert!(html.contains("portal.north.example"), "{html}");
    assert!(text.contains("multipart/alternative"), "{text}");

    // A notification's text comes from PHI-linted templates: it may travel by email. Only the
    // daemon's own code sets that purpose (an API client cannot: see below).
    let mut metadata = serde_json::Map::new();
    metadata.insert("purpose".into(), "notification".into());
    let notice = daemon
        .core
        .messages()
        .accept(
            &daemon.organization_id,
            &switchboard::messages::SendRequest::notice(
                None,
                "email",
                "patient@example.org".into(),
                Some("Lab results for Jane Roe".into()),
                "Jane Roe, your HbA1c is 9.1 percent.".into(),
                metadata,
            ),
            None,
        )
        .await
        .expect("accept");
    wait_delivery(&daemon, &notice.message_id, status_is("sent")).await;
    let got = received(&inbox);
    assert_eq!(got.len(), 2);
    let mail = MessageParser::default().parse(&got[1].1).expect("parses");
    assert!(
        mail.body_text(0).expect("text").contains("HbA1c"),
        "notification body carried"
    );
    daemon.stop().await;
}
both_databases!(
    delivers_with_our_headers_and_no_phi,
    super::delivers_with_our_headers_and_no_phi
);

/// `metadata.purpose` from an API client: the purposes that relax the PHI rule are the
/// daemon's own (422 with a pointer), unknown ones are refused, and a documented one carries the
/// body only when the organization lists it in `phi_email_purposes`.
async fn client_purposes_never_relax_the_phi_rule(backend: Backend) {
    let db = TestDb::new(backend).await;
    let inbox = db.dir.path().join("smtp");
    let sink = start_sink(&inbox, &[]);
    let port = sink.port;
    let mut config = email_config(&db, port, "");
    if let Some(org) = config.organizations.get_mut("north") {
        org.phi_email_purposes = vec!["results".into()];
    }
    let mut daemon = TestDaemon::start(config).await;
    for purpose in [
        json!("reminder"),
        json!("notification"),
        json!("campaign"),
        json!("keyword_reply"),
        json!("gossip"),
        json!(7),
    ] {
        let response = daemon
            .post_message(json!({
                "body": "Jane Roe, your HbA1c is 9.1 percent.",
                "recipients": [{"address": "patient@example.org", "channel": "email"}],
                "metadata": {"purpose": purpose},
            }))
            .await;
        assert_eq!(response.status(), 422, "{purpose}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.expect("problem");
        assert_eq!(problem["pointer"], "/metadata/purpose", "{problem:#}");
    }
    assert!(received(&inbox).is_empty(), "nothing was sent");

    // Documented purposes: `billing` is not listed (the notice only), `results` is.
    for purpose in ["billing", "results"] {
        let response = daemon
            .post_message(json!({
                "body": "Jane Roe, your HbA1c is 9.1 percent.",
                "recipients": [{"address": format!("{purpose}@example.org"), "channel": "email"}],
                "metadata": {"purpose": purpose},
            }))
            .await;
        assert_eq!(response.status(), 201, "{purpose}");
        let view: Value = response.json().await.expect("json");
        wait_delivery(&daemon, view["id"].as_str().expect("id"), status_is("sent")).await;
    }
    let got = received(&inbox);
    assert_eq!(got.len(), 2);
    for (envelope, raw) in &got {
        let text = String::from_utf8_lossy(raw);
        let to = envelope["rcpt_tos"][0].as_str().expect("recipient");
        assert_eq!(
            text.contains("HbA1c"),
            to == "results@example.org",
            "{to}: only the listed purpose carries the text"
        );
    }
    daemon.stop().await;
}
both_databases!(
    client_purposes,
    super::client_purposes_never_relax_the_phi_rule
);

async fn temporary_failures_are_retried_once_delivered(backend: Backend) {
    let db = TestDb::new(backend).await;
    let inbox = db.dir.path().join("smtp");
    let sink = start_sink(&inbox, &["--tempfail-rcpt", "1", "--tempfail-data", "1"]);
    let port = sink.port;
    let mut daemon = TestDaemon::start(email_config(&db, port, "")).await;
    let (message_id, _) = send(&daemon, None).await;
    let delivery = wait_delivery(&daemon, &message_id, status_is("sent")).await;
    assert_eq!(delivery["attempts"], 3, "{delivery:#}");
    let retries: Vec<&Value> = delivery["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|h| h["status"] == "retry_scheduled")
        .collect();
    assert_eq!(retries.len(), 2, "{delivery:#}");
    assert!(
        retries[0]["detail"].as_str().unwrap_or("").contains("451"),
        "{delivery:#}"
    );
    assert_eq!(received(&inbox).len(), 1, "exactly one copy");
    daemon.stop().await;
}
both_databases!(
    temporary_failures_are_retried_once_delivered,
    super::temporary_failures_are_retried_once_delivered
);

async fn permanent_rejection_fails_with_the_reply(backend: Backend) {
    let db = TestDb::new(backend).await;
    let inbox = db.dir.path().join("smtp");
    let sink = start_sink(&inbox, &["--reject"]);
    let port = sink.port;
    let mut daemon = TestDaemon::start(email_config(&db, port, "")).await;
    let (message_id, _) = send(&daemon, None).await;
    let delivery = wait_delivery(&daemon, &message_id, status_is("failed")).await;
    assert_eq!(delivery["attempts"], 1);
    let reason = delivery["reason"].as_str().unwrap_or("");
    assert!(reason.contains("550"), "{delivery:#}");
    assert!(reason.contains("Delivery not authorized"), "{delivery:#}");
    assert!(received(&inbox).is_empty());
    daemon.stop().await;
}
both_databases!(
    permanent_rejection_fails_with_the_reply,
    super::permanent_rejection_fails_with_the_reply
);

async fn a_connection_dropped_mid_data_is_retried(backend: Backend) {
    let db = TestDb::new(backend).await;
    let inbox = db.dir.path().join("smtp");
    let sink = start_sink(&inbox, &["--drop-data-once"]);
    let port = sink.port;
    let mut daemon = TestDaemon::start(email_config(&db, port, "")).await;
    let (message_id, _) = send(&daemon, None).await;
    let delivery = wait_delivery(&daemon, &message_id, status_is("sent")).await;
    assert_eq!(delivery["attempts"], 2, "{delivery:#}");
    assert_eq!(received(&inbox).len(), 1);
    daemon.stop().await;
}
both_databases!(
    a_connection_dropped_mid_data_is_retried,
    super::a_connection_dropped_mid_data_is_retried
);

async fn a_relay_that_is_down_is_waited_for(backend: Backend) {
    let db = TestDb::new(backend).await;
    // Held (connections refused) until the relay comes up on it.
    let held = Reserved::new();
    let port = held.port();
    let inbox = db.dir.path().join("smtp");
    let mut daemon = TestDaemon::start(email_config(&db, port, "")).await;
    let (message_id, _) = send(&daemon, None).await;
    wait_delivery(&daemon, &message_id, |d| {
        d["status"] == "sending" && d["attempts"].as_i64().unwrap_or(0) >= 2
    })
    .await;
    let _sink = start_sink_on(held, &inbox, &[]);
    let delivery = wait_delivery(&daemon, &message_id, status_is("sent")).await;
    assert!(
        delivery["attempts"].as_i64().unwrap_or(0) >= 3,
        "{delivery:#}"
    );
    assert_eq!(received(&inbox).len(), 1);
    daemon.stop().await;
}
both_databases!(
    a_relay_that_is_down_is_waited_for,
    super::a_relay_that_is_down_is_waited_for
);

fn dsn(to: &str, original_headers: &str) -> String {
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n\
         To: {to}\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Date: Mon, 2 Mar 2026 10:00:00 +0000\r\n\
         Message-ID: <{}@mx.example.org>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"=_b\"\r\n\
         \r\n\
         --=_b\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         I'm sorry to have to inform you that your message could not be delivered.\r\n\
         --=_b\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; mx.example.org\r\n\
         Arrival-Date: Mon, 2 Mar 2026 09:59:58 +0000\r\n\
         \r\n\
         Final-Recipient: rfc822; patient@example.org\r\n\
         Original-Recipient: rfc822;patient@example.org\r\n\
         Action: failed\r\n\
         Status: 5.1.1\r\n\
         Remote-MTA: dns; inbound.example.org\r\n\
         Diagnostic-Code: smtp; 550 5.1.1 <patient@example.org>: Recipient address rejected: User unknown\r\n\
         \r\n\
         --=_b\r\n\
         Content-Type: text/rfc822-headers\r\n\
         \r\n\
         {original_headers}\
         --=_b--\r\n",
        ulid::Ulid::new()
    )
}

async fn bounces_fail_the_delivery(backend: Backend) {
    let db = TestDb::new(backend).await;
    let inbox = db.dir.path().join("smtp");
    let sink = start_sink(&inbox, &[]);
    let smtp_port = sink.port;
    let imap = Dovecot::start("imap-secret");
    let password = secret(&db, "imap-password", "imap-secret");
    let bounces = format!(
        "bounces = {{ host = \"127.0.0.1\", port = {}, tls = \"none\", username = \"bounces\", \
         password = {password}, poll_interval_secs = 600 }}\n",
        imap.port
    );
    // Polled only every 600 s: Dovecot offers IDLE, and IDLE is what must notice the DSNs.
    let mut daemon = TestDaemon::start(email_config(&db, smtp_port, &bounces)).await;
    let (by_verp, verp_delivery) = send(&daemon, None).await;
    let (by_id, id_delivery) = send(&daemon, None).await;
    let (victim, victim_delivery) = send(&daemon, None).await;
    wait_delivery(&daemon, &by_verp, status_is("sent")).await;
    wait_delivery(&daemon, &by_id, status_is("sent")).await;
    wait_delivery(&daemon, &victim, status_is("sent")).await;
    let token = |id: &str| daemon.core.keyring.delivery_token(id).expect("reference");
    let (verp_delivery, id_delivery) = (token(&verp_delivery), token(&id_delivery));

    // Anyone can mail the bounce mailbox: DSNs naming a delivery by its id (VERP or
    // Message-ID), or by a token our key did not make, change nothing. They arrive first, so
    // by the time the real DSNs are recorded they have been read.
    imap.deliver(
        "0998.forged",
        &dsn(
            &format!("bounces+{victim_delivery}@{DOMAIN}"),
            &format!("Message-ID: <{victim_delivery}@{DOMAIN}>\r\n"),
        ),
    );
    imap.deliver(
        "0999.forged",
        &dsn(
            &format!("bounces+r{}@{DOMAIN}", "7".repeat(26)),
            "Subject: x\r\n",
        ),
    );

    // A plain reply first: it must be left alone.
    imap.deliver(
        "1000.plain",
        "From: patient@example.org\r\nTo: bounces@mail.north.example\r\nSubject: Re: hello\r\n\
         Message-ID: <reply-1@example.org>\r\n\r\nThanks!\r\n",
    );
    // One DSN names the delivery by its VERP address, the other only by the returned Message-ID.
    imap.deliver(
        "1001.dsn",
        &dsn(
            &format!("bounces+{verp_delivery}@{DOMAIN}"),
            "From: North Clinic <no-reply@north.example>\r\nSubject: New secure message\r\n",
        ),
    );
    imap.deliver(
        "1002.dsn",
        &dsn(
            &format!("bounces@{DOMAIN}"),
            &format!(
                "From: North Clinic <no-reply@north.example>\r\nMessage-ID: <{id_delivery}@{DOMAIN}>\r\n"
            ),
        ),
    );

    for message_id in [&by_verp, &by_id] {
        let delivery = wait_delivery(&daemon, message_id, status_is("failed")).await;
        let reason = delivery["reason"].as_str().unwrap_or("");
        assert!(reason.contains("550 5.1.1"), "{delivery:#}");
        assert!(
            !reason.contains("patient@example.org"),
            "address in reason: {reason}"
        );
        let history = delivery["history"].as_array().expect("history");
        assert!(
            history
                .iter()
                .any(|h| h["source"] == "dsn" && h["status"] == "failed" && h["applied"] == true),
            "{delivery:#}"
        );
    }
    // Flagged only after the commit: wait for the flags to land.
    let started = Instant::now();
    while !(imap.flags("1001.dsn").is_some_and(|f| f.contains('S'))
        && imap.flags("1002.dsn").is_some_and(|f| f.contains('S')))
    {
        assert!(started.elapsed() < WAIT, "DSNs not flagged \\Seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The plain message and the forged DSNs were read before the real ones: Dovecot numbers
    // maildir arrivals by the time their names start with (0998 < 0999 < 1000 < 1001 < 1002),
    // and a pass reads the unseen messages in UID order. So with 1001 and 1002 flagged, the
    // lower UIDs have had their turn: the plain message is still unread and in place...
    let plain = imap.flags("1000.plain").expect("plain message still there");
    assert!(!plain.contains('S'), "plain message flagged: {plain:?}");
    // ... and the forged DSNs were applied to nothing.
    let view = daemon.get_json(&format!("/v1/messages/{victim}")).await;
    assert_eq!(view["deliveries"][0]["status"], "sent", "{view:#}");
    for forged in ["0998.forged", "0999.forged"] {
        let flags = imap.flags(forged).expect("forged DSN still there");
        assert!(!flags.contains('S'), "{forged} flagged: {flags:?}");
    }
    daemon.stop().await;
}
both_databases!(bounces_fail_the_delivery, super::bounces_fail_the_delivery);

/// The README's example connector is a valid configuration.
#[test]
fn the_readme_example_parses() {
    let readme = include_str!("../README.md");
    let section = readme
        .split("## Email (SMTP)")
        .nth(1)
        .expect("README has an Email (SMTP) section");
    let example = section
        .split("```toml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a toml example");
    let config = Config::from_toml(example).expect("the README example parses");
    assert_eq!(config.channel("email").connector, "relay");
    match config.connectors.get("relay") {
        Some(ConnectorConfig::Smtp(smtp)) => {
            assert!(smtp.verp);
            assert_eq!(
                smtp.bounces.as_ref().map(|b| b.poll_interval_secs),
                Some(60)
            );
        }
        _ => panic!("relay is an smtp connector"),
    }
}

/// A self-signed certificate for 127.0.0.1 (the openssl CLI), doubling as its own CA.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl CLI");
    assert!(status.success(), "openssl req");
    (cert, key)
}

fn outbound() -> switchboard::channels::OutboundDelivery {
    use switchboard::channels::{OutboundDelivery, Sender};
    OutboundDelivery {
        delivery_id: "dlv_01jtls0000000000000000000".into(),
        reference: "r01jtls0000000000000000000x".into(),
        organization_id: "org_1".into(),
        message_id: "msg_1".into(),
        channel: switchboard::domain::Channel::Email,
        recipient: "patient@example.org".into(),
        subject: None,
        body: "Private".into(),
        urgent: false,
        attempt: 1,
        purpose: "message".into(),
        sender: std::sync::Arc::new(Sender {
            organization_id: "org_1".into(),
            slug: "north".into(),
            name: "North Clinic".into(),
            settings: OrganizationConfig::default(),
        }),
        attachments: Vec::new(),
    }
}

/// One send straight through an `SmtpChannel` (no daemon: TLS does not involve the store).
async fn send_direct(
    port: u16,
    tls: &str,
    ca: Option<&Path>,
) -> Result<switchboard::channels::SendOutcome, switchboard::channels::ChannelError> {
    use switchboard::channels::Channel;
    let ca = ca
        .map(|p| format!("ca_certificate = \"{}\"\n", p.display()))
        .unwrap_or_default();
    let text = format!(
        "host = \"127.0.0.1\"\nport = {port}\ntls = \"{tls}\"\n{ca}\
         from = \"bounces@{DOMAIN}\"\ntimeout_secs = 5\n"
    );
    let config: switchboard::config::SmtpConnectorConfig = toml::from_str(&text).expect("config");
    let channel = switchboard::channels::email::SmtpChannel::new(
        "relay",
        &config,
        std::sync::Arc::new(switchboard::templates::Templates::builtin()),
    )
    .expect("channel");
    channel.send(&outbound()).await
}

#[tokio::test]
async fn tls_modes_with_a_private_ca() {
    use switchboard::channels::ChannelError;
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificate(dir.path());
    let tls_sink = |mode: &str, name: &str| {
        let inbox = dir.path().join(name);
        let flags = [
            "--tls",
            mode,
            "--cert",
            cert.to_str().expect("path"),
            "--key",
            key.to_str().expect("path"),
        ];
        let sink = start_sink(&inbox, &flags);
        let port = sink.port;
        (sink, port, inbox)
    };

    let (_implicit, port, inbox) = tls_sink("implicit", "implicit");
    let sent = send_direct(port, "implicit", Some(&cert))
        .await
        .expect("implicit TLS");
    assert!(sent.provider_ref.unwrap_or_default().contains("queued as"));
    assert_eq!(received(&inbox).len(), 1);

    let (_starttls, port, inbox) = tls_sink("starttls", "starttls");
    send_direct(port, "starttls", Some(&cert))
        .await
        .expect("STARTTLS");
    send_direct(port, "opportunistic", Some(&cert))
        .await
        .expect("opportunistic upgrades when offered");
    assert_eq!(received(&inbox).len(), 2);
    // An unknown CA is refused (and retried later, as the relay may be fixed).
    let err = send_direct(port, "starttls", None)
        .await
        .expect_err("untrusted");
    assert!(matches!(err, ChannelError::Transient(_)), "{err:?}");
    assert_eq!(received(&inbox).len(), 2);

    // STARTTLS required: a relay that does not offer it gets nothing in clear text.
    let plain_inbox = dir.path().join("plain");
    let plain = start_sink(&plain_inbox, &[]);
    let plain_port = plain.port;
    let err = send_direct(plain_port, "starttls", Some(&cert))
        .await
        .expect_err("no STARTTLS offered");
    assert!(matches!(err, ChannelError::Transient(_)), "{err:?}");
    assert!(received(&plain_inbox).is_empty());
    send_direct(plain_port, "opportunistic", Some(&cert))
        .await
        .expect("opportunistic falls back to clear text");
    assert_eq!(received(&plain_inbox).len(), 1);
}

/// Records what the poller hands over; every candidate "exists".
#[derive(Default)]
struct RecordingSink(std::sync::Mutex<Vec<(Vec<String>, String)>>);

#[async_trait::async_trait]
impl switchboard::channels::email::BounceSink for RecordingSink {
    async fn record_bounce(
        &self,
        _connector: &str,
        candidates: &[String],
        reason: &str,
    ) -> Result<Option<String>, Box<dyn std::error::Error + Send + Sync>> {
        self.0
            .lock()
            .expect("lock")
            .push((candidates.to_vec(), reason.to_string()));
        Ok(candidates.first().cloned())
    }
}

#[tokio::test]
async fn the_bounce_mailbox_is_read_over_tls() {
    use switchboard::channels::email::bounces::poll_once;
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificate(certs.path());
    let imap = Dovecot::start_with("imap-secret", Some((&cert, &key)));
    let password_file = certs.path().join("imap-password");
    std::fs::write(&password_file, "imap-secret").expect("secret");
    let id = "r01jtls0000000000000000001x";
    imap.deliver(
        "2001.dsn",
        &dsn(
            &format!("bounces+{id}@{DOMAIN}"),
            "Subject: New secure message\r\n",
        ),
    );
    for (tls, port) in [("implicit", imap.tls_port), ("starttls", imap.port)] {
        let text = format!(
            "host = \"127.0.0.1\"\nport = {port}\ntls = \"{tls}\"\nca_certificate = \"{}\"\n\
             username = \"bounces\"\npassword = {{ file = \"{}\" }}\n",
            cert.display(),
            password_file.display()
        );
        let config: switchboard::config::ImapMailboxConfig =
            toml::from_str(&text).expect("imap config");
        let sink = RecordingSink::default();
        let mut skip = std::collections::HashSet::new();
        let recorded = poll_once("mail", &config, DOMAIN, &sink, &mut skip)
            .await
            .unwrap_or_else(|e| panic!("{tls}: {e}"));
        if tls == "implicit" {
            assert_eq!(recorded, 1);
            let seen = sink.0.lock().expect("lock");
            assert_eq!(seen[0].0, vec![id.to_string()]);
            assert!(seen[0].1.contains("550 5.1.1"), "{:?}", seen[0]);
            assert!(imap.flags("2001.dsn").is_some_and(|f| f.contains('S')));
        } else {
            assert_eq!(recorded, 0, "already \\Seen: not read again");
        }
    }
}
