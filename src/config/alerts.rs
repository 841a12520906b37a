//! `[metrics]` (how often the database-derived gauges are refreshed), `[alerting]` (where
//! operator notices go, how often rules are evaluated) and the `[[alerts]]` rules.

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret};

/// `[metrics]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// How often the queue depth, oldest-waiting age and dead-letter gauges are read from the
    /// database (two indexed queries), seconds. Scrapes never query.
    pub refresh_secs: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { refresh_secs: 15 }
    }
}

/// `[alerting]`: where notices of `[[alerts]]` go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// How often the rules are evaluated (once across a fleet: the `alerts` lease), seconds.
    pub evaluate_secs: u64,
    /// At most one notice per rule and subject in this time, seconds: an alert that flaps
    /// sends its next notice only once this has passed (a resolve that comes before its firing
    /// was announced is not announced either).
    pub min_interval_secs: u64,
    /// Operators' email addresses; notices go through `email_connector`.
    pub email_to: Vec<String>,
    /// An SMTP connector (`[connectors.<name>] kind = "smtp"`). Unset: the connector of
    /// `[channels.email]`, when it is SMTP.
    pub email_connector: Option<String>,
    /// A URL notices are POSTed to as JSON, signed like our webhooks (Standard Webhooks:
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature`) with `webhook_secret`.
    pub webhook_url: Option<String>,
    /// `whsec_…` secret (file or systemd credential) for `webhook_url`.
    pub webhook_secret: Option<Secret>,
    /// The organization (slug) whose time zone business hours are read in. Unset: the HL7
    /// feed's organization (`hl7.organization`).
    pub organization: Option<String>,
    /// Business hours for `hl7_silent` rules, local `HH:MM`.
    pub business_hours_start: String,
    pub business_hours_end: String,
    /// Business days: `mon` … `sun`.
    pub business_days: Vec<String>,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        Self {
            evaluate_secs: 30,
            min_interval_secs: 900,
            email_to: Vec::new(),
            email_connector: None,
            webhook_url: None,
            webhook_secret: None,
            organization: None,
            business_hours_start: "08:00".into(),
            business_hours_end: "18:00".into(),
            business_days: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// What a rule watches.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A channel (and connector) whose deliveries have failed, with no success since, for
    /// `minutes`. Subject: `channel/connector`.
    ChannelFailing,
    /// The oldest delivery waiting on a channel is older than `minutes`. Subject: the channel.
    QueueAge,
    /// More than `count` dead letters wait for a retry. Subject: `dead_letters`.
    DeadLetters,
    /// No HL7 message for `minutes` during business hours. Subject: `hl7`.
    Hl7Silent,
    /// A Direct certificate expires within `days`. Subject: `connector/role/subject`.
    CertificateExpiring,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChannelFailing => "channel_failing",
            Self::QueueAge => "queue_age",
            Self::DeadLetters => "dead_letters",
            Self::Hl7Silent => "hl7_silent",
            Self::CertificateExpiring => "certificate_expiring",
        }
    }
}

/// One `[[alerts]]` rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Unique; names the rule in notices and in the persisted alert state.
    pub name: String,
    pub kind: AlertKind,
    /// channel_failing, queue_age: only this channel (default: every channel).
    pub channel: Option<String>,
    /// channel_failing, queue_age, hl7_silent: the threshold in minutes.
    pub minutes: Option<u64>,
    /// The same threshold in seconds (instead of `minutes`).
    pub seconds: Option<u64>,
    /// dead_letters: fires above this many.
    pub count: Option<i64>,
    /// certificate_expiring: fires this many days before expiry.
    pub days: Option<u64>,
}

impl AlertRule {
    /// The time threshold, seconds (`seconds`, else `minutes`).
    pub fn threshold_secs(&self) -> u64 {
        self.seconds
            .or(self.minutes.map(|m| m.saturating_mul(60)))
            .unwrap_or(0)
    }

    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let name = &self.name;
        let invalid = |what: &str| {
            Err(ConfigError::Invalid(format!(
                "alerts {name:?} ({}): {what}",
                self.kind.as_str()
            )))
        };
        if name.is_empty() || name.len() > 64 {
            return invalid("name must be 1 to 64 characters");
        }
        if self.minutes.is_some() && self.seconds.is_some() {
            return invalid("give minutes or seconds, not both");
        }
        let timed = self.minutes.or(self.seconds).is_some_and(|t| t > 0);
        match self.kind {
            AlertKind::ChannelFailing | AlertKind::QueueAge | AlertKind::Hl7Silent if !timed => {
                invalid("minutes (or seconds) is required and must be at least 1")
            }
            AlertKind::DeadLetters if self.count.is_none_or(|c| c < 0) => {
                invalid("count is required (0 or more)")
            }
            AlertKind::CertificateExpiring if self.days.is_none_or(|d| d == 0) => {
                invalid("days is required and must be at least 1")
            }
            _ => {
                if let Some(channel) = &self.channel
                    && channel.parse::<crate::domain::Channel>().is_err()
                {
                    return invalid("channel is not a channel");
                }
                Ok(())
            }
        }
    }
}

impl AlertingConfig {
    pub(super) fn check(&self, rules: &[AlertRule]) -> Result<(), ConfigError> {
        if self.evaluate_secs == 0 {
            return Err(ConfigError::Invalid(
                "alerting.evaluate_secs must be at least 1".into(),
            ));
        }
        for (key, value) in [
            ("business_hours_start", &self.business_hours_start),
            ("business_hours_end", &self.business_hours_end),
        ] {
            if crate::reminders::schedule::parse_clock(value).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "alerting.{key} {value:?} is not HH:MM"
                )));
            }
        }
        for day in &self.business_days {
            if parse_day(day).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "alerting.business_days: {day:?} is not mon, tue, wed, thu, fri, sat or sun"
                )));
            }
        }
        if self.webhook_url.is_some() != self.webhook_secret.is_some() {
            return Err(ConfigError::Invalid(
                "alerting.webhook_url and alerting.webhook_secret go together".into(),
            ));
        }
        if let Some(url) = &self.webhook_url
            && reqwest::Url::parse(url).is_err()
        {
            return Err(ConfigError::Invalid(format!(
                "alerting.webhook_url {url:?} is not a URL"
            )));
        }
        for to in &self.email_to {
            if to.parse::<lettre::message::Mailbox>().is_err() {
                return Err(ConfigError::Invalid(format!(
                    "alerting.email_to: {to:?} is not an email address"
                )));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for rule in rules {
            rule.check()?;
            if !names.insert(rule.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "alerts: two rules are named {:?}",
                    rule.name
                )));
            }
        }
        Ok(())
    }
}

/// `mon` … `sun`.
pub fn parse_day(day: &str) -> Option<chrono::Weekday> {
    Some(match day.to_ascii_lowercase().as_str() {
        "mon" => chrono::Weekday::Mon,
        "tue" => chrono::Weekday::Tue,
        "wed" => chrono::Weekday::Wed,
        "thu" => chrono::Weekday::Thu,
        "fri" => chrono::Weekday::Fri,
        "sat" => chrono::Weekday::Sat,
        "sun" => chrono::Weekday::Sun,
        _ => return None,
    })
}
