//! Direct S/MIME: [`seal`] an outbound message (wrap, sign, encrypt), and the
//! public face of [`open`] (decrypt, verify, apply the v1.3 policy, unwrap),
//! which lives in `open.rs`.
//!
//! Owns: the MIME shape of Direct messages (RFC 5751/8551 with the Direct
//! Applicability Statement v1.3 profile) and the order of checks on receipt.
//! Does not own: certificate discovery (DNS/LDAP), trust configuration (see
//! `trust`), the policy rules themselves (see `policy`), MDNs (see `mdn`), nor
//! transport. Nothing here logs message content or addresses.
//!
//! Outbound shape:
//! ```text
//! From/To/Cc/Date/Message-ID, generic Subject, MIME-Version
//! application/pkcs7-mime; smime-type=enveloped-data|authEnveloped-data (base64)
//!   └ multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256
//!       ├ message/rfc822  (the original message, verbatim with CRLF)
//!       └ application/pkcs7-signature (smime.p7s, detached SHA-256)
//! ```

use chrono::Utc;
use mail_parser::Message;
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::error::ErrorStack;
use openssl::md::Md;
use openssl::pkey::{PKeyRef, Private};
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::X509;

use super::policy::{self, ContentCipher, KeyPurpose, Verdict, Violation};
use super::{ffi, mime};

pub use super::open::{Opened, open, subject_string};

/// Errors from [`seal`] and [`open`]. None of them carries message content or addresses.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    /// The input is not a MIME message we can parse.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// The message is not an S/MIME EnvelopedData/AuthEnvelopedData.
    #[error("not an encrypted S/MIME message: {0}")]
    NotEncrypted(&'static str),
    /// None of our keys is a recipient of the message.
    #[error("no private key matches a recipient of the message")]
    NoMatchingRecipient,
    /// A key matched but decryption failed (corrupt data, wrong key, failed GCM tag).
    #[error("decryption failed: {0}")]
    Decrypt(String),
    /// The decrypted content carries no signature.
    #[error("message is not signed")]
    Unsigned,
    /// An address given to `seal` is not a valid mailbox address.
    #[error("invalid {0} address")]
    InvalidAddress(&'static str),
    /// `seal` was given no recipient certificate.
    #[error("no recipient certificate")]
    NoRecipients,
    /// A certificate given to `seal` fails the policy.
    #[error("{role} certificate not usable: {violation}")]
    Policy {
        role: &'static str,
        violation: Violation,
    },
    /// The message was decrypted but fails the Direct policy; `reason` is the
    /// first failure, `verdicts` all checks made.
    #[error("message rejected: {reason}")]
    Rejected {
        reason: Violation,
        verdicts: Vec<Verdict>,
    },
    /// OpenSSL failed for a reason other than the input.
    #[error("openssl error: {0}")]
    Openssl(#[from] ErrorStack),
}

/// Content-encryption algorithms `seal` can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SealCipher {
    Aes128Cbc,
    /// Default: every Direct v1.3 HISP must accept AES-256-CBC; GCM is RFC 8551.
    #[default]
    Aes256Cbc,
    Aes128Gcm,
    Aes256Gcm,
}

impl SealCipher {
    fn openssl(self) -> Cipher {
        match self {
            Self::Aes128Cbc => Cipher::aes_128_cbc(),
            Self::Aes256Cbc => Cipher::aes_256_cbc(),
            Self::Aes128Gcm => Cipher::aes_128_gcm(),
            Self::Aes256Gcm => Cipher::aes_256_gcm(),
        }
    }

    fn is_aead(self) -> bool {
        matches!(self, Self::Aes128Gcm | Self::Aes256Gcm)
    }
}

impl From<SealCipher> for ContentCipher {
    fn from(c: SealCipher) -> Self {
        match c {
            SealCipher::Aes128Cbc => Self::Aes128Cbc,
            SealCipher::Aes256Cbc => Self::Aes256Cbc,
            SealCipher::Aes128Gcm => Self::Aes128Gcm,
            SealCipher::Aes256Gcm => Self::Aes256Gcm,
        }
    }
}

/// How the content-encryption key is wrapped for each RSA recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyTransport {
    /// RSAES-OAEP with SHA-256 and MGF1-SHA-256 (RFC 4055/8017). Default.
    #[default]
    OaepSha256,
    /// RSAES-OAEP with SHA-1 and MGF1-SHA-1 (the RFC 4055 defaults).
    OaepSha1,
    /// RSAES-PKCS1-v1_5, for peers that cannot decrypt OAEP.
    Pkcs1v15,
}

/// Options for [`seal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealOptions {
    pub cipher: SealCipher,
    /// Wrap the original message as message/rfc822 (Direct's recommended
    /// form, which protects its headers). When `false` only the MIME body is
    /// signed and the original Subject travels in the clear outer header.
    pub wrap: bool,
    pub key_transport: KeyTransport,
}

impl Default for SealOptions {
    fn default() -> Self {
        Self {
            cipher: SealCipher::default(),
            wrap: true,
            key_transport: KeyTransport::default(),
        }
    }
}

/// The generic Subject of a wrapped outbound message: the real one is inside.
pub const OUTER_SUBJECT: &str = "Direct Secure Message";

const CRLF: &[u8] = b"\r\n";

fn check_address(addr: &str, role: &'static str) -> Result<(), DirectError> {
    addr.parse::<lettre::Address>()
        .map(|_| ())
        .map_err(|_| DirectError::InvalidAddress(role))
}

/// Wraps, signs (detached SHA-256) and encrypts `inner_rfc822` from `from` to
/// every certificate in `recipient_certs`. Returns the complete RFC 5322
/// message (CRLF line ends) ready for SMTP.
///
/// `signer_cert` must bind `from` and pass the time-independent policy checks;
/// each recipient certificate must hold an RSA key of at least 2048 bits
/// allowing keyEncipherment. Trust in recipient certificates is the caller's
/// (certificate discovery's) responsibility.
#[allow(clippy::too_many_arguments)]
pub fn seal(
    inner_rfc822: &[u8],
    from: &str,
    to: &[&str],
    signer_cert: &X509,
    signer_key: &PKeyRef<Private>,
    signer_chain: &[X509],
    recipient_certs: &[X509],
    opts: SealOptions,
) -> Result<Vec<u8>, DirectError> {
    check_seal_inputs(from, to, signer_cert, recipient_certs)?;
    let inner = mime::to_crlf(inner_rfc822);
    let msg = parse_for_seal(&inner, opts.wrap)?;
    let signer = Signer {
        cert: signer_cert,
        key: signer_key,
        chain: signer_chain,
    };
    // The multipart/signed entity is dropped as soon as it is encrypted.
    let env = encrypt(
        &signed_multipart(&inner, &msg, opts.wrap, &signer)?,
        recipient_certs,
        opts,
    )?;
    let mut out = outer_headers(&msg, from, to, opts)?;
    mime::append_base64_folded(&mut out, &env);
    Ok(out)
}

/// The addresses are mailboxes, there is a recipient, and every certificate
/// passes the time-independent policy checks for its use.
fn check_seal_inputs(
    from: &str,
    to: &[&str],
    signer_cert: &X509,
    recipient_certs: &[X509],
) -> Result<(), DirectError> {
    check_address(from, "sender")?;
    for t in to {
        check_address(t, "recipient")?;
    }
    if recipient_certs.is_empty() {
        return Err(DirectError::NoRecipients);
    }
    let pol = |role| move |violation| DirectError::Policy { role, violation };
    policy::check_for_use(signer_cert, KeyPurpose::Signing).map_err(pol("signer"))?;
    policy::check_address_binding(signer_cert, from).map_err(pol("signer"))?;
    for r in recipient_certs {
        policy::check_for_use(r, KeyPurpose::Encryption).map_err(pol("recipient"))?;
    }
    Ok(())
}

/// Parses what `seal` needs of the message: its top-level header fields and,
/// when not wrapping, where its body starts.
///
/// When wrapping only the header section is parsed: the body (typically a
/// large base64 attachment) travels verbatim, and decoding it would be most
/// of the cost of sealing. A message without any header field falls back to
/// the full parse, which accepts it as before.
fn parse_for_seal(inner: &[u8], wrap: bool) -> Result<Message<'_>, DirectError> {
    let parsed = if wrap {
        switchboard_mail::parse_headers(inner).or_else(|| switchboard_mail::parse_message(inner))
    } else {
        switchboard_mail::parse_message(inner)
    };
    parsed.ok_or(DirectError::Malformed("the message to seal does not parse"))
}

/// The signing identity handed to [`seal`].
struct Signer<'a> {
    cert: &'a X509,
    key: &'a PKeyRef<Private>,
    chain: &'a [X509],
}

/// The multipart/signed entity: the entity to sign (see [`append_entity`])
/// and its detached SHA-256 signature as application/pkcs7-signature.
///
/// The entity is written once, straight into the multipart, and signed in
/// place. Its boundary is chosen against `inner`: every byte of the entity
/// outside `inner` is a fixed Content-* line, and a boundary has no line end,
/// so it cannot straddle lines.
fn signed_multipart(
    inner: &[u8],
    msg: &Message<'_>,
    wrap: bool,
    signer: &Signer<'_>,
) -> Result<Vec<u8>, DirectError> {
    let b = mime::boundary(inner)?;
    let mut signed = Vec::with_capacity(inner.len() + 8 * 1024);
    signed.extend_from_slice(
        format!(
            "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";\r\n\
             \tmicalg=sha-256; boundary=\"{b}\"\r\n\r\n--{b}\r\n"
        )
        .as_bytes(),
    );
    let entity_start = signed.len();
    append_entity(&mut signed, inner, msg, wrap);
    // G8: the CRLF before the next boundary belongs to the boundary, not to the entity.
    let sig = sign_detached(signed.get(entity_start..).unwrap_or_default(), signer)?;
    signed.extend_from_slice(
        format!(
            "\r\n--{b}\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n"
        )
        .as_bytes(),
    );
    mime::append_base64_folded(&mut signed, &sig);
    signed.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    Ok(signed)
}

/// Appends the entity to sign: the whole message as message/rfc822 when
/// wrapping, else its Content-* header fields and body.
fn append_entity(out: &mut Vec<u8>, inner: &[u8], msg: &Message<'_>, wrap: bool) {
    if wrap {
        out.extend_from_slice(b"Content-Type: message/rfc822\r\n");
        if !inner.is_ascii() {
            out.extend_from_slice(b"Content-Transfer-Encoding: 8bit\r\n");
        }
        out.extend_from_slice(CRLF);
        out.extend_from_slice(inner);
    } else {
        out.extend_from_slice(&mime::raw_header_lines(msg, |n| {
            n.to_ascii_lowercase().starts_with("content-")
        }));
        if !mime::has_header(msg, "content-type") {
            out.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n");
        }
        out.extend_from_slice(CRLF);
        let body = inner
            .get(msg.root_part().raw_body_offset() as usize..)
            .unwrap_or_default();
        out.extend_from_slice(body);
    }
}

/// A detached CMS SignedData (DER) over exactly `entity`, binary (no
/// canonicalisation: the entity already has CRLF line ends).
fn sign_detached(entity: &[u8], signer: &Signer<'_>) -> Result<Vec<u8>, DirectError> {
    let mut chain = Stack::new()?;
    for c in signer.chain {
        chain.push(c.clone())?;
    }
    let cms = CmsContentInfo::sign(
        Some(signer.cert),
        Some(signer.key),
        Some(&chain),
        Some(entity),
        CMSOptions::DETACHED | CMSOptions::BINARY,
    )?;
    Ok(cms.to_der()?)
}

/// The (Auth)EnvelopedData (DER) of `signed` for every recipient.
fn encrypt(
    signed: &[u8],
    recipient_certs: &[X509],
    opts: SealOptions,
) -> Result<Vec<u8>, DirectError> {
    let md = match opts.key_transport {
        KeyTransport::OaepSha256 => Some(Md::sha256()),
        KeyTransport::OaepSha1 => Some(Md::sha1()),
        KeyTransport::Pkcs1v15 => None,
    };
    Ok(ffi::encrypt(signed, recipient_certs, opts.cipher.openssl(), md)?.to_der()?)
}

/// The outer header section, blank line included: the addressing fields of
/// the inner message (or made from `from`/`to`), a Subject (generic when
/// wrapping), and the application/pkcs7-mime Content-* fields.
fn outer_headers(
    msg: &Message<'_>,
    from: &str,
    to: &[&str],
    opts: SealOptions,
) -> Result<Vec<u8>, DirectError> {
    let mut out = mime::raw_header_lines(msg, |n| {
        ["from", "to", "cc", "date", "message-id"].contains(&n.to_ascii_lowercase().as_str())
    });
    if !mime::has_header(msg, "from") {
        out.extend_from_slice(format!("From: <{from}>\r\n").as_bytes());
    }
    if !mime::has_header(msg, "to") && !to.is_empty() {
        let list: Vec<String> = to.iter().map(|t| format!("<{t}>")).collect();
        out.extend_from_slice(format!("To: {}\r\n", list.join(", ")).as_bytes());
    }
    if !mime::has_header(msg, "date") {
        out.extend_from_slice(format!("Date: {}\r\n", Utc::now().to_rfc2822()).as_bytes());
    }
    if !mime::has_header(msg, "message-id") {
        let mut rnd = [0u8; 16];
        openssl::rand::rand_bytes(&mut rnd)?;
        let domain = from.rsplit_once('@').map(|(_, d)| d).unwrap_or("localhost");
        out.extend_from_slice(
            format!("Message-ID: <{}@{domain}>\r\n", mime::hex_string(&rnd)).as_bytes(),
        );
    }
    if opts.wrap {
        out.extend_from_slice(format!("Subject: {OUTER_SUBJECT}\r\n").as_bytes());
    } else {
        out.extend_from_slice(&mime::raw_header_lines(msg, |n| {
            n.eq_ignore_ascii_case("subject")
        }));
    }
    let smime_type = if opts.cipher.is_aead() {
        "authEnveloped-data"
    } else {
        "enveloped-data"
    };
    out.extend_from_slice(
        format!(
            "MIME-Version: 1.0\r\n\
             Content-Type: application/pkcs7-mime; smime-type={smime_type}; name=\"smime.p7m\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n"
        )
        .as_bytes(),
    );
    Ok(out)
}
