//! A parsed HL7 v2 message, owned and decoded. hl7-parser does the structural parse (segments,
//! fields, repeats, components, subcomponents, delimiters from MSH-1/MSH-2); around it we
//! added what it lacks (see `escape.rs` and the notes below):
//! - input as bytes: a UTF-8 BOM is dropped, invalid UTF-8 is read as Latin-1 (MSH-18 is not
//!   consulted; 8859/1 is what non-UTF-8 feeds send in practice);
//! - segment ends CR, LF or CRLF are normalised to CR (hl7-parser silently parses an
//!   LF-separated message as one segment);
//! - the MSH header is checked before hl7-parser sees it (its MSH parser panics on input that
//!   ends right after `MSH`);
//! - values are decoded with our escape decoder, which is correct for non-ASCII text.

use crate::escape;

/// The five delimiters a message declares in MSH-1 and MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    pub field: char,
    pub component: char,
    pub repetition: char,
    pub escape: char,
    pub subcomponent: char,
}

impl Default for Delimiters {
    fn default() -> Self {
        Self {
            field: '|',
            component: '^',
            repetition: '~',
            escape: '\\',
            subcomponent: '&',
        }
    }
}

/// Why a byte string is not a usable HL7 v2 message.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("the message is empty")]
    Empty,
    #[error("the message does not start with an MSH segment")]
    NoMsh,
    #[error("MSH-1/MSH-2 do not declare five distinct delimiters")]
    BadDelimiters,
    #[error("unparsable message: {0}")]
    Syntax(String),
    #[error("MSH-{0} is required")]
    MissingHeader(usize),
    #[error("HL7 version {0:?} is not supported (2.3 to 2.8)")]
    BadVersion(String),
}

/// Subcomponents of one component, decoded.
pub type Component = Vec<String>;
/// Components of one repetition.
pub type Repetition = Vec<Component>;
/// Repetitions of one field.
pub type Field = Vec<Repetition>;

/// One segment: its name and fields (index 0 is field 1; for MSH, field 1 is the field
/// separator itself, as the standard counts).
#[derive(Debug, Clone)]
pub struct Segment {
    pub name: String,
    pub fields: Vec<Field>,
}

impl Segment {
    /// The value at field `f`, repetition `r`, component `c`, subcomponent `s` (all 1-based);
    /// "" when absent.
    pub fn get(&self, f: usize, r: usize, c: usize, s: usize) -> &str {
        self.fields
            .get(f.wrapping_sub(1))
            .and_then(|field| field.get(r.wrapping_sub(1)))
            .and_then(|rep| rep.get(c.wrapping_sub(1)))
            .and_then(|comp| comp.get(s.wrapping_sub(1)))
            .map_or("", String::as_str)
    }

    /// Component `c` of the first repetition of field `f`.
    pub fn comp(&self, f: usize, c: usize) -> &str {
        self.get(f, 1, c, 1)
    }

    /// All repetitions of field `f`.
    pub fn reps(&self, f: usize) -> &[Repetition] {
        self.fields
            .get(f.wrapping_sub(1))
            .map_or(&[], Vec::as_slice)
    }
}

/// Component `c`, subcomponent `s` of one repetition; "" when absent.
pub fn rep_get(rep: &Repetition, c: usize, s: usize) -> &str {
    rep.get(c.wrapping_sub(1))
        .and_then(|comp| comp.get(s.wrapping_sub(1)))
        .map_or("", String::as_str)
}

/// The header fields every message needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
    pub message_type: String,
    pub trigger: String,
    pub control_id: String,
    pub processing_id: String,
    pub version: String,
}

#[derive(Debug, Clone)]
pub struct Message {
    pub delimiters: Delimiters,
    pub header: Header,
    pub segments: Vec<Segment>,
}

impl Message {
    /// Parses raw bytes as received (one MLLP frame's payload).
    pub fn parse(raw: &[u8]) -> Result<Self, ParseError> {
        let text = normalize(raw);
        let text = text.trim_matches(|c: char| c == '\r' || c.is_whitespace());
        if text.is_empty() {
            return Err(ParseError::Empty);
        }
        if !text.starts_with("MSH") {
            return Err(ParseError::NoMsh);
        }
        let delimiters = read_delimiters(text)?;
        let text = drop_truncation_character(text, &delimiters);
        let text = text.as_str();
        let parsed =
            hl7_parser::Message::parse(text).map_err(|e| ParseError::Syntax(e.to_string()))?;
        let segments: Vec<Segment> = parsed
            .segments()
            .map(|segment| Segment {
                name: segment.name.to_string(),
                fields: segment
                    .fields()
                    .enumerate()
                    .map(|(i, field)| {
                        // MSH-1 and MSH-2 are delimiters, not data: keep them verbatim.
                        if segment.name == "MSH" && i < 2 {
                            return vec![vec![vec![field.raw_value().to_string()]]];
                        }
                        field
                            .repeats()
                            .map(|rep| {
                                rep.components()
                                    .map(|comp| {
                                        comp.subcomponents()
                                            .map(|sub| escape::decode(sub.raw_value(), &delimiters))
                                            .collect()
                                    })
                                    .collect()
                            })
                            .collect()
                    })
                    .collect(),
            })
            .collect();
        let msh = segments.first().ok_or(ParseError::NoMsh)?;
        let header = Header {
            sending_application: msh.comp(3, 1).to_string(),
            sending_facility: msh.comp(4, 1).to_string(),
            receiving_application: msh.comp(5, 1).to_string(),
            receiving_facility: msh.comp(6, 1).to_string(),
            message_type: msh.comp(9, 1).to_string(),
            trigger: msh.comp(9, 2).to_string(),
            control_id: msh.comp(10, 1).to_string(),
            processing_id: msh.comp(11, 1).to_string(),
            version: msh.comp(12, 1).to_string(),
        };
        Ok(Self {
            delimiters,
            header,
            segments,
        })
    }

    /// Checks what every message must have: a control id, a type and a supported version.
    pub fn validate_header(&self) -> Result<(), ParseError> {
        if self.header.control_id.is_empty() {
            return Err(ParseError::MissingHeader(10));
        }
        if self.header.message_type.is_empty() {
            return Err(ParseError::MissingHeader(9));
        }
        if !supported_version(&self.header.version) {
            return Err(ParseError::BadVersion(self.header.version.clone()));
        }
        Ok(())
    }

    /// The first segment with this name.
    pub fn segment(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.name == name)
    }

    /// Every segment with this name, in order.
    pub fn all(&self, name: &str) -> impl Iterator<Item = &Segment> {
        self.segments.iter().filter(move |s| s.name == name)
    }
}

/// 2.3 through 2.8, with their point releases (2.3.1, 2.5.1, 2.8.2, ...).
pub fn supported_version(version: &str) -> bool {
    let mut parts = version.split('.');
    matches!(
        (
            parts.next(),
            parts.next().and_then(|m| m.parse::<u32>().ok())
        ),
        (Some("2"), Some(3..=8))
    )
}

/// Bytes → text with CR segment ends.
fn normalize(raw: &[u8]) -> String {
    let raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
    let text = match std::str::from_utf8(raw) {
        Ok(text) => text.to_string(),
        Err(_) => raw.iter().map(|&b| char::from(b)).collect(),
    };
    // Blank lines are dropped: hl7-parser stops silently at the first empty segment.
    text.replace("\r\n", "\r")
        .replace('\n', "\r")
        .split('\r')
        .filter(|segment| !segment.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\r")
}

/// v2.7+ may declare a fifth encoding character in MSH-2 (truncation, usually `#`);
/// hl7-parser then shifts every MSH field by one, so it is removed before parsing (we never
/// truncate, and a `#` in data stays literal).
fn drop_truncation_character(text: &str, d: &Delimiters) -> String {
    let after_msh1 = &text[3 + d.field.len_utf8()..];
    let msh2_len = after_msh1.find(d.field).unwrap_or(after_msh1.len());
    let msh2 = &after_msh1[..msh2_len];
    if msh2.chars().count() == 5 {
        let four: String = msh2.chars().take(4).collect();
        format!("MSH{}{four}{}", d.field, &after_msh1[msh2_len..])
    } else {
        text.to_string()
    }
}

/// MSH-1 and MSH-2, checked before hl7-parser sees them.
fn read_delimiters(text: &str) -> Result<Delimiters, ParseError> {
    let chars: Vec<char> = text.chars().skip(3).take(5).collect();
    let [field, component, repetition, escape, subcomponent] = chars[..] else {
        return Err(ParseError::BadDelimiters);
    };
    let all = [field, component, repetition, escape, subcomponent];
    let distinct = all.iter().enumerate().all(|(i, c)| !all[..i].contains(c));
    if !distinct || all.iter().any(|c| c.is_alphanumeric() || c.is_whitespace()) {
        return Err(ParseError::BadDelimiters);
    }
    Ok(Delimiters {
        field,
        component,
        repetition,
        escape,
        subcomponent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lf_messages_with_bom_and_reads_the_header() {
        let raw = "\u{feff}MSH|^~\\&|APP|FAC|RAPP|RFAC|20240101||ADT^A04|C1|P|2.5.1\nPID|1||MRN1^^^HOSP^MR~X2^^^SSA^SS||DOE\\T\\SMITH^JANE\n";
        let msg = Message::parse(raw.as_bytes()).expect("parse");
        assert_eq!(msg.header.message_type, "ADT");
        assert_eq!(msg.header.trigger, "A04");
        assert_eq!(msg.header.control_id, "C1");
        assert_eq!(msg.header.version, "2.5.1");
        msg.validate_header().expect("valid");
        let pid = msg.segment("PID").expect("PID");
        assert_eq!(pid.get(3, 2, 4, 1), "SSA");
        assert_eq!(pid.comp(5, 1), "DOE&SMITH");
        assert_eq!(pid.reps(3).len(), 2);
        let blank = Message::parse(
            b"MSH|^~\\&|A|B|C|D|2024||ADT^A04|1|P|2.5\r\n\r\nEVN|A04\n\nPID|1||X^^^^MR",
        )
        .expect("parse");
        assert!(
            blank.segment("PID").is_some(),
            "segments after blank lines are kept"
        );
    }

    #[test]
    fn five_encoding_characters_keep_fields_in_place() {
        let msg = Message::parse(b"MSH|^~\\&#|APP|FAC|R|RF|2024||ADT^A04|C5|P|2.8\rPID|1||X^^^^MR")
            .expect("parse");
        assert_eq!(msg.header.sending_application, "APP");
        assert_eq!(msg.header.control_id, "C5");
        assert_eq!(msg.header.version, "2.8");
    }

    #[test]
    fn refuses_garbage_and_unsupported_versions() {
        assert_eq!(Message::parse(b"").err(), Some(ParseError::Empty));
        assert_eq!(Message::parse(b"PID|1").err(), Some(ParseError::NoMsh));
        assert_eq!(
            Message::parse(b"MSH").err(),
            Some(ParseError::BadDelimiters)
        );
        assert_eq!(
            Message::parse(b"MSH|^^\\&").err(),
            Some(ParseError::BadDelimiters)
        );
        let old = Message::parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A04|1|P|2.1").expect("parse");
        assert_eq!(
            old.validate_header(),
            Err(ParseError::BadVersion("2.1".into()))
        );
        let latin1 =
            Message::parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A04|1|P|2.3\rPID|1||1||M\xDCLLER")
                .expect("parse");
        assert_eq!(latin1.segment("PID").expect("pid").comp(5, 1), "MÜLLER");
    }
}
