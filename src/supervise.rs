//! Supervision of the daemon's long-lived background tasks (reminder cron, urgent notifier,
//! sweeper, reconciler, bounce and Direct pollers, Direct expiry, the HL7 accept loop).
//!
//! [`supervise`] runs a task built by a factory in its own tokio task. If the task panics, or
//! ends (with an error or without) while the daemon is not shutting down, the supervisor logs
//! it (task name and attempt only: a panic message may quote input, so it is not logged here;
//! the process's panic hook already wrote it to stderr), counts it in [`TaskMetrics`] (shown
//! at `/metrics` as `switchboard_task_panics_total` and `switchboard_task_restarts_total`), and
//! builds and starts the task again after a backoff: 1 s, doubling up to 60 s, back to 1 s once
//! a run has stayed up for 60 s. Tasks stop themselves on the shutdown token; the supervisor
//! then returns, so awaiting it is awaiting the task (the daemon's ordered shutdown).
//!
//! The supervisor does not know what a task holds: a task that holds a lease releases it when
//! it fails (the reminder cron releases the `reminders` lease before it re-raises a panicking
//! pass, see `reminders::cron`).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// First restart delay; doubled after every failure up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest restart delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A run that stayed up this long was healthy: the next failure starts over at 1 s.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// Panics and restarts per task, for `/metrics`. Cheap to clone; one per daemon.
#[derive(Debug, Clone, Default)]
pub struct TaskMetrics {
    tasks: Arc<Mutex<BTreeMap<String, TaskCounts>>>,
}

/// What happened to one task so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskCounts {
    /// Times the task panicked.
    pub panics: u64,
    /// Times the supervisor started it again (after a panic, an error or an unexpected end).
    pub restarts: u64,
}

impl TaskMetrics {
    fn with<R>(&self, task: &str, f: impl FnOnce(&mut TaskCounts) -> R) -> R {
        // A poisoned map still holds valid counters.
        let mut tasks = self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(tasks.entry(task.to_string()).or_default())
    }

    /// Makes the task show in `/metrics` with zero counts.
    pub fn register(&self, task: &str) {
        self.with(task, |_| ());
    }

    /// Counts a panic of `task` (also usable by layers that catch panics themselves).
    pub fn record_panic(&self, task: &str) {
        self.with(task, |c| c.panics += 1);
    }

    /// Counts a restart of `task`.
    pub fn record_restart(&self, task: &str) {
        self.with(task, |c| c.restarts += 1);
    }

    pub fn counts(&self, task: &str) -> TaskCounts {
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(task)
            .copied()
            .unwrap_or_default()
    }

    /// These counters alone in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut text = String::new();
        // Writing to a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }

    fn snapshot(&self) -> BTreeMap<String, TaskCounts> {
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// `switchboard_task_panics_total` and `switchboard_task_restarts_total`, per `task`.
impl prometheus_client::collector::Collector for TaskMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::counter::ConstCounter;
        let tasks = self.snapshot();
        type Family = (&'static str, &'static str, fn(&TaskCounts) -> u64);
        let families: [Family; 2] = [
            (
                "switchboard_task_panics",
                "Panics of a supervised background task.",
                |c| c.panics,
            ),
            (
                "switchboard_task_restarts",
                "Restarts of a supervised background task after a panic, an error or an unexpected end.",
                |c| c.restarts,
            ),
        ];
        for (name, help, value) in families {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (task, counts) in &tasks {
                ConstCounter::new(value(counts))
                    .encode(family.encode_family(&[("task", task.as_str())])?)?;
            }
        }
        Ok(())
    }
}

/// How a task ended: `()` or `Result<(), E>`.
pub trait TaskExit {
    /// `Err` with a description when the task reported an error.
    fn into_result(self) -> Result<(), String>;
}

impl TaskExit for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: std::fmt::Display> TaskExit for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// The daemon's shutdown token and counters, handed to every supervised task.
#[derive(Clone)]
pub struct Supervisor {
    pub shutdown: CancellationToken,
    pub metrics: TaskMetrics,
}

impl Supervisor {
    pub fn new(shutdown: CancellationToken, metrics: TaskMetrics) -> Self {
        Self { shutdown, metrics }
    }

    /// Spawns [`supervise`] for `name`; the handle ends when the task has stopped for good.
    pub fn spawn<F, Fut>(&self, name: impl Into<String>, factory: F) -> JoinHandle<()>
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: TaskExit + Send + 'static,
    {
        tokio::spawn(supervise(
            name.into(),
            self.shutdown.clone(),
            self.metrics.clone(),
            factory,
        ))
    }
}

/// Runs `factory(shutdown)` until `shutdown`, restarting it with backoff when it panics or
/// ends while the daemon is not shutting down. Returns once the task has ended after
/// `shutdown`. The task must end soon after `shutdown` is cancelled.
pub async fn supervise<F, Fut>(
    name: String,
    shutdown: CancellationToken,
    metrics: TaskMetrics,
    mut factory: F,
) where
    F: FnMut(CancellationToken) -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: TaskExit + Send + 'static,
{
    metrics.register(&name);
    let mut delay = INITIAL_BACKOFF;
    let mut attempt: u64 = 0;
    loop {
        let started = Instant::now();
        let joined = tokio::spawn(factory(shutdown.clone())).await;
        let stopping = shutdown.is_cancelled();
        match joined {
            Ok(exit) => match exit.into_result() {
                Ok(()) if stopping => return,
                Ok(()) => warn!(task = %name, "background task ended unexpectedly"),
                Err(_) if stopping => return,
                Err(e) => warn!(task = %name, error = %e, "background task failed"),
            },
            Err(e) if e.is_panic() => {
                metrics.record_panic(&name);
                error!(task = %name, "background task panicked");
                if stopping {
                    return;
                }
            }
            // Cancelled: the runtime is going away.
            Err(_) => return,
        }
        if started.elapsed() >= HEALTHY_AFTER {
            delay = INITIAL_BACKOFF;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = delay.saturating_mul(2).min(MAX_BACKOFF);
        attempt += 1;
        metrics.record_restart(&name);
        info!(task = %name, attempt, "restarting background task");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A task that panics on its first run is restarted after the backoff, and the counters
    /// (as `/metrics` shows them) say so; shutdown then ends the supervisor.
    #[tokio::test(start_paused = true)]
    async fn supervise_restarts_a_panicking_task_and_counts_it() {
        let metrics = TaskMetrics::default();
        let shutdown = CancellationToken::new();
        let runs = Arc::new(AtomicU32::new(0));
        let supervisor = Supervisor::new(shutdown.clone(), metrics.clone());
        let handle = supervisor.spawn("flaky", {
            let runs = runs.clone();
            move |stop: CancellationToken| {
                let run = runs.fetch_add(1, Ordering::SeqCst);
                async move {
                    if run == 0 {
                        panic!("first run fails");
                    }
                    stop.cancelled().await;
                }
            }
        });
        let started = Instant::now();
        while runs.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            started.elapsed() >= INITIAL_BACKOFF,
            "restarted after the backoff"
        );
        assert_eq!(
            metrics.counts("flaky"),
            TaskCounts {
                panics: 1,
                restarts: 1
            }
        );
        let text = metrics.render();
        assert!(text.contains("switchboard_task_panics_total{task=\"flaky\"} 1\n"));
        assert!(text.contains("switchboard_task_restarts_total{task=\"flaky\"} 1\n"));
        shutdown.cancel();
        handle.await.expect("the supervisor ends at shutdown");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    /// Failures back off 1 s, 2 s, 4 s...; a run that stays up a minute resets the delay.
    #[tokio::test(start_paused = true)]
    async fn supervise_backs_off_and_resets_after_a_healthy_run() {
        let metrics = TaskMetrics::default();
        let shutdown = CancellationToken::new();
        let starts = Arc::new(Mutex::new(Vec::new()));
        let handle = Supervisor::new(shutdown.clone(), metrics.clone()).spawn("erring", {
            let starts = starts.clone();
            move |_| {
                let run = {
                    let mut starts = starts.lock().unwrap();
                    starts.push(Instant::now());
                    starts.len()
                };
                async move {
                    // Runs 1-3 fail at once, run 4 stays up 90 s then fails, run 5 fails.
                    if run == 4 {
                        tokio::time::sleep(Duration::from_secs(90)).await;
                    }
                    Err::<(), _>("broken")
                }
            }
        });
        while starts.lock().unwrap().len() < 6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        shutdown.cancel();
        handle.await.unwrap();
        let starts = starts.lock().unwrap().clone();
        let gaps: Vec<u64> = starts.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
        assert_eq!(gaps, vec![1, 2, 4, 90 + 1, 2]);
        assert_eq!(metrics.counts("erring").panics, 0);
        assert!(metrics.counts("erring").restarts >= 5);
    }

    /// A task that ends at shutdown is not restarted and not counted.
    #[tokio::test(start_paused = true)]
    async fn supervise_stops_with_the_daemon() {
        let metrics = TaskMetrics::default();
        let shutdown = CancellationToken::new();
        let handle = Supervisor::new(shutdown.clone(), metrics.clone())
            .spawn("steady", |stop: CancellationToken| async move {
                stop.cancelled().await
            });
        tokio::task::yield_now().await;
        shutdown.cancel();
        handle.await.unwrap();
        assert_eq!(metrics.counts("steady"), TaskCounts::default());
        assert!(
            metrics
                .render()
                .contains("switchboard_task_restarts_total{task=\"steady\"} 0\n")
        );
    }
}
