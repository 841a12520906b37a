//! Clinical documents as they arrive over Direct, without the daemon: XDM packages
//! (IHE XDM, `IHE_XDM/SUBSET01/METADATA.XML` and the documents it lists) and the C-CDA header
//! fields patient matching needs (patient name, birth date, sex, identifiers, author).
//!
//! A scaffold for now: the inbound Direct work fills it. What goes here must stay pure —
//! bounded parsing of bytes into typed values, no store, no network, no configuration.

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// The bytes are not a document of the expected kind.
    #[error("not a {0}")]
    NotA(&'static str),
    /// The document is larger than the limit given (bytes).
    #[error("larger than {0} bytes")]
    TooLarge(usize),
}
