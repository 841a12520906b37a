//! A token bucket for per-connector send rates (messages per second), shared by every worker
//! of a daemon. Waiters queue fairly: each takes the next free slot.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimiter {
    /// `None` when `rate` is 0 or negative (unlimited).
    pub fn per_second(rate: f64) -> Option<Self> {
        (rate > 0.0 && rate.is_finite()).then(|| Self {
            interval: Duration::from_secs_f64(1.0 / rate),
            next: Mutex::new(Instant::now()),
        })
    }

    /// Waits for the next slot.
    pub async fn acquire(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spaces_calls_by_the_interval() {
        let limiter = RateLimiter::per_second(10.0).unwrap();
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        // First immediately, then 4 × 100 ms.
        assert_eq!(start.elapsed(), Duration::from_millis(400));
        assert!(RateLimiter::per_second(0.0).is_none());
    }
}
