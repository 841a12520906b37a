//! Send-rate limits (messages per second) for connectors and SMTP relays, shared by every
//! worker of a daemon: `governor`'s generic cell rate algorithm (a token bucket without a
//! timer task), behind the one shape the channels need.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota};

#[derive(Debug)]
pub struct RateLimiter {
    inner: DefaultDirectRateLimiter,
}

impl RateLimiter {
    /// `rate` messages per second, at most `burst` at once after an idle spell (at least one).
    /// `None` when `rate` is 0, negative or not finite (unlimited).
    pub fn per_second(rate: f64, burst: u32) -> Option<Self> {
        if !(rate > 0.0 && rate.is_finite()) {
            return None;
        }
        let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::new(burst.max(1))?);
        Some(Self {
            inner: DefaultDirectRateLimiter::direct(quota),
        })
    }

    /// Waits for the next slot.
    pub async fn acquire(&self) {
        self.inner.until_ready().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[tokio::test]
    async fn spaces_calls_by_the_interval_without_a_burst() {
        let limiter = RateLimiter::per_second(50.0, 1).expect("limited");
        let start = Instant::now();
        for _ in 0..6 {
            limiter.acquire().await;
        }
        // The first at once, then five 20 ms intervals.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(95), "{elapsed:?}");
    }

    #[tokio::test]
    async fn paces_to_the_rate_after_the_burst() {
        let limiter = RateLimiter::per_second(20.0, 20).expect("limited");
        let start = Instant::now();
        for _ in 0..20 {
            limiter.acquire().await;
        }
        let burst = start.elapsed();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        // Twenty at once (the burst), then one every 50 ms.
        let elapsed = start.elapsed();
        assert!(burst < Duration::from_millis(200), "{burst:?}");
        assert!(elapsed >= Duration::from_millis(245), "{elapsed:?}");
    }

    #[test]
    fn a_fraction_of_one_per_second_is_a_rate_too() {
        let limiter = RateLimiter::per_second(0.5, 1).expect("limited");
        assert!(limiter.inner.check().is_ok());
        assert!(limiter.inner.check().is_err(), "the next in two seconds");
    }

    #[test]
    fn zero_negative_and_nan_are_unlimited() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(RateLimiter::per_second(rate, 1).is_none(), "{rate}");
        }
    }
}
