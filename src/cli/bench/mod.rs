//! `switchboard bench` (and `cargo bench`): the figures in the README.
//!
//! For each database (a fresh SQLite file; a fresh PostgreSQL database): start the daemon in
//! its own process (`switchboard run`, the production defaults), read its idle RSS, POST
//! `--messages` messages over HTTP with `--concurrency` clients, wait until every delivery is
//! `delivered` by the outbox sink, and report deliveries/s (first POST to last delivery),
//! p50/p99 accept→delivered latency (database timestamps) and the daemon's peak RSS (its
//! VmHWM: the daemon's alone, not the bench client's). Beside it, on the same database, apalis
//! drains the same number of no-op jobs: the ceiling of the queue itself. Then
//! `--attachment-messages` messages with a PDF each, against a daemon process the same way
//! (`attachments`): messages/s and the daemon's peak RSS, beside the same messages without.

/// Results go to stdout with the progress bar (stderr, a terminal only) lifted while a line
/// is written, so the two never share a line. Defined before the submodules: theirs too.
macro_rules! println {
    ($($arg:tt)*) => {
        ::switchboard::progress::suspend(|| ::std::println!($($arg)*))
    };
}

mod attachments;
mod campaigns;
mod daemon_process;
mod direct;
mod direct_inbound;
mod fax;
mod metrics;
mod reminders;
mod retention;
mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use apalis::prelude::{
    BackendExt, BoxDynError, Data, Strategy, TaskSink, WorkerBuilder, WorkerBuilderExt,
    WorkerContext,
};
use serde::{Deserialize, Serialize};

use switchboard::config::Config;
use switchboard::daemon::{self, Core};
use switchboard::domain::DeliveryStatus;

use self::daemon_process::{DaemonProcess, mb};

/// How long after its start a fresh daemon's RSS is read as its idle RSS.
const IDLE_SETTLE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Messages to send through the API path (and no-op jobs for the baseline).
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Which databases: sqlite, postgres, or both.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    pub databases: Vec<String>,
    /// HL7 messages for the MLLP benchmark (0 skips it).
    #[arg(long, default_value_t = 5_000)]
    pub hl7_messages: usize,
    /// Appointments for the reminder planning benchmark (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    pub reminder_appointments: usize,
    /// Of which reminders due now, for the send and delivery rates.
    #[arg(long, default_value_t = 10_000)]
    pub reminders_due: usize,
    /// Open recalls for the recall campaign benchmark (0 skips it).
    #[arg(long, default_value_t = 5_000)]
    pub campaign_recalls: usize,
    /// PostgreSQL server for the run (a fresh database is created on it and dropped).
    #[arg(
        long,
        env = "TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub postgres_url: String,
    /// Direct messages for the seal benchmark (0 skips it); `--databases none` runs it alone.
    #[arg(long, default_value_t = 300)]
    pub direct_messages: usize,
    /// Received Direct messages for the open benchmark (accept: decrypt, verify, policy,
    /// parse; 0 skips it).
    #[arg(long, default_value_t = 300)]
    pub direct_open: usize,
    /// Messages with one PDF attachment each, through the API to the outbox (0 skips it).
    #[arg(long, default_value_t = 2_000)]
    pub attachment_messages: usize,
    /// Size of that PDF, bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub attachment_bytes: usize,
    /// Concurrent HTTP clients for the attachment benchmark.
    #[arg(long, default_value_t = 16)]
    pub attachment_concurrency: usize,
    /// Signed webhook events to a loopback receiver (0 skips it).
    #[arg(long, default_value_t = 2_000)]
    pub webhook_events: usize,
    /// Sealed Direct messages through the inbound path (0 skips it).
    #[arg(long, default_value_t = 200)]
    pub direct_inbound: usize,
    /// Signed inbound fax callbacks (Phaxio, multipart with a PDF) through the webhook and the
    /// fax-inbound job to the unmatched queue (0 skips it).
    #[arg(long, default_value_t = 500)]
    pub fax_webhooks: usize,
    /// Concurrent clients for the fax webhook benchmark.
    #[arg(long, default_value_t = 50)]
    pub fax_concurrency: usize,
    /// `[fax_inbound] record_writers` for the fax webhook benchmark (0: the default).
    #[arg(long, default_value_t = 0)]
    pub fax_writers: usize,
    /// Only the `/metrics` benchmark: scrape time at each of `--metrics-sizes` deliveries.
    #[arg(long)]
    pub metrics: bool,
    /// Table sizes (deliveries) the `/metrics` benchmark scrapes at (empty skips it).
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
    pub metrics_sizes: Vec<usize>,
    /// The daemon the API and attachment benchmarks start in its own process (`switchboard
    /// run`): this binary unless given, another build for a baseline from the same run.
    #[arg(long, env = "SWITCHBOARD_BENCH_DAEMON")]
    pub daemon_binary: Option<std::path::PathBuf>,
}

impl Default for BenchArgs {
    fn default() -> Self {
        Self {
            messages: 20_000,
            concurrency: 64,
            databases: vec!["sqlite".into(), "postgres".into()],
            hl7_messages: 5_000,
            reminder_appointments: 100_000,
            reminders_due: 10_000,
            campaign_recalls: 5_000,
            postgres_url: std::env::var("TEST_DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
            direct_messages: 300,
            direct_open: 300,
            attachment_messages: 2_000,
            attachment_bytes: 1024 * 1024,
            attachment_concurrency: 16,
            webhook_events: 2_000,
            direct_inbound: 200,
            fax_webhooks: 500,
            fax_concurrency: 50,
            fax_writers: 0,
            metrics: false,
            metrics_sizes: vec![10_000, 1_000_000],
            daemon_binary: None,
        }
    }
}

pub async fn run(args: BenchArgs) -> Result<()> {
    if let Some(binary) = &args.daemon_binary {
        let _ = DAEMON_BINARY.set(binary.clone());
    }
    println!(
        "switchboard bench: {} messages, {} HTTP clients, {} cores",
        args.messages,
        args.concurrency,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if args.metrics {
        for database in args.databases.iter().filter(|d| d.as_str() != "none") {
            self::metrics::bench(database, &args.postgres_url, &args.metrics_sizes).await?;
        }
        return Ok(());
    }
    if args.direct_messages > 0 {
        let n = args.direct_messages;
        tokio::task::spawn_blocking(move || self::direct::run(n)).await??;
    }
    if args.direct_open > 0 {
        let n = args.direct_open;
        tokio::task::spawn_blocking(move || self::direct::run_open(n)).await??;
    }
    // Each run's data directory (its outbox holds a file per delivered message) is removed
    // when the bench ends, not before the next run: this machine's ext4 has no journal, and
    // without one the inode allocator steps over every inode freed in the last ~30 s, reading
    // each one's inode-table block. Removing 20,000 outbox files right before the next run
    // made that run's file creations 44 % of its daemon's CPU (perf, `recently_deleted`).
    let mut finished = Vec::new();
    for database in args.databases.iter().filter(|d| d.as_str() != "none") {
        let scratch = Scratch::create(database, &args.postgres_url).await?;
        let mut result = if args.messages > 0 {
            bench_database(&args, database, &scratch).await
        } else {
            Ok(())
        };
        if result.is_ok() && args.hl7_messages > 0 {
            let _phase =
                ::switchboard::progress::spinner(format!("bench [{database}] hl7 messages"));
            result = bench_hl7(&args, database, &scratch).await;
        }
        if result.is_ok() && args.reminder_appointments > 0 {
            let _phase = ::switchboard::progress::spinner(format!(
                "bench [{database}] reminder appointments"
            ));
            let reminders = Scratch::create(database, &args.postgres_url).await?;
            result = self::reminders::bench(
                args.reminder_appointments,
                args.reminders_due,
                &reminders.url,
                reminders.dir.path(),
            )
            .await;
            reminders.drop_database().await;
            finished.push(reminders);
        }
        if result.is_ok() && args.campaign_recalls > 0 {
            let _phase =
                ::switchboard::progress::spinner(format!("bench [{database}] campaign recalls"));
            let scratch = Scratch::create(database, &args.postgres_url).await?;
            result =
                self::campaigns::bench(args.campaign_recalls, &scratch.url, scratch.dir.path())
                    .await;
            scratch.drop_database().await;
            finished.push(scratch);
        }
        if result.is_ok() && args.attachment_messages > 0 {
            let _phase =
                ::switchboard::progress::spinner(format!("bench [{database}] attachment messages"));
            let scratch = Scratch::create(database, &args.postgres_url).await?;
            result = self::attachments::bench(
                database,
                &scratch.url,
                scratch.dir.path(),
                args.attachment_messages,
                args.attachment_bytes,
                args.attachment_concurrency,
            )
            .await;
            scratch.drop_database().await;
            finished.push(scratch);
        }
        if result.is_ok() && args.webhook_events > 0 {
            let _phase =
                ::switchboard::progress::spinner(format!("bench [{database}] webhook events"));
            let hooks = Scratch::create(database, &args.postgres_url).await?;
            result = self::webhooks::bench(
                args.webhook_events,
                args.concurrency,
                &hooks.url,
                hooks.dir.path(),
            )
            .await;
            hooks.drop_database().await;
            finished.push(hooks);
        }
        if result.is_ok() && args.direct_inbound > 0 {
            let _phase =
                ::switchboard::progress::spinner(format!("bench [{database}] direct inbound"));
            let inbound = Scratch::create(database, &args.postgres_url).await?;
            result = self::direct_inbound::bench(
                database,
                &inbound.url,
                inbound.dir.path(),
                args.direct_inbound,
            )
            .await;
            inbound.drop_database().await;
            finished.push(inbound);
        }
        if result.is_ok() && !args.metrics_sizes.is_empty() {
            let _phase =
                ::switchboard::progress::spinner(format!("bench [{database}] metrics sizes"));
            result = self::metrics::bench(database, &args.postgres_url, &args.metrics_sizes).await;
        }
        if result.is_ok() && args.fax_webhooks > 0 {
            let _phase =
                ::switchboard::progress::spinner(format!("bench [{database}] fax webhooks"));
            let faxes = Scratch::create(database, &args.postgres_url).await?;
            result = self::fax::bench(
                database,
                &faxes.url,
                faxes.dir.path(),
                args.fax_webhooks,
                args.fax_concurrency,
                args.fax_writers,
            )
            .await;
            faxes.drop_database().await;
            finished.push(faxes);
        }
        scratch.drop_database().await;
        finished.push(scratch);
        result?;
    }
    drop(finished);
    Ok(())
}

async fn bench_database(args: &BenchArgs, database: &str, scratch: &Scratch) -> Result<()> {
    let mut config = Config::from_toml("")?;
    config.data_dir = scratch.dir.path().to_path_buf();
    config.database.url = Some(scratch.url.clone());

    let core = Core::open(config).await?;
    let org = core.store.organizations().ensure("bench", "Bench").await?;
    let token = switchboard::http::new_token()?;
    core.store
        .api_keys()
        .insert(&org.id, "bench", &switchboard::http::hash_token(&token))
        .await?;

    // The daemon in its own process, so that its RSS is its own and not the client's too.
    let daemon = DaemonProcess::start(&scratch.url, scratch.dir.path()).await?;
    let (idle_rss, idle_anon) = daemon.idle_rss(IDLE_SETTLE).await;
    let cpu_before = daemon.cpu_time();
    let base = daemon.base.clone();

    let started = Instant::now();
    let started_ms = switchboard::store::now_ms();
    let progress = ::switchboard::progress::bar(args.messages as u64, "bench: accepting");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, base, token, next, total, progress) = (
            client.clone(),
            base.clone(),
            token.clone(),
            next.clone(),
            args.messages,
            (*progress).clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), anyhow::Error>(());
                }
                let response = client
                    .post(format!("{base}/v1/messages"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({
                        "body": format!("Benchmark message {i}"),
                        "recipients": [{"address": format!("+1415{:07}", 2_000_000 + i % 8_000_000), "channel": "sms"}],
                    }))
                    .send()
                    .await?;
                if response.status() != reqwest::StatusCode::CREATED {
                    bail!("POST answered {}", response.status());
                }
                progress.inc(1);
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let accepted_in = started.elapsed();
    drop(progress);
    let progress = ::switchboard::progress::bar(args.messages as u64, "bench: delivering");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let delivered = core
            .store
            .deliveries()
            .count_in(DeliveryStatus::Delivered)
            .await?;
        progress.set_position(u64::try_from(delivered).unwrap_or(0));
        if delivered >= args.messages as i64 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {delivered} of {} delivered after 10 minutes",
                args.messages
            );
        }
        // Seldom: a count is a scan of the table, and this client shares the database and the
        // cores with the daemon it measures (every 20 ms it took a quarter of a core of
        // PostgreSQL's time). The end is read from the rows, not from when this poll saw it.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let last_ms = core
        .store
        .deliveries()
        .last_update_in(DeliveryStatus::Delivered)
        .await?
        .unwrap_or(started_ms);
    let elapsed = Duration::from_millis(u64::try_from(last_ms - started_ms).unwrap_or(0))
        .max(Duration::from_millis(1));
    drop(progress);
    let peak_rss = daemon.peak_rss();
    let cpu = daemon
        .cpu_time()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    daemon.stop().await;
    let latencies = core
        .store
        .deliveries()
        .latencies_ms(DeliveryStatus::Delivered)
        .await?;

    let noop = noop_baseline(&core, args.messages).await?;
    core.store.close().await;

    let rate = args.messages as f64 / elapsed.as_secs_f64();
    println!("\n[{database}]");
    println!(
        "  API → outbox : {} messages accepted in {:.2}s ({:.0}/s), all delivered in {:.2}s",
        args.messages,
        accepted_in.as_secs_f64(),
        args.messages as f64 / accepted_in.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!("  deliveries/s : {rate:.0}");
    println!(
        "  accept→delivered latency: p50 {} ms, p99 {} ms",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );
    println!(
        "  apalis no-op : {:.0} jobs/s ({} jobs in {:.2}s)",
        noop.0,
        args.messages,
        noop.1.as_secs_f64()
    );
    println!("  ratio        : {:.2}× of the no-op queue", rate / noop.0);
    println!(
        "  daemon RSS   : idle {} ({} anonymous), peak {} over the run (its own process, without the client)",
        mb(idle_rss),
        mb(idle_anon),
        mb(peak_rss)
    );
    if let Some(cpu) = cpu {
        // Steadier than the rates on a shared machine: what the daemon itself spent.
        println!(
            "  daemon CPU   : {:.2}s user+system, {:.0} µs a message (accept and delivery)",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / args.messages.max(1) as f64
        );
    }
    self::retention::bench(&scratch.url, rate).await?;
    Ok(())
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NoOp {
    n: usize,
}

async fn noop(
    _job: NoOp,
    done: Data<Arc<AtomicUsize>>,
    target: Data<usize>,
    worker: WorkerContext,
) -> Result<(), BoxDynError> {
    if done.fetch_add(1, Ordering::Relaxed) + 1 >= *target {
        worker.stop()?;
    }
    Ok(())
}

/// apalis alone: push `n` no-op jobs, then time one worker (same batch size, concurrency
/// and polling as a delivery worker) draining them.
async fn noop_baseline(core: &Core, n: usize) -> Result<(f64, Duration)> {
    let queue = &core.config.queue;
    let concurrency = core
        .config
        .channel(switchboard::domain::Channel::Sms.as_str())
        .concurrency;
    let poll = Duration::from_millis(queue.poll_interval_ms);
    let done = Arc::new(AtomicUsize::new(0));
    let jobs: Vec<NoOp> = (0..n).map(|n| NoOp { n }).collect();
    // The same steps on either backend's storage type.
    macro_rules! drain {
        ($storage:expr) => {{
            let mut storage = $storage;
            for chunk in jobs.chunks(1000) {
                storage
                    .push_bulk(chunk.to_vec())
                    .await
                    .context("push no-op jobs")?;
            }
            let started = Instant::now();
            WorkerBuilder::new("bench-noop")
                .backend(storage.poll_with_strategy(
                    Strategy::new().apply(switchboard::queue::poll::Interval::new(poll)),
                ))
                .data(done.clone())
                .data(n)
                .concurrency(concurrency)
                .build(noop)
                .run()
                .await
                .map_err(|e| anyhow::anyhow!("no-op worker: {e}"))?;
            started.elapsed()
        }};
    }
    // A pool of its own on the same database (the daemon under test has stopped).
    let url = core
        .config
        .database
        .url
        .clone()
        .context("the bench's database URL")?;
    let elapsed = if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&url).await?;
        drain!(
            apalis_sqlite::SqliteStorage::<NoOp>::new(&pool).with_config(
                apalis_sqlite::Config::default()
                    .queue("bench.noop")
                    .batch_size(queue.batch_size)
            )
        )
    } else {
        let pool = sqlx::PgPool::connect_with(switchboard::store::pg_options(&url)?).await?;
        drain!(
            apalis_postgres::PostgresStorage::<NoOp>::new(&pool).with_config(
                apalis_postgres::Config::default()
                    .queue("bench.noop")
                    .batch_size(queue.batch_size)
            )
        )
    };
    Ok((n as f64 / elapsed.as_secs_f64(), elapsed))
}

/// `--daemon-binary`, when given.
static DAEMON_BINARY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// The `switchboard` binary: `--daemon-binary`, or this one, or beside `cargo bench`'s
/// (`target/<profile>/deps/throughput-*`; the daemon is `target/<profile>/switchboard`).
fn daemon_binary() -> Option<std::path::PathBuf> {
    if let Some(binary) = DAEMON_BINARY.get() {
        return Some(binary.clone());
    }
    let exe = std::env::current_exe().ok()?;
    if exe.file_stem().is_some_and(|s| s == "switchboard") {
        Some(exe)
    } else {
        Some(exe.parent()?.parent()?.join("switchboard"))
    }
}

/// A database that exists for one bench run.
struct Scratch {
    url: String,
    dir: tempfile::TempDir,
    pg: Option<(String, String)>,
}

impl Scratch {
    async fn create(kind: &str, postgres_url: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        match kind {
            "sqlite" => Ok(Self {
                url: format!("sqlite://{}", dir.path().join("bench.db").display()),
                dir,
                pg: None,
            }),
            "postgres" => {
                let name = format!("sb_bench_{}", ulid::Ulid::new().to_string().to_lowercase());
                let pool =
                    sqlx::PgPool::connect_with(switchboard::store::pg_options(postgres_url)?)
                        .await
                        .context("connect to PostgreSQL")?;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&pool)
                    .await?;
                pool.close().await;
                let base = postgres_url
                    .rsplit_once('/')
                    .map_or(postgres_url, |(b, _)| b);
                Ok(Self {
                    url: format!("{base}/{name}"),
                    dir,
                    pg: Some((postgres_url.to_string(), name)),
                })
            }
            other => bail!("unknown database {other:?} (sqlite or postgres)"),
        }
    }

    async fn drop_database(&self) {
        let Some((admin, name)) = &self.pg else {
            return;
        };
        let Ok(options) = switchboard::store::pg_options(admin) else {
            return;
        };
        if let Ok(pool) = sqlx::PgPool::connect_with(options).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&pool)
            .await;
            pool.close().await;
        }
    }
}

/// SIU^S12 number `i` (distinct control and filler ids).
fn siu(i: usize) -> String {
    format!(
        "MSH|^~\\&|BENCH|CLINIC|SB|SB|20260101120000||SIU^S12|B{i}|P|2.5.1\r\
         SCH||F{i}|||||ROUTINE|Checkup|||^^30^20270101{h:02}{m:02}00-0600\r\
         PID|1||MRN{p}^^^CLINIC^MR||Patient^Bench||19800101|F|||||(217)555-{p:04}^PRN^CP\r\
         AIL|1||ROOM1^^^Main Clinic\rAIP|1||D1^Doctor^Dana\r",
        h = (i / 60) % 24,
        m = i % 60,
        p = i % 10_000,
    )
}

/// `connections` clients share messages `offset..offset + total`; each waits for its ACK
/// before sending the next. With `rate`, sends are paced to that many messages per second.
async fn mllp_load(
    addr: std::net::SocketAddr,
    connections: usize,
    offset: usize,
    total: usize,
    rate: Option<f64>,
) -> Result<(f64, Vec<u128>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (read, mut write) = stream.into_split();
            let mut acks = switchboard::hl7::mllp::FrameReader::new(read, 1 << 20);
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<Vec<u128>, anyhow::Error>(latencies);
                }
                if let Some(rate) = rate {
                    let due = started + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let sent = Instant::now();
                write
                    .write_all(&switchboard::hl7::mllp::encode_frame(
                        siu(offset + i).as_bytes(),
                    ))
                    .await?;
                match acks.next_frame().await? {
                    Some(switchboard::hl7::mllp::Frame::Message(ack))
                        if ack.windows(7).any(|w| w == b"MSA|AA|") => {}
                    other => bail!("message {i} not accepted: {other:?}"),
                }
                latencies.push(sent.elapsed().as_micros());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok((total as f64 / elapsed.as_secs_f64(), latencies))
}

/// A responder that ACKs every frame at once without parsing: the ceiling of the client and
/// loopback.
async fn no_parse_responder() -> Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let (read, mut write) = stream.into_split();
                let mut frames = switchboard::hl7::mllp::FrameReader::new(read, 1 << 20);
                let ack = switchboard::hl7::mllp::encode_frame(
                    b"MSH|^~\\&|SB|SB|BENCH|CLINIC|20260101||ACK^S12^ACK|1|P|2.5.1\rMSA|AA|X\r",
                );
                while let Ok(Some(_)) = frames.next_frame().await {
                    if write.write_all(&ack).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

async fn bench_hl7(args: &BenchArgs, database: &str, scratch: &Scratch) -> Result<()> {
    let mut config = Config::from_toml("")?;
    // The API run's data directory: its at-rest key, which sealed the database's key canary
    // (a key of its own would be refused as a mismatch).
    config.data_dir = scratch.dir.path().to_path_buf();
    config.outbox.dir = scratch.dir.path().join("hl7-outbox");
    config.database.url = Some(scratch.url.clone());
    config.server.listen = "127.0.0.1:0".parse()?;
    config.hl7.listen = Some("127.0.0.1:0".parse()?);
    config.hl7.organization = "bench-hl7".into();
    let daemon = daemon::start(config).await?;
    let addr = daemon.hl7_addr.context("no MLLP listener")?;
    let n = args.hl7_messages;
    let (rate, latencies) = mllp_load(addr, 8, 0, n, None).await?;
    // Paced at 500 msg/s, on messages the first run did not send (new control ids).
    let paced_n = (n / 2).max(500);
    let (_, paced) = mllp_load(addr, 8, n, paced_n, Some(500.0)).await?;
    daemon.shutdown();
    daemon.wait().await?;
    let responder = no_parse_responder().await?;
    let (ceiling, ceiling_latencies) = mllp_load(responder, 8, 0, n, None).await?;
    let ms = |l: &[u128], p: f64| percentile_u(l, p) as f64 / 1000.0;
    println!(
        "  HL7 MLLP     : {rate:.0} msg/s over 8 connections (ACK after commit), p50 {:.1} ms, p99 {:.1} ms",
        ms(&latencies, 0.5),
        ms(&latencies, 0.99)
    );
    println!(
        "  HL7 at 500/s : p99 ACK {:.1} ms over {paced_n} messages",
        ms(&paced, 0.99)
    );
    println!(
        "  no-parse ACK : {ceiling:.0} msg/s, p99 {:.1} ms  → daemon at {:.2}× the responder ({database})",
        ms(&ceiling_latencies, 0.99),
        rate / ceiling
    );
    if database == "postgres" {
        match pgbench(scratch).await {
            Ok(tps) => println!(
                "  pgbench      : {tps:.0} tps, one 1 KB row inserted per transaction, 8 clients, same server → HL7 at {:.2}× (target ≥ 0.5×)",
                rate / tps
            ),
            Err(e) => println!(
                "  pgbench      : not run ({e:#}); by hand: {PGBENCH_TABLE}; then pgbench -n -c 8 -j 2 -T 10 -f <file with: {PGBENCH_INSERT}> <url>"
            ),
        }
    }
    Ok(())
}

const PGBENCH_TABLE: &str =
    "CREATE TABLE bench_pgbench (id bigserial PRIMARY KEY, payload text NOT NULL)";
const PGBENCH_INSERT: &str = "INSERT INTO bench_pgbench (payload) VALUES (repeat('x', 1024));";

/// PostgreSQL's own commit rate for the HL7 comparison, in the same run on the same scratch
/// database: `pgbench` (from PATH) with 8 clients for 10 s, each transaction inserting one
/// 1 KB row. Returns its `tps`.
async fn pgbench(scratch: &Scratch) -> Result<f64> {
    let options = switchboard::store::pg_options(&scratch.url)?;
    // Connected as the daemon is (plain on loopback unless the URL names an sslmode).
    let sslmode = match options.get_ssl_mode() {
        sqlx::postgres::PgSslMode::Disable => "disable",
        sqlx::postgres::PgSslMode::Allow => "allow",
        sqlx::postgres::PgSslMode::Prefer => "prefer",
        sqlx::postgres::PgSslMode::Require => "require",
        sqlx::postgres::PgSslMode::VerifyCa => "verify-ca",
        sqlx::postgres::PgSslMode::VerifyFull => "verify-full",
    };
    let pool = sqlx::PgPool::connect_with(options).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS bench_pgbench; {PGBENCH_TABLE}"
    )))
    .execute(&pool)
    .await?;
    let script = scratch.dir.path().join("pgbench.sql");
    std::fs::write(&script, PGBENCH_INSERT)?;
    let output = tokio::process::Command::new("pgbench")
        .args(["-n", "-c", "8", "-j", "2", "-T", "10", "-f"])
        .arg(&script)
        .arg(&scratch.url)
        .env("PGSSLMODE", sslmode)
        .output()
        .await
        .context("pgbench (from PostgreSQL's client tools)")?;
    sqlx::raw_sql("DROP TABLE IF EXISTS bench_pgbench")
        .execute(&pool)
        .await?;
    pool.close().await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|line| {
            let rest = line.trim().strip_prefix("tps = ")?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .with_context(|| {
            format!(
                "no tps in its output: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })
}

fn percentile_u(sorted: &[u128], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}
