//! What `/metrics` shows, kept in memory and up to date as things happen (the `prometheus-client`
//! crate; OpenMetrics text: `_total` counters, `_seconds` histograms, base units).
//!
//! A scrape reads only this state: it never queries the database, so its cost does not grow with
//! the tables (`switchboard bench --metrics` measures it at 10k and 1M deliveries). Counters are
//! bumped where the event happens — a delivery's move is counted by the store right after the
//! transaction that made it commits (`store::deliveries`), an HL7 message by the processor, an
//! inbound item by the intake pipeline, a provider webhook by its edge. The gauges that describe
//! the database (queue depth and the oldest waiting delivery per channel, the dead letters
//! waiting for a retry) are the daemon's [`Gauges`], set from two indexed queries at most every
//! `[metrics] refresh_secs` by a background task (`ops::Ops::refresh_metrics`); the oldest
//! waiting age is computed at scrape time from the remembered creation time.
//!
//! Like `domain`, this module does no I/O and knows nothing of the crate above it: the store may
//! count into it. One state per process ([`metrics`]); counters are per process (Prometheus sums
//! a fleet). Label values that come from outside (an HL7
//! message type, a connector name in a webhook's path) are bounded: past
//! [`MAX_LABEL_VALUES`] distinct values a family counts the rest as `other`.

use std::collections::{BTreeMap, HashSet};
use std::sync::{LazyLock, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Distinct values one label may take from outside input before the rest count as `other`.
pub const MAX_LABEL_VALUES: usize = 64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub channel: String,
    pub connector: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    pub channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FinalLabels {
    pub channel: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InboundLabels {
    pub source: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub connector: String,
    pub kind: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorLabels {
    pub channel: String,
    pub connector: String,
}

/// `type` (a Rust keyword) and `ack`.
type Hl7Labels = Vec<(&'static str, String)>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    /// The connector's Direct address.
    pub address: String,
    /// `signing`, `decryption`, `anchor`.
    pub role: String,
    /// The certificate's subject common name (not PHI: an organization's Direct identity).
    pub subject: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets, seconds: 5 ms to about 24 h.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 4.0, 12))
}

/// ACK latency buckets, seconds: 1 ms to about 16 s.
fn ack_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Per channel and connector: when a delivery last succeeded and since when it has been failing
/// (for the `channel_failing` alert).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    /// Last move to a successful state (sent, delivered, …), ms.
    pub last_success: Option<i64>,
    /// The first failure (a failed attempt or a failed delivery) since the last success, ms.
    pub failing_since: Option<i64>,
    /// Failures since the last success.
    pub failures: u64,
}

/// Per (channel, connector): when deliveries last succeeded and since when they have been
/// failing, as one daemon saw them (its store records every move; the worker every failed
/// attempt). Read by the `channel_failing` alert. Cheap to clone; one per `Store`.
#[derive(Debug, Clone, Default)]
pub struct ChannelHealth(std::sync::Arc<Mutex<BTreeMap<(String, String), Health>>>);

impl ChannelHealth {
    /// A delivery moved to `status`.
    pub fn moved(&self, channel: &str, connector: Option<&str>, status: &str) {
        if matches!(status, "sent" | "delivered" | "processed" | "dispatched") {
            let mut health = lock(&self.0);
            let h = health
                .entry((channel.to_string(), connector.unwrap_or("").to_string()))
                .or_default();
            h.last_success = Some(now_ms());
            h.failing_since = None;
            h.failures = 0;
        } else if matches!(status, "failed" | "expired") {
            self.attempt_failed(channel, connector);
        }
    }

    /// A send attempt (or a delivery) failed.
    pub fn attempt_failed(&self, channel: &str, connector: Option<&str>) {
        let mut health = lock(&self.0);
        let h = health
            .entry((channel.to_string(), connector.unwrap_or("").to_string()))
            .or_default();
        h.failing_since.get_or_insert(now_ms());
        h.failures += 1;
    }

    /// What was seen so far.
    pub fn snapshot(&self) -> BTreeMap<(String, String), Health> {
        lock(&self.0).clone()
    }
}

/// The queue of one channel as the last refresh saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Queue {
    /// Deliveries queued or sending.
    pub depth: i64,
    /// Creation time (ms) of the oldest of them.
    pub oldest_created_at: Option<i64>,
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    deliveries: Family<DeliveryLabels, Counter>,
    attempts_failed: Family<ConnectorLabels, Counter>,
    accept_to_sent: HistogramFamily<ChannelLabels>,
    accept_to_final: HistogramFamily<FinalLabels>,
    dead_letters_total: Family<ChannelLabels, Counter>,
    inbound: Family<InboundLabels, Counter>,
    webhooks: Family<WebhookLabels, Counter>,
    hl7: Family<Hl7Labels, Counter>,
    hl7_ack: Histogram,
    certificates: Family<CertificateLabels, Gauge>,
    hl7_connections: Gauge,
    state: std::sync::Arc<State>,
}

/// What alerts and the age collector read, besides the registered metrics.
#[derive(Debug, Default)]
struct State {
    /// Per HL7 sending facility (`app^facility`, bounded): last message, ms.
    hl7_last: Mutex<BTreeMap<String, i64>>,
    /// Label values seen per bounded family.
    seen: Mutex<BTreeMap<&'static str, HashSet<String>>>,
    /// Certificate expiries, for alerts: (address, role, subject) → not-after, seconds.
    certificates: Mutex<BTreeMap<(String, String, String), i64>>,
    /// Open MLLP connections per peer address, and when the oldest was opened (ms).
    hl7_peers: Mutex<BTreeMap<std::net::IpAddr, (usize, i64)>>,
}

/// One open MLLP connection, counted while it lives (see [`Metrics::hl7_connected`]).
pub struct Hl7Connection {
    peer: std::net::IpAddr,
}

impl Drop for Hl7Connection {
    fn drop(&mut self) {
        let metrics = metrics();
        metrics.hl7_connections.dec();
        let mut peers = lock(&metrics.state.hl7_peers);
        if let Some((open, _)) = peers.get_mut(&self.peer) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                peers.remove(&self.peer);
            }
        }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// The gauges that describe the database — queue depth and the oldest waiting delivery per
/// channel, dead letters waiting for a retry — as the daemon's last refresh saw them. One per
/// daemon (held by `ops::Ops`), rendered with the process-wide metrics; the oldest waiting age
/// is computed at scrape time from the remembered creation time.
#[derive(Debug, Clone, Default)]
pub struct Gauges(std::sync::Arc<Mutex<GaugeState>>);

#[derive(Debug, Clone, Default)]
struct GaugeState {
    queues: BTreeMap<String, Queue>,
    dead_letters: i64,
    refreshed: bool,
}

impl Gauges {
    /// The result of a refresh: every channel not in `queues` is empty.
    pub fn refreshed(&self, queues: BTreeMap<String, Queue>, dead_letters: i64) {
        let mut state = lock(&self.0);
        for (channel, queue) in state.queues.iter_mut() {
            if !queues.contains_key(channel) {
                *queue = Queue::default();
            }
        }
        state.queues.extend(queues);
        for channel in crate::domain::Channel::NAMES {
            state.queues.entry(channel.to_string()).or_default();
        }
        state.dead_letters = dead_letters;
        state.refreshed = true;
    }

    /// The queues as the last refresh saw them.
    pub fn queues(&self) -> BTreeMap<String, Queue> {
        lock(&self.0).queues.clone()
    }

    /// Dead letters waiting for a retry, as the last refresh saw them (`None` before one).
    pub fn dead_letters(&self) -> Option<i64> {
        let state = lock(&self.0);
        state.refreshed.then_some(state.dead_letters)
    }
}

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = lock(&self.0).clone();
        let now = now_ms();
        let mut family = encoder.encode_descriptor(
            "switchboard_queue_depth",
            "Deliveries waiting (queued or sending) per channel, as of the last refresh.",
            None,
            MetricType::Gauge,
        )?;
        for (channel, queue) in &state.queues {
            ConstGauge::new(queue.depth)
                .encode(family.encode_family(&[("channel", channel.as_str())])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "switchboard_queue_oldest_age_seconds",
            "Age of the oldest delivery waiting (queued or sending) per channel (its creation time as of the last refresh).",
            None,
            MetricType::Gauge,
        )?;
        for (channel, queue) in &state.queues {
            let age = queue
                .oldest_created_at
                .map(|at| (now - at).max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            ConstGauge::new(age).encode(family.encode_family(&[("channel", channel.as_str())])?)?;
        }
        let family = encoder.encode_descriptor(
            "switchboard_dead_letters",
            "Dead letters waiting for a retry (all organizations), as of the last refresh.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(state.dead_letters).encode(family)?;
        Ok(())
    }
}

/// (name, help, label, [(label value, count)]).
type LegacyFamily = (
    &'static str,
    &'static str,
    &'static str,
    Vec<(&'static str, u64)>,
);

/// Counters kept as plain atomics by their modules (outgoing webhooks, app events, MDNs, the
/// HTTP panic layer) and the process's memory.
#[derive(Debug)]
struct Legacy;

impl Collector for Legacy {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let families: [LegacyFamily; 4] = [
            (
                "switchboard_webhook_deliveries",
                "Webhook deliveries to endpoints by outcome (this process): delivered (2xx), failed attempts, dead-lettered.",
                "outcome",
                {
                    use crate::webhooks::dispatch::{DEAD, DELIVERED, FAILED_ATTEMPTS};
                    vec![
                        ("delivered", DELIVERED.load(Relaxed)),
                        ("failed_attempt", FAILED_ATTEMPTS.load(Relaxed)),
                        ("dead", DEAD.load(Relaxed)),
                    ]
                },
            ),
            (
                "switchboard_app_listen_notifications",
                "App events received by LISTEN ([webhooks] app_listen) by outcome (this process): accepted, malformed (not an app event), refused.",
                "outcome",
                {
                    use crate::app_events::{LISTEN_ACCEPTED, LISTEN_MALFORMED, LISTEN_REFUSED};
                    vec![
                        ("accepted", LISTEN_ACCEPTED.load(Relaxed)),
                        ("malformed", LISTEN_MALFORMED.load(Relaxed)),
                        ("refused", LISTEN_REFUSED.load(Relaxed)),
                    ]
                },
            ),
            (
                "switchboard_direct_mdns",
                "MDNs owed to senders of inbound Direct messages, by outcome (this process): sent (the HISP accepted it), retried (an attempt failed, another follows), failed (refused or given up).",
                "outcome",
                {
                    use crate::direct::mdn::{FAILED, RETRIED, SENT};
                    vec![
                        ("sent", SENT.load(Relaxed)),
                        ("retried", RETRIED.load(Relaxed)),
                        ("failed", FAILED.load(Relaxed)),
                    ]
                },
            ),
            (
                "switchboard_panics",
                "Panics caught and survived, by task.",
                "task",
                vec![("http", crate::http::HTTP_PANICS.load(Relaxed))],
            ),
        ];
        for (name, help, label, values) in families {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (value, count) in values {
                ConstCounter::new(count).encode(family.encode_family(&[(label, value)])?)?;
            }
        }
        if let Some(rss) = crate::process::rss_bytes() {
            let family = encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(i64::try_from(rss).unwrap_or(i64::MAX)).encode(family)?;
        }
        Ok(())
    }
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "switchboard_deliveries",
            "Deliveries moved to a status (sent, delivered, failed, …) by channel and connector (this process)",
            deliveries.clone(),
        );
        let attempts_failed = Family::<ConnectorLabels, Counter>::default();
        registry.register(
            "switchboard_delivery_attempts_failed",
            "Send attempts that failed and were scheduled again, by channel and connector (this process)",
            attempts_failed.clone(),
        );
        let accept_to_sent: HistogramFamily<ChannelLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "switchboard_delivery_accept_to_sent_seconds",
            "Time from acceptance to the provider taking a delivery (its move to sent), by channel",
            accept_to_sent.clone(),
        );
        let accept_to_final: HistogramFamily<FinalLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "switchboard_delivery_accept_to_final_seconds",
            "Time from acceptance to a delivery's final status (delivered, dispatched, failed, expired), by channel and status",
            accept_to_final.clone(),
        );
        let dead_letters_total = Family::<ChannelLabels, Counter>::default();
        registry.register(
            "switchboard_dead_lettered",
            "Deliveries that exhausted their attempts (this process), by channel",
            dead_letters_total.clone(),
        );
        let inbound = Family::<InboundLabels, Counter>::default();
        registry.register(
            "switchboard_inbound_items",
            "Inbound items (texts, faxes, Direct messages) by source channel and outcome: received, duplicate, filed, unmatched, unreadable (this process)",
            inbound.clone(),
        );
        let webhooks = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "switchboard_provider_webhooks",
            "Provider webhooks (/hooks/{connector}/status|inbound) by connector, kind and result: accepted, or the problem type of the refusal (this process)",
            webhooks.clone(),
        );
        let hl7 = Family::<Hl7Labels, Counter>::default();
        registry.register(
            "switchboard_hl7_messages",
            "HL7 messages answered, by message type and ACK code (AA, AE, AR) (this process)",
            hl7.clone(),
        );
        let hl7_ack = ack_histogram();
        registry.register(
            "switchboard_hl7_ack_seconds",
            "Time from an HL7 message's arrival to its ACK being ready",
            hl7_ack.clone(),
        );
        let certificates = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "switchboard_certificate_expiry_timestamp_seconds",
            "When each Direct certificate (signing, decryption, trust anchor) expires, unix seconds",
            certificates.clone(),
        );
        let hl7_connections = Gauge::default();
        registry.register(
            "switchboard_hl7_connections",
            "Open MLLP connections (this process)",
            hl7_connections.clone(),
        );
        let state = std::sync::Arc::new(State::default());
        registry.register_collector(Box::new(Legacy));
        Self {
            registry,
            deliveries,
            attempts_failed,
            accept_to_sent,
            accept_to_final,
            dead_letters_total,
            inbound,
            webhooks,
            hl7,
            hl7_ack,
            certificates,
            hl7_connections,
            state,
        }
    }

    /// An MLLP connection from `peer` opened: counted until the guard is dropped.
    pub fn hl7_connected(&self, peer: std::net::IpAddr) -> Hl7Connection {
        self.hl7_connections.inc();
        lock(&self.state.hl7_peers)
            .entry(peer)
            .or_insert((0, now_ms()))
            .0 += 1;
        Hl7Connection { peer }
    }

    /// Open MLLP connections of this process: peer address → (connections, oldest opened, ms).
    pub fn hl7_peers(&self) -> BTreeMap<std::net::IpAddr, (usize, i64)> {
        lock(&self.state.hl7_peers).clone()
    }

    /// `value` if this family has seen it or has room for it, else `other`.
    fn bounded(&self, family: &'static str, value: &str) -> String {
        let mut seen = lock(&self.state.seen);
        let values = seen.entry(family).or_default();
        if values.contains(value) {
            return value.to_string();
        }
        if values.len() < MAX_LABEL_VALUES {
            values.insert(value.to_string());
            return value.to_string();
        }
        "other".into()
    }

    /// A delivery moved to `status` (by the worker, a provider's report, an MDN, an expiry…).
    /// `created_at` is when it was accepted (ms).
    pub fn delivery_moved(
        &self,
        channel: &str,
        connector: Option<&str>,
        status: &str,
        created_at: i64,
    ) {
        let connector = connector.unwrap_or("");
        self.deliveries
            .get_or_create(&DeliveryLabels {
                channel: channel.to_string(),
                connector: connector.to_string(),
                status: status.to_string(),
            })
            .inc();
        let elapsed = (now_ms() - created_at).max(0) as f64 / 1000.0;
        if status == "sent" {
            self.accept_to_sent
                .get_or_create(&ChannelLabels {
                    channel: channel.to_string(),
                })
                .observe(elapsed);
        }
        if matches!(status, "delivered" | "dispatched" | "failed" | "expired") {
            self.accept_to_final
                .get_or_create(&FinalLabels {
                    channel: channel.to_string(),
                    status: status.to_string(),
                })
                .observe(elapsed);
        }
    }

    /// A send attempt failed and another is scheduled.
    pub fn attempt_failed(&self, channel: &str, connector: Option<&str>) {
        let connector = connector.unwrap_or("");
        self.attempts_failed
            .get_or_create(&ConnectorLabels {
                channel: channel.to_string(),
                connector: connector.to_string(),
            })
            .inc();
    }

    /// A delivery became a dead letter.
    pub fn dead_lettered(&self, channel: &str) {
        self.dead_letters_total
            .get_or_create(&ChannelLabels {
                channel: channel.to_string(),
            })
            .inc();
    }

    /// An inbound item of `source` (a channel) reached `outcome`.
    pub fn inbound(&self, source: &str, outcome: &str) {
        self.inbound
            .get_or_create(&InboundLabels {
                source: source.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// A provider webhook answered; `connector` is the name in the path (bounded).
    pub fn provider_webhook(&self, connector: &str, kind: &str, result: &str) {
        let connector = self.bounded("webhook_connector", connector);
        self.webhooks
            .get_or_create(&WebhookLabels {
                connector,
                kind: kind.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// An HL7 message answered with `ack` after `seconds`; `message_type` as `ADT^A04` (bounded),
    /// `sender` as `application^facility` (bounded), for the silent-feed alert.
    pub fn hl7_answered(&self, message_type: &str, sender: Option<&str>, ack: &str, seconds: f64) {
        let message_type = self.bounded("hl7_type", message_type);
        self.hl7
            .get_or_create(&vec![("type", message_type), ("ack", ack.to_string())])
            .inc();
        self.hl7_ack.observe(seconds);
        let sender =
            sender.map_or_else(|| "unknown".to_string(), |s| self.bounded("hl7_sender", s));
        lock(&self.state.hl7_last).insert(sender, now_ms());
    }

    /// A certificate's expiry (unix seconds), when a Direct connector (`address`) loads its keys.
    pub fn certificate(&self, address: &str, role: &str, subject: &str, not_after: i64) {
        self.certificates
            .get_or_create(&CertificateLabels {
                address: address.to_string(),
                role: role.to_string(),
                subject: subject.to_string(),
            })
            .set(not_after);
        lock(&self.state.certificates).insert(
            (address.to_string(), role.to_string(), subject.to_string()),
            not_after,
        );
    }

    /// Per HL7 sender: the last message this process answered, ms.
    pub fn hl7_last(&self) -> BTreeMap<String, i64> {
        lock(&self.state.hl7_last).clone()
    }

    /// Certificates loaded by this process: (address, role, subject) → not-after, seconds.
    pub fn certificates(&self) -> BTreeMap<(String, String, String), i64> {
        lock(&self.state.certificates).clone()
    }

    /// The OpenMetrics text of the process-wide metrics followed by `extra` collectors (the
    /// daemon's task counters and database gauges), ending with `# EOF`.
    pub fn render(&self, extra: Vec<Box<dyn Collector>>) -> Result<String, std::fmt::Error> {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut text = String::with_capacity(16 * 1024);
        encode_registry(&mut text, &self.registry)?;
        if !extra.is_empty() {
            let mut registry = Registry::default();
            for collector in extra {
                registry.register_collector(collector);
            }
            encode_registry(&mut text, &registry)?;
        }
        encode_eof(&mut text)?;
        Ok(text)
    }
}
