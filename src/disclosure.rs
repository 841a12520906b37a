//! The disclosure gate: the one place that decides whether something may leave the
//! organization for a recipient — a delivery handed to a connector, an urgent notice, a
//! reminder, a campaign message, an answer to an inbound text. Every path asks [`decide`]
//! (with the consents it read: one disclosure's through [`Gate`], or a batch's loaded at once),
//! and gets a [`Permit`] or a [`Refusal`]; both carry their audit row (`disclosure`,
//! `disclosure_refused` with the reason), which the caller completes and records (the worker in
//! the same transaction as the delivery's outcome).
//!
//! The rules, in order:
//! 1. **Part 2** (42 CFR Part 2). A disclosure about a Part 2 record — a message flagged
//!    `part2`, a reminder, campaign message or answer about an appointment or recall type the
//!    organization lists in `part2_appointment_types`, an urgent notice about a Part 2 message
//!    to its patient — needs the patient's Part 2 consent: the newest `part2` consent entry
//!    covering the channel (or `*`) and the address (or `*`, compared canonically) is granted
//!    and unexpired. Without a patient there is nobody whose consent could allow it: refused.
//! 2. **Opt-out.** The newest consent-ledger entry for the purpose (or `*`) covering the channel
//!    (or `*`) and the address — or the patient on every address (`*`) — revokes: refused.
//!    Answers to the sender's own keyword (`keyword_reply`: the STOP confirmation, HELP, START)
//!    are exempt, as carrier rules require; they carry nothing about a patient.
//! 3. **Minimum necessary.** Email carries the message text only for purposes whose text comes
//!    from PHI-linted templates ([`TEMPLATE_PURPOSES`]) or a client purpose the organization
//!    lists in `phi_email_purposes` ([`email_carries_text`]); otherwise the secure-message
//!    notice. Those template purposes are internal: the API refuses them ([`client_purpose`]).

use crate::store::{
    AuditEntry, ConsentLedger, LedgerEntry, Part2Consents, Part2Entry, Store, StoreError, now_ms,
};

/// `metadata.purpose` of an ordinary message (the default).
pub const MESSAGE: &str = "message";
/// Urgent notices (`notify`).
pub const NOTIFICATION: &str = "notification";
/// Appointment reminders (`reminders`).
pub const REMINDER: &str = "reminder";
/// Recall campaigns (`campaigns`).
pub const CAMPAIGN: &str = "campaign";
/// Answers to SMS keywords (STOP, START, HELP).
pub const KEYWORD_REPLY: &str = "keyword_reply";
/// Answers to a patient's reply to a reminder (C, N, R).
pub const REMINDER_REPLY: &str = "reminder_reply";

/// Purposes only the daemon's own code sets; a client giving one is refused (422).
pub const INTERNAL_PURPOSES: &[&str] = &[
    NOTIFICATION,
    REMINDER,
    CAMPAIGN,
    KEYWORD_REPLY,
    REMINDER_REPLY,
];

/// Purposes whose text comes from PHI-linted templates: email may always carry it.
pub const TEMPLATE_PURPOSES: &[&str] = &[NOTIFICATION, REMINDER, CAMPAIGN];

/// The purposes an API client may give in `metadata.purpose` (README, "PHI rule").
pub const CLIENT_PURPOSES: &[&str] = &[
    MESSAGE,
    "treatment",
    "results",
    "care_coordination",
    "referral",
    "scheduling",
    "billing",
    "administrative",
];

/// Why a client's `metadata.purpose` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PurposeError {
    #[error("must be a string")]
    NotText,
    #[error("{0:?} is set by the gateway itself and cannot be given by a client")]
    Internal(String),
    #[error("unknown purpose {0:?}; known: {known}", known = CLIENT_PURPOSES.join(", "))]
    Unknown(String),
}

/// Checks the `purpose` a client gave in a message's metadata (absent: `message`).
pub fn client_purpose(
    metadata: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), PurposeError> {
    match metadata.get("purpose") {
        None => Ok(()),
        Some(serde_json::Value::String(p)) if CLIENT_PURPOSES.contains(&p.as_str()) => Ok(()),
        Some(serde_json::Value::String(p)) if INTERNAL_PURPOSES.contains(&p.as_str()) => {
            Err(PurposeError::Internal(p.clone()))
        }
        Some(serde_json::Value::String(p)) => Err(PurposeError::Unknown(p.clone())),
        Some(_) => Err(PurposeError::NotText),
    }
}

/// `metadata.purpose` of a stored message, `message` when absent.
pub fn message_purpose(metadata: &str) -> String {
    serde_json::from_str::<serde_json::Value>(metadata)
        .ok()
        .and_then(|m| m.get("purpose").and_then(|p| p.as_str()).map(String::from))
        .unwrap_or_else(|| MESSAGE.into())
}

/// The consent-ledger purpose a message purpose is recorded under (`reminders` for reminders
/// and the answers to them, as the API documents; others as they are).
pub fn ledger_purpose(purpose: &str) -> &str {
    match purpose {
        REMINDER | REMINDER_REPLY => "reminders",
        other => other,
    }
}

/// Minimum necessary for email: whether the email may carry the message text (else the
/// secure-message notice).
pub fn email_carries_text(purpose: &str, phi_email_purposes: &[String]) -> bool {
    TEMPLATE_PURPOSES.contains(&purpose)
        || (!INTERNAL_PURPOSES.contains(&purpose)
            && phi_email_purposes.iter().any(|p| p == purpose))
}

/// An address as the consent ledger records it: E.164 for phone channels (national numbers in
/// `region`), lower-case otherwise.
pub fn canonical_address(channel: &str, address: &str, region: &str) -> String {
    let address = address.trim();
    let phone = match channel {
        "sms" | "fax" | "phone" => true,
        "*" => !address.contains('@'),
        _ => false,
    };
    if phone && let Ok(e164) = crate::phone::to_e164(address, region) {
        return e164;
    }
    address.to_lowercase()
}

/// Something about to leave.
#[derive(Debug, Clone, Copy)]
pub struct Disclosure<'a> {
    pub organization_id: &'a str,
    /// The patient it is about (for a notice, the patient it goes to); `None` for staff and
    /// unknown senders.
    pub patient_id: Option<&'a str>,
    pub channel: &'a str,
    /// The recipient's address, canonical ([`canonical_address`]).
    pub address: &'a str,
    /// `metadata.purpose` (`message`, `reminder`, ...).
    pub purpose: &'a str,
    /// About a 42 CFR Part 2 record.
    pub part2: bool,
}

/// What the rules read. The caller loads them for one disclosure ([`Gate::facts`]) or for a
/// batch (`Store::consent_ledger`, `Store::part2_consents`).
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Consent-ledger entries for the disclosure's [`ledger_purpose`] that cover its address
    /// or patient (more may be present).
    pub ledger: &'a ConsentLedger,
    /// Part 2 consents of the patient (more patients may be present).
    pub part2: &'a Part2Consents,
    /// Phone region of the organization (to compare consent addresses canonically).
    pub region: &'a str,
    pub now: i64,
}

/// Why a disclosure is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("part2_consent_required")]
    Part2ConsentRequired,
    #[error("opted_out: the recipient opted out of {channel}")]
    OptedOut { channel: String },
}

/// A disclosure allowed. Carries its `disclosure` audit row for the caller to complete.
#[derive(Debug, Clone)]
pub struct Permit {
    row: Box<AuditEntry>,
}

impl Permit {
    /// The `disclosure` audit row: `outcome` is what happened (`sent`, `delivered`,
    /// `failed`, `answered`), `detail` the failure if any.
    pub fn audit(
        &self,
        actor: &str,
        outcome: &str,
        message_id: Option<&str>,
        delivery_id: Option<&str>,
        detail: Option<String>,
    ) -> AuditEntry {
        let mut row = (*self.row).clone();
        row.action = "disclosure".into();
        row.actor = actor.to_string();
        row.outcome = Some(outcome.to_string());
        row.message_id = message_id.map(String::from);
        row.delivery_id = delivery_id.map(String::from);
        if let Some(detail) = detail {
            row.detail = Some(format!("{}; {detail}", row.detail.unwrap_or_default()));
        }
        row
    }
}

/// A disclosure refused, with the reason and its `disclosure_refused` audit row.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub reason: Refused,
    row: Box<AuditEntry>,
}

impl Refusal {
    /// The `disclosure_refused` audit row (detail: the reason).
    pub fn audit(
        &self,
        actor: &str,
        message_id: Option<&str>,
        delivery_id: Option<&str>,
    ) -> AuditEntry {
        let mut row = (*self.row).clone();
        row.action = "disclosure_refused".into();
        row.actor = actor.to_string();
        row.outcome = Some("refused".into());
        row.message_id = message_id.map(String::from);
        row.delivery_id = delivery_id.map(String::from);
        row.detail = Some(self.reason.to_string());
        row
    }
}

/// The rules (module docs), against facts already read.
pub fn decide(d: &Disclosure<'_>, facts: &Facts<'_>) -> Result<Permit, Refusal> {
    let row = AuditEntry {
        organization_id: d.organization_id.to_string(),
        patient_id: d.patient_id.map(String::from),
        channel: Some(d.channel.to_string()),
        recipient: Some(d.address.to_string()),
        detail: Some(format!(
            "purpose {}{}",
            d.purpose,
            if d.part2 { ", Part 2 consent" } else { "" }
        )),
        ..AuditEntry::default()
    };
    let refuse = |reason| {
        Err(Refusal {
            reason,
            row: Box::new(row.clone()),
        })
    };
    if d.part2 {
        let consented = d.patient_id.is_some_and(|patient| {
            part2_consented(facts.part2.of(patient), d, facts.region, facts.now)
        });
        if !consented {
            return refuse(Refused::Part2ConsentRequired);
        }
    }
    if d.purpose != KEYWORD_REPLY
        && opted_out(facts.ledger.entries(), d.channel, d.address, d.patient_id)
    {
        return refuse(Refused::OptedOut {
            channel: d.channel.to_string(),
        });
    }
    Ok(Permit { row: Box::new(row) })
}

/// Whether the patient's newest Part 2 consent entry covering this channel and address is
/// granted and unexpired at `now`.
fn part2_consented(entries: &[Part2Entry], d: &Disclosure<'_>, region: &str, now: i64) -> bool {
    entries
        .iter()
        .filter(|e| e.channel == d.channel || e.channel == "*")
        .filter(|e| {
            e.recipient == "*" || canonical_address(&e.channel, &e.recipient, region) == d.address
        })
        .max_by(|a, b| (a.recorded_at, &a.id).cmp(&(b.recorded_at, &b.id)))
        .is_some_and(|e| e.status == "granted" && e.expires_at.is_none_or(|x| x > now))
}

/// Whether the newest ledger entry covering this address (or this patient on this channel,
/// with recipient `*`) revokes it. Entries are already limited to the purpose, `granted` /
/// `revoked` and unexpired (by the loaders).
pub fn opted_out(
    entries: &[LedgerEntry],
    channel: &str,
    address: &str,
    patient_id: Option<&str>,
) -> bool {
    entries
        .iter()
        .filter(|e| e.channel == channel || e.channel == "*")
        .filter(|e| {
            e.recipient == address
                || (e.recipient == "*"
                    && patient_id.is_some_and(|p| e.patient_id.as_deref() == Some(p)))
        })
        .max_by(|a, b| (a.recorded_at, &a.id).cmp(&(b.recorded_at, &b.id)))
        .is_some_and(|e| e.status == "revoked")
}

/// The gate for paths that decide one disclosure at a time: reads that disclosure's consents,
/// decides, and records refusals it is asked to.
#[derive(Clone)]
pub struct Gate {
    store: Store,
}

impl Gate {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The consents that decide `d` (one query; two for Part 2).
    pub async fn facts(
        &self,
        d: &Disclosure<'_>,
    ) -> Result<(ConsentLedger, Part2Consents), StoreError> {
        let ledger = self
            .store
            .consent_entries(
                d.organization_id,
                ledger_purpose(d.purpose),
                d.channel,
                d.address,
                d.patient_id,
            )
            .await?;
        let part2 = match (d.part2, d.patient_id) {
            (true, Some(patient)) => self.store.part2_consents(&[patient]).await?,
            _ => Part2Consents::default(),
        };
        Ok((ledger, part2))
    }

    /// Reads the facts and decides.
    pub async fn decide(
        &self,
        d: &Disclosure<'_>,
        region: &str,
    ) -> Result<Result<Permit, Refusal>, StoreError> {
        let (ledger, part2) = self.facts(d).await?;
        Ok(decide(
            d,
            &Facts {
                ledger: &ledger,
                part2: &part2,
                region,
                now: now_ms(),
            },
        ))
    }

    /// [`Gate::decide`], and a refusal is audited at once (for paths where nothing else will
    /// record it: notices and answers that are never created).
    pub async fn check(
        &self,
        d: &Disclosure<'_>,
        region: &str,
        actor: &str,
        message_id: Option<&str>,
    ) -> Result<Result<Permit, Refusal>, StoreError> {
        let decision = self.decide(d, region).await?;
        if let Err(refusal) = &decision {
            self.store
                .record_audit(&refusal.audit(actor, message_id, None))
                .await?;
        }
        Ok(decision)
    }

    /// Records a completed audit row.
    pub async fn record(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.store.record_audit(entry).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        id: &str,
        patient: Option<&str>,
        channel: &str,
        recipient: &str,
        status: &str,
        at: i64,
    ) -> LedgerEntry {
        LedgerEntry {
            id: id.into(),
            patient_id: patient.map(str::to_string),
            channel: channel.into(),
            recipient: recipient.into(),
            status: status.into(),
            recorded_at: at,
        }
    }

    fn part2(id: &str, channel: &str, recipient: &str, status: &str, at: i64) -> Part2Entry {
        Part2Entry {
            id: id.into(),
            patient_id: Some("pat_a".into()),
            channel: channel.into(),
            recipient: recipient.into(),
            status: status.into(),
            recorded_at: at,
            expires_at: None,
        }
    }

    fn sms<'a>(address: &'a str, purpose: &'a str, part2: bool) -> Disclosure<'a> {
        Disclosure {
            organization_id: "org_1",
            patient_id: Some("pat_a"),
            channel: "sms",
            address,
            purpose,
            part2,
        }
    }

    #[test]
    fn the_newest_covering_ledger_entry_decides() {
        let entries = vec![
            entry("cns_1", Some("pat_a"), "sms", "*", "revoked", 10),
            entry("cns_2", None, "sms", "+15550001", "granted", 20),
            entry("cns_3", Some("pat_b"), "*", "*", "revoked", 5),
            entry("cns_4", None, "email", "b@example.org", "granted", 5),
            entry("cns_5", None, "email", "b@example.org", "revoked", 5),
        ];
        // pat_a: the number's newer opt-in wins over the patient-wide opt-out.
        assert!(!opted_out(&entries, "sms", "+15550001", Some("pat_a")));
        // Another number of pat_a: only the patient-wide opt-out covers it.
        assert!(opted_out(&entries, "sms", "+15550002", Some("pat_a")));
        // pat_a's opt-out is for SMS only.
        assert!(!opted_out(
            &entries,
            "email",
            "a@example.org",
            Some("pat_a")
        ));
        // pat_b: every channel revoked.
        assert!(opted_out(&entries, "email", "x@example.org", Some("pat_b")));
        // Same time: the larger id wins (ORDER BY recorded_at DESC, id DESC).
        assert!(opted_out(&entries, "email", "b@example.org", None));
        // Nothing recorded: allowed.
        assert!(!opted_out(&entries, "sms", "+15550003", Some("pat_c")));
    }

    #[test]
    fn part2_needs_the_newest_covering_consent_granted() {
        let ledger = ConsentLedger::default();
        let decide_with = |entries: Vec<Part2Entry>, d: Disclosure<'_>| {
            let consents = Part2Consents::new(entries);
            decide(
                &d,
                &Facts {
                    ledger: &ledger,
                    part2: &consents,
                    region: "US",
                    now: 100,
                },
            )
            .map(|_| ())
            .map_err(|r| r.reason)
        };
        let refused = Err(Refused::Part2ConsentRequired);
        assert_eq!(
            decide_with(vec![], sms("+14155552671", MESSAGE, true)),
            refused
        );
        assert_eq!(
            decide_with(vec![], sms("+14155552671", MESSAGE, false)),
            Ok(())
        );
        // A consent for the number written nationally covers its E.164 form.
        let national = vec![part2("c1", "sms", "(415) 555-2671", "granted", 1)];
        assert_eq!(
            decide_with(national.clone(), sms("+14155552671", MESSAGE, true)),
            Ok(())
        );
        assert_eq!(
            decide_with(national, sms("+14155550000", MESSAGE, true)),
            refused
        );
        // Revoked later; expired.
        let revoked = vec![
            part2("c1", "*", "*", "granted", 1),
            part2("c2", "sms", "*", "revoked", 2),
        ];
        assert_eq!(
            decide_with(revoked, sms("+14155552671", REMINDER, true)),
            refused
        );
        let mut expired = part2("c1", "*", "*", "granted", 1);
        expired.expires_at = Some(50);
        assert_eq!(
            decide_with(vec![expired], sms("+14155552671", REMINDER, true)),
            refused
        );
        // No patient: nobody could have consented.
        let mut nobody = sms("+14155552671", MESSAGE, true);
        nobody.patient_id = None;
        assert_eq!(
            decide_with(vec![part2("c1", "*", "*", "granted", 1)], nobody),
            refused
        );
    }

    #[test]
    fn keyword_answers_reach_an_opted_out_sender_but_nothing_else_does() {
        let ledger = ConsentLedger::new(vec![entry("c1", None, "sms", "+15550001", "revoked", 1)]);
        let part2 = Part2Consents::default();
        let facts = Facts {
            ledger: &ledger,
            part2: &part2,
            region: "US",
            now: 10,
        };
        assert!(decide(&sms("+15550001", KEYWORD_REPLY, false), &facts).is_ok());
        let refusal = decide(&sms("+15550001", REMINDER_REPLY, false), &facts).unwrap_err();
        assert_eq!(
            refusal.reason.to_string(),
            "opted_out: the recipient opted out of sms"
        );
        let row = refusal.audit("worker", Some("msg_1"), None);
        assert_eq!(row.action, "disclosure_refused");
        assert_eq!(row.recipient.as_deref(), Some("+15550001"));
    }

    #[test]
    fn clients_give_only_documented_purposes() {
        let with = |p: serde_json::Value| {
            let mut m = serde_json::Map::new();
            m.insert("purpose".into(), p);
            client_purpose(&m)
        };
        assert_eq!(client_purpose(&serde_json::Map::new()), Ok(()));
        assert_eq!(with("results".into()), Ok(()));
        assert!(matches!(
            with("reminder".into()),
            Err(PurposeError::Internal(_))
        ));
        assert!(matches!(
            with("whatever".into()),
            Err(PurposeError::Unknown(_))
        ));
        assert_eq!(with(3.into()), Err(PurposeError::NotText));
        // The organization's list never turns an internal purpose into a client one.
        let listed = vec!["results".to_string(), "keyword_reply".to_string()];
        assert!(email_carries_text("results", &listed));
        assert!(!email_carries_text("message", &listed));
        assert!(!email_carries_text("keyword_reply", &listed));
        assert!(email_carries_text("reminder", &[]));
    }
}
