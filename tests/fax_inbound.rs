//! Received faxes through the real daemon, on SQLite and PostgreSQL: Phaxio callbacks
//! (multipart, the PDF posted as the part `file`) signed by django-phaxio's
//! `validate_signature` algorithm (`tests/peers/phaxio_sign.py`, an independent
//! implementation), and Telnyx `fax.received` events signed with a test Ed25519 key, whose
//! temporary `media_url` a loopback server plays (flaky, expired and refreshed through the
//! provider API, on a host the manifest does not list).
//!
//! What a user sees: a fax to a number the organization owns lands in its unmatched queue with
//! the sender's number, the page count and the PDF; a fax to a number nobody owns goes to the
//! operator's orphans; forged, unsigned, stale, wrong-URL and wrong-file signatures are 403
//! with a `webhook_refused` audit row and nothing stored; a redelivered fax is recorded once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::provider::telnyx_sign;
use common::wait::wait_until;
use common::{Backend, TestDaemon, TestDb};
use openssl::pkey::{PKey, Private};
use serde_json::{Value, json};
use switchboard::config::Config;

const WAIT: Duration = Duration::from_secs(30);
const PUBLIC_URL: &str = "https://gw.example.org";
const TOKEN: &str = "phaxio-callback-token-for-tests";
const NORTH_FAX: &str = "+12125550100";
const NOBODYS_FAX: &str = "+14155550199";
const SENDER: &str = "+13125550142";

/// A small but real PDF (one empty page).
fn pdf(marker: &str) -> Vec<u8> {
    format!(
        "%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n\
         3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\n% {marker}\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    )
    .into_bytes()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(openssl::sha::sha256(bytes))
}

fn secret(db: &TestDb, name: &str, value: &str) -> String {
    let path = db.dir.path().join(name);
    std::fs::write(&path, value).expect("secret file");
    path.display().to_string()
}

/// North owns `NORTH_FAX`; `phaxio` and `telnyx_fax` are north's connectors; `phaxio_shared`
/// belongs to nobody (what reaches it for a number nobody owns is an orphan).
fn config(db: &TestDb, telnyx_base: &str, telnyx_manifest: &str, key: &PKey<Private>) -> Config {
    let token = secret(db, "phaxio-token", TOKEN);
    let public = secret(
        db,
        "telnyx-pub",
        &B64.encode(key.raw_public_key().expect("public key")),
    );
    let api_key = secret(db, "telnyx-key", "KEYtelnyx");
    let text = format!(
        r#"
[organizations.north]
numbers = ["{NORTH_FAX}"]

[connectors.phaxio]
kind = "http"
manifest = "phaxio"
organization = "north"
public_url = "{PUBLIC_URL}"
credentials = {{ api_key = {{ file = "{token}" }}, api_secret = {{ file = "{token}" }}, callback_token = {{ file = "{token}" }} }}

[connectors.phaxio_shared]
kind = "http"
manifest = "phaxio"
public_url = "{PUBLIC_URL}"
credentials = {{ api_key = {{ file = "{token}" }}, api_secret = {{ file = "{token}" }}, callback_token = {{ file = "{token}" }} }}

[connectors.telnyx_fax]
kind = "http"
manifest = "{telnyx_manifest}"
organization = "north"
base_url = "{telnyx_base}"
params = {{ connection_id = "234423", from = "{NORTH_FAX}" }}
credentials = {{ api_key = {{ file = "{api_key}" }}, public_key = {{ file = "{public}" }} }}

[security]
fetch_allow = ["127.0.0.1"]

[fax_inbound]
retry_base_ms = 100
max_attempts = 5
media_timeout_secs = 5
"#
    );
    let extra = Config::from_toml(&text).expect("test config");
    let mut config = db.config();
    config.organizations = extra.organizations;
    config.connectors = extra.connectors;
    config.security.fetch_allow = extra.security.fetch_allow;
    config.fax_inbound = extra.fax_inbound;
    config
}

/// The built-in Telnyx fax manifest, with the loopback media server's host listed.
fn telnyx_manifest(db: &TestDb) -> String {
    let builtin = include_str!("../connectors/telnyx_fax.toml");
    let text = builtin.replace(
        r#"media_hosts = ["s3.amazonaws.com", "*.s3.amazonaws.com", "*.telnyx.com"]"#,
        r#"media_hosts = ["127.0.0.1"]"#,
    );
    assert_ne!(text, builtin, "the manifest lists its media hosts");
    let path = db.dir.path().join("telnyx_fax.toml");
    std::fs::write(&path, text).expect("manifest");
    path.display().to_string()
}

// ---------------------------------------------------------------------------------------------
// Phaxio

struct Callback {
    fields: Vec<(String, String)>,
    file: Vec<u8>,
}

fn phaxio_callback(id: u64, to: &str, status: &str, pages: u32, file: Vec<u8>) -> Callback {
    let fax = json!({
        "id": id, "direction": "received", "num_pages": pages, "status": status,
        "is_test": false, "created_at": "2026-11-28T04:00:00.000-06:00",
        "from_number": SENDER, "to_number": to,
    });
    Callback {
        fields: vec![
            ("success".into(), "true".into()),
            ("is_test".into(), "false".into()),
            ("direction".into(), "received".into()),
            ("fax".into(), fax.to_string()),
        ],
        file,
    }
}

/// django-phaxio's signature of `callback` posted to `url` (its fields and `file` part, or
/// `signed_file` in its place).
fn django_phaxio_signature(url: &str, callback: &Callback, signed_file: Option<&[u8]>) -> String {
    let spec = json!({
        "url": url, "token": TOKEN, "fields": callback.fields,
        "files": [["file", "fax.pdf", "application/pdf",
                   B64.encode(signed_file.unwrap_or(&callback.file))]],
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/phaxio_sign.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (django-phaxio is installed by .ci/peers)");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(spec.to_string().as_bytes())
        .expect("spec");
    let out = child.wait_with_output().expect("phaxio_sign.py");
    assert!(
        out.status.success(),
        "phaxio_sign.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

async fn post_phaxio(
    daemon: &TestDaemon,
    connector: &str,
    callback: &Callback,
    signature: Option<&str>,
) -> reqwest::Response {
    let mut form = reqwest::multipart::Form::new();
    for (name, value) in &callback.fields {
        form = form.text(name.clone(), value.clone());
    }
    form = form.part(
        "file",
        reqwest::multipart::Part::bytes(callback.file.clone())
            .file_name("fax.pdf")
            .mime_str("application/pdf")
            .expect("mime"),
    );
    let mut request = daemon
        .http
        .post(daemon.url(&format!("/hooks/{connector}/inbound")))
        .multipart(form);
    if let Some(signature) = signature {
        request = request.header("X-Phaxio-Signature", signature);
    }
    request.send().await.expect("webhook")
}

async fn count(daemon: &TestDaemon, sql: &'static str) -> i64 {
    let (n,): (i64,) =
        switchboard::store::on_db!(daemon.core.store.db(), |pool| sqlx::query_as(sql)
            .fetch_one(pool)
            .await)
        .expect("count");
    n
}

async fn refused_audits(daemon: &TestDaemon) -> i64 {
    count(
        daemon,
        "SELECT COUNT(*) FROM audit_events WHERE action = 'webhook_refused'",
    )
    .await
}

async fn faxes_recorded(daemon: &TestDaemon) -> i64 {
    count(daemon, "SELECT COUNT(*) FROM fax_inbound").await
}

/// The unmatched items (list view).
async fn unmatched(daemon: &TestDaemon) -> Vec<Value> {
    daemon.get_json("/v1/inbound?status=unmatched").await["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits for the unmatched item of provider fax `id` and shows it.
async fn unmatched_fax(daemon: &TestDaemon, id: &str) -> Value {
    let item = wait_until(format!("fax {id} unmatched"), WAIT, async || {
        unmatched(daemon)
            .await
            .into_iter()
            .find(|i| i["provider_ref"] == id)
    })
    .await;
    daemon
        .get_json(&format!("/v1/inbound/{}", item["id"].as_str().expect("id")))
        .await
}

async fn put_patient_with_fax(daemon: &TestDaemon) {
    let response = daemon
        .http
        .put(daemon.url("/v1/patients/MRN-FAX-1"))
        .bearer_auth(&daemon.key)
        .json(&json!({"family_name": "Rivera", "given_name": "Ana",
                      "contact_points": [{"system": "fax", "value": SENDER}]}))
        .send()
        .await
        .expect("put patient");
    assert!(response.status().is_success(), "{}", response.status());
}

async fn phaxio_scenario(backend: Backend) {
    let db = TestDb::new(backend).await;
    let key = PKey::generate_ed25519().expect("key");
    let manifest = telnyx_manifest(&db);
    let mut daemon = TestDaemon::start(config(&db, "http://127.0.0.1:9", &manifest, &key)).await;
    put_patient_with_fax(&daemon).await;
    let url = format!("{PUBLIC_URL}/hooks/phaxio/inbound");

    // A valid callback: 200, then the fax waits in north's unmatched queue with the sender's
    // number, its page count and the PDF. The sender's number is a patient's, but a fax
    // machine serves a whole practice: it only proposes.
    let document = pdf("fax 1001");
    let callback = phaxio_callback(1001, NORTH_FAX, "success", 2, document.clone());
    let signature = django_phaxio_signature(&url, &callback, None);
    let response = post_phaxio(&daemon, "phaxio", &callback, Some(&signature)).await;
    assert_eq!(response.status(), 200);
    let item = unmatched_fax(&daemon, "1001").await;
    assert_eq!(item["channel"], "fax");
    assert_eq!(item["sender"], SENDER);
    assert_eq!(item["recipient"], NORTH_FAX);
    assert_eq!(item["organization_id"], daemon.organization_id.as_str());
    let body = item["body"].as_str().expect("body");
    assert!(body.contains(SENDER) && body.contains("2 pages"), "{body}");
    assert!(!body.contains("Partial"), "{body}");
    let candidates = item["candidates"].as_array().expect("candidates");
    assert_eq!(candidates.len(), 1, "{item:#}");
    assert_eq!(candidates[0]["method"], "contact");
    assert_eq!(candidates[0]["external_id"], "MRN-FAX-1");
    let files = item["attachments"].as_array().expect("attachments");
    assert_eq!(files.len(), 1, "{item:#}");
    assert_eq!(files[0]["content_type"], "application/pdf");
    assert_eq!(files[0]["sha256"], sha256_hex(&document).as_str());
    assert_eq!(files[0]["size"], document.len());
    // The provider's record, keyed like the outbound ones.
    assert_eq!(
        count(
            &daemon,
            "SELECT COUNT(*) FROM fax_records WHERE provider = 'phaxio' AND direction = 'inbound' \
             AND provider_id = '1001' AND pages = 2 AND inbound_item_id IS NOT NULL",
        )
        .await,
        1
    );

    // Redelivered (Phaxio retries until it gets a 2xx): recorded once.
    let response = post_phaxio(&daemon, "phaxio", &callback, Some(&signature)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(faxes_recorded(&daemon).await, 1);

    // Concurrent callbacks share commits: the same new fax posted eight times at once (as a
    // provider retrying on timeouts might) is answered 200 each time and recorded once.
    let again = phaxio_callback(1002, NORTH_FAX, "success", 1, pdf("fax 1002"));
    let again_signature = django_phaxio_signature(&url, &again, None);
    let answers = futures::future::join_all(
        (0..8).map(|_| post_phaxio(&daemon, "phaxio", &again, Some(&again_signature))),
    )
    .await;
    assert!(answers.iter().all(|r| r.status() == 200), "{answers:?}");
    assert_eq!(faxes_recorded(&daemon).await, 2);
    unmatched_fax(&daemon, "1002").await;
    let recorded = faxes_recorded(&daemon).await;

    // A person can file it: resolving files the fax, the PDF attached to the message.
    let resolved = daemon
        .http
        .post(daemon.url(&format!(
            "/v1/inbound/{}/resolve",
            item["id"].as_str().expect("id")
        )))
        .bearer_auth(&daemon.key)
        .json(&json!({"patient": "MRN-FAX-1"}))
        .send()
        .await
        .expect("resolve");
    assert_eq!(resolved.status(), 200, "{}", resolved.text().await.unwrap());
    let filed = daemon
        .get_json(&format!("/v1/inbound/{}", item["id"].as_str().expect("id")))
        .await;
    let message = daemon
        .get_json(&format!(
            "/v1/messages/{}",
            filed["message_id"].as_str().expect("message id")
        ))
        .await;
    assert_eq!(
        message["attachments"][0]["sha256"],
        sha256_hex(&document).as_str()
    );

    // Refused with 403 and an audit row, nothing stored: forged, unsigned, signed for another
    // URL, signed over another file.
    let audits = refused_audits(&daemon).await;
    let other = phaxio_callback(1002, NORTH_FAX, "success", 1, pdf("fax 1002"));
    let cases = [
        ("forged", Some("0".repeat(40))),
        ("missing", None),
        (
            "wrong URL",
            Some(django_phaxio_signature(
                "https://gw.example.org/hooks/phaxio/inbound?retry=1",
                &other,
                None,
            )),
        ),
        (
            "wrong file",
            Some(django_phaxio_signature(&url, &other, Some(&pdf("other")))),
        ),
    ];
    for (i, (what, signature)) in cases.iter().enumerate() {
        let response = post_phaxio(&daemon, "phaxio", &other, signature.as_deref()).await;
        assert_eq!(response.status(), 403, "{what}");
        let problem: Value = response.json().await.expect("problem");
        assert_eq!(problem["code"], "webhook_signature_invalid", "{what}");
        assert_eq!(
            refused_audits(&daemon).await,
            audits + i as i64 + 1,
            "{what}"
        );
    }
    assert_eq!(faxes_recorded(&daemon).await, recorded);

    // The same callback signed correctly goes through; a partial fax is flagged.
    let partial = phaxio_callback(1003, NORTH_FAX, "partialsuccess", 3, pdf("fax 1003"));
    let signature = django_phaxio_signature(&url, &partial, None);
    let response = post_phaxio(&daemon, "phaxio", &partial, Some(&signature)).await;
    assert_eq!(response.status(), 200);
    let item = unmatched_fax(&daemon, "1003").await;
    let body = item["body"].as_str().expect("body");
    assert!(
        body.contains("3 pages") && body.contains("Partial"),
        "{body}"
    );
    let parsed = item["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step"] == "parsed")
        .cloned()
        .expect("parsed step");
    assert_eq!(parsed["detail"]["warnings"][0], "fax: partial");

    // A fax to a number no organization owns, through a connector no organization owns:
    // the operator's orphans, nobody's queue.
    let orphan = phaxio_callback(1004, NOBODYS_FAX, "success", 1, pdf("fax 1004"));
    let shared_url = format!("{PUBLIC_URL}/hooks/phaxio_shared/inbound");
    let signature = django_phaxio_signature(&shared_url, &orphan, None);
    let response = post_phaxio(&daemon, "phaxio_shared", &orphan, Some(&signature)).await;
    assert_eq!(response.status(), 200);
    // The fax's record says `orphaned` once the job is done with it.
    common::wait::wait_for("the orphaned fax", WAIT, async || {
        count(
            &daemon,
            "SELECT COUNT(*) FROM fax_inbound WHERE status = 'orphaned'",
        )
        .await
            == 1
    })
    .await;
    assert_eq!(
        count(
            &daemon,
            "SELECT COUNT(*) FROM inbound_orphans WHERE channel = 'fax' AND provider_ref = '1004'",
        )
        .await,
        1
    );
    assert!(
        unmatched(&daemon)
            .await
            .iter()
            .all(|i| i["provider_ref"] != "1004")
    );
    daemon.stop().await;
}

both_databases!(phaxio_callbacks, crate::phaxio_scenario);

// ---------------------------------------------------------------------------------------------
// Telnyx

/// The loopback Telnyx: media URLs (one failing twice first, one expired until refreshed) and
/// the fax API's refresh and lookup.
#[derive(Clone, Default)]
struct Media {
    flaky_hits: Arc<AtomicUsize>,
    expired_hits: Arc<AtomicUsize>,
    refreshed: Arc<AtomicUsize>,
    other_hits: Arc<AtomicUsize>,
    elsewhere_hits: Arc<AtomicUsize>,
    base: Arc<std::sync::OnceLock<String>>,
}

async fn serve_media() -> (String, Media) {
    let media = Media::default();
    let app = Router::new()
        .route(
            "/media/flaky.pdf",
            get(async |State(m): State<Media>| {
                if m.flaky_hits.fetch_add(1, Ordering::SeqCst) < 2 {
                    StatusCode::SERVICE_UNAVAILABLE.into_response()
                } else {
                    pdf("flaky").into_response()
                }
            }),
        )
        .route(
            "/media/expired.pdf",
            get(async |State(m): State<Media>| {
                m.expired_hits.fetch_add(1, Ordering::SeqCst);
                StatusCode::FORBIDDEN
            }),
        )
        .route(
            "/media/fresh.pdf",
            get(async || pdf("fresh").into_response()),
        )
        .route(
            "/media/other.pdf",
            get(async |State(m): State<Media>| {
                m.other_hits.fetch_add(1, Ordering::SeqCst);
                pdf("other").into_response()
            }),
        )
        .route(
            "/media/moved.pdf",
            get(async || {
                (
                    StatusCode::FOUND,
                    [("location", "/elsewhere/fax.pdf")],
                    "moved",
                )
            }),
        )
        .route(
            "/elsewhere/fax.pdf",
            get(async |State(m): State<Media>| {
                m.elsewhere_hits.fetch_add(1, Ordering::SeqCst);
                pdf("elsewhere").into_response()
            }),
        )
        .route(
            "/v2/faxes/{id}/actions/refresh",
            post(async |State(m): State<Media>| {
                m.refreshed.fetch_add(1, Ordering::SeqCst);
                axum::Json(json!({"data": {"result": "ok"}}))
            }),
        )
        .route(
            "/v2/faxes/{id}",
            get(async |State(m): State<Media>| {
                let base = m.base.get().cloned().unwrap_or_default();
                axum::Json(json!({"data": {"id": "x", "status": "received",
                                            "media_url": format!("{base}/media/fresh.pdf")}}))
            }),
        )
        .with_state(media.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let _ = media.base.set(base.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, media)
}

fn received(event_id: &str, fax_id: &str, to: &str, media_url: &str, partial: bool) -> String {
    json!({
        "data": {
            "event_type": "fax.received", "id": event_id, "record_type": "event",
            "occurred_at": "2026-11-28T04:00:00.000Z",
            "payload": {
                "fax_id": fax_id, "connection_id": "234423", "direction": "inbound",
                "from": SENDER, "to": to, "media_url": media_url, "page_count": 4,
                "partial_content": partial, "status": "received",
            }
        },
        "meta": {"attempt": 1, "delivered_to": "https://gw.example.org/hooks/telnyx_fax/inbound"}
    })
    .to_string()
}

async fn post_telnyx(
    daemon: &TestDaemon,
    key: &PKey<Private>,
    body: &str,
    timestamp: i64,
) -> reqwest::Response {
    let timestamp = timestamp.to_string();
    daemon
        .http
        .post(daemon.url("/hooks/telnyx_fax/inbound"))
        .header("content-type", "application/json")
        .header(
            "telnyx-signature-ed25519",
            telnyx_sign(key, &timestamp, body),
        )
        .header("telnyx-timestamp", &timestamp)
        .body(body.to_string())
        .send()
        .await
        .expect("webhook")
}

async fn fax_row_status(daemon: &TestDaemon, provider_id: &str) -> Option<(String, i32)> {
    switchboard::store::on_db!(daemon.core.store.db(), |pool| sqlx::query_as(
        "SELECT status, attempts FROM fax_inbound WHERE provider_id = $1"
    )
    .bind(provider_id)
    .fetch_optional(pool)
    .await)
    .expect("fax row")
}

async fn telnyx_scenario(backend: Backend) {
    let db = TestDb::new(backend).await;
    let key = PKey::generate_ed25519().expect("key");
    let (base, media) = serve_media().await;
    let manifest = telnyx_manifest(&db);
    let mut daemon = TestDaemon::start(config(&db, &format!("{base}/v2"), &manifest, &key)).await;
    let now = chrono::Utc::now().timestamp();

    // The media URL fails twice: the job retries, then files the fax with its PDF.
    let body = received(
        "evt-1",
        "fax-a",
        NORTH_FAX,
        &format!("{base}/media/flaky.pdf"),
        false,
    );
    assert_eq!(post_telnyx(&daemon, &key, &body, now).await.status(), 200);
    let item = unmatched_fax(&daemon, "fax-a").await;
    assert_eq!(item["sender"], SENDER);
    assert!(
        item["body"].as_str().expect("body").contains("4 pages"),
        "{item:#}"
    );
    assert_eq!(
        item["attachments"][0]["sha256"],
        sha256_hex(&pdf("flaky")).as_str()
    );
    assert_eq!(media.flaky_hits.load(Ordering::SeqCst), 3);
    // Two failed attempts and the one that filed it (its record is done just after the item).
    let (_, attempts) = wait_until("fax-a filed", WAIT, async || {
        fax_row_status(&daemon, "fax-a")
            .await
            .filter(|(s, _)| s == "filed")
    })
    .await;
    assert_eq!(attempts, 3);

    // The same event again (Telnyx redelivers until it gets a 2xx): one record, one item.
    assert_eq!(post_telnyx(&daemon, &key, &body, now).await.status(), 200);
    assert_eq!(faxes_recorded(&daemon).await, 1);
    assert_eq!(
        count(
            &daemon,
            "SELECT COUNT(*) FROM webhook_events WHERE connector = 'telnyx_fax'"
        )
        .await,
        1
    );

    // An expired media URL (403): refreshed through the API, then downloaded from the new one.
    // A partial fax is flagged.
    let body = received(
        "evt-2",
        "fax-b",
        NORTH_FAX,
        &format!("{base}/media/expired.pdf"),
        true,
    );
    assert_eq!(post_telnyx(&daemon, &key, &body, now).await.status(), 200);
    let item = unmatched_fax(&daemon, "fax-b").await;
    assert_eq!(
        item["attachments"][0]["sha256"],
        sha256_hex(&pdf("fresh")).as_str()
    );
    assert!(
        item["body"].as_str().expect("body").contains("Partial"),
        "{item:#}"
    );
    assert_eq!(media.refreshed.load(Ordering::SeqCst), 1);
    assert_eq!(media.expired_hits.load(Ordering::SeqCst), 1);

    // A media URL on a host the manifest does not list (`localhost`, where only 127.0.0.1
    // is listed): never fetched; the fax is kept, failed, for the operator.
    let port = base.rsplit(':').next().expect("port");
    let body = received(
        "evt-3",
        "fax-c",
        NORTH_FAX,
        &format!("http://localhost:{port}/media/other.pdf"),
        false,
    );
    assert_eq!(post_telnyx(&daemon, &key, &body, now).await.status(), 200);
    let (status, _) = wait_until("fax-c failed", WAIT, async || {
        fax_row_status(&daemon, "fax-c")
            .await
            .filter(|(s, _)| s == "failed")
    })
    .await;
    assert_eq!(status, "failed");
    let (reason,): (Option<String>,) =
        switchboard::store::on_db!(daemon.core.store.db(), |pool| sqlx::query_as(
            "SELECT reason FROM fax_inbound WHERE provider_id = 'fax-c'"
        )
        .fetch_one(pool)
        .await)
        .expect("reason");
    assert!(
        reason.as_deref().unwrap_or("").contains("not listed"),
        "{reason:?}"
    );
    assert_eq!(media.other_hits.load(Ordering::SeqCst), 0);

    // A media URL that redirects: never followed, not retried; the fax is kept, failed.
    let body = received(
        "evt-5",
        "fax-e",
        NORTH_FAX,
        &format!("{base}/media/moved.pdf"),
        false,
    );
    assert_eq!(post_telnyx(&daemon, &key, &body, now).await.status(), 200);
    let (_, attempts) = wait_until("fax-e failed", WAIT, async || {
        fax_row_status(&daemon, "fax-e")
            .await
            .filter(|(s, _)| s == "failed")
    })
    .await;
    assert_eq!(attempts, 1);
    assert_eq!(media.elsewhere_hits.load(Ordering::SeqCst), 0);

    // A stale timestamp (20 minutes old): 403, audited, nothing stored.
    let audits = refused_audits(&daemon).await;
    let recorded = faxes_recorded(&daemon).await;
    let body = received(
        "evt-4",
        "fax-d",
        NORTH_FAX,
        &format!("{base}/media/fresh.pdf"),
        false,
    );
    let response = post_telnyx(&daemon, &key, &body, now - 1200).await;
    assert_eq!(response.status(), 403);
    assert_eq!(refused_audits(&daemon).await, audits + 1);
    // Signed by another key: refused too.
    let other = PKey::generate_ed25519().expect("key");
    let response = post_telnyx(&daemon, &other, &body, now).await;
    assert_eq!(response.status(), 403);
    assert_eq!(refused_audits(&daemon).await, audits + 2);
    assert_eq!(faxes_recorded(&daemon).await, recorded);
    assert!(fax_row_status(&daemon, "fax-d").await.is_none());
    daemon.stop().await;
}

both_databases!(telnyx_received, crate::telnyx_scenario);

/// A burst of webhooks at once, as a provider sends them after an outage: distinct faxes, each
/// delivered twice at the same moment (the same event), and a redelivery under a new event
/// id. Every request is answered 200 — the duplicates too, whichever shares a commit with
/// which — and each fax is recorded exactly once.
async fn burst_scenario(backend: Backend) {
    let db = TestDb::new(backend).await;
    let key = PKey::generate_ed25519().expect("key");
    let (base, _media) = serve_media().await;
    let manifest = telnyx_manifest(&db);
    let mut daemon = TestDaemon::start(config(&db, &format!("{base}/v2"), &manifest, &key)).await;
    let now = chrono::Utc::now().timestamp();
    let media_url = format!("{base}/media/fresh.pdf");
    const FAXES: usize = 30;
    let mut bodies = Vec::new();
    for i in 0..FAXES {
        let fax_id = format!("burst-{i}");
        let body = received(&format!("evt-b{i}"), &fax_id, NORTH_FAX, &media_url, false);
        bodies.push(body.clone());
        bodies.push(body);
        if i % 3 == 0 {
            bodies.push(received(
                &format!("evt-b{i}-again"),
                &fax_id,
                NORTH_FAX,
                &media_url,
                false,
            ));
        }
    }
    let statuses = futures::future::join_all(bodies.iter().map(|body| {
        let (daemon, key) = (&daemon, &key);
        async move { post_telnyx(daemon, key, body, now).await.status() }
    }))
    .await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(faxes_recorded(&daemon).await, FAXES as i64);
    let per_fax = count(
        &daemon,
        "SELECT COUNT(*) FROM (SELECT provider_id FROM fax_inbound
                                GROUP BY provider_id HAVING COUNT(*) = 1) once",
    )
    .await;
    assert_eq!(per_fax, FAXES as i64);
    // Each fax reaches the unmatched queue once.
    wait_until("every burst fax unmatched", WAIT, async || {
        let items = unmatched(&daemon).await;
        let burst = items
            .iter()
            .filter(|i| {
                i["provider_ref"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("burst-"))
            })
            .count();
        (burst == FAXES).then_some(())
    })
    .await;
    daemon.stop().await;
}

both_databases!(fax_burst, crate::burst_scenario);
