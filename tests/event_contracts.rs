//! The event contracts: every kind the gateway emits (`switchboard::events::CATALOGUE`) has a
//! JSON Schema per version in `docs/events/` and a section in `docs/events.md`, and every event
//! a run emits — messages, urgent messages, read marks, deliveries, appointments, inbound texts
//! filed, unmatched, dismissed and reassigned — validates against its schema, with no PHI key
//! in its payload.

mod common;

use std::time::Duration;

use common::provider::{
    FakeProvider, Flavor, TWILIO_ACCOUNT as ACCOUNT, quick_retries, signed_twilio_post,
    twilio_connector,
};
use common::{Backend, TestDaemon, TestDb};
use serde_json::{Value, json};
use switchboard::events::CATALOGUE;

const FROM: &str = "+15005550006";
const WAIT: Duration = Duration::from_secs(30);

#[test]
fn every_catalogued_kind_has_a_schema_and_a_section() {
    let schemas = common::contracts::schemas();
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/events.md"))
        .expect("docs/events.md");
    for (kind, version) in CATALOGUE {
        let name = format!("{kind}.v{version}");
        let schema = schemas
            .get(&name)
            .unwrap_or_else(|| panic!("docs/events/{name}.json is missing"));
        jsonschema::meta::validate(schema).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(schema["properties"]["kind"]["const"], kind, "{name}");
        assert_eq!(
            schema["properties"]["event_version"]["const"], version,
            "{name}"
        );
        assert!(
            doc.contains(&format!("### `{kind}`")),
            "docs/events.md has no section for {kind}"
        );
        assert!(
            common::contracts::phi_keys(&schema["properties"]["payload"]["properties"], "")
                .is_empty(),
            "{name} declares a PHI key"
        );
    }
    for name in schemas.keys() {
        assert!(
            CATALOGUE
                .iter()
                .any(|(kind, version)| *name == format!("{kind}.v{version}")),
            "docs/events/{name}.json is not in the catalogue"
        );
    }
}

/// A contract catches what it should: a payload with a body or an unknown key is refused.
#[test]
fn a_contract_refuses_content_and_unknown_keys() {
    let schemas = common::contracts::schemas();
    let validator =
        jsonschema::draft202012::new(&schemas["message.read.v1"]).expect("schema compiles");
    let mut event = json!({
        "id": 7, "cursor": "0.7", "organization_id": "org_01jf0000000000000000000000",
        "kind": "message.read", "event_version": 1, "subject_id": "msg_01jf0000000000000000000000",
        "payload": {"message_id": "msg_01jf0000000000000000000000"},
        "at": "2026-11-27T21:00:00.000Z",
    });
    assert!(validator.is_valid(&event));
    event["payload"]["body"] = json!("Your results are in");
    assert!(!validator.is_valid(&event));
    assert_eq!(
        common::contracts::phi_keys(&event["payload"], "/payload"),
        vec!["/payload/body".to_string()]
    );
}

async fn inbound_sms(daemon: &TestDaemon, sid: &str, from: &str, body: &str) {
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
}

async fn emitted_events_honour_their_contracts(backend: Backend) {
    let db = TestDb::new(backend).await;
    let provider = FakeProvider::start(Flavor::Twilio).await;
    let mut config = db.config();
    config.connectors.insert(
        "twilio".into(),
        twilio_connector(&db, &provider.base_url(), FROM, Some("north"), 1),
    );
    config
        .channels
        .insert("sms".into(), quick_retries("twilio", 6));
    config
        .channels
        .insert("email".into(), quick_retries("outbox", 2));
    let mut daemon = TestDaemon::start(config).await;
    let put = |path: String, body: Value| {
        let request = daemon.http.put(daemon.url(&path)).bearer_auth(&daemon.key);
        async move {
            let response = request.json(&body).send().await.expect("PUT");
            assert!(
                response.status().is_success(),
                "{path}: {}",
                response.status()
            );
        }
    };
    put(
        "/v1/patients/p-1".into(),
        json!({"family_name": "Rivera", "given_name": "Ana",
               "contact_points": [{"system": "sms", "value": "+14155552671"},
                                  {"system": "email", "value": "ana@example.org"}]}),
    )
    .await;
    put(
        "/v1/appointments/A-1".into(),
        json!({"patient": "p-1", "start": "2030-01-02T15:00:00Z", "duration_minutes": 30}),
    )
    .await;
    let message = daemon
        .post_message(json!({
            "subject": "Results",
            "body": "Please call us.",
            "patient": "p-1",
            "urgent": true,
            "recipients": [{"address": "ana@example.org", "channel": "email"}],
        }))
        .await;
    assert_eq!(message.status(), 201, "{:?}", message.text().await);
    let message: Value = message.json().await.expect("json");
    let id = message["id"].as_str().expect("id");
    daemon.wait_terminal(id, WAIT).await;
    let read = daemon
        .http
        .post(daemon.url(&format!("/v1/messages/{id}/read")))
        .bearer_auth(&daemon.key)
        .send()
        .await
        .expect("read");
    assert_eq!(read.status(), 204);
    inbound_sms(
        &daemon,
        "SM20000000000000000000000000000001",
        "+14155552671",
        "Thanks",
    )
    .await;
    inbound_sms(
        &daemon,
        "SM20000000000000000000000000000002",
        "+14155550100",
        "Who?",
    )
    .await;
    put(
        "/v1/patients/p-2".into(),
        json!({"family_name": "Rivera", "given_name": "Luis"}),
    )
    .await;
    // People's decisions on inbound items: the unmatched one dismissed, the filed one moved.
    let action = async |path: String, body: Value| {
        let response = daemon
            .http
            .post(daemon.url(&path))
            .bearer_auth(&daemon.key)
            .json(&body)
            .send()
            .await
            .expect("POST");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
    };
    let unmatched = daemon.get_json("/v1/inbound?status=unmatched").await;
    let unmatched_id = unmatched["items"][0]["id"]
        .as_str()
        .expect("unmatched item")
        .to_string();
    action(
        format!("/v1/inbound/{unmatched_id}/dismiss"),
        json!({"reason": "not for us"}),
    )
    .await;
    let filed = common::wait::wait_until("the filed item", WAIT, async || {
        let events = daemon.events().await;
        events["events"]
            .as_array()?
            .iter()
            .find(|e| e["kind"] == "inbound.filed")
            .and_then(|e| e["payload"]["inbound_item_id"].as_str().map(str::to_string))
    })
    .await;
    action(
        format!("/v1/inbound/{filed}/reassign"),
        json!({"patient": "p-2"}),
    )
    .await;

    let wanted = [
        "message.accepted",
        "urgent_message_sent",
        "delivery.status",
        "message.read",
        "appointment.changed",
        "inbound.filed",
        "inbound.unmatched",
        "inbound.dismissed",
        "inbound.reassigned",
    ];
    common::wait::wait_for(
        "events of every kind the scenario makes",
        WAIT,
        async || {
            let events = daemon.events().await;
            wanted.iter().all(|k| {
                events["events"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|e| e["kind"] == *k))
            })
        },
    )
    .await;
    daemon.stop().await;
    let kinds = common::contracts::assert_events_honour_contracts(&daemon.core.store).await;
    for kind in wanted {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} was not emitted: {kinds:?}"
        );
    }
}
both_databases!(
    emitted_events_honour_their_contracts,
    super::emitted_events_honour_their_contracts
);
