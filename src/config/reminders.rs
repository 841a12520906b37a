//! Reminder rules as configured (`[[organizations.<slug>.reminder_rules]]`) or set through
//! `PUT /v1/reminder-rules/{id}`: the data, and [`ReminderRule::validate`], the one check
//! every rule passes before it is stored, loaded from the configuration or planned with
//! (every duration and count bounded; the error names the field as a JSON pointer).
//! `crate::reminders` computes with it.

use serde::{Deserialize, Serialize};

use crate::domain::Channel;

/// Which appointments a rule covers and when and how it reminds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
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

/// Most touches in one rule.
pub const MAX_TOUCHES: usize = 10;
/// Most entries in each of a rule's `appointment_types`, `locations` and `providers`.
pub const MAX_MATCH_VALUES: usize = 100;
/// Longest rule or touch id and template name.
pub const MAX_ID_LEN: usize = 64;
/// Longest appointment type, location or provider value.
pub const MAX_MATCH_LEN: usize = 200;

/// Why a rule is refused: a JSON pointer into the rule (`/touches/1/before`) and a reason.
/// Neither repeats the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pointer}: {reason}")]
pub struct RuleError {
    /// JSON pointer to the field, relative to the rule (`""` for the rule itself).
    pub pointer: String,
    pub reason: String,
}

impl RuleError {
    fn new(pointer: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            reason: reason.into(),
        }
    }

    /// The same error with the pointer under `prefix` (`/rules/0` → `/rules/0/touches/1/before`).
    pub fn within(mut self, prefix: &str) -> Self {
        self.pointer = format!("{prefix}{}", self.pointer);
        self
    }
}

/// An id or template name: 1 to 64 of `A-Z a-z 0-9 _ - .`, not starting with a dot.
fn check_name(pointer: &str, value: &str) -> Result<(), RuleError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_ID_LEN
        && !value.starts_with('.')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(RuleError::new(
            pointer,
            "give 1 to 64 letters, digits, `_`, `-` or `.`",
        ))
    }
}

impl ReminderRule {
    /// Checks everything the planner relies on: ids, 1 to [`MAX_TOUCHES`] touches with unique
    /// ids, each with a bounded time (`before` up to 365 days, `at` up to 365 calendar or 60
    /// business days before, at 00:00-23:59), 1 to 5 known channels without repeats, a plain
    /// template name, and bounded match lists. Used by the API, the configuration loader and
    /// the planner (a stored rule that fails it is never planned with).
    pub fn validate(&self) -> Result<(), RuleError> {
        check_name("/id", &self.id)?;
        for (pointer, list) in [
            ("/appointment_types", &self.appointment_types),
            ("/locations", &self.locations),
            ("/providers", &self.providers),
        ] {
            if list.len() > MAX_MATCH_VALUES {
                return Err(RuleError::new(pointer, "at most 100 values"));
            }
            for (i, value) in list.iter().enumerate() {
                if value.trim().is_empty() || value.len() > MAX_MATCH_LEN {
                    return Err(RuleError::new(
                        format!("{pointer}/{i}"),
                        "give 1 to 200 characters",
                    ));
                }
            }
        }
        if self.touches.is_empty() {
            return Err(RuleError::new("/touches", "give at least one touch"));
        }
        if self.touches.len() > MAX_TOUCHES {
            return Err(RuleError::new("/touches", "at most 10 touches"));
        }
        for (i, touch) in self.touches.iter().enumerate() {
            let at = format!("/touches/{i}");
            check_name(&format!("{at}/id"), &touch.id)?;
            if self.touches[..i].iter().any(|t| t.id == touch.id) {
                return Err(RuleError::new(
                    format!("{at}/id"),
                    "another touch of the rule has this id",
                ));
            }
            if let Err(e) = crate::reminders::schedule::parse(touch) {
                let pointer = match e.field() {
                    Some(field) => format!("{at}/{field}"),
                    None => at.clone(),
                };
                return Err(RuleError::new(pointer, e.to_string()));
            }
            if touch.channels.is_empty() {
                return Err(RuleError::new(
                    format!("{at}/channels"),
                    "give at least one channel",
                ));
            }
            for (j, channel) in touch.channels.iter().enumerate() {
                let pointer = format!("{at}/channels/{j}");
                if channel.parse::<Channel>().is_err() {
                    return Err(RuleError::new(
                        pointer,
                        format!("unknown channel; give one of {}", Channel::NAMES.join(", ")),
                    ));
                }
                if touch.channels[..j].contains(channel) {
                    return Err(RuleError::new(pointer, "channel listed twice"));
                }
            }
            check_name(&format!("{at}/template"), &touch.template)?;
        }
        Ok(())
    }
}

impl ReminderRule {
    /// [`ReminderRule::validate`] as text (the configuration loader names the rule around it).
    pub fn check(&self) -> Result<(), String> {
        self.validate().map_err(|e| e.to_string())
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
    let touch = |id: &str, before: &str, channels: &[Channel]| Touch {
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
            touch("email-7d", "7d", &[Channel::Email, Channel::Sms]),
            touch("sms-2d", "48h", &[Channel::Sms, Channel::Email]),
            touch("sms-2h", "2h", &[Channel::Sms]),
        ],
        replies: true,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_rules_are_valid() {
        for rule in default_rules() {
            assert_eq!(rule.validate(), Ok(()));
        }
    }

    /// Each refusal points at the field, as a JSON pointer into the rule.
    #[test]
    fn rule_errors_point_at_the_field() {
        let pointer = |edit: &dyn Fn(&mut ReminderRule)| {
            let mut rule = default_rules().remove(0);
            edit(&mut rule);
            rule.validate().map_err(|e| e.pointer)
        };
        assert_eq!(
            pointer(&|r| r.touches[1].before = Some("100000000d".into())),
            Err("/touches/1/before".into())
        );
        assert_eq!(
            pointer(&|r| {
                r.touches[2].before = None;
                r.touches[2].at = Some("99 business days before at 10:00".into());
            }),
            Err("/touches/2/at".into())
        );
        assert_eq!(
            pointer(&|r| r.touches[0].before = None),
            Err("/touches/0".into())
        );
        assert_eq!(
            pointer(&|r| r.touches[0].channels.push("pager".into())),
            Err("/touches/0/channels/2".into())
        );
        assert_eq!(
            pointer(&|r| r.touches[2].channels.push("sms".into())),
            Err("/touches/2/channels/1".into())
        );
        assert_eq!(
            pointer(&|r| r.touches[1].id = "email-7d".into()),
            Err("/touches/1/id".into())
        );
        assert_eq!(
            pointer(&|r| r.touches[0].template = "../secrets".into()),
            Err("/touches/0/template".into())
        );
        assert_eq!(pointer(&|r| r.id = String::new()), Err("/id".into()));
        assert_eq!(
            pointer(&|r| r.touches = vec![r.touches[0].clone(); 11]),
            Err("/touches".into())
        );
        assert_eq!(
            pointer(&|r| r.locations = vec!["x".into(); 101]),
            Err("/locations".into())
        );
        let error = pointer(&|r| r.touches[1].before = Some("100000000d".into()));
        assert_eq!(
            error.map_err(|p| RuleError::new(p, "x").within("/rules/0").pointer),
            Err("/rules/0/touches/1/before".into())
        );
    }
}
