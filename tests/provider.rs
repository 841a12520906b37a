//! A loopback SMS provider that answers the way the provider's published API does (Twilio's
//! Messages resource: 201 with the message resource, errors as `{code, message, status}`;
//! Telnyx v2: `{data: {...}}` / `{errors: [...]}`). Tests script its answers (status codes,
//! delays) and read back every request it received.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;

#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: String,
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

    /// What message lookups (GET) report.
    pub fn set_lookup_status(&self, status: &str) {
        self.inner.lock().unwrap().lookup_status = Some(status.to_string());
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
    };
    let (answer, sid, lookup) = {
        let mut inner = provider.inner.lock().unwrap();
        inner.received.push(received.clone());
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
