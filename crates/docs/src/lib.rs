//! Clinical documents as they arrive over Direct, without the daemon: the C-CDA header fields
//! patient matching needs ([`ccda`]) and IHE XDM packages ([`xdm`]): the ZIP read safely, its
//! `METADATA.XML` submission read for each document's file, type, patient id and hash, and
//! each document checked against its stated size and hash (a mismatch is a warning).
//!
//! Everything here is bounded parsing of bytes into typed values: no store, no network, no
//! configuration. XML goes through one namespace-aware reader that refuses a DOCTYPE
//! (`xml.rs`).

pub mod ccda;
pub mod xdm;
mod xml;

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// The bytes are not a document of the expected kind.
    #[error("not a {0}")]
    NotA(&'static str),
    /// The document (or a part of a package) is larger than the limit (bytes).
    #[error("larger than {0} bytes")]
    TooLarge(usize),
    /// The XML is malformed or uses what we refuse (a DOCTYPE, an undeclared entity).
    #[error("XML: {0}")]
    Xml(String),
    /// The ZIP archive is malformed or unsafe (path traversal, too many entries, a bomb).
    #[error("ZIP: {0}")]
    Zip(String),
    /// An archive entry inflates to more than this many times its compressed size (a bomb).
    #[error("ZIP: an entry inflates more than {0} times its compressed size")]
    CompressionRatio(u64),
}

/// A file of the repository's `tests/data/` (unit tests of both readers use the shared vectors).
#[cfg(test)]
fn test_data(name: &str) -> Vec<u8> {
    let path = format!("{}/../../tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}
