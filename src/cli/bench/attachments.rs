//! The attachment benchmark: `--attachment-messages` messages, each with one PDF of
//! `--attachment-bytes` (multipart, the large-file path), through the HTTP API to the outbox
//! sink, against a daemon in its own process (`switchboard run`), so that its peak RSS
//! (VmHWM from `/proc/<pid>/status`) is the daemon's alone. Beside it, on the same database,
//! a fresh daemon process carries the same number of messages without an attachment: the
//! baseline of the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use switchboard::config::Config;
use switchboard::daemon::Core;
use switchboard::domain::DeliveryStatus;

use super::daemon_process::{DaemonProcess, mb};

/// What one run measured.
struct Run {
    rate: f64,
    accepted_rate: f64,
    peak_rss: Option<u64>,
}

/// `messages` messages with a `bytes`-byte PDF each (and the baseline without), on `url`.
pub async fn bench(
    database: &str,
    url: &str,
    dir: &std::path::Path,
    messages: usize,
    bytes: usize,
    concurrency: usize,
) -> Result<()> {
    let mut config = Config::from_toml("")?;
    config.data_dir = dir.to_path_buf();
    config.database.url = Some(url.to_string());
    let core = Core::open(config).await?;
    let org = core.store.organizations().ensure("bench", "Bench").await?;
    let token = switchboard::http::new_token()?;
    core.store
        .api_keys()
        .insert(&org.id, "bench", &switchboard::http::hash_token(&token))
        .await?;

    let baseline = run(&core, url, dir, &token, messages, None, concurrency, 0).await?;
    let pdf = Arc::new(pdf(bytes));
    let attached = run(
        &core,
        url,
        dir,
        &token,
        messages,
        Some(pdf),
        concurrency,
        messages as i64,
    )
    .await?;
    core.store.close().await;

    println!(
        "  attachments  : {messages} messages over {concurrency} clients, daemon in its own process ({database})"
    );
    println!(
        "    without    : {:.0} messages/s (accepted at {:.0}/s), daemon peak RSS {}",
        baseline.rate,
        baseline.accepted_rate,
        mb(baseline.peak_rss)
    );
    println!(
        "    {:.1} MiB PDF: {:.0} messages/s (accepted at {:.0}/s, {:.0} MB/s of files), daemon peak RSS {}",
        bytes as f64 / (1024.0 * 1024.0),
        attached.rate,
        attached.accepted_rate,
        attached.rate * bytes as f64 / 1e6,
        mb(attached.peak_rss)
    );
    Ok(())
}

/// A PDF-looking file of `size` bytes (header, pseudo-random body, trailer).
fn pdf(size: usize) -> Vec<u8> {
    let mut bytes = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while bytes.len() + 6 < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes.truncate(size.saturating_sub(6).max(16));
    bytes.extend_from_slice(b"\n%%EOF");
    bytes
}

/// One daemon process: POSTs `messages` messages (with `file` attached when given), waits
/// until `already + messages` deliveries are delivered, reads the daemon's VmHWM, stops it.
#[allow(clippy::too_many_arguments)]
async fn run(
    core: &Core,
    url: &str,
    dir: &std::path::Path,
    token: &str,
    messages: usize,
    file: Option<Arc<Vec<u8>>>,
    concurrency: usize,
    already: i64,
) -> Result<Run> {
    let daemon = DaemonProcess::start(url, dir).await?;
    let base = daemon.base.clone();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, base, token, next, file) = (
            client.clone(),
            base.clone(),
            token.to_string(),
            next.clone(),
            file.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= messages {
                    return Ok::<(), anyhow::Error>(());
                }
                let message = serde_json::json!({
                    "body": format!("Benchmark message {i}"),
                    "recipients": [{"address": format!("patient{i}@example.org"), "channel": "email"}],
                });
                let request = client
                    .post(format!("{base}/v1/messages"))
                    .bearer_auth(&token);
                let request = match &file {
                    None => request.json(&message),
                    Some(file) => request.multipart(
                        reqwest::multipart::Form::new()
                            .part(
                                "message",
                                reqwest::multipart::Part::text(message.to_string())
                                    .mime_str("application/json")?,
                            )
                            .part(
                                "file",
                                reqwest::multipart::Part::bytes(file.as_ref().clone())
                                    .file_name(format!("report-{i}.pdf"))
                                    .mime_str("application/pdf")?,
                            ),
                    ),
                };
                let response = request.send().await?;
                if response.status() != reqwest::StatusCode::CREATED {
                    bail!("POST answered {}", response.status());
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let accepted_in = started.elapsed();
    let target = already + messages as i64;
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let delivered = core
            .store
            .deliveries()
            .count_in(DeliveryStatus::Delivered)
            .await?;
        if delivered >= target {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {delivered} of {target} delivered after 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    let peak_rss = daemon.peak_rss();
    daemon.stop().await;
    // The outbox files of this run are not needed any more (2,000 × 1 MiB adds up).
    let _ = std::fs::remove_dir_all(dir.join("outbox"));
    Ok(Run {
        rate: messages as f64 / elapsed.as_secs_f64(),
        accepted_rate: messages as f64 / accepted_in.as_secs_f64(),
        peak_rss,
    })
}
