//! From parsed ADT and SIU messages to what the gateway keeps: patients (identifiers,
//! demographics, contact points) and appointments. Pure: no I/O.
//!
//! Unknown message types are `Unsupported` (the listener answers AR); a known type whose
//! content is wrong is `BadContent` naming the segment and field (AE with an ERR segment).

use chrono::{DateTime, FixedOffset, NaiveDate};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::message::{Message, Repetition, Segment, rep_get};
use super::time::{parse_date, parse_timestamp};
use crate::domain::AppointmentStatus;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identifier {
    pub id: String,
    /// CX.4.1: the assigning authority's namespace id (`MRN`, a facility code).
    pub authority: String,
    pub id_type: Option<String>,
    /// CX.4.2: the assigning authority's universal id (an OID, with CX.4.3 `ISO`), when the
    /// feed sends it: kept so that a document naming the authority by OID matches.
    #[serde(default)]
    pub universal_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub state: String,
    pub postal_code: String,
    pub country: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactPoint {
    /// phone | sms (mobile) | fax | email
    pub system: String,
    pub value: String,
    /// XTN-2: PRN, ORN, WPN, NET, ...
    pub use_code: Option<String>,
    pub rank: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientRecord {
    pub identifiers: Vec<Identifier>,
    pub family_name: Option<String>,
    pub given_name: Option<String>,
    pub birth_date: Option<NaiveDate>,
    pub sex: Option<String>,
    pub language: Option<String>,
    pub address: Option<Address>,
    pub contact_points: Vec<ContactPoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppointmentRecord {
    pub filler_id: String,
    pub placer_id: Option<String>,
    pub start: DateTime<FixedOffset>,
    pub duration_minutes: Option<i64>,
    pub status: AppointmentStatus,
    pub appointment_type: Option<String>,
    pub reason: Option<String>,
    pub location: Option<String>,
    pub location_code: Option<String>,
    pub provider_id: Option<String>,
    pub provider_name: Option<String>,
}

/// What a message asks the gateway to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hl7Event {
    PatientUpsert(PatientRecord),
    PatientMerge {
        surviving: PatientRecord,
        prior: Vec<Identifier>,
    },
    /// S12 new, S13 reschedule, S14 modify, S15/S17 cancel, S26 no-show: the appointment as
    /// it now stands (status set accordingly), with its patient.
    Appointment {
        trigger: String,
        patient: Box<PatientRecord>,
        appointment: Box<AppointmentRecord>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("message type {0} is not supported")]
    Unsupported(String),
    #[error("{segment}-{field}: {reason}")]
    BadContent {
        segment: String,
        field: usize,
        problem: ContentProblem,
        reason: String,
    },
}

/// What is wrong with a field (HL7 table 0357, the ERR-3 code of the AE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentProblem {
    /// 101: a required segment or field is absent.
    Missing,
    /// 102: the field is there but not of its data type (a date, a timestamp).
    Malformed,
}

impl ContentProblem {
    pub fn hl7_code(self) -> u16 {
        match self {
            Self::Missing => 101,
            Self::Malformed => 102,
        }
    }
}

/// A required segment or field is missing (101).
fn bad(segment: &str, field: usize, reason: &str) -> MappingError {
    MappingError::BadContent {
        segment: segment.into(),
        field,
        problem: ContentProblem::Missing,
        reason: reason.into(),
    }
}

/// A field is not of its data type (102).
fn malformed(segment: &str, field: usize, reason: &str) -> MappingError {
    MappingError::BadContent {
        segment: segment.into(),
        field,
        problem: ContentProblem::Malformed,
        reason: reason.into(),
    }
}

fn opt(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// Maps a message; `zone` reads timestamps that carry no offset.
pub fn map_message(msg: &Message, zone: Tz) -> Result<Hl7Event, MappingError> {
    let kind = format!("{}^{}", msg.header.message_type, msg.header.trigger);
    match (
        msg.header.message_type.as_str(),
        msg.header.trigger.as_str(),
    ) {
        ("ADT", "A40") => {
            let surviving = patient(msg)?;
            let mrg = msg
                .segment("MRG")
                .ok_or_else(|| bad("MRG", 1, "ADT^A40 needs an MRG segment"))?;
            let prior = identifiers(mrg.reps(1));
            if prior.is_empty() {
                return Err(bad("MRG", 1, "prior patient identifier list is empty"));
            }
            Ok(Hl7Event::PatientMerge { surviving, prior })
        }
        ("ADT", _) if msg.segment("PID").is_some() => Ok(Hl7Event::PatientUpsert(patient(msg)?)),
        ("ADT", _) => Err(bad("PID", 3, "this ADT event carries no PID segment")),
        ("SIU", trigger @ ("S12" | "S13" | "S14" | "S15" | "S17" | "S26")) => {
            let patient = patient(msg)?;
            let appointment = appointment(msg, trigger, zone)?;
            Ok(Hl7Event::Appointment {
                trigger: trigger.to_string(),
                patient: Box::new(patient),
                appointment: Box::new(appointment),
            })
        }
        _ => Err(MappingError::Unsupported(kind)),
    }
}

fn identifiers(reps: &[Repetition]) -> Vec<Identifier> {
    reps.iter()
        .filter_map(|rep| {
            let id = rep_get(rep, 1, 1).trim();
            (!id.is_empty()).then(|| Identifier {
                id: id.to_string(),
                authority: rep_get(rep, 4, 1).trim().to_string(),
                id_type: opt(rep_get(rep, 5, 1)),
                universal_id: opt(rep_get(rep, 4, 2)),
            })
        })
        .collect()
}

fn patient(msg: &Message) -> Result<PatientRecord, MappingError> {
    let pid = msg
        .segment("PID")
        .ok_or_else(|| bad("PID", 3, "PID segment is required"))?;
    let identifiers = identifiers(pid.reps(3));
    if identifiers.is_empty() {
        return Err(bad("PID", 3, "patient identifier list is empty"));
    }
    let birth = pid.comp(7, 1);
    let birth_date = match opt(birth) {
        None => None,
        Some(text) => {
            Some(parse_date(&text).ok_or_else(|| malformed("PID", 7, "birth date is not a date"))?)
        }
    };
    let address = pid.reps(11).first().and_then(|rep| {
        let a = Address {
            line1: rep_get(rep, 1, 1).trim().to_string(),
            line2: rep_get(rep, 2, 1).trim().to_string(),
            city: rep_get(rep, 3, 1).trim().to_string(),
            state: rep_get(rep, 4, 1).trim().to_string(),
            postal_code: rep_get(rep, 5, 1).trim().to_string(),
            country: rep_get(rep, 6, 1).trim().to_string(),
        };
        let empty = [&a.line1, &a.city, &a.postal_code]
            .iter()
            .all(|s| s.is_empty());
        (!empty).then_some(a)
    });
    let mut contact_points = Vec::new();
    for (field, default_use) in [(13, None), (14, Some("WPN")), (40, None)] {
        for rep in pid.reps(field) {
            let Some(mut point) = contact_point(rep, default_use) else {
                continue;
            };
            if !contact_points
                .iter()
                .any(|p: &ContactPoint| p.value == point.value && p.system == point.system)
            {
                point.rank = contact_points.len() as i64 + 1;
                contact_points.push(point);
            }
        }
    }
    Ok(PatientRecord {
        identifiers,
        family_name: opt(pid.get(5, 1, 1, 1)),
        given_name: opt(pid.comp(5, 2)),
        birth_date,
        sex: opt(pid.comp(8, 1)),
        language: opt(pid.comp(15, 1)),
        address,
        contact_points,
    })
}

/// One XTN: an email (XTN-4, or equipment Internet / use NET) or a phone (XTN-1, else rebuilt
/// from country XTN-5, area XTN-6 and local number XTN-7).
fn contact_point(rep: &Repetition, default_use: Option<&str>) -> Option<ContactPoint> {
    let use_code = opt(rep_get(rep, 2, 1)).or(default_use.map(str::to_string));
    let equipment = rep_get(rep, 3, 1).trim();
    let email = rep_get(rep, 4, 1).trim();
    let legacy = rep_get(rep, 1, 1).trim();
    let is_internet = equipment.eq_ignore_ascii_case("Internet")
        || equipment.eq_ignore_ascii_case("X.400")
        || use_code.as_deref() == Some("NET");
    if is_internet || email.contains('@') {
        let address = if email.contains('@') { email } else { legacy };
        return address.contains('@').then(|| ContactPoint {
            system: "email".into(),
            value: address.to_string(),
            use_code,
            rank: 0,
        });
    }
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    let rebuilt = format!(
        "{}{}",
        digits(rep_get(rep, 6, 1)),
        digits(rep_get(rep, 7, 1))
    );
    let number = if !rebuilt.is_empty() {
        match digits(rep_get(rep, 5, 1)) {
            cc if !cc.is_empty() => format!("+{cc}{rebuilt}"),
            _ => rebuilt,
        }
    } else {
        legacy.to_string()
    };
    if digits(&number).len() < 4 {
        return None;
    }
    let system = match equipment {
        "CP" | "BP" => "sms",
        "FX" => "fax",
        _ => "phone",
    };
    Some(ContactPoint {
        system: system.into(),
        value: number,
        use_code,
        rank: 0,
    })
}

fn appointment(msg: &Message, trigger: &str, zone: Tz) -> Result<AppointmentRecord, MappingError> {
    let sch = msg
        .segment("SCH")
        .ok_or_else(|| bad("SCH", 1, "SCH segment is required"))?;
    let filler_id = opt(sch.comp(2, 1))
        .or_else(|| opt(sch.comp(1, 1)))
        .ok_or_else(|| {
            bad(
                "SCH",
                2,
                "no filler (SCH-2) or placer (SCH-1) appointment id",
            )
        })?;
    let tq1 = msg.segment("TQ1");
    let ais = msg.segment("AIS");
    let ts = |segment: &str,
              field: usize,
              text: &str|
     -> Result<Option<DateTime<FixedOffset>>, MappingError> {
        match opt(text) {
            None => Ok(None),
            Some(text) => parse_timestamp(&text, zone)
                .map(Some)
                .ok_or_else(|| malformed(segment, field, "not a valid timestamp")),
        }
    };
    let start = match (
        tq1.map(|t| ts("TQ1", 7, t.comp(7, 1)))
            .transpose()?
            .flatten(),
        ts("SCH", 11, sch.comp(11, 4))?,
        ais.map(|a| ts("AIS", 4, a.comp(4, 1)))
            .transpose()?
            .flatten(),
    ) {
        (Some(t), _, _) | (None, Some(t), _) | (None, None, Some(t)) => t,
        (None, None, None) => {
            return Err(bad(
                "SCH",
                11,
                "no appointment start in TQ1-7, SCH-11.4 or AIS-4",
            ));
        }
    };
    let tq1_end = tq1
        .map(|t| ts("TQ1", 8, t.comp(8, 1)))
        .transpose()?
        .flatten();
    let duration_minutes = tq1_end
        .map(|end| (end - start).num_minutes())
        .filter(|m| *m > 0)
        .or_else(|| ais.and_then(|a| minutes(a.comp(7, 1), a.comp(8, 1))))
        .or_else(|| minutes(sch.comp(9, 1), sch.comp(10, 1)));
    // The trigger, else the filler status (SCH-25, else AIS-10), HL7 table 0278.
    let filler_status = opt(sch.comp(25, 1)).or_else(|| ais.and_then(|a| opt(a.comp(10, 1))));
    let status = AppointmentStatus::from_siu(trigger, filler_status.as_deref());
    let coded =
        |seg: &Segment, field: usize| opt(seg.comp(field, 2)).or_else(|| opt(seg.comp(field, 1)));
    let ail = msg.segment("AIL");
    let provider = msg.segment("AIP");
    let provider_name = provider.and_then(|p| {
        let family = p.get(3, 1, 2, 1).trim();
        let given = p.comp(3, 3).trim();
        match (family.is_empty(), given.is_empty()) {
            (true, _) => None,
            (false, true) => Some(family.to_string()),
            (false, false) => Some(format!("{family}, {given}")),
        }
    });
    Ok(AppointmentRecord {
        filler_id,
        placer_id: opt(sch.comp(1, 1)),
        start,
        duration_minutes,
        status,
        appointment_type: coded(sch, 8).or_else(|| ais.and_then(|a| coded(a, 3))),
        reason: coded(sch, 7),
        location: ail.and_then(|l| opt(l.comp(3, 4)).or_else(|| opt(l.comp(3, 1)))),
        location_code: ail.and_then(|l| opt(l.comp(3, 1))),
        provider_id: provider.and_then(|p| opt(p.comp(3, 1))),
        provider_name,
    })
}

/// A duration and its units (min, h, s) as minutes; `None` when absent, not positive or too
/// large to count (a sender's number must not overflow our arithmetic).
fn minutes(value: &str, units: &str) -> Option<i64> {
    let value: i64 = value.trim().parse().ok()?;
    let minutes = match units.trim().to_ascii_lowercase().as_str() {
        "h" | "hr" | "hour" | "hours" => value.checked_mul(60)?,
        "s" | "sec" => value.checked_add(59)? / 60,
        _ => value,
    };
    (minutes > 0).then_some(minutes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzz-ish: mutated ADT and SIU messages (bytes flipped, delimiters and long digit runs
    /// inserted, cut short, segments repeated) never panic the parser or the mapping; then
    /// the one input we know panicked (in debug builds; wrapped silently in release): an
    /// SCH-9 duration in hours past what minutes can count.
    #[test]
    fn mutated_messages_never_panic() {
        let seeds: [&[u8]; 3] = [
            b"MSH|^~\\&|EHR|CLINIC|SB|SB|20240101120000-0500||SIU^S12|S1|P|2.5.1\rSCH|P1|F1|||||R^Reason|T^Type|30|h|^^30^20241201100000\rTQ1|1||||||20241201100000|20241201103000\rPID|1||MRN1^^^CLINIC^MR~X^^^SSA^SS||Doe^Jane^Q||19800101|F|||1 Main^^Town^ST^12345||^PRN^CP^^1^555^1234567~^NET^Internet^a@b.example|||||||||||||||||||||\rAIS|1||CODE^Visit|20241201100000|||45|min\rAIL|1||LOC^^^FAC^^^^^Room 1\rAIP|1||DR1^Who^Doctor\r",
            b"MSH|^~\\&|EHR|CLINIC|SB|SB|2024||ADT^A08|A1|P|2.3\rEVN|A08|2024\rPID|1||M\\T\\1^^^A^MR||D\\S\\E^J\\E\\||2001|M||||||||en|||||||||||||||||||\rPV1|1|O\r",
            b"MSH|^~\\&#|E|C|S|S|2024||ADT^A40|M1|P|2.8\rPID|1||NEW^^^A^MR||New^Pat\rMRG|OLD^^^A^MR~OLD2^^^B^MR\r",
        ];
        let pieces: [&[u8]; 8] = [
            b"|",
            b"^",
            b"~",
            b"\\",
            b"&",
            b"\r",
            b"99999999999999999999",
            b"\\X",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000u64 {
            let mut input = seeds[(round % 3) as usize].to_vec();
            for _ in 0..(1 + next() % 6) {
                if input.is_empty() {
                    break;
                }
                let at = (next() as usize) % input.len();
                match next() % 5 {
                    0 => input[at] = next() as u8,
                    1 => {
                        let piece = pieces[(next() % pieces.len() as u64) as usize];
                        input.splice(at..at, piece.iter().copied());
                    }
                    2 => input.truncate(at.max(1)),
                    3 => {
                        let end = (at + 1 + (next() as usize) % 40).min(input.len());
                        let copy = input[at..end].to_vec();
                        input.splice(at..at, copy);
                    }
                    _ => {
                        input.remove(at);
                    }
                }
            }
            if let Ok(message) = Message::parse(&input) {
                let _ = map_message(&message, Tz::America__Chicago);
            }
        }
        let huge = Message::parse(
            b"MSH|^~\\&|E|C|S|S|2024||SIU^S12|H1|P|2.5\rSCH||F1|||||||9223372036854775807|h|^^30^20241201100000\rPID|1||M^^^^MR",
        )
        .expect("parse");
        let Ok(Hl7Event::Appointment { appointment, .. }) = map_message(&huge, Tz::UTC) else {
            panic!("mapped");
        };
        assert_eq!(appointment.duration_minutes, None);
    }
}
