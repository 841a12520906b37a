//! Appointment status: what HL7 SIU feeds (SCH-25 / AIS-10 filler status, HL7 table 0278, and
//! the trigger event) and the API may say about an appointment, and which statuses get
//! reminders. Stored by [`AppointmentStatus::as_str`] in `appointments.status`.
//!
//! | HL7 0278 code | meaning | status |
//! |---|---|---|
//! | Booked, Pending, Waitlist, Overbook | will take place (as far as we know) | `booked` |
//! | Started | the patient has arrived / the visit began | `arrived` |
//! | Complete | the visit took place | `completed` |
//! | Cancelled, Deleted, Blocked | will not take place (a blocked slot holds no visit) | `cancelled` |
//! | Noshow | the patient did not come | `noshow` |
//! | Dc | discontinued | `discontinued` |
//!
//! Triggers S15 (cancellation) and S17 (deletion) mean `cancelled`, S26 (no-show) `noshow`,
//! whatever the filler status says. A filler status outside the table (a site's own code) is
//! `booked`, as an SIU without one is: the appointment exists, and that is what it always meant
//! here. Only `booked` appointments get reminders.
//!
//! The API takes the stored names and, for API parity, the HL7 codes and the spellings
//! earlier versions stored (`canceled`, `no-show`, `no_show`, `confirmed`, …); anything else
//! is refused. Migration `0009_appointment_status` rewrote stored free text the same way.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What an appointment's status is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum AppointmentStatus {
    #[serde(rename = "booked")]
    Booked,
    #[serde(rename = "arrived")]
    Arrived,
    #[serde(rename = "completed")]
    Completed,
    #[serde(rename = "cancelled")]
    Cancelled,
    /// Stored and shown as `noshow`, the name HL7 (and so every stored row) has always used.
    #[serde(rename = "noshow")]
    NoShow,
    #[serde(rename = "discontinued")]
    Discontinued,
}

/// A status the API does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown appointment status {0:?}; known: booked, arrived, completed, cancelled, noshow, discontinued"
)]
pub struct UnknownStatus(pub String);

impl AppointmentStatus {
    pub const ALL: [AppointmentStatus; 6] = [
        Self::Booked,
        Self::Arrived,
        Self::Completed,
        Self::Cancelled,
        Self::NoShow,
        Self::Discontinued,
    ];

    /// The stored (and API) name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Booked => "booked",
            Self::Arrived => "arrived",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::NoShow => "noshow",
            Self::Discontinued => "discontinued",
        }
    }

    /// A filler status code from SCH-25 / AIS-10 (HL7 table 0278, any case); `None` for a code
    /// outside the table.
    pub fn from_hl7(code: &str) -> Option<Self> {
        Some(match code.trim().to_ascii_lowercase().as_str() {
            "booked" | "pending" | "waitlist" | "overbook" => Self::Booked,
            "started" => Self::Arrived,
            "complete" => Self::Completed,
            "cancelled" | "deleted" | "blocked" => Self::Cancelled,
            "noshow" => Self::NoShow,
            "dc" => Self::Discontinued,
            _ => return None,
        })
    }

    /// What an SIU message says: its trigger first (S15/S17 cancel or delete, S26 no-show),
    /// then the filler status code, `booked` when there is none or it is a site's own code.
    pub fn from_siu(trigger: &str, filler_status: Option<&str>) -> Self {
        match trigger {
            "S15" | "S17" => Self::Cancelled,
            "S26" => Self::NoShow,
            _ => filler_status
                .and_then(Self::from_hl7)
                .unwrap_or(Self::Booked),
        }
    }

    /// A stored value. Rows are written with [`AppointmentStatus::as_str`] (and older rows
    /// were rewritten by migration 0009); anything else reads as the API would take it, else
    /// as `booked`, the meaning free text always had.
    pub fn from_stored(text: &str) -> Self {
        text.parse().unwrap_or(Self::Booked)
    }

    /// Whether reminders are planned and sent for an appointment in this status.
    pub fn gets_reminders(self) -> bool {
        matches!(self, Self::Booked)
    }

    /// Why reminders stop for this status, as a touch's reason (`None`: they do not).
    pub fn reminder_stop_reason(self) -> Option<&'static str> {
        match self {
            Self::Booked => None,
            Self::Arrived => Some("appointment arrived"),
            Self::Completed => Some("appointment completed"),
            Self::Cancelled => Some("appointment cancelled"),
            Self::NoShow => Some("no-show: reminders stopped"),
            Self::Discontinued => Some("appointment discontinued"),
        }
    }
}

impl FromStr for AppointmentStatus {
    type Err = UnknownStatus;

    /// A stored name, an HL7 0278 code, or a spelling earlier versions stored; any case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lower = text.trim().to_ascii_lowercase();
        if let Some(status) = Self::ALL.into_iter().find(|s| s.as_str() == lower) {
            return Ok(status);
        }
        if let Some(status) = Self::from_hl7(&lower) {
            return Ok(status);
        }
        Ok(match lower.as_str() {
            "confirmed" | "scheduled" => Self::Booked,
            "canceled" => Self::Cancelled,
            "no-show" | "no_show" => Self::NoShow,
            "fulfilled" => Self::Completed,
            _ => return Err(UnknownStatus(text.to_string())),
        })
    }
}

impl fmt::Display for AppointmentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::AppointmentStatus::*;
    use super::*;

    #[test]
    fn every_code_of_hl7_table_0278_maps() {
        let table = [
            ("Pending", Booked),
            ("Waitlist", Booked),
            ("Booked", Booked),
            ("Started", Arrived),
            ("Complete", Completed),
            ("Cancelled", Cancelled),
            ("Dc", Discontinued),
            ("DC", Discontinued),
            ("Deleted", Cancelled),
            ("Blocked", Cancelled),
            ("Overbook", Booked),
            ("Noshow", NoShow),
        ];
        for (code, status) in table {
            assert_eq!(AppointmentStatus::from_hl7(code), Some(status), "{code}");
        }
        assert_eq!(AppointmentStatus::from_hl7("SITE-X"), None);
    }

    #[test]
    fn the_trigger_wins_over_the_filler_status() {
        assert_eq!(
            AppointmentStatus::from_siu("S15", Some("Booked")),
            Cancelled
        );
        assert_eq!(AppointmentStatus::from_siu("S17", None), Cancelled);
        assert_eq!(AppointmentStatus::from_siu("S26", Some("Booked")), NoShow);
        assert_eq!(AppointmentStatus::from_siu("S14", Some("DC")), Discontinued);
        assert_eq!(AppointmentStatus::from_siu("S12", None), Booked);
        assert_eq!(AppointmentStatus::from_siu("S12", Some("SITE-X")), Booked);
    }

    #[test]
    fn api_values_parse_and_unknown_ones_are_refused() {
        for status in AppointmentStatus::ALL {
            assert_eq!(status.as_str().parse(), Ok(status));
            assert_eq!(
                serde_json::to_value(status).expect("json"),
                serde_json::json!(status.as_str())
            );
        }
        assert_eq!("No-Show".parse(), Ok(NoShow));
        assert_eq!("no_show".parse(), Ok(NoShow));
        assert_eq!("Canceled".parse(), Ok(Cancelled));
        assert_eq!("confirmed".parse(), Ok(Booked));
        assert_eq!("DC".parse(), Ok(Discontinued));
        assert_eq!(
            "postponed".parse::<AppointmentStatus>(),
            Err(UnknownStatus("postponed".into()))
        );
        assert_eq!(AppointmentStatus::from_stored("postponed"), Booked);
    }

    #[test]
    fn only_booked_appointments_get_reminders() {
        for status in AppointmentStatus::ALL {
            assert_eq!(status.gets_reminders(), status == Booked, "{status}");
            assert_eq!(status.reminder_stop_reason().is_none(), status == Booked);
        }
        assert_eq!(
            Discontinued.reminder_stop_reason(),
            Some("appointment discontinued")
        );
    }
}
