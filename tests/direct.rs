//! The Direct channel against real peers, on SQLite and PostgreSQL. The HISP is Debian's
//! Postfix (a private instance per test: STARTTLS, AUTH through Dovecot's SASL socket) delivering
//! over LMTP to Dovecot (IMAP with IDLE); Python's smtplib/imaplib (`tests/peers/mail_client.py`)
//! submit MDNs and read the recipient's mailbox. aiosmtpd (`tests/peers/smtp_sink.py`) records
//! exact envelopes for the quarantine and edge-mode scenarios, with the mailbox polled (IDLE off).
//! The `openssl` CLI is the independent S/MIME peer, the test PKI is made with
//! `openssl req/x509`, and a loopback DNS server (UDP and TCP, written here from the RFC 1035
//! wire format) serves CERT records (RFC 4398).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::mail::{Dovecot, received, start_sink};
use common::pki::{Pki, openssl};
use common::ports::{Reserved, free_port};
use common::smime::openssl_open_text;
use common::{Backend, TestDaemon, TestDb};
use serde_json::{Value, json};
use switchboard::config::{Config, ConnectorConfig};
use switchboard::direct::mdn::{MdnDisposition, MdnRequest, build_mdn};
use switchboard::direct::{SealOptions, seal};

const WAIT: Duration = Duration::from_secs(30);
use common::hisp::{DOC, Hisp, US};
const CCD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ccda/CCD-2.xml");

// ---------------------------------------------------------------- test PKI (openssl CLI)

/// `ca` (trusted) issues `us`, `doc`, `domain` (DNS:direct.south.example); `rogue` (not
/// trusted) issues `rogue_doc` and `rogue_bad`, bound like real addresses.
fn direct_pki() -> Pki {
    let pki = Pki::new();
    pki.ca("ca").ca("rogue");
    pki.leaf("ca", "us", &format!("email:{US}"))
        .leaf("ca", "doc", &format!("email:{DOC}"))
        .leaf("ca", "domain", "DNS:direct.south.example")
        .leaf("rogue", "rogue_doc", &format!("email:{DOC}"))
        .leaf("rogue", "rogue_bad", "email:bad@direct.south.example");
    pki
}

// ---------------------------------------------------------------- daemon config

/// Discovery off the network: the local store only.
const NO_NETWORK_DISCOVERY: &str = "dns = { enabled = false }\nldap = { enabled = false }\n";

fn direct_config(db: &TestDb, pki: &Pki, smtp_port: u16, extra: &str) -> Config {
    direct_config_discovery(db, pki, smtp_port, NO_NETWORK_DISCOVERY, extra)
}

/// The connector's `smtp = { ... }` line for a plain loopback relay.
fn plain_smtp(smtp_port: u16) -> String {
    format!(
        "smtp = {{ host = \"127.0.0.1\", port = {smtp_port}, tls = \"none\", timeout_secs = 3 }}\n"
    )
}

/// As [`direct_config`], with `discovery` (the connector's `dns`/`ldap` keys).
fn direct_config_discovery(
    db: &TestDb,
    pki: &Pki,
    smtp_port: u16,
    discovery: &str,
    extra: &str,
) -> Config {
    direct_config_full(db, pki, &plain_smtp(smtp_port), discovery, extra)
}

/// As [`direct_config`], with the connector's `smtp = { ... }` line given.
fn direct_config_with(db: &TestDb, pki: &Pki, smtp: &str, extra: &str) -> Config {
    direct_config_full(db, pki, smtp, NO_NETWORK_DISCOVERY, extra)
}

fn direct_config_full(db: &TestDb, pki: &Pki, smtp: &str, discovery: &str, extra: &str) -> Config {
    let mut config = db.config();
    let store = db.dir.path().join("certs");
    switchboard::direct::discovery::LocalStore::new(&store)
        .import(&std::fs::read(pki.path("doc.pem")).expect("doc"))
        .expect("import");
    let toml = format!(
        "address = \"{US}\"\ncertificate = \"{cert}\"\nprivate_key = {{ file = \"{key}\" }}\n\
         cert_store = \"{store}\"\n{discovery}\
         trust = [{{ files = [\"{ca}\"] }}]\n{smtp}{extra}",
        cert = pki.path("us.pem").display(),
        key = pki.path("us.key").display(),
        store = store.display(),
        ca = pki.path("ca.pem").display(),
    );
    config.connectors.insert(
        "hisp".into(),
        ConnectorConfig::Direct(toml::from_str(&toml).expect("direct connector")),
    );
    let direct = config.channels.entry("direct".into()).or_default();
    direct.connector = "hisp".into();
    direct.backoff_initial_ms = 100;
    direct.backoff_max_secs = 1;
    config
}

async fn send(daemon: &TestDaemon, to: &str) -> String {
    let body = std::fs::read_to_string(CCD).expect("C-CDA vector");
    let response = daemon
        .post_message(json!({
            "subject": "Referral",
            "body": body,
            "recipients": [{"address": to, "channel": "direct"}],
        }))
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    let created: Value = response.json().await.expect("json");
    created["id"].as_str().expect("id").to_string()
}

async fn wait_delivery(daemon: &TestDaemon, message_id: &str, status: &str) -> Value {
    let started = Instant::now();
    loop {
        let view = daemon.get_json(&format!("/v1/messages/{message_id}")).await;
        let delivery = &view["deliveries"][0];
        if delivery["status"] == status {
            return delivery.clone();
        }
        assert!(
            started.elapsed() < WAIT,
            "delivery not {status} in time: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An MDN from `from` about `message_id`, sealed (signed by `signer`, encrypted to us).
fn sealed_mdn(pki: &Pki, signer: &str, from: &str, message_id: &str, report: MdnKind) -> String {
    let mdn = match report {
        MdnKind::Processed | MdnKind::Dispatched => build_mdn(&MdnRequest {
            from,
            to: US,
            original_message_id: message_id,
            reporting_ua: "hisp.south.example; test",
            disposition: if report == MdnKind::Processed {
                MdnDisposition::Processed
            } else {
                MdnDisposition::Dispatched
            },
            final_destination_delivery: report == MdnKind::Dispatched,
        })
        .expect("mdn"),
        MdnKind::Failed => format!(
            "From: <{from}>\r\nTo: <{US}>\r\nMessage-ID: <{}@south.example>\r\nSubject: failed\r\n\
             MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=disposition-notification; boundary=\"b1\"\r\n\r\n\
             --b1\r\nContent-Type: text/plain\r\n\r\nNot delivered.\r\n\
             --b1\r\nContent-Type: message/disposition-notification\r\n\r\n\
             Reporting-UA: hisp.south.example; test\r\nFinal-Recipient: rfc822;{from}\r\n\
             Original-Message-ID: <{message_id}>\r\n\
             Disposition: automatic-action/MDN-sent-automatically;failed\r\n\
             Failure: recipient mailbox does not exist\r\n\r\n--b1--\r\n",
            ulid::Ulid::new()
        )
        .into_bytes(),
    };
    let sealed = seal(
        &mdn,
        from,
        &[US],
        &pki.cert(signer),
        &pki.key(signer),
        &[],
        &[pki.cert("us")],
        SealOptions::default(),
    )
    .expect("seal mdn");
    String::from_utf8(sealed).expect("ascii")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum MdnKind {
    Processed,
    Dispatched,
    Failed,
}

/// A processed MDN signed and encrypted by the openssl CLI (an independent S/MIME stack).
fn openssl_mdn(pki: &Pki, message_id: &str) -> String {
    let mdn = build_mdn(&MdnRequest {
        from: DOC,
        to: US,
        original_message_id: message_id,
        reporting_ua: "hisp.south.example; openssl",
        disposition: MdnDisposition::Processed,
        final_destination_delivery: false,
    })
    .expect("mdn");
    let text = String::from_utf8(mdn).expect("ascii");
    // The MIME entity (Content-Type onwards) is what gets signed; the rest are outer headers.
    let at = text.find("Content-Type: multipart/report").expect("report");
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("entity.txt"), &text[at..]).expect("write");
    openssl(
        dir.path(),
        &[
            "cms",
            "-sign",
            "-md",
            "sha256",
            "-in",
            "entity.txt",
            "-signer",
            &pki.path("doc.pem").display().to_string(),
            "-inkey",
            &pki.path("doc.key").display().to_string(),
            "-out",
            "signed.eml",
        ],
    );
    openssl(
        dir.path(),
        &[
            "cms",
            "-encrypt",
            "-aes256",
            "-in",
            "signed.eml",
            "-from",
            DOC,
            "-to",
            US,
            "-subject",
            "Processed",
            "-out",
            "mdn.eml",
            "-recip",
            &pki.path("us.pem").display().to_string(),
            "-keyopt",
            "rsa_padding_mode:oaep",
            "-keyopt",
            "rsa_oaep_md:sha256",
        ],
    );
    std::fs::read_to_string(dir.path().join("mdn.eml")).expect("mdn")
}

// ---------------------------------------------------------------- scenarios

async fn mdns_walk_the_delivery(backend: Backend) {
    let db = TestDb::new(backend).await;
    let pki = direct_pki();
    let inbox = db.dir.path().join("smtp");
    let sink = start_sink(&inbox, &[]);
    let smtp_port = sink.port;
    let imap = Dovecot::start("imap-secret");
    let password = db.dir.path().join("imap-password");
    std::fs::write(&password, "imap-secret").expect("secret");
    let mailbox = format!(
        "mailbox = {{ host = \"127.0.0.1\", port = {}, tls = \"none\", username = \"bounces\", \
         password = {{ file = \"{}\" }}, poll_interval_secs = 1, idle = false }}\n",
        imap.port,
        password.display()
    );
    let mut daemon = TestDaemon::start(direct_config(&db, &pki, smtp_port, &mailbox)).await;

    // 1. A message to a recipient in the local store goes out sealed.
    let walked = send(&daemon, DOC).await;
    let failed = send(&daemon, DOC).await;
    let untrusted = send(&daemon, DOC).await;
    let mut ids = HashMap::new();
    for m in [&walked, &failed, &untrusted] {
        let d = wait_delivery(&daemon, m, "sent").await;
        let provider_ref = d["provider_ref"]
            .as_str()
            .expect("provider_ref")
            .to_string();
        assert!(
            provider_ref.ends_with("@direct.north.example"),
            "{provider_ref}"
        );
        ids.insert(m.clone(), provider_ref);
    }
    let got = received(&inbox);
    assert_eq!(got.len(), 3);
    let (envelope, raw) = &got[0];
    assert_eq!(envelope["mail_from"], US);
    assert_eq!(envelope["rcpt_tos"], json!([DOC]));
    let text = String::from_utf8_lossy(raw);
    assert!(text.contains("Disposition-Notification-To: <clinic@direct.north.example>"));
    assert!(text.contains("X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true"));
    assert!(text.contains("application/pkcs7-mime"));
    assert!(!text.contains("ClinicalDocument"), "C-CDA in clear text");
    // The openssl CLI decrypts with the recipient's key and verifies our signature.
    let inner = openssl_open_text(&pki, "doc", raw);
    assert!(inner.contains("Content-Type: message/rfc822"), "{inner}");
    assert!(inner.contains("Subject: Referral"));
    assert!(inner.contains("filename=\"document.xml\""));

    // 2. processed → dispatched.
    let walked_id = &ids[&walked];
    imap.deliver("2001.mdn", &openssl_mdn(&pki, walked_id));
    wait_delivery(&daemon, &walked, "processed").await;
    imap.deliver(
        "2002.mdn",
        &sealed_mdn(&pki, "doc", DOC, walked_id, MdnKind::Dispatched),
    );
    let d = wait_delivery(&daemon, &walked, "dispatched").await;
    // A late duplicate processed MDN is recorded and changes nothing.
    imap.deliver(
        "2003.mdn",
        &sealed_mdn(&pki, "doc", DOC, walked_id, MdnKind::Processed),
    );
    let started = Instant::now();
    loop {
        let view = daemon.get_json(&format!("/v1/messages/{walked}")).await;
        let history = view["deliveries"][0]["history"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let late = history
            .iter()
            .filter(|h| h["source"] == "mdn" && h["status"] == "processed")
            .count();
        if late == 2 {
            assert_eq!(view["deliveries"][0]["status"], "dispatched");
            assert!(history.iter().any(|h| h["applied"] == false));
            break;
        }
        assert!(started.elapsed() < WAIT, "late MDN not recorded: {d:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 3. A failed MDN fails the delivery with its reason.
    imap.deliver(
        "2004.mdn",
        &sealed_mdn(&pki, "doc", DOC, &ids[&failed], MdnKind::Failed),
    );
    let d = wait_delivery(&daemon, &failed, "failed").await;
    assert!(
        d["reason"]
            .as_str()
            .unwrap_or("")
            .contains("mailbox does not exist"),
        "{d:#}"
    );

    // 4. An MDN signed by an untrusted certificate bound to the same address applies to
    // nothing: what fails trust cannot be told from a message, so it is kept for the operator
    // (this connector belongs to no organization: an orphan) and flagged once recorded.
    imap.deliver(
        "2005.mdn",
        &sealed_mdn(&pki, "rogue_doc", DOC, &ids[&untrusted], MdnKind::Failed),
    );
    // Then a marker: another late duplicate for the walked delivery, recorded and flagged.
    // Dovecot numbers maildir arrivals by the time their names start with (2005 < 2006) and
    // the tracker reads unseen messages in UID order, so once the marker is flagged the rogue
    // MDN before it has had its turn. (Seen flags land only after commits.)
    imap.deliver(
        "2006.mdn",
        &sealed_mdn(&pki, "doc", DOC, walked_id, MdnKind::Processed),
    );
    let started = Instant::now();
    while ![
        "2001.mdn", "2002.mdn", "2003.mdn", "2004.mdn", "2005.mdn", "2006.mdn",
    ]
    .iter()
    .all(|n| imap.flags(n).is_some_and(|f| f.contains('S')))
    {
        assert!(started.elapsed() < WAIT, "MDNs not flagged \\Seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let view = daemon.get_json(&format!("/v1/messages/{untrusted}")).await;
    assert_eq!(view["deliveries"][0]["status"], "sent", "{view:#}");
    let orphans = daemon
        .core
        .store
        .inbound()
        .orphans(10)
        .await
        .expect("orphans");
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    assert_eq!(orphans[0].channel, "direct");

    // 5. No certificate for the recipient: a permanent failure, nothing sent.
    let nobody = send(&daemon, "nobody@direct.nowhere.example").await;
    let d = wait_delivery(&daemon, &nobody, "failed").await;
    assert!(
        d["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no trusted certificate for recipient"),
        "{d:#}"
    );
    assert_eq!(received(&inbox).len(), 3);
    daemon.stop().await;
}
both_databases!(mdns_walk_the_delivery, super::mdns_walk_the_delivery);

// ---------------------------------------------------------------- Postfix + Dovecot as the HISP

/// The message as the recipient's mailbox holds it, checked as another stack reads it.
fn assert_delivered_sealed(pki: &Pki, raw: &[u8], message_id: &str) {
    let text = String::from_utf8_lossy(raw);
    assert!(
        text.contains(&format!("Message-ID: <{message_id}>")),
        "{text:.2000}"
    );
    // Postfix's Received header: our connector used TLS and authenticated.
    assert!(text.contains("(using TLS"), "{text:.2000}");
    assert!(
        text.contains(&format!("(Authenticated sender: {US})")),
        "{text:.2000}"
    );
    assert!(text.contains("Disposition-Notification-To: <clinic@direct.north.example>"));
    assert!(text.contains("application/pkcs7-mime"));
    assert!(!text.contains("ClinicalDocument"), "C-CDA in clear text");
    let inner = openssl_open_text(pki, "doc", raw);
    assert!(inner.contains("Content-Type: message/rfc822"), "{inner}");
    assert!(inner.contains("Subject: Referral"));
    assert!(inner.contains("filename=\"document.xml\""));
}

/// Send through Postfix to the recipient's Dovecot mailbox; MDNs sent back through Postfix
/// walk the delivery processed → dispatched. The mailbox is polled only every 600 s: IDLE
/// must be what notices them.
async fn postfix_hisp_mail_path(backend: Backend) {
    let db = TestDb::new(backend).await;
    let pki = direct_pki();
    let hisp = Hisp::start();
    let (smtp, mailbox) = hisp.connector(&db, 600);
    let mut daemon = TestDaemon::start(direct_config_with(&db, &pki, &smtp, &mailbox)).await;

    let message = send(&daemon, DOC).await;
    let d = wait_delivery(&daemon, &message, "sent").await;
    let message_id = d["provider_ref"]
        .as_str()
        .expect("provider_ref")
        .to_string();
    let inbox = hisp.doc_inbox(1);
    assert_eq!(inbox.len(), 1);
    assert_delivered_sealed(&pki, &inbox[0], &message_id);

    // A processed MDN signed and encrypted by the openssl CLI.
    let submitted = Instant::now();
    hisp.notify_us(&openssl_mdn(&pki, &message_id));
    wait_delivery(&daemon, &message, "processed").await;
    let took = submitted.elapsed();
    assert!(took < Duration::from_secs(15), "processed after {took:?}");

    // A dispatched MDN with X-DIRECT-FINAL-DESTINATION-DELIVERY, sealed by our own code.
    let submitted = Instant::now();
    hisp.notify_us(&sealed_mdn(
        &pki,
        "doc",
        DOC,
        &message_id,
        MdnKind::Dispatched,
    ));
    let d = wait_delivery(&daemon, &message, "dispatched").await;
    let took = submitted.elapsed();
    assert!(took < Duration::from_secs(15), "dispatched after {took:?}");
    let history = d["history"].as_array().expect("history");
    for status in ["processed", "dispatched"] {
        assert!(
            history
                .iter()
                .any(|h| h["source"] == "mdn" && h["status"] == status && h["applied"] == true),
            "{d:#}"
        );
    }
    // Both notifications were flagged \Seen in our mailbox after their commits.
    let started = Instant::now();
    loop {
        let seen = std::fs::read_dir(hisp.imap.maildir().join("cur"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .rsplit_once(":2,")
                            .is_some_and(|(_, flags)| flags.contains('S'))
                    })
                    .count()
            })
            .unwrap_or(0);
        if seen == 2 {
            break;
        }
        assert!(started.elapsed() < WAIT, "MDNs not flagged \\Seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // On shutdown the tracker ends its IDLE with DONE and logs out (Dovecot logs "Logged out"
    // for a LOGOUT, "Connection closed (IDLE running ...)" for a dropped connection).
    daemon.stop().await;
    let log_path = hisp.imap.dir.path().join("dovecot.log");
    let started = Instant::now();
    loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let ours: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&format!("imap({US})")) && l.contains("Disconnected"))
            .collect();
        if !ours.is_empty() {
            assert!(ours.iter().all(|l| l.contains("Logged out")), "{ours:#?}");
            break;
        }
        assert!(started.elapsed() < WAIT, "no IMAP logout logged:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
both_databases!(postfix_hisp_mail_path, super::postfix_hisp_mail_path);

/// Sent through Postfix, delivered, and no MDN comes back: the delivery expires (the expiry
/// pass runs on its own interval while the mailbox waits in IDLE).
async fn no_mdn_expires(backend: Backend) {
    let db = TestDb::new(backend).await;
    let pki = direct_pki();
    let hisp = Hisp::start();
    let (smtp, mailbox) = hisp.connector(&db, 600);
    let config = direct_config_with(
        &db,
        &pki,
        &smtp,
        &format!("{mailbox}processed_timeout_secs = 3\nexpiry_interval_secs = 1\n"),
    );
    let mut daemon = TestDaemon::start(config).await;
    let message = send(&daemon, DOC).await;
    let d = wait_delivery(&daemon, &message, "sent").await;
    let inbox = hisp.doc_inbox(1);
    assert_delivered_sealed(&pki, &inbox[0], d["provider_ref"].as_str().expect("ref"));
    let d = wait_delivery(&daemon, &message, "expired").await;
    assert!(
        d["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no processed MDN"),
        "{d:#}"
    );
    daemon.stop().await;
}
both_databases!(no_mdn_expires, super::no_mdn_expires);

async fn edge_mode_submits_plain_over_auth(backend: Backend) {
    let db = TestDb::new(backend).await;
    let pki = direct_pki();
    let inbox = db.dir.path().join("smtp");
    let sink = start_sink(&inbox, &["--auth", "sta:pw"]);
    let smtp_port = sink.port;
    let pw = db.dir.path().join("smtp-pw");
    std::fs::write(&pw, "pw").expect("pw");
    let mut config = direct_config(&db, &pki, smtp_port, "");
    if let Some(ConnectorConfig::Direct(d)) = config.connectors.get_mut("hisp") {
        d.mode = switchboard::config::DirectMode::Edge;
        d.certificate = None;
        d.private_key = None;
        d.smtp.username = Some("sta".into());
        d.smtp.password = Some(switchboard::config::Secret {
            file: Some(pw),
            credential: None,
        });
    }
    let mut daemon = TestDaemon::start(config).await;
    // Edge mode: the HISP finds certificates; any address goes.
    let message = send(&daemon, "nobody@direct.nowhere.example").await;
    let d = wait_delivery(&daemon, &message, "sent").await;
    let got = received(&inbox);
    assert_eq!(got.len(), 1);
    let text = String::from_utf8_lossy(&got[0].1);
    assert!(text.contains("multipart/mixed"));
    assert!(text.contains(&format!(
        "Message-ID: <{}>",
        d["provider_ref"].as_str().expect("ref")
    )));
    daemon.stop().await;
}
both_databases!(
    edge_mode_submits_plain_over_auth,
    super::edge_mode_submits_plain_over_auth
);

// ---------------------------------------------------------------- DNS CERT discovery

/// A discovery fetch policy allowing `allow` (`[security] fetch_allow`).
fn fetch_policy(allow: &[&str]) -> Arc<switchboard::fetch::FetchPolicy> {
    let security = switchboard::config::SecurityConfig {
        fetch_allow: allow.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    Arc::new(
        switchboard::fetch::FetchPolicy::new(&security, Duration::from_secs(10)).expect("policy"),
    )
}

/// A resource record: (type, RDATA).
type Rr = (u16, Vec<u8>);

/// A CERT record (RFC 4398): type 1 = PKIX (DER inline), 4 = IPKIX (a URL).
fn cert_rr(cert_type: u16, data: Vec<u8>) -> Rr {
    let mut rdata = cert_type.to_be_bytes().to_vec();
    rdata.extend_from_slice(&[0, 0, 0]); // key tag, algorithm
    rdata.extend_from_slice(&data);
    (37, rdata)
}

/// An SRV record (RFC 2782), target uncompressed.
fn srv_rr(priority: u16, weight: u16, port: u16, target: &str) -> Rr {
    let mut rdata = Vec::new();
    for n in [priority, weight, port] {
        rdata.extend_from_slice(&n.to_be_bytes());
    }
    for label in target.split('.').filter(|l| !l.is_empty()) {
        rdata.push(label.len() as u8);
        rdata.extend_from_slice(label.as_bytes());
    }
    rdata.push(0);
    (33, rdata)
}

/// An A record.
fn a_rr(ip: [u8; 4]) -> Rr {
    (1, ip.to_vec())
}

/// A loopback DNS server answering from `zone` over UDP and TCP: the records of the asked
/// type, NODATA for a name with none, NXDOMAIN for an unknown name. Answers that do not fit
/// 512 bytes go out truncated over UDP (TC), so the resolver must retry over TCP.
struct DnsServer {
    addr: std::net::SocketAddr,
    tcp_queries: Arc<std::sync::atomic::AtomicUsize>,
}

fn qname_end(msg: &[u8]) -> Option<(String, usize)> {
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *msg.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(msg.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    Some((labels.join("."), i + 4))
}

fn answer(query: &[u8], zone: &HashMap<String, Vec<Rr>>, udp: bool) -> Option<Vec<u8>> {
    let (name, qend) = qname_end(query)?;
    let qtype = u16::from_be_bytes([*query.get(qend - 4)?, *query.get(qend - 3)?]);
    let records = zone.get(&name);
    let mut out = query[..2].to_vec();
    let rcode: u16 = if records.is_none() { 3 } else { 0 };
    let answers: Vec<&Rr> = records
        .map(|r| r.iter().filter(|(t, _)| *t == qtype).collect())
        .unwrap_or_default();
    let mut body = Vec::new();
    for (rtype, rdata) in &answers {
        body.extend_from_slice(&[0xC0, 0x0C]);
        body.extend_from_slice(&rtype.to_be_bytes());
        body.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
        body.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        body.extend_from_slice(rdata);
    }
    let truncated = udp && 12 + (qend - 12) + body.len() > 512;
    let flags: u16 = 0x8400 | rcode | if truncated { 0x0200 } else { 0 };
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0, 1]);
    let count = if truncated { 0 } else { answers.len() as u16 };
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&query[12..qend]);
    if !truncated {
        out.extend_from_slice(&body);
    }
    Some(out)
}

impl DnsServer {
    async fn start(zone: HashMap<String, Vec<Rr>>) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let zone = Arc::new(zone);
        // A free UDP port may be taken for TCP (by another test's connection): try another.
        let mut tries = 0;
        let (udp, tcp) = loop {
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("udp");
            let addr = udp.local_addr().expect("addr");
            match tokio::net::TcpListener::bind(addr).await {
                Ok(tcp) => break (udp, tcp),
                Err(e) if tries < 50 && e.kind() == std::io::ErrorKind::AddrInUse => tries += 1,
                Err(e) => panic!("tcp on the same port: {e}"),
            }
        };
        let addr = udp.local_addr().expect("addr");
        let z = zone.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
                if let Some(reply) = answer(&buf[..n], &z, true) {
                    let _ = udp.send_to(&reply, peer).await;
                }
            }
        });
        let tcp_queries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = tcp_queries.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                let z = zone.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    loop {
                        let mut len = [0u8; 2];
                        if s.read_exact(&mut len).await.is_err() {
                            return;
                        }
                        let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                        if s.read_exact(&mut q).await.is_err() {
                            return;
                        }
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if let Some(reply) = answer(&q, &z, false) {
                            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                            framed.extend_from_slice(&reply);
                            if s.write_all(&framed).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        DnsServer { addr, tcp_queries }
    }
}

/// Serves `body` at every path over HTTP/1.1 on loopback; returns the base URL.
async fn http_serve(body: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("http");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/pkix-cert\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn dns_cert_discovery() {
    use switchboard::direct::anchors::{AnchorSet, Anchors};
    use switchboard::direct::discovery::{Discovery, Source, dns::DnsCerts};

    let pki = direct_pki();
    let der = |name: &str| pki.cert(name).to_der().expect("der");
    let url = format!("{}/domain.cer", http_serve(der("domain")).await);
    let mut zone = HashMap::new();
    // Address-bound, inline (too big for UDP: TCP fallback).
    zone.insert(
        "doc.direct.south.example".to_string(),
        vec![cert_rr(1, der("doc"))],
    );
    // Domain-bound, by URL (IPKIX).
    zone.insert(
        "direct.south.example".to_string(),
        vec![cert_rr(4, url.into_bytes())],
    );
    // Address-bound but untrusted: must not fall back to the domain's certificate.
    zone.insert(
        "bad.direct.south.example".to_string(),
        vec![cert_rr(1, der("rogue_bad"))],
    );
    let server = DnsServer::start(zone).await;

    // The IPKIX URL is on loopback: allowed here, as an on-premises directory would be.
    let dns = DnsCerts::new(
        &switchboard::config::DnsDiscoveryConfig {
            enabled: true,
            nameservers: vec![server.addr],
            timeout_secs: 2,
        },
        fetch_policy(&["127.0.0.1"]),
    )
    .expect("resolver");
    let discovery = Discovery {
        local: None,
        dns: Some(dns),
        ldap: None,
        anchors: Arc::new(Anchors::new(vec![AnchorSet {
            domains: vec!["direct.south.example".into()],
            outbound: true,
            inbound: false,
            certs: vec![pki.cert("ca")],
        }])),
        fetcher: None,
    };
    let now = chrono::Utc::now();

    let found = discovery.find(DOC, now).await.expect("lookup");
    assert_eq!(found.certs.len(), 1);
    assert_eq!(found.certs[0].to_der().expect("der"), der("doc"));
    assert_eq!(
        found.steps.last().map(|s| (s.source, s.address_bound)),
        Some((Source::Dns, true))
    );
    assert!(
        server.tcp_queries.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "no TCP fallback"
    );

    let found = discovery
        .find("other@direct.south.example", now)
        .await
        .expect("lookup");
    assert_eq!(found.certs.len(), 1, "{:?}", found.steps);
    assert_eq!(found.certs[0].to_der().expect("der"), der("domain"));
    assert!(!found.steps.last().expect("step").address_bound);

    let found = discovery
        .find("bad@direct.south.example", now)
        .await
        .expect("lookup");
    assert!(
        found.certs.is_empty(),
        "fell back to the domain certificate"
    );
    assert!(found.first_violation().is_some());
    assert_eq!(found.steps.len(), 1);

    let found = discovery
        .find("x@unknown.example", now)
        .await
        .expect("lookup");
    assert!(found.certs.is_empty());
}

/// `switchboard certs import|list|check` on a config with a Direct connector.
#[test]
fn certs_cli() {
    let pki = direct_pki();
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("switchboard.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{data}\"\n[connectors.hisp]\nkind = \"direct\"\naddress = \"{US}\"\n\
             mode = \"edge\"\ndns = {{ enabled = false }}\n\
             trust = [{{ files = [\"{ca}\"], direction = \"outbound\" }}]\n\
             smtp = {{ host = \"127.0.0.1\" }}\n",
            data = dir.path().display(),
            ca = pki.path("ca.pem").display(),
        ),
    )
    .expect("config");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("--config")
            .arg(&config)
            .arg("certs")
            .args(args)
            .output()
            .expect("switchboard")
    };
    let out = run(&[
        "import",
        &pki.path("doc.pem").display().to_string(),
        &pki.path("rogue_bad.pem").display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains(DOC) && list.contains("bad@direct.south.example"),
        "{list}"
    );
    let out = run(&["check", DOC]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("local store address doc@direct.south.example") && text.contains(" OK"),
        "{text}"
    );
    let out = run(&["check", "bad@direct.south.example"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("REJECTED"), "{text}");
}

/// The README's Direct example is a valid configuration.
#[test]
fn the_readme_example_parses() {
    let readme = include_str!("../README.md");
    let example = readme
        .split("## Direct (secure messaging)")
        .nth(1)
        .and_then(|s| s.split("```toml\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("a toml example");
    let config = Config::from_toml(example).expect("the README example parses");
    match config.connectors.get("hisp") {
        Some(ConnectorConfig::Direct(d)) => {
            assert_eq!(d.processed_timeout_secs, 3600);
            assert_eq!(d.trust.len(), 2);
            assert!(d.mailbox.is_some());
            assert_eq!(d.ldap, switchboard::config::LdapDiscoveryConfig::default());
            assert_eq!(d.revocation.inbound_crl, switchboard::config::CrlMode::Hard);
        }
        _ => panic!("hisp is a direct connector"),
    }
}

// ---------------------------------------------------------------- AIA and CRL on loopback

/// Serves the files of `files` by path over HTTP/1.1 on `listener`; counts the connections.
fn http_files(
    listener: tokio::net::TcpListener,
    files: Arc<std::sync::Mutex<HashMap<String, Vec<u8>>>>,
) -> Arc<std::sync::atomic::AtomicUsize> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let files = files.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split(' ').nth(1).unwrap_or("/").to_string();
                let body = files.lock().ok().and_then(|f| f.get(&path).cloned());
                let reply = match body {
                    Some(b) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            b.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(&b);
                        r
                    }
                    None => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = s.write_all(&reply).await;
            });
        }
    });
    hits
}

/// Inbound: the signer's CRL is fetched through the daemon's `FetchPolicy` (loopback allowed
/// by `fetch_allow`), cached, and decides; where the policy refuses the CRL's address, the
/// verdict stays open under `inbound_crl = "hard"` (retryable), never "accepted".
#[tokio::test]
async fn inbound_signer_crl_goes_through_the_fetch_policy() {
    use switchboard::config::{CrlMode, RevocationConfig};
    use switchboard::direct::Check;
    use switchboard::direct::anchors::{AnchorSet, Anchors};
    use switchboard::direct::discovery::revocation::Fetcher;
    use switchboard_direct::inbound::accept;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("http");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let allowed = listener.local_addr().expect("addr").to_string();
    let files = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let hits = http_files(listener, files.clone());

    let pki = direct_pki();
    let (ok, revoked) = ("ok@direct.south.example", "revoked@direct.south.example");
    for (name, addr) in [("sender_ok", ok), ("sender_revoked", revoked)] {
        pki.issue(
            "ca",
            name,
            &format!(
                "{}crlDistributionPoints=URI:{base}/ca.crl\n",
                common::pki::smime_ext(&format!("email:{addr}"))
            ),
        );
    }
    let crl = pki.crl("ca", &["sender_revoked"]);
    files
        .lock()
        .expect("files")
        .insert("/ca.crl".into(), std::fs::read(&crl).expect("crl"));
    // The openssl CLI is the sending STA: sign, then encrypt to us.
    let sealed = |signer: &str, from: &str| {
        let inner = format!("inner-{signer}.eml");
        std::fs::write(
            pki.path(&inner),
            format!(
                "From: <{from}>\r\nTo: <{US}>\r\nSubject: Referral\r\n\
                 Message-ID: <{signer}@direct.south.example>\r\n\r\nHello.\r\n"
            ),
        )
        .expect("inner");
        let mut entity = b"Content-Type: message/rfc822\r\n\r\n".to_vec();
        entity.extend_from_slice(&std::fs::read(pki.path(&inner)).expect("inner"));
        std::fs::write(pki.path(&inner), entity).expect("entity");
        let (signed, enc) = (format!("signed-{signer}.eml"), format!("enc-{signer}.eml"));
        pki.openssl(&[
            "cms",
            "-sign",
            "-binary",
            "-md",
            "sha256",
            "-in",
            &inner,
            "-signer",
            &format!("{signer}.pem"),
            "-inkey",
            &format!("{signer}.key"),
            "-out",
            &signed,
        ]);
        pki.openssl(&[
            "cms",
            "-encrypt",
            "-binary",
            "-aes-256-cbc",
            "-in",
            &signed,
            "-out",
            &enc,
            "-from",
            from,
            "-to",
            US,
            "-subject",
            "Direct",
            "-recip",
            "us.pem",
        ]);
        std::fs::read(pki.path(&enc)).expect("sealed")
    };
    let (ok_msg, revoked_msg) = (sealed("sender_ok", ok), sealed("sender_revoked", revoked));
    let anchors = Anchors::new(vec![AnchorSet {
        domains: vec!["direct.south.example".into()],
        outbound: false,
        inbound: true,
        certs: vec![pki.cert("ca")],
    }]);
    let keys = [(pki.cert("us"), pki.key("us"))];
    let config = RevocationConfig {
        aia: false,
        crl: CrlMode::Off,
        inbound_crl: CrlMode::Hard,
        timeout_secs: 2,
        cache_secs: 600,
    };
    let fetcher = Fetcher::new(config.clone(), fetch_policy(&[&allowed]));
    let now = chrono::Utc::now();

    let refusal = accept(&revoked_msg, &keys, &anchors, Some(&fetcher), now)
        .await
        .expect_err("a revoked signer is refused");
    assert_eq!(
        (refusal.check, refusal.retryable),
        (Check::Revocation, false)
    );
    assert_eq!(
        refusal.to_string(),
        "revocation: certificate has been revoked"
    );
    for _ in 0..2 {
        let accepted = accept(&ok_msg, &keys, &anchors, Some(&fetcher), now)
            .await
            .expect("a good signer is accepted");
        assert_eq!(accepted.sender, ok);
        assert_eq!(accepted.signers.len(), 1);
    }
    // One fetch: the CRL is cached per URL for cache_secs.
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Without the fetch_allow entry the policy refuses loopback: no verdict, retry later.
    let refused = Fetcher::new(config, fetch_policy(&[]));
    let open = accept(&ok_msg, &keys, &anchors, Some(&refused), now)
        .await
        .expect_err("an unreachable CRL under hard is not accepted");
    assert_eq!(
        (open.check, open.retryable),
        (Check::Revocation, true),
        "{open}"
    );
    assert!(open.reason.contains("fetch_allow"), "{open}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn aia_intermediates_and_crls_are_fetched() {
    use switchboard::config::{CrlMode, RevocationConfig};
    use switchboard::direct::anchors::{AnchorSet, Anchors};
    use switchboard::direct::discovery::revocation::Fetcher;
    use switchboard::direct::discovery::{Discovery, LocalStore};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("http");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    // The AIA and CRL server is on loopback: only its own host:port is allowed.
    let allowed = listener.local_addr().expect("addr").to_string();
    let files = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let hits = http_files(listener, files.clone());

    let pki = direct_pki();
    let d = pki.dir.path();
    pki.issue(
        "ca",
        "inter",
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    );
    let leaf_ext = |addr: &str, crl: &str| {
        format!(
            "subjectAltName=email:{addr}\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             basicConstraints=CA:FALSE\nauthorityInfoAccess=caIssuers;URI:{base}/inter.cer\n\
             crlDistributionPoints=URI:{base}/{crl}\n"
        )
    };
    pki.issue(
        "inter",
        "good",
        &leaf_ext("good@direct.south.example", "inter.crl"),
    );
    pki.issue(
        "inter",
        "revoked",
        &leaf_ext("revoked@direct.south.example", "inter.crl"),
    );
    pki.issue(
        "inter",
        "nocrl",
        &leaf_ext("nocrl@direct.south.example", "missing.crl"),
    );
    // Its AIA serves the intermediate ~1700 times over (2 MiB): above the 1 MiB cap.
    pki.issue(
        "inter",
        "big",
        &leaf_ext("big@direct.south.example", "inter.crl").replace("inter.cer", "big.cer"),
    );
    // `openssl ca` revokes one and issues the CRL.
    let crl = pki.crl("inter", &["revoked"]);
    {
        let mut f = files.lock().expect("files");
        f.insert(
            "/inter.cer".into(),
            pki.cert("inter").to_der().expect("der"),
        );
        f.insert("/inter.crl".into(), std::fs::read(&crl).expect("crl"));
        let pem = pki.cert("inter").to_pem().expect("pem");
        f.insert(
            "/big.cer".into(),
            pem.repeat(2 * 1024 * 1024 / pem.len() + 1),
        );
    }
    let store = LocalStore::new(d.join("store"));
    for name in ["good", "revoked", "nocrl", "big"] {
        store
            .import(&std::fs::read(pki.path(&format!("{name}.pem"))).expect("pem"))
            .expect("import");
    }
    let discovery = |crl: CrlMode, aia: bool| Discovery {
        local: Some(store.clone()),
        dns: None,
        ldap: None,
        // Only the root is an anchor: the intermediate must come from AIA.
        anchors: Arc::new(Anchors::new(vec![AnchorSet {
            domains: Vec::new(),
            outbound: true,
            inbound: true,
            certs: vec![pki.cert("ca")],
        }])),
        fetcher: Some(Arc::new(Fetcher::new(
            RevocationConfig {
                aia,
                crl,
                inbound_crl: CrlMode::Hard,
                timeout_secs: 2,
                cache_secs: 60,
            },
            fetch_policy(&[&allowed]),
        ))),
    };
    let now = chrono::Utc::now();
    let soft = discovery(CrlMode::Soft, true);
    let found = soft
        .find("good@direct.south.example", now)
        .await
        .expect("find");
    assert_eq!(found.certs.len(), 1, "{:?}", found.steps);
    let found = soft
        .find("revoked@direct.south.example", now)
        .await
        .expect("find");
    assert!(found.certs.is_empty(), "revoked certificate accepted");
    assert!(
        matches!(
            found.first_violation(),
            Some(switchboard::direct::Violation::Revoked)
        ),
        "{:?}",
        found.steps
    );
    // An unreachable CRL: soft accepts, hard rejects.
    let found = soft
        .find("nocrl@direct.south.example", now)
        .await
        .expect("find");
    assert_eq!(found.certs.len(), 1, "{:?}", found.steps);
    let hard = discovery(CrlMode::Hard, true);
    let found = hard
        .find("nocrl@direct.south.example", now)
        .await
        .expect("find");
    assert!(found.certs.is_empty());
    // An oversize AIA answer is cut off at the cap: no intermediate, no chain.
    let found = soft
        .find("big@direct.south.example", now)
        .await
        .expect("find");
    assert!(found.certs.is_empty(), "{:?}", found.steps);
    let notes = &found.steps.last().expect("step").notes;
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("AIA ") && n.contains("larger than 1048576 bytes")),
        "{notes:?}"
    );
    // Without AIA the intermediate is missing.
    let no_aia = discovery(CrlMode::Off, false);
    let found = no_aia
        .find("good@direct.south.example", now)
        .await
        .expect("find");
    assert!(found.certs.is_empty());

    // The same server on a port fetch_allow does not list: refused before any connection.
    // With the intermediate in the anchors (no AIA needed) the chain holds; the CRL cannot
    // be read: soft accepts, hard rejects, and the server saw nothing.
    let before = hits.load(std::sync::atomic::Ordering::SeqCst);
    let other_port = Discovery {
        anchors: Arc::new(Anchors::new(vec![AnchorSet {
            domains: Vec::new(),
            outbound: true,
            inbound: true,
            certs: vec![pki.cert("ca"), pki.cert("inter")],
        }])),
        fetcher: Some(Arc::new(Fetcher::new(
            RevocationConfig {
                aia: true,
                crl: CrlMode::Hard,
                inbound_crl: CrlMode::Hard,
                timeout_secs: 2,
                cache_secs: 60,
            },
            fetch_policy(&["127.0.0.1:1"]),
        ))),
        ..discovery(CrlMode::Hard, true)
    };
    let found = other_port
        .find("revoked@direct.south.example", now)
        .await
        .expect("find");
    assert!(
        matches!(
            found.first_violation(),
            Some(switchboard::direct::Violation::RevocationUnknown { .. })
        ),
        "{:?}",
        found.steps
    );
    let notes = &found.steps.last().expect("step").notes;
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("CRL 127.0.0.1:") && n.contains("refused")),
        "{notes:?}"
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), before);
}

// ---------------------------------------------------------------- LDAP discovery (slapd)

const LAB: &str = "lab@direct.south.example";
const ROGUE_LAB: &str = "roguelab@direct.south.example";
const LDAP_SUFFIX: &str = "dc=south,dc=example";
/// The loopback directory servers of [`LdapWorld`]: not under `direct.south.example`, on
/// unprivileged ports, on loopback, so each must be in `fetch_allow`.
const LDAP_HOSTS: [&str; 3] = [
    "ldap.south.example",
    "dead.south.example",
    "silent.south.example",
];

/// `name` from /usr/sbin when it is there (not on every user's PATH), else from PATH.
fn sbin(name: &str) -> PathBuf {
    let path = Path::new("/usr/sbin").join(name);
    if path.exists() { path } else { name.into() }
}

/// Debian's slapd on a loopback port, without systemd: a generated `slapd.conf` (schemas core,
/// cosine, inetorgperson; one mdb database, anonymous read), entries loaded with `slapadd`
/// before start-up, run in the foreground (`-d 0`) and killed on drop.
struct Slapd {
    dir: tempfile::TempDir,
    child: std::process::Child,
    port: u16,
}

impl Slapd {
    /// `entries`: LDIF below `LDAP_SUFFIX` (the suffix entry itself is added here).
    fn start(entries: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir(d.join("db")).expect("db dir");
        let conf = format!(
            "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             modulepath /usr/lib/ldap\nmoduleload back_mdb\n\
             pidfile {d}/slapd.pid\nargsfile {d}/slapd.args\n\
             database mdb\nmaxsize 10485760\nsuffix \"{LDAP_SUFFIX}\"\n\
             rootdn \"cn=admin,{LDAP_SUFFIX}\"\ndirectory {d}/db\n\
             access to * by * read\n",
            d = d.display()
        );
        std::fs::write(d.join("slapd.conf"), conf).expect("slapd.conf");
        let ldif = format!(
            "dn: {LDAP_SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\n\
             o: South\ndc: south\n\n{entries}"
        );
        std::fs::write(d.join("data.ldif"), ldif).expect("ldif");
        let out = Command::new(sbin("slapadd"))
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .arg("-l")
            .arg(d.join("data.ldif"))
            .output()
            .expect("slapadd (apt-get install slapd)");
        assert!(
            out.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // slapd reads port 0 as LDAP's default (389) and cannot share a port: a free one, racy.
        let port = free_port();
        let log = std::fs::File::create(d.join("slapd.log")).expect("log");
        let child = Command::new(sbin("slapd"))
            .args(["-d", "0", "-h", &format!("ldap://127.0.0.1:{port}/"), "-f"])
            .arg(d.join("slapd.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("slapd (apt-get install slapd)");
        let mut slapd = Slapd { dir, child, port };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = slapd.child.try_wait() {
                panic!("slapd exited: {status}");
            }
            assert!(started.elapsed() < WAIT, "slapd not listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        slapd
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("slapd.log"));
            eprintln!("slapd log:\n{}", log.unwrap_or_default());
        }
    }
}

/// An LDIF entry for `mail`, holding `cert` (a PEM file of the PKI) as `userCertificate;binary`
/// (DER made with the openssl CLI, loaded by URL).
fn ldif_entry(pki: &Pki, cn: &str, mail: &str, cert: &str) -> String {
    format!(
        "dn: cn={cn},{LDAP_SUFFIX}\nobjectClass: inetOrgPerson\ncn: {cn}\nsn: {cn}\n\
         mail: {mail}\nuserCertificate;binary:< file://{}\n\n",
        pki.der_file(cert).display()
    )
}

/// slapd with the directory entries, a TCP port that accepts and never answers, and the DNS
/// zone: `_ldap._tcp.direct.south.example` lists a dead server (priority 0), the silent one
/// (5) and slapd (10); `_ldap._tcp.down.example` only the dead one.
struct LdapWorld {
    slapd: Slapd,
    dns: DnsServer,
    dead_port: u16,
    _dead: Reserved,
    silent_port: u16,
}

impl LdapWorld {
    async fn start(pki: &Pki) -> Self {
        pki.leaf("ca", "lab", &format!("email:{LAB}"));
        pki.leaf("rogue", "rogue_lab", &format!("email:{ROGUE_LAB}"));
        let entries = [
            ldif_entry(pki, "Lab", LAB, "lab"),
            ldif_entry(pki, "Rogue Lab", ROGUE_LAB, "rogue_lab"),
            ldif_entry(pki, "South HISP", "direct.south.example", "domain"),
        ]
        .concat();
        let slapd = Slapd::start(&entries);

        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("silent");
        let silent_port = silent.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        // Nobody listens there, and nobody can while the world lives.
        let dead = Reserved::closed();
        let dead_port = dead.port();

        let mut zone = HashMap::new();
        zone.insert(
            "_ldap._tcp.direct.south.example".to_string(),
            vec![
                srv_rr(10, 0, slapd.port, "ldap.south.example"),
                srv_rr(0, 0, dead_port, "dead.south.example"),
                srv_rr(5, 0, silent_port, "silent.south.example"),
            ],
        );
        zone.insert(
            "_ldap._tcp.down.example".to_string(),
            vec![srv_rr(0, 0, dead_port, "dead.south.example")],
        );
        for host in [
            "ldap.south.example",
            "dead.south.example",
            "silent.south.example",
        ] {
            zone.insert(host.to_string(), vec![a_rr([127, 0, 0, 1])]);
        }
        // The domain exists (no CERT record at it): NODATA rather than NXDOMAIN.
        zone.insert("direct.south.example".to_string(), Vec::new());
        let dns = DnsServer::start(zone).await;
        LdapWorld {
            slapd,
            dns,
            dead_port,
            _dead: dead,
            silent_port,
        }
    }

    fn dns_config(&self) -> switchboard::config::DnsDiscoveryConfig {
        switchboard::config::DnsDiscoveryConfig {
            enabled: true,
            nameservers: vec![self.dns.addr],
            timeout_secs: 2,
        }
    }

    /// `[security] fetch_allow` for the directory servers (a TOML fragment).
    fn security_toml() -> String {
        format!(
            "[security]\nfetch_allow = [{}]\n",
            LDAP_HOSTS.map(|h| format!("\"{h}\"")).join(", ")
        )
    }

    /// The connector's discovery keys: this DNS server, LDAP with 1 s timeouts.
    fn discovery_toml(&self) -> String {
        format!(
            "dns = {{ nameservers = [\"{}\"], timeout_secs = 2 }}\n\
             ldap = {{ connect_timeout_secs = 1, timeout_secs = 1 }}\n",
            self.dns.addr
        )
    }
}

/// DNS CERT finds nothing, so LDAP answers: SRV in priority order, the dead and the silent
/// server skipped, the address-bound entry's certificate, no fallback from a rejected
/// address-bound certificate to the domain's, the domain's for another address; and
/// `switchboard certs check` shows that path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_discovery() {
    use switchboard::config::LdapDiscoveryConfig;
    use switchboard::direct::anchors::{AnchorSet, Anchors};
    use switchboard::direct::discovery::ldap::LdapCerts;
    use switchboard::direct::discovery::{Discovery, DiscoveryError, Source, dns};

    let pki = direct_pki();
    let world = LdapWorld::start(&pki).await;
    let dns_config = world.dns_config();
    let resolver = dns::resolver(&dns_config).expect("resolver");
    let discovery = Discovery {
        local: None,
        dns: Some(dns::DnsCerts::with_resolver(
            resolver.clone(),
            fetch_policy(&[]),
        )),
        ldap: Some(LdapCerts::new(
            &LdapDiscoveryConfig {
                connect_timeout_secs: 1,
                timeout_secs: 1,
                ..LdapDiscoveryConfig::default()
            },
            resolver,
            fetch_policy(&LDAP_HOSTS),
        )),
        anchors: Arc::new(Anchors::new(vec![AnchorSet {
            domains: vec!["direct.south.example".into()],
            outbound: true,
            inbound: false,
            certs: vec![pki.cert("ca")],
        }])),
        fetcher: None,
    };
    let now = chrono::Utc::now();
    let der = |name: &str| pki.cert(name).to_der().expect("der");

    // 1. The address-bound certificate from slapd, after the dead and the silent server.
    let started = Instant::now();
    let found = discovery.find(LAB, now).await.expect("lookup");
    let took = started.elapsed();
    assert_eq!(found.certs.len(), 1, "{:#?}", found.steps);
    assert_eq!(found.certs[0].to_der().expect("der"), der("lab"));
    let path: Vec<_> = found
        .steps
        .iter()
        .map(|s| (s.source, s.address_bound, s.verdicts.len()))
        .collect();
    assert_eq!(
        path,
        [
            (Source::Dns, true, 0),
            (Source::Dns, false, 0),
            (Source::Ldap, true, 1)
        ]
    );
    let notes = &found.steps[2].notes;
    let at = |needle: &str| {
        notes
            .iter()
            .position(|n| n.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} in {notes:#?}"))
    };
    let dead = at(&format!("127.0.0.1:{}", world.dead_port));
    let silent = at(&format!("127.0.0.1:{}", world.silent_port));
    let live = at(&format!("127.0.0.1:{}", world.slapd.port));
    assert!(dead < silent && silent < live, "{notes:#?}");
    assert!(notes[dead].ends_with("skipped") && notes[silent].contains("no answer within"));
    assert!(
        notes[live].contains(&format!("base {LDAP_SUFFIX}")),
        "{notes:#?}"
    );
    assert!(
        took >= Duration::from_millis(900),
        "the silent server was not waited for"
    );

    // 2. Failed servers are tried last for a while: slapd answers first now.
    let found = discovery.find(LAB, now).await.expect("lookup");
    assert_eq!(found.certs.len(), 1);
    let notes = &found.steps[2].notes;
    assert_eq!(notes.len(), 1, "{notes:#?}");

    // 3. An address-bound certificate that fails (untrusted issuer): no fallback to the
    // domain's entry, which the same search returned.
    let found = discovery.find(ROGUE_LAB, now).await.expect("lookup");
    assert!(found.certs.is_empty(), "fell back: {:#?}", found.steps);
    let last = found.steps.last().expect("step");
    assert_eq!((last.source, last.address_bound), (Source::Ldap, true));
    assert!(last.verdicts[0].1.is_err());

    // 4. No entry for the address: the domain's entry.
    let found = discovery
        .find("other@direct.south.example", now)
        .await
        .expect("lookup");
    assert_eq!(found.certs.len(), 1, "{:#?}", found.steps);
    assert_eq!(found.certs[0].to_der().expect("der"), der("domain"));
    let last = found.steps.last().expect("step");
    assert_eq!((last.source, last.address_bound), (Source::Ldap, false));

    // 5. No SRV record: nothing, and no error.
    let found = discovery
        .find("x@unknown.example", now)
        .await
        .expect("lookup");
    assert!(found.certs.is_empty());
    assert!(
        found.steps.iter().any(|s| s
            .notes
            .iter()
            .any(|n| n.contains("no _ldap._tcp.unknown.example SRV record"))),
        "{:#?}",
        found.steps
    );

    // 6. Every published server dead: an error (the send is retried), not "no certificate".
    match discovery.find("x@down.example", now).await {
        Err(DiscoveryError::Ldap(reason)) => {
            assert!(reason.contains("no directory server answered"), "{reason}")
        }
        other => panic!("expected an LDAP error, got {other:?}"),
    }

    // 7. `switchboard certs check` shows the LDAP step.
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("switchboard.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{data}\"\n{security}[connectors.hisp]\nkind = \"direct\"\n\
             address = \"{US}\"\nmode = \"edge\"\n{discovery}\
             trust = [{{ files = [\"{ca}\"], direction = \"outbound\" }}]\n\
             smtp = {{ host = \"127.0.0.1\" }}\n",
            data = dir.path().display(),
            security = LdapWorld::security_toml(),
            discovery = world.discovery_toml(),
            ca = pki.path("ca.pem").display(),
        ),
    )
    .expect("config");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("--config")
            .arg(&config)
            .args(["certs", "check", LAB])
            .output()
            .expect("switchboard")
    })
    .await
    .expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fp = hex_sha256(&der("lab"));
    for line in [
        "DNS CERT address lab.direct.south.example: nothing".to_string(),
        "DNS CERT domain direct.south.example: nothing".to_string(),
        format!(
            "LDAP address {LAB}: ldap://127.0.0.1:{} (dead.south.example, priority 0",
            world.dead_port
        ),
        format!(
            "LDAP address {LAB}: ldap://127.0.0.1:{} (ldap.south.example, priority 10",
            world.slapd.port
        ),
        format!("LDAP address {LAB}: {fp} OK"),
        format!("usable: {LAB}"),
    ] {
        assert!(text.contains(&line), "no {line:?} in:\n{text}");
    }
}

fn hex_sha256(der: &[u8]) -> String {
    openssl::sha::sha256(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A Direct send to an address whose certificate only the directory has: sealed to it (the
/// openssl CLI decrypts with its key), over the same discovery the daemon configures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_discovered_send_encrypts_to_the_directory_cert() {
    let db = TestDb::new(Backend::Sqlite).await;
    let pki = direct_pki();
    let world = LdapWorld::start(&pki).await;
    let inbox = db.dir.path().join("smtp");
    let sink = start_sink(&inbox, &[]);
    let smtp_port = sink.port;
    let mut config = direct_config_discovery(&db, &pki, smtp_port, &world.discovery_toml(), "");
    config.security.fetch_allow = LDAP_HOSTS.map(String::from).to_vec();
    let mut daemon = TestDaemon::start(config).await;

    let message = send(&daemon, LAB).await;
    wait_delivery(&daemon, &message, "sent").await;
    let got = received(&inbox);
    assert_eq!(got.len(), 1);
    let (envelope, raw) = &got[0];
    assert_eq!(envelope["rcpt_tos"], json!([LAB]));
    let inner = openssl_open_text(&pki, "lab", raw);
    assert!(inner.contains("Subject: Referral"), "{inner}");

    // The rogue address-bound entry fails the delivery permanently.
    let rogue = send(&daemon, ROGUE_LAB).await;
    let d = wait_delivery(&daemon, &rogue, "failed").await;
    assert!(
        d["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no trusted certificate for recipient"),
        "{d:#}"
    );
    assert_eq!(received(&inbox).len(), 1);
    daemon.stop().await;
}

// ---------------------------------------------------------------- SSRF: what discovery may fetch

/// A loopback TCP listener that counts the connections it accepts (and closes them).
async fn counting_listener() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(s);
        }
    });
    (addr, hits)
}

const SELF_SIGNED: &str = "selfsigned@direct.south.example";
const ROGUE_CRL: &str = "roguecrl@direct.south.example";
const BY_URI: &str = "uri@direct.south.example";
const EAST: &str = "someone@direct.east.example";
const WEST: &str = "someone@direct.west.example";
const CRL_OK: &str = "crlok@direct.south.example";

/// Discovery contacts nothing for a certificate it will reject, and nothing the fetch policy
/// refuses; the delivery history says only "no trusted certificate" (or "unavailable, will
/// retry"), never which servers were tried.
///
/// * `lure`: an HTTP server listed in `fetch_allow`, named by the CRL and AIA URLs of a
///   self-signed certificate and by the CRL URL of a rogue-CA certificate (both in the local
///   store): it must see no request — and it does serve the CRL of a trusted certificate.
/// * `blocked`: an HTTP server not listed, named by a DNS CERT (IPKIX) record, serving a
///   certificate that would be trusted: never contacted.
/// * `east`: a TCP port an LDAP SRV record of `direct.east.example` names (on loopback, a
///   high port, not listed): never contacted; the delivery fails for want of a certificate.
/// * `direct.west.example`: its LDAP server is allowed but down: retried, then failed with
///   "unavailable" and no server named.
async fn discovery_fetches_nothing_it_may_not(backend: Backend) {
    use std::sync::atomic::Ordering::SeqCst;
    let db = TestDb::new(backend).await;
    let pki = direct_pki();

    let lure_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("lure");
    let lure_addr = lure_listener.local_addr().expect("addr");
    let lure_files = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let lure_hits = http_files(lure_listener, lure_files.clone());
    let lure = format!("http://{lure_addr}");
    pki.self_signed(
        "selfsigned",
        &format!(
            "subjectAltName=email:{SELF_SIGNED}\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             basicConstraints=CA:FALSE\nauthorityInfoAccess=caIssuers;URI:{lure}/issuer.cer\n\
             crlDistributionPoints=URI:{lure}/self.crl\n"
        ),
    );
    pki.issue(
        "rogue",
        "roguecrl",
        &format!(
            "subjectAltName=email:{ROGUE_CRL}\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             basicConstraints=CA:FALSE\ncrlDistributionPoints=URI:{lure}/rogue.crl\n"
        ),
    );
    pki.issue(
        "ca",
        "crlok",
        &format!(
            "subjectAltName=email:{CRL_OK}\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             basicConstraints=CA:FALSE\ncrlDistributionPoints=URI:{lure}/ca.crl\n"
        ),
    );
    let crl = pki.crl("ca", &[]);
    lure_files
        .lock()
        .expect("files")
        .insert("/ca.crl".into(), std::fs::read(&crl).expect("crl"));

    pki.leaf("ca", "uri", &format!("email:{BY_URI}"));
    let blocked_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("blocked");
    let blocked_addr = blocked_listener.local_addr().expect("addr");
    let blocked_files = Arc::new(std::sync::Mutex::new(HashMap::new()));
    blocked_files
        .lock()
        .expect("files")
        .insert("/uri.cer".into(), pki.cert("uri").to_der().expect("der"));
    let blocked_hits = http_files(blocked_listener, blocked_files);

    let (east_addr, east_hits) = counting_listener().await;
    // Its directory is down: nobody listens on its port (held for the whole test).
    let west = Reserved::closed();
    let west_port = west.port();
    let mut zone = HashMap::new();
    zone.insert(
        "uri.direct.south.example".to_string(),
        vec![cert_rr(
            4,
            format!("http://{blocked_addr}/uri.cer").into_bytes(),
        )],
    );
    zone.insert("direct.south.example".to_string(), Vec::new());
    zone.insert(
        "_ldap._tcp.direct.east.example".to_string(),
        vec![srv_rr(0, 0, east_addr.port(), "ldap.direct.east.example")],
    );
    zone.insert(
        "ldap.direct.east.example".to_string(),
        vec![a_rr([127, 0, 0, 1])],
    );
    zone.insert(
        "_ldap._tcp.direct.west.example".to_string(),
        vec![srv_rr(0, 0, west_port, "ldap.direct.west.example")],
    );
    zone.insert(
        "ldap.direct.west.example".to_string(),
        vec![a_rr([127, 0, 0, 1])],
    );
    let dns = DnsServer::start(zone).await;

    let inbox = db.dir.path().join("smtp");
    let sink = start_sink(&inbox, &[]);
    let smtp_port = sink.port;
    let discovery = format!(
        "dns = {{ nameservers = [\"{}\"], timeout_secs = 2 }}\n\
         ldap = {{ connect_timeout_secs = 1, timeout_secs = 1 }}\n",
        dns.addr
    );
    let mut config = direct_config_discovery(&db, &pki, smtp_port, &discovery, "");
    config.security.fetch_allow = vec![lure_addr.to_string(), "ldap.direct.west.example".into()];
    config
        .channels
        .get_mut("direct")
        .expect("direct channel")
        .max_attempts = 2;
    let store = switchboard::direct::discovery::LocalStore::new(db.dir.path().join("certs"));
    for name in ["selfsigned", "roguecrl", "crlok"] {
        store
            .import(&std::fs::read(pki.path(&format!("{name}.pem"))).expect("pem"))
            .expect("import");
    }
    let mut daemon = TestDaemon::start(config).await;

    let secrets = [
        "127.0.0.1".to_string(),
        format!(":{}", lure_addr.port()),
        format!(":{}", blocked_addr.port()),
        format!(":{}", east_addr.port()),
        format!(":{west_port}"),
        "ldap.direct".to_string(),
    ];
    for to in [SELF_SIGNED, ROGUE_CRL, BY_URI, EAST] {
        let message = send(&daemon, to).await;
        let delivery = wait_delivery(&daemon, &message, "failed").await;
        assert_eq!(
            delivery["reason"],
            json!(switchboard::channels::direct::NO_CERTIFICATE),
            "{to}: {delivery:#}"
        );
        let view = daemon
            .get_json(&format!("/v1/messages/{message}"))
            .await
            .to_string();
        for secret in &secrets {
            assert!(!view.contains(secret.as_str()), "{to}: {secret} in {view}");
        }
    }
    // The deliveries failed: every fetch they could have caused has happened.
    assert_eq!(
        lure_hits.load(SeqCst),
        0,
        "untrusted certificates caused a fetch"
    );
    assert_eq!(
        blocked_hits.load(SeqCst),
        0,
        "a refused CERT URL was fetched"
    );
    assert_eq!(
        east_hits.load(SeqCst),
        0,
        "a refused LDAP server was contacted"
    );

    // An allowed directory that is down: retried, then failed as "unavailable".
    let message = send(&daemon, WEST).await;
    let delivery = wait_delivery(&daemon, &message, "failed").await;
    let reason = delivery["reason"].as_str().unwrap_or_default();
    assert!(
        reason.ends_with(switchboard::channels::direct::DISCOVERY_UNAVAILABLE),
        "{delivery:#}"
    );
    let view = daemon
        .get_json(&format!("/v1/messages/{message}"))
        .await
        .to_string();
    for secret in &secrets {
        assert!(!view.contains(secret.as_str()), "{secret} in {view}");
    }

    // A trusted certificate whose CRL is on the allowed server: fetched, checked, sent.
    let message = send(&daemon, CRL_OK).await;
    wait_delivery(&daemon, &message, "sent").await;
    assert_eq!(lure_hits.load(SeqCst), 1, "the CRL was not fetched");
    assert_eq!(received(&inbox).len(), 1);
    daemon.stop().await;
}

both_databases!(
    discovery_fetches_nothing_it_may_not,
    super::discovery_fetches_nothing_it_may_not
);

/// A body without a Content-Length is cut off at the cap while it streams in; a CRL has its
/// own, larger cap.
#[tokio::test]
async fn fetched_bodies_are_capped_while_streaming() {
    use switchboard::fetch::{FetchError, Purpose};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let addr = listener.local_addr().expect("addr");
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                    .await;
                // Up to 64 MiB, until the client hangs up.
                let chunk = vec![b'x'; 64 * 1024];
                for _ in 0..1024 {
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                    counter.fetch_add(chunk.len(), std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    let policy = fetch_policy(&[&addr.to_string()]);
    let url = format!("http://{addr}/endless");
    match policy.get(&url, Purpose::Certificate).await {
        Err(FetchError::TooLarge { limit, .. }) => assert_eq!(limit, 1024 * 1024),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    match policy.get(&url, Purpose::Crl).await {
        Err(FetchError::TooLarge { limit, .. }) => assert_eq!(limit, 10 * 1024 * 1024),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Well short of the 128 MiB the server would have sent for the two.
    assert!(
        sent.load(std::sync::atomic::Ordering::SeqCst) < 32 * 1024 * 1024,
        "the client kept reading"
    );
    // Not listed: refused before any connection.
    let strict = fetch_policy(&[]);
    match strict.get(&url, Purpose::Certificate).await {
        Err(e) => assert!(e.is_refusal(), "{e}"),
        Ok(_) => panic!("a loopback URL was fetched"),
    }
}

/// A redirect is checked like the first URL: an allowed server cannot bounce the fetch to one
/// the policy refuses. A host name is resolved, checked, and connected to at the checked
/// address.
#[tokio::test]
async fn redirects_and_names_pass_the_policy() {
    use switchboard::fetch::Purpose;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (blocked, blocked_hits) = counting_listener().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]);
                let reply = if request.starts_with("GET /away ") {
                    format!(
                        "HTTP/1.1 302 Found\r\nLocation: http://{blocked}/x\r\n\
                         Content-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                } else if request.starts_with("GET /here ") {
                    "HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: 0\r\n\
                     Connection: close\r\n\r\n"
                        .to_string()
                } else {
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                        .to_string()
                };
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    let policy = fetch_policy(&[&addr.to_string(), "localhost"]);
    let away = policy
        .get(&format!("http://{addr}/away"), Purpose::Certificate)
        .await;
    match away {
        Err(e) => assert!(e.is_refusal(), "{e}"),
        Ok(_) => panic!("followed a redirect to a refused destination"),
    }
    assert_eq!(
        blocked_hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the redirect target was contacted"
    );
    let here = policy
        .get(&format!("http://{addr}/here"), Purpose::Certificate)
        .await
        .expect("a redirect on the same server");
    assert_eq!(here, b"ok");
    // By name: resolved, checked (allowed by name), connected to the checked address.
    let named = policy
        .get(
            &format!("http://localhost:{}/ok", addr.port()),
            Purpose::Certificate,
        )
        .await
        .expect("by name");
    assert_eq!(named, b"ok");
    let strict = fetch_policy(&[]);
    match strict
        .get(
            &format!("http://localhost:{}/ok", addr.port()),
            Purpose::Certificate,
        )
        .await
    {
        Err(e) => assert!(e.is_refusal(), "{e}"),
        Ok(_) => panic!("a name resolving to loopback was fetched"),
    }
}
