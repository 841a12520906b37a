//! API errors as a client sees them, on SQLite and PostgreSQL: every problem has a stable
//! `type` (`urn:switchboard:problem:<code>`, `code` beside it, one title per type), and an
//! invalid request names every field at fault in `errors` — a JSON pointer into the body, or
//! the query parameter or header — with `pointer` repeating the first.

mod common;

use common::{Backend, TestDaemon, TestDb};
use reqwest::Method;
use serde_json::{Value, json};

/// Sends a request with the daemon's key (or `key`) and returns the status and JSON body.
async fn call(
    daemon: &TestDaemon,
    method: Method,
    path: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> (u16, Value) {
    let mut request = daemon.http.request(method, daemon.url(path));
    if let Some(key) = key.or(Some(daemon.key.as_str())).filter(|k| !k.is_empty()) {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    if status >= 400 {
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Asserts the problem's status and stable type, and returns its `errors` as
/// `(location kind, location, detail)`.
fn problem(status: u16, body: &Value, expected_status: u16, code: &str) -> Vec<(String, String)> {
    assert_eq!(status, expected_status, "{body:#}");
    assert_eq!(body["status"], expected_status, "{body:#}");
    assert_eq!(body["code"], code, "{body:#}");
    assert_eq!(
        body["type"],
        format!("urn:switchboard:problem:{code}"),
        "{body:#}"
    );
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body:#}"
    );
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    assert!(e["detail"].is_string(), "{e}");
                    let (kind, at) = ["pointer", "parameter", "header"]
                        .into_iter()
                        .find_map(|k| e[k].as_str().map(|at| (k, at)))
                        .expect("a location");
                    (kind.to_string(), at.to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn pointers(errors: &[(String, String)]) -> Vec<&str> {
    errors
        .iter()
        .filter(|(kind, _)| kind == "pointer")
        .map(|(_, at)| at.as_str())
        .collect()
}

async fn invalid_fields_are_all_named_by_pointer(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.reminders.enabled = false;
    let mut daemon = TestDaemon::start(config).await;
    let put = Method::PUT;

    // A patient with four fields wrong: all four are named, the first is `pointer`.
    let (status, body) = call(
        &daemon,
        put.clone(),
        "/v1/patients/MRN-7",
        Some(json!({
            "birth_date": "29/02/1980",
            "contact_points": [
                {"system": "email", "value": "a@example.org"},
                {"system": "pager", "value": "123"},
            ],
            "consents": [
                {"purpose": "messaging", "status": "granted"},
                {"purpose": "messaging", "status": "maybe", "expires_at": "soon"},
            ],
        })),
        None,
    )
    .await;
    let errors = problem(status, &body, 422, "validation_failed");
    assert_eq!(
        pointers(&errors),
        [
            "/birth_date",
            "/contact_points/1/system",
            "/consents/1/status",
            "/consents/1/expires_at",
        ]
    );
    assert_eq!(body["pointer"], "/birth_date");
    let (status, _) = call(&daemon, Method::GET, "/v1/patients/MRN-7", None, None).await;
    assert_eq!(status, 404, "nothing was stored");

    // A path parameter at fault is named as a parameter.
    let long = format!("/v1/patients/{}", "x".repeat(129));
    let (status, body) = call(&daemon, put.clone(), &long, Some(json!({})), None).await;
    let errors = problem(status, &body, 422, "validation_failed");
    assert_eq!(errors, [("parameter".into(), "external_id".into())]);

    // An appointment with a bad start for a patient that does not exist: both named.
    let (status, body) = call(
        &daemon,
        put.clone(),
        "/v1/appointments/F-1",
        Some(json!({"patient": "NOBODY", "start": "tomorrow", "duration_minutes": 0})),
        None,
    )
    .await;
    let errors = problem(status, &body, 422, "validation_failed");
    assert_eq!(
        pointers(&errors),
        ["/start", "/duration_minutes", "/patient"]
    );

    // A recall: due date and status.
    let (status, body) = call(
        &daemon,
        put.clone(),
        "/v1/recalls/R-1",
        Some(json!({"patient": "NOBODY", "recall_type": "dental", "due_date": "June", "status": "later"})),
        None,
    )
    .await;
    let errors = problem(status, &body, 422, "validation_failed");
    assert_eq!(pointers(&errors), ["/due_date", "/status", "/patient"]);

    // Staff without a way to reach them and with a bad rank.
    let (status, body) = call(
        &daemon,
        put.clone(),
        "/v1/staff/nurse-1",
        Some(json!({"name": " ", "on_call_rank": 0})),
        None,
    )
    .await;
    let errors = problem(status, &body, 422, "validation_failed");
    assert_eq!(pointers(&errors), ["/name", "/on_call_rank", "/sms"]);

    // A message: the field of the recipient at fault.
    let (status, body) = call(
        &daemon,
        Method::POST,
        "/v1/messages",
        Some(json!({"body": "x", "recipients": [
            {"address": "+14155550000", "channel": "sms"},
            {"address": "1", "channel": "pager"},
        ]})),
        None,
    )
    .await;
    let errors = problem(status, &body, 422, "validation_failed");
    assert_eq!(pointers(&errors), ["/recipients/1/channel"]);
    let (status, body) = call(
        &daemon,
        Method::POST,
        "/v1/messages",
        Some(json!({"body": "x", "recipients": [{"patient": true, "channel": "sms"}]})),
        None,
    )
    .await;
    let errors = problem(status, &body, 422, "validation_failed");
    assert_eq!(pointers(&errors), ["/recipients/0/patient"]);
    let (status, body) = call(
        &daemon,
        Method::POST,
        "/v1/messages",
        Some(
            json!({"body": "x", "recipients": [{"address": "a@example.org", "channel": "email"}],
                    "metadata": {"purpose": "reminder"}}),
        ),
        None,
    )
    .await;
    let errors = problem(status, &body, 422, "validation_failed");
    assert_eq!(pointers(&errors), ["/metadata/purpose"]);

    // A reminder rule whose id disagrees with the path and whose touch is out of range.
    let (status, body) = call(
        &daemon,
        put.clone(),
        "/v1/reminder-rules/dental",
        Some(json!({"id": "other", "touches": [
            {"id": "forever", "before": "100000000d", "channels": ["sms"]},
        ]})),
        None,
    )
    .await;
    let errors = problem(status, &body, 422, "validation_failed");
    assert_eq!(pointers(&errors), ["/id", "/touches/0/before"]);
    daemon.stop().await;
}
both_databases!(
    invalid_fields_are_all_named_by_pointer,
    super::invalid_fields_are_all_named_by_pointer
);

async fn bodies_and_parameters_of_the_wrong_shape(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.server.max_body_bytes = 4096;
    config.reminders.enabled = false;
    let mut daemon = TestDaemon::start(config).await;

    // JSON of the wrong shape: 400 with a pointer to the field (wrong type, unknown, missing).
    for (body, pointer) in [
        (
            json!({"body": "x", "recipients": [{"address": 5, "channel": "sms"}]}),
            "/recipients/0/address",
        ),
        (
            json!({"body": "x", "recipients": [], "colour": "red"}),
            "/colour",
        ),
        (json!({"recipients": []}), "/body"),
    ] {
        let (status, problem_body) =
            call(&daemon, Method::POST, "/v1/messages", Some(body), None).await;
        let errors = problem(status, &problem_body, 400, "invalid_body");
        assert_eq!(pointers(&errors), [pointer], "{problem_body:#}");
    }
    let (status, body) = call(
        &daemon,
        Method::PUT,
        "/v1/patients/MRN-8",
        Some(json!({"contact_points": [{"system": "sms", "value": "1", "use": 3}]})),
        None,
    )
    .await;
    let errors = problem(status, &body, 400, "invalid_body");
    assert_eq!(pointers(&errors), ["/contact_points/0/use"]);

    // Not JSON at all, not declared JSON, too large.
    let raw = |content_type: &'static str, body: String| {
        daemon
            .http
            .post(daemon.url("/v1/messages"))
            .bearer_auth(&daemon.key)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    for (content_type, body, status, code) in [
        (
            "application/json",
            "{not json".to_string(),
            400,
            "malformed_json",
        ),
        (
            "text/plain",
            "{}".to_string(),
            415,
            "unsupported_media_type",
        ),
        (
            "application/json",
            format!(r#"{{"body":"{}","recipients":[]}}"#, "x".repeat(10_000)),
            413,
            "payload_too_large",
        ),
    ] {
        let response = raw(content_type, body).await.expect("POST");
        let got = response.status().as_u16();
        let body: Value = response.json().await.expect("problem");
        problem(got, &body, status, code);
    }

    // Query parameters: named as parameters.
    let (status, body) = call(
        &daemon,
        Method::GET,
        "/v1/events?after=nonsense",
        None,
        None,
    )
    .await;
    let errors = problem(status, &body, 400, "invalid_parameter");
    assert_eq!(errors, [("parameter".into(), "after".into())]);
    let (status, body) = call(&daemon, Method::GET, "/v1/inbound?status=lost", None, None).await;
    let errors = problem(status, &body, 400, "invalid_parameter");
    assert_eq!(errors, [("parameter".into(), "status".into())]);
    let (status, body) = call(&daemon, Method::GET, "/v1/events?limit=many", None, None).await;
    let errors = problem(status, &body, 400, "invalid_parameter");
    assert_eq!(errors, [("parameter".into(), "limit".into())]);
    // What was valid before still is: an empty cursor, a bare id, unknown parameters.
    for path in [
        "/v1/events?after=",
        "/v1/events?after=0&limit=5",
        "/v1/inbound?status=filed&cache=1",
    ] {
        let (status, body) = call(&daemon, Method::GET, path, None, None).await;
        assert_eq!(status, 200, "{path}: {body:#}");
    }

    // A header: Idempotency-Key of the wrong length.
    let response = daemon
        .http
        .post(daemon.url("/v1/messages"))
        .bearer_auth(&daemon.key)
        .header("Idempotency-Key", "k".repeat(300))
        .json(
            &json!({"body": "x", "recipients": [{"address": "a@example.org", "channel": "email"}]}),
        )
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("problem");
    let errors = problem(status, &body, 422, "validation_failed");
    assert_eq!(errors, [("header".into(), "Idempotency-Key".into())]);
    daemon.stop().await;
}
both_databases!(
    bodies_and_parameters_of_the_wrong_shape,
    super::bodies_and_parameters_of_the_wrong_shape
);

async fn every_refusal_has_its_stable_type(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.reminders.enabled = false;
    let mut daemon = TestDaemon::start(config).await;

    // 401 without a key or with a wrong one.
    let (status, body) = call(&daemon, Method::GET, "/v1/events", None, Some("")).await;
    problem(status, &body, 401, "unauthorized");
    let (status, body) = call(&daemon, Method::GET, "/v1/events", None, Some("sbk_no")).await;
    problem(status, &body, 401, "unauthorized");

    // 403: a read-only key sending.
    let token = switchboard::http::new_token().expect("token");
    daemon
        .core
        .store
        .api_keys()
        .create(&switchboard::store::NewApiKey {
            organization_id: daemon.organization_id.clone(),
            name: "reader".into(),
            key_hash: switchboard::http::hash_token(&token),
            scopes: "read".into(),
            expires_at: None,
        })
        .await
        .expect("key");
    let (status, body) = call(
        &daemon,
        Method::POST,
        "/v1/messages",
        Some(
            json!({"body": "x", "recipients": [{"address": "a@example.org", "channel": "email"}]}),
        ),
        Some(&token),
    )
    .await;
    problem(status, &body, 403, "insufficient_scope");
    assert_eq!(body["scope"], "send");

    // 404: records, routes; 405.
    for path in [
        "/v1/messages/msg_nothing",
        "/v1/threads/thr_nothing/messages",
        "/v1/patients/NOBODY",
        "/v1/patients/NOBODY/appointments",
        "/v1/appointments/NOTHING",
        "/v1/appointments/NOTHING/reminders",
        "/v1/recalls/NOTHING",
        "/v1/inbound/inb_nothing",
        "/v1/nothing",
    ] {
        let (status, body) = call(&daemon, Method::GET, path, None, None).await;
        problem(status, &body, 404, "not_found");
    }
    let (status, body) = call(
        &daemon,
        Method::POST,
        "/v1/messages/msg_nothing/read",
        None,
        None,
    )
    .await;
    problem(status, &body, 404, "not_found");
    let (status, body) = call(&daemon, Method::DELETE, "/v1/messages", None, None).await;
    problem(status, &body, 405, "method_not_allowed");

    // 409: an Idempotency-Key reused with another request.
    let send = |text: &'static str| {
        daemon
            .http
            .post(daemon.url("/v1/messages"))
            .bearer_auth(&daemon.key)
            .header("Idempotency-Key", "same")
            .json(&json!({"body": text, "recipients": [{"address": "a@example.org", "channel": "email"}]}))
            .send()
    };
    assert_eq!(send("first").await.expect("POST").status(), 201);
    let reused = send("second").await.expect("POST");
    let status = reused.status().as_u16();
    let body: Value = reused.json().await.expect("problem");
    problem(status, &body, 409, "idempotency_key_reused");

    // 422: the organization's reminder rules are capped.
    for i in 0..50 {
        let (status, body) = call(
            &daemon,
            Method::PUT,
            &format!("/v1/reminder-rules/r{i}"),
            Some(json!({"id": format!("r{i}"), "touches": [{"id": "t", "before": "2h", "channels": ["sms"]}]})),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body:#}");
    }
    let (status, body) = call(
        &daemon,
        Method::PUT,
        "/v1/reminder-rules/r50",
        Some(json!({"id": "r50", "touches": [{"id": "t", "before": "2h", "channels": ["sms"]}]})),
        None,
    )
    .await;
    problem(status, &body, 422, "reminder_rule_limit");
    // Replacing one of the fifty is still allowed.
    let (status, _) = call(
        &daemon,
        Method::PUT,
        "/v1/reminder-rules/r0",
        Some(json!({"id": "r0", "touches": [{"id": "t", "before": "3h", "channels": ["sms"]}]})),
        None,
    )
    .await;
    assert_eq!(status, 200);
    daemon.stop().await;
}
both_databases!(
    every_refusal_has_its_stable_type,
    super::every_refusal_has_its_stable_type
);

/// Accept-time checks of where a message goes (issue 13): a number that is not a phone
/// number, an email address that is not one, a Direct address without a domain name, and an
/// SMS too long to send are refused with the field, never accepted and failed later.
async fn recipients_and_sms_bodies_are_checked_when_accepted(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.reminders.enabled = false;
    let mut daemon = TestDaemon::start(config).await;
    let send = |recipients: Value, body: String| json!({"body": body, "recipients": recipients});
    for (recipients, pointer, says) in [
        (
            json!([{"address": "not-a-phone", "channel": "sms"}]),
            "/recipients/0/address",
            "not a phone number",
        ),
        (
            json!([{"address": "+14155550000", "channel": "sms"},
                   {"address": "555-01", "channel": "fax"}]),
            "/recipients/1/address",
            "not a valid phone number for region US",
        ),
        (
            json!([{"address": "bob", "channel": "email"}]),
            "/recipients/0/address",
            "RFC 5321",
        ),
        (
            json!([{"address": "jane@[127.0.0.1]", "channel": "email"}]),
            "/recipients/0/address",
            "address literals",
        ),
        (
            json!([{"address": "dr.who@direct", "channel": "direct"}]),
            "/recipients/0/address",
            "not a Direct address",
        ),
    ] {
        let (status, body) = call(
            &daemon,
            Method::POST,
            "/v1/messages",
            Some(send(recipients.clone(), "Hello".into())),
            None,
        )
        .await;
        let errors = problem(status, &body, 422, "validation_failed");
        assert_eq!(pointers(&errors), [pointer], "{recipients}");
        let detail = body["errors"][0]["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{recipients}: {body:#}");
    }

    // 1,601 characters by SMS: refused; the same text by email, and 1,530 GSM characters by
    // SMS (10 segments), are accepted.
    let sms = json!([{"address": "+14155550000", "channel": "sms"}]);
    let (status, body) = call(
        &daemon,
        Method::POST,
        "/v1/messages",
        Some(send(sms.clone(), "x".repeat(1601))),
        None,
    )
    .await;
    let errors = problem(status, &body, 422, "validation_failed");
    assert_eq!(pointers(&errors), ["/body"]);
    let detail = body["errors"][0]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("1600"), "{body:#}");
    let email = json!([{"address": "Jane.Roe@Example.org", "channel": "email"}]);
    for (recipients, text) in [(email, "x".repeat(1601)), (sms, "x".repeat(1530))] {
        let (status, body) = call(
            &daemon,
            Method::POST,
            "/v1/messages",
            Some(send(recipients, text)),
            None,
        )
        .await;
        assert_eq!(status, 201, "{body:#}");
    }
    daemon.stop().await;
}
both_databases!(
    recipients_and_sms_bodies_are_checked_when_accepted,
    super::recipients_and_sms_bodies_are_checked_when_accepted
);
