//! Reminder rules as configured (`[[organizations.<slug>.reminder_rules]]`) or set through
//! `PUT /v1/reminder-rules/{id}`. Pure data; `crate::reminders` computes with it.

use serde::{Deserialize, Serialize};

/// Which appointments a rule covers and when and how it reminds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReminderRule {
    pub id: String,
    /// Appointment types, locations (name or code), providers (id or name); empty = all.
    #[serde(default)]
    pub appointment_types: Vec<String>,
    #[serde(default)]
    pub locations: Vec<String>,
    #[serde(default)]
    pub providers: Vec<String>,
    pub touches: Vec<Touch>,
    /// Whether texts invite a reply (C to confirm, N to cancel).
    #[serde(default = "yes")]
    pub replies: bool,
}

/// One reminder of a rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Touch {
    pub id: String,
    /// An offset before the start: `7d`, `48h`, `2h`, `90m`...
    #[serde(default)]
    pub before: Option<String>,
    /// ...or a day and time before: `1 business day before at 10:00`, `2 days before at 17:30`.
    #[serde(default)]
    pub at: Option<String>,
    /// Channels in order of preference; the next is used when there is no contact point or
    /// consent for the first.
    pub channels: Vec<String>,
    /// Template family under `templates/` (`reminder` → `reminder/sms.en.txt`, ...).
    #[serde(default = "reminder_template")]
    pub template: String,
}

impl ReminderRule {
    /// Whether the rule can be planned: at least one touch, each with a readable time and
    /// known channels. The reason names the touch at fault.
    pub fn check(&self) -> Result<(), String> {
        if self.touches.is_empty() {
            return Err("a rule needs at least one touch".into());
        }
        for touch in &self.touches {
            crate::reminders::schedule::parse(touch).map_err(|e| e.to_string())?;
            if touch.channels.is_empty() {
                return Err(format!("touch {}: give at least one channel", touch.id));
            }
            if let Some(channel) = touch
                .channels
                .iter()
                .find(|c| !crate::channels::CHANNELS.contains(&c.as_str()))
            {
                return Err(format!("touch {}: unknown channel {channel}", touch.id));
            }
        }
        Ok(())
    }
}

fn yes() -> bool {
    true
}

fn reminder_template() -> String {
    "reminder".into()
}

/// The rules shipped as the default: email 7 days before, SMS 2 days before, SMS 2 hours before.
pub fn default_rules() -> Vec<ReminderRule> {
    let touch = |id: &str, before: &str, channels: &[&str]| Touch {
        id: id.into(),
        before: Some(before.into()),
        at: None,
        channels: channels.iter().map(|c| c.to_string()).collect(),
        template: reminder_template(),
    };
    vec![ReminderRule {
        id: "standard".into(),
        appointment_types: Vec::new(),
        locations: Vec::new(),
        providers: Vec::new(),
        touches: vec![
            touch("email-7d", "7d", &["email", "sms"]),
            touch("sms-2d", "48h", &["sms", "email"]),
            touch("sms-2h", "2h", &["sms"]),
        ],
        replies: true,
    }]
}
