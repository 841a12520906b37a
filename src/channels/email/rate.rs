//! A token bucket that paces sends through one connector to `rate_per_sec` messages per
//! second, with a burst of at most one second's worth (at least one message).

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// An async token bucket; `acquire` waits until a token is available.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    capacity: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// `None` when `rate_per_sec` is 0 (or negative / not finite): unlimited.
    pub(crate) fn new(rate_per_sec: f64) -> Option<Self> {
        if !rate_per_sec.is_finite() || rate_per_sec <= 0.0 {
            return None;
        }
        let capacity = rate_per_sec.max(1.0);
        Some(Self {
            rate: rate_per_sec,
            capacity,
            state: Mutex::new((capacity, Instant::now())),
        })
    }

    /// Takes one token, waiting for it if the bucket is empty.
    pub(crate) async fn acquire(&self) {
        loop {
            let wait = {
                let mut state = self.state.lock().await;
                let (tokens, last) = &mut *state;
                let now = Instant::now();
                *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate)
                    .min(self.capacity);
                *last = now;
                if *tokens >= 1.0 {
                    *tokens -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - *tokens) / self.rate)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn paces_to_the_rate_after_the_burst() {
        let limiter = RateLimiter::new(20.0).expect("limited");
        let start = Instant::now();
        for _ in 0..25 {
            limiter.acquire().await;
        }
        // Twenty tokens at once (the burst), then one every 50 ms.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(1_000), "{elapsed:?}");
    }

    #[test]
    fn zero_is_unlimited() {
        assert!(RateLimiter::new(0.0).is_none());
    }
}
