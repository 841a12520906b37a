//! The sources intake reads today: inbound SMS (a provider's webhook, stored as received), a
//! C-CDA document handed over whole, and an accepted Direct message (its opened inner RFC 5322
//! message: body, attachments, XDM packages and the C-CDA that names the patient). Each says
//! what its raw bytes mean ([`Source::parse`]) and what its sender's address may decide.

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
        let mut warnings = Vec::new();
        let document = document_meta(&header, &mut warnings, "document");
        Ok(Parsed {
            subject: header.title.clone(),
            body: header.title.unwrap_or_else(|| "Clinical document".into()),
            attachments: vec![ParsedAttachment {
                filename: Some("document.xml".into()),
                content_type: "application/xml".into(),
                bytes: raw.to_vec(),
            }],
            document,
            warnings,
            ..Parsed::default()
        })
    }
}

/// What a C-CDA header says of its patient, for matching: every `patientRole/id` with an
/// extension (an SSN among them: it can match, and `Identifier`'s `Debug` hides it), the
/// preferred name (the first legal one), birth time and sex. `None`, with a warning, for a
/// document about several patients (`recordTarget` twice): unmatched beats a guess.
fn document_meta(
    header: &switchboard_docs::ccda::Header,
    warnings: &mut Vec<String>,
    what: &str,
) -> Option<DocumentMeta> {
    if header.record_targets > 1 {
        warnings.push(format!(
            "ccda: {what} names {} patients; not used for matching",
            header.record_targets
        ));
        return None;
    }
    let patient = &header.patient;
    let identifiers = patient
        .ids
        .iter()
        .filter_map(|id| {
            Some(Identifier {
                authority: id.root.trim().to_string(),
                id: id
                    .extension
                    .as_deref()
                    .map(str::trim)
                    .filter(|e| !e.is_empty())?
                    .to_string(),
            })
        })
        .collect();
    let name = patient.preferred_name();
    Some(DocumentMeta {
        identifiers,
        family: name.and_then(|n| n.family_name()),
        given: name.and_then(|n| n.given_names()),
        birth_date: patient.birth_time.clone(),
        sex: patient.sex.clone(),
        type_code: header.code.as_ref().and_then(|c| c.code.clone()),
    })
}

/// Largest body text kept from a Direct message (bytes, UTF-8); a longer one is cut at a
/// character boundary, with a warning, and the whole text kept as the attachment `body.txt`.
pub const DIRECT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most attachments filed from one Direct message (MIME parts plus XDM documents); the rest
/// are left out with a warning (the message itself stays stored sealed, as received).
pub const DIRECT_MAX_ATTACHMENTS: usize = 1000;
/// How far into an XML attachment `ClinicalDocument` is looked for, to tell a C-CDA that
/// does not read (a warning) from XML that is not one.
const CDA_SNIFF_BYTES: usize = 64 * 1024;

/// An accepted Direct message: `raw` is the inner RFC 5322 message after decryption and
/// signature verification (`switchboard_direct::Opened::inner`), never the S/MIME envelope.
///
/// - **subject**, **in_reply_to** (`In-Reply-To`, then `References`);
/// - **body**: the text/plain body parts; with only HTML, a plain-text rendering of it (tags,
///   scripts and styles dropped) and the HTML itself kept as the attachment `body.html`; an
///   HTML alternative to a text part is not filed twice;
/// - **attachments**: every other MIME part, as declared (file name, type essence; the bytes
///   transfer-decoded, never charset-converted); an XDM package (a ZIP holding
///   `IHE_XDM/…/METADATA.XML`, by content) is kept whole **and** its documents are added;
/// - **document**: the first C-CDA found (an attachment or an XDM document) names the patient;
///   without one, the first XDM document's `sourcePatientId`/`sourcePatientInfo` do;
/// - **warnings**: an XDM hash or size mismatch, an unreadable XDM or C-CDA (the item is
///   still filed), a cut body — codes and positions only.
///
/// Only an input mail-parser cannot read at all is an error. The sender's address only
/// proposes candidates.
pub struct DirectSource;

impl Source for DirectSource {
    fn channel(&self) -> &'static str {
        "direct"
    }

    fn parse(&self, raw: &[u8]) -> Result<Parsed, String> {
        let message = switchboard_mail::parse_message(raw)
            .ok_or_else(|| "not an RFC 5322 message".to_string())?;
        let mut parsed = Parsed {
            subject: message.subject().map(|s| s.trim().to_string()),
            in_reply_to: references(&message),
            ..Parsed::default()
        };
        let (body, html, attachments) = mime_parts(&message, &mut parsed.warnings);
        parsed.body = match (body, html) {
            (Some(text), _) => text,
            (None, Some(html)) => {
                let text = html_text(&html);
                parsed.attachments.push(ParsedAttachment {
                    filename: Some("body.html".into()),
                    content_type: "text/html".into(),
                    bytes: html.into_bytes(),
                });
                text
            }
            (None, None) => String::new(),
        };
        if parsed.body.len() > DIRECT_MAX_BODY_BYTES {
            let mut cut = DIRECT_MAX_BODY_BYTES;
            while !parsed.body.is_char_boundary(cut) {
                cut -= 1;
            }
            let whole = std::mem::take(&mut parsed.body);
            parsed.body = whole[..cut].to_string();
            parsed.warnings.push(format!(
                "body: {} bytes cut to {cut}; the whole text is the attachment body.txt",
                whole.len()
            ));
            parsed.attachments.push(ParsedAttachment {
                filename: Some("body.txt".into()),
                content_type: "text/plain".into(),
                bytes: whole.into_bytes(),
            });
        }
        let mut patient: Option<DocumentMeta> = None;
        let mut xdm_fallback: Option<DocumentMeta> = None;
        for (position, attachment) in attachments.into_iter().enumerate() {
            let number = position + 1;
            let package = if switchboard_docs::xdm::is_xdm(&attachment.bytes) {
                match switchboard_docs::xdm::read(
                    &attachment.bytes,
                    switchboard_docs::xdm::Limits::default(),
                ) {
                    Ok(package) => Some(package),
                    Err(e) => {
                        parsed.warnings.push(format!(
                            "xdm: attachment {number} unreadable ({})",
                            kind(&e)
                        ));
                        None
                    }
                }
            } else {
                None
            };
            if package.is_none() && patient.is_none() {
                patient = ccda_meta(&attachment.bytes, &mut parsed.warnings, || {
                    format!("attachment {number}")
                });
            }
            parsed.attachments.push(attachment);
            let Some(package) = package else {
                continue;
            };
            parsed
                .warnings
                .extend(package.warnings.iter().map(ToString::to_string));
            for document in package.documents {
                if patient.is_none() {
                    patient = ccda_meta(&document.bytes, &mut parsed.warnings, || {
                        format!("xdm document {}", document.index)
                    })
                    .map(|mut meta| {
                        // The package's ids for the same document: the same patient, or a
                        // conflict matching turns into "unmatched".
                        add_identifiers(&mut meta, &xdm_identifiers(&document));
                        meta
                    });
                }
                if xdm_fallback.is_none() {
                    xdm_fallback = Some(xdm_meta(&document));
                }
                parsed.attachments.push(ParsedAttachment {
                    filename: Some(document.file_name),
                    content_type: document
                        .mime_type
                        .unwrap_or_else(|| "application/octet-stream".into()),
                    bytes: document.bytes,
                });
            }
        }
        if parsed.attachments.len() > DIRECT_MAX_ATTACHMENTS {
            parsed.warnings.push(format!(
                "mime: {} attachments, the first {DIRECT_MAX_ATTACHMENTS} filed",
                parsed.attachments.len()
            ));
            parsed.attachments.truncate(DIRECT_MAX_ATTACHMENTS);
        }
        parsed.document = patient.or(xdm_fallback);
        Ok(parsed)
    }
}

/// `In-Reply-To`, then `References`, each id once.
fn references(message: &mail_parser::Message<'_>) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for value in [message.in_reply_to(), message.references()] {
        for id in value.as_text_list().unwrap_or_default() {
            let id = id.trim().to_string();
            if !id.is_empty() && !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids
}

/// The body text, the HTML body when there is no text one, and every other part as an
/// attachment.
fn mime_parts(
    message: &mail_parser::Message<'_>,
    warnings: &mut Vec<String>,
) -> (Option<String>, Option<String>, Vec<ParsedAttachment>) {
    use mail_parser::{MimeHeaders, PartType};

    // Each part's parent multipart, to tell an HTML alternative from HTML content.
    let mut parent: Vec<Option<usize>> = vec![None; message.parts.len()];
    for (index, part) in message.parts.iter().enumerate() {
        if let PartType::Multipart(children) = &part.body {
            for &child in children {
                if let Some(slot) = usize::try_from(child).ok().and_then(|c| parent.get_mut(c)) {
                    *slot = Some(index);
                }
            }
        }
    }
    let is_body = |index: usize| {
        u32::try_from(index)
            .is_ok_and(|id| message.text_body.contains(&id) || message.html_body.contains(&id))
    };
    let is_alternative = |index: usize| {
        message.parts.get(index).is_some_and(|p| {
            p.content_type().is_some_and(|ct| {
                ct.ctype().eq_ignore_ascii_case("multipart")
                    && ct
                        .subtype()
                        .is_some_and(|s| s.eq_ignore_ascii_case("alternative"))
            })
        })
    };
    let text_parts: Vec<usize> = (0..message.parts.len())
        .filter(|&i| is_body(i) && matches!(message.parts[i].body, PartType::Text(_)))
        .collect();
    let mut texts: Vec<&str> = Vec::new();
    let mut htmls: Vec<&str> = Vec::new();
    let mut attachments = Vec::new();
    for (index, part) in message.parts.iter().enumerate() {
        if part.is_encoding_problem {
            warnings.push(format!(
                "mime: part {index} could not be decoded; kept as is"
            ));
        }
        match &part.body {
            PartType::Multipart(_) => {}
            PartType::Text(text) if text_parts.contains(&index) => texts.push(text),
            PartType::Html(html) if is_body(index) => {
                let alternative_to_text = parent[index].is_some_and(|p| {
                    is_alternative(p) && text_parts.iter().any(|&t| parent[t] == Some(p))
                });
                if !alternative_to_text {
                    htmls.push(html);
                }
            }
            _ => attachments.push(attachment(message, part)),
        }
    }
    let body = (!texts.is_empty()).then(|| {
        texts
            .iter()
            .map(|t| t.trim_end())
            .collect::<Vec<_>>()
            .join("\n\n")
    });
    let mut htmls = htmls.into_iter();
    // With a text body, HTML content parts are attachments of their own.
    let html = match body {
        Some(_) => None,
        None => htmls.next().map(str::to_string),
    };
    let first = if body.is_some() { 1 } else { 2 };
    for (n, extra) in htmls.enumerate() {
        attachments.push(ParsedAttachment {
            filename: Some(if n + first == 1 {
                "body.html".into()
            } else {
                format!("body-{}.html", n + first)
            }),
            content_type: "text/html".into(),
            bytes: extra.as_bytes().to_vec(),
        });
    }
    (body, html, attachments)
}

/// A MIME part as an attachment: its declared name and type (essence), its bytes
/// transfer-decoded only (a text part's charset is not converted: an XML document keeps the
/// encoding its declaration names).
fn attachment(
    message: &mail_parser::Message<'_>,
    part: &mail_parser::MessagePart<'_>,
) -> ParsedAttachment {
    use mail_parser::{Encoding, MimeHeaders, PartType};

    let content_type = match part.content_type() {
        Some(ct) => crate::attachments::essence(&format!(
            "{}/{}",
            ct.ctype(),
            ct.subtype().unwrap_or("octet-stream")
        )),
        None if part.is_message() => "message/rfc822".into(),
        None => "text/plain".into(),
    };
    let bytes = match &part.body {
        PartType::Text(_) | PartType::Html(_) => {
            let raw = message.raw_message();
            let (start, end) = (
                part.raw_body_offset() as usize,
                part.raw_end_offset() as usize,
            );
            match raw.get(start..end) {
                Some(encoded) if !part.is_encoding_problem => match part.encoding {
                    Encoding::Base64 => switchboard_mail::mime::base64_decode(encoded)
                        .unwrap_or_else(|| part.contents().to_vec()),
                    Encoding::QuotedPrintable => switchboard_mail::mime::qp_decode(encoded),
                    Encoding::None => encoded.to_vec(),
                },
                _ => part.contents().to_vec(),
            }
        }
        _ => part.contents().to_vec(),
    };
    ParsedAttachment {
        filename: part
            .attachment_name()
            .map(str::to_string)
            .or_else(|| part.is_message().then(|| "message.eml".to_string())),
        content_type,
        bytes,
    }
}

/// A plain-text rendering of an HTML body (mail-parser's converter; a panic in it counts as
/// "no rendering" and a crude tag strip is used instead).
fn html_text(html: &str) -> String {
    std::panic::catch_unwind(|| mail_parser::decoders::html::html_to_text(html)).unwrap_or_else(
        |_| {
            let mut out = String::with_capacity(html.len());
            let mut in_tag = false;
            for c in html.chars() {
                match c {
                    '<' => in_tag = true,
                    '>' => in_tag = false,
                    c if !in_tag => out.push(c),
                    _ => {}
                }
            }
            out
        },
    )
}

/// The patient of a C-CDA in `bytes`; `None` for what is not one. A document that looks like
/// a C-CDA but does not read (a DOCTYPE, malformed XML) is a warning.
fn ccda_meta(
    bytes: &[u8],
    warnings: &mut Vec<String>,
    what: impl Fn() -> String,
) -> Option<DocumentMeta> {
    use switchboard_docs::ccda;

    if !ccda::is_ccda(bytes) {
        let head = &bytes[..bytes.len().min(CDA_SNIFF_BYTES)];
        if head.windows(16).any(|w| w == b"ClinicalDocument") {
            warnings.push(format!("ccda: {} unreadable", what()));
        }
        return None;
    }
    match ccda::read_header(bytes) {
        Ok(header) => document_meta(&header, warnings, &what()),
        Err(e) => {
            warnings.push(format!("ccda: {} unreadable ({})", what(), kind(&e)));
            None
        }
    }
}

/// An error's kind, without the detail (which may quote the document).
fn kind(error: &switchboard_docs::DocumentError) -> &'static str {
    use switchboard_docs::DocumentError;
    match error {
        DocumentError::NotA(_) => "not a package",
        DocumentError::TooLarge(_) => "too large",
        DocumentError::Xml(_) => "XML",
        DocumentError::Zip(_) => "unsafe or malformed ZIP",
        DocumentError::CompressionRatio(_) => "compression ratio",
    }
}

/// The identifiers an XDM document entry carries: `sourcePatientId`, the entry's
/// `patientId` and `sourcePatientInfo`'s PID-3 — those with an authority.
fn xdm_identifiers(document: &switchboard_docs::xdm::Document) -> Vec<Identifier> {
    let mut ids = Vec::new();
    let all = document
        .source_patient_id
        .iter()
        .chain(document.patient_id.iter())
        .chain(document.patient_info.ids.iter());
    for id in all {
        if let Some(authority) = id
            .authority
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            let identifier = Identifier {
                authority: authority.to_string(),
                id: id.id.trim().to_string(),
            };
            if !identifier.id.is_empty() && !ids.contains(&identifier) {
                ids.push(identifier);
            }
        }
    }
    ids
}

fn add_identifiers(meta: &mut DocumentMeta, more: &[Identifier]) {
    for identifier in more {
        if !meta.identifiers.contains(identifier) {
            meta.identifiers.push(identifier.clone());
        }
    }
}

/// What an XDM document entry says of its patient, when no C-CDA does.
fn xdm_meta(document: &switchboard_docs::xdm::Document) -> DocumentMeta {
    let info = &document.patient_info;
    DocumentMeta {
        identifiers: xdm_identifiers(document),
        family: info.family.clone(),
        given: info.given.clone(),
        birth_date: info.birth_date.clone(),
        sex: info.sex.clone(),
        type_code: document.type_code.clone(),
    }
}

/// The source that reads items of `channel`, for reprocessing a stored item.
pub fn source_for(channel: &str) -> Option<&'static dyn Source> {
    match channel {
        "sms" => Some(&SmsSource),
        "document" => Some(&CdaSource),
        "direct" => Some(&DirectSource),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    fn data(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn b64(bytes: &[u8]) -> String {
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        let lines: Vec<&str> = text
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        lines.join("\r\n")
    }

    const HEAD: &str = "From: referrals@direct.sender.example\r\nTo: intake@direct.north.example\r\n\
        Subject: Referral for review\r\nMessage-ID: <m1@direct.sender.example>\r\n\
        Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n";

    /// A multipart/mixed message: a text part, then each `(content type, file name, bytes)`
    /// base64-encoded.
    fn mixed(text: &str, files: &[(&str, &str, &[u8])]) -> Vec<u8> {
        let mut out = format!(
            "{HEAD}Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
        );
        for (content_type, name, bytes) in files {
            out.push_str(&format!(
                "--b1\r\nContent-Type: {content_type}; name=\"{name}\"\r\n\
                 Content-Disposition: attachment; filename=\"{name}\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
                b64(bytes)
            ));
        }
        out.push_str("--b1--\r\n");
        out.into_bytes()
    }

    fn parse(raw: &[u8]) -> Parsed {
        DirectSource.parse(raw).expect("parses")
    }

    #[test]
    fn direct_is_a_registered_source() {
        assert_eq!(DirectSource.channel(), "direct");
        assert_eq!(source_for("direct").map(|s| s.channel()), Some("direct"));
        assert!(!DirectSource.contact_decides());
    }

    #[test]
    fn a_text_message_reads_subject_body_and_references() {
        let raw = format!(
            "{HEAD}In-Reply-To: <r01abc@gw.north.example>\r\n\
             References: <first@x.example> <r01abc@gw.north.example>\r\n\
             Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
             Please see Mrs. Jones on Monday. Caf=E9.\r\n"
        );
        let parsed = parse(raw.as_bytes());
        assert_eq!(parsed.subject.as_deref(), Some("Referral for review"));
        assert_eq!(
            parsed.body.trim_end(),
            "Please see Mrs. Jones on Monday. Café."
        );
        assert_eq!(
            parsed.in_reply_to,
            ["r01abc@gw.north.example", "first@x.example"]
        );
        assert!(parsed.attachments.is_empty());
        assert_eq!(parsed.document, None);
        assert_eq!(parsed.warnings, Vec::<String>::new());
    }

    #[test]
    fn an_html_only_message_is_rendered_and_kept() {
        let html = "<html><head><style>p{color:red}</style></head><body><p>Hello <b>Dr.</b> Smith</p>\
                    <script>alert(1)</script></body></html>";
        let raw = format!("{HEAD}Content-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n");
        let parsed = parse(raw.as_bytes());
        assert!(parsed.body.contains("Hello Dr. Smith"), "{:?}", parsed.body);
        for gone in ["<", "color", "alert"] {
            assert!(!parsed.body.contains(gone), "{:?}", parsed.body);
        }
        assert_eq!(parsed.attachments.len(), 1);
        let kept = &parsed.attachments[0];
        assert_eq!(kept.filename.as_deref(), Some("body.html"));
        assert_eq!(kept.content_type, "text/html");
        assert!(String::from_utf8_lossy(&kept.bytes).contains("<b>Dr.</b>"));
    }

    #[test]
    fn an_html_alternative_is_not_filed_twice_but_html_content_is() {
        let raw = format!(
            "{HEAD}Content-Type: multipart/alternative; boundary=\"a\"\r\n\r\n\
             --a\r\nContent-Type: text/plain\r\n\r\nHello\r\n\
             --a\r\nContent-Type: text/html\r\n\r\n<p>Hello</p>\r\n--a--\r\n"
        );
        let parsed = parse(raw.as_bytes());
        assert_eq!(parsed.body, "Hello");
        assert!(parsed.attachments.is_empty(), "{:?}", parsed.attachments);
        // Text, then an HTML part that is not an alternative of it: both kept.
        let raw = format!(
            "{HEAD}Content-Type: multipart/mixed; boundary=\"m\"\r\n\r\n\
             --m\r\nContent-Type: text/plain\r\n\r\nSee below\r\n\
             --m\r\nContent-Type: text/html\r\n\r\n<p>Discharge table</p>\r\n--m--\r\n"
        );
        let parsed = parse(raw.as_bytes());
        assert_eq!(parsed.body, "See below");
        assert_eq!(parsed.attachments.len(), 1, "{:?}", parsed.attachments);
        assert_eq!(parsed.attachments[0].content_type, "text/html");
    }

    #[test]
    fn a_ccda_attachment_names_the_patient_and_keeps_its_bytes() {
        let ccd = data("ccda/CCD-2.xml");
        let pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n";
        let raw = mixed(
            "Summary attached.",
            &[
                ("application/xml", "summary.xml", &ccd),
                ("application/pdf", "letter.pdf", pdf),
            ],
        );
        let parsed = parse(&raw);
        assert_eq!(parsed.body, "Summary attached.");
        assert_eq!(parsed.attachments.len(), 2);
        assert_eq!(
            parsed.attachments[0].filename.as_deref(),
            Some("summary.xml")
        );
        assert_eq!(parsed.attachments[0].content_type, "application/xml");
        assert_eq!(parsed.attachments[0].bytes, ccd);
        assert_eq!(parsed.attachments[1].content_type, "application/pdf");
        assert_eq!(parsed.attachments[1].bytes, pdf);
        let document = parsed.document.clone().expect("document");
        assert_eq!(
            document.identifiers,
            [
                Identifier {
                    authority: "1.3.6.1.4.1.16517.1".into(),
                    id: "98765432".into()
                },
                Identifier {
                    authority: "2.16.840.1.113883.4.1".into(),
                    id: "12345679".into()
                },
            ]
        );
        assert_eq!(document.family.as_deref(), Some("Jones"));
        assert_eq!(document.given.as_deref(), Some("Isabella"));
        assert_eq!(document.birth_date.as_deref(), Some("19501219"));
        assert_eq!(document.sex.as_deref(), Some("F"));
        assert_eq!(document.type_code.as_deref(), Some("34133-9"));
        // The SSN matches, but nothing shows it.
        let shown = format!("{parsed:?}");
        assert!(!shown.contains("12345679"), "SSN in Debug");
        assert!(parsed.warnings.iter().all(|w| !w.contains("12345679")));
    }

    #[test]
    fn a_text_xml_ccda_keeps_its_bytes_and_encoding() {
        // Declared Latin-1 in both MIME and XML: filed as sent, not converted to UTF-8.
        let ccd = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><title>R\xe9sum\xe9</title></ClinicalDocument>";
        let mut raw = format!(
            "{HEAD}Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
             Content-Type: text/plain\r\n\r\nsee attached\r\n--b1\r\n\
             Content-Type: text/xml; charset=iso-8859-1; name=\"cda.xml\"\r\n\
             Content-Disposition: attachment; filename=\"cda.xml\"\r\n\
             Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        )
        .into_bytes();
        raw.extend_from_slice(&qp(ccd));
        raw.extend_from_slice(b"\r\n--b1--\r\n");
        let parsed = parse(&raw);
        assert_eq!(parsed.attachments.len(), 1);
        assert_eq!(parsed.attachments[0].content_type, "text/xml");
        assert_eq!(parsed.attachments[0].bytes, ccd);
        // Our reader takes UTF-8 only: a warning, still filed.
        assert_eq!(parsed.warnings, ["ccda: attachment 1 unreadable"]);
        assert_eq!(parsed.document, None);
    }

    /// Quoted-printable, every byte outside printable ASCII (and `=`) escaped.
    fn qp(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut line = 0;
        for &b in bytes {
            let piece = if (33..=126).contains(&b) && b != b'=' || b == b' ' {
                vec![b]
            } else {
                format!("={b:02X}").into_bytes()
            };
            if line + piece.len() > 72 {
                out.extend_from_slice(b"=\r\n");
                line = 0;
            }
            line += piece.len();
            out.extend_from_slice(&piece);
        }
        out
    }

    fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        use std::io::Write;
        let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, content) in files {
            out.start_file(*name, options).expect("start");
            out.write_all(content).expect("write");
        }
        out.finish().expect("finish").into_inner()
    }

    #[test]
    fn an_xdm_package_is_kept_and_unpacked() {
        for vector in ["direct/xdm/ett-XDM_FULL.ZIP", "direct/xdm/ett-XDM_LIM.ZIP"] {
            let package = data(vector);
            let raw = mixed("XDM attached", &[("application/zip", "xdm.zip", &package)]);
            let parsed = parse(&raw);
            assert_eq!(parsed.warnings, Vec::<String>::new(), "{vector}");
            let files: Vec<(Option<&str>, &str, usize)> = parsed
                .attachments
                .iter()
                .map(|a| {
                    (
                        a.filename.as_deref(),
                        a.content_type.as_str(),
                        a.bytes.len(),
                    )
                })
                .collect();
            assert_eq!(
                files,
                [
                    (Some("xdm.zip"), "application/zip", package.len()),
                    (Some("CCDAAMB.XML"), "text/xml", 120_687),
                ],
                "{vector}"
            );
            // The C-CDA inside names the patient: its SSN, plus the package's NPI-rooted ids.
            let document = parsed.document.clone().expect("document");
            assert_eq!(document.identifiers[0].authority, "2.16.840.1.113883.4.1");
            assert_eq!(document.identifiers[0].id, "111223333");
            assert_eq!(document.family.as_deref(), Some("Madison"));
            assert_eq!(document.given.as_deref(), Some("Katherine Jones"));
            assert!(!format!("{parsed:?}").contains("111223333"));
            if vector.ends_with("FULL.ZIP") {
                assert!(document.identifiers.contains(&Identifier {
                    authority: "2.16.840.1.113883.4.6".into(),
                    id: "1".into()
                }));
            }
        }
    }

    #[test]
    fn xdm_mismatches_and_unreadable_packages_are_warnings() {
        let ccd = data("ccda/CCD-2.xml");
        let metadata = |size: usize, hash: &str| {
            format!(
                r#"<SubmitObjectsRequest xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"><RegistryObjectList xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">
<ExtrinsicObject id="a" mimeType="application/pdf"><Slot name="URI"><ValueList><Value>LETTER.PDF</Value></ValueList></Slot>
<Slot name="sourcePatientId"><ValueList><Value>P-9^^^&amp;1.2.3.4&amp;ISO</Value></ValueList></Slot>
<Slot name="sourcePatientInfo"><ValueList><Value>PID-5|Doe^Jane</Value><Value>PID-7|19800101</Value><Value>PID-8|F</Value></ValueList></Slot></ExtrinsicObject>
<ExtrinsicObject id="b" mimeType="text/xml"><Slot name="URI"><ValueList><Value>CCD.XML</Value></ValueList></Slot>
<Slot name="size"><ValueList><Value>{size}</Value></ValueList></Slot><Slot name="hash"><ValueList><Value>{hash}</Value></ValueList></Slot></ExtrinsicObject>
</RegistryObjectList></SubmitObjectsRequest>"#
            )
        };
        let pdf = b"%PDF-1.7 letter";
        // The C-CDA's size and hash are wrong: warned, still filed, still read.
        let md = metadata(1, "0000");
        let package = zip_of(&[
            ("IHE_XDM/SUBSET01/METADATA.XML", md.as_bytes()),
            ("IHE_XDM/SUBSET01/LETTER.PDF", pdf),
            ("IHE_XDM/SUBSET01/CCD.XML", &ccd),
        ]);
        let parsed = parse(&mixed(
            "x",
            &[("application/octet-stream", "p.zip", &package)],
        ));
        assert_eq!(
            parsed.warnings,
            [
                "xdm: document 2 size mismatch",
                "xdm: document 2 hash mismatch"
            ]
        );
        assert_eq!(parsed.attachments.len(), 3);
        let document = parsed.document.clone().expect("document");
        // The C-CDA names the patient (not the PDF entry before it).
        assert_eq!(document.family.as_deref(), Some("Jones"));
        // No C-CDA at all: the XDM metadata names the patient.
        let md = metadata(1, "0000");
        let package = zip_of(&[
            ("IHE_XDM/SUBSET01/METADATA.XML", md.as_bytes()),
            ("IHE_XDM/SUBSET01/LETTER.PDF", pdf),
            ("IHE_XDM/SUBSET01/CCD.XML", b"not xml"),
        ]);
        let parsed = parse(&mixed("x", &[("application/zip", "p.zip", &package)]));
        let document = parsed.document.clone().expect("document");
        assert_eq!(
            document.identifiers,
            [Identifier {
                authority: "1.2.3.4".into(),
                id: "P-9".into()
            }]
        );
        assert_eq!(document.family.as_deref(), Some("Doe"));
        assert_eq!(document.given.as_deref(), Some("Jane"));
        assert_eq!(document.birth_date.as_deref(), Some("19800101"));
        // A bomb: the ZIP is kept, nothing unpacked, a warning.
        let zeros = vec![0u8; 8 * 1024 * 1024];
        let bomb = zip_of(&[
            ("IHE_XDM/SUBSET01/METADATA.XML", md.as_bytes()),
            ("IHE_XDM/SUBSET01/LETTER.PDF", &zeros),
        ]);
        let parsed = parse(&mixed("x", &[("application/zip", "p.zip", &bomb)]));
        assert_eq!(
            parsed.warnings,
            ["xdm: attachment 1 unreadable (compression ratio)"]
        );
        assert_eq!(parsed.attachments.len(), 1);
        assert_eq!(parsed.attachments[0].bytes, bomb);
        assert_eq!(parsed.document, None);
        // A ZIP that is not XDM is only an attachment.
        let plain = zip_of(&[("notes.txt", b"hello")]);
        let parsed = parse(&mixed("x", &[("application/zip", "n.zip", &plain)]));
        assert_eq!((parsed.attachments.len(), parsed.warnings.len()), (1, 0));
    }

    #[test]
    fn an_unreadable_or_ambiguous_ccda_is_a_warning() {
        let doctype = br#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><ClinicalDocument xmlns="urn:hl7-org:v3"/>"#;
        let two = data("ccda/CCD-2.xml");
        let two = String::from_utf8_lossy(&two).replacen(
            "<recordTarget>",
            r#"<recordTarget><patientRole><id root="9.9" extension="other"/></patientRole></recordTarget><recordTarget>"#,
            1,
        );
        let parsed = parse(&mixed(
            "x",
            &[
                ("application/xml", "a.xml", doctype),
                ("application/xml", "b.xml", two.as_bytes()),
            ],
        ));
        assert_eq!(
            parsed.warnings,
            [
                "ccda: attachment 1 unreadable",
                "ccda: attachment 2 names 2 patients; not used for matching"
            ]
        );
        assert_eq!(parsed.attachments.len(), 2);
        assert_eq!(parsed.document, None);
    }

    #[test]
    fn a_long_body_is_cut_with_a_warning_and_kept_whole() {
        let long = "é".repeat(DIRECT_MAX_BODY_BYTES / 2 + 10);
        let raw = format!(
            "{HEAD}Content-Type: text/plain; charset=utf-8

{long}
"
        );
        let parsed = parse(raw.as_bytes());
        assert!(parsed.body.len() <= DIRECT_MAX_BODY_BYTES);
        assert!(parsed.body.len() > DIRECT_MAX_BODY_BYTES - 4);
        assert_eq!(parsed.warnings.len(), 1);
        assert!(
            parsed.warnings[0].starts_with("body: "),
            "{:?}",
            parsed.warnings
        );
        let whole = parsed.attachments.last().expect("body.txt");
        assert_eq!(whole.filename.as_deref(), Some("body.txt"));
        assert_eq!(String::from_utf8_lossy(&whole.bytes).trim_end(), long);
    }

    /// The Direct Project's wrapped vectors: the signed message/rfc822 entity is what the
    /// security step hands over once the signature verifies.
    #[test]
    fn the_nhind_wrapped_messages_inner_content_reads() {
        for (vector, subject, body) in [
            ("nhind-Wrapped_Quoted.eml", "Html Content", "Hello"),
            (
                "nhind-Wrapped_Base64.eml",
                "This message has a base64 internal message",
                "Hello this is a message body that is moderately long.",
            ),
        ] {
            let outer = data(&format!("direct/messages/{vector}"));
            let outer = switchboard_mail::parse_message(&outer).expect("outer");
            let inner = outer
                .parts
                .iter()
                .find_map(|p| p.message())
                .map(|m| m.raw_message().to_vec())
                .expect("a message/rfc822 part");
            let parsed = parse(&inner);
            assert_eq!(parsed.subject.as_deref(), Some(subject), "{vector}");
            assert_eq!(parsed.body.trim(), body, "{vector}");
            assert!(
                parsed.attachments.is_empty(),
                "{vector}: {:?}",
                parsed.attachments
            );
            assert!(
                parsed.warnings.is_empty(),
                "{vector}: {:?}",
                parsed.warnings
            );
        }
    }

    #[test]
    fn what_is_not_a_message_is_an_error_or_an_empty_item_never_a_panic() {
        let _ = DirectSource.parse(b"");
        let _ = DirectSource.parse(b"\xff\xfe\x00");
        let _ = DirectSource.parse(b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n\r\nUEsDBA==\r\n");
        let parsed = parse(b"Subject: only a header\r\n\r\n");
        assert_eq!(parsed.subject.as_deref(), Some("only a header"));
    }

    // -----------------------------------------------------------------------------------
    // The whole core, on both databases: Direct items recorded, parsed, matched and filed.

    const CLINIC_OID: &str = "1.2.840.114350.1.13.99";

    fn small_ccda(root: &str, extension: &str, family: &str) -> Vec<u8> {
        format!(
            r#"<?xml version="1.0"?>
<cda:ClinicalDocument xmlns:cda="urn:hl7-org:v3">
  <cda:code code="57133-1"/><cda:title>Referral</cda:title>
  <cda:recordTarget><cda:patientRole><cda:id root="{root}" extension="{extension}"/>
    <cda:patient><cda:name><cda:given>Amara</cda:given><cda:family>{family}</cda:family></cda:name>
      <cda:administrativeGenderCode code="F"/><cda:birthTime value="19880818"/></cda:patient>
  </cda:patientRole></cda:recordTarget>
  <cda:component><cda:structuredBody/></cda:component>
</cda:ClinicalDocument>"#
        )
        .into_bytes()
    }

    async fn direct_items_file_by_document(postgres: bool) {
        use crate::intake::{Filing, Intake, Received};
        use crate::store::PatientInput;

        let dir = tempfile::tempdir().expect("tempdir");
        let (core, guard) = crate::testing::core_on(postgres, dir.path()).await;
        // The clinic's feed names its authority "CLINIC"; documents use the OID.
        let mut config = (*core.config).clone();
        let mut north = crate::config::OrganizationConfig::default();
        north
            .identifier_authorities
            .insert(CLINIC_OID.into(), "CLINIC".into());
        config.organizations.insert("north".into(), north);
        let intake = Intake {
            store: core.store.clone(),
            keyring: core.keyring.clone(),
            config: std::sync::Arc::new(config),
        };
        let store = &intake.store;
        let org = store
            .organizations()
            .ensure("north", "North")
            .await
            .expect("organization")
            .id;
        let patient = |external: &str, family: &str, ids: &[(&str, &str)]| PatientInput {
            external_id: external.into(),
            family_name: Some(family.into()),
            given_name: Some("Amara".into()),
            birth_date: Some("1988-08-18".into()),
            sex: Some("F".into()),
            identifiers: ids
                .iter()
                .map(|(authority, id)| (id.to_string(), authority.to_string(), None))
                .collect(),
            ..PatientInput::default()
        };
        let amara = store
            .patients()
            .upsert(&org, &patient("C-1", "Bello", &[("CLINIC", "555")]))
            .await
            .expect("patient")
            .0
            .id;
        // The ETT package's C-CDA names its patient by SSN only; the registry holds it as the
        // HL7 feed stores it: its keyed digest, never the number.
        let ssn = "111223333";
        let digest = intake.keyring.identifier_digests(ssn).remove(0);
        let katherine = store
            .patients()
            .upsert(
                &org,
                &patient(
                    "K-1",
                    "Madison",
                    &[(switchboard_docs::ccda::SSN_OID, digest.as_str())],
                ),
            )
            .await
            .expect("patient")
            .0
            .id;
        let mut n = 0;
        let mut receive = async |raw: Vec<u8>| {
            n += 1;
            let (id, fresh) = intake
                .record(
                    &DirectSource,
                    &Received {
                        organization_id: &org,
                        connector: Some("hisp".into()),
                        provider_ref: Some(format!("hisp@direct.example <m{n}@x>")),
                        sender: "referrals@direct.sender.example".into(),
                        recipient: Some("intake@direct.north.example".into()),
                        raw: &raw,
                    },
                )
                .await
                .expect("record");
            assert!(fresh);
            let row = store.inbound().item(&org, &id).await.expect("item");
            assert_eq!(row.channel, "direct");
            let filing = intake.process(&DirectSource, &row).await.expect("process");
            (id, filing)
        };

        // 1. A C-CDA attachment whose patient id (OID, mapped to the feed's "CLINIC") is
        //    Amara's: filed into her thread, the document with the message.
        let cda = small_ccda(CLINIC_OID, "555", "Someone-Else");
        let (id, filing) = receive(mixed(
            "Referral attached.",
            &[("application/xml", "referral.xml", &cda)],
        ))
        .await;
        let Filing::Filed {
            patient_id,
            thread_id,
            message_id,
        } = &filing
        else {
            panic!("not filed: {filing:?}")
        };
        assert_eq!(patient_id, &amara);
        let item = store.inbound().item(&org, &id).await.expect("item");
        assert_eq!(item.match_method.as_deref(), Some("identifier"));
        assert_eq!(item.thread_id.as_deref(), Some(thread_id.as_str()));
        let files = store
            .attachments()
            .blobs(&org, message_id)
            .await
            .expect("files");
        assert_eq!(files.len(), 1);
        let opened = intake
            .keyring
            .open(
                &files[0].content,
                &crate::messages::attachment_context(message_id, &files[0].id),
            )
            .expect("opens");
        assert_eq!(opened, cda);
        let message = store
            .messages()
            .get(&org, message_id)
            .await
            .expect("message");
        let metadata: serde_json::Value =
            serde_json::from_str(&message.metadata).expect("metadata");
        assert_eq!(metadata["channel"], "direct");
        assert_eq!(metadata["document_type"], "57133-1");

        // 2. The ETT XDM package: its C-CDA's SSN is Katherine's. Filed to her, the package
        //    and its document both attached — and the SSN nowhere in clear.
        let package = data("direct/xdm/ett-XDM_FULL.ZIP");
        let (id, filing) = receive(mixed("XDM", &[("application/zip", "xdm.zip", &package)])).await;
        let Filing::Filed {
            patient_id,
            message_id,
            ..
        } = &filing
        else {
            panic!("not filed: {filing:?}")
        };
        assert_eq!(patient_id, &katherine);
        assert_eq!(
            store
                .inbound()
                .item(&org, &id)
                .await
                .expect("item")
                .match_method
                .as_deref(),
            Some("identifier")
        );
        let files = store
            .attachments()
            .blobs(&org, message_id)
            .await
            .expect("files");
        let names: Vec<Option<&str>> = files.iter().map(|f| f.filename.as_deref()).collect();
        assert_eq!(names, [Some("xdm.zip"), Some("CCDAAMB.XML")]);
        let message = store
            .messages()
            .get(&org, message_id)
            .await
            .expect("message");
        let mut shown = vec![message.metadata.clone()];
        for step in store.inbound().steps(&org, &id).await.expect("steps") {
            shown.extend(step.detail);
        }
        let item = store.inbound().item(&org, &id).await.expect("item");
        shown.extend(item.reason.clone());
        shown.extend(item.candidates.clone());
        for text in &shown {
            assert!(!text.contains(ssn), "SSN in {text}");
        }

        // 3. A package whose document does not match its hash: still filed, the warning on
        //    the parsed step (codes only).
        let md = r#"<SubmitObjectsRequest xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"><RegistryObjectList xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><ExtrinsicObject id="a" mimeType="text/xml"><Slot name="URI"><ValueList><Value>DOC.XML</Value></ValueList></Slot><Slot name="hash"><ValueList><Value>00</Value></ValueList></Slot></ExtrinsicObject></RegistryObjectList></SubmitObjectsRequest>"#;
        let cda = small_ccda(CLINIC_OID, "555", "Bello");
        let tampered = zip_of(&[
            ("IHE_XDM/SUBSET01/METADATA.XML", md.as_bytes()),
            ("IHE_XDM/SUBSET01/DOC.XML", &cda),
        ]);
        let (id, filing) = receive(mixed("x", &[("application/zip", "xdm.zip", &tampered)])).await;
        assert!(matches!(&filing, Filing::Filed { patient_id, .. } if patient_id == &amara));
        let steps = store.inbound().steps(&org, &id).await.expect("steps");
        let parsed = steps
            .iter()
            .find(|s| s.step == "parsed")
            .expect("parsed step");
        let detail: serde_json::Value =
            serde_json::from_str(parsed.detail.as_deref().unwrap_or("{}")).expect("json");
        assert_eq!(
            detail["warnings"],
            serde_json::json!(["xdm: document 1 hash mismatch"])
        );
        assert_eq!(detail["attachments"], 2);

        // 4. A C-CDA naming nobody we hold: unmatched.
        let nobody = small_ccda("9.9.9", "404", "Nobody");
        let (_, filing) = receive(mixed("?", &[("application/xml", "x.xml", &nobody)])).await;
        assert_eq!(
            filing,
            Filing::Unmatched {
                reason: "no patient matched".into(),
                candidates: 0
            }
        );

        store.close().await;
        // On SQLite, the whole database file holds the SSN nowhere in clear: the registry
        // keeps its digest; the item, its steps, the message and its attachments carry it
        // sealed or not at all.
        if !postgres {
            let path = dir.path().join("switchboard.db");
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .expect("sqlite");
            sqlx::query("VACUUM").execute(&pool).await.expect("vacuum");
            pool.close().await;
            for entry in std::fs::read_dir(dir.path()).expect("dir").flatten() {
                if entry.path().is_file() {
                    let bytes = std::fs::read(entry.path()).expect("read");
                    assert!(
                        !bytes.windows(ssn.len()).any(|w| w == ssn.as_bytes()),
                        "SSN in clear in {}",
                        entry.path().display()
                    );
                }
            }
        }
        if let Some(guard) = guard {
            guard.drop_now().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn direct_items_file_by_document_sqlite() {
        direct_items_file_by_document(false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn direct_items_file_by_document_postgres() {
        direct_items_file_by_document(true).await;
    }
}
