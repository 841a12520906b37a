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
//!    to its patient — needs the patient's Part 2 consent (`domain::consent`, rule 1). Without a
//!    patient there is nobody whose consent could allow it: refused.
//! 2. **Opt-out.** The newest consent-ledger entry covering the disclosure revokes: refused
//!    (`domain::consent`, rule 2). Answers to the sender's own keyword (`keyword_reply`: the STOP
//!    confirmation, HELP, START) are exempt, as carrier rules require; they carry nothing about
//!    a patient.
//! 3. **Minimum necessary.** Email carries the message text only for purposes whose text comes
//!    from PHI-linted templates ([`TEMPLATE_PURPOSES`]) or a client purpose the organization
//!    lists in `phi_email_purposes` ([`email_carries_text`]); otherwise the secure-message
//!    notice. Those template purposes are internal: the API refuses them ([`client_purpose`]).

use crate::domain::consent::{self, ConsentLedger, Part2Consents, Question, Verdict};
use crate::domain::{Address, Channel};
use crate::store::{AuditEntry, Store, StoreError, now_ms};

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

/// Minimum necessary for calls: whether a call may read the message text (templates linted
/// for PHI only: reminders, urgent notices, campaigns). Anyone may answer a phone, so other
/// messages are announced without their text (who calls, and the number to call back).
pub fn voice_carries_text(purpose: &str) -> bool {
    TEMPLATE_PURPOSES.contains(&purpose)
}

/// Minimum necessary for fax: whether a fax cover page may carry the message text (else it
/// carries only who sends to whom, the page count and the confidentiality notice).
pub fn fax_carries_text(purpose: &str, fax_text_purposes: &[String]) -> bool {
    !INTERNAL_PURPOSES.contains(&purpose) && fax_text_purposes.iter().any(|p| p == purpose)
}

/// Something about to leave.
#[derive(Debug, Clone, Copy)]
pub struct Disclosure<'a> {
    pub organization_id: &'a str,
    /// The patient it is about (for a notice, the patient it goes to); `None` for staff and
    /// unknown senders.
    pub patient_id: Option<&'a str>,
    pub channel: Channel,
    /// The recipient's address ([`Address::canonical`]).
    pub address: &'a Address,
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
    pub now: i64,
}

/// Why a disclosure is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("part2_consent_required")]
    Part2ConsentRequired,
    #[error("opted_out: the recipient opted out of {channel}")]
    OptedOut { channel: Channel },
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
    let question = Question {
        channel: d.channel,
        address: d.address,
        patient_id: d.patient_id,
        purpose: ledger_purpose(d.purpose),
        part2: d.part2,
        exempt_from_opt_out: d.purpose == KEYWORD_REPLY,
        now: facts.now,
    };
    let reason = match consent::decide(&question, facts.ledger, facts.part2) {
        Verdict::Permitted => return Ok(Permit { row: Box::new(row) }),
        Verdict::Part2ConsentRequired => Refused::Part2ConsentRequired,
        Verdict::OptedOut => Refused::OptedOut { channel: d.channel },
    };
    Err(Refusal {
        reason,
        row: Box::new(row),
    })
}

/// The gate for paths that decide one disclosure at a time: reads that disclosure's consents,
/// decides, and records refusals it is asked to.
#[derive(Clone)]
pub struct Gate {
    store: Store,
    /// Where the ledger is read grouped with concurrent disclosures' (the delivery worker).
    group: Option<crate::store::GroupCommit>,
}

impl Gate {
    pub fn new(store: Store) -> Self {
        Self { store, group: None }
    }

    /// A gate whose ledger reads are grouped with concurrent ones (one statement for many
    /// send attempts: `GroupCommit::consent_ledger`); the decisions are the same.
    pub fn grouped(store: Store, group: crate::store::GroupCommit) -> Self {
        Self {
            store,
            group: Some(group),
        }
    }

    /// The consents that decide `d` (one query; two for Part 2).
    pub async fn facts(
        &self,
        d: &Disclosure<'_>,
    ) -> Result<(ConsentLedger, Part2Consents), StoreError> {
        let purpose = ledger_purpose(d.purpose);
        let ledger = match &self.group {
            Some(group) => {
                group
                    .consent_ledger(crate::store::ConsentLookup {
                        organization_id: d.organization_id.to_string(),
                        purpose: purpose.to_string(),
                        channel: d.channel.as_str().to_string(),
                        recipient: d.address.as_str().to_string(),
                        patient_id: d.patient_id.map(str::to_string),
                    })
                    .await?
            }
            None => {
                self.store
                    .consents()
                    .entries(
                        d.organization_id,
                        purpose,
                        d.channel.as_str(),
                        d.address.as_str(),
                        d.patient_id,
                    )
                    .await?
            }
        };
        let part2 = match (d.part2, d.patient_id) {
            (true, Some(patient)) => self.store.consents().part2(&[patient]).await?,
            _ => Part2Consents::default(),
        };
        Ok((ledger, part2))
    }

    /// Reads the facts and decides.
    pub async fn decide(&self, d: &Disclosure<'_>) -> Result<Result<Permit, Refusal>, StoreError> {
        let (ledger, part2) = self.facts(d).await?;
        Ok(decide(
            d,
            &Facts {
                ledger: &ledger,
                part2: &part2,
                now: now_ms(),
            },
        ))
    }

    /// [`Gate::decide`], and a refusal is audited at once (for paths where nothing else will
    /// record it: notices and answers that are never created).
    pub async fn check(
        &self,
        d: &Disclosure<'_>,
        actor: &str,
        message_id: Option<&str>,
    ) -> Result<Result<Permit, Refusal>, StoreError> {
        let decision = self.decide(d).await?;
        if let Err(refusal) = &decision {
            self.store
                .audit()
                .record(&refusal.audit(actor, message_id, None))
                .await?;
        }
        Ok(decision)
    }

    /// Records a completed audit row.
    pub async fn record(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.store.audit().record(entry).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::consent::ConsentEntry;

    fn sms<'a>(address: &'a Address, purpose: &'a str, part2: bool) -> Disclosure<'a> {
        Disclosure {
            organization_id: "org_1",
            patient_id: Some("pat_a"),
            channel: Channel::Sms,
            address,
            purpose,
            part2,
        }
    }

    fn revoked(recipient: &str, purpose: &str) -> ConsentEntry {
        ConsentEntry {
            id: "c1".into(),
            patient_id: None,
            channel: "sms".into(),
            purpose: purpose.into(),
            recipient: recipient.into(),
            status: "revoked".into(),
            recorded_at: 1,
            expires_at: None,
        }
    }

    #[test]
    fn keyword_answers_reach_an_opted_out_sender_but_nothing_else_does() {
        let ledger = ConsentLedger::new(vec![revoked("+15005550001", "*")]);
        let part2 = Part2Consents::default();
        let facts = Facts {
            ledger: &ledger,
            part2: &part2,
            now: 10,
        };
        let to = Address::canonical(Channel::Sms, "+15005550001", "US");
        assert!(decide(&sms(&to, KEYWORD_REPLY, false), &facts).is_ok());
        let refusal = decide(&sms(&to, REMINDER_REPLY, false), &facts).unwrap_err();
        assert_eq!(
            refusal.reason.to_string(),
            "opted_out: the recipient opted out of sms"
        );
        let row = refusal.audit("worker", Some("msg_1"), None);
        assert_eq!(row.action, "disclosure_refused");
        assert_eq!(row.recipient.as_deref(), Some("+15005550001"));
        let refusal = decide(&sms(&to, MESSAGE, true), &facts).unwrap_err();
        assert_eq!(refusal.reason, Refused::Part2ConsentRequired);
    }

    #[test]
    fn reminders_and_their_answers_are_looked_up_under_reminders() {
        let ledger = ConsentLedger::new(vec![revoked("+15005550001", "reminders")]);
        let part2 = Part2Consents::default();
        let facts = Facts {
            ledger: &ledger,
            part2: &part2,
            now: 10,
        };
        let to = Address::canonical(Channel::Sms, "+15005550001", "US");
        assert!(decide(&sms(&to, REMINDER, false), &facts).is_err());
        assert!(decide(&sms(&to, REMINDER_REPLY, false), &facts).is_err());
        assert!(decide(&sms(&to, MESSAGE, false), &facts).is_ok());
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
