//! The HTTP API v1 as a client sees it, on SQLite and PostgreSQL.

mod common;

use std::time::Duration;

use common::{Backend, TestDaemon, TestDb, count_files};
use serde_json::json;

/// Long enough for a first claim under CI load: apalis's SQLite worker may first poll a
/// fresh queue only after its 10 s heartbeat (issue 20 tracks that pickup latency).
const WAIT: Duration = Duration::from_secs(30);

async fn message_is_delivered_with_history(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut daemon = TestDaemon::start(db.config()).await;
    let response = daemon
        .post_message(json!({
            "subject": "Lab results",
            "body": "Your results are ready.",
            "recipients": [{"address": "+14155550001", "channel": "sms"}],
        }))
        .await;
    assert_eq!(response.status(), 201);
    let created: serde_json::Value = response.json().await.expect("json");
    assert_eq!(created["deliveries"][0]["status"], "queued");
    let id = created["id"].as_str().expect("id").to_string();

    let view = daemon.wait_terminal(&id, WAIT).await;
    let delivery = &view["deliveries"][0];
    assert_eq!(view["status"], "delivered");
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(delivery["connector"], "outbox");
    let history: Vec<&str> = delivery["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(history, ["queued", "sending", "delivered"]);

    let file = db
        .outbox()
        .join(format!("{}.json", delivery["id"].as_str().expect("id")));
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("outbox file")).expect("json");
    assert_eq!(written["to"], "+14155550001");
    assert_eq!(written["body"], "Your results are ready.");
    daemon.stop().await;
}
both_databases!(
    message_is_delivered_with_history,
    super::message_is_delivered_with_history
);

async fn idempotency_key_never_sends_twice(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut daemon = TestDaemon::start(db.config()).await;
    let body = json!({"body": "Once only", "recipients": [{"address": "a@example.org", "channel": "email"}]});
    let send = |body: serde_json::Value| {
        daemon
            .http
            .post(daemon.url("/v1/messages"))
            .bearer_auth(&daemon.key)
            .header("Idempotency-Key", "order-42")
            .json(&body)
            .send()
    };
    let first = send(body.clone()).await.expect("first");
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.expect("json");
    let second = send(body.clone()).await.expect("second");
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second: serde_json::Value = second.json().await.expect("json");
    assert_eq!(first["id"], second["id"]);

    let mut other = body.clone();
    other["body"] = json!("Something else");
    let conflict = send(other).await.expect("third");
    assert_eq!(conflict.status(), 409);
    assert_eq!(
        conflict.headers()["content-type"],
        "application/problem+json"
    );

    daemon
        .wait_terminal(first["id"].as_str().expect("id"), WAIT)
        .await;
    // The replay and the conflict stored nothing (a message and its deliveries are stored
    // before the answer), so there is one delivery; it is terminal, so its file is written.
    let counts = daemon
        .core
        .store
        .deliveries()
        .counts()
        .await
        .expect("counts");
    let deliveries: i64 = counts.iter().map(|(_, _, n)| n).sum();
    assert_eq!(deliveries, 1, "one delivery: {counts:?}");
    assert_eq!(count_files(&db.outbox()), 1);
    daemon.stop().await;
}
both_databases!(
    idempotency_key_never_sends_twice,
    super::idempotency_key_never_sends_twice
);

async fn organizations_never_see_each_other(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut daemon = TestDaemon::start(db.config()).await;
    let created: serde_json::Value = daemon
        .post_message(json!({"body": "Private", "recipients": [{"address": "+14155550002", "channel": "sms"}]}))
        .await
        .json()
        .await
        .expect("json");
    let other = daemon.key_for("south").await;
    for path in [
        format!("/v1/messages/{}", created["id"].as_str().expect("id")),
        format!(
            "/v1/threads/{}/messages",
            created["thread_id"].as_str().expect("thread")
        ),
    ] {
        let response = daemon
            .http
            .get(daemon.url(&path))
            .bearer_auth(&other)
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let own = daemon
            .http
            .get(daemon.url(&path))
            .bearer_auth(&daemon.key)
            .send()
            .await
            .expect("GET");
        assert_eq!(own.status(), 200, "{path}");
    }
    daemon.stop().await;
}
both_databases!(
    organizations_never_see_each_other,
    super::organizations_never_see_each_other
);

async fn bad_requests_get_problem_details(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.server.max_body_bytes = 4096;
    let mut daemon = TestDaemon::start(config).await;
    let post = |auth: Option<&str>, body: String| {
        let mut request = daemon
            .http
            .post(daemon.url("/v1/messages"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = auth {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    let key = daemon.key.clone();
    let cases = [
        (Some(key.as_str()), "{not json".to_string(), 400),
        (
            Some(key.as_str()),
            r#"{"body": 5, "recipients": []}"#.to_string(),
            400,
        ),
        (None, r#"{"body":"x","recipients":[]}"#.to_string(), 401),
        (
            Some("sbk_wrong"),
            r#"{"body":"x","recipients":[]}"#.to_string(),
            401,
        ),
        (
            Some(key.as_str()),
            r#"{"body":"x","recipients":[{"address":"1","channel":"pager"}]}"#.to_string(),
            422,
        ),
        (
            Some(key.as_str()),
            r#"{"body":"  ","recipients":[{"address":"1","channel":"sms"}]}"#.to_string(),
            422,
        ),
        (
            Some(key.as_str()),
            r#"{"body":"x","recipients":[{"patient":true,"channel":"sms"}]}"#.to_string(),
            422,
        ),
        (
            Some(key.as_str()),
            format!(r#"{{"body":"{}","recipients":[]}}"#, "x".repeat(10_000)),
            413,
        ),
    ];
    for (auth, body, status) in cases {
        let response = post(auth, body.clone()).await.expect("POST");
        assert_eq!(response.status(), status, "{}", &body[..body.len().min(80)]);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: serde_json::Value = response.json().await.expect("problem json");
        assert_eq!(problem["status"], status);
        assert!(
            problem["title"].is_string() && problem["detail"].is_string(),
            "{problem}"
        );
    }
    let missing = daemon
        .http
        .get(daemon.url("/v1/nothing"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    daemon.stop().await;
}
both_databases!(
    bad_requests_get_problem_details,
    super::bad_requests_get_problem_details
);

async fn patients_are_upserted_and_messaged(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut daemon = TestDaemon::start(db.config()).await;
    let put = |body: serde_json::Value| {
        daemon
            .http
            .put(daemon.url("/v1/patients/MRN-1001"))
            .bearer_auth(&daemon.key)
            .json(&body)
            .send()
    };
    let patient = json!({
        "family_name": "Quarterman", "given_name": "Zebediah", "birth_date": "1980-02-29",
        "language": "es", "time_zone": "America/Chicago",
        "contact_points": [
            {"system": "email", "value": "zq@example.org", "use": "home"},
            {"system": "phone", "value": "+14155550003", "use": "mobile"},
        ],
        "consents": [{"channel": "sms", "purpose": "messaging", "status": "granted"}],
    });
    assert_eq!(put(patient.clone()).await.expect("PUT").status(), 201);
    let mut changed = patient.clone();
    changed["given_name"] = json!("Zeb");
    let again = put(changed).await.expect("PUT");
    assert_eq!(again.status(), 200);
    let shown: serde_json::Value = again.json().await.expect("json");
    assert_eq!(shown["given_name"], "Zeb");
    assert_eq!(shown["contact_points"].as_array().expect("points").len(), 2);
    assert_eq!(
        shown["consents"].as_array().expect("consents").len(),
        2,
        "consents are a ledger"
    );
    let bad = put(json!({"birth_date": "29/02/1980"})).await.expect("PUT");
    assert_eq!(bad.status(), 422);

    let first: serde_json::Value = daemon
        .post_message(json!({"patient": "MRN-1001", "body": "Hola", "recipients": [{"patient": true}], "channels": ["sms", "email"]}))
        .await
        .json()
        .await
        .expect("json");
    let recipients: Vec<&str> = first["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| d["recipient"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(recipients, ["+14155550003", "zq@example.org"]);
    let second: serde_json::Value = daemon
        .post_message(json!({"patient": "MRN-1001", "body": "Again", "recipients": [{"patient": true, "channel": "email"}]}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        first["thread_id"], second["thread_id"],
        "the patient's open thread is reused"
    );
    daemon
        .wait_terminal(second["id"].as_str().expect("id"), WAIT)
        .await;
    let thread = daemon
        .get_json(&format!(
            "/v1/threads/{}/messages",
            first["thread_id"].as_str().expect("thread")
        ))
        .await;
    let bodies: Vec<&str> = thread["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["body"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(bodies, ["Hola", "Again"]);
    assert_eq!(thread["thread"]["patient_id"], first["patient_id"]);
    daemon.stop().await;
}
both_databases!(
    patients_are_upserted_and_messaged,
    super::patients_are_upserted_and_messaged
);

async fn part2_needs_consent_before_any_channel(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut daemon = TestDaemon::start(db.config()).await;
    let put = |consents: serde_json::Value| {
        daemon
            .http
            .put(daemon.url("/v1/patients/P2"))
            .bearer_auth(&daemon.key)
            .json(&json!({"family_name": "Doe", "consents": consents}))
            .send()
    };
    assert!(put(json!([])).await.expect("PUT").status().is_success());
    let refused: serde_json::Value = daemon
        .post_message(
            json!({"patient": "P2", "part2": true, "body": "SUD treatment note",
                             "recipients": [{"address": "dr@example.org", "channel": "email"}]}),
        )
        .await
        .json()
        .await
        .expect("json");
    let view = daemon
        .wait_terminal(refused["id"].as_str().expect("id"), WAIT)
        .await;
    assert_eq!(view["deliveries"][0]["status"], "failed");
    assert_eq!(view["deliveries"][0]["reason"], "part2_consent_required");
    assert_eq!(count_files(&db.outbox()), 0, "no channel was called");
    let audit = daemon
        .core
        .store
        .audit()
        .entries(&daemon.organization_id, 10)
        .await
        .expect("audit");
    assert!(audit.iter().any(|a| a.action == "disclosure_refused"
        && a.delivery_id.as_deref() == view["deliveries"][0]["id"].as_str()));

    assert!(put(json!([{"channel": "email", "purpose": "part2", "recipient": "DR@example.org", "status": "granted"}]))
        .await
        .expect("PUT")
        .status()
        .is_success());
    let allowed: serde_json::Value = daemon
        .post_message(
            json!({"patient": "P2", "part2": true, "body": "SUD treatment note",
                             "recipients": [{"address": "dr@example.org", "channel": "email"},
                                            {"address": "other@example.org", "channel": "email"}]}),
        )
        .await
        .json()
        .await
        .expect("json");
    let view = daemon
        .wait_terminal(allowed["id"].as_str().expect("id"), WAIT)
        .await;
    let statuses: Vec<(&str, &str)> = view["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| {
            (
                d["recipient"].as_str().unwrap_or(""),
                d["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(
        statuses.contains(&("dr@example.org", "delivered")),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&("other@example.org", "failed")),
        "consent covers one recipient: {statuses:?}"
    );
    daemon.stop().await;
}
both_databases!(
    part2_needs_consent_before_any_channel,
    super::part2_needs_consent_before_any_channel
);

async fn health_and_readiness(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut daemon = TestDaemon::start(db.config()).await;
    for path in ["/healthz", "/readyz"] {
        let response = daemon.http.get(daemon.url(path)).send().await.expect("GET");
        assert_eq!(response.status(), 200, "{path}");
    }
    let metrics = daemon
        .http
        .get(daemon.url("/metrics"))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("switchboard_dead_letters 0"), "{metrics}");
    let events = daemon.get_json("/v1/events?after=0").await;
    assert!(events["events"].is_array());
    daemon.stop().await;
}
both_databases!(health_and_readiness, super::health_and_readiness);

/// The server's own guards: a client that sends half a request head is disconnected after
/// `server.header_timeout_secs`; a request whose body does not arrive in
/// `server.request_timeout_secs` gets 408; beyond `server.max_concurrent_requests` a request
/// gets 503 with Retry-After at once. All answers are problem+json.
async fn slow_clients_are_cut_off(backend: Backend) {
    use std::io::{Read, Write};
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.server.header_timeout_secs = 1;
    config.server.request_timeout_secs = 2;
    config.server.max_concurrent_requests = 1;
    let mut daemon = TestDaemon::start(config).await;
    let addr = daemon.daemon.as_ref().expect("daemon").addr;

    let closed_after = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let started = std::time::Instant::now();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
            .expect("half a head");
        let mut rest = Vec::new();
        // EOF (or a reset) ends the read; a read timeout is the old behaviour.
        match s.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("still open after {:?}: {e}", started.elapsed()),
        }
        started.elapsed()
    })
    .await
    .expect("client");
    assert!(
        closed_after < Duration::from_secs(5),
        "half a request head held the connection for {closed_after:?}"
    );

    // A request whose body never completes holds the only slot...
    let key = daemon.key.clone();
    let slow = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let head = format!(
            "POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"body\":"
        );
        s.write_all(head.as_bytes()).expect("head");
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    });
    // ... so another request is turned away at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let busy = loop {
        let response = daemon
            .http
            .get(daemon.url("/healthz"))
            .send()
            .await
            .expect("GET");
        if response.status() == 503 {
            break response;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never refused: {}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(busy.headers()["retry-after"], "1");
    assert_eq!(busy.headers()["content-type"], "application/problem+json");
    let answer = slow.await.expect("slow client");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    // The slot is free again.
    let response = daemon
        .http
        .get(daemon.url("/metrics"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200);
    let metrics = response.text().await.expect("text");
    assert!(
        metrics.contains("switchboard_panics_total{task=\"http\"} 0"),
        "{metrics}"
    );
    daemon.stop().await;
}
both_databases!(slow_clients_are_cut_off, super::slow_clients_are_cut_off);
