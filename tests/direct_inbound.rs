//! Inbound Direct against independent peers, on SQLite and PostgreSQL: the `openssl cms` CLI
//! is the sending STA (its own S/MIME stack), the test PKI is made with `openssl req/x509/ca`,
//! and the messages go through exactly the daemon's inbound path (`switchboard direct
//! receive`, and the HISP mailbox read by the daemon over IMAP).

mod common;

use std::path::Path;
use std::process::Command;

use std::time::Duration;

use common::hisp::{DOC, Hisp, US};
use common::pki::Pki;
use common::process::Spawned;
use common::smime::{openssl_open, openssl_send, referral};
use common::wait::wait_for;
use common::{Backend, TestDb};
use switchboard::config::{Config, ConnectorConfig};
use switchboard::daemon::Core;
use switchboard::direct::inbound::{DirectInbound, Outcome, Taken};

const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- the sending STA (openssl CLI)

/// `ca` (trusted) issues `us` and `doc`; `rogue` (not trusted) issues `rogue_doc`, bound to
/// the same address as `doc`.
fn pki() -> Pki {
    let pki = Pki::new();
    pki.ca("ca").ca("rogue");
    pki.leaf("ca", "us", &format!("email:{US}"))
        .leaf("ca", "doc", &format!("email:{DOC}"))
        .leaf("rogue", "rogue_doc", &format!("email:{DOC}"));
    pki
}

// ---------------------------------------------------------------- configuration

/// A `sign`-mode connector for organization `north`, trusting `anchors` for inbound mail.
fn config(db: &TestDb, pki: &Pki, anchors: &[&str]) -> Config {
    let mut config = db.config();
    let files: Vec<String> = anchors
        .iter()
        .map(|a| format!("\"{}\"", pki.path(&format!("{a}.pem")).display()))
        .collect();
    let toml = format!(
        "address = \"{US}\"\norganization = \"north\"\ncertificate = \"{cert}\"\n\
         private_key = {{ file = \"{key}\" }}\ntrust = [{{ files = [{files}] }}]\n\
         dns = {{ enabled = false }}\nldap = {{ enabled = false }}\n\
         smtp = {{ host = \"127.0.0.1\", port = 9, tls = \"none\", timeout_secs = 1 }}\n",
        cert = pki.path("us.pem").display(),
        key = pki.path("us.key").display(),
        files = files.join(", "),
    );
    config.connectors.insert(
        "hisp".into(),
        ConnectorConfig::Direct(toml::from_str(&toml).expect("direct connector")),
    );
    config
}

async fn inbound(config: Config) -> (Core, DirectInbound) {
    let core = Core::open(config).await.expect("core");
    core.store
        .organizations()
        .ensure("north", "North Clinic")
        .await
        .expect("organization");
    let tenancy = std::sync::Arc::new(
        switchboard::tenancy::Tenancy::from_config(&core.config).expect("tenancy"),
    );
    let inbound = core.direct_inbound(tenancy).expect("inbound");
    (core, inbound)
}

async fn take(inbound: &DirectInbound, raw: &[u8]) -> switchboard::direct::inbound::Receipt {
    match inbound.take("hisp", raw).await.expect("take") {
        Taken::Item(receipt) => receipt,
        Taken::Notification { .. } => panic!("read as a notification"),
    }
}

/// `(disposition, final_destination)` of the MDNs owed for an item.
async fn mdns(core: &Core, item_id: &str) -> Vec<(String, bool)> {
    switchboard::store::on_db!(core.store.db(), |pool| sqlx::query_as(
        "SELECT disposition, final_destination FROM direct_mdns WHERE inbound_item_id = $1 ORDER BY disposition"
    )
    .bind(item_id)
    .fetch_all(pool)
    .await)
    .expect("mdns")
}

// ---------------------------------------------------------------- scenarios

/// A message the openssl CLI signed and encrypted is recorded, opened and taken by intake; its
/// processed MDN (and, as asked, its dispatched MDN) are owed once. A redelivery is recorded
/// once and earns nothing. One signed under an untrusted CA is quarantined with the failing
/// check and earns no MDN; released after its CA became an anchor, it goes through.
async fn receives_and_quarantines(backend: Backend) {
    let db = TestDb::new(backend).await;
    let pki = pki();
    let (core, inbound) = inbound(config(&db, &pki, &["ca"])).await;

    let good = openssl_send(
        &pki,
        "doc",
        &referral("r1@direct.south.example", "Please see Mr Example."),
        "r1@direct.south.example",
    );
    let receipt = take(&inbound, &good).await;
    assert_eq!(receipt.outcome, Outcome::Unmatched, "{receipt:?}");
    let item = core
        .store
        .inbound()
        .item_by_id(&receipt.item_id)
        .await
        .expect("item");
    assert_eq!(item.channel, "direct");
    assert_eq!(item.sender, DOC);
    assert!(item.opened.is_some(), "the opened message is kept");
    assert_eq!(
        mdns(&core, &receipt.item_id).await,
        vec![("dispatched".into(), true), ("processed".into(), false)]
    );

    let again = take(&inbound, &good).await;
    assert_eq!(again.outcome, Outcome::Duplicate);
    assert_eq!(again.item_id, receipt.item_id);
    assert_eq!(mdns(&core, &receipt.item_id).await.len(), 2);

    let rogue = openssl_send(
        &pki,
        "rogue_doc",
        &referral("r2@direct.south.example", "Trust me."),
        "r2@direct.south.example",
    );
    let quarantined = take(&inbound, &rogue).await;
    assert_eq!(quarantined.outcome, Outcome::Quarantined);
    assert!(
        quarantined
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("chain")),
        "{quarantined:?}"
    );
    assert!(mdns(&core, &quarantined.item_id).await.is_empty());
    let listed = core
        .store
        .direct()
        .quarantined(None, 10)
        .await
        .expect("quarantine");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, quarantined.item_id);
    assert_eq!(listed[0].quarantine_check.as_deref(), Some("chain"));
    assert!(listed[0].opened.is_none());

    // Unencrypted mail to a sign-mode connector.
    let plain = format!(
        "From: <{DOC}>\r\nTo: <{US}>\r\nSubject: hi\r\nMessage-ID: <r3@direct.south.example>\r\n\r\nhello\r\n"
    );
    let refused = take(&inbound, plain.as_bytes()).await;
    assert_eq!(refused.outcome, Outcome::Quarantined);
    let item = core
        .store
        .inbound()
        .item_by_id(&refused.item_id)
        .await
        .expect("item");
    assert_eq!(item.quarantine_check.as_deref(), Some("not_encrypted"));

    // The operator adds the rogue CA as an anchor and releases the message.
    let (core, inbound) = inbound_again(&db, &pki, &["ca", "rogue"], core).await;
    let released = inbound
        .release(None, &quarantined.item_id, "cli:test")
        .await
        .expect("release");
    assert_eq!(released.outcome, Outcome::Unmatched, "{released:?}");
    assert_eq!(mdns(&core, &quarantined.item_id).await.len(), 2);
    let item = core
        .store
        .inbound()
        .item_by_id(&quarantined.item_id)
        .await
        .expect("item");
    let steps: Vec<String> = core
        .store
        .inbound()
        .steps(&item.organization_id, &item.id)
        .await
        .expect("steps")
        .into_iter()
        .map(|s| s.step)
        .collect();
    for step in ["received", "quarantined", "released", "verified"] {
        assert!(steps.iter().any(|s| s == step), "{steps:?}");
    }
    let again = inbound
        .release(None, &quarantined.item_id, "cli:test")
        .await;
    assert!(
        again.is_err(),
        "a released item is not quarantined any more"
    );
}
both_databases!(receives_and_quarantines, super::receives_and_quarantines);

/// `POST /v1/direct/quarantine/{id}/release` on a running daemon: an item of another
/// organization is not found, an item that is not quarantined is refused (409), and a
/// quarantined message whose signer's CA became an anchor goes through, earns its MDNs and
/// leaves an audit row naming the key.
async fn release_over_the_api(backend: Backend) {
    let db = TestDb::new(backend).await;
    let pki = pki();
    let (good, rogue) = {
        let (core, inbound) = inbound(config(&db, &pki, &["ca"])).await;
        let good = take(
            &inbound,
            &openssl_send(
                &pki,
                "doc",
                &referral("a1@direct.south.example", "Please see Mr Example."),
                "a1@direct.south.example",
            ),
        )
        .await;
        let rogue = take(
            &inbound,
            &openssl_send(
                &pki,
                "rogue_doc",
                &referral("a2@direct.south.example", "Trust me."),
                "a2@direct.south.example",
            ),
        )
        .await;
        assert_eq!(rogue.outcome, Outcome::Quarantined, "{rogue:?}");
        core.store.close().await;
        (good.item_id, rogue.item_id)
    };

    let mut daemon = common::TestDaemon::start(config(&db, &pki, &["ca", "rogue"])).await;
    let release = |id: &str| format!("/v1/direct/quarantine/{id}/release");
    let other = daemon.key_for("south").await;
    let (status, body) = daemon.request(&other, "POST", &release(&rogue), None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = daemon
        .request(&daemon.key, "POST", &release(&good), None)
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("inbound_wrong_state")),
        "{body}"
    );
    assert!(mdns(&daemon.core, &rogue).await.is_empty());

    let (status, body) = daemon
        .request(&daemon.key, "POST", &release(&rogue), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], rogue.as_str(), "{body}");
    assert_eq!(body["status"], "unmatched", "{body}");
    assert_eq!(mdns(&daemon.core, &rogue).await.len(), 2);
    let (status, list) = daemon
        .request(&daemon.key, "GET", "/v1/direct/quarantine", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["items"], serde_json::json!([]), "{list}");
    let actors: Vec<String> = switchboard::store::on_db!(daemon.core.store.db(), |pool| {
        sqlx::query_scalar(
            "SELECT actor FROM audit_events WHERE action = 'direct_quarantine_released'",
        )
        .fetch_all(pool)
        .await
    })
    .expect("audit");
    assert_eq!(actors.len(), 1, "{actors:?}");
    assert!(actors[0].starts_with("api_key:"), "{actors:?}");

    let (status, _) = daemon
        .request(&daemon.key, "POST", &release(&rogue), None)
        .await;
    assert_eq!(status, 409, "a released item is not quarantined any more");
    daemon.stop().await;
}
both_databases!(release_over_the_api, super::release_over_the_api);

async fn inbound_again(
    db: &TestDb,
    pki: &Pki,
    anchors: &[&str],
    old: Core,
) -> (Core, DirectInbound) {
    old.store.close().await;
    inbound(config(db, pki, anchors)).await
}

/// `switchboard direct receive FILE...`: a line per file and exit status 3 when one was
/// quarantined; `direct quarantine list|show` name the check.
async fn receive_command(backend: Backend) {
    let db = TestDb::new(backend).await;
    let pki = pki();
    let config = config(&db, &pki, &["ca"]);
    {
        let (core, _) = inbound(config.clone()).await;
        core.store.close().await;
    }
    let path = db.dir.path().join("switchboard.toml");
    std::fs::write(&path, toml::to_string(&config).expect("toml")).expect("config");
    let dir = db.dir.path();
    let good = dir.join("good.eml");
    let bad = dir.join("bad.eml");
    std::fs::write(
        &good,
        openssl_send(
            &pki,
            "doc",
            &referral("c1@direct.south.example", "Hello."),
            "c1@direct.south.example",
        ),
    )
    .expect("write");
    std::fs::write(
        &bad,
        openssl_send(
            &pki,
            "rogue_doc",
            &referral("c2@direct.south.example", "Hello."),
            "c2@direct.south.example",
        ),
    )
    .expect("write");
    let out = switchboard_cmd(
        &path,
        &["direct", "receive", "--connector", "hisp"],
        &[&good, &bad],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with(&format!("{}: inb_", good.display())),
        "{stdout}"
    );
    assert!(lines[0].contains(" unmatched"), "{stdout}");
    assert!(lines[1].contains(" quarantined chain"), "{stdout}");
    let quarantined_id = lines[1].split_whitespace().nth(1).expect("id").to_string();

    let out = switchboard_cmd(&path, &["direct", "receive"], &[&good]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(" duplicate"));

    let out = switchboard_cmd(&path, &["direct", "quarantine", "list"], &[]);
    assert!(out.status.success(), "{out:?}");
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains(&quarantined_id) && list.contains("chain"),
        "{list}"
    );
    let out = switchboard_cmd(
        &path,
        &["direct", "quarantine", "show", &quarantined_id],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let show = String::from_utf8_lossy(&out.stdout);
    assert!(show.contains("check:        chain"), "{show}");
    assert!(show.contains("quarantined"), "{show}");
}
both_databases!(receive_command, super::receive_command);

fn switchboard_cmd(config: &Path, args: &[&str], files: &[&Path]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .args(files)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .expect("switchboard")
}

/// How many messages of our maildir are flagged `\Seen`, and how many are not.
fn seen_and_unseen(hisp: &Hisp) -> (usize, usize) {
    let dir = hisp.imap.maildir();
    let mut seen = 0;
    let mut unseen = 0;
    for sub in ["cur", "new"] {
        for entry in std::fs::read_dir(dir.join(sub))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().to_string();
            if name
                .rsplit_once(":2,")
                .is_some_and(|(_, flags)| flags.contains('S'))
            {
                seen += 1;
            } else {
                unseen += 1;
            }
        }
    }
    (seen, unseen)
}

/// `(id, status)` of every Direct item.
async fn direct_items(db: &TestDb) -> Vec<(String, String)> {
    let store = switchboard::store::Store::connect(&db.url, 2, false)
        .await
        .expect("store");
    let rows = switchboard::store::on_db!(store.db(), |pool| sqlx::query_as(
        "SELECT id, status FROM inbound_items WHERE channel = 'direct' ORDER BY created_at"
    )
    .fetch_all(pool)
    .await)
    .expect("items");
    store.close().await;
    rows
}

/// The real mail path: the peer submits through Postfix, Dovecot delivers into our mailbox,
/// the daemon (waiting in IDLE; polling only every 600 s) reads it. Killed (`kill -9`) after
/// the message is recorded and before it is flagged `\Seen`, the restarted daemon reads it
/// again and files it exactly once, owing its MDNs once.
async fn mailbox_kill9_files_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let pki = pki();
    let hisp = Hisp::start();
    let config = hisp_config(&db, &pki, &hisp);
    {
        let (core, _) = inbound(config.clone()).await;
        core.store.close().await;
    }
    let path = db.dir.path().join("switchboard.toml");
    std::fs::write(&path, toml::to_string(&config).expect("toml")).expect("config");
    let log = db.dir.path().join("daemon.log");

    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .args(["run", "--config"])
        .arg(&path)
        .env("SB_TEST_KILL_AT", "direct-recorded");
    let mut daemon = Spawned::start_command(command, &log, "info").await;
    hisp.notify_us(
        &String::from_utf8(openssl_send(
            &pki,
            "doc",
            &referral("k1@direct.south.example", "Discharge summary."),
            "k1@direct.south.example",
        ))
        .expect("ascii"),
    );
    wait_for(
        "the daemon to kill itself after recording",
        WAIT,
        async || daemon.exited().is_some(),
    )
    .await;
    let items = direct_items(&db).await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0].1, "unmatched", "{items:?}");
    assert_eq!(seen_and_unseen(&hisp), (0, 1), "flagged before the kill");

    let daemon = Spawned::start(&path, &db.dir.path().join("daemon2.log"), "info").await;
    daemon
        .wait_for("the message flagged \\Seen", WAIT, async || {
            seen_and_unseen(&hisp) == (1, 0)
        })
        .await;
    let again = direct_items(&db).await;
    assert_eq!(again, items, "recorded once");
    let store = switchboard::store::Store::connect(&db.url, 2, false)
        .await
        .expect("store");
    let (owed,): (i64,) = switchboard::store::on_db!(store.db(), |pool| sqlx::query_as(
        "SELECT COUNT(*) FROM direct_mdns WHERE inbound_item_id = $1"
    )
    .bind(&items[0].0)
    .fetch_one(pool)
    .await)
    .expect("mdns");
    store.close().await;
    assert_eq!(owed, 2, "processed and dispatched, once each");
    assert!(
        daemon.log_text().contains("recorded before"),
        "{}",
        daemon.log_text()
    );
}

/// The whole mail path, undisturbed: the peer submits through Postfix, the daemon picks the
/// message up in IDLE, files it, and the processed and dispatched MDNs reach the sender's
/// mailbox through the same Postfix — once each, signed by us and encrypted to the sender's
/// verified certificate (opened by the openssl CLI).
async fn mailbox_to_mdns(backend: Backend) {
    let db = TestDb::new(backend).await;
    let pki = pki();
    let hisp = Hisp::start();
    let config = hisp_config(&db, &pki, &hisp);
    let mut daemon = common::TestDaemon::start(config).await;
    hisp.notify_us(
        &String::from_utf8(openssl_send(
            &pki,
            "doc",
            &referral("k1@direct.south.example", "Discharge summary."),
            "k1@direct.south.example",
        ))
        .expect("ascii"),
    );
    let inbox = hisp.doc_inbox(2);
    assert_eq!(inbox.len(), 2);
    let mut dispositions: Vec<String> = inbox
        .iter()
        .map(|raw| {
            let report = String::from_utf8(openssl_open(&pki, "doc", raw)).expect("utf-8");
            assert!(
                report.contains("Original-Message-ID: <k1@direct.south.example>"),
                "{report}"
            );
            assert!(
                report.contains(&format!("Final-Recipient: rfc822;{US}")),
                "{report}"
            );
            let line = report
                .lines()
                .find(|l| l.starts_with("Disposition:"))
                .expect("disposition")
                .to_string();
            if line.ends_with("dispatched") {
                assert!(
                    report.contains("X-DIRECT-FINAL-DESTINATION-DELIVERY"),
                    "{report}"
                );
            }
            line
        })
        .collect();
    dispositions.sort();
    assert_eq!(
        dispositions,
        vec![
            "Disposition: automatic-action/MDN-sent-automatically;dispatched".to_string(),
            "Disposition: automatic-action/MDN-sent-automatically;processed".to_string(),
        ]
    );
    let items = direct_items(&db).await;
    assert_eq!(items.len(), 1, "{items:?}");
    daemon.stop().await;
}
both_databases!(mailbox_to_mdns, super::mailbox_to_mdns);

/// A connector for organization `north` whose SMTP and mailbox are the HISP's (IDLE; a poll
/// only every 600 s).
fn hisp_config(db: &TestDb, pki: &Pki, hisp: &Hisp) -> Config {
    let (smtp, mailbox) = hisp.connector(db, 600);
    let mut config = config(db, pki, &["ca"]);
    if let Some(ConnectorConfig::Direct(direct)) = config.connectors.get_mut("hisp") {
        let extra: toml::Table = toml::from_str(&format!("{smtp}{mailbox}")).expect("hisp");
        direct.smtp = extra["smtp"].clone().try_into().expect("smtp");
        direct.mailbox = Some(extra["mailbox"].clone().try_into().expect("mailbox"));
    }
    config
}

both_databases!(mailbox_kill9_files_once, super::mailbox_kill9_files_once);

/// An item recorded by a daemon that stopped before security processing (status `received`,
/// nothing opened) is taken on by the resume pass once it has been untouched for a minute:
/// opened, answered and filed, once.
async fn a_stopped_item_is_taken_on(backend: Backend) {
    let db = TestDb::new(backend).await;
    let pki = pki();
    let (core, inbound) = inbound(config(&db, &pki, &["ca"])).await;
    let raw = openssl_send(
        &pki,
        "doc",
        &referral("s1@direct.south.example", "Stopped half-way."),
        "s1@direct.south.example",
    );
    let org = core
        .store
        .organizations()
        .by_slug("north")
        .await
        .expect("org")
        .id;
    let intake = switchboard::intake::Intake {
        store: core.store.clone(),
        keyring: core.keyring.clone(),
        config: core.config.clone(),
    };
    struct Direct;
    impl switchboard::intake::Source for Direct {
        fn channel(&self) -> &'static str {
            "direct"
        }
        fn parse(&self, _: &[u8]) -> Result<switchboard::intake::Parsed, String> {
            Err("not used".into())
        }
    }
    let (item_id, fresh) = intake
        .record(
            &Direct,
            &switchboard::intake::Received {
                organization_id: &org,
                connector: Some("hisp".into()),
                provider_ref: Some(format!("{DOC} <s1@direct.south.example>")),
                sender: DOC.into(),
                recipient: Some(US.into()),
                raw: &raw,
            },
        )
        .await
        .expect("record");
    assert!(fresh);
    // Fresh items belong to the live path: the pass leaves them alone.
    assert_eq!(inbound.resume_due().await.expect("pass"), 0);
    switchboard::store::on_db!(core.store.db(), |pool| sqlx::query(
        "UPDATE inbound_items SET updated_at = updated_at - 120000 WHERE id = $1"
    )
    .bind(&item_id)
    .execute(pool)
    .await
    .map(|_| ()))
    .expect("age");
    assert_eq!(inbound.resume_due().await.expect("pass"), 1);
    let item = core
        .store
        .inbound()
        .item_by_id(&item_id)
        .await
        .expect("item");
    assert_eq!(item.status, "unmatched", "{item:?}");
    assert!(item.opened.is_some());
    assert_eq!(mdns(&core, &item_id).await.len(), 2);
    // The same message read from the mailbox again is a duplicate.
    assert_eq!(take(&inbound, &raw).await.outcome, Outcome::Duplicate);
    assert_eq!(inbound.resume_due().await.expect("pass"), 0);
}
both_databases!(
    a_stopped_item_is_taken_on,
    super::a_stopped_item_is_taken_on
);

/// The ONC Edge Testing Tool's generated message (`tests/data/direct/messages`), received by a
/// connector holding the tool's key as a further decryption key: it decrypts, and is then
/// quarantined under the v1.3 policy (its signer is 1024-bit, MD5-signed and expired) and
/// earns no MDN.
async fn the_ett_message_is_quarantined(backend: Backend) {
    let db = TestDb::new(backend).await;
    let pki = Pki::new();
    pki.ca("ca").leaf("ca", "to", "email:to@test.com");
    let p12 = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/direct/messages/ett-testCert.p12"
    );
    for (out, flag) in [("ett.pem", "-nokeys"), ("ett.key", "-nocerts")] {
        pki.openssl(&[
            "pkcs12", "-legacy", "-in", p12, "-passin", "pass:", "-nodes", flag, "-out", out,
        ]);
    }
    let mut config = db.config();
    let toml = format!(
        "address = \"to@test.com\"\norganization = \"north\"\ncertificate = \"{cert}\"\n\
         private_key = {{ file = \"{key}\" }}\n\
         decryption_keys = [{{ certificate = \"{ett}\", private_key = {{ file = \"{ett_key}\" }} }}]\n\
         trust = [{{ files = [\"{ett}\"] }}]\n\
         dns = {{ enabled = false }}\nldap = {{ enabled = false }}\n\
         smtp = {{ host = \"127.0.0.1\", port = 9, tls = \"none\", timeout_secs = 1 }}\n",
        cert = pki.path("to.pem").display(),
        key = pki.path("to.key").display(),
        ett = pki.path("ett.pem").display(),
        ett_key = pki.path("ett.key").display(),
    );
    config.connectors.insert(
        "hisp".into(),
        ConnectorConfig::Direct(toml::from_str(&toml).expect("direct connector")),
    );
    let (core, inbound) = inbound(config).await;
    let raw = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/direct/messages/ett-TestGeneratedMessage.txt"
    ))
    .expect("vector");
    let receipt = take(&inbound, &raw).await;
    assert_eq!(receipt.outcome, Outcome::Quarantined, "{receipt:?}");
    let item = core
        .store
        .inbound()
        .item_by_id(&receipt.item_id)
        .await
        .expect("item");
    let check = item.quarantine_check.clone().unwrap_or_default();
    assert!(
        [
            "key_strength",
            "signer_digest",
            "certificate_digest",
            "validity"
        ]
        .contains(&check.as_str()),
        "decrypted, then refused by a v1.3 rule: {item:?}"
    );
    assert_eq!(item.sender, "from@test.com");
    assert!(mdns(&core, &receipt.item_id).await.is_empty());
}
both_databases!(
    the_ett_message_is_quarantined,
    super::the_ett_message_is_quarantined
);
