//! Retry backoff: exponential from the channel's initial delay, doubling per attempt, capped
//! at its maximum, with ±20 % jitter so a provider outage does not end in a thundering herd.

use std::time::Duration;

use crate::config::ChannelConfig;

/// Delay before attempt `attempt + 1`, after `attempt` (1-based) failed transiently.
pub fn backoff(config: &ChannelConfig, attempt: i64) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(30);
    let base = config.backoff_initial_ms.saturating_mul(1u64 << exponent);
    let capped = base.min(config.backoff_max_secs.saturating_mul(1000));
    let jitter = 0.8 + 0.4 * random_unit();
    Duration::from_millis((capped as f64 * jitter) as u64)
}

fn random_unit() -> f64 {
    let mut bytes = [0u8; 4];
    if openssl::rand::rand_bytes(&mut bytes).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_and_caps() {
        let config = ChannelConfig {
            backoff_initial_ms: 1_000,
            backoff_max_secs: 10,
            ..ChannelConfig::default()
        };
        let first = backoff(&config, 1).as_millis();
        assert!((800..=1200).contains(&first), "{first}");
        let third = backoff(&config, 3).as_millis();
        assert!((3_200..=4_800).contains(&third), "{third}");
        let late = backoff(&config, 40).as_millis();
        assert!((8_000..=12_000).contains(&late), "{late}");
    }
}
