//! IHE XDM packages (ITI TF-1 §16, the zip a Direct message carries): the archive is read with
//! bounds, `IHE_XDM/<subset>/METADATA.XML` (an ebXML `SubmitObjectsRequest`) names each
//! document — its file (`URI` slot), `mimeType`, `sourcePatientId` (`id^^^&OID&ISO`),
//! `sourcePatientInfo` (PID-5/7/8) and SHA-1 `hash` and `size` — and every document is
//! checked against its stated size and hash before it is returned.
//!
//! Unsafe archives are refused, not repaired: absolute or `..` paths, backslashes, symlinks,
//! more than [`Limits::max_entries`] entries, an entry or a total over the caps (checked on
//! the bytes actually inflated, not on what the header claims).

use std::io::{Cursor, Read};

use crate::DocumentError;
use crate::xml::{self, Flow, Visit};

/// The ebXML registry information model namespace (ExtrinsicObject, Slot, Value).
pub const RIM: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0";

/// Bounds on what a package may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_entries: usize,
    /// One file, inflated.
    pub max_entry_bytes: u64,
    /// All files, inflated.
    pub max_total_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: 500,
            max_entry_bytes: 64 * 1024 * 1024,
            max_total_bytes: 128 * 1024 * 1024,
        }
    }
}

/// A patient id with its assigning authority, as XDM writes it (`1^^^&2.16.840.1.113883.4.6&ISO`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientId {
    pub id: String,
    /// The assigning authority's OID.
    pub authority: Option<String>,
}

/// `sourcePatientInfo`: what the sender knows of the patient (HL7 v2 PID fields).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PatientInfo {
    pub family: Option<String>,
    pub given: Option<String>,
    /// PID-7 as written (`YYYYMMDD`).
    pub birth_date: Option<String>,
    /// PID-8 (`F`, `M`, …).
    pub sex: Option<String>,
}

/// One document of the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The path inside the archive (`IHE_XDM/SUBSET01/CCDAAMB.XML`).
    pub path: String,
    /// The file name the metadata gives (its `URI` slot).
    pub file_name: String,
    pub mime_type: Option<String>,
    pub source_patient_id: Option<PatientId>,
    pub patient_info: PatientInfo,
    pub bytes: Vec<u8>,
}

/// A package's documents, in metadata order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub documents: Vec<Document>,
}

/// Whether `bytes` looks like a ZIP archive (its local-file-header signature).
pub fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

/// Reads the XDM package in `bytes`.
pub fn read(bytes: &[u8], limits: Limits) -> Result<Package, DocumentError> {
    let files = unzip(bytes, limits)?;
    let (metadata_path, metadata) =
        files
            .iter()
            .find(|(name, _)| is_metadata(name))
            .ok_or(DocumentError::NotA(
                "XDM package (no IHE_XDM/<subset>/METADATA.XML)",
            ))?;
    let folder = &metadata_path[..metadata_path.len() - "METADATA.XML".len()];
    let entries = read_metadata(metadata)?;
    let mut documents = Vec::new();
    for entry in entries {
        let Some(file_name) = entry.uri.clone() else {
            continue;
        };
        if file_name.contains(['/', '\\']) || file_name == ".." {
            return Err(DocumentError::Zip(format!(
                "metadata URI {file_name:?} leaves the subset folder"
            )));
        }
        let path = format!("{folder}{file_name}");
        let bytes = files
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&path))
            .map(|(_, b)| b.clone())
            .ok_or_else(|| DocumentError::Integrity {
                file: file_name.clone(),
                what: "listed in METADATA.XML but not in the archive".into(),
            })?;
        if let Some(size) = entry.size.as_deref()
            && size.parse::<usize>().ok() != Some(bytes.len())
        {
            return Err(DocumentError::Integrity {
                file: file_name,
                what: format!("{} bytes, metadata says {size}", bytes.len()),
            });
        }
        if let Some(hash) = entry.hash.as_deref() {
            let actual = hex::encode(openssl::sha::sha1(&bytes));
            if !actual.eq_ignore_ascii_case(hash.trim()) {
                return Err(DocumentError::Integrity {
                    file: file_name,
                    what: "SHA-1 differs from METADATA.XML's hash".into(),
                });
            }
        }
        documents.push(Document {
            path,
            file_name,
            mime_type: entry.mime_type,
            source_patient_id: entry.source_patient_id.as_deref().and_then(patient_id),
            patient_info: patient_info(&entry.source_patient_info),
            bytes,
        });
    }
    if documents.is_empty() {
        return Err(DocumentError::NotA(
            "XDM package (METADATA.XML lists no document)",
        ));
    }
    Ok(Package { documents })
}

fn is_metadata(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() == 3
        && parts[0].eq_ignore_ascii_case("IHE_XDM")
        && !parts[1].is_empty()
        && parts[2].eq_ignore_ascii_case("METADATA.XML")
}

/// Every file of the archive, inflated, after the safety checks.
fn unzip(bytes: &[u8], limits: Limits) -> Result<Vec<(String, Vec<u8>)>, DocumentError> {
    let zip_error = |e: zip::result::ZipError| DocumentError::Zip(e.to_string());
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(zip_error)?;
    if archive.len() > limits.max_entries {
        return Err(DocumentError::Zip(format!(
            "more than {} entries",
            limits.max_entries
        )));
    }
    let mut files = Vec::new();
    let mut total: u64 = 0;
    for index in 0..archive.len() {
        let file = archive.by_index(index).map_err(zip_error)?;
        let name = file.name().map_err(zip_error)?.into_owned();
        if name.starts_with('/')
            || name.contains('\\')
            || name.split('/').any(|part| part == "..")
            || file.enclosed_name().is_none()
            || file.is_symlink()
        {
            return Err(DocumentError::Zip(format!("unsafe entry name {name:?}")));
        }
        if file.is_dir() {
            continue;
        }
        if file.size() > limits.max_entry_bytes {
            return Err(DocumentError::TooLarge(limits.max_entry_bytes as usize));
        }
        let mut content = Vec::new();
        file.take(limits.max_entry_bytes + 1)
            .read_to_end(&mut content)
            .map_err(|e| DocumentError::Zip(e.to_string()))?;
        if content.len() as u64 > limits.max_entry_bytes {
            return Err(DocumentError::TooLarge(limits.max_entry_bytes as usize));
        }
        total += content.len() as u64;
        if total > limits.max_total_bytes {
            return Err(DocumentError::TooLarge(limits.max_total_bytes as usize));
        }
        files.push((name, content));
    }
    Ok(files)
}

#[derive(Default)]
struct Entry {
    mime_type: Option<String>,
    uri: Option<String>,
    size: Option<String>,
    hash: Option<String>,
    source_patient_id: Option<String>,
    source_patient_info: Vec<String>,
}

/// The `ExtrinsicObject`s (documents) of a `SubmitObjectsRequest`, with the slots we read.
fn read_metadata(bytes: &[u8]) -> Result<Vec<Entry>, DocumentError> {
    let text = xml::text(bytes)?;
    let mut entries: Vec<Entry> = Vec::new();
    let mut in_object = false;
    // The slot being read, when it is a direct child of the ExtrinsicObject.
    let mut slot: Option<String> = None;
    xml::walk(text, RIM, |visit| {
        match visit {
            Visit::Open { path, attrs } => {
                if path.last().is_some_and(|n| n == "ExtrinsicObject") {
                    in_object = true;
                    entries.push(Entry {
                        mime_type: xml::attr(attrs, "mimeType").map(str::to_string),
                        ..Entry::default()
                    });
                } else if in_object && xml::ends_with(path, &["ExtrinsicObject", "Slot"]) {
                    slot = xml::attr(attrs, "name").map(str::to_string);
                }
            }
            Visit::Close { path, text } => {
                if path.last().is_some_and(|n| n == "ExtrinsicObject") {
                    in_object = false;
                } else if xml::ends_with(path, &["ExtrinsicObject", "Slot"]) {
                    slot = None;
                } else if xml::ends_with(path, &["ExtrinsicObject", "Slot", "ValueList", "Value"])
                    && let (Some(entry), Some(name)) = (entries.last_mut(), slot.as_deref())
                {
                    let value = Some(text.to_string());
                    match name {
                        "URI" if entry.uri.is_none() => entry.uri = value,
                        "size" => entry.size = value,
                        "hash" => entry.hash = value,
                        "sourcePatientId" => entry.source_patient_id = value,
                        "sourcePatientInfo" => entry.source_patient_info.push(text.to_string()),
                        _ => {}
                    }
                }
            }
        }
        Flow::Continue
    })?;
    Ok(entries)
}

/// `id^^^&OID&ISO` → the id and the authority's OID.
fn patient_id(value: &str) -> Option<PatientId> {
    let mut fields = value.trim().split('^');
    let id = fields.next().filter(|s| !s.is_empty())?.to_string();
    let authority = fields
        .nth(2)
        .and_then(|cx4| cx4.split('&').nth(1))
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    Some(PatientId { id, authority })
}

/// `PID-5|Family^Given^…`, `PID-7|YYYYMMDD`, `PID-8|F`.
fn patient_info(values: &[String]) -> PatientInfo {
    let mut info = PatientInfo::default();
    let non_empty = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    for value in values {
        let Some((field, rest)) = value.split_once('|') else {
            continue;
        };
        match field.trim() {
            "PID-5" => {
                let mut parts = rest.split('^');
                info.family = parts.next().and_then(non_empty);
                info.given = parts.next().and_then(non_empty);
            }
            "PID-7" => info.birth_date = non_empty(rest),
            "PID-8" => info.sex = non_empty(rest),
            _ => {}
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::test_data as data;

    fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, content) in files {
            out.start_file(*name, zip::write::SimpleFileOptions::default())
                .expect("start");
            out.write_all(content).expect("write");
        }
        out.finish().expect("finish").into_inner()
    }

    fn metadata(uri: &str, size: usize, hash: &str) -> String {
        format!(
            r#"<SubmitObjectsRequest xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0">
<RegistryObjectList xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">
<ExtrinsicObject id="d1" mimeType="text/xml">
<Slot name="sourcePatientId"><ValueList><Value>MRN-7^^^&amp;1.2.3&amp;ISO</Value></ValueList></Slot>
<Slot name="sourcePatientInfo"><ValueList><Value>PID-5|Jones^Isabella^^^^</Value><Value>PID-7|19470501</Value><Value>PID-8|F</Value></ValueList></Slot>
<Slot name="URI"><ValueList><Value>{uri}</Value></ValueList></Slot>
<Slot name="size"><ValueList><Value>{size}</Value></ValueList></Slot>
<Slot name="hash"><ValueList><Value>{hash}</Value></ValueList></Slot>
</ExtrinsicObject></RegistryObjectList></SubmitObjectsRequest>"#
        )
    }

    #[test]
    fn reads_the_ett_full_package() -> Result<(), DocumentError> {
        for name in ["direct/xdm/ett-XDM_FULL.ZIP", "direct/xdm/ett-XDM_LIM.ZIP"] {
            let package = read(&data(name), Limits::default())?;
            assert_eq!(package.documents.len(), 1, "{name}");
            let doc = &package.documents[0];
            assert_eq!(doc.path, "IHE_XDM/SUBSET01/CCDAAMB.XML");
            assert_eq!(doc.bytes.len(), 120_687);
            assert!(crate::ccda::is_ccda(&doc.bytes));
            if name.ends_with("FULL.ZIP") {
                assert_eq!(
                    doc.source_patient_id,
                    Some(PatientId {
                        id: "1".into(),
                        authority: Some("2.16.840.1.113883.4.6".into())
                    })
                );
                assert_eq!(doc.patient_info.family.as_deref(), Some("Jones"));
                assert_eq!(doc.patient_info.birth_date.as_deref(), Some("19470501"));
            }
        }
        Ok(())
    }

    #[test]
    fn a_document_must_match_its_size_and_hash() -> Result<(), DocumentError> {
        let body = b"<ClinicalDocument xmlns=\"urn:hl7-org:v3\"/>";
        let hash = hex::encode(openssl::sha::sha1(body));
        let good = metadata("DOC.XML", body.len(), &hash);
        let package = read(
            &zip_of(&[
                ("IHE_XDM/S1/METADATA.XML", good.as_bytes()),
                ("IHE_XDM/S1/DOC.XML", body),
            ]),
            Limits::default(),
        )?;
        assert_eq!(package.documents[0].bytes, body);
        assert_eq!(package.documents[0].patient_info.sex.as_deref(), Some("F"));
        assert_eq!(
            package.documents[0].source_patient_id,
            Some(PatientId {
                id: "MRN-7".into(),
                authority: Some("1.2.3".into())
            })
        );
        let tampered = zip_of(&[
            ("IHE_XDM/S1/METADATA.XML", good.as_bytes()),
            (
                "IHE_XDM/S1/DOC.XML",
                b"<ClinicalDocument xmlns=\"urn:hl7-org:v4\"/>",
            ),
        ]);
        assert!(matches!(
            read(&tampered, Limits::default()),
            Err(DocumentError::Integrity { .. })
        ));
        let missing = zip_of(&[("IHE_XDM/S1/METADATA.XML", good.as_bytes())]);
        assert!(matches!(
            read(&missing, Limits::default()),
            Err(DocumentError::Integrity { .. })
        ));
        Ok(())
    }

    #[test]
    fn unsafe_archives_are_refused() {
        let md = metadata("DOC.XML", 1, "00");
        for name in ["IHE_XDM/../../etc/passwd", "/etc/passwd", "IHE_XDM\\S1\\x"] {
            let zip = zip_of(&[("IHE_XDM/S1/METADATA.XML", md.as_bytes()), (name, b"x")]);
            assert!(
                matches!(read(&zip, Limits::default()), Err(DocumentError::Zip(_))),
                "{name}"
            );
        }
        let traversal = metadata("../x", 1, "00");
        let zip = zip_of(&[("IHE_XDM/S1/METADATA.XML", traversal.as_bytes())]);
        assert!(matches!(
            read(&zip, Limits::default()),
            Err(DocumentError::Zip(_))
        ));
        let many: Vec<(String, Vec<u8>)> = (0..20).map(|i| (format!("f{i}"), vec![b'x'])).collect();
        let many: Vec<(&str, &[u8])> = many
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        let limits = Limits {
            max_entries: 10,
            ..Limits::default()
        };
        assert!(matches!(
            read(&zip_of(&many), limits),
            Err(DocumentError::Zip(_))
        ));
        // A bomb: 10 MiB of zeros deflates to a few KiB; the inflated size is what counts.
        let zeros = vec![0u8; 10 * 1024 * 1024];
        let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
        out.start_file(
            "IHE_XDM/S1/BOMB",
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated),
        )
        .expect("start");
        out.write_all(&zeros).expect("write");
        let bomb = out.finish().expect("finish").into_inner();
        assert!(bomb.len() < 100 * 1024);
        let limits = Limits {
            max_entry_bytes: 1024 * 1024,
            ..Limits::default()
        };
        assert!(matches!(
            read(&bomb, limits),
            Err(DocumentError::TooLarge(_))
        ));
        assert!(read(b"not a zip", Limits::default()).is_err());
        assert!(!is_zip(b"not a zip"));
    }
}
