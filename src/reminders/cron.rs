//! The scheduled reminder run: an apalis-cron worker ticking on `reminders.schedule` (a cron
//! expression in UTC, seconds field first; every minute by default), plus one pass at start-up
//! so a restarted daemon does not wait for the next tick.
//!
//! Each tick takes (or renews) the `reminders` lease and, if this daemon holds it, runs one
//! pass ([`Reminders::run_once`]) while renewing the lease every third of its lifetime, so a
//! pass longer than the lease never lets another daemon in. The lease is kept between ticks
//! (the fleet's runs stay on one daemon) and released at shutdown; a dead holder's lease
//! expires after five schedule periods (at least 5 s, at most 10 min). A tick that arrives
//! while this process's previous pass is still going is skipped, never run alongside it.
//! Shutdown stops the worker, lets a pass in progress finish, then releases the lease.
//!
//! A pass that panics (a bug: planning isolates each organization, see [`super::Reminders::plan`])
//! releases the lease at once, so another daemon can take the next tick, and stops this run
//! with the same panic: the daemon's supervisor (`crate::supervise`) counts it and starts the
//! scheduler again after a backoff. A panic anywhere else in the run releases the lease too.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis::prelude::{BoxDynError, Data, WorkerBuilder};
use apalis_cron::{CronScheduler, Tick};
use chrono::Utc;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{LEASE, Reminders, RunReport};

/// Shortest and longest lease of the scheduled run.
const MIN_LEASE_MS: i64 = 5_000;
const MAX_LEASE_MS: i64 = 600_000;

/// Five times the gap between the schedule's next two ticks, within [5 s, 10 min].
pub fn lease_ttl_ms(schedule: &cron::Schedule) -> i64 {
    let mut upcoming = schedule.upcoming(Utc);
    let period = match (upcoming.next(), upcoming.next()) {
        (Some(a), Some(b)) => (b - a).num_milliseconds(),
        _ => MAX_LEASE_MS,
    };
    period.saturating_mul(5).clamp(MIN_LEASE_MS, MAX_LEASE_MS)
}

/// What the scheduler of one process has done (tests, diagnostics).
#[derive(Debug, Default)]
pub struct CronStats {
    passes: AtomicU64,
    leased_elsewhere: AtomicU64,
    overlapping: AtomicU64,
    failed: AtomicU64,
}

/// A snapshot of [`CronStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CronCounts {
    /// Passes run (this process held the lease).
    pub passes: u64,
    /// Ticks skipped because another daemon holds the lease.
    pub leased_elsewhere: u64,
    /// Ticks skipped because this process's previous pass was still going.
    pub overlapping: u64,
    /// Passes (or lease look-ups) that failed, panics included; the next tick tries again.
    pub failed: u64,
}

impl CronStats {
    pub fn counts(&self) -> CronCounts {
        CronCounts {
            passes: self.passes.load(Ordering::Relaxed),
            leased_elsewhere: self.leased_elsewhere.load(Ordering::Relaxed),
            overlapping: self.overlapping.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// The scheduled run of one daemon. A clone shares the holder and statistics (the supervisor
/// restarts a clone).
#[derive(Clone)]
pub struct ReminderCron {
    runner: Arc<Runner>,
    schedule: cron::Schedule,
}

struct Runner {
    reminders: Reminders,
    holder: String,
    ttl_ms: i64,
    busy: tokio::sync::Mutex<()>,
    stats: Arc<CronStats>,
    /// The panic of a pass, re-raised by [`ReminderCron::run`] once the lease is released.
    panicked: Mutex<Option<Box<dyn Any + Send>>>,
    /// Wakes the run when a pass panicked.
    pass_panicked: tokio::sync::Notify,
    /// Tests: the next pass panics.
    #[cfg(test)]
    panic_next: std::sync::atomic::AtomicBool,
}

impl ReminderCron {
    /// A scheduler for `reminders`, holding the lease as `holder` (unique per process).
    pub fn new(reminders: Reminders, holder: String, schedule: cron::Schedule) -> Self {
        let ttl_ms = lease_ttl_ms(&schedule);
        Self {
            runner: Arc::new(Runner {
                reminders,
                holder,
                ttl_ms,
                busy: tokio::sync::Mutex::new(()),
                stats: Arc::new(CronStats::default()),
                panicked: Mutex::new(None),
                pass_panicked: tokio::sync::Notify::new(),
                #[cfg(test)]
                panic_next: std::sync::atomic::AtomicBool::new(false),
            }),
            schedule,
        }
    }

    pub fn stats(&self) -> Arc<CronStats> {
        self.runner.stats.clone()
    }

    /// Runs until `shutdown`: the start-up pass, then a pass per tick; then releases the lease.
    /// If a pass (or the scheduler) panicked, releases the lease and re-raises the panic.
    pub async fn run(self, shutdown: CancellationToken) {
        let runner = self.runner.clone();
        let outcome = AssertUnwindSafe(self.run_schedule(shutdown))
            .catch_unwind()
            .await;
        // A pass still going (it started before the worker stopped) ends before the release.
        let guard = runner.busy.lock().await;
        if let Err(e) = runner
            .reminders
            .store
            .leases()
            .release(LEASE, &runner.holder)
            .await
        {
            warn!(error = %e, "releasing the reminder lease");
        }
        drop(guard);
        let panicked = match outcome {
            Err(payload) => Some(payload),
            Ok(()) => runner.take_panic(),
        };
        if let Some(payload) = panicked {
            std::panic::resume_unwind(payload);
        }
    }

    /// The start-up pass and the cron worker, until `shutdown` or a pass panicked.
    async fn run_schedule(self, shutdown: CancellationToken) {
        let runner = self.runner;
        // Rules may have changed with the configuration: the first pass looks at everything.
        if let Err(e) = runner.reminders.replan_all().await {
            warn!(error = %e, "reminder cursors");
        }
        let first = tokio::spawn({
            let runner = runner.clone();
            async move { runner.tick().await }
        });
        let name = format!("{}:reminders", runner.holder);
        while !shutdown.is_cancelled() && !runner.has_panicked() {
            let worker = WorkerBuilder::new(name.clone())
                .backend(CronScheduler::new(self.schedule.clone()))
                .data(runner.clone())
                .build(on_tick);
            let signal = shutdown.clone();
            let watched = runner.clone();
            let stopped = worker
                .run_until(async move {
                    tokio::select! {
                        _ = signal.cancelled() => {}
                        _ = watched.pass_panicked.notified() => {}
                    }
                    Ok::<(), std::io::Error>(())
                })
                .await;
            match stopped {
                // Shutdown or a panicked pass (the loop condition tells which).
                Ok(()) => {}
                Err(e) => {
                    // A backend error (a tick out of range after a clock jump) ends the worker;
                    // start a new one rather than stop reminding.
                    warn!(error = %e, "reminder scheduler stopped; restarting it");
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        let _ = first.await;
    }
}

async fn on_tick(tick: Tick, runner: Data<Arc<Runner>>) -> Result<(), BoxDynError> {
    debug!(tick = tick.get_timestamp(), "reminder tick");
    runner.tick().await;
    Ok(())
}

impl Runner {
    fn has_panicked(&self) -> bool {
        self.panicked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }

    fn take_panic(&self) -> Option<Box<dyn Any + Send>> {
        self.panicked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// One tick: skip if a pass is going here or the lease is held elsewhere, else one pass.
    async fn tick(&self) {
        let Ok(_guard) = self.busy.try_lock() else {
            self.stats.overlapping.fetch_add(1, Ordering::Relaxed);
            debug!("reminder pass still running; tick skipped");
            return;
        };
        let store = &self.reminders.store;
        match store.leases().take(LEASE, &self.holder, self.ttl_ms).await {
            Ok(true) => {}
            Ok(false) => {
                self.stats.leased_elsewhere.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "reminder lease");
                return;
            }
        }
        let started_at = crate::store::now_ms();
        let pass = AssertUnwindSafe(async {
            #[cfg(test)]
            if self.panic_next.swap(false, Ordering::SeqCst) {
                panic!("reminder pass panicked (test)");
            }
            self.reminders.run_once(Utc::now()).await
        })
        .catch_unwind();
        tokio::pin!(pass);
        let renew_every = Duration::from_millis(u64::try_from(self.ttl_ms / 3).unwrap_or(1_000));
        let mut renew =
            tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
        let result = loop {
            tokio::select! {
                result = &mut pass => break result,
                _ = renew.tick() => match store.leases().take(LEASE, &self.holder, self.ttl_ms).await {
                    Ok(true) => {}
                    Ok(false) => warn!("reminder lease taken by another daemon during a pass"),
                    Err(e) => warn!(error = %e, "renewing the reminder lease"),
                },
            }
        };
        self.stats.passes.fetch_add(1, Ordering::Relaxed);
        let result = match result {
            Ok(result) => result,
            Err(payload) => {
                // Let another daemon in now rather than when the lease expires.
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                error!("reminder pass panicked; lease released");
                if let Err(e) = store.leases().release(LEASE, &self.holder).await {
                    warn!(error = %e, "releasing the reminder lease");
                }
                *self
                    .panicked
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(payload);
                self.pass_panicked.notify_one();
                return;
            }
        };
        let (outcome, counts) = match &result {
            Ok(report) => ("ok", report.clone()),
            Err(_) => ("failed", RunReport::default()),
        };
        let run = crate::store::ScheduledRunRow {
            name: LEASE.into(),
            holder: self.holder.clone(),
            started_at,
            finished_at: crate::store::now_ms(),
            outcome: outcome.into(),
            report: serde_json::to_string(&counts).unwrap_or_default(),
        };
        if let Err(e) = store.leases().record_run(&run).await {
            warn!(error = %e, "recording the reminder run");
        }
        match result {
            Ok(report) if report != RunReport::default() => {
                info!(
                    planned = report.planned,
                    sent = report.sent,
                    skipped = report.skipped,
                    cancelled = report.cancelled,
                    campaign_sent = report.campaign_sent,
                    campaign_skipped = report.campaign_skipped,
                    "reminder run"
                );
            }
            Ok(_) => {}
            Err(e) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "reminder run failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_schedule(expression: &str) -> Result<cron::Schedule, crate::config::ConfigError> {
        crate::config::RemindersConfig {
            schedule: expression.into(),
            ..Default::default()
        }
        .cron_schedule()
    }

    #[test]
    fn reminders_schedule_parses_with_seconds_first() {
        assert!(parse_schedule("0 * * * * *").is_ok());
        assert!(parse_schedule("*/15 * * * * *").is_ok());
        assert!(parse_schedule("0 0 8 * * Mon-Fri").is_ok());
        // Five fields (no seconds) and nonsense are refused.
        assert!(parse_schedule("* * * * *").is_err());
        assert!(parse_schedule("every minute").is_err());
        // A year in the past never fires.
        assert!(parse_schedule("0 0 0 1 1 * 2001").is_err());
    }

    /// A tick while this process's pass is going is skipped; the next one runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reminders_tick_during_a_pass_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = crate::config::Config::from_toml("").expect("config");
        config.data_dir = dir.path().to_path_buf();
        config.outbox.dir = dir.path().join("outbox");
        let core = crate::daemon::Core::open(config).await.expect("core");
        let reminders = core.reminders(core.templates().expect("templates"));
        let cron = ReminderCron::new(
            reminders,
            "node:test".into(),
            parse_schedule("* * * * * *").expect("schedule"),
        );
        let runner = cron.runner.clone();
        {
            let _pass = runner.busy.lock().await;
            runner.tick().await;
        }
        let counts = cron.stats().counts();
        assert_eq!((counts.passes, counts.overlapping), (0, 1));
        runner.tick().await;
        let counts = cron.stats().counts();
        assert_eq!(
            (counts.passes, counts.overlapping, counts.failed),
            (1, 1, 0)
        );
        let lease = core.store.leases().get(LEASE).await.expect("lease");
        assert_eq!(
            lease.map(|(holder, _)| holder).as_deref(),
            Some("node:test")
        );
        core.store.close().await;
    }

    /// A pass that panics releases the reminder lease at once (another daemon can take it
    /// without waiting out the five-minute lease of this schedule), the supervisor counts the
    /// panic and restarts the scheduler, which then runs passes again.
    async fn a_panicking_pass_releases_the_lease(postgres: bool) {
        use crate::supervise::{Supervisor, TaskMetrics};

        let dir = tempfile::tempdir().expect("tempdir");
        let (core, guard) = crate::testing::core_on(postgres, dir.path()).await;
        let reminders = core.reminders(core.templates().expect("templates"));
        // Every minute: the lease lasts five minutes, far longer than this test waits.
        let schedule = parse_schedule("0 * * * * *").expect("schedule");
        let ttl = lease_ttl_ms(&schedule);
        assert_eq!(ttl, 300_000);
        let cron = ReminderCron::new(reminders, "node-a:1".into(), schedule);
        let stats = cron.stats();
        cron.runner.panic_next.store(true, Ordering::SeqCst);
        let metrics = TaskMetrics::default();
        let shutdown = CancellationToken::new();
        let supervised = Supervisor::new(shutdown.clone(), metrics.clone())
            .spawn("reminders", move |stop| cron.clone().run(stop));

        let started = std::time::Instant::now();
        while metrics.counts("reminders").panics == 0 {
            assert!(started.elapsed() < Duration::from_secs(20), "no panic seen");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The supervisor waits a second before the restart: the lease is free now.
        assert!(
            core.store
                .leases()
                .take(LEASE, "node-b:1", ttl)
                .await
                .expect("lease"),
            "another daemon takes the lease right after the panic"
        );
        core.store
            .leases()
            .release(LEASE, "node-b:1")
            .await
            .expect("release");
        // Restarted: the start-up pass of the new run goes through.
        while stats.counts().passes < 2 || metrics.counts("reminders").restarts == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "not restarted: {:?} {:?}",
                stats.counts(),
                metrics.counts("reminders")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(stats.counts().failed, 1);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), supervised)
            .await
            .expect("stops")
            .expect("supervisor");
        assert_eq!(core.store.leases().get(LEASE).await.expect("lease"), None);
        crate::testing::close(core, guard).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reminders_panicking_pass_releases_the_lease_sqlite() {
        a_panicking_pass_releases_the_lease(false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reminders_panicking_pass_releases_the_lease_postgres() {
        a_panicking_pass_releases_the_lease(true).await;
    }

    #[test]
    fn reminders_lease_is_five_periods_within_bounds() {
        let every = |e: &str| lease_ttl_ms(&parse_schedule(e).unwrap());
        assert_eq!(every("0 * * * * *"), 300_000);
        assert_eq!(every("* * * * * *"), 5_000);
        assert_eq!(every("*/30 * * * * *"), 150_000);
        assert_eq!(every("0 0 8 * * *"), 600_000);
    }
}
