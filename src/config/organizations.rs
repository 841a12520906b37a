//! `[organizations.<slug>]`: what an organization presents to patients and how its outreach
//! behaves. Anything not set falls back to [`OrganizationConfig::default`].

use serde::{Deserialize, Serialize};

use crate::domain::Channel;

/// One organization's settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct OrganizationConfig {
    /// Name shown to patients ("Riverside Family Clinic"). Default: the stored name.
    pub display_name: Option<String>,
    /// Phone and fax numbers this organization owns: inbound SMS and faxes sent to them are
    /// filed into this organization (whatever connector carried them). A number belongs to
    /// one organization; an item sent to a number nobody owns, through a connector without
    /// `organization`, is quarantined for the operator (`switchboard inbound orphans`).
    pub numbers: Vec<String>,
    /// Email and Direct addresses this organization owns, for inbound items the same way.
    pub addresses: Vec<String>,
    /// Where patients read secure messages; notifications point here.
    pub portal_url: String,
    /// `From` of patient email ("Riverside Clinic <no-reply@riverside.example>"). Default: the
    /// SMTP connector's `from`.
    pub email_from: Option<String>,
    pub reply_to: Option<String>,
    /// Region for phone numbers written without a country code (ISO 3166 alpha-2).
    pub phone_region: String,
    /// IANA time zone for patients and locations without their own.
    pub time_zone: String,
    /// Client purposes (`metadata.purpose`, from the documented list in
    /// `crate::disclosure::CLIENT_PURPOSES`) whose email may carry the message itself. Empty
    /// (the default): patient email only says a secure message is waiting and where to read it.
    pub phi_email_purposes: Vec<String>,
    /// Client purposes whose fax cover page may carry the message text. Empty (the default):
    /// the cover page carries only the minimum necessary (from and to organizations, page
    /// count, the confidentiality notice), and the text stays in the secure thread.
    pub fax_text_purposes: Vec<String>,
    /// Locale used when a patient has none (`en`, `es`).
    pub default_locale: String,
    /// Phone number given in HELP answers.
    pub help_phone: Option<String>,
    /// Urgent notifications: channels in order of preference; the next is used when a
    /// recipient has no contact point, opted out, or the send fails permanently.
    pub urgent_channels: Vec<String>,
    /// Urgent messages to one recipient within this window are folded into one notification.
    pub urgent_digest_window_secs: u64,
    /// An urgent message for staff not read within this time goes to the next person on call.
    pub urgent_escalation_secs: u64,
    /// Reminder rules (the API can replace them per organization).
    pub reminder_rules: Vec<super::ReminderRule>,
    /// No reminders outside these local hours (the patient's time zone, else the location's,
    /// else the organization's); a touch due inside them waits for the window to open.
    pub quiet_hours_start: String,
    pub quiet_hours_end: String,
    /// A touch more than this late (the daemon was down, the appointment was booked late) is
    /// skipped as "too soon" rather than sent late.
    pub reminder_grace_minutes: u64,
    /// Local dates the clinic is closed: not business days for touches like "1 business day
    /// before at 10:00" (weekends never are).
    pub holidays: Vec<chrono::NaiveDate>,
    /// At most this many reminders per patient per day and per 7 days.
    pub reminder_cap_per_day: u32,
    pub reminder_cap_per_week: u32,
    /// Minors (under 18) are reminded through contact points marked `use = "guardian"`.
    pub reminders_to_guardians: bool,
    /// Appointment and recall types of a 42 CFR Part 2 program: their reminders, recall
    /// campaign messages and reminder answers go out only with the patient's Part 2 consent.
    pub part2_appointment_types: Vec<String>,
    /// Time zones of locations (by name or code), for patients without their own.
    pub location_time_zones: std::collections::BTreeMap<String, String>,
    /// Patient identifier authorities known by another name: a document's OID (a C-CDA
    /// `id/@root`) → the assigning authority our HL7 feed stores (`{ "2.16.840.1.113883.19.5"
    /// = "MRN" }`). Matching looks an identifier up under both. Feeds that send CX.4's
    /// universal id need no entry.
    pub identifier_authorities: std::collections::BTreeMap<String, String>,
}

impl Default for OrganizationConfig {
    fn default() -> Self {
        Self {
            display_name: None,
            numbers: Vec::new(),
            addresses: Vec::new(),
            portal_url: "https://portal.example.org".into(),
            email_from: None,
            reply_to: None,
            phone_region: "US".into(),
            time_zone: "America/New_York".into(),
            phi_email_purposes: Vec::new(),
            fax_text_purposes: Vec::new(),
            default_locale: "en".into(),
            help_phone: None,
            urgent_channels: vec![Channel::Sms.to_string(), Channel::Email.to_string()],
            urgent_digest_window_secs: 120,
            urgent_escalation_secs: 900,
            reminder_rules: super::default_rules(),
            quiet_hours_start: "08:00".into(),
            quiet_hours_end: "21:00".into(),
            reminder_grace_minutes: 60,
            holidays: Vec::new(),
            reminder_cap_per_day: 3,
            reminder_cap_per_week: 6,
            reminders_to_guardians: true,
            part2_appointment_types: Vec::new(),
            location_time_zones: std::collections::BTreeMap::new(),
            identifier_authorities: std::collections::BTreeMap::new(),
        }
    }
}
