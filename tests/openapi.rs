//! The OpenAPI document (README "HTTP API v1"): the checked-in `docs/openapi.json` is the
//! one the code generates and the daemon serves; it passes `redocly lint` (Redocly's
//! recommended rules, `redocly.yaml`); and `schemathesis` (PyPI), run against a real daemon
//! with a seeded organization and an admin key, finds no 5xx and no response that breaks the
//! document (schema, status code, content type) — the full run on SQLite, a shorter one on
//! PostgreSQL. The tools are installed by `.ci/peers` into `.tools/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Backend, TestDaemon, TestDb};
use serde_json::{Value, json};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tool(path: &str) -> PathBuf {
    let tool = root().join(".tools").join(path);
    assert!(
        tool.exists(),
        "{} is missing: run `source .ci/peers`",
        tool.display()
    );
    tool
}

/// `docs/openapi.json` is the generated document; `UPDATE_OPENAPI=1` rewrites it.
#[test]
fn checked_in_document_is_the_generated_one() {
    let path = root().join("docs/openapi.json");
    let generated = switchboard::http::openapi_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, generated).expect("write docs/openapi.json");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/openapi.json differs from the document the code generates; regenerate it with \
         `cargo run -- openapi > docs/openapi.json` (or `UPDATE_OPENAPI=1 cargo test --test \
         openapi checked_in`) and commit it"
    );
}

/// `switchboard openapi` prints it.
#[test]
fn the_cli_prints_the_document() {
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("openapi")
        .output()
        .expect("switchboard openapi");
    assert!(output.status.success());
    assert!(output.stdout == switchboard::http::openapi_json().as_bytes());
}

#[test]
fn document_passes_redocly_lint() {
    let output = Command::new(tool("redocly/node_modules/.bin/redocly"))
        .current_dir(root())
        .args(["lint", "docs/openapi.json", "--format=summary"])
        .env("REDOCLY_TELEMETRY", "off")
        .env("REDOCLY_SUPPRESS_UPDATE_NOTICE", "true")
        .output()
        .expect("run redocly");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "redocly lint failed:\n{text}");
    // Warnings too: the recommended set's warnings are problems to fix (or to ignore, with a
    // reason, in .redocly.lint-ignore.yaml).
    // (The summary's lines are `error <rule>: <count>` and `warning <rule>: <count>`.)
    assert!(
        !text.lines().any(|l| l.trim_start().starts_with("warning ")),
        "redocly lint warned:\n{text}"
    );
}

/// `answer` is valid against the document's schema of `method path`'s `status` response (the
/// path's ids are matched to the document's templates).
fn conforms(document: &Value, method: &str, path: &str, status: u16, answer: &Value) {
    let errors = violations(document, method, path, status, answer);
    assert!(
        errors.is_empty(),
        "{method} {path} {status} breaks the document:\n{}\n{answer:#}",
        errors.join("\n")
    );
}

/// What in `answer` breaks the document's schema of `method path`'s `status` response.
fn violations(
    document: &Value,
    method: &str,
    path: &str,
    status: u16,
    answer: &Value,
) -> Vec<String> {
    let paths = document["paths"].as_object().expect("paths");
    let segments: Vec<&str> = path.split('/').collect();
    let (template, item) = paths
        .iter()
        .filter(|(template, _)| {
            let parts: Vec<&str> = template.split('/').collect();
            parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(&segments)
                    .all(|(t, s)| t == s || t.starts_with('{'))
        })
        // A literal segment beats a template (`/v1/messages` over `/v1/messages/{id}`).
        .min_by_key(|(template, _)| template.matches('{').count())
        .unwrap_or_else(|| panic!("{path} is not in the document"));
    let schema =
        &item[method]["responses"][status.to_string()]["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {template} {status}: no JSON schema"
    );
    // The schema's `$ref`s point into the document: validate with it as the root.
    let mut root = schema.clone();
    root["components"] = document["components"].clone();
    let validator = jsonschema::draft202012::new(&root)
        .unwrap_or_else(|e| panic!("{method} {template} {status}: {e}"));
    validator
        .iter_errors(answer)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Runs schemathesis against a daemon on `backend`, `examples` test cases per operation.
async fn schemathesis_finds_nothing(backend: Backend, examples: u32) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    // Endpoints may be registered, and nothing is sent to them: no dispatcher runs (and the
    // host would not resolve).
    config.webhooks.allow_hosts = vec!["hooks.invalid".into()];
    config.webhooks.dispatch = false;
    let daemon = TestDaemon::start(config).await;

    // The served document is the checked-in one.
    let served = daemon
        .http
        .get(daemon.url("/v1/openapi.json"))
        .send()
        .await
        .expect("GET /v1/openapi.json");
    assert_eq!(served.status(), 200);
    assert_eq!(
        served.headers()["content-type"],
        "application/json",
        "content type"
    );
    assert_eq!(
        served.text().await.expect("body"),
        switchboard::http::openapi_json()
    );

    // Some records for the generated requests to meet (their answers as documented).
    let document: Value =
        serde_json::from_str(switchboard::http::openapi_json()).expect("the document");
    let key = daemon.key.clone();
    for (method, path, body) in [
        (
            "PUT",
            "/v1/patients/mrn-1",
            json!({"given_name": "Ada", "family_name": "Park",
                   "contact_points": [{"system": "phone", "value": "+14155550100"}]}),
        ),
        (
            "PUT",
            "/v1/staff/nurse-1",
            json!({"name": "Nurse One", "email": "nurse@example.org"}),
        ),
        (
            "PUT",
            "/v1/appointments/apt-1",
            json!({"patient": "mrn-1", "start": "2026-12-01T09:30:00-06:00",
                   "duration_minutes": 30, "location": "Clinic A"}),
        ),
        (
            "PUT",
            "/v1/recalls/recall-1",
            json!({"patient": "mrn-1", "recall_type": "annual", "due_date": "2027-01-15"}),
        ),
        (
            "PUT",
            "/v1/webhook-endpoints/hook-1",
            json!({"url": "https://hooks.invalid/in", "event_types": ["message.accepted"]}),
        ),
        (
            "POST",
            "/v1/webhook-endpoints/hook-1/rotate",
            json!({"overlap_secs": 60}),
        ),
    ] {
        let (status, answer) = daemon.request(&key, method, path, Some(body)).await;
        assert!(status < 300, "{method} {path}: {status} {answer:#}");
        conforms(&document, &method.to_lowercase(), path, status, &answer);
    }
    let sent = daemon
        .post_message(json!({"body": "Your results are ready", "patient": "mrn-1",
            "recipients": [{"address": "+14155550100", "channel": "fax"}]}))
        .await;
    assert_eq!(sent.status(), 201);
    let sent_view: Value = sent.json().await.expect("message");
    conforms(&document, "post", "/v1/messages", 201, &sent_view);
    let message_id = sent_view["id"].as_str().expect("message id").to_string();
    daemon
        .wait_terminal(&message_id, Duration::from_secs(30))
        .await;

    // Real records' answers match the document (schemathesis's requests mostly meet 404s and
    // 422s; these meet the seeded patient, message, events and lists).
    for path in [
        "/v1/patients/mrn-1".to_string(),
        "/v1/patients/mrn-1/appointments".to_string(),
        "/v1/appointments/apt-1".to_string(),
        "/v1/appointments/apt-1/reminders".to_string(),
        "/v1/recalls/recall-1".to_string(),
        "/v1/webhook-endpoints/hook-1".to_string(),
        "/v1/webhook-endpoints/hook-1/deliveries".to_string(),
        format!("/v1/messages/{message_id}"),
        "/v1/messages".to_string(),
        "/v1/deliveries".to_string(),
        "/v1/dead-letters".to_string(),
        "/v1/events".to_string(),
        "/v1/staff".to_string(),
        "/v1/channels".to_string(),
        "/v1/reminder-rules".to_string(),
        "/v1/inbound".to_string(),
        "/v1/campaigns".to_string(),
        "/v1/hl7/messages".to_string(),
    ] {
        let (status, answer) = daemon.request(&key, "GET", &path, None).await;
        assert_eq!(status, 200, "GET {path}: {answer:#}");
        conforms(&document, "get", &path, 200, &answer);
    }
    // (The check has teeth.)
    let (_, mut patient) = daemon
        .request(&key, "GET", "/v1/patients/mrn-1", None)
        .await;
    patient["id"] = json!(5);
    assert!(!violations(&document, "get", "/v1/patients/mrn-1", 200, &patient).is_empty());

    // An optional body may be `null`, as the document says (schemathesis sent one: the
    // pause was refused with 422, the rotation with 400).
    let (status, paused) = daemon
        .request(&key, "POST", "/v1/channels/fax/pause", Some(json!(null)))
        .await;
    assert_eq!(status, 200, "{paused:#}");
    let (status, _) = daemon
        .request(&key, "POST", "/v1/channels/fax/resume", None)
        .await;
    assert_eq!(status, 200);
    let (status, rotated) = daemon
        .request(
            &key,
            "POST",
            "/v1/webhook-endpoints/none/rotate",
            Some(json!(null)),
        )
        .await;
    assert_eq!(status, 404, "{rotated:#}");

    let report = tempfile::tempdir().expect("report dir");
    let base = daemon.url("");
    let output = tokio::task::spawn_blocking({
        let schema = daemon.url("/v1/openapi.json");
        let report = report.path().to_path_buf();
        move || {
            Command::new(tool("schemathesis/bin/schemathesis"))
                .args(["run", &schema, "--url", &base])
                .args(["--header", &format!("Authorization: Bearer {key}")])
                .args([
                    "--checks",
                    "not_a_server_error,response_schema_conformance,\
                     status_code_conformance,content_type_conformance",
                ])
                .args(["--max-examples", &examples.to_string()])
                // Deterministic: a fixed seed, one worker, and no example database carried
                // from an earlier run (its files go to the temporary directory, not the tree).
                .args(["--seed", "1", "--workers", "1", "--no-shrink"])
                .args(["--generation-database", "none"])
                // An endless text/event-stream: the stream tests cover it.
                .args(["--exclude-path", "/v1/events/stream"])
                .args(["--request-timeout", "10", "--suppress-health-check", "all"])
                // More options for a local investigation (`SCHEMATHESIS_ARGS="--mode positive"`).
                .args(
                    std::env::var("SCHEMATHESIS_ARGS")
                        .unwrap_or_default()
                        .split_whitespace(),
                )
                .arg("--report-dir")
                .arg(&report)
                .current_dir(&report)
                .env("SCHEMATHESIS_TELEMETRY", "false")
                .env("NO_COLOR", "1")
                .output()
                .expect("run schemathesis")
        }
    })
    .await
    .expect("schemathesis");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_sqlite() {
    schemathesis_finds_nothing(Backend::Sqlite, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_postgres() {
    schemathesis_finds_nothing(Backend::Postgres, 5).await;
}
