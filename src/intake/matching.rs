//! Patient matching: ordered rules, the first that yields exactly one patient wins, and the
//! rule is recorded as the item's match method. Filing to the wrong patient is the worst
//! outcome, so two candidates are always "unmatched", and a rule that finds two patients
//! stops the weaker rules below it from deciding.
//!
//! 1. **reply** — the item answers one of our outbound messages (In-Reply-To/References for
//!    mail, the provider's conversation for SMS): that message's patient and thread;
//! 2. **identifier** — an identifier with its assigning authority (a C-CDA
//!    `recordTarget/patientRole/id`, an XDM `sourcePatientId`) equal to one we hold (HL7 PID-3
//!    identifiers are stored with their authority);
//! 3. **demographics** — normalised family name + first given name + birth date + sex, all
//!    four present on both sides, naming exactly one patient;
//! 4. **contact** — the number or address the item came from: decides only where the source
//!    says it may (SMS replies); otherwise it only proposes candidates.
//!
//! Anything else is unmatched, with every candidate and the rule that proposed it.
//!
//! Identifiers compare by exact authority: HL7 feeds name it by text (`MRN`, a namespace id)
//! and, when they send it, by OID (CX.4's universal id, stored as a second identifier); a
//! C-CDA names it by OID. An organization can map OIDs to its feed's text authorities
//! (`identifier_authorities`, see [`with_aliases`]). An identifier of an authority we do not
//! hold never matches.

use std::collections::BTreeSet;

use unicode_normalization::UnicodeNormalization;

use crate::store::{Store, StoreError};

/// How an item was matched (stored as its `match_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MatchMethod {
    Reply,
    Identifier,
    Demographics,
    Contact,
}

impl MatchMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reply => "reply",
            Self::Identifier => "identifier",
            Self::Demographics => "demographics",
            Self::Contact => "contact",
        }
    }
}

/// An identifier with the authority that assigned it. `Debug` hides a Social Security
/// number's value (see [`Identifier::is_ssn`]): it may match, but is never logged or shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Identifier {
    pub authority: String,
    pub id: String,
}

/// The Social Security Administration's OID, the authority of a US Social Security number.
pub const SSN_AUTHORITY: &str = switchboard_docs::ccda::SSN_OID;

impl Identifier {
    /// Whether this may be a Social Security number: the SSA's OID, an HL7 v2 authority or
    /// identifier type naming it (`SSA`, `SS`, `SSN`, which an organization's
    /// `identifier_authorities` may map the OID to), or a value shaped like one (nine
    /// digits, dashes allowed). Erring towards hiding: only `Debug` uses it.
    pub fn is_ssn(&self) -> bool {
        let authority = self.authority.trim();
        let digits: String = self.id.chars().filter(|c| *c != '-' && *c != ' ').collect();
        authority == SSN_AUTHORITY
            || ["SSA", "SS", "SSN"]
                .iter()
                .any(|a| authority.eq_ignore_ascii_case(a))
            || (digits.len() == 9 && digits.bytes().all(|b| b.is_ascii_digit()))
    }
}

impl std::fmt::Debug for Identifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id: &str = if self.is_ssn() {
            "<redacted>"
        } else {
            &self.id
        };
        f.debug_struct("Identifier")
            .field("authority", &self.authority)
            .field("id", &id)
            .finish()
    }
}

/// Who the item says the patient is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Demographics {
    pub family: Option<String>,
    pub given: Option<String>,
    /// `YYYY-MM-DD`, or the HL7/CDA form `YYYYMMDD[...]`.
    pub birth_date: Option<String>,
    pub sex: Option<String>,
}

/// What an item offers for matching. Sources fill what they know.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// Our message this item answers (resolved by the source from its reference token).
    pub reply_to: Option<String>,
    pub identifiers: Vec<Identifier>,
    pub demographics: Demographics,
    /// The number (E.164) or address the item came from.
    pub contact: Option<String>,
    /// Whether the contact point may decide (SMS replies) or only propose (documents).
    pub contact_decides: bool,
}

/// A patient a rule proposed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Candidate {
    pub patient_id: String,
    pub method: MatchMethod,
}

/// The outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Matched {
        patient_id: String,
        /// The thread of the message replied to (rule 1 only).
        thread_id: Option<String>,
        method: MatchMethod,
    },
    Unmatched {
        candidates: Vec<Candidate>,
    },
}

/// Decides which patient of `organization_id` the evidence names.
pub async fn decide(
    store: &Store,
    organization_id: &str,
    evidence: &Evidence,
) -> Result<Decision, StoreError> {
    let mut candidates: BTreeSet<Candidate> = BTreeSet::new();
    let propose = |set: &mut BTreeSet<Candidate>, ids: &BTreeSet<String>, method| {
        set.extend(ids.iter().map(|id| Candidate {
            patient_id: id.clone(),
            method,
        }));
    };

    // 1. A reply to one of our messages.
    if let Some(message_id) = &evidence.reply_to
        && let Some((patient_id, thread_id)) = store
            .messages()
            .patient_of(organization_id, message_id)
            .await?
    {
        return Ok(Decision::Matched {
            patient_id,
            thread_id: Some(thread_id),
            method: MatchMethod::Reply,
        });
    }

    // 2. Identifiers with their authority. Identifiers naming different patients conflict.
    let mut by_identifier = BTreeSet::new();
    for identifier in &evidence.identifiers {
        let (authority, id) = (identifier.authority.trim(), identifier.id.trim());
        if authority.is_empty() || id.is_empty() {
            continue;
        }
        by_identifier.extend(
            store
                .patients()
                .by_identifier(organization_id, authority, id)
                .await?,
        );
    }
    match by_identifier.len() {
        1 => return Ok(matched(by_identifier, MatchMethod::Identifier)),
        0 => {}
        _ => {
            propose(&mut candidates, &by_identifier, MatchMethod::Identifier);
            return Ok(unmatched(candidates));
        }
    }

    // 3. Name, birth date and sex, all four.
    let by_demographics =
        demographic_matches(store, organization_id, &evidence.demographics).await?;
    match by_demographics.len() {
        1 => return Ok(matched(by_demographics, MatchMethod::Demographics)),
        0 => {}
        _ => {
            propose(&mut candidates, &by_demographics, MatchMethod::Demographics);
            return Ok(unmatched(candidates));
        }
    }

    // 4. The contact point it came from.
    if let Some(contact) = evidence
        .contact
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        let by_contact: BTreeSet<String> = store
            .patients()
            .by_contact(organization_id, contact)
            .await?
            .into_iter()
            .collect();
        if by_contact.len() == 1 && evidence.contact_decides {
            return Ok(matched(by_contact, MatchMethod::Contact));
        }
        propose(&mut candidates, &by_contact, MatchMethod::Contact);
    }
    Ok(unmatched(candidates))
}

/// The identifiers with, for each whose authority the organization maps
/// (`identifier_authorities = { "<OID>" = "MRN" }`), the same id under the mapped authority.
pub fn with_aliases(
    identifiers: &[Identifier],
    aliases: &std::collections::BTreeMap<String, String>,
) -> Vec<Identifier> {
    let mut all = identifiers.to_vec();
    for identifier in identifiers {
        if let Some(alias) = aliases.get(identifier.authority.trim()) {
            let aliased = Identifier {
                authority: alias.clone(),
                id: identifier.id.clone(),
            };
            if !all.contains(&aliased) {
                all.push(aliased);
            }
        }
    }
    all
}

fn matched(ids: BTreeSet<String>, method: MatchMethod) -> Decision {
    match ids.into_iter().next() {
        Some(patient_id) => Decision::Matched {
            patient_id,
            thread_id: None,
            method,
        },
        None => Decision::Unmatched {
            candidates: Vec::new(),
        },
    }
}

fn unmatched(candidates: BTreeSet<Candidate>) -> Decision {
    Decision::Unmatched {
        candidates: candidates.into_iter().collect(),
    }
}

async fn demographic_matches(
    store: &Store,
    organization_id: &str,
    wanted: &Demographics,
) -> Result<BTreeSet<String>, StoreError> {
    let (Some(family), Some(given), Some(birth), Some(sex)) = (
        wanted
            .family
            .as_deref()
            .map(name_key)
            .filter(|k| !k.is_empty()),
        wanted
            .given
            .as_deref()
            .map(first_given_key)
            .filter(|k| !k.is_empty()),
        wanted.birth_date.as_deref().and_then(birth_date),
        wanted.sex.as_deref().and_then(sex_key),
    ) else {
        return Ok(BTreeSet::new());
    };
    Ok(store
        .patients()
        .born_on(organization_id, &birth)
        .await?
        .into_iter()
        .filter(|p| {
            p.family_name.as_deref().map(name_key).as_deref() == Some(family.as_str())
                && p.given_name.as_deref().map(first_given_key).as_deref() == Some(given.as_str())
                && p.sex.as_deref().and_then(sex_key) == Some(sex)
        })
        .map(|p| p.id)
        .collect())
}

/// A name compared without case, accents, spaces or punctuation (`O'Brien-Smith` ≡
/// `obrien smith`, `José` ≡ `JOSE`).
pub fn name_key(name: &str) -> String {
    name.nfkd()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_uppercase)
        .collect()
}

/// The first given name's key (`Mary Ann` → `MARY`): feeds differ on middle names.
fn first_given_key(given: &str) -> String {
    given
        .split(|c: char| c.is_whitespace() || c == '^')
        .find(|part| !name_key(part).is_empty())
        .map(name_key)
        .unwrap_or_default()
}

/// `YYYY-MM-DD` from `YYYY-MM-DD` or the HL7/CDA `YYYYMMDD[hhmm…]`; anything less precise is
/// not a birth date to match on.
pub fn birth_date(value: &str) -> Option<String> {
    let value = value.trim();
    let date = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .or_else(|| crate::hl7::time::parse_date(value))?;
    Some(date.format("%Y-%m-%d").to_string())
}

/// F / M / other; unknown (`U`, `UN`, empty) never matches.
fn sex_key(value: &str) -> Option<char> {
    match value.trim().to_ascii_uppercase().as_str() {
        "F" | "FEMALE" => Some('F'),
        "M" | "MALE" => Some('M'),
        "O" | "OTHER" => Some('O'),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_without_case_accents_or_punctuation() {
        assert_eq!(name_key("O'Brien-Smith"), name_key("obrien smith"));
        assert_eq!(name_key("José"), "JOSE");
        assert_eq!(first_given_key("Mary Ann"), "MARY");
        assert_ne!(name_key("Jones"), name_key("Jonas"));
    }

    #[test]
    fn birth_dates_need_a_whole_day() {
        assert_eq!(birth_date("19501219").as_deref(), Some("1950-12-19"));
        assert_eq!(
            birth_date("195012191030-0500").as_deref(),
            Some("1950-12-19")
        );
        assert_eq!(birth_date("1950-12-19").as_deref(), Some("1950-12-19"));
        assert_eq!(birth_date("1950"), None);
        assert_eq!(birth_date("19501332"), None);
    }

    #[test]
    fn aliases_add_the_mapped_authority_only() {
        let oid = "2.16.840.1.113883.19.5";
        let aliases = [(oid.to_string(), "MRN".to_string())].into_iter().collect();
        let ids = vec![
            Identifier {
                authority: oid.into(),
                id: "1".into(),
            },
            Identifier {
                authority: "9.9".into(),
                id: "2".into(),
            },
        ];
        let all = with_aliases(&ids, &aliases);
        assert_eq!(all.len(), 3);
        assert_eq!(all[2].authority, "MRN");
        assert_eq!(all[2].id, "1");
    }

    #[test]
    fn a_social_security_number_never_shows_in_debug() {
        let ssn = Identifier {
            authority: SSN_AUTHORITY.into(),
            id: "12345679".into(),
        };
        let aliased = with_aliases(
            std::slice::from_ref(&ssn),
            &[(SSN_AUTHORITY.to_string(), "SSA".to_string())]
                .into_iter()
                .collect(),
        );
        assert_eq!(aliased.len(), 2);
        let shown = format!(
            "{aliased:?} {:?}",
            Evidence {
                identifiers: aliased.clone(),
                ..Evidence::default()
            }
        );
        assert!(!shown.contains("12345679"), "{shown}");
        // A value shaped like one, under any authority, is hidden too; an MRN is not.
        let shaped = Identifier {
            authority: "1.2.3".into(),
            id: "123-45-6789".into(),
        };
        assert!(!format!("{shaped:?}").contains("6789"));
        let mrn = Identifier {
            authority: "1.2.3".into(),
            id: "MRN-7".into(),
        };
        assert!(format!("{mrn:?}").contains("MRN-7"));
    }

    #[test]
    fn unknown_sex_never_matches() {
        assert_eq!(sex_key("f"), Some('F'));
        assert_eq!(sex_key("UN"), None);
        assert_eq!(sex_key(""), None);
    }
}
