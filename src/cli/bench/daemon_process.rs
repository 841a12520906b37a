//! A daemon in its own process (`switchboard run`) for the benchmarks that report memory: its
//! RSS (`/proc/<pid>/status`) is then the daemon's alone, not the bench client's as well.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// `switchboard run` on a database, with the production defaults (its configuration is the
/// environment below: nothing but where the data is and where to listen).
pub struct DaemonProcess {
    child: tokio::process::Child,
    pid: u32,
    started: Instant,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl DaemonProcess {
    /// Starts it on `url` with `dir` as its data directory (its outbox is `dir/outbox`) and
    /// waits until `/readyz` answers.
    pub async fn start(url: &str, dir: &Path) -> Result<Self> {
        let binary = super::daemon_binary().context("the switchboard binary")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let started = Instant::now();
        let child = tokio::process::Command::new(binary)
            .arg("run")
            .env("SWITCHBOARD_DATA_DIR", dir)
            .env("SWITCHBOARD_DATABASE__URL", url)
            .env("SWITCHBOARD_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start switchboard run")?;
        let pid = child.id().context("daemon pid")?;
        let daemon = Self {
            child,
            pid,
            started,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let up = Instant::now() + Duration::from_secs(30);
        while client
            .get(format!("{}/readyz", daemon.base))
            .send()
            .await
            .map_or(true, |r| !r.status().is_success())
        {
            if Instant::now() > up {
                bail!("the daemon did not start");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(daemon)
    }

    /// Its resident memory at rest: read `settle` after it was started (and at least once
    /// ready), when its start-up work (migrations, the sweeper's first pass, the pool's first
    /// connections) is over.
    /// Also the anonymous part of it (RssAnon), read at the same moment.
    pub async fn idle_rss(&self, settle: Duration) -> (Option<u64>, Option<u64>) {
        tokio::time::sleep_until((self.started + settle).into()).await;
        (
            switchboard::process::rss_bytes_of(self.pid),
            switchboard::process::anon_rss_bytes_of(self.pid),
        )
    }

    /// Its peak resident memory so far (VmHWM).
    pub fn peak_rss(&self) -> Option<u64> {
        switchboard::process::peak_rss_bytes_of(self.pid)
    }

    /// The CPU time it has used so far (user + system).
    pub fn cpu_time(&self) -> Option<Duration> {
        switchboard::process::cpu_time_of(self.pid)
    }

    /// Stops it (SIGKILL: what it had to do is done and recorded).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Megabytes, or `n/a` where `/proc` could not be read.
pub fn mb(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".to_string(), |b| format!("{:.1} MB", b as f64 / 1e6))
}
