//! A loopback SMS provider that answers the way the provider's published API does (Twilio's
//! Messages resource: 201 with the message resource, errors as `{code, message, status}`;
//! Telnyx v2: `{data: {...}}` / `{errors: [...]}`). Tests script its answers (status codes,
//! delays) and read back every request it received.
//!
//! And the provider's side of the daemon's webhooks: Twilio's `X-Twilio-Signature` and
//! Telnyx's Ed25519 signature computed here, independently of the daemon's code, and the
//! connector settings that point the daemon at a loopback provider.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use switchboard::config::{ChannelConfig, ConnectorConfig, HttpConnectorConfig, Secret};

use super::{TestDaemon, TestDb};

#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: String,
    /// When it arrived.
    pub at: Instant,
    /// How the provider was doing when it arrived (`Up`: answered as the API does).
    pub health: Health,
}

impl Received {
    pub fn form(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.body.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

/// A scripted answer: status, body, delay before answering.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
}

/// How the provider is doing: up (scripted answers, else success), or down for every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Health {
    #[default]
    Up,
    /// 503 Service Unavailable, at once.
    Unavailable,
    /// The connection is accepted and the request read, but no answer comes (the client's
    /// timeout ends it).
    Stalled,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Twilio,
    Telnyx,
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    script: VecDeque<Answer>,
    lookup_status: Option<String>,
    counter: u64,
    health: Health,
    /// Where status callbacks go (see [`FakeProvider::report_to`]).
    report_to: Option<(Arc<std::sync::RwLock<Vec<String>>>, Duration)>,
    /// Status callbacks accepted (2xx) so far.
    reported: usize,
    /// Sends (POST) being answered now, and the most there ever were at once.
    in_flight: usize,
    max_in_flight: usize,
}

/// Counts a send in flight from its arrival until it is answered (or the client gave up).
struct InFlight(Arc<Mutex<Inner>>);

impl InFlight {
    fn start(inner: &Arc<Mutex<Inner>>) -> Self {
        let mut i = inner.lock().unwrap();
        i.in_flight += 1;
        i.max_in_flight = i.max_in_flight.max(i.in_flight);
        Self(inner.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut i) = self.0.lock() {
            i.in_flight -= 1;
        }
    }
}

#[derive(Clone)]
pub struct FakeProvider {
    pub addr: SocketAddr,
    flavor: Flavor,
    inner: Arc<Mutex<Inner>>,
}

impl FakeProvider {
    pub async fn start(flavor: Flavor) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let provider = Self {
            addr,
            flavor,
            inner: Arc::default(),
        };
        let app = Router::new().fallback(handle).with_state(provider.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        provider
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers to give, in order, before the default (success).
    pub fn script(&self, answers: Vec<Answer>) {
        self.inner.lock().unwrap().script.extend(answers);
    }

    /// Drops the answers not given yet: from now on, the default (success).
    pub fn clear_script(&self) {
        self.inner.lock().unwrap().script.clear();
    }

    /// The most sends (POST) it was answering at once.
    pub fn max_in_flight(&self) -> usize {
        self.inner.lock().unwrap().max_in_flight
    }

    /// What message lookups (GET) report.
    pub fn set_lookup_status(&self, status: &str) {
        self.inner.lock().unwrap().lookup_status = Some(status.to_string());
    }

    /// Up, answering 503, or stalling (see [`Health`]).
    pub fn set_health(&self, health: Health) {
        self.inner.lock().unwrap().health = health;
    }

    /// Posts a signed `sent` status callback for every message it takes (Twilio flavour), as
    /// Twilio does, to the message's `StatusCallback` URL with its scheme and host replaced by
    /// one of `bases` (the daemons alive, as a load balancer in front of a fleet would),
    /// trying the next one until one accepts it; `delay` after taking the message.
    pub fn report_to(&self, bases: Arc<std::sync::RwLock<Vec<String>>>, delay: Duration) {
        self.inner.lock().unwrap().report_to = Some((bases, delay));
    }

    /// Status callbacks a daemon accepted.
    pub fn reported(&self) -> usize {
        self.inner.lock().unwrap().reported
    }

    /// How many requests it has received (cheaper than [`FakeProvider::received`]).
    pub fn request_count(&self) -> usize {
        self.inner.lock().unwrap().received.len()
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    pub fn sends(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect()
    }

    pub fn twilio_error(status: u16, code: u32, message: &str) -> Answer {
        Answer {
            status,
            body: serde_json::json!({
                "code": code, "message": message,
                "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status,
            })
            .to_string(),
            delay: Duration::ZERO,
        }
    }
}

async fn handle(
    State(provider): State<FakeProvider>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let received = Received {
        method: method.to_string(),
        path: uri.path().to_string(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
        health: Health::Up,
    };
    let _in_flight = (method == Method::POST).then(|| InFlight::start(&provider.inner));
    let health = {
        let mut inner = provider.inner.lock().unwrap();
        let health = inner.health;
        inner.received.push(Received {
            health,
            ..received.clone()
        });
        health
    };
    match health {
        Health::Up => {}
        Health::Unavailable => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [("content-type", "application/json")],
                r#"{"code":20503,"message":"Service unavailable","status":503}"#.to_string(),
            );
        }
        Health::Stalled => std::future::pending::<()>().await,
    }
    let (answer, sid, lookup, report_to) = {
        let mut inner = provider.inner.lock().unwrap();
        inner.counter += 1;
        let answer = if method == Method::POST {
            inner.script.pop_front()
        } else {
            None
        };
        (
            answer,
            format!("SM{:032x}", inner.counter),
            inner.lookup_status.clone().unwrap_or("sent".into()),
            inner.report_to.clone(),
        )
    };
    if let Some(answer) = answer {
        tokio::time::sleep(answer.delay).await;
        let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
        return (status, [("content-type", "application/json")], answer.body);
    }
    let body = match (provider.flavor, method == Method::GET) {
        (Flavor::Twilio, false) => serde_json::json!({
            "sid": sid, "status": "queued", "to": received.form("To"), "from": received.form("From"),
            "body": received.form("Body"), "num_segments": "1", "direction": "outbound-api",
            "api_version": "2010-04-01", "error_code": null, "error_message": null,
        }),
        (Flavor::Twilio, true) => serde_json::json!({
            "sid": uri.path().rsplit('/').next().unwrap_or("").trim_end_matches(".json"),
            "status": lookup, "error_code": null,
        }),
        (Flavor::Telnyx, false) => serde_json::json!({"data": {
            "id": format!("40317{sid}"), "record_type": "message", "direction": "outbound",
            "to": [{"phone_number": received.json()["to"], "status": "queued"}],
            "text": received.json()["text"], "type": "SMS",
        }}),
        (Flavor::Telnyx, true) => serde_json::json!({"data": {
            "id": uri.path().rsplit('/').next().unwrap_or(""), "to": [{"status": lookup}],
        }}),
    };
    if let (Some((bases, delay)), Some(callback), true) = (
        report_to,
        received.form("StatusCallback"),
        method == Method::POST && provider.flavor == Flavor::Twilio,
    ) {
        let (provider, sid) = (provider.clone(), sid.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            report(provider, bases, callback, sid).await
        });
    }
    let status = if method == Method::POST && provider.flavor == Flavor::Twilio {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
}

/// A `sent` status callback for message `sid`, signed over `callback`, posted to one of
/// `bases` after another until one accepts it (for up to two minutes).
async fn report(
    provider: FakeProvider,
    bases: Arc<std::sync::RwLock<Vec<String>>>,
    callback: String,
    sid: String,
) {
    let params = [
        ("MessageSid", sid.as_str()),
        ("MessageStatus", "sent"),
        ("AccountSid", TWILIO_ACCOUNT),
    ];
    let signature = twilio_sign(&callback, &params);
    let Some(path) = callback
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
    else {
        return;
    };
    // One client for every callback (building one per callback costs more than the call).
    static HTTP: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let http = HTTP.get_or_init(reqwest::Client::new);
    let started = std::time::Instant::now();
    for turn in 0.. {
        let base = {
            let bases = bases.read().unwrap_or_else(|e| e.into_inner());
            bases
                .get(turn % bases.len().max(1))
                .cloned()
                .unwrap_or_default()
        };
        let sent = http
            .post(format!("{base}{path}"))
            .header("X-Twilio-Signature", &signature)
            .form(&params)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if sent.is_ok_and(|r| r.status().is_success()) {
            provider.inner.lock().unwrap().reported += 1;
            return;
        }
        if started.elapsed() > Duration::from_secs(120) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ------------------------------------------------------------------- the daemon's connectors

/// The Twilio account the loopback provider is configured with.
pub const TWILIO_ACCOUNT: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
/// Its auth token: what signs its webhooks.
pub const TWILIO_TOKEN: &str = "twilio-test-auth-token";

/// A secret in a file of the test's folder.
pub fn secret_file(db: &TestDb, name: &str, value: &str) -> Secret {
    let path = db.dir.path().join(name);
    std::fs::write(&path, value).expect("secret");
    Secret {
        file: Some(path),
        credential: None,
    }
}

/// A Twilio connector (manifest `twilio`) on `base_url`, sending from `from`, owned by
/// `organization` (or shared).
pub fn twilio_connector(
    db: &TestDb,
    base_url: &str,
    from: &str,
    organization: Option<&str>,
    timeout_secs: u64,
) -> ConnectorConfig {
    ConnectorConfig::Http(HttpConnectorConfig {
        manifest: "twilio".into(),
        base_url: Some(base_url.to_string()),
        params: BTreeMap::from([
            ("account_sid".into(), TWILIO_ACCOUNT.into()),
            ("from".into(), from.into()),
        ]),
        credentials: BTreeMap::from([(
            "auth_token".into(),
            secret_file(db, "twilio-token", TWILIO_TOKEN),
        )]),
        public_url: None,
        organization: organization.map(String::from),
        rate_per_sec: 0.0,
        timeout_secs,
        reconcile_after_secs: 0,
        media_ttl_secs: 600,
    })
}

/// A Telnyx connector (manifest `telnyx`) on `base_url`, sending from `from` for
/// `organization`; its webhooks are signed by `key`.
pub fn telnyx_connector(
    db: &TestDb,
    base_url: &str,
    from: &str,
    organization: &str,
    key: &PKey<Private>,
) -> ConnectorConfig {
    ConnectorConfig::Http(HttpConnectorConfig {
        manifest: "telnyx".into(),
        base_url: Some(base_url.to_string()),
        params: BTreeMap::from([("from".into(), from.into())]),
        credentials: BTreeMap::from([
            ("api_key".into(), secret_file(db, "telnyx-key", "KEYtelnyx")),
            (
                "public_key".into(),
                secret_file(
                    db,
                    "telnyx-pub",
                    &B64.encode(key.raw_public_key().expect("public key")),
                ),
            ),
        ]),
        public_url: None,
        organization: Some(organization.into()),
        rate_per_sec: 0.0,
        timeout_secs: 2,
        reconcile_after_secs: 0,
        media_ttl_secs: 600,
    })
}

/// A channel on `connector` retrying quickly (100 ms, at most 1 s apart) up to `max_attempts`.
pub fn quick_retries(connector: &str, max_attempts: u32) -> ChannelConfig {
    ChannelConfig {
        connector: connector.into(),
        max_attempts,
        concurrency: 4,
        backoff_initial_ms: 100,
        backoff_max_secs: 1,
    }
}

// ------------------------------------------------------------------------- signed webhooks

/// X-Twilio-Signature over `url` and the form `params`, with [`TWILIO_TOKEN`].
pub fn twilio_sign(url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted: Vec<_> = params.to_vec();
    sorted.sort();
    let mut data = url.to_string();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let key = PKey::hmac(TWILIO_TOKEN.as_bytes()).expect("hmac key");
    let mut signer = Signer::new(MessageDigest::sha1(), &key).expect("signer");
    signer.update(data.as_bytes()).expect("sign");
    B64.encode(signer.sign_to_vec().expect("signature"))
}

/// A Twilio webhook (form `params`) to `path_and_query` on the daemon, with `signature`.
pub async fn twilio_post(
    daemon: &TestDaemon,
    path_and_query: &str,
    params: &[(&str, &str)],
    signature: Option<String>,
) -> reqwest::Response {
    let mut request = daemon.http.post(daemon.url(path_and_query)).form(params);
    if let Some(signature) = signature {
        request = request.header("X-Twilio-Signature", signature);
    }
    request.send().await.expect("webhook")
}

/// [`twilio_post`] signed as Twilio signs it.
pub async fn signed_twilio_post(
    daemon: &TestDaemon,
    path_and_query: &str,
    params: &[(&str, &str)],
) -> reqwest::Response {
    let signature = twilio_sign(&daemon.url(path_and_query), params);
    twilio_post(daemon, path_and_query, params, Some(signature)).await
}

/// Telnyx's `telnyx-signature-ed25519` over `timestamp|body`.
pub fn telnyx_sign(key: &PKey<Private>, timestamp: &str, body: &str) -> String {
    let mut signed = timestamp.as_bytes().to_vec();
    signed.push(b'|');
    signed.extend_from_slice(body.as_bytes());
    B64.encode(
        Signer::new_without_digest(key)
            .expect("signer")
            .sign_oneshot_to_vec(&signed)
            .expect("sign"),
    )
}

/// A Telnyx status webhook (JSON `body`) with its timestamp and signature headers.
pub async fn telnyx_post(
    daemon: &TestDaemon,
    body: String,
    timestamp: &str,
    signature: String,
) -> reqwest::Response {
    daemon
        .http
        .post(daemon.url("/hooks/telnyx/status"))
        .header("content-type", "application/json")
        .header("telnyx-signature-ed25519", signature)
        .header("telnyx-timestamp", timestamp)
        .body(body)
        .send()
        .await
        .expect("webhook")
}
