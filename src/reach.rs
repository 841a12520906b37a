//! How to reach a patient for outreach (reminders, recall campaigns): the first channel, in the
//! order given, for which the patient has a contact point the disclosure gate lets the message
//! reach (`crate::disclosure`: Part 2 consent, opt-out). Addresses come back canonical
//! ([`Address::canonical`]), as the consent ledger records them.

use crate::disclosure::{self, Disclosure, Facts, Permit, Refusal, Refused};
use crate::domain::{Address, Channel};
use crate::store::ContactPointRow;

/// The address on `channel` among `points`, canonical: for SMS an `sms`/`mobile` point, else a
/// `phone`; for calls a `phone` point, else an `sms`/`mobile` one (a landline takes calls, not
/// texts); for the others a point of the channel's own system. A point that is not a valid
/// address for the channel ([`Address::parse`]: a number that is not a phone number, a
/// malformed email address) is passed over, as the message service would refuse it.
pub fn address_for(channel: Channel, points: &[&ContactPointRow], region: &str) -> Option<Address> {
    let valid = |p: &&ContactPointRow| Address::parse(channel, &p.value, region).ok();
    match channel {
        Channel::Sms => points
            .iter()
            .filter(|p| matches!(p.system.as_str(), "sms" | "mobile"))
            .find_map(valid)
            .or_else(|| {
                points
                    .iter()
                    .filter(|p| p.system == "phone")
                    .find_map(valid)
            }),
        Channel::Voice => points
            .iter()
            .filter(|p| p.system == "phone")
            .find_map(valid)
            .or_else(|| {
                points
                    .iter()
                    .filter(|p| matches!(p.system.as_str(), "sms" | "mobile"))
                    .find_map(valid)
            }),
        other => points
            .iter()
            .filter(|p| p.system == other.as_str())
            .find_map(valid),
    }
}

/// Who is reached, about what: the parts of a [`Disclosure`] that do not depend on the channel.
#[derive(Debug, Clone, Copy)]
pub struct Outreach<'a> {
    pub organization_id: &'a str,
    pub patient_id: &'a str,
    pub purpose: &'a str,
    pub part2: bool,
}

/// A channel chosen: `(channel, address, permit)`.
pub type Reached = (Channel, Address, Permit);

/// Why nobody could be reached: a reason a person can read, and the gate's refusals (to audit).
#[derive(Debug, Clone)]
pub struct Unreachable {
    pub reason: String,
    pub refusals: Vec<Refusal>,
}

/// The first channel with a contact point the gate permits, against facts already read.
/// `channels` are names (validated with the rule or campaign that lists them; a name that is
/// not a channel is passed over).
pub fn first_permitted(
    outreach: &Outreach<'_>,
    points: &[&ContactPointRow],
    channels: &[String],
    region: &str,
    facts: &Facts<'_>,
) -> Result<Reached, Unreachable> {
    let mut refusals = Vec::new();
    for channel in channels.iter().filter_map(|c| c.parse::<Channel>().ok()) {
        let Some(address) = address_for(channel, points, region) else {
            continue;
        };
        let decision = disclosure::decide(
            &Disclosure {
                organization_id: outreach.organization_id,
                patient_id: Some(outreach.patient_id),
                channel,
                address: &address,
                purpose: outreach.purpose,
                part2: outreach.part2,
            },
            facts,
        );
        match decision {
            Ok(permit) => return Ok((channel, address, permit)),
            Err(refusal) => refusals.push((channel, refusal)),
        }
    }
    let reason = if refusals.is_empty() {
        format!("no contact point for {}", channels.join(" or "))
    } else if refusals
        .iter()
        .any(|(_, r)| r.reason == Refused::Part2ConsentRequired)
    {
        "Part 2 restricted: no Part 2 consent to remind".to_string()
    } else {
        let channels: Vec<&str> = refusals.iter().map(|(c, _)| c.as_str()).collect();
        format!("no consent: opted out of {}", channels.join(", "))
    };
    Err(Unreachable {
        reason,
        refusals: refusals.into_iter().map(|(_, r)| r).collect(),
    })
}

/// Every address `points` offer on `channels` (what a batch's consent ledger must cover).
pub fn addresses_on(
    channels: &[String],
    points: &[ContactPointRow],
    region: &str,
    out: &mut Vec<String>,
) {
    for channel in channels.iter().filter_map(|c| c.parse::<Channel>().ok()) {
        for point in points {
            if let Some(address) = address_for(channel, &[point], region) {
                out.push(address.into_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(system: &str, value: &str) -> ContactPointRow {
        ContactPointRow {
            id: format!("cp_{system}_{value}"),
            system: system.into(),
            value: value.into(),
            use_code: None,
            rank: 1,
        }
    }

    #[test]
    fn points_that_are_not_valid_addresses_are_passed_over() {
        let points = [
            point("sms", "555-01"),
            point("phone", "(415) 555-2671"),
            point("email", "bob"),
            point("email", "Bob@Example.org"),
        ];
        let points: Vec<&ContactPointRow> = points.iter().collect();
        assert_eq!(
            address_for(Channel::Sms, &points, "US").map(Address::into_string),
            Some("+14155552671".into())
        );
        assert_eq!(
            address_for(Channel::Email, &points, "US").map(Address::into_string),
            Some("bob@example.org".into())
        );
        assert_eq!(address_for(Channel::Fax, &points, "US"), None);
        let only_bad = [point("sms", "12345")];
        let only_bad: Vec<&ContactPointRow> = only_bad.iter().collect();
        assert_eq!(address_for(Channel::Sms, &only_bad, "US"), None);
    }
}
