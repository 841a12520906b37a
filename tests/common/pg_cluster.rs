//! A PostgreSQL cluster of the test's own: `initdb` into a temporary folder, `pg_ctl` start,
//! stop and restart on a free loopback port, as the `postgres` user (trust authentication).
//! A test may stop and restart it (the shared server on 5432 is never touched); the cluster is
//! stopped and its folder removed when the guard is dropped, also when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where Debian's PostgreSQL 15 server binaries are.
const BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct PgCluster {
    /// Owns the folder (data, socket, log); removed on drop.
    dir: tempfile::TempDir,
    pub port: u16,
}

impl PgCluster {
    /// Whether the server binaries are installed (tests skip, saying so, when they are not).
    pub fn available() -> bool {
        Path::new(BIN).join("initdb").exists() && Path::new(BIN).join("pg_ctl").exists()
    }

    /// `initdb` and start; panics (with the server's log) if either fails.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sb-pg-")
            .tempdir()
            .expect("tempdir");
        // The server runs as `postgres`: it must own the folder.
        let chown = Command::new("chown")
            .arg("postgres:postgres")
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(chown.success(), "chown the cluster folder to postgres");
        let cluster = PgCluster {
            dir,
            port: super::ports::free_port(),
        };
        let data = cluster.data();
        let out = cluster.as_postgres(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.pg_ctl_start();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn as_postgres(&self, program: &str, args: &[&str]) -> Output {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(Path::new(BIN).join(program))
            .args(args)
            .output()
            .expect("runuser")
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let data = self.data().display().to_string();
        let mut all = vec!["-D", data.as_str()];
        all.extend_from_slice(args);
        self.as_postgres("pg_ctl", &all)
    }

    /// Server options: this port, the socket in the cluster's folder, loopback only; no fsync
    /// (a test cluster, stopped cleanly), room for three daemons' pools.
    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.log().display().to_string();
        let out = self.pg_ctl(&["-o", &options, "-l", &log, "-w", "-t", "60", "start"]);
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
    }

    /// Stops the server (fast: clients are disconnected); returns once it is down.
    pub fn stop(&self) {
        let out = self.pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"]);
        assert!(
            out.status.success(),
            "pg_ctl stop: {}{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
    }

    /// Starts the stopped server again on the same port; returns once it accepts connections.
    pub fn resume(&self) {
        self.pg_ctl_start();
    }

    /// `CREATE DATABASE <name>`.
    pub async fn create_database(&self, name: &str) {
        let pool = sqlx::PgPool::connect(&self.url("postgres"))
            .await
            .expect("connect to the test cluster");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .expect("create database");
        pool.close().await;
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "\nserver log:\n{}",
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Immediate: nothing of a finished (or failed) test needs a clean shutdown.
        let _ = self.pg_ctl(&["-m", "immediate", "-w", "-t", "30", "stop"]);
    }
}
