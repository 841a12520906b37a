//! Attachments of outbound messages: what a sender may attach (types checked against the
//! bytes, sizes, file names) and the upload's wire shape. Sealing and storing are the message
//! service's (`crate::messages`), reading one back is [`crate::messages::MessageService`]'s
//! `attachment`; the channels get them opened, as [`crate::channels::Attachment`].
//!
//! The declared type must match the bytes: PDF, TIFF, PNG, JPEG and ZIP by magic number
//! (the `infer` crate's matchers), `text/plain` as UTF-8 without NUL, XML as an optional BOM
//! and whitespace, then `<`. Whatever is declared, bytes that are an executable (MZ, ELF,
//! Mach-O) are refused.

use base64::Engine;
use openssl::hash::{MessageDigest, hash};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Every media type the gateway can check against the bytes (the default allow-list).
pub const CHECKED_TYPES: [&str; 8] = [
    "application/pdf",
    "image/tiff",
    "image/png",
    "image/jpeg",
    "text/plain",
    "application/xml",
    "text/xml",
    "application/zip",
];

/// Longest stored file name, bytes.
pub const MAX_FILENAME_BYTES: usize = 200;

/// The check a declared type gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    Pdf,
    Tiff,
    Png,
    Jpeg,
    Text,
    Xml,
    Zip,
}

impl Checked {
    /// The check for a media type (its essence: lower case, without parameters).
    pub fn of(media_type: &str) -> Option<Self> {
        Some(match essence(media_type).as_str() {
            "application/pdf" => Checked::Pdf,
            "image/tiff" => Checked::Tiff,
            "image/png" => Checked::Png,
            "image/jpeg" => Checked::Jpeg,
            "text/plain" => Checked::Text,
            "application/xml" | "text/xml" => Checked::Xml,
            "application/zip" => Checked::Zip,
            _ => return None,
        })
    }

    /// Whether `bytes` are of this type.
    pub fn matches(self, bytes: &[u8]) -> bool {
        if is_executable(bytes) {
            return false;
        }
        match self {
            Checked::Pdf => bytes.starts_with(b"%PDF-") && infer::archive::is_pdf(bytes),
            Checked::Tiff => infer::image::is_tiff(bytes),
            Checked::Png => infer::image::is_png(bytes),
            Checked::Jpeg => infer::image::is_jpeg(bytes),
            Checked::Zip => infer::archive::is_zip(bytes),
            Checked::Text => !bytes.contains(&0) && std::str::from_utf8(bytes).is_ok(),
            Checked::Xml => {
                let rest = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
                let start = rest.iter().position(|b| !b.is_ascii_whitespace());
                start.is_some_and(|i| rest[i] == b'<')
                    && !bytes.contains(&0)
                    && std::str::from_utf8(bytes).is_ok()
            }
        }
    }
}

/// Executable formats, never accepted under any declared type.
fn is_executable(bytes: &[u8]) -> bool {
    infer::app::is_exe(bytes) || infer::app::is_elf(bytes) || infer::app::is_mach(bytes)
}

/// What the bytes look like, for a refusal's detail (`None`: nothing recognised).
pub fn sniffed(bytes: &[u8]) -> Option<&'static str> {
    infer::get(bytes).map(|t| t.mime_type())
}

/// A media type's essence: lower case, parameters dropped.
pub fn essence(media_type: &str) -> String {
    media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Why an attachment is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachmentProblem {
    /// The type is not on `limits.allowed_attachment_types`.
    #[error("content_type {0} is not allowed")]
    TypeNotAllowed(String),
    /// The bytes are not of the declared type.
    #[error("the content is not {declared}{}", sniffed.map(|s| format!(" (it looks like {s})")).unwrap_or_default())]
    TypeMismatch {
        declared: String,
        sniffed: Option<&'static str>,
    },
    #[error("the content is empty")]
    Empty,
}

/// Checks a declared type against the allow-list and the bytes; the type's essence on success.
pub fn check(
    declared: &str,
    allowed: &[String],
    bytes: &[u8],
) -> Result<String, AttachmentProblem> {
    let kind = essence(declared);
    if !allowed.iter().any(|a| essence(a) == kind) {
        return Err(AttachmentProblem::TypeNotAllowed(kind));
    }
    let Some(checked) = Checked::of(&kind) else {
        return Err(AttachmentProblem::TypeNotAllowed(kind));
    };
    if bytes.is_empty() {
        return Err(AttachmentProblem::Empty);
    }
    if !checked.matches(bytes) {
        return Err(AttachmentProblem::TypeMismatch {
            declared: kind,
            sniffed: sniffed(bytes),
        });
    }
    Ok(kind)
}

/// A file name safe to store and to show: the last path component, control characters and
/// quotes removed, whitespace runs folded, leading dots dropped, at most
/// [`MAX_FILENAME_BYTES`] (the extension kept). Empty: `attachment`. Control characters
/// become spaces.
pub fn safe_filename(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .filter(|c| *c != '"')
        .map(|c| {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                ' '
            } else {
                c
            }
        })
        .collect();
    let folded = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    let name = folded.trim_start_matches('.').trim();
    if name.is_empty() {
        return "attachment".into();
    }
    if name.len() <= MAX_FILENAME_BYTES {
        return name.to_string();
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && ext.len() <= 16 => (stem, Some(ext)),
        _ => (name, None),
    };
    let room = MAX_FILENAME_BYTES - ext.map_or(0, |e| e.len() + 1);
    let mut cut = room.min(stem.len());
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    match ext {
        Some(ext) => format!("{}.{ext}", &stem[..cut]),
        None => stem[..cut].to_string(),
    }
}

/// SHA-256 of the bytes, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hash(MessageDigest::sha256(), bytes)
        .map(hex::encode)
        .unwrap_or_default()
}

/// One attachment of `POST /v1/messages` (JSON: `content_base64`; multipart: a file part).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentUpload {
    /// Shown to the recipient; paths and control characters are removed.
    pub filename: String,
    /// The media type, e.g. `application/pdf`; must be allowed and match the bytes.
    pub content_type: String,
    /// The bytes, decoded once from base64 while the body is read.
    #[serde(rename = "content_base64", deserialize_with = "from_base64")]
    pub content: Vec<u8>,
}

/// What an upload contributes to the idempotency fingerprint: its name, type and digest
/// (a repeat must carry the same file).
impl Serialize for AttachmentUpload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize, utoipa::ToSchema)]
        struct Digest<'a> {
            filename: &'a str,
            content_type: &'a str,
            sha256: String,
        }
        Digest {
            filename: &self.filename,
            content_type: &self.content_type,
            sha256: sha256_hex(&self.content),
        }
        .serialize(serializer)
    }
}

/// Standard base64 (line breaks and other whitespace tolerated).
fn from_base64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a base64 string")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Vec<u8>, E> {
            decode_base64(text).ok_or_else(|| E::custom("not valid base64"))
        }
    }
    deserializer.deserialize_str(Visitor)
}

/// Decodes standard base64; whitespace (line-wrapped base64) is removed first when present.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let engine = &base64::engine::general_purpose::STANDARD;
    match engine.decode(text) {
        Ok(bytes) => Some(bytes),
        Err(_) if text.bytes().any(|b| b.is_ascii_whitespace()) => {
            let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
            engine.decode(compact).ok()
        }
        Err(_) => None,
    }
}

/// `Content-Disposition: attachment` for a file name (RFC 6266): an ASCII `filename` fallback
/// (non-ASCII and specials replaced by `_`) and, when the name is not plain ASCII, its UTF-8
/// form as `filename*` (RFC 8187 percent-encoding).
pub fn content_disposition(filename: &str) -> String {
    let fallback: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '%' | ';') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let plain = fallback == filename;
    let mut value = format!("attachment; filename=\"{fallback}\"");
    if !plain {
        value.push_str("; filename*=UTF-8''");
        for byte in filename.bytes() {
            if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
                value.push(byte as char);
            } else {
                value.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    value
}

/// The process's budget for attachment bytes held in memory at once: uploads being read and
/// sealed (`POST /v1/messages`), deliveries being composed and sent (the worker). A request or
/// delivery reserves what it will hold before it holds it and waits while the budget is spent,
/// so the daemon's memory stays bounded however many clients upload at once; one reservation
/// larger than the whole budget is cut to it (that message then goes alone).
/// Sized by `limits.attachment_memory_bytes` of the first daemon in the process.
pub struct MemoryBudget {
    semaphore: std::sync::Arc<tokio::sync::Semaphore>,
    units: u32,
}

/// Budget granularity, bytes.
const BUDGET_UNIT: u64 = 64 * 1024;

static BUDGET: std::sync::OnceLock<MemoryBudget> = std::sync::OnceLock::new();

impl MemoryBudget {
    /// The process's budget (`bytes` sizes it on first use).
    pub fn of_process(bytes: u64) -> &'static MemoryBudget {
        BUDGET.get_or_init(|| MemoryBudget::new(bytes))
    }

    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: u64) -> Self {
        let units = u32::try_from(bytes.div_ceil(BUDGET_UNIT).max(1)).unwrap_or(u32::MAX / 2);
        MemoryBudget {
            semaphore: std::sync::Arc::new(tokio::sync::Semaphore::new(units as usize)),
            units,
        }
    }

    /// Waits until `bytes` (cut to the whole budget) are free, and holds them until the
    /// permit is dropped.
    pub async fn reserve(&self, bytes: u64) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let units = u32::try_from(bytes.div_ceil(BUDGET_UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.units);
        self.semaphore.clone().acquire_many_owned(units).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        CHECKED_TYPES.iter().map(|t| t.to_string()).collect()
    }

    const PDF: &[u8] = b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n";
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";
    const JPEG: &[u8] = b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0";
    const TIFF: &[u8] = b"II*\0\x08\0\0\0\x01\0\0\x01\x03\0";
    const ZIP: &[u8] = b"PK\x03\x04\x14\0\0\0\x08\0";
    const EXE: &[u8] = b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0%PDF-1.4";

    #[test]
    fn each_type_accepts_its_own_bytes() {
        let a = allowed();
        assert_eq!(
            check("application/pdf", &a, PDF),
            Ok("application/pdf".into())
        );
        assert_eq!(check("Image/PNG; x=1", &a, PNG), Ok("image/png".into()));
        assert!(check("image/jpeg", &a, JPEG).is_ok());
        assert!(check("image/tiff", &a, TIFF).is_ok());
        assert!(check("application/zip", &a, ZIP).is_ok());
        assert!(check("text/plain", &a, "Grüße\r\n".as_bytes()).is_ok());
        assert!(check("application/xml", &a, b"\xef\xbb\xbf \n<ClinicalDocument/>").is_ok());
        assert!(check("text/xml", &a, b"<?xml version=\"1.0\"?><a/>").is_ok());
    }

    #[test]
    fn an_executable_declared_as_pdf_is_refused() {
        let err = check("application/pdf", &allowed(), EXE).expect_err("refused");
        assert!(
            matches!(err, AttachmentProblem::TypeMismatch { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("application/pdf"), "{err}");
        // An executable is refused whatever is declared, even as text.
        assert!(check("text/plain", &allowed(), b"MZ plain words").is_err());
    }

    #[test]
    fn mismatches_are_refused() {
        let a = allowed();
        assert!(check("image/png", &a, PDF).is_err());
        assert!(check("application/pdf", &a, PNG).is_err());
        assert!(check("application/zip", &a, PDF).is_err());
        assert!(check("text/plain", &a, b"nul\0inside").is_err());
        assert!(check("text/plain", &a, b"\xff\xfe not utf-8").is_err());
        assert!(check("application/xml", &a, b"not xml").is_err());
        assert!(check("image/jpeg", &a, b"").is_err());
        assert_eq!(
            check("application/pdf", &a, b""),
            Err(AttachmentProblem::Empty)
        );
    }

    #[test]
    fn types_off_the_list_are_refused() {
        assert!(matches!(
            check("application/x-msdownload", &allowed(), EXE),
            Err(AttachmentProblem::TypeNotAllowed(_))
        ));
        let only_pdf = vec!["application/pdf".to_string()];
        assert!(matches!(
            check("image/png", &only_pdf, PNG),
            Err(AttachmentProblem::TypeNotAllowed(_))
        ));
    }

    #[test]
    fn file_names_lose_paths_controls_and_length() {
        assert_eq!(safe_filename("../../etc/passwd"), "passwd");
        assert_eq!(safe_filename("C:\\Users\\x\\scan.pdf"), "scan.pdf");
        assert_eq!(safe_filename("a\r\nb\t\"c\".pdf"), "a b c.pdf");
        assert_eq!(safe_filename(".hidden"), "hidden");
        assert_eq!(safe_filename("  "), "attachment");
        assert_eq!(safe_filename("dir/"), "attachment");
        let long = format!("{}.pdf", "é".repeat(300));
        let safe = safe_filename(&long);
        assert!(safe.len() <= MAX_FILENAME_BYTES, "{}", safe.len());
        assert!(safe.ends_with(".pdf"));
    }

    #[test]
    fn content_disposition_is_rfc6266_safe() {
        assert_eq!(
            content_disposition("report 1.pdf"),
            "attachment; filename=\"report 1.pdf\""
        );
        assert_eq!(
            content_disposition("résumé;.pdf"),
            "attachment; filename=\"r_sum__.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%3B.pdf"
        );
    }

    #[tokio::test]
    async fn the_memory_budget_makes_later_reservations_wait() {
        use futures::FutureExt;
        let budget = MemoryBudget::new(4 * BUDGET_UNIT);
        let first = budget.reserve(3 * BUDGET_UNIT).await.expect("first");
        // Over what is left: it waits; larger than the whole budget: cut to it, and waits too.
        assert!(budget.reserve(2 * BUDGET_UNIT).now_or_never().is_none());
        assert!(budget.reserve(1 << 40).now_or_never().is_none());
        let small = budget
            .reserve(1)
            .now_or_never()
            .flatten()
            .expect("one unit is free");
        drop((first, small));
        let whole = budget.reserve(1 << 40).now_or_never().flatten();
        assert!(
            whole.is_some(),
            "a reservation over the budget goes once it is free"
        );
    }

    #[test]
    fn base64_is_decoded_with_or_without_line_breaks() {
        assert_eq!(decode_base64("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(decode_base64("aGVs\r\nbG8="), Some(b"hello".to_vec()));
        assert_eq!(decode_base64("***"), None);
    }
}
