//! Progress bars (indicatif) for long runs: `campaign run`, `reminders run`, `hl7 send`,
//! `bench`. Drawn on stderr only when it is a terminal (hidden under systemd, in CI, in a pipe);
//! log lines go through [`LogWriter`], which lifts the active bar while a line is written, so
//! a bar and a log line never share a terminal line.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bar on screen, if any: the log writer suspends it.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// A bar registered as the active one until dropped (then cleared from the screen).
pub struct Bar(ProgressBar);

impl std::ops::Deref for Bar {
    type Target = ProgressBar;
    fn deref(&self) -> &ProgressBar {
        &self.0
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
        if let Ok(mut active) = ACTIVE.lock() {
            *active = None;
        }
    }
}

fn register(bar: ProgressBar) -> Bar {
    if let Ok(mut active) = ACTIVE.lock() {
        *active = Some(bar.clone());
    }
    Bar(bar)
}

/// A bar of `total` steps: `message [=====>    ] 12/40 00:03`.
pub fn bar(total: u64, message: &'static str) -> Bar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message);
    register(bar)
}

/// A spinner for a run whose length is not known: `message ⠋ 00:03`.
pub fn spinner(message: impl Into<std::borrow::Cow<'static, str>>) -> Bar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed_precise}") {
        bar.set_style(style);
    }
    bar.set_message(message);
    if !bar.is_hidden() {
        bar.enable_steady_tick(Duration::from_millis(120));
    }
    register(bar)
}

/// Runs `f` (which writes to the terminal: a result line on stdout) with the active bar
/// lifted, then redraws it.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    let active = ACTIVE.lock().ok().and_then(|a| a.clone());
    match active {
        Some(bar) if !bar.is_hidden() => bar.suspend(f),
        _ => f(),
    }
}

/// Standard error for the log: each write lifts the active bar, writes, and redraws it.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let active = ACTIVE.lock().ok().and_then(|a| a.clone());
        match active {
            Some(bar) if !bar.is_hidden() => bar
                .suspend(|| std::io::stderr().lock().write_all(buf))
                .map(|()| buf.len()),
            _ => std::io::stderr().lock().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
