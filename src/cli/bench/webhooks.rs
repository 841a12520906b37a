//! `switchboard bench --webhook-events N`: signed webhooks to a loopback receiver. The daemon
//! runs in-process with one endpoint (`message.accepted` only, so one event per message) on an
//! in-process axum receiver that verifies every Standard Webhooks signature before answering
//! 204. N messages are POSTed with the API clients; reported: events/s (first POST to the last
//! verified receipt) and the added latency from the event's time (recorded at accept, in the
//! committing transaction) to its verified receipt, p50/p99.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

use switchboard::config::Config;
use switchboard::daemon::{self, Core};
use switchboard::webhooks::signature;

#[derive(Default)]
struct Received {
    key: OnceLock<Vec<u8>>,
    /// event id → (receipt − event time) ms, first receipt only.
    latencies: Mutex<HashMap<i64, i64>>,
    refused: AtomicUsize,
}

async fn receive(
    State(received): State<Arc<Received>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let at = chrono::Utc::now().timestamp_millis();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let Some(key) = received.key.get() else {
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    let verified = signature::verify(
        std::slice::from_ref(key),
        &header("webhook-id"),
        &header("webhook-timestamp"),
        &header("webhook-signature"),
        &body,
        at / 1000,
    );
    if verified.is_err() {
        received.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let id = payload["data"]["id"].as_i64().unwrap_or_default();
    let event_at = payload["data"]["at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(at, |t| t.timestamp_millis());
    if let Ok(mut latencies) = received.latencies.lock() {
        latencies.entry(id).or_insert(at - event_at);
    }
    StatusCode::NO_CONTENT
}

/// Runs the webhook benchmark on a scratch database at `url`, files under `dir`.
pub async fn bench(
    events: usize,
    concurrency: usize,
    url: &str,
    dir: &std::path::Path,
) -> Result<()> {
    let received = Arc::new(Received::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let receiver_addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(received.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut config = Config::from_toml("")?;
    config.data_dir = dir.to_path_buf();
    config.outbox.dir = dir.join("webhook-outbox");
    config.database.url = Some(url.to_string());
    config.server.listen = "127.0.0.1:0".parse()?;
    config.reminders.enabled = false;
    config.webhooks.allow_hosts = vec!["127.0.0.1".into()];
    let core = Core::open(config.clone()).await?;
    let org = core
        .store
        .organizations()
        .ensure("hooks", "Webhook Bench")
        .await?;
    let token = switchboard::http::new_token()?;
    core.store
        .api_keys()
        .insert(&org.id, "bench", &switchboard::http::hash_token(&token))
        .await?;
    let daemon = daemon::start(config).await?;
    let base = format!("http://{}", daemon.addr);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let endpoint: serde_json::Value = client
        .put(format!("{base}/v1/webhook-endpoints/bench"))
        .bearer_auth(&token)
        .json(&serde_json::json!({
            "url": format!("http://{receiver_addr}/hook"),
            "event_types": ["message.accepted"],
        }))
        .send()
        .await?
        .json()
        .await?;
    let secret = endpoint["secret"].as_str().unwrap_or_default();
    let Some(key) = signature::secret_key(secret) else {
        bail!("no secret in the endpoint's answer: {endpoint}");
    };
    let _ = received.key.set(key);

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, base, token, next) =
            (client.clone(), base.clone(), token.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= events {
                    return Ok::<(), anyhow::Error>(());
                }
                let response = client
                    .post(format!("{base}/v1/messages"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({
                        "body": format!("Webhook benchmark {i}"),
                        "recipients": [{"address": format!("+1415555{:04}", i % 10_000), "channel": "sms"}],
                    }))
                    .send()
                    .await?;
                if response.status() != reqwest::StatusCode::CREATED {
                    bail!("POST answered {}", response.status());
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let n = received.latencies.lock().map_or(0, |l| l.len());
        if n >= events {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {n} of {events} webhooks received after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    daemon.shutdown();
    daemon.wait().await?;
    server.abort();
    core.store.close().await;

    let mut latencies: Vec<i64> = received
        .latencies
        .lock()
        .map(|l| l.values().copied().collect())
        .unwrap_or_default();
    latencies.sort_unstable();
    println!(
        "  webhooks     : {events} signed events verified by a loopback receiver in {:.2}s ({:.0} events/s; {} refused)",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64(),
        received.refused.load(Ordering::Relaxed)
    );
    println!(
        "  event→receipt latency: p50 {} ms, p99 {} ms",
        super::percentile(&latencies, 0.50),
        super::percentile(&latencies, 0.99)
    );
    Ok(())
}
