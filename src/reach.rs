//! How to reach a patient for outreach (reminders, recall campaigns): the first channel, in the
//! order given, for which the patient has a contact point they have not opted out of. Phone
//! numbers come back in E.164, email addresses lower-cased, as the consent ledger records them.

use crate::store::{ConsentLedger, ContactPointRow, Store, StoreError};

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

/// `Ok((channel, address))`, or `Err(reason)` a person can read: "no contact point for sms or
/// email", "no consent: opted out of sms".
pub async fn first_reachable(
    store: &Store,
    organization_id: &str,
    patient_id: &str,
    points: &[&ContactPointRow],
    channels: &[String],
    region: &str,
    purpose: &str,
) -> Result<Result<(String, String), String>, StoreError> {
    let mut opted_out = Vec::new();
    for channel in channels {
        let Some(address) = address_for(channel, points, region) else {
            continue;
        };
        if store
            .opted_out(
                organization_id,
                channel,
                &address,
                Some(patient_id),
                purpose,
            )
            .await?
        {
            opted_out.push(channel.clone());
            continue;
        }
        return Ok(Ok((channel.clone(), address)));
    }
    Ok(unreachable_reason(channels, &opted_out))
}

/// [`first_reachable`] against consent entries already loaded (batch senders): same order,
/// same answers.
pub fn first_reachable_in(
    ledger: &ConsentLedger,
    patient_id: &str,
    points: &[&ContactPointRow],
    channels: &[String],
    region: &str,
) -> Result<(String, String), String> {
    let mut opted_out = Vec::new();
    for channel in channels {
        let Some(address) = address_for(channel, points, region) else {
            continue;
        };
        if ledger.opted_out(channel, &address, Some(patient_id)) {
            opted_out.push(channel.clone());
            continue;
        }
        return Ok((channel.clone(), address));
    }
    unreachable_reason(channels, &opted_out)
}

fn unreachable_reason<T>(channels: &[String], opted_out: &[String]) -> Result<T, String> {
    Err(if opted_out.is_empty() {
        format!("no contact point for {}", channels.join(" or "))
    } else {
        format!("no consent: opted out of {}", opted_out.join(", "))
    })
}
