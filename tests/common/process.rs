//! The `switchboard` binary as an operator runs it: `switchboard run --config <file>` in its
//! own process, its log (stderr) in a file. The configuration listens on port 0; the daemon's
//! start-up line (`switchboard is running addr=...`) says which port it got. The process is
//! killed when the guard is dropped (a failing assertion must not leave a daemon loading the
//! machine for every later test), and a wait that times out shows the log's warnings, errors
//! and last lines.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::wait::wait_until_or;

/// How long start-up may take (PostgreSQL migrations on a loaded machine).
const START: Duration = Duration::from_secs(60);

/// The `switchboard` binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_switchboard")
}

/// `switchboard <args> --config <config>` (a one-shot command: `keys create`, `migrate`, ...),
/// its stdout trimmed; panics with its stderr if it fails.
pub fn run_command(config: &Path, args: &[&str]) -> String {
    let output = Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("switchboard");
    assert!(
        output.status.success(),
        "switchboard {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A running `switchboard run`, killed (SIGKILL) when dropped.
pub struct Spawned {
    child: Child,
    /// The daemon's log (its stderr).
    pub log: PathBuf,
    /// The address its HTTP API listens on.
    pub addr: SocketAddr,
}

impl Spawned {
    /// `switchboard run --config <config>` with `RUST_LOG=<filter>` (the start-up line is
    /// always logged), stderr to `log`; returns once the daemon says where it listens.
    pub async fn start(config: &Path, log: &Path, filter: &str) -> Self {
        let mut command = Command::new(binary());
        command.args(["run", "--config"]).arg(config);
        Self::start_command(command, log, filter).await
    }

    /// [`Spawned::start`] with the command given (e.g. a shell setting a umask before it
    /// `exec`s the binary: the process is the daemon itself).
    pub async fn start_command(mut command: Command, log: &Path, filter: &str) -> Self {
        let file = std::fs::File::create(log).expect("log file");
        let child = command
            .env("RUST_LOG", format!("{filter},switchboard::daemon=info"))
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn switchboard");
        let mut starting = Starting {
            child: Some(child),
            log: log.to_path_buf(),
        };
        let addr = wait_until_or(
            "the daemon's start-up line",
            START,
            async || {
                if let Some(status) = starting.exited() {
                    panic!(
                        "switchboard exited during start-up ({status}); {}",
                        tail(&starting.log)
                    );
                }
                listening_addr(&read(&starting.log))
            },
            || format!("; {}", tail(log)),
        )
        .await;
        let child = starting.child.take().expect("child");
        Spawned {
            child,
            log: log.to_path_buf(),
            addr,
        }
    }

    /// `http://<addr>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, once the process has ended (reaped).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// `kill -9`, and reaps the process.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// SIGTERM, then waits up to `timeout` for the exit (panics, killing it, if it does not).
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill -TERM");
        assert!(sent.success(), "kill -TERM failed");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if started.elapsed() > timeout {
                let _ = self.child.kill();
                panic!(
                    "the daemon did not exit within {timeout:?} of SIGTERM; {}",
                    tail(&self.log)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        read(&self.log)
    }

    /// Polls `check` until it holds; on timeout the panic shows the log's warnings, errors and
    /// last lines.
    pub async fn wait_for(
        &self,
        what: impl std::fmt::Display,
        timeout: Duration,
        mut check: impl AsyncFnMut() -> bool,
    ) {
        wait_until_or(
            what,
            timeout,
            async || check().await.then_some(()),
            || format!("; {}", tail(&self.log)),
        )
        .await
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The child while it starts: killed if start-up fails.
struct Starting {
    child: Option<Child>,
    log: PathBuf,
}

impl Starting {
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// The address in the start-up line: `... switchboard is running addr=127.0.0.1:8080 ...`
/// (text format) or `"addr":"127.0.0.1:8080"` (JSON format).
fn listening_addr(log: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|l| l.contains("switchboard is running"))?;
    let at = line
        .find("addr=")
        .map(|i| i + "addr=".len())
        .or_else(|| line.find("\"addr\":\"").map(|i| i + "\"addr\":\"".len()))?;
    let addr: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    addr.parse().ok()
}

/// A log's warnings and errors (the first 30) and its last 40 lines, for a panic message.
pub fn tail(log: &Path) -> String {
    let text = read(log);
    let lines: Vec<&str> = text.lines().collect();
    let problems: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .take(30)
        .collect();
    let last = &lines[lines.len().saturating_sub(40)..];
    format!(
        "{} says:\n{}\n... warnings and errors:\n{}",
        log.display(),
        last.join("\n"),
        problems.join("\n")
    )
}
