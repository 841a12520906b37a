//! The consent decision: whether something may go to an address on a channel for a purpose,
//! given consent-ledger entries. One rule, in [`decide`]; the store's loaders
//! (`Store::consent_entries`, `Store::consent_ledger`, `Store::part2_consents`) only narrow
//! which entries are read, with SQL that states the same conditions as [`covers_opt_out`] and
//! [`covers_part2`] (`tests/consent_conformance.rs` runs every situation through both, on
//! SQLite and PostgreSQL, and compares).
//!
//! The ledger is append-only. An entry names a channel (or `*`, every channel), a purpose (or
//! `*`), a recipient — an address in its canonical form ([`Address::canonical`], written so by
//! every path) or `*`, every address of the entry's patient — a status (`granted`/`revoked`),
//! when it was recorded and optionally when it expires.
//!
//! 1. **Part 2** (42 CFR Part 2), when the disclosure is about a Part 2 record: among the
//!    patient's `part2` entries for the channel (or `*`) and the address (or `*`), the newest —
//!    whatever its status or expiry — must be `granted` and unexpired. No patient, no consent.
//! 2. **Opt-out**, unless the disclosure is exempt (answers to the sender's own keyword):
//!    among the entries for the purpose (or `*`), `granted`/`revoked`, unexpired, for the channel
//!    (or `*`), for the address — or for every address (`*`) of this patient — the newest must
//!    not be `revoked`. An expired entry does not count (a temporary opt-out ends).
//!
//! "Newest" is the largest `(recorded_at, id)`.

use super::{Address, Channel};

/// A ledger entry's channel, purpose or recipient that covers them all.
pub const ANY: &str = "*";
/// Entry statuses.
pub const GRANTED: &str = "granted";
pub const REVOKED: &str = "revoked";
/// The purpose of Part 2 consent entries.
pub const PART2: &str = "part2";

/// A recipient as the ledger records it: `*` as is, an address in its canonical form for the
/// entry's channel (a channel name, or `*` for every channel).
pub fn canonical_recipient(channel: &str, recipient: &str, region: &str) -> String {
    if recipient.trim() == ANY {
        ANY.to_string()
    } else {
        Address::canonical_for(channel, recipient, region).into_string()
    }
}

/// One consent-ledger row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ConsentEntry {
    pub id: String,
    pub patient_id: Option<String>,
    /// A channel name, or `*`.
    pub channel: String,
    /// A ledger purpose (`reminders`, `message`, `part2`, …), or `*`.
    pub purpose: String,
    /// A canonical address, or `*`.
    pub recipient: String,
    /// `granted` or `revoked`.
    pub status: String,
    pub recorded_at: i64,
    pub expires_at: Option<i64>,
}

/// What is asked: may a disclosure go to `address` on `channel`?
#[derive(Debug, Clone, Copy)]
pub struct Question<'a> {
    pub channel: Channel,
    pub address: &'a Address,
    /// The patient it is about (for a notice, the patient it goes to).
    pub patient_id: Option<&'a str>,
    /// The ledger purpose the opt-outs are looked up under.
    pub purpose: &'a str,
    /// About a Part 2 record.
    pub part2: bool,
    /// Opt-outs do not hold it back (the answer to the sender's own STOP/START/HELP).
    pub exempt_from_opt_out: bool,
    pub now: i64,
}

/// The answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Permitted,
    Part2ConsentRequired,
    OptedOut,
}

/// Entries that can decide opt-outs (one organization; more may be present than needed).
#[derive(Debug, Clone, Default)]
pub struct ConsentLedger {
    entries: Vec<ConsentEntry>,
}

impl ConsentLedger {
    pub fn new(entries: Vec<ConsentEntry>) -> Self {
        Self { entries }
    }

    pub fn entries(&self) -> &[ConsentEntry] {
        &self.entries
    }
}

/// Part 2 consent entries by patient (more patients may be present).
#[derive(Debug, Clone, Default)]
pub struct Part2Consents {
    by_patient: std::collections::HashMap<String, Vec<ConsentEntry>>,
}

impl Part2Consents {
    pub fn new(entries: Vec<ConsentEntry>) -> Self {
        let mut by_patient: std::collections::HashMap<String, Vec<ConsentEntry>> =
            std::collections::HashMap::new();
        for entry in entries {
            if let Some(patient) = entry.patient_id.clone() {
                by_patient.entry(patient).or_default().push(entry);
            }
        }
        Self { by_patient }
    }

    /// The patient's entries (none: no consent).
    pub fn of(&self, patient_id: &str) -> &[ConsentEntry] {
        self.by_patient.get(patient_id).map_or(&[], Vec::as_slice)
    }
}

/// The rule (module docs).
pub fn decide(q: &Question<'_>, ledger: &ConsentLedger, part2: &Part2Consents) -> Verdict {
    if q.part2 {
        let entries = q.patient_id.map_or(&[][..], |p| part2.of(p));
        if !part2_consented(entries, q) {
            return Verdict::Part2ConsentRequired;
        }
    }
    if !q.exempt_from_opt_out && opted_out(ledger.entries(), q) {
        return Verdict::OptedOut;
    }
    Verdict::Permitted
}

fn channel_matches(entry: &ConsentEntry, channel: Channel) -> bool {
    entry.channel == ANY || entry.channel == channel
}

fn unexpired(entry: &ConsentEntry, now: i64) -> bool {
    entry.expires_at.is_none_or(|at| at > now)
}

fn newest<'e>(entries: impl Iterator<Item = &'e ConsentEntry>) -> Option<&'e ConsentEntry> {
    entries.max_by(|a, b| (a.recorded_at, &a.id).cmp(&(b.recorded_at, &b.id)))
}

/// Whether a Part 2 entry speaks to the question: the question's patient's, purpose `part2`,
/// for its channel (or `*`) and its address (or `*`). Status and expiry do not matter here: the
/// newest covering entry decides, and an expired or revoked one refuses.
pub fn covers_part2(entry: &ConsentEntry, q: &Question<'_>) -> bool {
    entry.purpose == PART2
        && q.patient_id
            .is_some_and(|p| entry.patient_id.as_deref() == Some(p))
        && channel_matches(entry, q.channel)
        && (entry.recipient == ANY || q.address == entry.recipient.as_str())
}

/// Whether an opt-out/opt-in entry speaks to the question: the purpose (or `*`), `granted` or
/// `revoked`, unexpired, the channel (or `*`), and the address — or every address (`*`) of the
/// question's patient.
pub fn covers_opt_out(entry: &ConsentEntry, q: &Question<'_>) -> bool {
    (entry.purpose == ANY || entry.purpose == q.purpose)
        && (entry.status == GRANTED || entry.status == REVOKED)
        && unexpired(entry, q.now)
        && channel_matches(entry, q.channel)
        && (q.address == entry.recipient.as_str()
            || (entry.recipient == ANY
                && q.patient_id
                    .is_some_and(|p| entry.patient_id.as_deref() == Some(p))))
}

/// Whether the patient's newest covering Part 2 entry is granted and unexpired.
pub fn part2_consented(entries: &[ConsentEntry], q: &Question<'_>) -> bool {
    newest(entries.iter().filter(|e| covers_part2(e, q)))
        .is_some_and(|e| e.status == GRANTED && unexpired(e, q.now))
}

/// Whether the newest covering ledger entry revokes.
pub fn opted_out(entries: &[ConsentEntry], q: &Question<'_>) -> bool {
    newest(entries.iter().filter(|e| covers_opt_out(e, q))).is_some_and(|e| e.status == REVOKED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        id: &str,
        patient: Option<&str>,
        channel: &str,
        purpose: &str,
        recipient: &str,
        status: &str,
        at: i64,
    ) -> ConsentEntry {
        ConsentEntry {
            id: id.into(),
            patient_id: patient.map(str::to_string),
            channel: channel.into(),
            purpose: purpose.into(),
            recipient: recipient.into(),
            status: status.into(),
            recorded_at: at,
            expires_at: None,
        }
    }

    fn ask<'a>(channel: Channel, address: &'a Address, patient: Option<&'a str>) -> Question<'a> {
        Question {
            channel,
            address,
            patient_id: patient,
            purpose: "reminders",
            part2: false,
            exempt_from_opt_out: false,
            now: 100,
        }
    }

    fn addr(channel: Channel, raw: &str) -> Address {
        Address::canonical(channel, raw, "US")
    }

    #[test]
    fn recipients_are_recorded_canonical() {
        assert_eq!(
            canonical_recipient("sms", "(415) 555-2671", "US"),
            "+14155552671"
        );
        assert_eq!(
            canonical_recipient("*", "(415) 555-2671", "US"),
            "+14155552671"
        );
        assert_eq!(
            canonical_recipient("email", "Jane@Example.org", "US"),
            "jane@example.org"
        );
        assert_eq!(canonical_recipient("*", " * ", "US"), "*");
    }

    #[test]
    fn the_newest_covering_ledger_entry_decides() {
        let entries = vec![
            entry("c1", Some("pat_a"), "sms", "*", "*", "revoked", 10),
            entry("c2", None, "sms", "*", "+15005550001", "granted", 20),
            entry("c3", Some("pat_b"), "*", "*", "*", "revoked", 5),
            entry("c4", None, "email", "*", "b@example.org", "granted", 5),
            entry("c5", None, "email", "*", "b@example.org", "revoked", 5),
        ];
        let one = Address::canonical(Channel::Sms, "+15005550001", "US");
        let two = Address::canonical(Channel::Sms, "+15005550002", "US");
        let a = addr(Channel::Email, "a@example.org");
        let b = addr(Channel::Email, "b@example.org");
        let x = addr(Channel::Email, "x@example.org");
        // pat_a: the number's newer opt-in wins over the patient-wide opt-out.
        assert!(!opted_out(
            &entries,
            &ask(Channel::Sms, &one, Some("pat_a"))
        ));
        // Another number of pat_a: only the patient-wide opt-out covers it.
        assert!(opted_out(&entries, &ask(Channel::Sms, &two, Some("pat_a"))));
        // pat_a's opt-out is for SMS only.
        assert!(!opted_out(
            &entries,
            &ask(Channel::Email, &a, Some("pat_a"))
        ));
        // pat_b: every channel revoked.
        assert!(opted_out(&entries, &ask(Channel::Email, &x, Some("pat_b"))));
        // Same time: the larger id wins.
        assert!(opted_out(&entries, &ask(Channel::Email, &b, None)));
        // Nothing recorded: permitted.
        assert!(!opted_out(
            &entries,
            &ask(Channel::Sms, &two, Some("pat_c"))
        ));
    }

    #[test]
    fn purpose_status_and_expiry_limit_what_covers() {
        let to = addr(Channel::Sms, "+15005550001");
        let q = ask(Channel::Sms, &to, None);
        let mut expired = entry("c1", None, "sms", "reminders", "+15005550001", "revoked", 1);
        expired.expires_at = Some(100);
        assert!(!covers_opt_out(&expired, &q), "expired at now");
        expired.expires_at = Some(101);
        assert!(covers_opt_out(&expired, &q));
        let other_purpose = entry("c2", None, "sms", "campaign", "+15005550001", "revoked", 1);
        assert!(!covers_opt_out(&other_purpose, &q));
        let pending = entry("c3", None, "sms", "*", "+15005550001", "pending", 1);
        assert!(!covers_opt_out(&pending, &q));
        let other_channel = entry("c4", None, "fax", "*", "+15005550001", "revoked", 1);
        assert!(!covers_opt_out(&other_channel, &q));
        // A patient-wide entry covers only that patient's disclosures.
        let wide = entry("c5", Some("pat_a"), "sms", "*", "*", "revoked", 1);
        assert!(!covers_opt_out(&wide, &q));
        assert!(covers_opt_out(
            &wide,
            &ask(Channel::Sms, &to, Some("pat_a"))
        ));
    }

    #[test]
    fn part2_needs_the_newest_covering_consent_granted_and_unexpired() {
        let to = addr(Channel::Sms, "(415) 555-2671");
        let mut q = ask(Channel::Sms, &to, Some("pat_a"));
        q.part2 = true;
        let decide_with = |entries: Vec<ConsentEntry>, q: &Question<'_>| {
            decide(q, &ConsentLedger::default(), &Part2Consents::new(entries))
        };
        assert_eq!(decide_with(vec![], &q), Verdict::Part2ConsentRequired);
        let granted = entry(
            "c1",
            Some("pat_a"),
            "sms",
            "part2",
            "+14155552671",
            "granted",
            1,
        );
        assert_eq!(decide_with(vec![granted.clone()], &q), Verdict::Permitted);
        let other_number = Address::canonical(Channel::Sms, "+14155550000", "US");
        let mut elsewhere = q;
        elsewhere.address = &other_number;
        assert_eq!(
            decide_with(vec![granted.clone()], &elsewhere),
            Verdict::Part2ConsentRequired
        );
        let revoked = vec![
            entry("c1", Some("pat_a"), "*", "part2", "*", "granted", 1),
            entry("c2", Some("pat_a"), "sms", "part2", "*", "revoked", 2),
        ];
        assert_eq!(decide_with(revoked, &q), Verdict::Part2ConsentRequired);
        // The newest grant has expired: refused, even with an older unexpired one.
        let mut expired = entry("c2", Some("pat_a"), "*", "part2", "*", "granted", 2);
        expired.expires_at = Some(50);
        let older = entry("c1", Some("pat_a"), "*", "part2", "*", "granted", 1);
        assert_eq!(
            decide_with(vec![older, expired], &q),
            Verdict::Part2ConsentRequired
        );
        // No patient: nobody could have consented.
        let mut nobody = q;
        nobody.patient_id = None;
        assert_eq!(
            decide_with(vec![granted], &nobody),
            Verdict::Part2ConsentRequired
        );
    }

    #[test]
    fn keyword_answers_reach_an_opted_out_sender_but_part2_still_holds() {
        let to = addr(Channel::Sms, "+15005550001");
        let ledger = ConsentLedger::new(vec![entry(
            "c1",
            None,
            "sms",
            "*",
            "+15005550001",
            "revoked",
            1,
        )]);
        let mut q = ask(Channel::Sms, &to, None);
        assert_eq!(
            decide(&q, &ledger, &Part2Consents::default()),
            Verdict::OptedOut
        );
        q.exempt_from_opt_out = true;
        assert_eq!(
            decide(&q, &ledger, &Part2Consents::default()),
            Verdict::Permitted
        );
        q.part2 = true;
        assert_eq!(
            decide(&q, &ledger, &Part2Consents::default()),
            Verdict::Part2ConsentRequired
        );
    }
}
