//! `switchboard doctor` as a new operator runs it, on SQLite and PostgreSQL: before the first
//! start it fails on the missing database and creates nothing; once migrated it passes; a
//! missing credential file, an expired Direct certificate and a world-readable key are named.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::pki::Pki;
use common::{Backend, TestDb};

fn doctor(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["doctor", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .expect("switchboard")
}

fn lines(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

async fn doctor_names_what_is_wrong(backend: Backend) {
    let db = TestDb::new(backend).await;
    let state = db.dir.path().join("state");
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}", state.join("switchboard.db").display()),
        Backend::Postgres => db.url.clone(),
    };
    let pki = Pki::new();
    pki.ca("ca")
        .leaf("ca", "us", "email:clinic@direct.north.example");
    let missing = db.dir.path().join("no-such-password");
    let config = db.dir.path().join("switchboard.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{state}\"\n[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"{url}\"\n\
             [connectors.relay]\nkind = \"smtp\"\nhost = \"localhost\"\nport = 25\n\
             from = \"clinic@north.example\"\nusername = \"u\"\npassword = {{ file = \"{missing}\" }}\n\
             [connectors.hisp]\nkind = \"direct\"\naddress = \"clinic@direct.north.example\"\n\
             certificate = \"{cert}\"\nprivate_key = {{ file = \"{key}\" }}\n\
             trust = [{{ files = [\"{ca}\"] }}]\n\
             smtp = {{ host = \"localhost\", port = 587 }}\n",
            state = state.display(),
            missing = missing.display(),
            cert = pki.path("us.pem").display(),
            key = pki.path("us.key").display(),
            ca = pki.path("ca.pem").display(),
        ),
    )
    .expect("config");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640)).expect("chmod");

    let first = doctor(&config);
    assert_eq!(first.status.code(), Some(1), "{}", lines(&first));
    let out = lines(&first);
    if backend == Backend::Sqlite {
        assert!(out.contains("FAIL  database: no database yet"), "{out}");
        assert!(!state.exists(), "doctor created {}", state.display());
    } else {
        assert!(
            out.contains("FAIL  database: the database has no Switchboard schema"),
            "{out}"
        );
    }
    assert!(out.contains("FAIL  connector relay: password:"), "{out}");
    // The test PKI's certificates live 30 days: inside the 30-day warning, or just outside.
    for what in ["signing certificate", "anchor CN=ca"] {
        assert!(
            out.lines()
                .any(|l| l.contains(&format!("connector hisp: {what}: "))
                    && (l.contains("days to expiry") || l.contains("expires in 29 days"))),
            "{out}"
        );
    }
    assert!(
        out.contains("WARN  connector hisp: organization: unset"),
        "{out}"
    );
    assert!(out.contains("PASS  hl7 listener: off"), "{out}");

    let migrate = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["migrate", "--config"])
        .arg(&config)
        .output()
        .expect("migrate");
    assert!(migrate.status.success(), "{migrate:?}");
    std::fs::write(&missing, "secret").expect("password");
    std::fs::set_permissions(&missing, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let second = doctor(&config);
    let out = lines(&second);
    assert_eq!(second.status.code(), Some(0), "{out}");
    assert!(out.contains("PASS  database: reachable,"), "{out}");
    assert!(
        out.contains("PASS  at-rest key: opens the database's key canary"),
        "{out}"
    );
    assert!(
        out.contains("PASS  connector relay: password: present"),
        "{out}"
    );

    let key = state.join("at-rest.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let third = doctor(&config);
    let out = lines(&third);
    assert_eq!(third.status.code(), Some(1), "{out}");
    assert!(
        out.contains("FAIL  at-rest key:") && out.contains("chmod 0600"),
        "{out}"
    );
}
both_databases!(
    doctor_names_what_is_wrong,
    super::doctor_names_what_is_wrong
);
