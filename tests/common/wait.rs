//! Waiting in tests: poll a condition until it holds or a deadline passes, or wait for a signal
//! with a deadline. Never a fixed sleep: an absence check ("nothing else was sent") must first
//! wait for something positive that proves the system has gone past the point where the absent
//! thing would have happened (a later marker processed, a pass counter, an empty queue).

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is polled.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it holds; panics after `timeout`, naming `what`.
pub async fn wait_for(what: impl Display, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    wait_until_or(
        what,
        timeout,
        async || check().await.then_some(()),
        String::new,
    )
    .await
}

/// Polls `probe` until it returns a value, and returns it; panics after `timeout`, naming
/// `what`.
pub async fn wait_until<T>(
    what: impl Display,
    timeout: Duration,
    probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    wait_until_or(what, timeout, probe, String::new).await
}

/// [`wait_until`], with `context()` (a log tail, the last state seen) appended to the panic.
pub async fn wait_until_or<T>(
    what: impl Display,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
    context: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}{}",
                context()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits for a signal (a future: a channel, a task, a `Notify`); panics after `timeout`,
/// naming `what`.
pub async fn within<T>(
    what: impl Display,
    timeout: Duration,
    signal: impl Future<Output = T>,
) -> T {
    match tokio::time::timeout(timeout, signal).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}
