//! Acknowledgements: MSA-1 AA (applied), AE (known type, bad content — kept for
//! reprocessing) or AR (rejected: unknown type, unsupported version or processing id,
//! unparsable, oversize). MSA-2 echoes MSH-10. AE/AR carry an ERR segment naming the
//! segment and field (v2.5+ layout: ERR-2 location, ERR-3 HL7 table 0357 code, ERR-4
//! severity, ERR-8 text; before 2.5: ERR-1).

use crate::escape::encode;
use crate::message::{Delimiters, Header};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    Accept,
    Error,
    Reject,
}

impl AckCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "AA",
            Self::Error => "AE",
            Self::Reject => "AR",
        }
    }
}

/// An error to report in ERR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckError {
    pub segment: String,
    pub field: usize,
    /// HL7 table 0357: 100 segment sequence, 101 required field missing, 102 data type error,
    /// 200 unsupported message type, 202 unsupported processing id, 203 unsupported version,
    /// 207 application internal error.
    pub code: u16,
    pub text: String,
}

fn code_text(code: u16) -> &'static str {
    match code {
        100 => "Segment sequence error",
        101 => "Required field missing",
        102 => "Data type error",
        200 => "Unsupported message type",
        201 => "Unsupported event code",
        202 => "Unsupported processing id",
        203 => "Unsupported version id",
        _ => "Application internal error",
    }
}

/// Builds the ACK for a message whose header could be read (or `None`: default header).
pub fn build_ack(
    original: Option<&Header>,
    code: AckCode,
    control_id: &str,
    timestamp: &str,
    error: Option<&AckError>,
) -> String {
    let d = Delimiters::default();
    let empty = Header::default();
    let h = original.unwrap_or(&empty);
    let version = if h.version.is_empty() {
        "2.5.1"
    } else {
        h.version.as_str()
    };
    let processing = if h.processing_id.is_empty() {
        "P"
    } else {
        h.processing_id.as_str()
    };
    let e = |s: &str| encode(s, &d);
    let mut ack = format!(
        "MSH|^~\\&|{}|{}|{}|{}|{}||ACK^{}^ACK|{}|{}|{}\rMSA|{}|{}",
        e(&h.receiving_application),
        e(&h.receiving_facility),
        e(&h.sending_application),
        e(&h.sending_facility),
        timestamp,
        e(&h.trigger),
        e(control_id),
        e(processing),
        e(version),
        code.as_str(),
        e(&h.control_id),
    );
    if let Some(err) = error {
        let old_style = matches!(version.get(..3), Some("2.3" | "2.4"));
        let text = e(&err.text);
        if old_style {
            ack.push_str(&format!(
                "|{text}\rERR|{}^1^{}^^{}&{}&HL70357",
                e(&err.segment),
                err.field,
                err.code,
                code_text(err.code)
            ));
        } else {
            ack.push_str(&format!(
                "\rERR||{}^1^{}|{}^{}^HL70357|E||||{text}",
                e(&err.segment),
                err.field,
                err.code,
                code_text(err.code)
            ));
        }
    }
    ack.push('\r');
    ack
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    #[test]
    fn acks_parse_back_and_echo_the_control_id() {
        let original = Message::parse(b"MSH|^~\\&|SND|SF|RCV|RF|2024||SIU^S12|ABC-1|P|2.8\rSCH|1")
            .expect("parse");
        let err = AckError {
            segment: "SCH".into(),
            field: 11,
            code: 101,
            text: "no start | here".into(),
        };
        let ack = build_ack(
            Some(&original.header),
            AckCode::Error,
            "ACK1",
            "20240101120000",
            Some(&err),
        );
        let parsed = Message::parse(ack.as_bytes()).expect("ack parses");
        assert_eq!(parsed.header.sending_application, "RCV");
        assert_eq!(parsed.header.message_type, "ACK");
        let msa = parsed.segment("MSA").expect("MSA");
        assert_eq!(msa.comp(1, 1), "AE");
        assert_eq!(msa.comp(2, 1), "ABC-1");
        let err = parsed.segment("ERR").expect("ERR");
        assert_eq!(err.comp(2, 1), "SCH");
        assert_eq!(err.comp(2, 3), "11");
        assert_eq!(err.comp(3, 1), "101");
        assert_eq!(err.comp(8, 1), "no start | here");
        let nak = build_ack(None, AckCode::Reject, "ACK2", "20240101120000", None);
        assert!(Message::parse(nak.as_bytes()).is_ok());
    }

    /// Found while writing `fuzz/hl7`: an echoed field carrying the MLLP end byte 0x1C (here
    /// MSH-10 and MSH-12) put the end marker 0x1C 0x0D inside the ACK, so the sender's MLLP
    /// reader cut the ACK short. Control characters now go out as hex escapes.
    #[test]
    fn mllp_bytes_in_echoed_fields_stay_out_of_the_ack() {
        let raw = b"MSH|^~\\&|SND\x0b|SF|RCV|RF|2024||ADT^A08|C1\x1c|P|2.5.1\x1c\rPID|1";
        let original = Message::parse(raw).expect("parse");
        assert_eq!(original.header.control_id, "C1\u{1c}");
        let ack = build_ack(
            Some(&original.header),
            AckCode::Accept,
            "ACK1",
            "20240101120000",
            None,
        );
        assert!(!ack.bytes().any(|b| b == 0x1c || b == 0x0b), "{ack:?}");
        let parsed = Message::parse(ack.as_bytes()).expect("ack parses");
        assert_eq!(parsed.segment("MSA").expect("MSA").comp(2, 1), "C1\u{1c}");
    }
}
