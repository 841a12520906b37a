//! The C-CDA header fields intake needs to file a document: the document's id, title and
//! time, and the patient it is about (`recordTarget/patientRole`: identifiers with their
//! assigning authority, the first name's given and family parts, birth time, sex).
//!
//! A document is a C-CDA when its root element is `ClinicalDocument` in the HL7 v3 namespace
//! (`urn:hl7-org:v3`) — decided by parsing, not by sniffing `<?xml`. Reading stops at the body
//! (`component`), so a large document costs only its header.

use crate::DocumentError;
use crate::xml::{self, Flow, Visit};

/// The HL7 v3 namespace every CDA element lives in.
pub const HL7_V3: &str = "urn:hl7-org:v3";

/// An instance identifier (`II`): the assigning authority's OID (`root`) and the id within it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceId {
    pub root: String,
    pub extension: Option<String>,
}

/// The patient a document is about, as its header states.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Patient {
    pub ids: Vec<InstanceId>,
    /// Given names of the first `name`, in order.
    pub given: Vec<String>,
    pub family: Option<String>,
    /// `birthTime/@value` as written (`YYYYMMDD…`).
    pub birth_time: Option<String>,
    /// `administrativeGenderCode/@code` (`F`, `M`, `UN`, …).
    pub sex: Option<String>,
}

/// The header of a C-CDA document.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    pub id: Option<InstanceId>,
    pub title: Option<String>,
    /// `effectiveTime/@value` as written.
    pub effective_time: Option<String>,
    /// `code/@code` (the LOINC document type, e.g. `34133-9`).
    pub type_code: Option<String>,
    /// The first `recordTarget`'s patient.
    pub patient: Patient,
}

/// Largest document read (bytes).
pub const MAX_BYTES: usize = 32 * 1024 * 1024;

/// Whether `bytes` is a C-CDA: its root element is `ClinicalDocument` in the HL7 v3 namespace.
pub fn is_ccda(bytes: &[u8]) -> bool {
    let Ok(text) = xml::text(bytes) else {
        return false;
    };
    let mut root = false;
    let walked = xml::walk(text, HL7_V3, |visit| {
        if let Visit::Open { path, .. } = visit {
            root = xml::is(path, &["ClinicalDocument"]);
        }
        Flow::Stop
    });
    walked.is_ok() && root
}

/// Reads the header of the C-CDA in `bytes`.
pub fn read_header(bytes: &[u8]) -> Result<Header, DocumentError> {
    if bytes.len() > MAX_BYTES {
        return Err(DocumentError::TooLarge(MAX_BYTES));
    }
    let text = xml::text(bytes)?;
    let mut header = Header::default();
    let mut root_seen = false;
    // Only the first recordTarget, and only the first name of its patient.
    let mut targets = 0usize;
    let mut names = 0usize;
    xml::walk(text, HL7_V3, |visit| match visit {
        Visit::Open { path, attrs } => {
            if path.len() == 1 {
                root_seen = xml::is(path, &["ClinicalDocument"]);
                return if root_seen {
                    Flow::Continue
                } else {
                    Flow::Stop
                };
            }
            const DOC: &str = "ClinicalDocument";
            if xml::is(path, &[DOC, "component"]) {
                return Flow::Stop;
            }
            if xml::is(path, &[DOC, "recordTarget"]) {
                targets += 1;
            }
            let patient_role = targets == 1;
            if xml::is(path, &[DOC, "id"]) && header.id.is_none() {
                header.id = instance_id(attrs);
            } else if xml::is(path, &[DOC, "effectiveTime"]) {
                header.effective_time = xml::attr(attrs, "value").map(str::to_string);
            } else if xml::is(path, &[DOC, "code"]) {
                header.type_code = xml::attr(attrs, "code").map(str::to_string);
            } else if patient_role && xml::is(path, &[DOC, "recordTarget", "patientRole", "id"]) {
                header.patient.ids.extend(instance_id(attrs));
            } else if patient_role
                && xml::is(
                    path,
                    &[DOC, "recordTarget", "patientRole", "patient", "name"],
                )
            {
                names += 1;
            } else if patient_role
                && xml::is(
                    path,
                    &[DOC, "recordTarget", "patientRole", "patient", "birthTime"],
                )
            {
                header.patient.birth_time = xml::attr(attrs, "value").map(str::to_string);
            } else if patient_role
                && xml::is(
                    path,
                    &[
                        DOC,
                        "recordTarget",
                        "patientRole",
                        "patient",
                        "administrativeGenderCode",
                    ],
                )
            {
                header.patient.sex = xml::attr(attrs, "code").map(str::to_string);
            }
            Flow::Continue
        }
        Visit::Close { path, text } => {
            const NAME: [&str; 5] = [
                "ClinicalDocument",
                "recordTarget",
                "patientRole",
                "patient",
                "name",
            ];
            if xml::is(path, &["ClinicalDocument", "title"]) && !text.is_empty() {
                header.title = Some(text.to_string());
            } else if targets == 1 && names == 1 && path.len() == 6 && xml::is(&path[..5], &NAME) {
                match path[5].as_str() {
                    "given" if !text.is_empty() => header.patient.given.push(text.to_string()),
                    "family" if header.patient.family.is_none() && !text.is_empty() => {
                        header.patient.family = Some(text.to_string());
                    }
                    _ => {}
                }
            }
            Flow::Continue
        }
    })?;
    if !root_seen {
        return Err(DocumentError::NotA(
            "C-CDA document (no HL7 v3 ClinicalDocument root)",
        ));
    }
    Ok(header)
}

fn instance_id(attrs: &[(String, String)]) -> Option<InstanceId> {
    Some(InstanceId {
        root: xml::attr(attrs, "root")?.to_string(),
        extension: xml::attr(attrs, "extension").map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_data as data;

    #[test]
    fn reads_the_header_of_hl7s_sample_ccd() -> Result<(), DocumentError> {
        let header = read_header(&data("ccda/CCD-2.xml"))?;
        assert!(header.title.is_some());
        assert!(header.id.is_some());
        let patient = &header.patient;
        assert!(!patient.ids.is_empty(), "{patient:?}");
        assert!(patient.family.is_some(), "{patient:?}");
        assert!(!patient.given.is_empty(), "{patient:?}");
        assert!(patient.birth_time.is_some(), "{patient:?}");
        assert!(patient.sex.is_some(), "{patient:?}");
        assert!(is_ccda(&data("ccda/CCD-2.xml")));
        Ok(())
    }

    const DOC: &str = r#"<?xml version="1.0"?>
<cda:ClinicalDocument xmlns:cda="urn:hl7-org:v3" xmlns:x="urn:other">
  <cda:id root="1.2.3" extension="doc-1"/>
  <cda:code code="34133-9"/>
  <cda:title>Summary &amp; plan &#x41;</cda:title>
  <cda:effectiveTime value="20260101"/>
  <cda:recordTarget><cda:patientRole>
    <cda:id root="2.16.840.1.113883.4.6" extension="MRN-7"/>
    <cda:id root="2.16.840.1.113883.4.1" extension="123-45-6789"/>
    <cda:patient>
      <cda:name><cda:given>Isabella</cda:given><cda:family>Jones</cda:family><cda:given>Bella</cda:given></cda:name>
      <cda:name><cda:given>Other</cda:given><cda:family>Name</cda:family></cda:name>
      <x:birthTime value="19000101"/>
      <cda:administrativeGenderCode code="F"/>
      <cda:birthTime value="19501219"/>
    </cda:patient>
  </cda:patientRole></cda:recordTarget>
  <cda:recordTarget><cda:patientRole><cda:id root="9.9" extension="second"/></cda:patientRole></cda:recordTarget>
  <cda:component><cda:title>body</cda:title><unclosed>
"#;

    #[test]
    fn matches_by_namespace_and_stops_at_the_body() -> Result<(), DocumentError> {
        // The body is not even well-formed: reading stops at `component`.
        let header = read_header(DOC.as_bytes())?;
        assert_eq!(header.title.as_deref(), Some("Summary & plan A"));
        assert_eq!(header.type_code.as_deref(), Some("34133-9"));
        assert_eq!(header.effective_time.as_deref(), Some("20260101"));
        let patient = header.patient;
        assert_eq!(
            patient.ids,
            vec![
                InstanceId {
                    root: "2.16.840.1.113883.4.6".into(),
                    extension: Some("MRN-7".into())
                },
                InstanceId {
                    root: "2.16.840.1.113883.4.1".into(),
                    extension: Some("123-45-6789".into())
                },
            ]
        );
        assert_eq!(patient.given, ["Isabella", "Bella"]);
        assert_eq!(patient.family.as_deref(), Some("Jones"));
        // The birthTime in another namespace is not the patient's.
        assert_eq!(patient.birth_time.as_deref(), Some("19501219"));
        assert_eq!(patient.sex.as_deref(), Some("F"));
        Ok(())
    }

    #[test]
    fn the_wrong_namespace_is_not_a_ccda() {
        let wrong = DOC.replace("urn:hl7-org:v3", "urn:evil");
        assert!(!is_ccda(wrong.as_bytes()));
        assert!(matches!(
            read_header(wrong.as_bytes()),
            Err(DocumentError::NotA(_))
        ));
        assert!(!is_ccda(b"<?xml version=\"1.0\"?><note/>"));
        assert!(!is_ccda(b"%PDF-1.7"));
    }

    #[test]
    fn a_doctype_is_refused() {
        let doc = "<?xml version=\"1.0\"?><!DOCTYPE d [<!ENTITY a \"injected\">]>\
                   <ClinicalDocument xmlns=\"urn:hl7-org:v3\"><title>&a;</title></ClinicalDocument>";
        assert!(matches!(
            read_header(doc.as_bytes()),
            Err(DocumentError::Xml(_))
        ));
        assert!(!is_ccda(doc.as_bytes()));
    }

    #[test]
    fn deep_nesting_and_bad_bytes_are_errors_not_panics() {
        let deep = format!(
            "<ClinicalDocument xmlns=\"urn:hl7-org:v3\">{}",
            "<a>".repeat(xml::MAX_DEPTH + 1)
        );
        assert!(matches!(
            read_header(deep.as_bytes()),
            Err(DocumentError::Xml(_))
        ));
        assert!(read_header(b"\xff\xfe<").is_err());
        assert!(read_header(b"").is_err());
    }
}
