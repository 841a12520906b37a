//! Fleet and faults: three `switchboard run` daemons on one PostgreSQL cluster of the test's
//! own, sending SMS to a loopback Twilio-shaped provider that logs every request. The
//! provider's log is the judge. In order, on the same fleet:
//!
//! 1. `kill -9` of one daemon in the middle of a burst: every message reaches the provider,
//!    none is lost, none twice (the survivors take over what the dead one held);
//! 2. PostgreSQL stopped mid-run and started again: `/readyz` says 503 on every daemon while
//!    it is down, the daemons reconnect by themselves, everything is delivered, none exits;
//! 3. a provider outage (503s, then requests that get no answer): each delivery's attempts are
//!    bounded by its backoff, the daemons' CPU stays low (no hot loop), everything is delivered
//!    after recovery and nothing is dead-lettered;
//! 4. reminders due while all three run: one pass across the fleet, one SMS per due touch.
//!
//! Size: `FLEET_MESSAGES` (default 1,000; issue 18's full run is 20,000) and
//! `FLEET_OUTAGE_SECS` (default 16: half answering 503, half stalled; the full run is 600).
//! Skips, saying so, when the PostgreSQL server binaries are not installed.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use common::pg_cluster::PgCluster;
use common::process::{Spawned, run_command, tail};
use common::provider::{FakeProvider, Flavor, Health, Received, TWILIO_ACCOUNT, TWILIO_TOKEN};
use common::wait::{wait_for, wait_until};

const DAEMONS: usize = 3;
const LOG: &str = "info,sqlx=warn";
const PHONE: &str = "+14155550123";
/// The channel's retry schedule (config below): the bound on attempts is computed from it.
const BACKOFF_INITIAL_MS: u64 = 500;
const BACKOFF_MAX_SECS: u64 = 4;
/// The connector's request timeout, s (what a stalled request costs).
const PROVIDER_TIMEOUT_SECS: u64 = 2;

fn messages() -> usize {
    env_number("FLEET_MESSAGES", 1_000)
}

fn outage() -> Duration {
    Duration::from_secs(env_number("FLEET_OUTAGE_SECS", 16) as u64)
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The fleet: the cluster, the provider, three daemons (a slot is empty while one is dead).
struct Fleet {
    cluster: PgCluster,
    dir: tempfile::TempDir,
    url: String,
    provider: FakeProvider,
    configs: Vec<PathBuf>,
    daemons: Vec<Option<Spawned>>,
    /// Where clients post: the base URLs of the daemons alive.
    bases: Arc<RwLock<Vec<String>>>,
    key: String,
    http: reqwest::Client,
    runs: usize,
}

impl Fleet {
    async fn start() -> Self {
        let cluster = PgCluster::start();
        cluster.create_database("switchboard").await;
        let url = cluster.url("switchboard");
        let provider = FakeProvider::start(Flavor::Twilio).await;
        let dir = tempfile::tempdir().expect("tempdir");
        // Every daemon of a fleet holds the same at-rest key.
        std::fs::write(dir.path().join("at-rest.key"), "ab".repeat(32)).expect("key");
        std::fs::write(dir.path().join("twilio-token"), TWILIO_TOKEN).expect("token");
        let configs: Vec<PathBuf> = (0..DAEMONS)
            .map(|i| write_config(dir.path(), i, &url, &provider.base_url()))
            .collect();
        run_command(&configs[0], &["migrate"]);
        let key = run_command(
            &configs[0],
            &["keys", "create", "--org", "north", "--new-org"],
        );
        let mut fleet = Fleet {
            cluster,
            dir,
            url,
            provider,
            configs,
            daemons: (0..DAEMONS).map(|_| None).collect(),
            bases: Arc::default(),
            key,
            http: reqwest::Client::new(),
            runs: 0,
        };
        for i in 0..DAEMONS {
            fleet.start_daemon(i).await;
        }
        fleet
            .provider
            .report_to(fleet.bases.clone(), Duration::ZERO);
        fleet
    }

    async fn start_daemon(&mut self, i: usize) {
        self.runs += 1;
        let log = self.dir.path().join(format!("gw{i}-run{}.log", self.runs));
        let daemon = Spawned::start(&self.configs[i], &log, LOG).await;
        self.daemons[i] = Some(daemon);
        self.publish_bases();
    }

    fn publish_bases(&self) {
        let bases = self.daemons.iter().flatten().map(Spawned::base).collect();
        *self.bases.write().unwrap_or_else(|e| e.into_inner()) = bases;
    }

    fn daemon(&self, i: usize) -> &Spawned {
        self.daemons[i].as_ref().expect("daemon running")
    }

    fn kill9(&mut self, i: usize) {
        let mut daemon = self.daemons[i].take().expect("daemon running");
        daemon.kill9();
        self.publish_bases();
    }

    /// Every daemon is still running (none exited by itself).
    fn assert_alive(&mut self) {
        for daemon in self.daemons.iter_mut().flatten() {
            if let Some(status) = daemon.exited() {
                panic!("a daemon exited ({status}); {}", tail(&daemon.log));
            }
        }
    }

    /// The daemons' logs, for a panic message.
    fn logs(&self) -> String {
        self.daemons
            .iter()
            .flatten()
            .map(|d| tail(&d.log))
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url).await.expect("connect")
    }

    /// Deliveries by status.
    async fn statuses(&self) -> BTreeMap<String, i64> {
        let pool = self.pool().await;
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM deliveries GROUP BY status")
                .fetch_all(&pool)
                .await
                .expect("statuses");
        pool.close().await;
        rows.into_iter().collect()
    }

    /// Waits until `total` deliveries exist and all are `sent`.
    async fn wait_all_sent(&self, total: usize, timeout: Duration) {
        let started = Instant::now();
        loop {
            let statuses = self.statuses().await;
            let sent = statuses.get("sent").copied().unwrap_or(0);
            let all: i64 = statuses.values().sum();
            if sent == total as i64 && all == total as i64 {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "not all {total} deliveries sent within {timeout:?}: {statuses:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Posts messages `range` through 16 clients, spread over the daemons alive; each is
    /// retried (same Idempotency-Key, any daemon) until one acknowledges it.
    fn post(&self, range: std::ops::Range<usize>) -> Posting {
        let next = Arc::new(AtomicUsize::new(range.start));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (http, bases, key, next) = (
                self.http.clone(),
                self.bases.clone(),
                self.key.clone(),
                next.clone(),
            );
            let end = range.end;
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= end {
                        return;
                    }
                    post_until_acknowledged(&http, &bases, &key, i).await;
                }
            }));
        }
        Posting { tasks }
    }

    /// `GET /readyz` on daemon `i`: its status, or `None` when it did not answer in 5 s.
    async fn ready(&self, i: usize) -> Option<u16> {
        self.http
            .get(format!("{}/readyz", self.daemon(i).base()))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// The daemons' CPU time so far (user + system), summed.
    fn cpu(&self) -> Duration {
        self.daemons
            .iter()
            .flatten()
            .map(|d| cpu_time(d.id()))
            .sum()
    }
}

struct Posting {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Posting {
    async fn finish(self) {
        for task in self.tasks {
            task.await.expect("client task");
        }
    }
}

fn write_config(dir: &Path, i: usize, url: &str, provider: &str) -> PathBuf {
    let path = dir.join(format!("gw{i}.toml"));
    let text = format!(
        r#"data_dir = "{dir}/gw{i}"
node_id = "gw-{i}"
[server]
listen = "127.0.0.1:0"
[database]
url = "{url}"
max_connections = 8
[security]
at_rest_key = {{ file = "{dir}/at-rest.key" }}
[queue]
poll_interval_ms = 50
sweep_interval_secs = 1
lease_secs = 5
stuck_after_secs = 30
shutdown_grace_secs = 5
in_doubt_secs = 20
[channels.sms]
connector = "twilio"
max_attempts = 100
concurrency = 8
backoff_initial_ms = {BACKOFF_INITIAL_MS}
backoff_max_secs = {BACKOFF_MAX_SECS}
[connectors.twilio]
kind = "http"
manifest = "twilio"
base_url = "{provider}"
params = {{ account_sid = "{TWILIO_ACCOUNT}", from = "+15005550006" }}
credentials = {{ auth_token = {{ file = "{dir}/twilio-token" }} }}
timeout_secs = {PROVIDER_TIMEOUT_SECS}
# The fleet's address as the provider knows it (a load balancer): status callbacks come back
# through it to any daemon alive.
public_url = "http://fleet.test"
[reminders]
schedule = "* * * * * *"
[organizations.north]
time_zone = "UTC"
quiet_hours_start = "00:00"
quiet_hours_end = "23:59"
reminder_cap_per_day = 10
reminder_cap_per_week = 10
"#,
        dir = dir.display(),
    );
    std::fs::write(&path, text).expect("config");
    path
}

async fn post_until_acknowledged(
    http: &reqwest::Client,
    bases: &RwLock<Vec<String>>,
    key: &str,
    i: usize,
) {
    let body = serde_json::json!({
        "body": format!("fleet message {i}"),
        "recipients": [{"address": PHONE, "channel": "sms"}],
    });
    let started = Instant::now();
    let mut turn = i;
    loop {
        let base = {
            let bases = bases.read().unwrap_or_else(|e| e.into_inner());
            bases
                .get(turn % bases.len().max(1))
                .cloned()
                .unwrap_or_default()
        };
        turn += 1;
        let sent = http
            .post(format!("{base}/v1/messages"))
            .bearer_auth(key)
            .header("Idempotency-Key", format!("fleet-{i}"))
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if sent.is_ok_and(|response| response.status().is_success()) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "message {i} never acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Message `i` of a `fleet message <i>` body.
fn message_number(request: &Received) -> Option<usize> {
    request
        .form("Body")?
        .strip_prefix("fleet message ")?
        .parse()
        .ok()
}

/// The sends the provider took (answered while up), by message number.
fn sends_by_message(provider: &FakeProvider) -> BTreeMap<usize, usize> {
    let mut counts = BTreeMap::new();
    for request in provider.sends().iter().filter(|r| r.health == Health::Up) {
        if let Some(i) = message_number(request) {
            *counts.entry(i).or_insert(0) += 1;
        }
    }
    counts
}

/// Every message of `range` reached the provider exactly once.
fn assert_exactly_once(provider: &FakeProvider, range: std::ops::Range<usize>, phase: &str) {
    let counts = sends_by_message(provider);
    let missing: Vec<usize> = range.clone().filter(|i| !counts.contains_key(i)).collect();
    let twice: Vec<(usize, usize)> = range
        .filter_map(|i| counts.get(&i).map(|n| (i, *n)))
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(
        missing.is_empty() && twice.is_empty(),
        "{phase}: {} messages never reached the provider (first: {:?}), {} more than once \
         (first: {:?})",
        missing.len(),
        missing.first(),
        twice.len(),
        twice.first()
    );
}

/// A process's CPU time, user + system (`/proc/<pid>/stat` fields 14 and 15, clock ticks).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): utime is field 14, stime 15.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&k| fields.get(k).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 1000 / clock_ticks())
}

fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// The most attempts one delivery can make in `window` under the channel's backoff: each
/// retry waits at least 80 % of its nominal delay (the jitter's floor), so count how many of
/// the shortest possible delays fit, plus the first attempt.
fn max_attempts_in(window: Duration) -> usize {
    let mut elapsed = 0u64;
    let mut attempts = 1;
    let window = window.as_millis() as u64;
    for attempt in 1.. {
        let nominal = (BACKOFF_INITIAL_MS << (attempt - 1).min(30)).min(BACKOFF_MAX_SECS * 1000);
        elapsed += nominal * 8 / 10;
        if elapsed > window {
            break;
        }
        attempts += 1;
    }
    attempts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_one_postgres_under_faults() {
    if !PgCluster::available() {
        eprintln!(
            "SKIPPED: the PostgreSQL server binaries (/usr/lib/postgresql/15/bin) are not \
             installed; the fleet test needs a cluster of its own to restart"
        );
        return;
    }
    let n = messages();
    let mut fleet = Fleet::start().await;

    // 1. kill -9 of one daemon while messages are being accepted and delivered.
    let started = Instant::now();
    let posting = fleet.post(0..n);
    wait_for(
        "a third of the messages at the provider",
        Duration::from_secs(300),
        async || fleet.provider.request_count() >= n / 3,
    )
    .await;
    fleet.kill9(0);
    let killed_at = fleet.provider.request_count();
    posting.finish().await;
    fleet.wait_all_sent(n, Duration::from_secs(600)).await;
    let elapsed = started.elapsed();
    figure(format!(
        "status callbacks accepted {} of {} requests",
        fleet.provider.reported(),
        fleet.provider.request_count()
    ));
    if sends_by_message(&fleet.provider).values().any(|n| *n > 1) {
        eprintln!("{}", fleet.logs());
    }
    assert_exactly_once(&fleet.provider, 0..n, "kill -9");
    figure(format!(
        "kill -9: {n} messages in {:.1} s ({:.0}/s), one daemon killed after {killed_at} \
         provider requests, {} requests in all",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        fleet.provider.request_count()
    ));
    // The operator (systemd) starts it again.
    fleet.start_daemon(0).await;
    fleet.assert_alive();

    // 2. PostgreSQL stopped in the middle of a run, then started again.
    let second = n..n + n / 2;
    let before = fleet.provider.request_count();
    let posting = fleet.post(second.clone());
    wait_for(
        "some of the second batch at the provider",
        Duration::from_secs(300),
        async || fleet.provider.request_count() >= before + n / 10,
    )
    .await;
    fleet.cluster.stop();
    let stopped = Instant::now();
    for i in 0..DAEMONS {
        let probe_started = Instant::now();
        loop {
            let answer = fleet.ready(i).await;
            if answer == Some(503) {
                break;
            }
            assert!(
                probe_started.elapsed() < Duration::from_secs(60),
                "daemon {i}'s /readyz never said 503 while the database was down (last: \
                 {answer:?})\n{}",
                fleet.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let not_ready_after = stopped.elapsed();
    fleet.cluster.resume();
    let resumed = Instant::now();
    for i in 0..DAEMONS {
        let probe_started = Instant::now();
        while fleet.ready(i).await != Some(200) {
            assert!(
                probe_started.elapsed() < Duration::from_secs(120),
                "daemon {i} not ready again after the database came back\n{}",
                fleet.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let ready_after = resumed.elapsed();
    posting.finish().await;
    let total = second.end;
    fleet.wait_all_sent(total, Duration::from_secs(600)).await;
    let delivered_after = resumed.elapsed();
    if let Some((i, _)) = sends_by_message(&fleet.provider)
        .into_iter()
        .find(|(_, n)| *n > 1)
    {
        let pool = fleet.pool().await;
        let history: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(
            "SELECT e.status, e.source, e.detail, e.created_at FROM delivery_events e
               JOIN deliveries d ON d.id = e.delivery_id JOIN messages m ON m.id = d.message_id
               JOIN idempotency_keys k ON k.message_id = m.id
              WHERE k.key = $1 ORDER BY e.id",
        )
        .bind(format!("fleet-{i}"))
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
        eprintln!("message {i} twice: {history:#?}");
    }
    assert_exactly_once(&fleet.provider, 0..total, "PostgreSQL restart");
    fleet.assert_alive();
    figure(format!(
        "PostgreSQL restart: /readyz 503 on all three {:.1} s after the stop, ready again {:.1} \
         s after the start, all {} delivered {:.1} s after the start",
        not_ready_after.as_secs_f64(),
        ready_after.as_secs_f64(),
        second.len(),
        delivered_after.as_secs_f64()
    ));

    // 3. Provider outage: 503s, then requests that get no answer, then back.
    let third = total..total + 200;
    let outage = outage();
    // The fleet's idle CPU, for comparison: the same daemons with nothing to send.
    let idle_window = Duration::from_secs(8);
    let idle_before = fleet.cpu();
    tokio::time::sleep(idle_window).await;
    let idle_share =
        fleet.cpu().saturating_sub(idle_before).as_secs_f64() / idle_window.as_secs_f64();
    fleet.provider.set_health(Health::Unavailable);
    let outage_started = Instant::now();
    let requests_before = fleet.provider.request_count();
    let posting = fleet.post(third.clone());
    posting.finish().await;
    tokio::time::sleep(outage / 2).await;
    fleet.provider.set_health(Health::Stalled);
    // The CPU is measured over the stalled half: by then the 200 posts and the first
    // attempts' burst of 503s (real work, a few hundred requests in a debug build) are
    // over, and what is left is waiting on the backoff and on requests that get no answer.
    let stalled_started = Instant::now();
    let cpu_before = fleet.cpu();
    tokio::time::sleep(outage - outage / 2).await;
    let cpu_during = fleet.cpu().saturating_sub(cpu_before);
    let stalled_took = stalled_started.elapsed();
    let outage_took = outage_started.elapsed();
    let during: Vec<Received> = fleet.provider.received()[requests_before..].to_vec();
    fleet.provider.set_health(Health::Up);
    let recovered = Instant::now();
    let total = third.end;
    fleet.wait_all_sent(total, Duration::from_secs(300)).await;
    let recovered_after = recovered.elapsed();
    assert_exactly_once(&fleet.provider, 0..total, "provider outage");
    let statuses = fleet.statuses().await;
    assert_eq!(
        statuses.get("sent").copied(),
        Some(total as i64),
        "nothing dead-lettered or failed: {statuses:?}"
    );
    let mut per_message: BTreeMap<usize, usize> = BTreeMap::new();
    for request in &during {
        if let Some(i) = message_number(request) {
            *per_message.entry(i).or_insert(0) += 1;
        }
    }
    let bound = max_attempts_in(outage_took);
    let most = per_message.values().copied().max().unwrap_or(0);
    assert!(
        most <= bound,
        "a delivery was tried {most} times in a {outage_took:?} outage; the backoff allows \
         {bound}"
    );
    assert!(
        during.len() <= third.len() * bound,
        "{} requests during the outage, more than {} deliveries × {bound}",
        during.len(),
        third.len()
    );
    let cpu_share = cpu_during.as_secs_f64() / stalled_took.as_secs_f64();
    // Retrying on the backoff costs little next to the idle polling; a hot loop costs cores.
    assert!(
        cpu_share < idle_share * 2.0 + 0.15,
        "the daemons used {:.0} % of a core while the provider stalled, {:.0} % idle (a hot \
         loop?)",
        cpu_share * 100.0,
        idle_share * 100.0
    );
    figure(format!(
        "provider outage {:.0} s (half 503, half stalled), {} deliveries: {} provider requests \
         (at most {most} per delivery, backoff bound {bound}), daemons' CPU {:.2} s over the \
         stalled half ({:.1} % of one core; {:.1} % idle), all delivered {:.1} s after recovery",
        outage_took.as_secs_f64(),
        third.len(),
        during.len(),
        cpu_during.as_secs_f64(),
        cpu_share * 100.0,
        idle_share * 100.0,
        recovered_after.as_secs_f64()
    ));
    fleet.assert_alive();

    // 4. Cron work once across the fleet: reminders due while three daemons run their cron.
    let reminders = 300;
    {
        let config = switchboard::config::Config::load(Some(&fleet.configs[0])).expect("config");
        let core = switchboard::daemon::Core::open(config).await.expect("core");
        let org = core
            .store
            .organizations()
            .by_slug("north")
            .await
            .expect("organization");
        // Their 2-hour touch is due a minute ago; the earlier touches are long past.
        let start = chrono::Utc::now().timestamp_millis() + 2 * 3_600_000 - 60_000;
        core.store
            .reminders()
            .seed_appointments(&org.id, "fleet", &vec![start; reminders])
            .await
            .expect("seed");
        core.store.close().await;
    }
    let total = total + reminders;
    fleet.wait_all_sent(total, Duration::from_secs(300)).await;
    let mut to: BTreeMap<String, usize> = BTreeMap::new();
    for request in fleet.provider.sends() {
        if message_number(&request).is_none() {
            *to.entry(request.form("To").unwrap_or_default())
                .or_insert(0) += 1;
        }
    }
    assert_eq!(to.len(), reminders, "one reminder per patient");
    assert!(
        to.values().all(|n| *n == 1),
        "a patient got two reminders: {:?}",
        to.iter().find(|(_, n)| **n > 1)
    );
    // Each reminder pass that sent says so in its daemon's log once the pass ends, which is
    // after its last send reached the provider; across the fleet they add up to one send per
    // touch (a pass run twice at once would count touches twice).
    let sent_by_passes = wait_until(
        "the reminder passes' reports",
        Duration::from_secs(60),
        async || {
            let sent: usize = fleet
                .daemons
                .iter()
                .flatten()
                .map(|d| reminder_sends(&d.log_text()))
                .sum();
            (sent >= reminders).then_some(sent)
        },
    )
    .await;
    assert_eq!(sent_by_passes, reminders, "the passes' reports add up");
    fleet.assert_alive();

    for daemon in fleet.daemons.iter_mut().flatten() {
        let status = daemon.terminate(Duration::from_secs(30));
        assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
    }
}

/// A measured figure, printed as it is taken (`cargo test --test fleet -- --nocapture`).
fn figure(text: String) {
    eprintln!("FIGURE {text}");
}

/// The `sent=<n>` of every `reminder run` line of a log.
fn reminder_sends(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("reminder run"))
        .filter_map(|l| {
            let at = l.find(" sent=")? + " sent=".len();
            l[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse::<usize>()
                .ok()
        })
        .sum()
}
