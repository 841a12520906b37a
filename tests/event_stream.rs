//! `GET /v1/events/stream` (Server-Sent Events) as a client sees it: it hands out what the
//! cursor feed does, in the same order; a client that disconnects and comes back with
//! `Last-Event-ID` misses nothing and gets nothing twice; `?types=` filters; an organization
//! sees its own events only; on PostgreSQL a daemon streams what another daemon of the fleet
//! accepted (woken by `LISTEN`); a daemon shuts down with streams open.

mod common;

use std::time::Duration;

use common::{Backend, TestDaemon, TestDb};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// A minimal SSE client over a streaming response.
struct Stream {
    response: reqwest::Response,
    buffer: String,
}

/// One event: (`id:`, `event:`, `data:` as JSON).
type Frame = (String, String, Value);

impl Stream {
    async fn open(daemon: &TestDaemon, key: &str, path: &str, last: Option<&str>) -> Self {
        let mut request = daemon.http.get(daemon.url(path)).bearer_auth(key);
        if let Some(last) = last {
            request = request.header("last-event-id", last);
        }
        let response = request.send().await.expect("GET stream");
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap_or_default()
                .starts_with("text/event-stream")
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (comments skipped), or a panic after `WAIT`.
    async fn next(&mut self) -> Frame {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let (mut id, mut event, mut data) = (None, None, String::new());
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("id:") {
                            id = Some(v.trim().to_string());
                        } else if let Some(v) = line.strip_prefix("event:") {
                            event = Some(v.trim().to_string());
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.trim_start());
                        }
                    }
                    if let (Some(id), Some(event)) = (id, event) {
                        return (
                            id,
                            event,
                            serde_json::from_str(&data).expect("data is JSON"),
                        );
                    }
                    continue; // a keep-alive comment
                }
                let chunk = self
                    .response
                    .chunk()
                    .await
                    .expect("stream read")
                    .expect("the stream ended");
                self.buffer.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .expect("an event in time")
    }
}

async fn send(daemon: &TestDaemon, key: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let response = daemon
            .http
            .post(daemon.url("/v1/messages"))
            .bearer_auth(key)
            .json(&json!({
                "subject": "Hello",
                "body": format!("Body {i}"),
                "recipients": [{"address": format!("+1415555{:04}", 200 + i), "channel": "sms"}],
            }))
            .send()
            .await
            .expect("POST message");
        assert_eq!(response.status(), 201);
        let view: Value = response.json().await.expect("json");
        ids.push(view["id"].as_str().expect("id").to_string());
    }
    ids
}

/// The whole feed after `after`, paged: (cursor, id) in feed order.
async fn feed(daemon: &TestDaemon, key: &str, after: &str) -> Vec<(String, i64)> {
    let mut all = Vec::new();
    let mut after = after.to_string();
    loop {
        let response = daemon
            .http
            .get(daemon.url(&format!("/v1/events?limit=1000&after={after}")))
            .bearer_auth(key)
            .send()
            .await
            .expect("GET events");
        let page: Value = response.json().await.expect("json");
        let events = page["events"].as_array().expect("events");
        for e in events {
            all.push((
                e["cursor"].as_str().expect("cursor").to_string(),
                e["id"].as_i64().expect("id"),
            ));
        }
        after = page["next_after"].as_str().expect("next").to_string();
        if events.is_empty() {
            return all;
        }
    }
}

async fn resumes_without_gap_or_repeat(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut daemon = TestDaemon::start(db.config()).await;
    let key = daemon.key.clone();
    let start = daemon.get_json("/v1/events").await["next_after"]
        .as_str()
        .expect("cursor")
        .to_string();

    let mut stream = Stream::open(
        &daemon,
        &key,
        &format!("/v1/events/stream?after={start}"),
        None,
    )
    .await;
    let first = send(&daemon, &key, 3).await;
    let mut seen: Vec<Frame> = Vec::new();
    for _ in 0..5 {
        seen.push(stream.next().await);
    }
    drop(stream); // the client goes away mid-stream

    let second = send(&daemon, &key, 3).await;
    for id in first.iter().chain(&second) {
        daemon.wait_terminal(id, WAIT).await;
    }
    let expected = feed(&daemon, &key, &start).await;
    // Back with Last-Event-ID (it wins over the URL's `after`, which EventSource keeps).
    let last = seen.last().expect("seen").0.clone();
    let mut stream = Stream::open(
        &daemon,
        &key,
        &format!("/v1/events/stream?after={start}"),
        Some(&last),
    )
    .await;
    while seen.len() < expected.len() {
        seen.push(stream.next().await);
    }
    let got: Vec<(String, i64)> = seen
        .iter()
        .map(|(id, _, data)| {
            assert_eq!(
                data["cursor"].as_str(),
                Some(id.as_str()),
                "the SSE id is the cursor"
            );
            assert_eq!(data["event_version"], 1);
            (id.clone(), data["id"].as_i64().expect("id"))
        })
        .collect();
    assert_eq!(got, expected, "the stream is the feed: no gap, no repeat");
    // A malformed Last-Event-ID is refused.
    let bad = daemon
        .http
        .get(daemon.url("/v1/events/stream"))
        .bearer_auth(&key)
        .header("last-event-id", "yesterday")
        .send()
        .await
        .expect("GET");
    assert_eq!(bad.status(), 400);
    // Shutting down with a stream open ends it (and does not hang).
    daemon.stop().await;
    drop(stream);
    common::contracts::assert_events_honour_contracts(&daemon.core.store).await;
}
both_databases!(
    a_resumed_stream_has_no_gap_and_no_repeat,
    super::resumes_without_gap_or_repeat
);

async fn filters_and_isolates(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut daemon = TestDaemon::start(db.config()).await;
    let north = daemon.key.clone();
    let south = daemon.key_for("south").await;
    let mut stream = Stream::open(
        &daemon,
        &south,
        "/v1/events/stream?types=message.accepted",
        None,
    )
    .await;
    let mut north_stream = Stream::open(&daemon, &north, "/v1/events/stream", None).await;
    send(&daemon, &north, 2).await;
    let south_first = send(&daemon, &south, 1).await;
    send(&daemon, &north, 1).await;
    let south_second = send(&daemon, &south, 1).await;
    for expected in south_first.iter().chain(&south_second) {
        let (_, kind, data) = stream.next().await;
        assert_eq!(kind, "message.accepted", "{data}");
        assert_eq!(
            data["payload"]["message_id"].as_str(),
            Some(expected.as_str()),
            "south's stream has south's accepted messages only, in order: {data}"
        );
        assert_ne!(
            data["organization_id"].as_str(),
            Some(daemon.organization_id.as_str())
        );
    }
    // North's (unfiltered) stream never shows a south event.
    for _ in 0..6 {
        let (_, _, data) = north_stream.next().await;
        assert_eq!(
            data["organization_id"].as_str(),
            Some(daemon.organization_id.as_str())
        );
        if let Some(message) = data["payload"]["message_id"].as_str() {
            assert!(
                !south_first
                    .iter()
                    .chain(&south_second)
                    .any(|m| m == message)
            );
        }
    }
    daemon.stop().await;
}
both_databases!(
    a_stream_is_filtered_and_sees_its_organization_only,
    super::filters_and_isolates
);

/// Two daemons on one PostgreSQL: a message accepted by one is streamed by the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_streams_what_any_daemon_accepted() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut one = TestDaemon::start(db.config()).await;
    let mut two = TestDaemon::start(db.config()).await;
    assert_eq!(one.organization_id, two.organization_id);
    let mut stream = Stream::open(
        &two,
        &two.key.clone(),
        "/v1/events/stream?types=message.accepted",
        None,
    )
    .await;
    for _ in 0..3 {
        let sent = send(&one, &one.key, 1).await;
        let started = std::time::Instant::now();
        let (_, _, data) = stream.next().await;
        assert_eq!(
            data["payload"]["message_id"].as_str(),
            Some(sent[0].as_str())
        );
        eprintln!("streamed by the other daemon after {:?}", started.elapsed());
    }
    one.stop().await;
    two.stop().await;
}
