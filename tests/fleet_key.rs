//! Every daemon sharing a database holds the same at-rest key: one with another key refuses
//! to start (saying how to fix it) instead of sealing what the others cannot open; a rotation
//! (new key current, old key previous) starts and moves the canary to the new key.

mod common;

use common::{Backend, TestDb};
use switchboard::config::{Config, Secret};
use switchboard::daemon::{self, Core, DaemonError};

const KEY_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const KEY_B: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

fn with_keys(db: &TestDb, current: &str, previous: &[&str]) -> Config {
    let secret = |text: &str| {
        let path = db.dir.path().join(format!("{}.key", &text[..8]));
        std::fs::write(&path, text).expect("key file");
        Secret {
            file: Some(path),
            credential: None,
        }
    };
    let mut config = db.config();
    config.security.at_rest_key = Some(secret(current));
    config.security.previous_keys = previous.iter().map(|k| secret(k)).collect();
    config
}

async fn open(config: Config) -> Result<(), DaemonError> {
    let core = Core::open(config).await?;
    core.store.close().await;
    Ok(())
}

async fn a_second_key_does_not_start(backend: Backend) {
    let db = TestDb::new(backend).await;
    // The first daemon (key A) starts and serves.
    let first = daemon::start(with_keys(&db, KEY_A, &[]))
        .await
        .expect("key A starts");

    // A daemon with key B on the same database refuses to start.
    let error = match daemon::start(with_keys(&db, KEY_B, &[])).await {
        Ok(_) => panic!("a daemon with another at-rest key started"),
        Err(e) => e,
    };
    assert!(matches!(error, DaemonError::KeyMismatch { .. }), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("security.at_rest_key") && text.contains("same at-rest key"),
        "{text}"
    );
    first.shutdown();
    first.wait().await.expect("stop");

    // Rotation: B current, A previous, starts, and reseals the canary with B...
    open(with_keys(&db, KEY_B, &[KEY_A]))
        .await
        .expect("B with previous A starts");
    // ...so B alone now starts, and A alone (a node left behind) does not.
    open(with_keys(&db, KEY_B, &[]))
        .await
        .expect("B alone after the rotation");
    assert!(matches!(
        open(with_keys(&db, KEY_A, &[])).await,
        Err(DaemonError::KeyMismatch { .. })
    ));
}
both_databases!(
    a_second_key_does_not_start,
    crate::a_second_key_does_not_start
);

/// The binary says the same on `migrate` and exits non-zero.
#[test]
fn the_binary_names_the_fix() {
    let dir = tempfile::tempdir().expect("tmp");
    let write = |name: &str, key: &str| {
        let key_path = dir.path().join(format!("{name}.key"));
        std::fs::write(&key_path, key).expect("key");
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n[security]\nat_rest_key = {{ file = \"{}\" }}\n",
                dir.path().display(),
                key_path.display()
            ),
        )
        .expect("config");
        config
    };
    let run = |config: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("migrate")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .output()
            .expect("switchboard")
    };
    assert!(run(&write("a", KEY_A)).status.success());
    let output = run(&write("b", KEY_B));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("at-rest key mismatch"), "{stderr}");
}
