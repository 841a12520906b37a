//! `/metrics` at table sizes: the daemon on a database holding `--metrics-sizes` deliveries
//! (10k and 1M by default; one real delivery copied), scraped 200 times over HTTP. Reported
//! per size, side by side: the scrape's p50/p99 (in-memory state only), what the scrape used to
//! run (a `GROUP BY` over every delivery), and the background refresh of the database-derived
//! gauges (two indexed queries, every `[metrics] refresh_secs`).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use switchboard::config::Config;
use switchboard::daemon::{self, Core};
use switchboard::domain::DeliveryStatus;

use super::Scratch;

struct Figures {
    size: usize,
    scrape_p50: Duration,
    scrape_p99: Duration,
    bytes: usize,
    old_scan: Duration,
    refresh: Duration,
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn median_of<F, Fut>(runs: usize, mut f: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        f().await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

async fn one_size(database: &str, postgres_url: &str, size: usize) -> Result<Figures> {
    let scratch = Scratch::create(database, postgres_url).await?;
    let mut config = Config::from_toml("")?;
    config.data_dir = scratch.dir.path().to_path_buf();
    config.outbox.dir = scratch.dir.path().join("outbox");
    config.database.url = Some(scratch.url.clone());
    config.server.listen = "127.0.0.1:0".parse()?;
    config.metrics.refresh_secs = 1;
    let core = Core::open(config.clone()).await?;
    let org = core.store.organizations().ensure("bench", "Bench").await?;
    let token = switchboard::http::new_token()?;
    core.store
        .api_keys()
        .insert(&org.id, "bench", &switchboard::http::hash_token(&token))
        .await?;
    let daemon = daemon::start(config).await?;
    let base = format!("http://{}", daemon.addr);
    let client = reqwest::Client::new();
    let created: serde_json::Value = client
        .post(format!("{base}/v1/messages"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"body": "Benchmark",
            "recipients": [{"address": "+14155552671", "channel": "sms"}]}))
        .send()
        .await?
        .json()
        .await?;
    let Some(delivery) = created["deliveries"][0]["id"].as_str() else {
        bail!("no delivery in {created}");
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while core
        .store
        .deliveries()
        .count_in(DeliveryStatus::Delivered)
        .await?
        < 1
    {
        if Instant::now() > deadline {
            bail!("the benchmark's delivery was not delivered");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut copied = 1usize;
    let chunk = 100_000usize;
    while copied < size {
        let n = chunk.min(size - copied);
        core.store
            .deliveries()
            .copy_for_bench(delivery, &format!("dlv_bench{copied}_"), n as i64)
            .await?;
        copied += n;
    }
    // Let the refresh task see the table once, then scrape.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut times = Vec::with_capacity(200);
    let mut bytes = 0;
    for _ in 0..200 {
        let started = Instant::now();
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        times.push(started.elapsed());
        bytes = text.len();
    }
    times.sort();
    let store = core.store.clone();
    let old_scan = median_of(5, || {
        let store = store.clone();
        async move {
            store.deliveries().counts().await?;
            Ok(())
        }
    })
    .await?;
    let refresh = median_of(5, || {
        let store = store.clone();
        async move {
            store.deliveries().waiting().await?;
            store.deliveries().dead_letter_count().await?;
            Ok(())
        }
    })
    .await?;
    daemon.shutdown();
    daemon.wait().await?;
    core.store.close().await;
    scratch.drop_database().await;
    Ok(Figures {
        size,
        scrape_p50: times[times.len() / 2],
        scrape_p99: times[times.len() * 99 / 100],
        bytes,
        old_scan,
        refresh,
    })
}

pub async fn bench(database: &str, postgres_url: &str, sizes: &[usize]) -> Result<()> {
    println!("\n[{database}] /metrics scrape by table size (200 scrapes each)");
    println!(
        "  {:>10} | {:>12} | {:>12} | {:>8} | {:>26} | {:>24}",
        "deliveries",
        "scrape p50",
        "scrape p99",
        "bytes",
        "old per-scrape GROUP BY",
        "background refresh"
    );
    for &size in sizes {
        let f = one_size(database, postgres_url, size.max(1)).await?;
        println!(
            "  {:>10} | {:>12} | {:>12} | {:>8} | {:>26} | {:>24}",
            f.size,
            ms(f.scrape_p50),
            ms(f.scrape_p99),
            f.bytes,
            ms(f.old_scan),
            ms(f.refresh)
        );
    }
    Ok(())
}
