//! The intake pipeline (`switchboard::intake`) against the real store and the real daemon, on
//! SQLite and PostgreSQL: every step recorded in order, a redelivery recorded once, reply
//! correlation for texts, each matching rule through the pipeline with a case that must not
//! match (two candidates always unmatched), `switchboard inbound reprocess` from the binary,
//! and a person's resolve/reassign/dismiss audited and refused without the `admin` scope.
//! Documents come through a C-CDA source (`CdaSource`) — the shape Direct and fax will feed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::provider::{
    FakeProvider, Flavor, TWILIO_ACCOUNT as ACCOUNT, quick_retries, signed_twilio_post,
    twilio_connector,
};
use common::{Backend, TestDaemon, TestDb};
use serde_json::{Value, json};
use switchboard::config::Config;
use switchboard::daemon::Core;
use switchboard::intake::{CdaSource, Filing, Intake, Received};
use switchboard::store::{ContactPointInput, NewApiKey, PatientInput, Store};

const FROM: &str = "+15005550006";
const WAIT: Duration = Duration::from_secs(20);

fn twilio_config(db: &TestDb, base_url: &str) -> Config {
    let mut config = db.config();
    config.connectors.insert(
        "twilio".into(),
        twilio_connector(db, base_url, FROM, Some("north"), 1),
    );
    config
        .channels
        .insert("sms".into(), quick_retries("twilio", 6));
    config
}

async fn inbound_sms(daemon: &TestDaemon, sid: &str, from: &str, body: &str) -> reqwest::Response {
    let params = [
        ("AccountSid", ACCOUNT),
        ("MessageSid", sid),
        ("From", from),
        ("To", FROM),
        ("Body", body),
        ("NumMedia", "0"),
    ];
    let response = signed_twilio_post(daemon, "/hooks/twilio/inbound", &params).await;
    assert_eq!(response.status(), 200);
    response
}

async fn put_patient(daemon: &TestDaemon, external_id: &str, phone: Option<&str>) {
    let mut body = json!({"family_name": "Rivera", "given_name": "Ana"});
    if let Some(phone) = phone {
        body["contact_points"] = json!([{"system": "sms", "value": phone}]);
    }
    let response = daemon
        .http
        .put(daemon.url(&format!("/v1/patients/{external_id}")))
        .bearer_auth(&daemon.key)
        .json(&body)
        .send()
        .await
        .expect("put patient");
    assert!(response.status().is_success(), "{}", response.status());
}

/// The one item in `status` (panics unless there is exactly one).
async fn only_item(daemon: &TestDaemon, status: &str) -> Value {
    let list = daemon
        .get_json(&format!("/v1/inbound?status={status}"))
        .await;
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{list:#}");
    items[0].clone()
}

fn steps(item: &Value) -> Vec<String> {
    item["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["step"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Counts rows of `table` matching a `WHERE` over the organization.
async fn count(store: &Store, sql: &'static str, bind: &str) -> i64 {
    let (n,): (i64,) = switchboard::store::on_db!(store.db(), |pool| sqlx::query_as(sql)
        .bind(bind)
        .fetch_one(pool)
        .await)
    .expect("count");
    n
}

// ---------------------------------------------------------------------------------------------

async fn steps_in_order_and_redelivery_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FakeProvider::start(Flavor::Twilio).await;
    let mut daemon = TestDaemon::start(twilio_config(&db, &provider.base_url())).await;
    put_patient(&daemon, "p-1", Some("+14155552671")).await;

    for _ in 0..3 {
        inbound_sms(
            &daemon,
            "SM20000000000000000000000000000001",
            "+14155552671",
            "Running late",
        )
        .await;
    }
    let filed = only_item(&daemon, "filed").await;
    assert_eq!(filed["match_method"], "contact");
    let id = filed["id"].as_str().unwrap();
    let item = daemon.get_json(&format!("/v1/inbound/{id}")).await;
    assert_eq!(
        steps(&item),
        ["received", "parsed", "matched", "filed", "acknowledged"],
        "{item:#}"
    );
    assert_eq!(item["steps"][3]["status"], "filed");
    assert_eq!(item["steps"][2]["detail"]["method"], "contact");
    assert_eq!(item["body"], "Running late");
    let store = &daemon.core.store;
    assert_eq!(
        count(
            store,
            "SELECT COUNT(*) FROM inbound_items WHERE provider_ref = $1",
            "SM20000000000000000000000000000001"
        )
        .await,
        1,
        "a redelivery is recorded once"
    );
    assert_eq!(
        count(
            store,
            "SELECT COUNT(*) FROM inbound_steps WHERE inbound_item_id = $1",
            id
        )
        .await,
        5,
        "and its steps once"
    );

    // An unknown sender: matched to nobody, unmatched, acknowledged.
    inbound_sms(
        &daemon,
        "SM20000000000000000000000000000002",
        "+14155550100",
        "Who is this?",
    )
    .await;
    let unmatched = only_item(&daemon, "unmatched").await;
    assert_eq!(unmatched["reason"], "no patient matched");
    assert_eq!(unmatched["candidates"], json!([]));
    let item = daemon
        .get_json(&format!(
            "/v1/inbound/{}",
            unmatched["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        steps(&item),
        ["received", "parsed", "matched", "unmatched", "acknowledged"]
    );
    let events = daemon.events().await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .filter(|k| k.starts_with("inbound."))
        .collect();
    assert_eq!(kinds, ["inbound.filed", "inbound.unmatched"]);
    daemon.stop().await;
}
both_databases!(
    steps_and_redelivery,
    crate::steps_in_order_and_redelivery_once
);

async fn texts_answer_the_conversation(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FakeProvider::start(Flavor::Twilio).await;
    let mut daemon = TestDaemon::start(twilio_config(&db, &provider.base_url())).await;
    // Twins share a number: the number alone proposes both and decides nothing.
    put_patient(&daemon, "twin-a", Some("+1 415 555 0199")).await;
    put_patient(&daemon, "twin-b", Some("+1 415 555 0199")).await;
    inbound_sms(
        &daemon,
        "SM30000000000000000000000000000001",
        "+14155550199",
        "Is this for me or my sister?",
    )
    .await;
    let unmatched = only_item(&daemon, "unmatched").await;
    assert!(
        unmatched["reason"].as_str().unwrap().contains("ambiguous"),
        "{unmatched:#}"
    );
    let mut offered: Vec<(String, String)> = unmatched["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["external_id"].as_str().unwrap().to_string(),
                c["method"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    offered.sort();
    assert_eq!(
        offered,
        [
            ("twin-a".to_string(), "contact".to_string()),
            ("twin-b".to_string(), "contact".to_string())
        ]
    );
    assert!(unmatched["match_method"].is_null());

    // We text twin-a; the answer from the shared number belongs to that conversation.
    let response = daemon
        .post_message(json!({
            "patient": "twin-a", "body": "Your results are in the portal.",
            "recipients": [{"patient": true, "channel": "sms"}],
        }))
        .await;
    assert_eq!(response.status(), 201);
    let sent: Value = response.json().await.unwrap();
    let message_id = sent["id"].as_str().unwrap().to_string();
    let thread_id = sent["thread_id"].as_str().unwrap().to_string();
    let started = Instant::now();
    while daemon.get_json(&format!("/v1/messages/{message_id}")).await["deliveries"][0]["status"]
        != "sent"
    {
        assert!(started.elapsed() < WAIT, "the text was not sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    inbound_sms(
        &daemon,
        "SM30000000000000000000000000000002",
        "+14155550199",
        "Thanks, got it",
    )
    .await;
    let filed = only_item(&daemon, "filed").await;
    assert_eq!(filed["match_method"], "reply");
    assert_eq!(filed["thread_id"], thread_id.as_str());
    let thread = daemon
        .get_json(&format!("/v1/threads/{thread_id}/messages"))
        .await;
    assert!(
        thread["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["direction"] == "inbound" && m["body"] == "Thanks, got it"),
        "{thread:#}"
    );

    // twin-a gives the number up: a text from it no longer answers her conversation, and
    // twin-b, the one patient left with the number, has it.
    put_patient(&daemon, "twin-a", Some("+14155550777")).await;
    inbound_sms(
        &daemon,
        "SM30000000000000000000000000000003",
        "+14155550199",
        "It's twin-b now",
    )
    .await;
    let list = daemon.get_json("/v1/inbound?status=filed").await;
    let latest = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["provider_ref"] == "SM30000000000000000000000000000003")
        .cloned()
        .expect("filed");
    assert_eq!(latest["match_method"], "contact");
    let twin_b = daemon.get_json("/v1/patients/twin-b").await;
    assert_eq!(latest["patient_id"], twin_b["id"]);
    daemon.stop().await;
}
both_databases!(reply_correlation, crate::texts_answer_the_conversation);

/// A configuration file for the CLI on this database (the daemon's key is in its data dir).
fn write_config(db: &TestDb) -> PathBuf {
    let path = db.dir.path().join("switchboard.toml");
    let text = format!(
        "data_dir = \"{dir}\"\n[database]\nurl = \"{url}\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
         [channels.sms]\nconnector = \"outbox\"\n",
        dir = db.dir.path().display(),
        url = db.url,
    );
    std::fs::write(&path, text).expect("config");
    path
}

fn cli(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .expect("switchboard")
}

async fn reprocess_files_an_unmatched_text(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FakeProvider::start(Flavor::Twilio).await;
    let mut daemon = TestDaemon::start(twilio_config(&db, &provider.base_url())).await;
    let config = write_config(&db);
    inbound_sms(
        &daemon,
        "SM40000000000000000000000000000001",
        "+14155550123",
        "New number, it's me",
    )
    .await;
    let id = only_item(&daemon, "unmatched").await["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Unmatched needs --force; nothing changes without it.
    let refused = cli(&config, &["inbound", "reprocess", &id]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));

    // The patient's number is added; reprocessing files it.
    put_patient(&daemon, "p-9", Some("(415) 555-0123")).await;
    let done = cli(&config, &["inbound", "reprocess", &id, "--force"]);
    let stdout = String::from_utf8_lossy(&done.stdout).to_string();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(stdout.contains("unmatched -> filed"), "{stdout}");
    assert!(stdout.contains("match=contact"), "{stdout}");
    let item = daemon.get_json(&format!("/v1/inbound/{id}")).await;
    assert_eq!(item["status"], "filed");
    assert_eq!(
        steps(&item),
        [
            "received",
            "parsed",
            "matched",
            "unmatched",
            "acknowledged",
            "reprocess",
            "parsed",
            "matched",
            "filed"
        ]
    );
    let thread = daemon
        .get_json(&format!(
            "/v1/threads/{}/messages",
            item["thread_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(thread["messages"][0]["body"], "New number, it's me");

    // A filed item is not reprocessed, forced or not.
    let again = cli(&config, &["inbound", "reprocess", &id, "--force"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("filed"));

    // An item recorded but never handled (the process died after step 1) is reprocessed
    // without --force, and a keyword in it is applied, not filed.
    let intake = Intake {
        store: daemon.core.store.clone(),
        keyring: daemon.core.keyring.clone(),
        config: daemon.core.config.clone(),
    };
    let stuck = |sid: &str, body: &str| switchboard::inbound::InboundSms {
        connector: "twilio".into(),
        provider_ref: Some(sid.into()),
        from: "+14155550123".into(),
        to: FROM.into(),
        body: body.into(),
        media: Vec::new(),
    };
    for (sid, body, outcome) in [
        (
            "SM40000000000000000000000000000002",
            "See you then",
            "received -> filed (filed)",
        ),
        (
            "SM40000000000000000000000000000003",
            "STOP",
            "received -> processed (opted_out)",
        ),
    ] {
        let sms = stuck(sid, body);
        let raw = serde_json::to_vec(&sms).unwrap();
        let (stuck_id, fresh) = intake
            .record(
                &switchboard::intake::SmsSource,
                &Received {
                    organization_id: &daemon.organization_id,
                    connector: Some(sms.connector.clone()),
                    provider_ref: sms.provider_ref.clone(),
                    sender: sms.from.clone(),
                    recipient: Some(sms.to.clone()),
                    raw: &raw,
                },
            )
            .await
            .expect("record");
        assert!(fresh);
        let done = cli(&config, &["inbound", "reprocess", &stuck_id]);
        let stdout = String::from_utf8_lossy(&done.stdout).to_string();
        assert!(
            done.status.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
        assert!(stdout.contains(outcome), "{stdout}");
    }
    let patient = daemon.get_json("/v1/patients/p-9").await;
    assert!(
        patient["consents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["status"] == "revoked" && c["source"] == "sms-keyword"),
        "{patient:#}"
    );
    daemon.stop().await;
}
both_databases!(reprocess, crate::reprocess_files_an_unmatched_text);

async fn key_with(core: &Core, organization_id: &str, scopes: &str) -> (String, String) {
    let token = switchboard::http::new_token().expect("token");
    let id = core
        .store
        .api_keys()
        .create(&NewApiKey {
            organization_id: organization_id.to_string(),
            name: format!("test {scopes}"),
            key_hash: switchboard::http::hash_token(&token),
            scopes: scopes.to_string(),
            expires_at: None,
        })
        .await
        .expect("key");
    (id, token)
}

async fn post(daemon: &TestDaemon, token: &str, path: &str, body: Value) -> (u16, Value) {
    let response = daemon
        .http
        .post(daemon.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The audit rows of an action: `(actor, patient_id, detail)`.
async fn audits(store: &Store, action: &'static str) -> Vec<(String, Option<String>, Value)> {
    let rows: Vec<(String, Option<String>, Option<String>)> =
        switchboard::store::on_db!(store.db(), |pool| sqlx::query_as(
            "SELECT actor, patient_id, detail FROM audit_events WHERE action = $1 ORDER BY id"
        )
        .bind(action)
        .fetch_all(pool)
        .await)
        .expect("audit");
    rows.into_iter()
        .map(|(actor, patient, detail)| {
            (
                actor,
                patient,
                serde_json::from_str(&detail.unwrap_or_default()).unwrap_or(Value::Null),
            )
        })
        .collect()
}

async fn people_decide_audited_with_admin_scope(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FakeProvider::start(Flavor::Twilio).await;
    let mut daemon = TestDaemon::start(twilio_config(&db, &provider.base_url())).await;
    put_patient(&daemon, "p-1", None).await;
    put_patient(&daemon, "p-2", None).await;
    let (admin_id, admin) = key_with(&daemon.core, &daemon.organization_id, "read admin").await;
    let admin_actor = format!("api_key:{admin_id}");
    let (_, clerk) = key_with(&daemon.core, &daemon.organization_id, "send read").await;
    for (sid, text) in [
        ("SM50000000000000000000000000000001", "About my appointment"),
        ("SM50000000000000000000000000000002", "Wrong number?"),
    ] {
        inbound_sms(&daemon, sid, "+14155550111", text).await;
    }
    let list = daemon.get_json("/v1/inbound?status=unmatched").await;
    let ids: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    let (first, second) = (&ids[0], &ids[1]);

    // Without the admin scope: 403 for all three, and nothing changes.
    for (verb, body) in [
        ("resolve", json!({"patient": "p-1"})),
        ("reassign", json!({"patient": "p-2"})),
        ("dismiss", json!({"reason": "spam"})),
    ] {
        let (status, problem) = post(
            &daemon,
            &clerk,
            &format!("/v1/inbound/{first}/{verb}"),
            body,
        )
        .await;
        assert_eq!(status, 403, "{verb}: {problem:#}");
        assert_eq!(
            problem["type"],
            "urn:switchboard:problem:insufficient_scope"
        );
    }
    assert_eq!(
        daemon.get_json(&format!("/v1/inbound/{first}")).await["status"],
        "unmatched"
    );

    // Unknown item → 404; unknown patient → 422 at /patient; a missing reason → 422.
    let (status, _) = post(
        &daemon,
        &admin,
        "/v1/inbound/inb_nope/resolve",
        json!({"patient": "p-1"}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, problem) = post(
        &daemon,
        &admin,
        &format!("/v1/inbound/{first}/resolve"),
        json!({"patient": "nobody"}),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["pointer"], "/patient");
    let (status, problem) = post(
        &daemon,
        &admin,
        &format!("/v1/inbound/{second}/dismiss"),
        json!({"reason": "  "}),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["pointer"], "/reason");

    // Reassigning an unmatched item is the wrong state.
    let (status, problem) = post(
        &daemon,
        &admin,
        &format!("/v1/inbound/{first}/reassign"),
        json!({"patient": "p-2"}),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(
        problem["type"],
        "urn:switchboard:problem:inbound_wrong_state"
    );

    // Resolve → p-1, audited.
    let (status, resolved) = post(
        &daemon,
        &admin,
        &format!("/v1/inbound/{first}/resolve"),
        json!({"patient": "p-1", "reason": "called back"}),
    )
    .await;
    assert_eq!(status, 200, "{resolved:#}");
    let from_thread = resolved["thread_id"].as_str().unwrap().to_string();
    let p1 = daemon.get_json("/v1/patients/p-1").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let p2 = daemon.get_json("/v1/patients/p-2").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let store = &daemon.core.store;
    let resolved_audit = audits(store, "inbound_resolved").await;
    assert_eq!(resolved_audit.len(), 1);
    let (actor, patient, detail) = &resolved_audit[0];
    assert_eq!(actor, &admin_actor);
    assert_eq!(patient.as_deref(), Some(p1.as_str()));
    assert_eq!(detail["inbound_item_id"], first.as_str());
    assert_eq!(detail["to_patient_id"], p1.as_str());
    assert_eq!(detail["to_thread_id"], from_thread.as_str());
    assert!(detail["from_patient_id"].is_null());
    assert_eq!(detail["reason"], "called back");

    // Reassign → p-2: the message moves to p-2's thread, audited from and to.
    let (status, moved) = post(
        &daemon,
        &admin,
        &format!("/v1/inbound/{first}/reassign"),
        json!({"patient": "p-2", "reason": "it was her sister"}),
    )
    .await;
    assert_eq!(status, 200, "{moved:#}");
    let to_thread = moved["thread_id"].as_str().unwrap().to_string();
    assert_ne!(to_thread, from_thread);
    let old = daemon
        .get_json(&format!("/v1/threads/{from_thread}/messages"))
        .await;
    assert_eq!(old["messages"].as_array().unwrap().len(), 0, "{old:#}");
    let new = daemon
        .get_json(&format!("/v1/threads/{to_thread}/messages"))
        .await;
    assert_eq!(new["messages"][0]["body"], "About my appointment");
    let item = daemon.get_json(&format!("/v1/inbound/{first}")).await;
    assert_eq!(item["patient_id"], p2.as_str());
    assert_eq!(item["match_method"], "manual");
    let reassigned = audits(store, "inbound_reassigned").await;
    assert_eq!(reassigned.len(), 1);
    let (actor, patient, detail) = &reassigned[0];
    assert_eq!(actor, &admin_actor);
    assert_eq!(patient.as_deref(), Some(p2.as_str()));
    assert_eq!(detail["from_patient_id"], p1.as_str());
    assert_eq!(detail["from_thread_id"], from_thread.as_str());
    assert_eq!(detail["to_patient_id"], p2.as_str());
    assert_eq!(detail["to_thread_id"], to_thread.as_str());
    assert_eq!(detail["reason"], "it was her sister");

    // A filed item is neither resolved (409 already filed) nor dismissed (409 wrong state).
    let (status, problem) = post(
        &daemon,
        &admin,
        &format!("/v1/inbound/{first}/resolve"),
        json!({"patient": "p-1"}),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(
        problem["type"],
        "urn:switchboard:problem:inbound_already_filed"
    );
    let (status, _) = post(
        &daemon,
        &admin,
        &format!("/v1/inbound/{first}/dismiss"),
        json!({"reason": "dup"}),
    )
    .await;
    assert_eq!(status, 409);

    // Dismiss the other, with its reason; twice is the wrong state.
    let (status, dismissed) = post(
        &daemon,
        &admin,
        &format!("/v1/inbound/{second}/dismiss"),
        json!({"reason": "spam"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(dismissed["status"], "dismissed");
    let (status, _) = post(
        &daemon,
        &admin,
        &format!("/v1/inbound/{second}/dismiss"),
        json!({"reason": "spam"}),
    )
    .await;
    assert_eq!(status, 409);
    let item = only_item(&daemon, "dismissed").await;
    assert_eq!(item["reason"], "spam");
    let dismissed_audit = audits(store, "inbound_dismissed").await;
    assert_eq!(dismissed_audit.len(), 1);
    assert_eq!(dismissed_audit[0].0, admin_actor);
    assert_eq!(dismissed_audit[0].2["reason"], "spam");
    let item = daemon.get_json(&format!("/v1/inbound/{first}")).await;
    assert_eq!(
        steps(&item),
        [
            "received",
            "parsed",
            "matched",
            "unmatched",
            "acknowledged",
            "resolved",
            "reassigned"
        ]
    );
    let events = daemon.events().await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .filter(|k| k.starts_with("inbound."))
        .collect();
    assert_eq!(
        kinds,
        [
            "inbound.unmatched",
            "inbound.unmatched",
            "inbound.filed",
            "inbound.reassigned",
            "inbound.dismissed"
        ]
    );
    daemon.stop().await;
}
both_databases!(decisions, crate::people_decide_audited_with_admin_scope);

// ---------------------------------------------------------------------------------------------
// Documents: identifier, demographics and contact rules through the pipeline.

/// A minimal C-CDA header naming a patient.
fn ccda(ids: &[(&str, &str)], given: &str, family: &str, birth: &str, sex: &str) -> Vec<u8> {
    let ids: String = ids
        .iter()
        .map(|(root, extension)| format!(r#"<id root="{root}" extension="{extension}"/>"#))
        .collect();
    format!(
        r#"<?xml version="1.0"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <id root="1.2.3" extension="doc"/>
  <code code="34133-9" codeSystem="2.16.840.1.113883.6.1"/>
  <title>Summary of care</title>
  <recordTarget><patientRole>{ids}
    <patient>
      <name><given>{given}</given><family>{family}</family></name>
      <administrativeGenderCode code="{sex}" codeSystem="2.16.840.1.113883.5.1"/>
      <birthTime value="{birth}"/>
    </patient>
  </patientRole></recordTarget>
  <component><structuredBody/></component>
</ClinicalDocument>"#
    )
    .into_bytes()
}

struct Documents {
    intake: Intake,
    organization_id: String,
    next: std::cell::Cell<u32>,
    _core: Core,
}

impl Documents {
    /// Files a document from `sender`; returns the item and what the pipeline did.
    async fn receive(&self, sender: &str, raw: &[u8]) -> (String, Filing) {
        let n = self.next.get() + 1;
        self.next.set(n);
        let (id, filing) = self
            .intake
            .receive(
                &CdaSource,
                &Received {
                    organization_id: &self.organization_id,
                    connector: None,
                    provider_ref: Some(format!("doc-{n}")),
                    sender: sender.to_string(),
                    recipient: None,
                    raw,
                },
            )
            .await
            .expect("intake");
        (id, filing.expect("a new item"))
    }

    async fn item(&self, id: &str) -> switchboard::store::InboundRow {
        self.intake
            .store
            .inbound()
            .item(&self.organization_id, id)
            .await
            .expect("item")
    }
}

async fn patient(
    store: &Store,
    org: &str,
    external_id: &str,
    (family, given, birth, sex): (&str, &str, &str, &str),
    identifiers: &[(&str, &str)],
    email: Option<&str>,
) -> String {
    let input = PatientInput {
        external_id: external_id.into(),
        family_name: Some(family.into()),
        given_name: Some(given.into()),
        birth_date: Some(birth.into()),
        sex: Some(sex.into()),
        contact_points: email.map(|e| vec![ContactPointInput::new("email", e, None, 1, "US")]),
        identifiers: identifiers
            .iter()
            .map(|(authority, id)| (id.to_string(), authority.to_string(), None))
            .collect(),
        ..PatientInput::default()
    };
    store
        .patients()
        .upsert(org, &input)
        .await
        .expect("patient")
        .0
        .id
}

fn filed_for(filing: &Filing) -> Option<&str> {
    match filing {
        Filing::Filed { patient_id, .. } => Some(patient_id),
        Filing::Unmatched { .. } => None,
    }
}

const HOSPITAL_OID: &str = "2.16.840.1.113883.19.5";
const CLINIC_OID: &str = "1.2.840.114350.1.13.99";

async fn documents_match_by_each_rule(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.hl7.organization = "north".into();
    // The clinic's feed calls its authority "CLINIC"; its documents use the OID.
    let mut north = switchboard::config::OrganizationConfig::default();
    north
        .identifier_authorities
        .insert(CLINIC_OID.into(), "CLINIC".into());
    config.organizations.insert("north".into(), north);
    let core = Core::open(config.clone()).await.expect("core");
    let org = core
        .store
        .organizations()
        .ensure("north", "North")
        .await
        .expect("organization")
        .id;
    let docs = Documents {
        intake: Intake {
            store: core.store.clone(),
            keyring: core.keyring.clone(),
            config: core.config.clone(),
        },
        organization_id: org.clone(),
        next: std::cell::Cell::new(0),
        _core: core,
    };
    let store = docs.intake.store.clone();

    // 2. Identifier: an HL7 feed that sends CX.4's universal id (HD.2/HD.3).
    let hl7 = switchboard::hl7::processor::Hl7Processor::new(
        store.clone(),
        docs.intake.keyring.clone(),
        config.hl7.clone(),
        "US",
        None,
    )
    .await
    .expect("processor");
    let adt = "MSH|^~\\&|EHR|HOSP|SB|SB|20260101120000||ADT^A04|MSG1|P|2.5.1\r\
               EVN|A04|20260101120000\r\
               PID|1||MRN-7^^^HOSP&2.16.840.1.113883.19.5&ISO^MR||Okafor^Chidi||19700302|M\r";
    let outcome = hl7.handle(adt.as_bytes()).await.expect("hl7");
    assert_eq!(outcome.code.as_str(), "AA");
    let chidi = store
        .patients()
        .by_external_id(&org, "MRN-7")
        .await
        .expect("patient")
        .id;
    // Other demographics in the document: only the identifier can match it.
    let (id, filing) = docs
        .receive(
            "hie@direct.example",
            &ccda(&[(HOSPITAL_OID, "MRN-7")], "X", "Y", "20000101", "F"),
        )
        .await;
    assert_eq!(filed_for(&filing), Some(chidi.as_str()));
    assert_eq!(
        docs.item(&id).await.match_method.as_deref(),
        Some("identifier")
    );
    // The same id under an authority we do not know never matches.
    let (_, filing) = docs
        .receive(
            "hie@direct.example",
            &ccda(&[("9.9.9.9", "MRN-7")], "X", "Y", "20000101", "F"),
        )
        .await;
    assert_eq!(
        filing,
        Filing::Unmatched {
            reason: "no patient matched".into(),
            candidates: 0
        }
    );

    // ... and a feed naming its authority by text, mapped by `identifier_authorities`.
    let amara = patient(
        &store,
        &org,
        "C-1",
        ("Bello", "Amara", "1988-08-18", "F"),
        &[("CLINIC", "555")],
        None,
    )
    .await;
    let (id, filing) = docs
        .receive(
            "hie@direct.example",
            &ccda(&[(CLINIC_OID, "555")], "X", "Y", "20000101", "F"),
        )
        .await;
    assert_eq!(filed_for(&filing), Some(amara.as_str()));
    assert_eq!(
        docs.item(&id).await.match_method.as_deref(),
        Some("identifier")
    );
    let item = docs.item(&id).await;
    let steps: Vec<String> = store
        .inbound()
        .steps(&org, &item.id)
        .await
        .expect("steps")
        .into_iter()
        .map(|s| s.step)
        .collect();
    assert_eq!(steps, ["received", "parsed", "matched", "filed"]);

    // 3. Demographics: the real C-CDA sample's patient (ids of authorities we do not hold).
    let isabella = patient(
        &store,
        &org,
        "P-ISA",
        ("Jones", "Isabella", "1950-12-19", "F"),
        &[],
        None,
    )
    .await;
    let sample =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ccda/CCD-2.xml"))
            .expect("CCD-2.xml");
    let (id, filing) = docs.receive("hie@direct.example", &sample).await;
    assert_eq!(filed_for(&filing), Some(isabella.as_str()));
    assert_eq!(
        docs.item(&id).await.match_method.as_deref(),
        Some("demographics")
    );
    // The document itself is filed with the message: sealed at rest, the same bytes opened.
    let Filing::Filed { message_id, .. } = &filing else {
        unreachable!("filed above")
    };
    let files = store
        .attachments()
        .blobs(&org, message_id)
        .await
        .expect("attachments");
    assert_eq!(files.len(), 1, "the C-CDA is the message's attachment");
    assert_eq!(files[0].size_bytes, i64::try_from(sample.len()).unwrap());
    assert!(
        !files[0]
            .content
            .windows(8)
            .any(|w| w == "Isabella".as_bytes()),
        "sealed at rest"
    );
    let opened = docs
        .intake
        .keyring
        .open(
            &files[0].content,
            &switchboard::messages::attachment_context(message_id, &files[0].id),
        )
        .expect("opens with its row's context");
    assert_eq!(opened, sample);
    // A different sex is not her.
    let (_, filing) = docs
        .receive(
            "hie@direct.example",
            &ccda(&[], "Isabella", "Jones", "19501219", "M"),
        )
        .await;
    assert!(filed_for(&filing).is_none());

    // Two patients fit the demographics: unmatched, both offered by that rule.
    let twin_a = patient(
        &store,
        &org,
        "T-A",
        ("Smith", "Ann", "1980-01-01", "F"),
        &[],
        Some("family@mail.example"),
    )
    .await;
    let twin_b = patient(
        &store,
        &org,
        "T-B",
        ("Smith", "Ann Marie", "1980-01-01", "F"),
        &[],
        Some("family@mail.example"),
    )
    .await;
    let (id, filing) = docs
        .receive(
            "hie@direct.example",
            &ccda(&[], "Ann", "Smith", "19800101", "F"),
        )
        .await;
    assert!(matches!(filing, Filing::Unmatched { candidates: 2, .. }));
    let item = docs.item(&id).await;
    assert_eq!(item.status, "unmatched");
    let candidates: Vec<Value> = serde_json::from_str(item.candidates.as_deref().unwrap()).unwrap();
    let mut offered: Vec<(String, String)> = candidates
        .iter()
        .map(|c| {
            (
                c["patient_id"].as_str().unwrap().to_string(),
                c["method"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    offered.sort();
    let mut expected = vec![
        (twin_a.clone(), "demographics".to_string()),
        (twin_b.clone(), "demographics".to_string()),
    ];
    expected.sort();
    assert_eq!(offered, expected);

    // 4. Contact: for a document the sender's address only proposes, even for one patient.
    let (id, filing) = docs
        .receive(
            "isabella@mail.example",
            &ccda(&[], "Nobody", "Known", "19010101", "F"),
        )
        .await;
    assert!(filed_for(&filing).is_none());
    assert!(docs.item(&id).await.candidates.unwrap().contains("[]"));
    patient(
        &store,
        &org,
        "P-ISA",
        ("Jones", "Isabella", "1950-12-19", "F"),
        &[],
        Some("isabella@mail.example"),
    )
    .await;
    let (id, filing) = docs
        .receive(
            "isabella@mail.example",
            &ccda(&[], "Nobody", "Known", "19010101", "F"),
        )
        .await;
    assert!(
        filed_for(&filing).is_none(),
        "a contact point only proposes"
    );
    let item = docs.item(&id).await;
    let candidates: Vec<Value> = serde_json::from_str(item.candidates.as_deref().unwrap()).unwrap();
    assert_eq!(
        candidates,
        [json!({"patient_id": isabella, "method": "contact"})]
    );

    // A redelivered document (same provider id) is recorded once.
    let again = docs
        .intake
        .receive(
            &CdaSource,
            &Received {
                organization_id: &org,
                connector: None,
                provider_ref: Some("doc-1".into()),
                sender: "hie@direct.example".into(),
                recipient: None,
                raw: &sample,
            },
        )
        .await
        .expect("intake");
    assert!(again.1.is_none(), "a redelivery is not processed again");
}
both_databases!(document_rules, crate::documents_match_by_each_rule);

/// A mail-shaped test source: `In-Reply-To: <...>` lines, a blank line, the body.
struct MailLike;

impl switchboard::intake::Source for MailLike {
    fn channel(&self) -> &'static str {
        "mail-test"
    }

    fn parse(&self, raw: &[u8]) -> Result<switchboard::intake::Parsed, String> {
        let text = std::str::from_utf8(raw).map_err(|e| e.to_string())?;
        let (head, body) = text.split_once("\n\n").unwrap_or(("", text));
        Ok(switchboard::intake::Parsed {
            body: body.to_string(),
            in_reply_to: head
                .lines()
                .filter_map(|l| l.strip_prefix("In-Reply-To: "))
                .map(str::to_string)
                .collect(),
            ..Default::default()
        })
    }
}

async fn mail_references_name_the_message_answered(backend: Backend) {
    let db = TestDb::new(backend).await;
    let core = Core::open(db.config()).await.expect("core");
    let store = core.store.clone();
    let org = store
        .organizations()
        .ensure("north", "North")
        .await
        .expect("organization")
        .id;
    let other = store
        .organizations()
        .ensure("west", "West")
        .await
        .expect("organization")
        .id;
    let intake = Intake {
        store: store.clone(),
        keyring: core.keyring.clone(),
        config: core.config.clone(),
    };
    // Two patients share the address: only the reference can decide.
    let a = patient(
        &store,
        &org,
        "M-A",
        ("Lee", "Kim", "1990-01-01", "F"),
        &[],
        Some("family@mail.example"),
    )
    .await;
    patient(
        &store,
        &org,
        "M-B",
        ("Lee", "Jo", "1992-01-01", "M"),
        &[],
        Some("family@mail.example"),
    )
    .await;
    let sent = |organization: &str, patient: Option<String>| {
        let message_id = switchboard::store::new_id("msg");
        let delivery_id = switchboard::store::new_id("dlv");
        let thread_id = switchboard::store::new_id("thr");
        let message = switchboard::store::NewMessage {
            id: message_id.clone(),
            organization_id: organization.to_string(),
            thread_id: thread_id.clone(),
            new_thread_category: Some("routine".into()),
            patient_id: patient,
            direction: "outbound".into(),
            content: b"sealed elsewhere".to_vec(),
            urgent: false,
            part2: false,
            metadata: "{}".into(),
            created_at: switchboard::store::now_ms(),
        };
        let delivery = switchboard::store::NewDelivery {
            id: delivery_id.clone(),
            channel: "email".into(),
            recipient: "family@mail.example".into(),
            max_attempts: 3,
        };
        (message, delivery, thread_id)
    };
    let (message, delivery, thread_id) = sent(&org, Some(a.clone()));
    store
        .messages()
        .accept(&message, std::slice::from_ref(&delivery), None)
        .await
        .expect("accept");
    let token = core.keyring.delivery_token(&delivery.id).expect("token");
    // Another organization's message: its token must not correlate here.
    let (foreign, foreign_delivery, _) = sent(&other, None);
    store
        .messages()
        .accept(&foreign, std::slice::from_ref(&foreign_delivery), None)
        .await
        .expect("accept");
    let foreign_token = core
        .keyring
        .delivery_token(&foreign_delivery.id)
        .expect("token");

    let receive = async |n: u32, raw: String| {
        let (id, filing) = intake
            .receive(
                &MailLike,
                &Received {
                    organization_id: &org,
                    connector: None,
                    provider_ref: Some(format!("mail-{n}")),
                    sender: "family@mail.example".into(),
                    recipient: None,
                    raw: raw.as_bytes(),
                },
            )
            .await
            .expect("intake");
        (id, filing.expect("new"))
    };
    let (id, filing) = receive(
        1,
        format!("In-Reply-To: <{token}@mail.clinic.example>\n\nThanks!"),
    )
    .await;
    assert_eq!(
        filing,
        Filing::Filed {
            patient_id: a.clone(),
            thread_id: thread_id.clone(),
            message_id: store
                .inbound()
                .item(&org, &id)
                .await
                .unwrap()
                .message_id
                .unwrap(),
        }
    );
    assert_eq!(
        store
            .inbound()
            .item(&org, &id)
            .await
            .unwrap()
            .match_method
            .as_deref(),
        Some("reply")
    );
    // A forged token and another organization's token decide nothing: two candidates.
    for (n, reference) in [
        (2, "r0000000000000000000000000a".to_string()),
        (3, foreign_token),
    ] {
        let (_, filing) = receive(
            n,
            format!("In-Reply-To: <{reference}@mail.clinic.example>\n\nHi"),
        )
        .await;
        assert!(
            matches!(filing, Filing::Unmatched { candidates: 2, .. }),
            "{filing:?}"
        );
    }
}
both_databases!(
    mail_replies,
    crate::mail_references_name_the_message_answered
);
