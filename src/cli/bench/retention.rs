//! The retention pass on what the API benchmark just wrote: every event, status change and
//! finished job of its messages, pruned as if the retention ages had passed (the pass is run
//! "1,000 days later"), in the daemon's batches of `retention.batch_size`. Reported: rows per
//! second pruned, per kind, beside the rate at which the same run wrote them.

use std::time::{Duration, Instant};

use anyhow::Result;
use switchboard::config::RetentionConfig;
use switchboard::retention::Retention;
use switchboard::store::{Store, now_ms};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Prunes the scratch database at `url`; `written_per_s` is the API run's delivered rate.
pub async fn bench(url: &str, written_per_s: f64) -> Result<()> {
    let store = Store::connect(url, 4, false).await?;
    let config = RetentionConfig::default();
    let batch = config.batch_size;
    let retention = Retention::new(store.clone(), config, "bench".into());
    let started = Instant::now();
    let report = retention
        .run_once(now_ms() + 1_000 * DAY_MS, Duration::ZERO)
        .await?;
    let elapsed = started.elapsed();
    store.close().await;
    let total: u64 = report.values().sum();
    let kinds: Vec<String> = report
        .iter()
        .map(|(kind, n)| format!("{} {n}", kind.as_str()))
        .collect();
    println!(
        "  retention: pruned {total} rows in {:.2} s = {:.0} rows/s (batches of {batch}; {}); \
         the same run delivered {written_per_s:.0} messages/s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64().max(1e-9),
        kinds.join(", ")
    );
    Ok(())
}
