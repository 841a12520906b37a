//! Direct Applicability Statement v1.3 certificate and algorithm policy: the
//! checks that the `openssl` crate does not make for us.
//!
//! Owns: key strength (RSA ≥ 2048 bits), digest strength for certificate
//! signatures and CMS signers (no MD5/SHA-1), content-encryption strength (no
//! DES/3DES/RC2), address binding through subjectAltName only, validity against
//! an injected `now`, and key usage per purpose. Each failure is one
//! [`Violation`] variant whose `Display` is a human-readable reason.
//!
//! Does not own: chain building, trust anchors and revocation (see `trust`),
//! or signature arithmetic (see `smime`). It never logs certificate content.
//!
//! Decisions worth knowing:
//! * A trust anchor's own self-signature is not judged: RFC 5280 does not
//!   verify it, and many anchors in Direct bundles are SHA-1 self-signed. Every
//!   other certificate in the path is.
//! * `emailAddress` in the subject DN never binds a certificate to an address
//!   (Direct v1.3 requires subjectAltName); wildcards never bind.
//! * An RSASSA-PSS or EdDSA certificate signature is accepted without looking
//!   into the PSS parameters.

use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, Utc};
use openssl::asn1::Asn1Time;
use openssl::nid::Nid;
use openssl::pkey::Id;
use openssl::x509::{X509KeyUsage, X509Ref};

/// Minimum RSA modulus size accepted for any certificate in a Direct exchange.
pub const MIN_RSA_BITS: u32 = 2048;
/// Minimum EC field size accepted.
pub const MIN_EC_BITS: u32 = 256;

/// One reason a certificate, signature or message fails the Direct policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// The public key is smaller than the policy minimum.
    #[error(
        "{alg} key of {bits} bits is too weak (Direct v1.3 requires RSA of at least 2048 bits)"
    )]
    WeakKey { alg: String, bits: u32 },
    /// The public key is of a type the policy does not accept.
    #[error("unsupported public key type {alg}")]
    UnsupportedKey { alg: String },
    /// MD5, SHA-1 or another weak digest signs a certificate or a message.
    #[error("weak digest {alg} in the {usage} (MD5 and SHA-1 are not accepted)")]
    WeakDigest { alg: String, usage: DigestUse },
    /// The content-encryption algorithm is not AES-CBC or AES-GCM.
    #[error("content encryption {alg} is not accepted (AES-CBC or AES-GCM required)")]
    WeakCipher { alg: String },
    /// No subjectAltName rfc822Name/dNSName matches the address.
    #[error("certificate is not bound to the address by a subjectAltName rfc822Name or dNSName")]
    NotBoundToAddress,
    /// `now` is after notAfter.
    #[error("certificate expired ({not_after})")]
    Expired { not_after: String },
    /// `now` is before notBefore.
    #[error("certificate is not yet valid (valid from {not_before})")]
    NotYetValid { not_before: String },
    /// The KeyUsage extension does not allow this use.
    #[error("certificate key usage does not allow {needed}")]
    KeyUsage { needed: KeyPurpose },
    /// No path to a trust anchor, or the path is invalid.
    #[error("certificate does not chain to a trust anchor: {reason}")]
    UntrustedChain { reason: String },
    /// A CRL from the issuer lists the certificate.
    #[error("certificate has been revoked")]
    Revoked,
    /// A CRL for the issuer exists but could not be used (expired, bad signature…).
    #[error("revocation status could not be established: {reason}")]
    RevocationUnknown { reason: String },
    /// The CMS signature does not verify over the content.
    #[error("signature does not verify: {reason}")]
    BadSignature { reason: String },
    /// The message's From address is not the expected sender.
    #[error("the message From address does not match the sender")]
    FromMismatch,
}

/// What a digest was protecting when it was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestUse {
    /// The issuer's signature on a certificate.
    CertificateSignature,
    /// A CMS SignerInfo over the message.
    MessageSignature,
}

impl fmt::Display for DigestUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CertificateSignature => "certificate signature",
            Self::MessageSignature => "message signature",
        })
    }
}

/// What a certificate is being used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// Signing messages: needs digitalSignature.
    Signing,
    /// Receiving encrypted messages: needs keyEncipherment.
    Encryption,
}

impl fmt::Display for KeyPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Signing => "signing (digitalSignature)",
            Self::Encryption => "encryption (keyEncipherment)",
        })
    }
}

/// Which check a [`Verdict`] (or an inbound refusal) reports. Its `Display` is a stable
/// snake_case name, fit for storage and for operators' filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Check {
    /// The message does not parse as MIME / CMS where it must.
    Malformed,
    /// The message is not S/MIME enveloped (encrypted) data.
    NotEncrypted,
    /// None of our keys is a recipient, or decryption failed.
    Decrypt,
    ContentCipher,
    /// The decrypted content carries no signature.
    NotSigned,
    Signature,
    SignerDigest,
    KeyStrength,
    CertificateDigest,
    Validity,
    KeyUsage,
    AddressBinding,
    Chain,
    /// The signer's certificate is revoked, or its CRL could not be had.
    Revocation,
    FromHeader,
}

impl Check {
    /// The stable name (as `Display`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::NotEncrypted => "not_encrypted",
            Self::Decrypt => "decrypt",
            Self::ContentCipher => "content_cipher",
            Self::NotSigned => "not_signed",
            Self::Signature => "signature",
            Self::SignerDigest => "signer_digest",
            Self::KeyStrength => "key_strength",
            Self::CertificateDigest => "certificate_digest",
            Self::Validity => "validity",
            Self::KeyUsage => "key_usage",
            Self::AddressBinding => "address_binding",
            Self::Chain => "chain",
            Self::Revocation => "revocation",
            Self::FromHeader => "from_header",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The outcome of one check, for one signer (`signer = Some(index)`) or for the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub check: Check,
    pub signer: Option<usize>,
    pub result: Result<(), Violation>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.result.is_ok()
    }
}

/// Content-encryption algorithms seen in or chosen for an EnvelopedData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentCipher {
    Aes128Cbc,
    Aes192Cbc,
    Aes256Cbc,
    Aes128Gcm,
    Aes192Gcm,
    Aes256Gcm,
    DesEde3Cbc,
    Rc2Cbc,
    DesCbc,
    /// Anything else, as a dotted OID.
    Other(String),
}

impl fmt::Display for ContentCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Aes128Cbc => f.write_str("AES-128-CBC"),
            Self::Aes192Cbc => f.write_str("AES-192-CBC"),
            Self::Aes256Cbc => f.write_str("AES-256-CBC"),
            Self::Aes128Gcm => f.write_str("AES-128-GCM"),
            Self::Aes192Gcm => f.write_str("AES-192-GCM"),
            Self::Aes256Gcm => f.write_str("AES-256-GCM"),
            Self::DesEde3Cbc => f.write_str("3DES-CBC"),
            Self::Rc2Cbc => f.write_str("RC2-CBC"),
            Self::DesCbc => f.write_str("DES-CBC"),
            Self::Other(oid) => write!(f, "unknown cipher {oid}"),
        }
    }
}

/// Accepts AES in CBC or GCM mode; rejects DES, 3DES, RC2 and anything unknown.
pub fn check_content_cipher(cipher: &ContentCipher) -> Result<(), Violation> {
    match cipher {
        ContentCipher::Aes128Cbc
        | ContentCipher::Aes192Cbc
        | ContentCipher::Aes256Cbc
        | ContentCipher::Aes128Gcm
        | ContentCipher::Aes192Gcm
        | ContentCipher::Aes256Gcm => Ok(()),
        weak => Err(Violation::WeakCipher {
            alg: weak.to_string(),
        }),
    }
}

/// RSA ≥ [`MIN_RSA_BITS`], EC ≥ [`MIN_EC_BITS`]; other key types are refused.
pub fn check_key_strength(cert: &X509Ref) -> Result<(), Violation> {
    let key = cert.public_key().map_err(|_| Violation::UnsupportedKey {
        alg: "unreadable".into(),
    })?;
    let bits = key.bits();
    let (alg, min) = match key.id() {
        Id::RSA => ("RSA", MIN_RSA_BITS),
        Id::EC => ("EC", MIN_EC_BITS),
        other => {
            return Err(Violation::UnsupportedKey {
                alg: format!("{other:?}"),
            });
        }
    };
    if bits < min {
        return Err(Violation::WeakKey {
            alg: alg.into(),
            bits,
        });
    }
    Ok(())
}

/// True for the SHA-2 and SHA-3 families.
pub fn is_strong_digest(nid: Nid) -> bool {
    [
        Nid::SHA224,
        Nid::SHA256,
        Nid::SHA384,
        Nid::SHA512,
        Nid::SHA3_224,
        Nid::SHA3_256,
        Nid::SHA3_384,
        Nid::SHA3_512,
    ]
    .contains(&nid)
}

/// Rejects certificates signed with MD5, SHA-1 or another non-SHA-2/3 digest.
pub fn check_cert_digest(cert: &X509Ref) -> Result<(), Violation> {
    let obj = cert.signature_algorithm().object();
    let nid = obj.nid();
    if nid == Nid::RSASSAPSS {
        return Ok(());
    }
    match nid.signature_algorithms() {
        Some(algs) if is_strong_digest(algs.digest) => Ok(()),
        Some(algs)
            if algs.digest == Nid::UNDEF
                && [openssl_sys::NID_ED25519, openssl_sys::NID_ED448]
                    .contains(&algs.pkey.as_raw()) =>
        {
            Ok(())
        }
        _ => Err(Violation::WeakDigest {
            alg: obj.to_string(),
            usage: DigestUse::CertificateSignature,
        }),
    }
}

/// Rejects a CMS SignerInfo whose digestAlgorithm is not SHA-2/3.
pub fn check_signer_digest(nid: Nid, name: &str) -> Result<(), Violation> {
    if is_strong_digest(nid) {
        Ok(())
    } else {
        Err(Violation::WeakDigest {
            alg: name.to_string(),
            usage: DigestUse::MessageSignature,
        })
    }
}

/// notBefore ≤ `now` ≤ notAfter.
pub fn check_validity(cert: &X509Ref, now: DateTime<Utc>) -> Result<(), Violation> {
    let now = Asn1Time::from_unix(now.timestamp()).map_err(|e| Violation::UntrustedChain {
        reason: format!("time conversion failed: {e}"),
    })?;
    let before = cert.not_before();
    let after = cert.not_after();
    if matches!(before.compare(&now), Ok(Ordering::Greater) | Err(_)) {
        return Err(Violation::NotYetValid {
            not_before: before.to_string(),
        });
    }
    if matches!(after.compare(&now), Ok(Ordering::Less) | Err(_)) {
        return Err(Violation::Expired {
            not_after: after.to_string(),
        });
    }
    Ok(())
}

/// digitalSignature for signing, keyEncipherment for encryption; no KeyUsage extension allows both.
pub fn check_key_usage(cert: &X509Ref, purpose: KeyPurpose) -> Result<(), Violation> {
    let Some(ku) = cert.key_usage() else {
        return Ok(());
    };
    let needed = match purpose {
        KeyPurpose::Signing => X509KeyUsage::DIGITAL_SIGNATURE,
        KeyPurpose::Encryption => X509KeyUsage::KEY_ENCIPHERMENT,
    };
    if ku.contains(needed) {
        Ok(())
    } else {
        Err(Violation::KeyUsage { needed: purpose })
    }
}

/// Splits `local@domain` into (local, lowercased domain without a trailing dot).
fn split_address(address: &str) -> Option<(&str, String)> {
    let address = address.trim();
    let (local, domain) = address.rsplit_once('@')?;
    let domain = domain.trim_end_matches('.');
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return None;
    }
    Some((local, domain.to_ascii_lowercase()))
}

/// Direct binding: a subjectAltName rfc822Name equal to `address` (case-insensitive),
/// or a dNSName equal to its domain. Never a wildcard, never the subject DN.
pub fn check_address_binding(cert: &X509Ref, address: &str) -> Result<(), Violation> {
    let (local, domain) = split_address(address).ok_or(Violation::NotBoundToAddress)?;
    let Some(names) = cert.subject_alt_names() else {
        return Err(Violation::NotBoundToAddress);
    };
    for name in &names {
        if let Some(email) = name.email() {
            if email.contains('*') {
                continue;
            }
            if let Some((l, d)) = split_address(email)
                && l.eq_ignore_ascii_case(local)
                && d == domain
            {
                return Ok(());
            }
        } else if let Some(dns) = name.dnsname() {
            if dns.contains('*') {
                continue;
            }
            if dns.trim_end_matches('.').eq_ignore_ascii_case(&domain) {
                return Ok(());
            }
        }
    }
    Err(Violation::NotBoundToAddress)
}

/// The certificate-local checks for a signer bound to `address`, one verdict each
/// (chain, revocation and signature verdicts are added by the caller).
pub fn evaluate_signer(
    cert: &X509Ref,
    address: &str,
    now: DateTime<Utc>,
    signer: Option<usize>,
) -> Vec<Verdict> {
    let v = |check, result| Verdict {
        check,
        signer,
        result,
    };
    vec![
        v(Check::KeyStrength, check_key_strength(cert)),
        v(Check::CertificateDigest, check_cert_digest(cert)),
        v(Check::Validity, check_validity(cert, now)),
        v(Check::KeyUsage, check_key_usage(cert, KeyPurpose::Signing)),
        v(Check::AddressBinding, check_address_binding(cert, address)),
    ]
}

/// The time-independent checks `seal` applies to a certificate it uses for `purpose`.
pub fn check_for_use(cert: &X509Ref, purpose: KeyPurpose) -> Result<(), Violation> {
    check_key_strength(cert)?;
    check_key_usage(cert, purpose)?;
    let key_is_rsa = cert
        .public_key()
        .map(|k| k.id() == Id::RSA)
        .unwrap_or(false);
    if purpose == KeyPurpose::Encryption && !key_is_rsa {
        return Err(Violation::UnsupportedKey {
            alg: "non-RSA key for key transport".into(),
        });
    }
    Ok(())
}
