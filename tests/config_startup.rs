//! Configuration as an operator meets it: `SWITCHBOARD_CONFIG` names the file for every
//! command; a mistake in the file stops start-up with the key named (instead of a warning, or
//! a feature silently off); `/metrics` can require a bearer token.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Backend, TestDaemon, TestDb};
use switchboard::config::Secret;

fn switchboard(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("SWITCHBOARD_CONFIG");
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// `SWITCHBOARD_CONFIG=sb.toml switchboard migrate` reads the file (and is not mistaken for a
/// configuration key).
async fn config_from_the_environment(backend: Backend) {
    let db = TestDb::new(backend).await;
    write(
        db.dir.path(),
        "sb.toml",
        &format!(
            "data_dir = \"{}\"\n[database]\nurl = \"{}\"\n",
            db.dir.path().display(),
            db.url
        ),
    );
    let output = switchboard(&["migrate"])
        .current_dir(db.dir.path())
        .env("SWITCHBOARD_CONFIG", "sb.toml")
        .output()
        .expect("migrate");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "migrations applied"
    );
    // The file was used: its data dir holds the generated key, and for SQLite the database.
    assert!(db.dir.path().join("at-rest.key").exists());
    if backend == Backend::Sqlite {
        assert!(db.dir.path().join("switchboard.db").exists());
    }
}
both_databases!(
    config_from_the_environment,
    crate::config_from_the_environment
);

/// Each mistake is refused before anything starts, with the key named.
#[test]
fn mistakes_are_startup_errors_naming_the_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let base = format!("data_dir = \"{}\"\n", dir.path().display());
    let cases = [
        (
            "[channels.fax]\nconnector = \"faxprovider\"\n",
            "channels.fax.connector",
        ),
        (
            "[channels.sms]\nmax_attempts = 3\n",
            "channels.sms.connector",
        ),
        (
            "[organizations.north]\nquiet_hours_start = \"8am\"\n",
            "organizations.north.quiet_hours_start",
        ),
        (
            "[organizations.north]\nquiet_hours_end = \"25:00\"\n",
            "organizations.north.quiet_hours_end",
        ),
        ("[log]\nlevel = \"verbose\"\n", "log.level"),
        ("[log]\nlevel = \"info,switchboard=loud\"\n", "log.level"),
        (
            "[[organizations.north.reminder_rules]]\nid = \"r\"\n\
             touches = [{ id = \"t\", before = \"soon\", channels = [\"sms\"] }]\n",
            "organizations.north.reminder_rules[0]",
        ),
        (
            "[[organizations.north.reminder_rules]]\nid = \"r\"\n\
             touches = [{ id = \"t\", before = \"2h\", channels = [\"pager\"] }]\n",
            "organizations.north.reminder_rules[0]",
        ),
        (
            "[[alerts]]\nname = \"stuck\"\nkind = \"queue_age\"\n",
            "alerts \"stuck\" (queue_age): minutes (or seconds) is required",
        ),
        (
            "[alerting]\nwebhook_url = \"https://ops.example.org/hook\"\n",
            "alerting.webhook_url and alerting.webhook_secret",
        ),
        (
            "[alerting]\nbusiness_days = [\"monday\"]\n",
            "alerting.business_days",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let config = write(
            dir.path(),
            &format!("bad{i}.toml"),
            &format!("{base}{text}"),
        );
        let output = switchboard(&["migrate", "--config"])
            .arg(&config)
            .output()
            .expect("migrate");
        assert!(
            !output.status.success(),
            "accepted a bad configuration:\n{text}"
        );
        assert!(
            stderr(&output).contains(key),
            "the error does not name {key}: {}",
            stderr(&output)
        );
    }
    // Nothing was started: no database was created.
    assert!(!dir.path().join("switchboard.db").exists());

    // The same keys, well formed, are accepted.
    let good = write(
        dir.path(),
        "good.toml",
        &format!(
            "{base}[log]\nlevel = \"info,switchboard::queue=debug\"\n[channels.sms]\nconnector = \"outbox\"\n\
             [organizations.north]\nquiet_hours_start = \"07:30\"\n"
        ),
    );
    let output = switchboard(&["migrate", "--config"])
        .arg(&good)
        .output()
        .expect("migrate");
    assert!(output.status.success(), "{}", stderr(&output));
}

async fn metrics_token(backend: Backend) {
    let db = TestDb::new(backend).await;
    let open = TestDaemon::start(db.config()).await;
    let response = open
        .http
        .get(open.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(response.status().as_u16(), 200, "unchanged without a token");

    let token_file = write(db.dir.path(), "metrics-token", "s3cret-metrics-token\n");
    let mut config = db.config();
    config.server.metrics_token = Some(Secret {
        file: Some(token_file),
        credential: None,
    });
    let guarded = TestDaemon::start(config).await;
    let get = |token: Option<&str>| {
        let mut request = guarded.http.get(guarded.url("/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let response = get(None).await.expect("metrics");
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(get(Some("wrong")).await.expect("metrics").status(), 401);
    assert_eq!(
        get(Some("s3cret-metrics-token-but-longer"))
            .await
            .expect("metrics")
            .status(),
        401
    );
    let response = get(Some("s3cret-metrics-token")).await.expect("metrics");
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.expect("text");
    assert!(text.contains("switchboard_dead_letters"), "{text}");
}
both_databases!(metrics_token, crate::metrics_token);
