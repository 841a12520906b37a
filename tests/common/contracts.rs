//! The event contracts (`docs/events.md`, a JSON Schema per kind and version in
//! `docs/events/<kind>.v<version>.json`) checked against what a test run emitted: every event
//! in the store, in the envelope the API, the stream and webhooks carry, must validate against
//! its kind's schema, and no payload may carry a key that names PHI.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;
use switchboard::events::EventView;
use switchboard::store::{EventRow, Store};

/// Keys that would carry PHI or message content; a payload carries ids and states only.
pub const PHI_KEYS: [&str; 22] = [
    "body",
    "content",
    "subject",
    "text",
    "name",
    "family_name",
    "given_name",
    "display_name",
    "phone",
    "email",
    "address",
    "number",
    "recipient",
    "sender",
    "from",
    "to",
    "birth_date",
    "dob",
    "mrn",
    "external_id",
    "ssn",
    "attachments",
];

pub fn schema_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/events"))
}

/// Every schema file as (`<kind>.v<version>`, schema).
pub fn schemas() -> HashMap<String, Value> {
    std::fs::read_dir(schema_dir())
        .expect("docs/events")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_stem().expect("name").to_string_lossy().to_string();
            let text = std::fs::read_to_string(&p).expect("schema");
            (name, serde_json::from_str(&text).expect("schema is JSON"))
        })
        .collect()
}

/// The PHI keys found anywhere in `value`, as JSON pointers.
pub fn phi_keys(value: &Value, at: &str) -> Vec<String> {
    match value {
        Value::Object(map) => map
            .iter()
            .flat_map(|(k, v)| {
                let here = format!("{at}/{k}");
                let mut found = phi_keys(v, &here);
                if PHI_KEYS.contains(&k.as_str()) {
                    found.push(here);
                }
                found
            })
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .flat_map(|(i, v)| phi_keys(v, &format!("{at}/{i}")))
            .collect(),
        _ => Vec::new(),
    }
}

/// Checks every event in the store against its contract; returns the kinds seen.
pub async fn assert_events_honour_contracts(store: &Store) -> Vec<String> {
    let rows: Vec<EventRow> = switchboard::store::on_db!(store.db(), |pool| sqlx::query_as(
        "SELECT id, organization_id, kind, subject_id, payload, created_at, tx FROM events ORDER BY id"
    )
    .fetch_all(pool)
    .await)
    .expect("events");
    let schemas = schemas();
    let mut validators: HashMap<String, jsonschema::Validator> = HashMap::new();
    let mut problems = Vec::new();
    let mut kinds = Vec::new();
    for row in rows {
        let view = EventView::from_row(row);
        let name = format!("{}.v{}", view.kind, view.event_version);
        if !kinds.contains(&view.kind) {
            kinds.push(view.kind.clone());
        }
        let value = serde_json::to_value(&view).expect("envelope");
        let Some(schema) = schemas.get(&name) else {
            problems.push(format!(
                "{name}: emitted without a contract (docs/events/{name}.json)"
            ));
            continue;
        };
        let validator = validators.entry(name.clone()).or_insert_with(|| {
            jsonschema::draft202012::new(schema).unwrap_or_else(|e| panic!("{name}: {e}"))
        });
        for error in validator.iter_errors(&value) {
            problems.push(format!(
                "{name} event {}: {} at {}",
                view.id,
                error,
                error.instance_path()
            ));
        }
        for key in phi_keys(&value["payload"], "/payload") {
            problems.push(format!("{name} event {}: PHI key {key}", view.id));
        }
    }
    assert!(
        problems.is_empty(),
        "events break their contracts:\n{}",
        problems.join("\n")
    );
    kinds
}
