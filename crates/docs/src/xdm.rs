//! IHE XDM packages (ITI TF-1 §16, the zip a Direct message carries): the archive is read with
//! bounds, each `IHE_XDM/<subset>/METADATA.XML` (an ebXML `SubmitObjectsRequest`) names its
//! documents — the file (`URI` slot), `mimeType`, `XDSDocumentEntry.patientId`,
//! `sourcePatientId` (`id^^^&OID&ISO`), `sourcePatientInfo` (PID-3/5/7/8), type code, and the
//! SHA-1 `hash` and `size` — and every document is checked against its stated size and hash.
//!
//! A package is recognised by content: a ZIP holding a `METADATA.XML` under `IHE_XDM/`, names
//! compared without case. The reader is lenient with what real senders write: the Java
//! reference implementation's `IHE_XDM/SUBSET01METADATA.xml` (no slash after the subset), a
//! missing `INDEX.HTM`/`README.TXT`, a document found by its file name when its folder is not
//! the metadata's. What does not match its metadata is **a warning, not a refusal**
//! ([`Warning`]): the item is still filed, with the warning on it.
//!
//! Unsafe archives are refused, not repaired: absolute or `..` paths, backslashes, symlinks,
//! two entries with the same name, more than [`Limits::max_entries`] entries, an entry or a
//! total over the caps, an entry inflating more than [`Limits::max_ratio`] times its
//! compressed size (a bomb) — all checked on the bytes actually inflated, not on what the
//! headers claim.

use std::fmt;
use std::io::{Cursor, Read};

use crate::DocumentError;
use crate::xml::{self, Flow, Visit};

/// The ebXML registry information model namespace (ExtrinsicObject, Slot, Value), XDS.b.
pub const RIM: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0";
/// The ebRIM 2.1 namespace older XDM packages use.
pub const RIM_21: &str = "urn:oasis:names:tc:ebxml-regrep:rim:xsd:2.1";

const DOCUMENT_PATIENT_ID: &str = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427";
const DOCUMENT_UNIQUE_ID: &str = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab";
const DOCUMENT_TYPE_CODE: &str = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983";
const SUBMISSION_PATIENT_ID: &str = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446";

/// Bounds on what a package may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Entries in the archive (folders count).
    pub max_entries: usize,
    /// One file, inflated.
    pub max_entry_bytes: u64,
    /// All files, inflated.
    pub max_total_bytes: u64,
    /// Inflated size over compressed size, for an entry inflating past [`RATIO_FLOOR`].
    pub max_ratio: u64,
}

/// Entries smaller than this (inflated) are not held to the ratio: a small file of zeros
/// compresses a thousandfold and harms nobody.
pub const RATIO_FLOOR: u64 = 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: 1000,
            max_entry_bytes: 100 * 1024 * 1024,
            max_total_bytes: 100 * 1024 * 1024,
            // Deflated C-CDA is 8–20×; deflate itself tops out near 1032×.
            max_ratio: 200,
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
    /// PID-3 (one value each).
    pub ids: Vec<PatientId>,
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
    /// Its position among the package's document entries, from 1 (what warnings name).
    pub index: usize,
    /// The path inside the archive (`IHE_XDM/SUBSET01/CCDAAMB.XML`).
    pub path: String,
    /// The file name the metadata gives (its `URI` slot).
    pub file_name: String,
    pub mime_type: Option<String>,
    /// `XDSDocumentEntry.patientId` (the affinity domain's id).
    pub patient_id: Option<PatientId>,
    /// `sourcePatientId` (the sender's own id).
    pub source_patient_id: Option<PatientId>,
    pub patient_info: PatientInfo,
    /// `XDSDocumentEntry.typeCode` (LOINC).
    pub type_code: Option<String>,
    /// `XDSDocumentEntry.uniqueId`.
    pub unique_id: Option<String>,
    /// The size and SHA-1 (hex) the metadata states.
    pub stated_size: Option<u64>,
    pub stated_hash: Option<String>,
    pub bytes: Vec<u8>,
}

/// What in a package did not match its metadata. Shown on the item: ids and counts only,
/// never a file name or a patient's detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// The document's SHA-1 is not the metadata's `hash`.
    HashMismatch { document: usize },
    /// The document's size is not the metadata's `size`.
    SizeMismatch { document: usize },
    /// The metadata lists a file the archive does not hold.
    Missing { document: usize },
    /// The metadata's `URI` names a path (`/`, `\`, `..`), not a file of the subset.
    UnsafeUri { document: usize },
    /// A document entry with no `URI` slot.
    NoUri { document: usize },
    /// A METADATA.XML that is not readable metadata (subset counted from 1).
    UnreadableMetadata { subset: usize },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HashMismatch { document } => write!(f, "xdm: document {document} hash mismatch"),
            Self::SizeMismatch { document } => write!(f, "xdm: document {document} size mismatch"),
            Self::Missing { document } => {
                write!(f, "xdm: document {document} missing from the archive")
            }
            Self::UnsafeUri { document } => write!(f, "xdm: document {document} has an unsafe URI"),
            Self::NoUri { document } => write!(f, "xdm: document {document} has no URI"),
            Self::UnreadableMetadata { subset } => {
                write!(f, "xdm: metadata of subset {subset} unreadable")
            }
        }
    }
}

/// A package's documents, in metadata order, and what did not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub documents: Vec<Document>,
    /// `XDSSubmissionSet.patientId` of the first subset that has one.
    pub submission_patient_id: Option<PatientId>,
    pub warnings: Vec<Warning>,
}

/// Whether `bytes` looks like a ZIP archive (its local-file-header signature).
pub fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

/// Whether `bytes` is an XDM package: a ZIP whose directory holds a `METADATA.XML` under
/// `IHE_XDM/`. Reads the central directory only (no entry is inflated).
pub fn is_xdm(bytes: &[u8]) -> bool {
    if !is_zip(bytes) {
        return false;
    }
    let Ok(archive) = zip::ZipArchive::new(Cursor::new(bytes)) else {
        return false;
    };
    archive
        .file_names()
        .any(|name| name.is_ok_and(|name| metadata_folder(&name).is_some()))
}

/// The folder prefix of a METADATA.XML entry (`IHE_XDM/SUBSET01/`, or `IHE_XDM/SUBSET01` for
/// the RI's slash-less `IHE_XDM/SUBSET01METADATA.xml`); `None` for any other entry.
fn metadata_folder(name: &str) -> Option<&str> {
    const FILE: &str = "METADATA.XML";
    const ROOT: &str = "IHE_XDM/";
    let split = name.len().checked_sub(FILE.len())?;
    let (folder, file) = (name.get(..split)?, name.get(split..)?);
    let root = folder.get(..ROOT.len())?;
    (file.eq_ignore_ascii_case(FILE)
        && root.eq_ignore_ascii_case(ROOT)
        && !folder[ROOT.len()..].trim_end_matches('/').contains('/'))
    .then_some(folder)
}

/// Reads the XDM package in `bytes`.
pub fn read(bytes: &[u8], limits: Limits) -> Result<Package, DocumentError> {
    let mut files = unzip(bytes, limits)?;
    let subsets: Vec<(usize, String)> = files
        .iter()
        .enumerate()
        .filter_map(|(i, (name, _))| metadata_folder(name).map(|f| (i, f.to_string())))
        .collect();
    if subsets.is_empty() {
        return Err(DocumentError::NotA(
            "XDM package (no IHE_XDM/<subset>/METADATA.XML)",
        ));
    }
    let mut package = Package {
        documents: Vec::new(),
        submission_patient_id: None,
        warnings: Vec::new(),
    };
    let mut taken = vec![false; files.len()];
    let mut index = 0usize;
    let mut readable = 0usize;
    for (subset, (metadata_index, folder)) in subsets.iter().enumerate() {
        let metadata = match read_metadata(&files[*metadata_index].1) {
            Ok(metadata) => metadata,
            Err(_) => {
                package
                    .warnings
                    .push(Warning::UnreadableMetadata { subset: subset + 1 });
                continue;
            }
        };
        readable += 1;
        if package.submission_patient_id.is_none() {
            package.submission_patient_id = metadata
                .submission_patient_id
                .as_deref()
                .and_then(patient_id);
        }
        for entry in metadata.entries {
            index += 1;
            let Some(file_name) = entry.uri.clone() else {
                package.warnings.push(Warning::NoUri { document: index });
                continue;
            };
            if file_name.contains(['/', '\\']) || file_name == ".." || file_name.is_empty() {
                package
                    .warnings
                    .push(Warning::UnsafeUri { document: index });
                continue;
            }
            let Some(found) = locate(&files, &taken, folder, &file_name) else {
                package.warnings.push(Warning::Missing { document: index });
                continue;
            };
            taken[found] = true;
            let (path, bytes) = (files[found].0.clone(), std::mem::take(&mut files[found].1));
            let stated_size = entry
                .size
                .as_deref()
                .and_then(|s| s.trim().parse::<u64>().ok());
            if entry.size.is_some() && stated_size != Some(bytes.len() as u64) {
                package
                    .warnings
                    .push(Warning::SizeMismatch { document: index });
            }
            if let Some(hash) = entry.hash.as_deref() {
                let actual = hex::encode(openssl::sha::sha1(&bytes));
                if !actual.eq_ignore_ascii_case(hash.trim()) {
                    package
                        .warnings
                        .push(Warning::HashMismatch { document: index });
                }
            }
            package.documents.push(Document {
                index,
                path,
                file_name,
                mime_type: entry.mime_type,
                patient_id: entry.patient_id.as_deref().and_then(patient_id),
                source_patient_id: entry.source_patient_id.as_deref().and_then(patient_id),
                patient_info: patient_info(&entry.source_patient_info),
                type_code: entry.type_code,
                unique_id: entry.unique_id,
                stated_size,
                stated_hash: entry.hash,
                bytes,
            });
        }
    }
    if readable == 0 {
        return Err(DocumentError::NotA(
            "XDM package (no readable METADATA.XML)",
        ));
    }
    Ok(package)
}

/// The archive entry holding `file_name` of the subset in `folder`: `folder` + name (with the
/// slash the RI's slash-less layout left out), else the one entry anywhere with that file
/// name. Names compare without case; an entry already taken by another document is not
/// offered again.
fn locate(
    files: &[(String, Vec<u8>)],
    taken: &[bool],
    folder: &str,
    file_name: &str,
) -> Option<usize> {
    let free = |i: &usize| !taken[*i];
    let mut wanted = vec![format!("{folder}{file_name}")];
    if !folder.ends_with('/') {
        wanted.push(format!("{folder}/{file_name}"));
    }
    for path in &wanted {
        if let Some(i) = (0..files.len())
            .filter(free)
            .find(|&i| files[i].0.eq_ignore_ascii_case(path))
        {
            return Some(i);
        }
    }
    let mut by_name = (0..files.len()).filter(free).filter(|&i| {
        files[i]
            .0
            .rsplit('/')
            .next()
            .is_some_and(|last| last.eq_ignore_ascii_case(file_name))
    });
    match (by_name.next(), by_name.next()) {
        (Some(i), None) => Some(i),
        _ => None,
    }
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
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut total: u64 = 0;
    for index in 0..archive.len() {
        let file = archive.by_index(index).map_err(zip_error)?;
        let name = file.name().map_err(zip_error)?.into_owned();
        if name.starts_with('/')
            || name.contains('\\')
            || name.contains('\0')
            || name.split('/').any(|part| part == "..")
            || file.enclosed_name().is_none()
            || file.is_symlink()
        {
            return Err(DocumentError::Zip(format!("unsafe entry name {name:?}")));
        }
        if !seen.insert(name.to_ascii_uppercase()) {
            return Err(DocumentError::Zip(format!("entry {name:?} appears twice")));
        }
        if file.is_dir() {
            continue;
        }
        if file.size() > limits.max_entry_bytes {
            return Err(DocumentError::TooLarge(limits.max_entry_bytes as usize));
        }
        // What the ratio allows this entry, on its compressed size as the archive holds it.
        let compressed = file.compressed_size().min(bytes.len() as u64).max(1);
        let by_ratio = compressed.saturating_mul(limits.max_ratio).max(RATIO_FLOOR);
        let cap = limits
            .max_entry_bytes
            .min(by_ratio)
            .min(limits.max_total_bytes.saturating_sub(total));
        let mut content = Vec::new();
        file.take(cap + 1)
            .read_to_end(&mut content)
            .map_err(|e| DocumentError::Zip(e.to_string()))?;
        let inflated = content.len() as u64;
        if inflated > cap {
            return Err(if inflated > by_ratio {
                DocumentError::CompressionRatio(limits.max_ratio)
            } else if inflated > limits.max_entry_bytes {
                DocumentError::TooLarge(limits.max_entry_bytes as usize)
            } else {
                DocumentError::TooLarge(limits.max_total_bytes as usize)
            });
        }
        total += inflated;
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
    patient_id: Option<String>,
    source_patient_id: Option<String>,
    source_patient_info: Vec<String>,
    type_code: Option<String>,
    unique_id: Option<String>,
}

#[derive(Default)]
struct Metadata {
    entries: Vec<Entry>,
    submission_patient_id: Option<String>,
}

/// The `ExtrinsicObject`s (documents) of a `SubmitObjectsRequest`, with the slots we read, and
/// the submission set's patient id.
fn read_metadata(bytes: &[u8]) -> Result<Metadata, DocumentError> {
    let text = xml::text(bytes)?;
    let mut metadata = Metadata::default();
    let mut in_object = false;
    // The slot being read, when it is a direct child of the ExtrinsicObject.
    let mut slot: Option<String> = None;
    xml::walk(text, &[RIM, RIM_21], |visit| {
        match visit {
            Visit::Open { path, attrs } => {
                if path.last().is_some_and(|n| n == "ExtrinsicObject") {
                    in_object = true;
                    metadata.entries.push(Entry {
                        mime_type: xml::attr(attrs, "mimeType").map(str::to_string),
                        ..Entry::default()
                    });
                } else if in_object && xml::ends_with(path, &["ExtrinsicObject", "Slot"]) {
                    slot = xml::attr(attrs, "name").map(str::to_string);
                } else if in_object
                    && xml::ends_with(path, &["ExtrinsicObject", "ExternalIdentifier"])
                    && let Some(entry) = metadata.entries.last_mut()
                {
                    let value = xml::attr(attrs, "value").map(str::to_string);
                    match xml::attr(attrs, "identificationScheme") {
                        Some(DOCUMENT_PATIENT_ID) => entry.patient_id = value,
                        Some(DOCUMENT_UNIQUE_ID) => entry.unique_id = value,
                        _ => {}
                    }
                } else if in_object
                    && xml::ends_with(path, &["ExtrinsicObject", "Classification"])
                    && xml::attr(attrs, "classificationScheme") == Some(DOCUMENT_TYPE_CODE)
                    && let Some(entry) = metadata.entries.last_mut()
                {
                    entry.type_code = xml::attr(attrs, "nodeRepresentation").map(str::to_string);
                } else if xml::ends_with(path, &["RegistryPackage", "ExternalIdentifier"])
                    && xml::attr(attrs, "identificationScheme") == Some(SUBMISSION_PATIENT_ID)
                    && metadata.submission_patient_id.is_none()
                {
                    metadata.submission_patient_id = xml::attr(attrs, "value").map(str::to_string);
                }
            }
            Visit::Close { path, text } => {
                if path.last().is_some_and(|n| n == "ExtrinsicObject") {
                    in_object = false;
                } else if xml::ends_with(path, &["ExtrinsicObject", "Slot"]) {
                    slot = None;
                } else if in_object
                    && xml::ends_with(path, &["ExtrinsicObject", "Slot", "ValueList", "Value"])
                    && let (Some(entry), Some(name)) =
                        (metadata.entries.last_mut(), slot.as_deref())
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
    Ok(metadata)
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

/// `PID-3|id^^^&OID&ISO`, `PID-5|Family^Given^…`, `PID-7|YYYYMMDD`, `PID-8|F`.
fn patient_info(values: &[String]) -> PatientInfo {
    let mut info = PatientInfo::default();
    let non_empty = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    for value in values {
        let Some((field, rest)) = value.split_once('|') else {
            continue;
        };
        match field.trim() {
            "PID-3" => {
                // Repetitions (`~`) each name an id.
                info.ids.extend(rest.split('~').filter_map(patient_id));
            }
            "PID-5" if info.family.is_none() => {
                let first = rest.split('~').next().unwrap_or_default();
                let mut parts = first.split('^');
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

    use zip::write::SimpleFileOptions;

    use super::*;
    use crate::test_data as data;

    fn zip_with(files: &[(&str, &[u8])], options: SimpleFileOptions) -> Vec<u8> {
        let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, content) in files {
            out.start_file(*name, options).expect("start");
            out.write_all(content).expect("write");
        }
        out.finish().expect("finish").into_inner()
    }

    fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        zip_with(files, SimpleFileOptions::default())
    }

    const DOC: &[u8] = b"<ClinicalDocument xmlns=\"urn:hl7-org:v3\"/>";

    fn sha1(bytes: &[u8]) -> String {
        hex::encode(openssl::sha::sha1(bytes))
    }

    fn metadata(uri: &str, size: usize, hash: &str) -> String {
        format!(
            r#"<SubmitObjectsRequest xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0">
<RegistryObjectList xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">
<ExtrinsicObject id="d1" mimeType="text/xml">
<Slot name="sourcePatientId"><ValueList><Value>MRN-7^^^&amp;1.2.3&amp;ISO</Value></ValueList></Slot>
<Slot name="sourcePatientInfo"><ValueList><Value>PID-3|MRN-7^^^&amp;1.2.3&amp;ISO~99^^^&amp;4.5&amp;ISO</Value><Value>PID-5|Jones^Isabella^^^^</Value><Value>PID-7|19470501</Value><Value>PID-8|F</Value></ValueList></Slot>
<Slot name="URI"><ValueList><Value>{uri}</Value></ValueList></Slot>
<Slot name="size"><ValueList><Value>{size}</Value></ValueList></Slot>
<Slot name="hash"><ValueList><Value>{hash}</Value></ValueList></Slot>
<Classification classificationScheme="urn:uuid:f0306f51-975f-434e-a61c-c59651d33983" nodeRepresentation="34133-9"><Slot name="codingScheme"><ValueList><Value>2.16.840.1.113883.6.1</Value></ValueList></Slot></Classification>
<ExternalIdentifier identificationScheme="urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427" value="AFF-1^^^&amp;7.7&amp;ISO"/>
</ExtrinsicObject>
<RegistryPackage id="ss"><ExternalIdentifier identificationScheme="urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446" value="AFF-1^^^&amp;7.7&amp;ISO"/></RegistryPackage>
</RegistryObjectList></SubmitObjectsRequest>"#
        )
    }

    fn good_metadata() -> String {
        metadata("DOC.XML", DOC.len(), &sha1(DOC))
    }

    #[test]
    fn reads_the_ett_packages() -> Result<(), DocumentError> {
        for name in ["direct/xdm/ett-XDM_FULL.ZIP", "direct/xdm/ett-XDM_LIM.ZIP"] {
            let bytes = data(name);
            assert!(is_xdm(&bytes), "{name}");
            let package = read(&bytes, Limits::default())?;
            assert_eq!(package.warnings, [], "{name}");
            assert_eq!(package.documents.len(), 1, "{name}");
            let doc = &package.documents[0];
            assert_eq!(doc.index, 1);
            assert_eq!(doc.path, "IHE_XDM/SUBSET01/CCDAAMB.XML");
            assert_eq!(doc.bytes.len(), 120_687);
            assert_eq!(doc.stated_size, Some(120_687));
            assert_eq!(doc.mime_type.as_deref(), Some("text/xml"));
            assert!(crate::ccda::is_ccda(&doc.bytes));
            if name.ends_with("FULL.ZIP") {
                let npi = Some(PatientId {
                    id: "1".into(),
                    authority: Some("2.16.840.1.113883.4.6".into()),
                });
                assert_eq!(doc.source_patient_id, npi);
                assert_eq!(doc.patient_id, npi);
                assert_eq!(package.submission_patient_id, npi);
                assert_eq!(
                    doc.patient_info.ids,
                    npi.clone().into_iter().collect::<Vec<_>>()
                );
                assert_eq!(doc.patient_info.family.as_deref(), Some("Jones"));
                assert_eq!(doc.patient_info.given.as_deref(), Some("Isabella"));
                assert_eq!(doc.patient_info.birth_date.as_deref(), Some("19470501"));
                assert_eq!(doc.patient_info.sex.as_deref(), Some("F"));
                assert_eq!(doc.type_code.as_deref(), Some("34096-8"));
            }
        }
        Ok(())
    }

    #[test]
    fn reads_entries_ids_and_patient_info() -> Result<(), DocumentError> {
        let md = good_metadata();
        let package = read(
            &zip_of(&[
                ("IHE_XDM/S1/METADATA.XML", md.as_bytes()),
                ("IHE_XDM/S1/DOC.XML", DOC),
            ]),
            Limits::default(),
        )?;
        assert_eq!(package.warnings, []);
        let doc = &package.documents[0];
        assert_eq!(doc.bytes, DOC);
        assert_eq!(doc.type_code.as_deref(), Some("34133-9"));
        let id = |id: &str, oid: &str| PatientId {
            id: id.into(),
            authority: Some(oid.into()),
        };
        assert_eq!(doc.source_patient_id, Some(id("MRN-7", "1.2.3")));
        assert_eq!(doc.patient_id, Some(id("AFF-1", "7.7")));
        assert_eq!(package.submission_patient_id, Some(id("AFF-1", "7.7")));
        assert_eq!(
            doc.patient_info.ids,
            [id("MRN-7", "1.2.3"), id("99", "4.5")]
        );
        assert_eq!(doc.stated_hash.as_deref(), Some(sha1(DOC).as_str()));
        Ok(())
    }

    #[test]
    fn names_match_without_case_and_the_ris_layouts_read() -> Result<(), DocumentError> {
        let md = good_metadata();
        // Lower case throughout, no INDEX.HTM or README.TXT.
        let lower = zip_of(&[
            ("ihe_xdm/subset01/metadata.xml", md.as_bytes()),
            ("ihe_xdm/subset01/doc.xml", DOC),
        ]);
        // The RI's slash-less metadata name, the document in the subset folder.
        let slashless = zip_of(&[
            ("IHE_XDM/SUBSET01METADATA.xml", md.as_bytes()),
            ("IHE_XDM/SUBSET01/DOC.XML", DOC),
        ]);
        // ... or next to it, slash-less too.
        let slashless_doc = zip_of(&[
            ("IHE_XDM/SUBSET01METADATA.xml", md.as_bytes()),
            ("IHE_XDM/SUBSET01DOC.XML", DOC),
        ]);
        // A document elsewhere, found by its (unique) file name.
        let elsewhere = zip_of(&[
            ("IHE_XDM/SUBSET01/METADATA.XML", md.as_bytes()),
            ("IHE_XDM/DOC.XML", DOC),
        ]);
        for (name, zip) in [
            ("lower", lower),
            ("slashless", slashless),
            ("slashless_doc", slashless_doc),
            ("elsewhere", elsewhere),
        ] {
            assert!(is_xdm(&zip), "{name}");
            let package = read(&zip, Limits::default())?;
            assert_eq!(package.warnings, [], "{name}");
            assert_eq!(package.documents.len(), 1, "{name}");
            assert_eq!(package.documents[0].bytes, DOC, "{name}");
        }
        // Two subsets: both read, documents numbered across the package.
        let two = zip_of(&[
            ("IHE_XDM/SUBSET01/METADATA.XML", md.as_bytes()),
            ("IHE_XDM/SUBSET01/DOC.XML", DOC),
            ("IHE_XDM/SUBSET02/METADATA.XML", md.as_bytes()),
            ("IHE_XDM/SUBSET02/DOC.XML", DOC),
        ]);
        let package = read(&two, Limits::default())?;
        let paths: Vec<(usize, &str)> = package
            .documents
            .iter()
            .map(|d| (d.index, d.path.as_str()))
            .collect();
        assert_eq!(
            paths,
            [
                (1, "IHE_XDM/SUBSET01/DOC.XML"),
                (2, "IHE_XDM/SUBSET02/DOC.XML")
            ]
        );
        // Not XDM: a ZIP without metadata, or with it outside IHE_XDM/.
        for not in [
            zip_of(&[("DOC.XML", DOC)]),
            zip_of(&[("METADATA.XML", md.as_bytes()), ("DOC.XML", DOC)]),
            zip_of(&[("IHE_XDM/A/B/METADATA.XML", md.as_bytes())]),
        ] {
            assert!(!is_xdm(&not));
            assert!(matches!(
                read(&not, Limits::default()),
                Err(DocumentError::NotA(_))
            ));
        }
        Ok(())
    }

    #[test]
    fn a_hash_or_size_mismatch_is_a_warning_not_a_refusal() -> Result<(), DocumentError> {
        let md = good_metadata();
        let other = b"<ClinicalDocument xmlns=\"urn:hl7-org:v4\"/>";
        // Same size, other bytes: the hash differs.
        let tampered = zip_of(&[
            ("IHE_XDM/S1/METADATA.XML", md.as_bytes()),
            ("IHE_XDM/S1/DOC.XML", other),
        ]);
        let package = read(&tampered, Limits::default())?;
        assert_eq!(package.warnings, [Warning::HashMismatch { document: 1 }]);
        assert_eq!(package.documents[0].bytes, other, "still returned");
        assert_eq!(
            package.warnings[0].to_string(),
            "xdm: document 1 hash mismatch"
        );
        // Wrong size and hash.
        let longer = [DOC, b" "].concat();
        let zip = zip_of(&[
            ("IHE_XDM/S1/METADATA.XML", md.as_bytes()),
            ("IHE_XDM/S1/DOC.XML", &longer),
        ]);
        let package = read(&zip, Limits::default())?;
        assert_eq!(
            package.warnings,
            [
                Warning::SizeMismatch { document: 1 },
                Warning::HashMismatch { document: 1 }
            ]
        );
        // A listed file the archive lacks, and a URI that is a path: warnings, nothing read.
        let missing = zip_of(&[("IHE_XDM/S1/METADATA.XML", md.as_bytes())]);
        let package = read(&missing, Limits::default())?;
        assert_eq!(package.warnings, [Warning::Missing { document: 1 }]);
        assert!(package.documents.is_empty());
        let traversal = metadata("../x", 1, "00");
        let zip = zip_of(&[
            ("IHE_XDM/S1/METADATA.XML", traversal.as_bytes()),
            ("x", b"x"),
        ]);
        let package = read(&zip, Limits::default())?;
        assert_eq!(package.warnings, [Warning::UnsafeUri { document: 1 }]);
        // Metadata that is not XML: a warning when nothing else reads, else an error.
        let zip = zip_of(&[
            ("IHE_XDM/S1/METADATA.XML", b"<<<"),
            ("IHE_XDM/S1/DOC.XML", DOC),
        ]);
        assert!(matches!(
            read(&zip, Limits::default()),
            Err(DocumentError::NotA(_))
        ));
        Ok(())
    }

    #[test]
    fn traversal_absolute_and_odd_names_are_refused() {
        let md = good_metadata();
        for name in [
            "IHE_XDM/../../etc/passwd",
            "IHE_XDM/S1/../../x",
            "/etc/passwd",
            "IHE_XDM\\S1\\x",
        ] {
            let zip = zip_of(&[("IHE_XDM/S1/METADATA.XML", md.as_bytes()), (name, b"x")]);
            assert!(
                matches!(read(&zip, Limits::default()), Err(DocumentError::Zip(_))),
                "{name}"
            );
        }
        // The same name twice (in any case): which one the metadata's hash was for is unclear.
        let twice = zip_of(&[
            ("IHE_XDM/S1/METADATA.XML", md.as_bytes()),
            ("IHE_XDM/S1/DOC.XML", DOC),
            ("ihe_xdm/s1/doc.xml", b"other"),
        ]);
        assert!(matches!(
            read(&twice, Limits::default()),
            Err(DocumentError::Zip(_))
        ));
        assert!(read(b"not a zip", Limits::default()).is_err());
        assert!(!is_zip(b"not a zip") && !is_xdm(b"not a zip"));
        assert!(!is_xdm(b"PK\x03\x04 truncated"));
    }

    #[test]
    fn too_many_entries_are_refused() -> Result<(), DocumentError> {
        let md = good_metadata();
        let names: Vec<String> = (0..1001).map(|i| format!("IHE_XDM/S1/F{i}")).collect();
        let mut files: Vec<(&str, &[u8])> = vec![("IHE_XDM/S1/METADATA.XML", md.as_bytes())];
        files.extend(names.iter().map(|n| (n.as_str(), &b"x"[..])));
        assert!(matches!(
            read(&zip_of(&files), Limits::default()),
            Err(DocumentError::Zip(_))
        ));
        // 1,000 in all is the limit, and passes.
        files.truncate(999);
        files.push(("IHE_XDM/S1/DOC.XML", DOC));
        assert_eq!(files.len(), 1000);
        let package = read(&zip_of(&files), Limits::default())?;
        assert_eq!(package.documents.len(), 1);
        Ok(())
    }

    #[test]
    fn bombs_and_oversized_archives_are_refused() -> Result<(), DocumentError> {
        let md = good_metadata();
        let deflated =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        // A bomb: 16 MiB of zeros deflates to ~16 KiB, a ratio near 1000.
        let zeros = vec![0u8; 16 * 1024 * 1024];
        let bomb = zip_with(
            &[
                ("IHE_XDM/S1/METADATA.XML", md.as_bytes()),
                ("IHE_XDM/S1/BOMB", &zeros),
            ],
            deflated,
        );
        assert!(bomb.len() < 100 * 1024);
        assert_eq!(
            read(&bomb, Limits::default()),
            Err(DocumentError::CompressionRatio(200))
        );
        // Under the ratio floor, zeros are fine.
        let small = vec![0u8; 512 * 1024];
        let zip = zip_with(
            &[
                ("IHE_XDM/S1/METADATA.XML", md.as_bytes()),
                ("IHE_XDM/S1/DOC.XML", DOC),
                ("IHE_XDM/S1/Z", &small),
            ],
            deflated,
        );
        assert_eq!(read(&zip, Limits::default())?.documents.len(), 1);
        // Stored (not compressed) files: the per-entry and total caps.
        let mib = vec![b'x'; 1024 * 1024 + 1];
        let limits = Limits {
            max_entry_bytes: 1024 * 1024,
            ..Limits::default()
        };
        let big = zip_of(&[
            ("IHE_XDM/S1/METADATA.XML", md.as_bytes()),
            ("IHE_XDM/S1/BIG", &mib),
        ]);
        assert!(matches!(
            read(&big, limits),
            Err(DocumentError::TooLarge(_))
        ));
        let half = vec![b'x'; 600 * 1024];
        let limits = Limits {
            max_total_bytes: 1024 * 1024,
            ..Limits::default()
        };
        let total = zip_of(&[
            ("IHE_XDM/S1/METADATA.XML", md.as_bytes()),
            ("IHE_XDM/S1/A", &half),
            ("IHE_XDM/S1/B", &half),
        ]);
        assert!(matches!(
            read(&total, limits),
            Err(DocumentError::TooLarge(_))
        ));
        Ok(())
    }
}
