//! How to reach a patient for outreach (reminders, recall campaigns): the first channel, in the
//! order given, for which the patient has a contact point the disclosure gate lets the message
//! reach (`crate::disclosure`: Part 2 consent, opt-out). Phone numbers come back in E.164, email
//! addresses lower-cased, as the consent ledger records them.

use crate::disclosure::{self, Disclosure, Facts, Permit, Refusal, Refused};
use crate::store::ContactPointRow;

/// The address on `channel` among `points`: for SMS an `sms`/`mobile` point, else a `phone`.
pub fn address_for(channel: &str, points: &[&ContactPointRow], region: &str) -> Option<String> {
    match channel {
        "sms" => points
            .iter()
            .find(|p| matches!(p.system.as_str(), "sms" | "mobile"))
            .or_else(|| points.iter().find(|p| p.system == "phone"))
            .map(|p| crate::phone::to_e164(&p.value, region).unwrap_or(p.value.clone())),
        "email" => points
            .iter()
            .find(|p| p.system == "email")
            .map(|p| p.value.to_lowercase()),
        other => points
            .iter()
            .find(|p| p.system == other)
            .map(|p| p.value.clone()),
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
pub type Reached = (String, String, Permit);

/// Why nobody could be reached: a reason a person can read, and the gate's refusals (to audit).
#[derive(Debug, Clone)]
pub struct Unreachable {
    pub reason: String,
    pub refusals: Vec<Refusal>,
}

/// The first channel with a contact point the gate permits, against facts already read.
pub fn first_permitted(
    outreach: &Outreach<'_>,
    points: &[&ContactPointRow],
    channels: &[String],
    facts: &Facts<'_>,
) -> Result<Reached, Unreachable> {
    let mut refusals = Vec::new();
    for channel in channels {
        let Some(address) = address_for(channel, points, facts.region) else {
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
            Ok(permit) => return Ok((channel.clone(), address, permit)),
            Err(refusal) => refusals.push((channel.clone(), refusal)),
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
    for channel in channels {
        for point in points {
            if let Some(address) = address_for(channel, &[point], region) {
                out.push(address);
            }
        }
    }
}
