//! The sources intake reads today: inbound SMS (a provider's webhook, stored as received) and
//! a C-CDA document handed over whole (what Direct and fax will file their C-CDA attachments
//! through). Each says what its raw bytes mean ([`Source::parse`]) and what its sender's
//! address may decide.

use super::{DocumentMeta, Parsed, ParsedAttachment, Source};
use crate::inbound::InboundSms;
use crate::intake::matching::Identifier;

/// An inbound SMS: the body, and the media URLs the provider gave (not fetched). The sender's
/// number may decide the patient, and a text answers our last text to that number.
pub struct SmsSource;

impl Source for SmsSource {
    fn channel(&self) -> &'static str {
        "sms"
    }

    fn parse(&self, raw: &[u8]) -> Result<Parsed, String> {
        let sms: InboundSms =
            serde_json::from_slice(raw).map_err(|e| format!("not a stored SMS: {e}"))?;
        Ok(Parsed {
            body: sms.body,
            links: sms.media,
            ..Parsed::default()
        })
    }

    fn contact_decides(&self) -> bool {
        true
    }

    fn conversation_replies(&self) -> bool {
        true
    }
}

/// A C-CDA document as a whole item: its header names the patient (identifiers with their
/// OID, name, birth time, sex); the document itself is the attachment. The sender's address
/// only proposes candidates.
pub struct CdaSource;

impl Source for CdaSource {
    fn channel(&self) -> &'static str {
        "document"
    }

    fn parse(&self, raw: &[u8]) -> Result<Parsed, String> {
        let header = switchboard_docs::ccda::read_header(raw).map_err(|e| e.to_string())?;
        let patient = header.patient;
        let identifiers = patient
            .ids
            .into_iter()
            .filter_map(|id| {
                Some(Identifier {
                    authority: id.root,
                    id: id.extension.filter(|e| !e.trim().is_empty())?,
                })
            })
            .collect();
        let given = (!patient.given.is_empty()).then(|| patient.given.join(" "));
        Ok(Parsed {
            subject: header.title.clone(),
            body: header.title.unwrap_or_else(|| "Clinical document".into()),
            attachments: vec![ParsedAttachment {
                filename: Some("document.xml".into()),
                content_type: "application/xml".into(),
                bytes: raw.to_vec(),
            }],
            document: Some(DocumentMeta {
                identifiers,
                family: patient.family,
                given,
                birth_date: patient.birth_time,
                sex: patient.sex,
                type_code: header.type_code,
            }),
            ..Parsed::default()
        })
    }
}

/// The source that reads items of `channel`, for reprocessing a stored item.
pub fn source_for(channel: &str) -> Option<&'static dyn Source> {
    match channel {
        "sms" => Some(&SmsSource),
        "document" => Some(&CdaSource),
        _ => None,
    }
}
