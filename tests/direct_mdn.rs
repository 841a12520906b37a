//! The MDNs we owe senders of inbound Direct messages (`direct::mdn`), on SQLite and
//! PostgreSQL, against real peers: aiosmtpd (`tests/peers/smtp_sink.py`) is the HISP's SMTP
//! (recording exact envelopes and bytes, and answering 4xx/5xx on cue), the `openssl cms` CLI
//! opens each MDN with the original sender's key and verifies it against the test CA (made with
//! `openssl req/x509`). Inbound items are recorded as intake records them (`Intake::record`).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::mail::{received, start_sink};
use common::pki::{Pki, openssl};
use common::wait::wait_until;
use common::{Backend, TestDaemon, TestDb};
use serde_json::{Value, json};
use switchboard::config::{Config, ConnectorConfig};
use switchboard::daemon::Core;
use switchboard::direct::mdn::{Disposition, MdnOutbox, MdnView, NewMdn};
use switchboard::intake::{Intake, Parsed, Received, Source};
use switchboard::store::{NewMdnRow, StoreError};
use switchboard::supervise::{Supervisor, TaskMetrics};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);
const US: &str = "clinic@direct.north.example";
const DOC: &str = "doc@direct.south.example";
const DOC_MESSAGE_ID: &str = "<referral-1@direct.south.example>";

// ---------------------------------------------------------------- PKI and configuration

/// `ca` issues `us` (our connector), `doc` (the sender: in our local certificate store),
/// `doc2` (another certificate of the sender's, as if it had signed the message) and
/// `doc_sign` (a signing-only certificate of the sender's: not for encryption).
fn pki() -> Pki {
    let pki = Pki::new();
    pki.ca("ca");
    pki.leaf("ca", "us", &format!("email:{US}"))
        .leaf("ca", "doc", &format!("email:{DOC}"))
        .leaf("ca", "doc2", &format!("email:{DOC}"))
        .issue(
            "ca",
            "doc_sign",
            &format!(
                "subjectAltName=email:{DOC}\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=emailProtection\nbasicConstraints=CA:FALSE\n"
            ),
        );
    pki
}

/// A configuration with the Direct connector `hisp` (`mode`, SMTP on `smtp_port`, discovery
/// from the local store only, which holds `doc`).
fn config(db: &TestDb, pki: &Pki, smtp_port: u16, mode: &str) -> Config {
    let mut config = db.config();
    let store = db.dir.path().join("certs");
    switchboard::direct::discovery::LocalStore::new(&store)
        .import(&std::fs::read(pki.path("doc.pem")).expect("doc"))
        .expect("import");
    let toml = format!(
        "address = \"{US}\"\norganization = \"north\"\nmode = \"{mode}\"\ncertificate = \"{cert}\"\n\
         private_key = {{ file = \"{key}\" }}\ncert_store = \"{store}\"\n\
         dns = {{ enabled = false }}\nldap = {{ enabled = false }}\n\
         trust = [{{ files = [\"{ca}\"] }}]\n\
         smtp = {{ host = \"127.0.0.1\", port = {smtp_port}, tls = \"none\", timeout_secs = 3 }}\n",
        cert = pki.path("us.pem").display(),
        key = pki.path("us.key").display(),
        store = store.display(),
        ca = pki.path("ca.pem").display(),
    );
    config.connectors.insert(
        "hisp".into(),
        ConnectorConfig::Direct(toml::from_str(&toml).expect("direct connector")),
    );
    config
}

// ---------------------------------------------------------------- inbound items

/// Inbound Direct items as the test records them (what they hold does not matter here).
struct DirectItems;

impl Source for DirectItems {
    fn channel(&self) -> &'static str {
        "direct"
    }

    fn parse(&self, _raw: &[u8]) -> Result<Parsed, String> {
        Err("not read in these tests".into())
    }
}

/// Records an inbound Direct item from `DOC` for `organization_id`, as intake step 1 does.
async fn record_item(core: &Core, organization_id: &str, provider_ref: &str) -> String {
    let intake = Intake {
        store: core.store.clone(),
        keyring: core.keyring.clone(),
        config: core.config.clone(),
    };
    let (id, fresh) = intake
        .record(
            &DirectItems,
            &Received {
                organization_id,
                connector: Some("hisp".into()),
                provider_ref: Some(provider_ref.into()),
                sender: DOC.into(),
                recipient: Some(US.into()),
                raw: b"sealed message as received",
            },
        )
        .await
        .expect("record");
    assert!(fresh);
    id
}

fn mdn(
    organization_id: &str,
    item_id: &str,
    disposition: Disposition,
    certs: Vec<openssl::x509::X509>,
) -> NewMdn {
    NewMdn {
        organization_id: organization_id.into(),
        inbound_item_id: item_id.into(),
        connector: "hisp".into(),
        disposition,
        recipient: DOC.into(),
        original_message_id: DOC_MESSAGE_ID.into(),
        final_destination: disposition == Disposition::Dispatched,
        recipient_certs: certs,
    }
}

/// Starts the MDN senders of `config` over `outbox`; the token stops them.
fn senders(
    config: &Config,
    outbox: &MdnOutbox,
) -> (CancellationToken, Vec<tokio::task::JoinHandle<()>>) {
    let stop = CancellationToken::new();
    let supervisor = Supervisor::new(stop.clone(), TaskMetrics::default());
    let handles = switchboard::direct::mdn::spawn(config, outbox, &supervisor);
    (stop, handles)
}

async fn stop_senders(stop: CancellationToken, handles: Vec<tokio::task::JoinHandle<()>>) {
    stop.cancel();
    for h in handles {
        h.await.expect("sender stopped");
    }
}

/// Waits until the item's MDN of `disposition` is `status`.
async fn wait_mdn(
    outbox: &MdnOutbox,
    org: &str,
    item: &str,
    disposition: &str,
    status: &str,
) -> MdnView {
    wait_until(
        format!("the {disposition} MDN {status}"),
        WAIT,
        async || {
            outbox
                .of_item(org, item)
                .await
                .expect("of_item")
                .into_iter()
                .find(|m| m.disposition == disposition && m.status == status)
        },
    )
    .await
}

// ---------------------------------------------------------------- the openssl CLI

/// `openssl cms -decrypt` with the key of `recipient`, then `openssl cms -verify` against the
/// CA (S/MIME signing purpose): the MDN as another S/MIME stack reads it.
fn openssl_open(pki: &Pki, recipient: &str, raw: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("in.eml"), raw).expect("write");
    let path = |f: &str| pki.path(f).display().to_string();
    openssl(
        dir.path(),
        &[
            "cms",
            "-decrypt",
            "-in",
            "in.eml",
            "-recip",
            &path(&format!("{recipient}.pem")),
            "-inkey",
            &path(&format!("{recipient}.key")),
            "-out",
            "signed.eml",
        ],
    );
    openssl(
        dir.path(),
        &[
            "cms",
            "-verify",
            "-in",
            "signed.eml",
            "-CAfile",
            &path("ca.pem"),
            "-purpose",
            "smimesign",
            "-signer",
            "signer.pem",
            "-out",
            "inner.eml",
        ],
    );
    let signer = openssl::x509::X509::from_pem(
        &std::fs::read(dir.path().join("signer.pem")).expect("signer"),
    )
    .expect("signer pem");
    assert_eq!(
        signer.to_der().expect("der"),
        pki.cert("us").to_der().expect("der"),
        "signed with the connector's certificate"
    );
    let signed = std::fs::read_to_string(dir.path().join("inner.eml")).expect("inner");
    // The signed entity wraps the MDN (message/rfc822): the MDN is its body.
    let (headers, body) = signed.split_once("\r\n\r\n").expect("a MIME entity");
    assert!(
        headers.to_ascii_lowercase().contains("message/rfc822"),
        "{headers}"
    );
    body.to_string()
}

/// Whether `key` would open `raw` (without panicking when it cannot).
fn opens_with(pki: &Pki, recipient: &str, raw: &[u8]) -> bool {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("in.eml"), raw).expect("write");
    std::process::Command::new("openssl")
        .current_dir(dir.path())
        .args([
            "cms", "-decrypt", "-in", "in.eml", "-out", "out.eml", "-recip",
        ])
        .arg(pki.path(&format!("{recipient}.pem")))
        .arg("-inkey")
        .arg(pki.path(&format!("{recipient}.key")))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The MDN the sink received with `disposition`, opened by `recipient`'s key.
fn find_mdn(
    pki: &Pki,
    inbox: &Path,
    recipient: &str,
    disposition: &str,
) -> (Value, String, Vec<u8>) {
    let wanted = format!("Disposition: automatic-action/MDN-sent-automatically;{disposition}\r\n");
    let mut found: Vec<(Value, String, Vec<u8>)> = received(inbox)
        .into_iter()
        .filter(|(_, raw)| opens_with(pki, recipient, raw))
        .map(|(envelope, raw)| (envelope, openssl_open(pki, recipient, &raw), raw))
        .filter(|(_, inner, _)| inner.contains(&wanted))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {disposition} MDN for {recipient}'s key"
    );
    found.remove(0)
}

// ---------------------------------------------------------------- scenarios

/// Processed (encrypted to the signer's certificate given) and dispatched with the
/// final-delivery field (certificate by discovery) reach the sender signed and encrypted,
/// once each, and the item's view shows both `sent`; a signing-only certificate falls back to
/// discovery; a second enqueue of the same item and disposition stores and sends nothing.
async fn mdns_reach_the_sender(backend: Backend) {
    let db = TestDb::new(backend).await;
    let pki = pki();
    let inbox = db.dir.path().join("smtp");
    let sink = start_sink(&inbox, &[]);
    let mut daemon = TestDaemon::start(config(&db, &pki, sink.port, "sign")).await;
    let org = daemon.organization_id.clone();
    let outbox = &daemon.core.mdns;
    let item = record_item(&daemon.core, &org, "m1").await;
    let other = record_item(&daemon.core, &org, "m2").await;

    // Before any MDN is owed, a Direct item's view says so.
    let view = daemon.get_json(&format!("/v1/inbound/{item}")).await;
    assert_eq!(
        view["mdn"],
        json!({"processed": null, "dispatched": null, "failed": null})
    );

    let processed = mdn(&org, &item, Disposition::Processed, vec![pki.cert("doc2")]);
    assert!(outbox.enqueue(&processed).await.expect("enqueue"));
    assert!(
        !outbox.enqueue(&processed).await.expect("enqueue again"),
        "a second processed MDN for the same item"
    );
    let dispatched = mdn(&org, &item, Disposition::Dispatched, vec![]);
    assert!(outbox.enqueue(&dispatched).await.expect("enqueue"));
    let signing_only = mdn(
        &org,
        &other,
        Disposition::Processed,
        vec![pki.cert("doc_sign")],
    );
    assert!(outbox.enqueue(&signing_only).await.expect("enqueue"));

    // The daemon's sender (its own process state: woken by its poll) sends all three.
    let first = wait_mdn(outbox, &org, &item, "processed", "sent").await;
    wait_mdn(outbox, &org, &item, "dispatched", "sent").await;
    wait_mdn(outbox, &org, &other, "processed", "sent").await;
    assert_eq!(first.attempts, 1);
    assert!(first.sent_at.is_some());
    assert_eq!(received(&inbox).len(), 3, "three MDNs, no duplicate");
    // Sent already: a replay (a release, a reprocess) is still not a second one.
    assert!(
        !outbox
            .enqueue(&processed)
            .await
            .expect("enqueue after sent")
    );

    // Processed: encrypted to the certificate the message was signed with (doc2, which
    // discovery does not know), signed by us, no MDN requested of the sender.
    let (envelope, inner, raw) = find_mdn(&pki, &inbox, "doc2", "processed");
    assert_eq!(envelope["mail_from"], US);
    assert_eq!(envelope["rcpt_tos"], json!([DOC]));
    let outer = String::from_utf8_lossy(&raw);
    assert!(
        !outer
            .to_ascii_lowercase()
            .contains("disposition-notification-to"),
        "{outer}"
    );
    assert!(
        !inner
            .to_ascii_lowercase()
            .contains("disposition-notification-to"),
        "{inner}"
    );
    assert!(
        inner.contains(&format!("Original-Message-ID: {DOC_MESSAGE_ID}\r\n")),
        "{inner}"
    );
    assert!(
        inner.contains(&format!("Final-Recipient: rfc822;{US}\r\n")),
        "{inner}"
    );
    assert!(
        inner.contains(&format!("Original-Recipient: rfc822;{US}\r\n")),
        "{inner}"
    );
    assert!(inner.contains(&format!("To: <{DOC}>\r\n")), "{inner}");
    assert!(
        !inner.contains("X-DIRECT-FINAL-DESTINATION-DELIVERY"),
        "{inner}"
    );
    let message_id = first.message_id.expect("the MDN's Message-ID");
    assert!(
        inner.contains(&format!("Message-ID: <{message_id}>\r\n")),
        "{inner}"
    );
    assert!(
        message_id.ends_with("@direct.north.example"),
        "{message_id}"
    );
    let report = switchboard::direct::mdn::parse_notification(inner.as_bytes()).expect("an MDN");
    assert_eq!(report.outcome, switchboard::direct::mdn::Outcome::Processed);

    // Dispatched: to the certificate discovery finds (doc), with the final-delivery field.
    let (_, inner, _) = find_mdn(&pki, &inbox, "doc", "dispatched");
    assert!(
        inner.contains(&format!("Original-Message-ID: {DOC_MESSAGE_ID}\r\n")),
        "{inner}"
    );
    assert!(
        inner.contains(&format!("Final-Recipient: rfc822;{US}\r\n")),
        "{inner}"
    );
    assert!(
        inner.contains("X-DIRECT-FINAL-DESTINATION-DELIVERY"),
        "{inner}"
    );
    let report = switchboard::direct::mdn::parse_notification(inner.as_bytes()).expect("an MDN");
    assert!(report.final_destination_delivery);

    // The signing-only certificate is not encrypted to: discovery's (doc) is.
    find_mdn(&pki, &inbox, "doc", "processed");

    // The item's view.
    let view = daemon.get_json(&format!("/v1/inbound/{item}")).await;
    let mdn_view = &view["mdn"];
    assert_eq!(mdn_view["processed"]["status"], "sent", "{view:#}");
    assert_eq!(mdn_view["processed"]["attempts"], 1);
    assert_eq!(mdn_view["processed"]["reason"], Value::Null);
    assert!(mdn_view["processed"]["sent_at"].is_i64());
    assert_eq!(mdn_view["dispatched"]["status"], "sent");
    assert_eq!(mdn_view["failed"], Value::Null);

    // Counted at /metrics (this process's senders: every test of this binary adds to it).
    let metrics = daemon
        .http
        .get(daemon.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let sent: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchboard_direct_mdns_total{outcome=\"sent\"} "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the MDN counter");
    assert!(sent >= 3, "{metrics}");
    daemon.stop().await;
}

both_databases!(mdns_reach_the_sender, super::mdns_reach_the_sender);

/// A 4xx answer is retried after the backoff and then sent (attempt 2); the failed MDN goes
/// out with its `Failure:` field. The sender is woken by the enqueue (no poll wait).
async fn a_tempfail_is_retried(backend: Backend) {
    let db = TestDb::new(backend).await;
    let pki = pki();
    let inbox = db.dir.path().join("smtp");
    let sink = start_sink(&inbox, &["--tempfail-rcpt", "1"]);
    let config = config(&db, &pki, sink.port, "sign");
    let core = Core::open(config.clone()).await.expect("core");
    let org = core
        .store
        .organizations()
        .ensure("north", "North")
        .await
        .expect("org")
        .id;
    let (stop, handles) = senders(&config, &core.mdns);
    let item = record_item(&core, &org, "m1").await;
    assert!(
        core.mdns
            .enqueue(&mdn(
                &org,
                &item,
                Disposition::Failed,
                vec![pki.cert("doc")]
            ))
            .await
            .expect("enqueue")
    );
    let queued = wait_until("the first attempt failed", WAIT, async || {
        core.mdns
            .of_item(&org, &item)
            .await
            .expect("of_item")
            .into_iter()
            .find(|m| m.attempts == 1)
    })
    .await;
    assert_eq!(queued.status, "queued");
    let reason = queued.reason.expect("reason");
    assert!(reason.starts_with("451"), "{reason}");
    let sent = wait_mdn(&core.mdns, &org, &item, "failed", "sent").await;
    assert_eq!(sent.attempts, 2);
    assert_eq!(sent.reason, None);
    let got = received(&inbox);
    assert_eq!(got.len(), 1);
    let inner = openssl_open(&pki, "doc", &got[0].1);
    assert!(
        inner.contains("Disposition: automatic-action/MDN-sent-automatically;failed\r\n"),
        "{inner}"
    );
    assert!(
        inner.contains(&format!(
            "Failure: {}\r\n",
            switchboard::direct::mdn::FAILURE_TEXT
        )),
        "{inner}"
    );
    stop_senders(stop, handles).await;
}

both_databases!(a_tempfail_is_retried, super::a_tempfail_is_retried);

/// A 5xx answer fails the MDN at once with the HISP's reason; a sender with no usable
/// certificate fails with the channel's sentence. Neither is sent, nor retried.
async fn a_refusal_fails(backend: Backend) {
    let db = TestDb::new(backend).await;
    let pki = pki();
    let inbox = db.dir.path().join("smtp");
    let sink = start_sink(&inbox, &["--reject"]);
    let config = config(&db, &pki, sink.port, "sign");
    let core = Core::open(config.clone()).await.expect("core");
    let org = core
        .store
        .organizations()
        .ensure("north", "North")
        .await
        .expect("org")
        .id;
    let (stop, handles) = senders(&config, &core.mdns);
    let item = record_item(&core, &org, "m1").await;
    let refused = mdn(&org, &item, Disposition::Processed, vec![pki.cert("doc")]);
    assert!(core.mdns.enqueue(&refused).await.expect("enqueue"));
    let mut unknown = mdn(&org, &item, Disposition::Dispatched, vec![]);
    unknown.recipient = "nobody@direct.elsewhere.example".into();
    assert!(core.mdns.enqueue(&unknown).await.expect("enqueue"));

    let failed = wait_mdn(&core.mdns, &org, &item, "processed", "failed").await;
    assert_eq!(failed.attempts, 1);
    assert_eq!(
        failed.reason.as_deref(),
        Some("550 5.7.1 Delivery not authorized, message refused")
    );
    let failed = wait_mdn(&core.mdns, &org, &item, "dispatched", "failed").await;
    assert_eq!(failed.attempts, 1);
    assert_eq!(
        failed.reason.as_deref(),
        Some(switchboard::channels::direct::NO_CERTIFICATE)
    );
    assert!(received(&inbox).is_empty());
    stop_senders(stop, handles).await;
}

both_databases!(a_refusal_fails, super::a_refusal_fails);

/// An `edge`-mode connector (the HISP answers) and a connector that is not Direct queue
/// nothing; an item of another organization is not found; a claimed MDN is not claimed again
/// until its lease ends, however many senders try at once.
async fn only_ours_are_queued_and_claimed_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let pki = pki();
    let config = config(&db, &pki, 9, "edge");
    let core = Core::open(config.clone()).await.expect("core");
    let org = core
        .store
        .organizations()
        .ensure("north", "North")
        .await
        .expect("org")
        .id;
    let south = core
        .store
        .organizations()
        .ensure("south", "South")
        .await
        .expect("org")
        .id;
    let item = record_item(&core, &org, "m1").await;

    // edge mode, and a name that is no Direct connector: nothing stored.
    assert!(
        !core
            .mdns
            .enqueue(&mdn(&org, &item, Disposition::Processed, vec![]))
            .await
            .expect("edge")
    );
    let mut elsewhere = mdn(&org, &item, Disposition::Processed, vec![]);
    elsewhere.connector = "outbox".into();
    assert!(!core.mdns.enqueue(&elsewhere).await.expect("not direct"));
    assert!(
        core.mdns
            .of_item(&org, &item)
            .await
            .expect("of_item")
            .is_empty()
    );
    // edge mode starts no sender.
    let (stop, handles) = senders(&config, &core.mdns);
    assert!(handles.is_empty());
    stop.cancel();

    // sign mode: the item binds the organization.
    let outbox = MdnOutbox::new(
        core.store.clone(),
        Arc::new(self::config(&db, &pki, 9, "sign")),
    );
    let theirs = mdn(&south, &item, Disposition::Processed, vec![]);
    assert!(matches!(
        outbox.enqueue(&theirs).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        outbox
            .of_item(&south, &item)
            .await
            .expect("of_item")
            .is_empty()
    );

    // A row claimed by one of eight concurrent senders is held by its lease.
    assert!(
        core.store
            .direct()
            .insert_mdn(&NewMdnRow {
                id: "mdn_claim",
                organization_id: &org,
                inbound_item_id: &item,
                connector: "hisp",
                disposition: "processed",
                recipient: DOC,
                original_message_id: DOC_MESSAGE_ID,
                final_destination: false,
                recipient_certs: None,
                message_id: "x@direct.north.example",
            })
            .await
            .expect("insert")
    );
    let now = switchboard::store::now_ms();
    let claims = futures::future::join_all((0..8).map(|_| {
        let store = core.store.clone();
        async move {
            store
                .direct()
                .claim_mdn("hisp", now, now + 60_000)
                .await
                .expect("claim")
        }
    }))
    .await;
    let won: Vec<_> = claims.into_iter().flatten().collect();
    assert_eq!(won.len(), 1, "one claim wins");
    assert_eq!(won[0].id, "mdn_claim");
    assert_eq!(won[0].status, "queued");
    assert!(
        core.store
            .direct()
            .claim_mdn("hisp", now + 59_000, now + 120_000)
            .await
            .expect("claim")
            .is_none(),
        "held until the lease ends"
    );
    let again = core
        .store
        .direct()
        .claim_mdn("hisp", now + 60_000, now + 120_000)
        .await
        .expect("claim")
        .expect("taken again once the lease ended");
    assert_eq!(again.id, "mdn_claim");
}

both_databases!(
    only_ours_are_queued_and_claimed_once,
    super::only_ours_are_queued_and_claimed_once
);

/// A message the openssl CLI signed (`doc`) and encrypted to us, taken by the inbound pipeline
/// (`Core::direct_inbound`, sharing `core.mdns`): its processed and, as asked, dispatched MDNs
/// reach the sender, woken by the enqueue, encrypted to the sender's certificate (the verified
/// signer's once security processing hands it over, else discovery's: `doc` either way; the
/// signer's own is proven by `mdns_reach_the_sender`).
async fn a_received_message_is_answered(backend: Backend) {
    let db = TestDb::new(backend).await;
    let pki = pki();
    let inbox = db.dir.path().join("smtp");
    let sink = start_sink(&inbox, &[]);
    let config = config(&db, &pki, sink.port, "sign");
    let core = Core::open(config.clone()).await.expect("core");
    let org = core
        .store
        .organizations()
        .ensure("north", "North")
        .await
        .expect("org")
        .id;
    let tenancy =
        Arc::new(switchboard::tenancy::Tenancy::from_config(&core.config).expect("tenancy"));
    let inbound = core.direct_inbound(tenancy).expect("inbound");
    let (stop, handles) = senders(&config, &core.mdns);

    let raw = openssl_send(&pki, "doc", "referral-9@direct.south.example");
    let item = match inbound.take("hisp", &raw).await.expect("take") {
        switchboard::direct::inbound::Taken::Item(receipt) => receipt.item_id,
        switchboard::direct::inbound::Taken::Notification { .. } => panic!("a notification"),
    };
    wait_mdn(&core.mdns, &org, &item, "processed", "sent").await;
    wait_mdn(&core.mdns, &org, &item, "dispatched", "sent").await;
    assert_eq!(received(&inbox).len(), 2);
    for disposition in ["processed", "dispatched"] {
        let (envelope, inner, _) = find_mdn(&pki, &inbox, "doc", disposition);
        assert_eq!(envelope["rcpt_tos"], json!([DOC]));
        assert!(
            inner.contains("Original-Message-ID: <referral-9@direct.south.example>\r\n"),
            "{inner}"
        );
        assert!(
            inner.contains(&format!("Final-Recipient: rfc822;{US}\r\n")),
            "{inner}"
        );
        assert_eq!(
            inner.contains("X-DIRECT-FINAL-DESTINATION-DELIVERY"),
            disposition == "dispatched",
            "{inner}"
        );
    }
    stop_senders(stop, handles).await;
}

both_databases!(
    a_received_message_is_answered,
    super::a_received_message_is_answered
);

/// A referral from `DOC` asking for final-delivery notice, wrapped, signed by `signer` and
/// encrypted to `us` by the openssl CLI, with `message_id` (as a HISP delivers it).
fn openssl_send(pki: &Pki, signer: &str, message_id: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tmp");
    let entity = format!(
        "Content-Type: message/rfc822\r\n\r\n\
         From: <{DOC}>\r\nTo: <{US}>\r\nSubject: Referral\r\nMessage-ID: <{message_id}>\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
         Disposition-Notification-Options: X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease see.\r\n"
    );
    std::fs::write(dir.path().join("entity.txt"), entity).expect("write");
    let path = |name: &str| pki.path(name).display().to_string();
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
            &path(&format!("{signer}.pem")),
            "-inkey",
            &path(&format!("{signer}.key")),
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
            "Referral",
            "-out",
            "sealed.eml",
            "-recip",
            &path("us.pem"),
            "-keyopt",
            "rsa_padding_mode:oaep",
            "-keyopt",
            "rsa_oaep_md:sha256",
        ],
    );
    let mut out = format!("Message-ID: <{message_id}>\r\n").into_bytes();
    out.extend_from_slice(&std::fs::read(dir.path().join("sealed.eml")).expect("sealed"));
    out
}
