//! SMS keywords. Carrier opt-out words (STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE,
//! OPT OUT) always mean opt-out — the carrier blocks further texts whatever we do, so a bare
//! CANCEL is never read as "cancel my appointment" (reminders ask for N/NO instead).

/// What an inbound text asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    OptOut,
    OptIn,
    Help,
    /// An answer to a reminder.
    Reminder(ReminderReply),
}

/// A patient's answer to an appointment reminder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReminderReply {
    Confirm,
    Decline,
    Reschedule,
}

impl ReminderReply {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirm => "confirm",
            Self::Decline => "decline",
            Self::Reschedule => "reschedule",
        }
    }
}

/// The keyword a whole message is, if any (case, spacing and trailing punctuation ignored).
pub fn classify(text: &str) -> Option<Keyword> {
    let normalized: String = text
        .trim()
        .trim_end_matches(['.', '!', '?'])
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase();
    Some(match normalized.as_str() {
        "STOP" | "STOPALL" | "STOP ALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" | "REVOKE"
        | "OPT OUT" | "OPTOUT" | "OPT-OUT" => Keyword::OptOut,
        "START" | "UNSTOP" => Keyword::OptIn,
        "HELP" | "INFO" | "AYUDA" => Keyword::Help,
        "C" | "Y" | "YES" | "CONFIRM" | "SI" | "SÍ" => Keyword::Reminder(ReminderReply::Confirm),
        "N" | "NO" => Keyword::Reminder(ReminderReply::Decline),
        "R" | "RESCHEDULE" => Keyword::Reminder(ReminderReply::Reschedule),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carrier_words_are_opt_out_including_cancel() {
        for word in [
            "STOP",
            "stop",
            " Stop. ",
            "STOPALL",
            "unsubscribe",
            "CANCEL",
            "end",
            "QUIT",
            "revoke",
            "opt out",
            "OPT  OUT",
        ] {
            assert_eq!(classify(word), Some(Keyword::OptOut), "{word}");
        }
        assert_eq!(classify("START"), Some(Keyword::OptIn));
        assert_eq!(classify("unstop"), Some(Keyword::OptIn));
        assert_eq!(classify("help"), Some(Keyword::Help));
    }

    #[test]
    fn reminder_answers_and_free_text() {
        assert_eq!(
            classify("y"),
            Some(Keyword::Reminder(ReminderReply::Confirm))
        );
        assert_eq!(
            classify("Yes!"),
            Some(Keyword::Reminder(ReminderReply::Confirm))
        );
        assert_eq!(
            classify("CONFIRM"),
            Some(Keyword::Reminder(ReminderReply::Confirm))
        );
        assert_eq!(
            classify("no"),
            Some(Keyword::Reminder(ReminderReply::Decline))
        );
        assert_eq!(
            classify("R"),
            Some(Keyword::Reminder(ReminderReply::Reschedule))
        );
        assert_eq!(classify("stop by at 5?"), None);
        assert_eq!(classify("Can I cancel my appointment"), None);
    }
}
