//! Fax out through manifest connectors — on SQLite and PostgreSQL.
//!
//! - Phaxio v2.1 against a loopback server following Phaxio's documented API (multipart `to`,
//!   `file[]`, `callback_url`, HTTP Basic `api_key:api_secret`; `{success, message, data}`
//!   answers) whose multipart reader is axum's (multer), not ours.
//! - Telnyx Programmable Fax against Prism serving Telnyx's published OpenAPI document (our JSON
//!   `media_url` request passes its validation; a request breaking the contract fails), and a
//!   loopback Telnyx for what Prism cannot do (fetching the served document, callbacks).
//! - Documents read back with poppler's `pdftotext` / `pdfinfo` (Debian poppler-utils).
//! - Status callbacks signed as the providers sign them, computed here independently:
//!   Phaxio's hex HMAC-SHA1 (django-phaxio's `validate_signature`), Telnyx's Ed25519.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{FromRequest, Multipart, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::process::Spawned;
use common::provider::{quick_retries, secret_file, telnyx_sign};
use common::{Backend, TestDaemon, TestDb};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use serde_json::{Value, json};
use switchboard::config::{Config, ConnectorConfig, HttpConnectorConfig, OrganizationConfig};

const WAIT: Duration = Duration::from_secs(60);
const PUBLIC: &str = "https://gw.example.org";
const FROM: &str = "+15555550100";
const FAX_TO: &str = "+12125550199";
const PHAXIO_KEY: &str = "phaxio-api-key";
const PHAXIO_SECRET: &str = "phaxio-api-secret";
const PHAXIO_CALLBACK_TOKEN: &str = "phaxio-callback-token";
const TELNYX_API_KEY: &str = "KEYtelnyxfax";
const BODY: &str = "Referral for Ana Rivera: cardiology consult requested.";

// ------------------------------------------------------------------ the loopback providers

#[derive(Debug, Clone, Default)]
struct Sent {
    fields: BTreeMap<String, String>,
    /// (part name, filename, content type, bytes)
    files: Vec<(String, String, String, Vec<u8>)>,
    json: Value,
}

#[derive(Default)]
struct Inner {
    sends: Vec<Sent>,
    lookups: usize,
    lookup_status: String,
    next: u64,
}

/// Phaxio v2.1 (`/v2.1/faxes`) and Telnyx v2 (`/v2/faxes`) fax resources on loopback.
#[derive(Clone)]
struct FaxProvider {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl FaxProvider {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let provider = Self {
            addr: listener.local_addr().expect("addr"),
            inner: Arc::new(Mutex::new(Inner {
                lookup_status: "inprogress".into(),
                ..Inner::default()
            })),
        };
        let app = Router::new()
            .route("/v2.1/faxes", post(phaxio_send))
            .route("/v2.1/faxes/{id}", get(phaxio_get))
            .route("/v2/faxes", post(telnyx_send))
            .route("/v2/faxes/{id}", get(telnyx_get))
            .with_state(provider.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        provider
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn sends(&self) -> Vec<Sent> {
        self.inner.lock().unwrap().sends.clone()
    }

    fn set_lookup_status(&self, status: &str) {
        self.inner.lock().unwrap().lookup_status = status.into();
    }

    fn lookups(&self) -> usize {
        self.inner.lock().unwrap().lookups
    }

    fn record(&self, sent: Sent) -> u64 {
        let mut inner = self.inner.lock().unwrap();
        inner.sends.push(sent);
        inner.next += 1;
        inner.next
    }
}

fn phaxio_error(status: StatusCode, message: &str) -> axum::response::Response {
    (
        status,
        axum::Json(json!({"success": false, "message": message})),
    )
        .into_response()
}

/// A multipart send as the provider received it: text fields and file parts.
async fn read_form(mut form: Multipart) -> Sent {
    let mut sent = Sent::default();
    while let Ok(Some(field)) = form.next_field().await {
        let name = field.name().unwrap_or_default().to_string();
        match field.file_name().map(String::from) {
            Some(filename) => {
                let content_type = field.content_type().unwrap_or_default().to_string();
                let data = field.bytes().await.expect("file part").to_vec();
                sent.files.push((name, filename, content_type, data));
            }
            None => {
                sent.fields
                    .insert(name, field.text().await.expect("text part"));
            }
        }
    }
    sent
}

/// `POST /v2.1/faxes`: Basic auth; multipart `to` (required), `file[]` (one or more),
/// `caller_id`, `callback_url`.
async fn phaxio_send(
    State(provider): State<FaxProvider>,
    headers: HeaderMap,
    form: Multipart,
) -> axum::response::Response {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let expected = format!(
        "Basic {}",
        B64.encode(format!("{PHAXIO_KEY}:{PHAXIO_SECRET}"))
    );
    if authorization.as_deref() != Some(expected.as_str()) {
        return phaxio_error(StatusCode::UNAUTHORIZED, "Invalid API credentials");
    }
    let sent = read_form(form).await;
    if !sent.fields.contains_key("to") {
        return phaxio_error(StatusCode::UNPROCESSABLE_ENTITY, "You must provide a to");
    }
    if !sent.files.iter().any(|(name, ..)| name == "file[]") {
        return phaxio_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "You must provide a file or content_url",
        );
    }
    let id = provider.record(sent);
    axum::Json(json!({"success": true, "message": "Fax queued for sending", "data": {"id": id}}))
        .into_response()
}

async fn phaxio_get(
    State(provider): State<FaxProvider>,
    UrlPath(id): UrlPath<String>,
) -> axum::response::Response {
    let status = {
        let mut inner = provider.inner.lock().unwrap();
        inner.lookups += 1;
        inner.lookup_status.clone()
    };
    axum::Json(json!({"success": true, "message": "Retrieved fax successfully", "data": {
        "id": id.parse::<u64>().unwrap_or(0), "direction": "sent", "num_pages": 3, "status": status,
        "is_test": true, "recipients": [{"phone_number": FAX_TO, "status": status}],
    }}))
    .into_response()
}

/// `POST /v2/faxes`: bearer auth; JSON (`SendFaxRequest`: `connection_id`, `from`, `to`
/// required) or `multipart/form-data` (`SendFaxMultipartRequest`: the same and the file
/// `contents`), read with axum's multipart reader (multer) and checked against that schema from
/// Telnyx's published OpenAPI document.
async fn telnyx_send(
    State(provider): State<FaxProvider>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    if authorization.as_deref() != Some(&format!("Bearer {TELNYX_API_KEY}")) {
        return (StatusCode::UNAUTHORIZED, "{}").into_response();
    }
    let multipart = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let (sent, schema) = if multipart {
        let Ok(form) = Multipart::from_request(request, &provider).await else {
            return (StatusCode::BAD_REQUEST, "{}").into_response();
        };
        let mut sent = read_form(form).await;
        // The form as the schema sees it: text fields as strings, a file as its name.
        let mut form = serde_json::Map::new();
        for (name, value) in &sent.fields {
            form.insert(name.clone(), json!(value));
        }
        for (name, filename, ..) in &sent.files {
            form.insert(name.clone(), json!(filename));
        }
        sent.json = Value::Object(form);
        (sent, "SendFaxMultipartRequest")
    } else {
        let Ok(body) = axum::body::to_bytes(request.into_body(), 1 << 20).await else {
            return (StatusCode::BAD_REQUEST, "{}").into_response();
        };
        let json: Value = serde_json::from_slice(&body).unwrap_or_default();
        let sent = Sent {
            json,
            ..Sent::default()
        };
        (sent, "SendFaxRequest")
    };
    let errors = telnyx_schema_errors(schema, &sent.json);
    if !errors.is_empty() {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"errors": [{"code": "10015", "detail": errors.join("; ")}]})),
        )
            .into_response();
    }
    let json = sent.json.clone();
    let n = provider.record(sent);
    let id = format!("0ccc7b54-4df3-4bca-a65a-{n:012x}");
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"data": {
            "id": id, "record_type": "fax", "direction": "outbound", "status": "queued",
            "connection_id": json["connection_id"], "from": json["from"], "to": json["to"],
            "media_url": json["media_url"],
        }})),
    )
        .into_response()
}

/// What is wrong with `request` by the named request schema of Telnyx's published OpenAPI
/// document (`tests/data/providers/telnyx_api_v2.json`).
fn telnyx_schema_errors(schema: &str, request: &Value) -> Vec<String> {
    static DOCUMENT: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    let document = DOCUMENT.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/providers/telnyx_api_v2.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).expect("Telnyx OpenAPI")).expect("JSON")
    });
    let schema = &document["components"]["schemas"][schema];
    assert!(schema.is_object(), "the published document has the schema");
    let validator = jsonschema::draft202012::new(schema).expect("schema");
    validator
        .iter_errors(request)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

async fn telnyx_get(
    State(provider): State<FaxProvider>,
    UrlPath(id): UrlPath<String>,
) -> axum::response::Response {
    let status = {
        let mut inner = provider.inner.lock().unwrap();
        inner.lookups += 1;
        inner.lookup_status.clone()
    };
    axum::Json(json!({"data": {"id": id, "record_type": "fax", "status": status, "page_count": 2}}))
        .into_response()
}

// ------------------------------------------------------------------------ daemon settings

fn phaxio_connector(db: &TestDb, base: &str) -> ConnectorConfig {
    ConnectorConfig::Http(HttpConnectorConfig {
        manifest: "phaxio".into(),
        base_url: Some(base.to_string()),
        params: BTreeMap::from([("from".into(), FROM.into())]),
        credentials: BTreeMap::from([
            ("api_key".into(), secret_file(db, "phaxio-key", PHAXIO_KEY)),
            (
                "api_secret".into(),
                secret_file(db, "phaxio-secret", PHAXIO_SECRET),
            ),
            (
                "callback_token".into(),
                secret_file(db, "phaxio-callback", PHAXIO_CALLBACK_TOKEN),
            ),
        ]),
        public_url: Some(PUBLIC.into()),
        organization: Some("north".into()),
        rate_per_sec: 0.0,
        timeout_secs: 10,
        reconcile_after_secs: 0,
        media_ttl_secs: 600,
    })
}

fn telnyx_fax_connector(
    db: &TestDb,
    base: &str,
    key: &PKey<Private>,
    media_ttl_secs: u64,
) -> ConnectorConfig {
    telnyx_connector_with("telnyx_fax", db, base, key, media_ttl_secs)
}

/// A Telnyx fax connector on the manifest named (`telnyx_fax`, `telnyx_fax_upload`, a path).
fn telnyx_connector_with(
    manifest: &str,
    db: &TestDb,
    base: &str,
    key: &PKey<Private>,
    media_ttl_secs: u64,
) -> ConnectorConfig {
    ConnectorConfig::Http(HttpConnectorConfig {
        manifest: manifest.into(),
        base_url: Some(base.to_string()),
        params: BTreeMap::from([
            ("connection_id".into(), "234423".into()),
            ("from".into(), FROM.into()),
        ]),
        credentials: BTreeMap::from([
            (
                "api_key".into(),
                secret_file(db, "telnyx-key", TELNYX_API_KEY),
            ),
            (
                "public_key".into(),
                secret_file(
                    db,
                    "telnyx-pub",
                    &B64.encode(key.raw_public_key().expect("public key")),
                ),
            ),
        ]),
        public_url: Some(PUBLIC.into()),
        organization: Some("north".into()),
        rate_per_sec: 0.0,
        timeout_secs: 10,
        reconcile_after_secs: 0,
        media_ttl_secs,
    })
}

fn fax_config(db: &TestDb, name: &str, connector: ConnectorConfig, text: bool) -> Config {
    let mut config = db.config();
    config.connectors.insert(name.into(), connector);
    config.channels.insert("fax".into(), quick_retries(name, 3));
    config.organizations.insert(
        "north".into(),
        OrganizationConfig {
            fax_text_purposes: if text {
                vec!["message".into()]
            } else {
                Vec::new()
            },
            ..OrganizationConfig::default()
        },
    );
    config
}

// ------------------------------------------------------------------------------- helpers

/// A PDF of `pages` pages, each saying "Record page N of M", written with pdf-writer.
fn pdf(pages: usize) -> Vec<u8> {
    use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str};
    let mut pdf = Pdf::new();
    let (catalog, tree, font) = (Ref::new(1), Ref::new(2), Ref::new(3));
    let ids: Vec<(Ref, Ref)> = (0..pages)
        .map(|i| (Ref::new(4 + 2 * i as i32), Ref::new(5 + 2 * i as i32)))
        .collect();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(ids.iter().map(|(p, _)| *p))
        .count(pages as i32);
    pdf.type1_font(font).base_font(Name(b"Helvetica"));
    for (n, (page_id, content_id)) in ids.iter().enumerate() {
        let mut page = pdf.page(*page_id);
        page.media_box(Rect::new(0.0, 0.0, 612.0, 792.0))
            .parent(tree)
            .contents(*content_id);
        page.resources().fonts().pair(Name(b"F1"), font);
        page.finish();
        let mut c = Content::new();
        c.begin_text()
            .set_font(Name(b"F1"), 14.0)
            .next_line(72.0, 700.0)
            .show(Str(format!("Record page {} of {pages}", n + 1).as_bytes()))
            .end_text();
        pdf.stream(*content_id, &c.finish());
    }
    pdf.finish()
}

fn poppler(tool: &str, data: &[u8], dir: &Path) -> String {
    let path = dir.join(format!("doc-{}.pdf", ulid::Ulid::new()));
    std::fs::write(&path, data).expect("write pdf");
    let mut command = Command::new(tool);
    command.arg(&path);
    if tool == "pdftotext" {
        command.arg("-");
    }
    let out = command.output().unwrap_or_else(|e| {
        panic!("{tool} (Debian poppler-utils) is required: {e}; run .ci/peers")
    });
    assert!(
        out.status.success(),
        "{tool}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pdf_text(data: &[u8], dir: &Path) -> String {
    poppler("pdftotext", data, dir)
}

fn pdf_page_count(data: &[u8], dir: &Path) -> usize {
    let info = poppler("pdfinfo", data, dir);
    info.lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("pdfinfo gave no page count: {info}"))
}

async fn send_fax(daemon: &TestDaemon, body: Value) -> String {
    let response = daemon.post_message(body).await;
    assert_eq!(
        response.status(),
        201,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let view: Value = response.json().await.expect("json");
    view["id"].as_str().expect("id").to_string()
}

fn fax_message(attachments: Value) -> Value {
    json!({
        "body": BODY,
        "recipients": [{"address": FAX_TO, "channel": "fax"}],
        "attachments": attachments,
    })
}

fn attachment(filename: &str, content_type: &str, data: &[u8]) -> Value {
    json!({"filename": filename, "content_type": content_type, "content_base64": B64.encode(data)})
}

/// Sends a fax with the one attachment and returns why its delivery failed (it must fail).
async fn failed_fax(daemon: &TestDaemon, attachment: Value) -> String {
    let message = send_fax(daemon, fax_message(json!([attachment]))).await;
    let view = daemon.wait_terminal(&message, WAIT).await;
    assert_eq!(view["deliveries"][0]["status"], "failed", "{view:#}");
    view["deliveries"][0]["reason"]
        .as_str()
        .expect("a reason")
        .to_string()
}

/// Polls the message until its deliveries satisfy `done`.
async fn wait_deliveries(
    daemon: &TestDaemon,
    message_id: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let view = daemon.get_json(&format!("/v1/messages/{message_id}")).await;
        let deliveries = view["deliveries"].as_array().cloned().unwrap_or_default();
        if done(&deliveries) {
            return deliveries;
        }
        assert!(
            started.elapsed() < WAIT,
            "deliveries not as expected in time: {deliveries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_sends(provider: &FaxProvider, count: usize) -> Vec<Sent> {
    common::wait::wait_until("the provider's sends", WAIT, async || {
        let sends = provider.sends();
        (sends.len() >= count).then_some(sends)
    })
    .await
}

/// django-phaxio's `validate_signature`: hex HMAC-SHA1 over the URL + sorted `name+value`
/// fields + sorted `name+sha1_hex(file)` parts, keyed by the callback token.
fn phaxio_sign(url: &str, fields: &[(&str, &str)], files: &[(&str, &[u8])]) -> String {
    let mut data = url.to_string();
    let mut fields = fields.to_vec();
    fields.sort();
    for (k, v) in fields {
        data.push_str(k);
        data.push_str(v);
    }
    let mut files = files.to_vec();
    files.sort();
    for (k, bytes) in files {
        data.push_str(k);
        data.push_str(&hex::encode(
            openssl::hash::hash(MessageDigest::sha1(), bytes).expect("sha1"),
        ));
    }
    let key = PKey::hmac(PHAXIO_CALLBACK_TOKEN.as_bytes()).expect("key");
    let mut signer = Signer::new(MessageDigest::sha1(), &key).expect("signer");
    signer.update(data.as_bytes()).expect("sign");
    hex::encode(signer.sign_to_vec().expect("signature"))
}

/// Phaxio's sent-fax callback (multipart) to the `callback_url` it was given.
async fn phaxio_callback(
    daemon: &TestDaemon,
    callback_url: &str,
    fax: Value,
    signature: Option<String>,
) -> reqwest::Response {
    phaxio_callback_to(&daemon.http, &daemon.url(""), callback_url, fax, signature)
        .await
        .expect("callback")
}

/// [`phaxio_callback`] to the daemon at `base`; `Err` when the daemon does not answer.
async fn phaxio_callback_to(
    http: &reqwest::Client,
    base: &str,
    callback_url: &str,
    fax: Value,
    signature: Option<String>,
) -> reqwest::Result<reqwest::Response> {
    let fax = fax.to_string();
    let success = if fax.contains("\"success\"") {
        "true"
    } else {
        "false"
    };
    let fields = [
        ("success", success),
        ("is_test", "true"),
        ("direction", "sent"),
        ("event_type", "fax_completed"),
        ("fax", fax.as_str()),
    ];
    let signature = signature.unwrap_or_else(|| phaxio_sign(callback_url, &fields, &[]));
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in fields {
        form = form.text(k, v.to_string());
    }
    let path = callback_url
        .strip_prefix(PUBLIC)
        .expect("callback on public_url");
    http.post(format!("{base}{path}"))
        .header("X-Phaxio-Signature", signature)
        .multipart(form)
        .send()
        .await
}

async fn telnyx_callback(
    daemon: &TestDaemon,
    key: &PKey<Private>,
    callback_url: &str,
    event: &str,
    payload: Value,
) -> reqwest::Response {
    let body = json!({"data": {
        "event_type": event, "id": ulid::Ulid::new().to_string(), "occurred_at": "2026-11-28T04:00:00Z",
        "record_type": "event", "payload": payload,
    }})
    .to_string();
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let path = callback_url
        .strip_prefix(PUBLIC)
        .expect("callback on public_url");
    daemon
        .http
        .post(daemon.url(path))
        .header("content-type", "application/json")
        .header(
            "telnyx-signature-ed25519",
            telnyx_sign(key, &timestamp, &body),
        )
        .header("telnyx-timestamp", timestamp)
        .body(body)
        .send()
        .await
        .expect("webhook")
}

// ----------------------------------------------------------------------------- scenarios

/// Phaxio: a message with text and a 100-page PDF goes out as two `file[]` parts — a cover
/// page (who to whom, 101 pages, the notice, no text: the organization does not allow it) and
/// the PDF byte for byte; callbacks move it to `delivered` with the provider's page count; a
/// forged callback is refused and changes nothing.
async fn phaxio_send_and_callbacks(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FaxProvider::start().await;
    let config = fax_config(
        &db,
        "phaxio",
        phaxio_connector(&db, &provider.base()),
        false,
    );
    let mut daemon = TestDaemon::start(config).await;
    let records = pdf(100);
    let message = send_fax(
        &daemon,
        fax_message(json!([attachment(
            "records.pdf",
            "application/pdf",
            &records
        )])),
    )
    .await;
    let sent = wait_sends(&provider, 1).await.remove(0);
    assert_eq!(sent.fields["to"], FAX_TO);
    assert_eq!(sent.fields["caller_id"], FROM);
    let callback_url = sent.fields["callback_url"].clone();
    assert!(
        callback_url.starts_with(&format!("{PUBLIC}/hooks/phaxio/status?delivery=")),
        "{callback_url}"
    );
    assert_eq!(sent.files.len(), 2, "cover page + the PDF");
    let (part, filename, content_type, cover) = &sent.files[0];
    assert_eq!(
        (part.as_str(), filename.as_str(), content_type.as_str()),
        ("file[]", "cover.pdf", "application/pdf")
    );
    let text = pdf_text(cover, db.dir.path());
    assert!(text.contains("FAX"), "{text}");
    assert!(text.contains("North Clinic"), "{text}");
    assert!(text.contains(FAX_TO), "{text}");
    assert!(text.contains("101 including this cover page"), "{text}");
    assert!(text.contains("CONFIDENTIALITY NOTICE"), "{text}");
    assert!(
        !text.contains("cardiology"),
        "the text stays off the page: {text}"
    );
    assert_eq!(pdf_page_count(cover, db.dir.path()), 1);
    let (part, filename, _, document) = &sent.files[1];
    assert_eq!(
        (part.as_str(), filename.as_str()),
        ("file[]", "records.pdf")
    );
    assert_eq!(document, &records, "the 100-page PDF arrives byte for byte");
    assert_eq!(pdf_page_count(document, db.dir.path()), 100);
    assert!(pdf_text(document, db.dir.path()).contains("Record page 100 of 100"));

    let deliveries = wait_deliveries(&daemon, &message, |d| d[0]["status"] == "sent").await;
    let delivery_id = deliveries[0]["id"].as_str().unwrap().to_string();
    assert_eq!(deliveries[0]["provider_ref"], "1");
    let fax = json!({"id": 1, "direction": "sent", "num_pages": 101, "status": "inprogress"});
    let response = phaxio_callback(&daemon, &callback_url, fax, None).await;
    assert!(response.status().is_success(), "{}", response.status());

    // Forged: a signature over another body. 403, and the delivery does not move.
    let done = json!({"id": 1, "direction": "sent", "num_pages": 101, "status": "success"});
    let forged = phaxio_sign(&callback_url, &[("fax", "{}")], &[]);
    let response = phaxio_callback(&daemon, &callback_url, done.clone(), Some(forged)).await;
    assert_eq!(response.status(), 403);
    let wrong_url = phaxio_sign(
        "https://elsewhere.example/hooks/phaxio/status",
        &[("fax", &done.to_string())],
        &[],
    );
    let response = phaxio_callback(&daemon, &callback_url, done.clone(), Some(wrong_url)).await;
    assert_eq!(response.status(), 403);
    let view = daemon.get_json(&format!("/v1/messages/{message}")).await;
    assert_eq!(view["deliveries"][0]["status"], "sent");

    let response = phaxio_callback(&daemon, &callback_url, done, None).await;
    assert!(response.status().is_success(), "{}", response.status());
    let deliveries = wait_deliveries(&daemon, &message, |d| d[0]["status"] == "delivered").await;
    // The record shows the pages handed over and the pages the provider transmitted.
    assert_eq!(
        deliveries[0]["fax"],
        json!({"pages_submitted": 101, "pages_sent": 101, "provider_status": "success"}),
        "{deliveries:#?}"
    );
    let records = daemon
        .core
        .store
        .faxes()
        .records_of_delivery(&delivery_id)
        .await
        .expect("fax records");
    assert_eq!(records.len(), 1, "{records:#?}");
    let record = &records[0];
    assert_eq!(
        (
            record.provider.as_str(),
            record.direction.as_str(),
            record.provider_id.as_str()
        ),
        ("phaxio", "outbound", "1")
    );
    assert_eq!(record.pages, Some(101));
    assert_eq!(record.pages_submitted, Some(101));
    assert_eq!(record.provider_status.as_deref(), Some("success"));
    // The disclosure is audited like every channel's.
    let audit = daemon
        .core
        .store
        .audit()
        .entries(&daemon.organization_id, 100)
        .await
        .expect("audit");
    assert!(
        audit.iter().any(|a| a.action == "disclosure"
            && a.delivery_id.as_deref() == Some(delivery_id.as_str())
            && a.channel.as_deref() == Some("fax")),
        "{audit:#?}"
    );
    daemon.stop().await;
}
both_databases!(phaxio_send, crate::phaxio_send_and_callbacks);

/// Busy is transient: the failed delivery is retried as a new one after backoff; a permanent
/// failure (bad number) ends it with the provider's reason; a fax with no final callback is
/// reconciled by looking it up.
async fn phaxio_busy_retried_then_permanent(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FaxProvider::start().await;
    let mut config = fax_config(&db, "phaxio", phaxio_connector(&db, &provider.base()), true);
    if let Some(ConnectorConfig::Http(http)) = config.connectors.get_mut("phaxio") {
        http.reconcile_after_secs = 1;
    }
    let mut daemon = TestDaemon::start(config).await;
    let message = send_fax(&daemon, fax_message(json!([]))).await;
    let first = wait_sends(&provider, 1).await.remove(0);
    assert_eq!(first.files.len(), 1, "the cover page alone");
    let text = pdf_text(&first.files[0].3, db.dir.path());
    assert!(
        text.contains("cardiology consult"),
        "allowed for this purpose: {text}"
    );
    wait_deliveries(&daemon, &message, |d| d[0]["status"] == "sent").await;
    let busy = json!({"id": 1, "direction": "sent", "num_pages": 0, "status": "failure",
        "error_type": "lineError", "error_id": 32, "error_message": "Busy"});
    let response = phaxio_callback(&daemon, &first.fields["callback_url"], busy, None).await;
    assert!(response.status().is_success());
    let deliveries = wait_deliveries(&daemon, &message, |d| {
        d.len() == 2 && d[0]["status"] == "failed" && d[1]["status"] == "sent"
    })
    .await;
    assert!(
        deliveries[0]["reason"]
            .as_str()
            .unwrap()
            .contains("failure, code 32: Busy"),
        "{deliveries:#?}"
    );
    let second = wait_sends(&provider, 2).await.remove(1);
    assert_eq!(second.fields["to"], FAX_TO, "the same fax again");
    assert_ne!(second.fields["callback_url"], first.fields["callback_url"]);
    let retry_id = deliveries[1]["id"].as_str().unwrap().to_string();
    assert_eq!(
        daemon
            .core
            .store
            .deliveries()
            .retry_of(deliveries[0]["id"].as_str().unwrap())
            .await
            .unwrap()
            .as_deref(),
        Some(retry_id.as_str())
    );

    let invalid = json!({"id": 2, "direction": "sent", "num_pages": 0, "status": "failure",
        "error_type": "faxError", "error_id": 41, "error_message": "Invalid number"});
    let response = phaxio_callback(&daemon, &second.fields["callback_url"], invalid, None).await;
    assert!(response.status().is_success());
    let deliveries = wait_deliveries(&daemon, &message, |d| d[1]["status"] == "failed").await;
    assert_eq!(deliveries.len(), 2, "a permanent failure is not retried");
    assert!(
        deliveries[1]["reason"]
            .as_str()
            .unwrap()
            .contains("Invalid number"),
        "{deliveries:#?}"
    );
    assert_eq!(
        daemon
            .core
            .store
            .deliveries()
            .retry_of(&retry_id)
            .await
            .unwrap(),
        None,
        "no retry of a permanent failure"
    );

    // A third fax, and no callback ever: a reconciliation pass asks Phaxio.
    let message = send_fax(&daemon, fax_message(json!([]))).await;
    wait_deliveries(&daemon, &message, |d| d[0]["status"] == "sent").await;
    provider.set_lookup_status("success");
    let templates = daemon.core.templates().expect("templates");
    let connectors = daemon.core.connectors(&templates).expect("connectors");
    common::wait::wait_until("a reconciliation pass that moves", WAIT, async || {
        let moved = switchboard::queue::reconcile::reconcile_once(
            &daemon.core.store,
            &connectors,
            &daemon.core.config,
        )
        .await
        .unwrap();
        (moved > 0).then_some(moved)
    })
    .await;
    assert!(provider.lookups() > 0);
    let deliveries = wait_deliveries(&daemon, &message, |d| d[0]["status"] == "delivered").await;
    let records = daemon
        .core
        .store
        .faxes()
        .records_of_delivery(deliveries[0]["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(records[0].pages, Some(3), "pages from the lookup");
    daemon.stop().await;
}
both_databases!(phaxio_busy, crate::phaxio_busy_retried_then_permanent);

/// A busy report queues its retry in the transaction that records the failure: a daemon
/// killed (`kill -9`) right after recording it, before answering Phaxio, still sends the fax
/// again once restarted, and Phaxio's redelivery of the unanswered callback adds no second
/// retry.
async fn phaxio_busy_kill9_keeps_the_retry(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FaxProvider::start().await;
    let config = fax_config(&db, "phaxio", phaxio_connector(&db, &provider.base()), true);
    let daemon = TestDaemon::start(config.clone()).await;
    let message = send_fax(&daemon, fax_message(json!([]))).await;
    let first = wait_sends(&provider, 1).await.remove(0);
    wait_deliveries(&daemon, &message, |d| d[0]["status"] == "sent").await;
    let key = daemon.key.clone();
    let mut daemon = daemon;
    daemon.stop().await;
    daemon.core.store.close().await;

    let path = db.dir.path().join("switchboard.toml");
    std::fs::write(&path, toml::to_string(&config).expect("toml")).expect("config");
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .args(["run", "--config"])
        .arg(&path)
        .env("SB_TEST_KILL_AT", "report-applied");
    let log = db.dir.path().join("daemon.log");
    let mut killed = Spawned::start_command(command, &log, "info").await;
    let busy = json!({"id": 1, "direction": "sent", "num_pages": 0, "status": "failure",
        "error_type": "lineError", "error_id": 32, "error_message": "Busy"});
    let http = reqwest::Client::new();
    let answer = phaxio_callback_to(
        &http,
        &killed.base(),
        &first.fields["callback_url"],
        busy.clone(),
        None,
    )
    .await;
    assert!(answer.is_err(), "killed before answering: {answer:?}");
    common::wait::wait_until("the daemon to kill itself", WAIT, async || {
        killed.exited().map(|_| ())
    })
    .await;

    let daemon = Spawned::start(&path, &db.dir.path().join("daemon2.log"), "info").await;
    daemon
        .wait_for("the fax sent again", WAIT, async || {
            provider.sends().len() >= 2
        })
        .await;
    let sends = provider.sends();
    assert_eq!(sends[1].fields["to"], FAX_TO, "the same fax again");
    // Phaxio redelivers the callback it got no answer to: recorded, no second retry.
    let answer = phaxio_callback_to(
        &http,
        &daemon.base(),
        &first.fields["callback_url"],
        busy,
        None,
    )
    .await
    .expect("answered");
    assert!(answer.status().is_success(), "{}", answer.status());
    let view: Value = http
        .get(format!("{}/v1/messages/{message}", daemon.base()))
        .bearer_auth(&key)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    let deliveries = view["deliveries"].as_array().cloned().unwrap_or_default();
    assert_eq!(deliveries.len(), 2, "one retry: {deliveries:#?}");
    assert_eq!(deliveries[0]["status"], "failed", "{deliveries:#?}");
    let store = switchboard::store::Store::connect(&db.url, 2, false)
        .await
        .expect("store");
    let retry = store
        .deliveries()
        .retry_of(deliveries[0]["id"].as_str().expect("id"))
        .await
        .expect("retry_of");
    store.close().await;
    assert_eq!(retry.as_deref(), deliveries[1]["id"].as_str());
    assert_eq!(provider.sends().len(), 2, "sent twice in all");
}
both_databases!(phaxio_busy_kill9, crate::phaxio_busy_kill9_keeps_the_retry);

/// Telnyx: the fax is one PDF (cover page + the attachment, merged) served at a media URL
/// that works once; an unused URL stops working when it expires; signed callbacks move the
/// delivery (`fax.delivered` with its page count; `fax.failed` busy → retried).
async fn telnyx_media_url(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FaxProvider::start().await;
    let key = PKey::generate_ed25519().expect("key");
    let connector = telnyx_fax_connector(&db, &format!("{}/v2", provider.base()), &key, 600);
    let mut daemon = TestDaemon::start(fax_config(&db, "telnyx_fax", connector, false)).await;
    let message = send_fax(
        &daemon,
        fax_message(json!([attachment("lab.pdf", "application/pdf", &pdf(3))])),
    )
    .await;
    let sent = wait_sends(&provider, 1).await.remove(0);
    assert_eq!(sent.json["connection_id"], "234423");
    assert_eq!(sent.json["from"], FROM);
    assert_eq!(sent.json["to"], FAX_TO);
    let media_url = sent.json["media_url"]
        .as_str()
        .expect("media_url")
        .to_string();
    let callback_url = sent.json["webhook_url"]
        .as_str()
        .expect("webhook_url")
        .to_string();
    let path = media_url
        .strip_prefix(&format!("{PUBLIC}/media/"))
        .unwrap_or_else(|| panic!("served under public_url: {media_url}"));
    assert!(path.len() >= 43, "a 256-bit token: {path}");
    let fetch = |url: String| {
        let http = daemon.http.clone();
        async move { http.get(url).send().await.expect("fetch media") }
    };
    let local = daemon.url(&format!("/media/{path}"));
    let first = fetch(local.clone()).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "application/pdf");
    let document = first.bytes().await.unwrap();
    assert_eq!(
        pdf_page_count(&document, db.dir.path()),
        4,
        "cover + 3 pages"
    );
    let text = pdf_text(&document, db.dir.path());
    assert!(
        text.contains("4 including this cover page") && text.contains("Record page 3 of 3"),
        "{text}"
    );
    assert!(!text.contains("cardiology"), "{text}");
    let again = fetch(local).await;
    assert_eq!(again.status(), 404, "once per token");
    let unknown = fetch(daemon.url("/media/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")).await;
    assert_eq!(unknown.status(), 404);

    let deliveries = wait_deliveries(&daemon, &message, |d| d[0]["status"] == "sent").await;
    let fax_id = deliveries[0]["provider_ref"].as_str().unwrap().to_string();
    for (event, status) in [
        ("fax.queued", "queued"),
        ("fax.media.processed", "media.processed"),
        ("fax.sending.started", "sending"),
    ] {
        let response = telnyx_callback(&daemon, &key, &callback_url, event,
            json!({"fax_id": fax_id, "status": status, "direction": "outbound", "connection_id": "234423"})).await;
        assert!(response.status().is_success(), "{event}");
    }
    let response = telnyx_callback(
        &daemon,
        &key,
        &callback_url,
        "fax.delivered",
        json!({"fax_id": fax_id, "status": "delivered", "page_count": 4, "direction": "outbound",
               "connection_id": "234423", "call_duration_secs": 25}),
    )
    .await;
    assert!(response.status().is_success());
    let deliveries = wait_deliveries(&daemon, &message, |d| d[0]["status"] == "delivered").await;
    let records = daemon
        .core
        .store
        .faxes()
        .records_of_delivery(deliveries[0]["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(records[0].pages, Some(4));
    assert_eq!(records[0].pages_submitted, Some(4));

    // Busy at Telnyx: retried as a new delivery, which serves a new document.
    let message = send_fax(&daemon, fax_message(json!([]))).await;
    let sent = wait_sends(&provider, 2).await.remove(1);
    let deliveries = wait_deliveries(&daemon, &message, |d| d[0]["status"] == "sent").await;
    let response = telnyx_callback(
        &daemon,
        &key,
        sent.json["webhook_url"].as_str().unwrap(),
        "fax.failed",
        json!({"fax_id": deliveries[0]["provider_ref"], "status": "failed",
            "failure_reason": "user_busy", "direction": "outbound"}),
    )
    .await;
    assert!(response.status().is_success());
    let retried = wait_sends(&provider, 3).await.remove(2);
    assert_ne!(retried.json["media_url"], sent.json["media_url"]);
    let deliveries = wait_deliveries(&daemon, &message, |d| d.len() == 2).await;
    assert_eq!(deliveries[0]["status"], "failed");
    assert!(
        deliveries[0]["reason"]
            .as_str()
            .unwrap()
            .contains("user_busy"),
        "{deliveries:#?}"
    );
    daemon.stop().await;
}
both_databases!(telnyx_media, crate::telnyx_media_url);

/// Telnyx with the document uploaded (`telnyx_fax_upload`): one `multipart/form-data` send
/// whose fields pass the published `SendFaxMultipartRequest` schema, the whole fax (cover page
/// and attachment) merged into the one PDF part `contents`, no media URL served; callbacks as
/// for `telnyx_fax`. A TIFF cannot be merged and a fax over the provider's size limit (here a
/// manifest extending `telnyx_fax_upload` with a 1,200-byte limit) fails permanently, with
/// nothing sent.
async fn telnyx_upload(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FaxProvider::start().await;
    let key = PKey::generate_ed25519().expect("key");
    let base = format!("{}/v2", provider.base());
    let connector = telnyx_connector_with("telnyx_fax_upload", &db, &base, &key, 600);
    let mut daemon = TestDaemon::start(fax_config(&db, "telnyx_fax", connector, false)).await;
    let message = send_fax(
        &daemon,
        fax_message(json!([attachment("lab.pdf", "application/pdf", &pdf(3))])),
    )
    .await;
    let sent = wait_sends(&provider, 1).await.remove(0);
    assert_eq!(sent.fields["connection_id"], "234423");
    assert_eq!(sent.fields["from"], FROM);
    assert_eq!(sent.fields["to"], FAX_TO);
    assert!(!sent.fields.contains_key("media_url"), "{:?}", sent.fields);
    assert_eq!(sent.files.len(), 1, "one document part");
    let (part, _, content_type, document) = &sent.files[0];
    assert_eq!(
        (part.as_str(), content_type.as_str()),
        ("contents", "application/pdf")
    );
    assert_eq!(
        pdf_page_count(document, db.dir.path()),
        4,
        "cover + 3 pages"
    );
    let text = pdf_text(document, db.dir.path());
    assert!(
        text.contains("4 including this cover page") && text.contains("Record page 3 of 3"),
        "{text}"
    );
    assert!(!text.contains("cardiology"), "{text}");
    let served: (i64,) = switchboard::store::on_db!(daemon.core.store.db(), |pool| {
        sqlx::query_as("SELECT COUNT(*) FROM fax_media")
            .fetch_one(pool)
            .await
    })
    .expect("count");
    assert_eq!(served.0, 0, "nothing served for Telnyx to fetch");
    let deliveries = wait_deliveries(&daemon, &message, |d| d[0]["status"] == "sent").await;
    let response = telnyx_callback(
        &daemon,
        &key,
        sent.fields["webhook_url"].as_str(),
        "fax.delivered",
        json!({"fax_id": deliveries[0]["provider_ref"], "status": "delivered", "page_count": 4,
               "direction": "outbound", "connection_id": "234423"}),
    )
    .await;
    assert!(response.status().is_success());
    wait_deliveries(&daemon, &message, |d| d[0]["status"] == "delivered").await;

    let tiff = b"II*\0\x08\0\0\0\0\0\0\0\0\0";
    let reason = failed_fax(&daemon, attachment("scan.tif", "image/tiff", tiff)).await;
    assert!(
        reason.contains("takes one PDF") && reason.contains("image/tiff"),
        "{reason}"
    );
    daemon.stop().await;

    let small = db.dir.path().join("telnyx-small.toml");
    std::fs::write(
        &small,
        "extends = \"telnyx_fax_upload\"\nname = \"telnyx_small\"\n[send]\nmax_document_bytes = 1200\n",
    )
    .unwrap();
    let connector = telnyx_connector_with(small.to_str().unwrap(), &db, &base, &key, 600);
    let mut daemon = TestDaemon::start(fax_config(&db, "telnyx_fax", connector, false)).await;
    let reason = failed_fax(&daemon, attachment("lab.pdf", "application/pdf", &pdf(3))).await;
    assert!(reason.contains("at most 1200"), "{reason}");
    assert_eq!(
        provider.sends().len(),
        1,
        "neither the TIFF nor the large fax was sent"
    );
    daemon.stop().await;
}
both_databases!(telnyx_uploaded, crate::telnyx_upload);

/// A served document nobody fetched stops working when its URL expires.
async fn media_url_expires(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FaxProvider::start().await;
    let key = PKey::generate_ed25519().expect("key");
    let connector = telnyx_fax_connector(&db, &format!("{}/v2", provider.base()), &key, 1);
    let mut daemon = TestDaemon::start(fax_config(&db, "telnyx_fax", connector, false)).await;
    send_fax(&daemon, fax_message(json!([]))).await;
    let sent = wait_sends(&provider, 1).await.remove(0);
    let media_url = sent.json["media_url"].as_str().unwrap();
    let local = daemon.url(media_url.strip_prefix(PUBLIC).unwrap());
    // The URL's lifetime (1 s) has passed once the clock is past the stored expiry.
    let expires_at: i64 = {
        let (at,): (i64,) = switchboard::store::on_db!(daemon.core.store.db(), |pool| {
            sqlx::query_as("SELECT expires_at FROM fax_media")
                .fetch_one(pool)
                .await
        })
        .expect("served document");
        at
    };
    let now = switchboard::store::now_ms();
    assert!(expires_at - now <= 1_000, "expires in its ttl");
    tokio::time::sleep(Duration::from_millis((expires_at - now + 50).max(0) as u64)).await;
    let late = daemon.http.get(local).send().await.unwrap();
    assert_eq!(late.status(), 404, "expired");
    daemon.stop().await;
}
both_databases!(media_expiry, crate::media_url_expires);

/// A fax about a Part 2 record, without the patient's Part 2 consent: refused before any
/// provider is called, the refusal audited; a TIFF goes to Phaxio as a file part; a PNG is
/// refused by type (a permanent failure), never dropped silently.
async fn part2_refused_and_types(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FaxProvider::start().await;
    let config = fax_config(
        &db,
        "phaxio",
        phaxio_connector(&db, &provider.base()),
        false,
    );
    let mut daemon = TestDaemon::start(config).await;
    let response = daemon
        .http
        .put(daemon.url("/v1/patients/p2"))
        .bearer_auth(&daemon.key)
        .json(&json!({"family_name": "Doe", "given_name": "Jo",
            "contact_points": [{"system": "fax", "value": FAX_TO}]}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let message = send_fax(
        &daemon,
        json!({"patient": "p2", "part2": true, "body": "SUD treatment summary",
            "recipients": [{"address": FAX_TO, "channel": "fax"}]}),
    )
    .await;
    let view = daemon.wait_terminal(&message, WAIT).await;
    assert_eq!(view["deliveries"][0]["status"], "failed");
    assert_eq!(view["deliveries"][0]["reason"], "part2_consent_required");
    let audit = daemon
        .core
        .store
        .audit()
        .entries(&daemon.organization_id, 100)
        .await
        .unwrap();
    assert!(
        audit.iter().any(|a| a.action == "disclosure_refused"
            && a.message_id.as_deref() == Some(message.as_str())
            && a.detail.as_deref() == Some("part2_consent_required")),
        "{audit:#?}"
    );

    // A two-page TIFF (two image directories) travels as it is.
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&0u16.to_le_bytes());
    tiff.extend_from_slice(&14u32.to_le_bytes());
    tiff.extend_from_slice(&0u16.to_le_bytes());
    tiff.extend_from_slice(&0u32.to_le_bytes());
    let message = send_fax(
        &daemon,
        fax_message(json!([attachment("scan.tif", "image/tiff", &tiff)])),
    )
    .await;
    let sent = wait_sends(&provider, 1).await.remove(0);
    assert_eq!(sent.files.len(), 2);
    assert_eq!(sent.files[1].2, "image/tiff");
    assert_eq!(sent.files[1].3, tiff);
    assert!(pdf_text(&sent.files[0].3, db.dir.path()).contains("3 including this cover page"));
    wait_deliveries(&daemon, &message, |d| d[0]["status"] == "sent").await;

    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";
    let reason = failed_fax(&daemon, attachment("photo.png", "image/png", png)).await;
    assert!(
        reason.contains("PDF and TIFF") && reason.contains("image/png"),
        "{reason}"
    );
    assert_eq!(
        provider.sends().len(),
        1,
        "nothing of the Part 2 or PNG fax was sent"
    );
    daemon.stop().await;
}
both_databases!(part2_and_types, crate::part2_refused_and_types);

// --------------------------------------------------- contract: Telnyx's OpenAPI via Prism

/// Our `POST /faxes` (JSON, `media_url`) passes Prism's validation against Telnyx's published
/// OpenAPI document; a manifest that breaks the contract (no `connection_id`) is refused with
/// 422, a permanent failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telnyx_fax_requests_pass_the_published_contract() {
    let (_prism, base) = common::prism::start("telnyx_api_v2.json").await;
    let key = PKey::generate_ed25519().expect("key");
    let db = TestDb::new(Backend::Sqlite).await;
    let connector = telnyx_fax_connector(&db, &base, &key, 600);
    let mut daemon = TestDaemon::start(fax_config(&db, "telnyx_fax", connector, false)).await;
    let message = send_fax(
        &daemon,
        fax_message(json!([attachment("lab.pdf", "application/pdf", &pdf(2))])),
    )
    .await;
    let deliveries = wait_deliveries(&daemon, &message, |d| {
        d[0]["status"] != "queued" && d[0]["status"] != "sending"
    })
    .await;
    assert_eq!(
        deliveries[0]["status"], "sent",
        "Prism accepted the request: {deliveries:#?}"
    );
    assert_eq!(
        deliveries[0]["provider_ref"],
        "0ccc7b54-4df3-4bca-a65a-3da1ecc777f0"
    );
    daemon.stop().await;

    let broken = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/connectors/telnyx_fax.toml"
    ))
    .unwrap()
    .replace(
        "connection_id = \"{{ params.connection_id }}\"",
        "connection = \"{{ params.connection_id }}\"",
    );
    let path = db.dir.path().join("broken-telnyx-fax.toml");
    std::fs::write(&path, broken).unwrap();
    let db2 = TestDb::new(Backend::Sqlite).await;
    let mut connector = telnyx_fax_connector(&db2, &base, &key, 600);
    if let ConnectorConfig::Http(http) = &mut connector {
        http.manifest = path.to_string_lossy().into_owned();
    }
    let mut daemon = TestDaemon::start(fax_config(&db2, "telnyx_fax", connector, false)).await;
    let message = send_fax(&daemon, fax_message(json!([]))).await;
    let deliveries = wait_deliveries(&daemon, &message, |d| d[0]["status"] == "failed").await;
    assert!(
        deliveries[0]["reason"]
            .as_str()
            .unwrap()
            .contains("HTTP 422"),
        "{deliveries:#?}"
    );
    daemon.stop().await;
}
