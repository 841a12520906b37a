//! Attachments end to end, on SQLite and PostgreSQL: accepted as JSON (`content_base64`) and
//! multipart, sealed in the database, listed in the message record, read back byte-identical
//! (each read audited), and carried byte-identical by the outbox, by email to a real SMTP
//! server (aiosmtpd, the received MIME part parsed) and by Direct (the `openssl cms` CLI
//! decrypts and verifies, and the part inside is the same bytes). The refusals: 413 naming
//! the file, 422 for an executable declared as PDF, a type off the list, and SMS.

mod common;

use std::time::Duration;

use base64::Engine;
use common::mail::{received, start_sink};
use common::pki::Pki;
use common::smime::openssl_open;
use common::wait::wait_until;
use common::{Backend, TestDaemon, TestDb};
use mail_parser::{MessageParser, MimeHeaders};
use serde_json::{Value, json};
use switchboard::config::{Config, ConnectorConfig, OrganizationConfig};
use switchboard::store::on_db;

const WAIT: Duration = Duration::from_secs(30);

/// A PDF-looking file with every byte value in it and a marker that must never be in the
/// database in clear.
fn pdf(marker: &str, size: usize) -> Vec<u8> {
    let mut bytes = format!("%PDF-1.7\n% {marker}\n").into_bytes();
    let mut i: u32 = 7;
    while bytes.len() < size.saturating_sub(6) {
        i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        bytes.push((i >> 16) as u8);
    }
    bytes.extend_from_slice(b"\n%%EOF");
    bytes
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(openssl::sha::sha256(bytes))
}

async fn get(daemon: &TestDaemon, key: &str, path: &str) -> reqwest::Response {
    daemon
        .http
        .get(daemon.url(path))
        .bearer_auth(key)
        .send()
        .await
        .expect("GET")
}

async fn count(daemon: &TestDaemon, sql: &'static str) -> i64 {
    let (n,): (i64,) = on_db!(daemon.core.store.db(), |pool| sqlx::query_as(sql)
        .fetch_one(pool)
        .await)
    .expect("count");
    n
}

/// The raw sealed column of every attachment row.
async fn sealed_columns(daemon: &TestDaemon) -> Vec<Vec<u8>> {
    let rows: Vec<(Vec<u8>,)> = on_db!(daemon.core.store.db(), |pool| sqlx::query_as(
        "SELECT content FROM attachments"
    )
    .fetch_all(pool)
    .await)
    .expect("attachments");
    rows.into_iter().map(|(c,)| c).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------- JSON upload, read, outbox

async fn json_upload_round_trip(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut daemon = TestDaemon::start(db.config()).await;
    let marker = format!("PLAINTEXT-MARKER-{}", ulid::Ulid::new());
    let file = pdf(&marker, 300_000);
    let request = json!({
        "subject": "Results",
        "body": "Your results are attached.",
        "recipients": [{"address": "patient@example.org", "channel": "email"}],
        "attachments": [{
            "filename": "../../reports/lab results.pdf",
            "content_type": "application/pdf",
            "content_base64": b64(&file),
        }],
    });
    let response = daemon
        .http
        .post(daemon.url("/v1/messages"))
        .bearer_auth(&daemon.key)
        .header("Idempotency-Key", "attach-1")
        .json(&request)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.expect("json");
    let message_id = created["id"].as_str().expect("id").to_string();
    let listed = &created["attachments"][0];
    assert_eq!(listed["filename"], "lab results.pdf", "{created:#}");
    assert_eq!(listed["content_type"], "application/pdf");
    assert_eq!(listed["size"], file.len());
    assert_eq!(listed["sha256"], sha256(&file));
    let attachment_id = listed["id"].as_str().expect("attachment id").to_string();
    assert!(attachment_id.starts_with("att_"), "{attachment_id}");

    // The record lists it the same way.
    let view = daemon.get_json(&format!("/v1/messages/{message_id}")).await;
    assert_eq!(view["attachments"], created["attachments"], "{view:#}");

    // Sealed in the database: the raw column has no plaintext.
    let sealed = sealed_columns(&daemon).await;
    assert_eq!(sealed.len(), 1);
    assert!(
        !contains(&sealed[0], marker.as_bytes()),
        "plaintext at rest"
    );
    assert!(!contains(&sealed[0], b"%PDF-1.7"), "plaintext at rest");

    // Read back: the same bytes, with safe headers, and the read is audited.
    let path = format!("/v1/messages/{message_id}/attachments/{attachment_id}");
    let response = get(&daemon, &daemon.key, &path).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/pdf");
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"lab results.pdf\""
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let body = response.bytes().await.expect("bytes");
    assert!(body.as_ref() == file.as_slice(), "bytes differ");
    let audited: Vec<(String, String, Option<String>, Option<String>)> =
        on_db!(daemon.core.store.db(), |pool| sqlx::query_as(
            "SELECT action, actor, message_id, detail FROM audit_events WHERE action = 'attachment_read'"
        )
        .fetch_all(pool)
        .await)
        .expect("audit");
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert!(audited[0].1.starts_with("api_key:"), "{audited:?}");
    assert_eq!(audited[0].2.as_deref(), Some(message_id.as_str()));
    assert_eq!(audited[0].3.as_deref(), Some(attachment_id.as_str()));

    // Another organization's key, an unknown id, another message's path: 404.
    let other = daemon.key_for("south").await;
    assert_eq!(get(&daemon, &other, &path).await.status(), 404);
    let unknown = format!("/v1/messages/{message_id}/attachments/att_unknown");
    assert_eq!(get(&daemon, &daemon.key, &unknown).await.status(), 404);
    assert_eq!(
        count(
            &daemon,
            "SELECT COUNT(*) FROM audit_events WHERE action = 'attachment_read'"
        )
        .await,
        1,
        "a refused read is not a read"
    );

    // The outbox sink wrote the bytes next to the delivery, 0600, listed in its JSON.
    let delivery_id = created["deliveries"][0]["id"].as_str().expect("delivery");
    daemon.wait_terminal(&message_id, WAIT).await;
    let written = std::fs::read(db.outbox().join(format!("{delivery_id}.0"))).expect("file");
    assert!(written == file, "outbox bytes differ");
    let listing: Value = serde_json::from_slice(
        &std::fs::read(db.outbox().join(format!("{delivery_id}.json"))).expect("json"),
    )
    .expect("json");
    assert_eq!(listing["attachments"][0]["sha256"], sha256(&file));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(db.outbox().join(format!("{delivery_id}.0")))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The same request with the same key replays the record; another file with it is a 409.
    let replay = daemon
        .http
        .post(daemon.url("/v1/messages"))
        .bearer_auth(&daemon.key)
        .header("Idempotency-Key", "attach-1")
        .json(&request)
        .send()
        .await
        .expect("POST");
    assert_eq!(replay.status(), 200);
    let replayed: Value = replay.json().await.expect("json");
    assert_eq!(replayed["id"], message_id.as_str());
    assert_eq!(replayed["attachments"], created["attachments"]);
    let mut changed = request.clone();
    changed["attachments"][0]["content_base64"] = json!(b64(&pdf("another", 1000)));
    let reused = daemon
        .http
        .post(daemon.url("/v1/messages"))
        .bearer_auth(&daemon.key)
        .header("Idempotency-Key", "attach-1")
        .json(&changed)
        .send()
        .await
        .expect("POST");
    assert_eq!(reused.status(), 409);
    assert_eq!(count(&daemon, "SELECT COUNT(*) FROM attachments").await, 1);
    daemon.stop().await;
}
both_databases!(json_upload, crate::json_upload_round_trip);

// ---------------------------------------------------------------- multipart upload

async fn multipart_upload_round_trip(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut daemon = TestDaemon::start(db.config()).await;
    let file = pdf("multipart", 2 * 1024 * 1024);
    let note = "Summary line one\r\nline two, ünïcode\r\n"
        .as_bytes()
        .to_vec();
    let message = json!({
        "body": "Two files.",
        "recipients": [{"address": "patient@example.org", "channel": "email"}],
    });
    let form = reqwest::multipart::Form::new()
        .part(
            "message",
            reqwest::multipart::Part::text(message.to_string())
                .mime_str("application/json")
                .expect("mime"),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(file.clone())
                .file_name("scan.pdf")
                .mime_str("application/pdf")
                .expect("mime"),
        )
        .part(
            "note",
            reqwest::multipart::Part::bytes(note.clone())
                .file_name("note.txt")
                .mime_str("text/plain; charset=utf-8")
                .expect("mime"),
        );
    let response = daemon
        .http
        .post(daemon.url("/v1/messages"))
        .bearer_auth(&daemon.key)
        .multipart(form)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.expect("json");
    let message_id = created["id"].as_str().expect("id");
    let listed = created["attachments"].as_array().expect("attachments");
    assert_eq!(listed.len(), 2, "{created:#}");
    assert_eq!(listed[0]["filename"], "scan.pdf");
    assert_eq!(listed[1]["content_type"], "text/plain");
    for (entry, bytes) in listed.iter().zip([&file, &note]) {
        let path = format!(
            "/v1/messages/{message_id}/attachments/{}",
            entry["id"].as_str().expect("id")
        );
        let response = get(&daemon, &daemon.key, &path).await;
        assert_eq!(response.status(), 200);
        let body = response.bytes().await.expect("bytes");
        assert!(body.as_ref() == bytes.as_slice(), "bytes differ");
    }
    assert_eq!(
        count(
            &daemon,
            "SELECT COUNT(*) FROM audit_events WHERE action = 'attachment_read'"
        )
        .await,
        2
    );
    let sealed = sealed_columns(&daemon).await;
    assert!(
        sealed.iter().all(|s| !contains(s, b"line two")),
        "plaintext at rest"
    );
    daemon.stop().await;
}
both_databases!(multipart_upload, crate::multipart_upload_round_trip);

// ---------------------------------------------------------------- refusals

async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    response.json().await.expect("problem")
}

async fn refusals(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.limits.max_attachment_bytes = 4096;
    config.limits.allowed_attachment_types = vec![
        "application/pdf".into(),
        "image/png".into(),
        "text/plain".into(),
    ];
    let mut daemon = TestDaemon::start(config).await;
    let small = pdf("small", 1000);
    let big = pdf("big", 5000);
    let with = |attachments: Value, channel: &str| {
        json!({
            "body": "See attached.",
            "recipients": [{"address": if channel == "sms" { "+12175550123" } else { "p@example.org" }, "channel": channel}],
            "attachments": attachments,
        })
    };

    // Over the per-file limit: 413 naming the file.
    let body = with(
        json!([
            {"filename": "ok.pdf", "content_type": "application/pdf", "content_base64": b64(&small)},
            {"filename": "huge-scan.pdf", "content_type": "application/pdf", "content_base64": b64(&big)},
        ]),
        "email",
    );
    let p = problem(daemon.post_message(body).await, 413).await;
    assert_eq!(p["code"], "payload_too_large", "{p:#}");
    assert_eq!(p["pointer"], "/attachments/1", "{p:#}");
    assert!(
        p["detail"].as_str().unwrap_or("").contains("huge-scan.pdf"),
        "{p:#}"
    );

    // The same over multipart: 413 naming the part.
    let form = reqwest::multipart::Form::new()
        .text("message", with(json!([]), "email").to_string())
        .part(
            "scan",
            reqwest::multipart::Part::bytes(big.clone())
                .file_name("huge-scan.pdf")
                .mime_str("application/pdf")
                .expect("mime"),
        );
    let response = daemon
        .http
        .post(daemon.url("/v1/messages"))
        .bearer_auth(&daemon.key)
        .multipart(form)
        .send()
        .await
        .expect("POST");
    let p = problem(response, 413).await;
    assert_eq!(p["pointer"], "/attachments/0", "{p:#}");
    let detail = p["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("\"scan\"") && detail.contains("huge-scan.pdf"),
        "{p:#}"
    );

    // An executable declared as a PDF: 422 at its content_type.
    let mut exe = b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0".to_vec();
    exe.extend_from_slice(b"This program cannot be run in DOS mode.%PDF-1.4");
    let body = with(
        json!([{"filename": "invoice.pdf", "content_type": "application/pdf", "content_base64": b64(&exe)}]),
        "email",
    );
    let p = problem(daemon.post_message(body).await, 422).await;
    assert_eq!(p["code"], "validation_failed");
    assert_eq!(p["pointer"], "/attachments/0/content_type", "{p:#}");

    // A type off the list (an allowed-by-default one, ZIP, is off this list too).
    for (kind, bytes) in [
        ("application/x-msdownload", exe.clone()),
        (
            "application/zip",
            b"PK\x03\x04\x14\0\0\0\x08\0rest".to_vec(),
        ),
    ] {
        let body = with(
            json!([{"filename": "f", "content_type": kind, "content_base64": b64(&bytes)}]),
            "email",
        );
        let p = problem(daemon.post_message(body).await, 422).await;
        assert_eq!(p["pointer"], "/attachments/0/content_type", "{kind}: {p:#}");
        assert!(
            p["detail"].as_str().unwrap_or("").contains("not allowed"),
            "{p:#}"
        );
    }

    // SMS cannot carry attachments.
    let body = with(
        json!([{"filename": "ok.pdf", "content_type": "application/pdf", "content_base64": b64(&small)}]),
        "sms",
    );
    let p = problem(daemon.post_message(body).await, 422).await;
    assert_eq!(p["pointer"], "/attachments", "{p:#}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap_or("")
            .contains("SMS cannot carry attachments"),
        "{p:#}"
    );

    // Not base64: 400 at the field.
    let body = with(
        json!([{"filename": "ok.pdf", "content_type": "application/pdf", "content_base64": "%%%"}]),
        "email",
    );
    let p = problem(daemon.post_message(body).await, 400).await;
    assert_eq!(p["pointer"], "/attachments/0/content_base64", "{p:#}");

    // Nothing of any refused message was stored.
    assert_eq!(count(&daemon, "SELECT COUNT(*) FROM messages").await, 0);
    assert_eq!(count(&daemon, "SELECT COUNT(*) FROM attachments").await, 0);

    // Within the limits the same file goes through.
    let body = with(
        json!([{"filename": "ok.pdf", "content_type": "application/pdf", "content_base64": b64(&small)}]),
        "email",
    );
    assert_eq!(daemon.post_message(body).await.status(), 201);
    daemon.stop().await;
}
both_databases!(refused, crate::refusals);

// ---------------------------------------------------------------- email (aiosmtpd)

fn email_config(db: &TestDb, port: u16) -> Config {
    let mut config = db.config();
    let smtp = format!(
        "host = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         from = \"Switchboard <bounces@mail.north.example>\"\ntimeout_secs = 5\n"
    );
    config.connectors.insert(
        "mail".into(),
        ConnectorConfig::Smtp(toml::from_str(&smtp).expect("smtp connector")),
    );
    config.channels.entry("email".into()).or_default().connector = "mail".into();
    config.organizations.insert(
        "north".into(),
        OrganizationConfig {
            portal_url: "https://portal.north.example".into(),
            phi_email_purposes: vec!["results".into()],
            ..OrganizationConfig::default()
        },
    );
    config
}

async fn email_carries_attachments_only_under_the_phi_rule(backend: Backend) {
    let db = TestDb::new(backend).await;
    let inbox = db.dir.path().join("smtp");
    let sink = start_sink(&inbox, &[]);
    let mut daemon = TestDaemon::start(email_config(&db, sink.port)).await;
    let file = pdf("email-marker", 200_000);
    let send = |purpose: &'static str| {
        json!({
            "subject": "Results",
            "body": "Your results are attached.",
            "metadata": {"purpose": purpose},
            "recipients": [{"address": "patient@example.org", "channel": "email"}],
            "attachments": [{"filename": "results.pdf", "content_type": "application/pdf", "content_base64": b64(&file)}],
        })
    };
    // A purpose the organization lets email carry: the file is a MIME part, byte-identical.
    let response = daemon.post_message(send("results")).await;
    assert_eq!(response.status(), 201);
    let got = wait_until("the first email", WAIT, async || {
        let got = received(&inbox);
        (got.len() == 1).then_some(got)
    })
    .await;
    let parsed = MessageParser::default().parse(&got[0].1).expect("parses");
    assert_eq!(parsed.attachment_count(), 1);
    let part = parsed.attachment(0).expect("attachment");
    assert_eq!(part.attachment_name(), Some("results.pdf"));
    let ct = part.content_type().expect("type");
    assert_eq!((ct.ctype(), ct.subtype()), ("application", Some("pdf")));
    assert!(part.contents() == file.as_slice(), "email bytes differ");

    // The default purpose: "a secure message is waiting", no content and no attachment.
    let response = daemon.post_message(send("message")).await;
    assert_eq!(response.status(), 201);
    let got = wait_until("the second email", WAIT, async || {
        let got = received(&inbox);
        (got.len() == 2).then_some(got)
    })
    .await;
    let raw = &got[1].1;
    let parsed = MessageParser::default().parse(raw).expect("parses");
    assert_eq!(parsed.attachment_count(), 0);
    assert!(!contains(raw, b"results.pdf"));
    assert!(
        !contains(raw, b"JVBERi0xLjc"),
        "the PDF's base64 is in the email"
    );
    daemon.stop().await;
}
both_databases!(
    email_round_trip,
    crate::email_carries_attachments_only_under_the_phi_rule
);

// ---------------------------------------------------------------- Direct (openssl cms)

const US: &str = "clinic@direct.north.example";
const DOC: &str = "doc@direct.south.example";
const CCD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ccda/CCD-2.xml");

fn direct_config(db: &TestDb, pki: &Pki, smtp_port: u16) -> Config {
    let mut config = db.config();
    let store = db.dir.path().join("certs");
    switchboard::direct::discovery::LocalStore::new(&store)
        .import(&std::fs::read(pki.path("doc.pem")).expect("doc"))
        .expect("import");
    let toml = format!(
        "address = \"{US}\"\ncertificate = \"{cert}\"\nprivate_key = {{ file = \"{key}\" }}\n\
         cert_store = \"{store}\"\ndns = {{ enabled = false }}\nldap = {{ enabled = false }}\n\
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
        .channels
        .entry("direct".into())
        .or_default()
        .connector = "hisp".into();
    config
}

async fn direct_carries_attachments_in_the_signed_entity(backend: Backend) {
    let db = TestDb::new(backend).await;
    let pki = Pki::new();
    pki.ca("ca");
    pki.leaf("ca", "us", &format!("email:{US}"))
        .leaf("ca", "doc", &format!("email:{DOC}"));
    let inbox = db.dir.path().join("smtp");
    let sink = start_sink(&inbox, &[]);
    let mut daemon = TestDaemon::start(direct_config(&db, &pki, sink.port)).await;
    let file = pdf("direct-marker", 150_000);
    let ccda = std::fs::read(CCD).expect("C-CDA vector");
    let response = daemon
        .post_message(json!({
            "subject": "Referral",
            "body": "Referral letter and summary attached.",
            "recipients": [{"address": DOC, "channel": "direct"}],
            "attachments": [
                {"filename": "referral.pdf", "content_type": "application/pdf", "content_base64": b64(&file)},
                {"filename": "summary.xml", "content_type": "text/xml", "content_base64": b64(&ccda)},
            ],
        }))
        .await;
    assert_eq!(response.status(), 201);
    let got = wait_until("the Direct message", WAIT, async || {
        let got = received(&inbox);
        (got.len() == 1).then_some(got)
    })
    .await;
    let raw = &got[0].1;
    assert!(!contains(raw, b"direct-marker"), "attachment in clear text");
    assert!(!contains(raw, b"ClinicalDocument"), "C-CDA in clear text");
    let inner = openssl_open(&pki, "doc", raw);
    // The verified entity is the message/rfc822 wrapper; its message holds the parts.
    let outer = MessageParser::default().parse(&inner).expect("parses");
    let message = match outer.attachment(0).and_then(|p| p.message()) {
        Some(message) => message.clone(),
        None => outer.clone(),
    };
    let names: Vec<Option<&str>> = message.attachments().map(|a| a.attachment_name()).collect();
    assert_eq!(
        names,
        [Some("referral.pdf"), Some("summary.xml")],
        "{}",
        String::from_utf8_lossy(&inner)
    );
    let pdf_part = message.attachment(0).expect("pdf");
    assert!(
        pdf_part.contents() == file.as_slice(),
        "Direct PDF bytes differ"
    );
    let xml_part = message.attachment(1).expect("xml");
    assert!(
        xml_part.contents() == ccda.as_slice(),
        "Direct C-CDA bytes differ"
    );
    let ct = xml_part.content_type().expect("type");
    assert_eq!((ct.ctype(), ct.subtype()), ("application", Some("xml")));
    daemon.stop().await;
}
both_databases!(
    direct_round_trip,
    crate::direct_carries_attachments_in_the_signed_entity
);
