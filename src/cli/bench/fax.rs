//! `switchboard bench --fax-webhooks N`: N signed Phaxio inbound callbacks (multipart, a
//! one-page PDF as the part `file`, `X-Phaxio-Signature` over URL + fields + file SHA-1) POSTed
//! by `--fax-concurrency` clients (50) to the daemon in-process. Reported: the time to the 2xx
//! of each request, p50/p99 (the callback verified, parsed and recorded sealed), beside the
//! same bodies POSTed to a hook no connector has (read whole, then answered 404: the HTTP
//! path without verification or storage) in the same run; and webhook → unmatched-queue
//! throughput (first POST until the `fax-inbound` job has taken every fax through intake).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use switchboard::config::Config;
use switchboard::connectors::signature::phaxio_signature;
use switchboard::daemon::{self, Core};

const PUBLIC_URL: &str = "https://gw.bench.example";
const TOKEN: &str = "bench-callback-token";
const BOUNDARY: &str = "benchboundary7MA4YWxkTrZu0gW";
const NUMBER: &str = "+12125550100";

/// One signed callback: its body and signature.
struct Signed {
    body: Vec<u8>,
    signature: String,
}

fn callback(i: usize, pdf: &[u8]) -> Signed {
    let fax = serde_json::json!({
        "id": 500_000 + i, "direction": "received", "num_pages": 1, "status": "success",
        "is_test": false, "from_number": format!("+1312555{:04}", i % 10_000),
        "to_number": NUMBER,
    })
    .to_string();
    let fields = vec![
        ("direction".to_string(), "received".to_string()),
        ("fax".to_string(), fax),
        ("is_test".to_string(), "false".to_string()),
        ("success".to_string(), "true".to_string()),
    ];
    let mut body = Vec::with_capacity(pdf.len() + 1024);
    for (name, value) in &fields {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"fax.pdf\"\r\nContent-Type: application/pdf\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(pdf);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let url = format!("{PUBLIC_URL}/hooks/phaxio/inbound");
    let signature = phaxio_signature(TOKEN, &url, &fields, &[("file".to_string(), pdf.to_vec())])
        .unwrap_or_default();
    Signed { body, signature }
}

/// A one-page PDF of about `size` bytes (a comment pads it).
fn pdf(size: usize) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\n".to_vec();
    while out.len() + 40 < size {
        out.extend_from_slice(b"% scanned page data .................\n");
    }
    out.extend_from_slice(b"trailer<</Root 1 0 R>>\n%%EOF\n");
    out
}

/// POSTs every body to `path` with `concurrency` clients; the time to each answer (ms),
/// sorted, and the first status that was not `expect`.
async fn fire(
    base: &str,
    path: &str,
    calls: Arc<Vec<Signed>>,
    concurrency: usize,
    expect: u16,
) -> Result<Vec<f64>> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, calls, next) = (
            client.clone(),
            format!("{base}{path}"),
            calls.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(call) = calls.get(i) else {
                    return Ok::<_, anyhow::Error>(times);
                };
                let started = Instant::now();
                let response = client
                    .post(&url)
                    .header(
                        "content-type",
                        format!("multipart/form-data; boundary={BOUNDARY}"),
                    )
                    .header("X-Phaxio-Signature", &call.signature)
                    .body(call.body.clone())
                    .send()
                    .await?;
                let status = response.status().as_u16();
                let _ = response.bytes().await?;
                times.push(started.elapsed().as_secs_f64() * 1000.0);
                if status != expect {
                    bail!("POST {url} answered {status}, expected {expect}");
                }
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    all.sort_by(|a, b| a.total_cmp(b));
    Ok(all)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Runs the fax webhook benchmark on a scratch database at `url`, files under `dir`.
pub async fn bench(
    database: &str,
    url: &str,
    dir: &std::path::Path,
    webhooks: usize,
    concurrency: usize,
    writers: usize,
) -> Result<()> {
    let token = dir.join("phaxio-token");
    std::fs::write(&token, TOKEN)?;
    let text = format!(
        r#"
[organizations.bench]
numbers = ["{NUMBER}"]
[connectors.phaxio]
kind = "http"
manifest = "phaxio"
organization = "bench"
public_url = "{PUBLIC_URL}"
credentials = {{ api_key = {{ file = "{t}" }}, api_secret = {{ file = "{t}" }}, callback_token = {{ file = "{t}" }} }}
"#,
        t = token.display()
    );
    let mut config = Config::from_toml(&text)?;
    config.data_dir = dir.to_path_buf();
    config.outbox.dir = dir.join("outbox");
    config.database.url = Some(url.to_string());
    config.server.listen = "127.0.0.1:0".parse()?;
    config.fax_inbound.record_writers = writers;
    let core = Core::open(config.clone()).await?;
    core.store.organizations().ensure("bench", "Bench").await?;
    let daemon = daemon::start(config).await?;
    let base = format!("http://{}", daemon.addr);

    let document = pdf(20 * 1024);
    let calls: Arc<Vec<Signed>> = Arc::new((0..webhooks).map(|i| callback(i, &document)).collect());
    // Warm-up: connections, statements, the first page of the job's queries.
    let warm: Arc<Vec<Signed>> = Arc::new(vec![callback(webhooks + 1, &document)]);
    fire(&base, "/hooks/phaxio/inbound", warm, 1, 200).await?;

    let baseline = fire(
        &base,
        "/hooks/bench-no-such-connector/inbound",
        calls.clone(),
        concurrency,
        404,
    )
    .await?;
    let started = Instant::now();
    let signed = fire(
        &base,
        "/hooks/phaxio/inbound",
        calls.clone(),
        concurrency,
        200,
    )
    .await?;
    let answered_in = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    let target = i64::try_from(webhooks + 1)?;
    loop {
        // `filed`: handed to intake, which left each in the unmatched queue.
        let n = core.store.received_faxes().count_in("filed").await?;
        if n >= target {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {n} of {target} faxes through intake after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let filed_in = started.elapsed();
    daemon.shutdown();
    daemon.wait().await?;
    core.store.close().await;
    let database_alone = if database == "postgres" {
        Some(postgres_alone(url, webhooks, concurrency, document.len()).await?)
    } else {
        None
    };

    println!(
        "\n[{database}] fax webhooks: {webhooks} signed Phaxio callbacks (20 KiB PDF), {concurrency} concurrent clients, record_writers {writers}"
    );
    println!(
        "  time to 2xx (verify + parse + record sealed): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({:.0} callbacks/s answered)",
        pct(&signed, 0.50),
        pct(&signed, 0.99),
        pct(&signed, 1.0),
        webhooks as f64 / answered_in.as_secs_f64()
    );
    println!(
        "  baseline (same bodies, unknown hook → 404): p50 {:.1} ms, p99 {:.1} ms",
        pct(&baseline, 0.50),
        pct(&baseline, 0.99)
    );
    if let Some(alone) = &database_alone {
        println!(
            "  PostgreSQL alone (the same write: one {} KiB row per transaction, {concurrency} connections): p50 {:.1} ms, p99 {:.1} ms → daemon p99 at {:.2}× PostgreSQL's",
            document.len() / 1024,
            pct(alone, 0.50),
            pct(alone, 0.99),
            pct(&signed, 0.99) / pct(alone, 0.99).max(0.001)
        );
    }
    println!(
        "  webhook → unmatched queue: {webhooks} faxes in {:.2}s ({:.0} faxes/s, download-free: the PDF is posted)",
        filed_in.as_secs_f64(),
        webhooks as f64 / filed_in.as_secs_f64()
    );
    Ok(())
}

/// PostgreSQL alone doing what acknowledging a fax webhook needs: `webhooks` durable inserts of
/// one row of `size` random bytes (stored uncompressed, as sealed bytes are incompressible),
/// each its own transaction, from `concurrency` connections; each insert's time, ms, sorted.
async fn postgres_alone(
    url: &str,
    webhooks: usize,
    concurrency: usize,
    size: usize,
) -> Result<Vec<f64>> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(u32::try_from(concurrency).unwrap_or(50))
        .connect_with(switchboard::store::pg_options(url)?)
        .await?;
    sqlx::query(
        "CREATE TABLE bench_fax_alone (id TEXT PRIMARY KEY, provider_id TEXT UNIQUE, raw BYTEA)",
    )
    .execute(&pool)
    .await?;
    sqlx::query("ALTER TABLE bench_fax_alone ALTER COLUMN raw SET STORAGE EXTERNAL")
        .execute(&pool)
        .await?;
    let mut body = vec![0u8; size];
    openssl::rand::rand_bytes(&mut body)?;
    let body = Arc::new(body);
    // Connections opened first, as the daemon's are.
    let mut warm = Vec::new();
    for _ in 0..concurrency {
        warm.push(pool.acquire().await?);
    }
    drop(warm);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (pool, next, body) = (pool.clone(), next.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= webhooks {
                    return Ok::<_, anyhow::Error>(times);
                }
                let started = Instant::now();
                sqlx::query(
                    "INSERT INTO bench_fax_alone (id, provider_id, raw) VALUES ($1, $2, $3)
                     ON CONFLICT (provider_id) DO NOTHING",
                )
                .bind(format!("alone{i}"))
                .bind(i.to_string())
                .bind(body.as_slice())
                .execute(&pool)
                .await?;
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    all.sort_by(|a, b| a.total_cmp(b));
    pool.close().await;
    Ok(all)
}
