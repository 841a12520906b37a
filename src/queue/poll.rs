//! The workers' polling tick.
//!
//! apalis's `IntervalStrategy` re-arms its delay when it fires but does not poll the new
//! delay, so the fired tick registers no waker for the next one. When the fetch that tick
//! started has already finished by the time the worker runs (a loaded machine, where the
//! timer's wake and the fetch's completion meet in one poll), the worker parks with nothing
//! to wake it but apalis's heartbeat (10 s): a job queued by another process (`switchboard
//! send`, a second daemon) waited up to 10 s instead of `queue.poll_interval_ms`.
//! [`Interval`] polls each new delay as it arms it, so every tick wakes the worker.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis::prelude::{PollSnapshot, PollStrategy};
use tokio::time::{Instant, Sleep};

/// Wakes the worker every `period`.
pub struct Interval {
    period: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Interval {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            sleep: None,
        }
    }
}

impl PollStrategy for Interval {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let period = self.period;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(period)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // Arm the next tick and register this task's waker with it now: the poll that follows
        // may find nothing and park the worker without polling this strategy again.
        sleep.as_mut().reset(Instant::now() + period);
        let _ = sleep.as_mut().poll(cx);
        Poll::Ready(Some(()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    use tokio::sync::Notify;

    use super::*;

    struct Notifying(Arc<Notify>);

    impl Wake for Notifying {
        fn wake(self: Arc<Self>) {
            self.0.notify_one();
        }
    }

    /// After a tick fires, the next tick wakes the task although nothing polls the strategy
    /// in between (apalis's `IntervalStrategy` leaves it asleep until its heartbeat).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_tick_wakes_the_worker_without_another_poll() {
        let notify = Arc::new(Notify::new());
        let waker = Waker::from(Arc::new(Notifying(notify.clone())));
        let mut cx = Context::from_waker(&waker);
        let mut interval = Interval::new(Duration::from_millis(50));
        let snapshot = PollSnapshot::new();
        assert!(interval.poll_drive(&mut cx, &snapshot).is_pending());
        tokio::time::timeout(Duration::from_secs(5), notify.notified())
            .await
            .expect("the first tick woke the task");
        assert!(interval.poll_drive(&mut cx, &snapshot).is_ready());
        // Nothing polls the strategy now (the fetch found nothing and the worker parked).
        tokio::time::timeout(Duration::from_secs(5), notify.notified())
            .await
            .expect("the next tick woke the task");
        assert!(interval.poll_drive(&mut cx, &snapshot).is_ready());
    }
}
