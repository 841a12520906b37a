//! Trust anchors and revocation lists, and path validation against them.
//!
//! Owns: loading certificates (PEM, DER, PKCS#7 certs-only bundles in DER or
//! PEM) and CRLs (PEM or DER), and [`TrustStore::verify`], which builds an
//! `X509Store` for one validation at an injected time and maps OpenSSL's
//! verify errors onto policy [`Violation`]s.
//!
//! Does not own: where anchors come from (files, a trust-bundle URL, the
//! database) nor any certificate policy beyond path validation (see `policy`).
//!
//! Every anchor is a trust anchor in its own right (`X509_V_FLAG_PARTIAL_CHAIN`):
//! Direct trust bundles routinely hold intermediate CAs. Revocation is checked
//! with `X509_V_FLAG_CRL_CHECK` (end-entity only) when the store holds a CRL
//! whose issuer is the end-entity's issuer; otherwise it is not checked.

use chrono::{DateTime, Utc};
use openssl::error::ErrorStack;
use openssl::pkcs7::Pkcs7;
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509, X509Crl, X509PurposeId, X509Ref, X509StoreContext, X509VerifyResult};

use super::ffi;
use super::policy::{KeyPurpose, Violation};

/// Errors loading trust material.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The input held no certificate (or no CRL) at all.
    #[error("no {0} found in the input")]
    Empty(&'static str),
    /// The input looked like `what` but did not parse.
    #[error("could not parse {what}: {source}")]
    Parse {
        what: &'static str,
        #[source]
        source: ErrorStack,
    },
    /// OpenSSL failed while building a store.
    #[error("openssl error: {0}")]
    Openssl(#[from] ErrorStack),
}

fn parse(what: &'static str) -> impl FnOnce(ErrorStack) -> TrustError {
    move |source| TrustError::Parse { what, source }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Loads every certificate in `bytes`: PEM (one or many), DER, or a PKCS#7
/// certs-only bundle (`.p7b`/`.p7c`) in DER or PEM.
pub fn load_certs(bytes: &[u8]) -> Result<Vec<X509>, TrustError> {
    let certs = if contains(bytes, b"-----BEGIN PKCS7-----") {
        p7_certs(&Pkcs7::from_pem(bytes).map_err(parse("PKCS#7 PEM bundle"))?)
    } else if contains(bytes, b"-----BEGIN CERTIFICATE-----")
        || contains(bytes, b"-----BEGIN TRUSTED CERTIFICATE-----")
    {
        X509::stack_from_pem(bytes).map_err(parse("PEM certificates"))?
    } else if let Ok(cert) = X509::from_der(bytes) {
        vec![cert]
    } else {
        p7_certs(&Pkcs7::from_der(bytes).map_err(parse("DER certificate or PKCS#7 bundle"))?)
    };
    if certs.is_empty() {
        return Err(TrustError::Empty("certificate"));
    }
    Ok(certs)
}

fn p7_certs(p7: &Pkcs7) -> Vec<X509> {
    p7.signed()
        .and_then(|s| s.certificates())
        .map(|st| st.iter().map(|c| c.to_owned()).collect())
        .unwrap_or_default()
}

/// Loads every CRL in `bytes` (one DER CRL, or one or more PEM CRLs).
pub fn load_crls(bytes: &[u8]) -> Result<Vec<X509Crl>, TrustError> {
    const BEGIN: &str = "-----BEGIN X509 CRL-----";
    const END: &str = "-----END X509 CRL-----";
    if !contains(bytes, BEGIN.as_bytes()) {
        return Ok(vec![X509Crl::from_der(bytes).map_err(parse("DER CRL"))?]);
    }
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let block = &rest[start..start + len + END.len()];
        out.push(X509Crl::from_pem(block.as_bytes()).map_err(parse("PEM CRL"))?);
        rest = &rest[start + len + END.len()..];
    }
    if out.is_empty() {
        return Err(TrustError::Empty("CRL"));
    }
    Ok(out)
}

/// Trust anchors plus optional CRLs. A fresh `X509Store` is built per
/// validation so that the validation time can be injected.
#[derive(Default)]
pub struct TrustStore {
    anchors: Vec<X509>,
    crls: Vec<X509Crl>,
}

impl std::fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustStore")
            .field("anchors", &self.anchors.len())
            .field("crls", &self.crls.len())
            .finish()
    }
}

impl TrustStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_anchors(anchors: Vec<X509>) -> Self {
        Self {
            anchors,
            crls: Vec::new(),
        }
    }

    pub fn add_anchor(&mut self, cert: X509) {
        self.anchors.push(cert);
    }

    /// Adds every certificate in `bytes` (see [`load_certs`]); returns how many.
    pub fn add_anchors(&mut self, bytes: &[u8]) -> Result<usize, TrustError> {
        let certs = load_certs(bytes)?;
        let n = certs.len();
        self.anchors.extend(certs);
        Ok(n)
    }

    pub fn add_crl(&mut self, crl: X509Crl) {
        self.crls.push(crl);
    }

    /// Adds every CRL in `bytes` (see [`load_crls`]); returns how many.
    pub fn add_crls(&mut self, bytes: &[u8]) -> Result<usize, TrustError> {
        let crls = load_crls(bytes)?;
        let n = crls.len();
        self.crls.extend(crls);
        Ok(n)
    }

    pub fn anchors(&self) -> &[X509] {
        &self.anchors
    }

    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// True when a CRL issued by `cert`'s issuer is loaded.
    pub fn has_crl_for(&self, cert: &X509Ref) -> bool {
        self.crls.iter().any(|crl| {
            crl.issuer_name()
                .try_cmp(cert.issuer_name())
                .is_ok_and(|o| o.is_eq())
        })
    }

    /// Builds an `X509Store` that validates at `now` for `purpose`.
    pub fn x509_store(
        &self,
        now: DateTime<Utc>,
        purpose: KeyPurpose,
        crl_check: bool,
    ) -> Result<X509Store, ErrorStack> {
        let mut b = X509StoreBuilder::new()?;
        for a in &self.anchors {
            b.add_cert(a.clone())?;
        }
        for crl in &self.crls {
            ffi::add_crl(&mut b, crl)?;
        }
        let mut param = X509VerifyParam::new()?;
        param.set_time(now.timestamp());
        let mut flags = X509VerifyFlags::PARTIAL_CHAIN | X509VerifyFlags::USE_CHECK_TIME;
        if crl_check {
            flags |= X509VerifyFlags::CRL_CHECK;
        }
        param.set_flags(flags)?;
        param.set_purpose(match purpose {
            KeyPurpose::Signing => X509PurposeId::SMIME_SIGN,
            KeyPurpose::Encryption => X509PurposeId::SMIME_ENCRYPT,
        })?;
        b.set_param(&param)?;
        Ok(b.build())
    }

    /// Validates `leaf` to an anchor at `now`, using `intermediates` (e.g. the
    /// certificates carried in the CMS). Returns the path, leaf first, anchor last.
    pub fn verify(
        &self,
        leaf: &X509Ref,
        intermediates: &[X509],
        now: DateTime<Utc>,
        purpose: KeyPurpose,
    ) -> Result<Vec<X509>, Violation> {
        let internal = |e: ErrorStack| Violation::UntrustedChain {
            reason: format!("validation failed internally: {e}"),
        };
        if self.anchors.is_empty() {
            return Err(Violation::UntrustedChain {
                reason: "no trust anchors configured".into(),
            });
        }
        let store = self
            .x509_store(now, purpose, self.has_crl_for(leaf))
            .map_err(internal)?;
        let mut chain = Stack::new().map_err(internal)?;
        for c in intermediates {
            chain.push(c.clone()).map_err(internal)?;
        }
        let mut ctx = X509StoreContext::new().map_err(internal)?;
        let outcome = ctx
            .init(&store, leaf, &chain, |c| {
                if c.verify_cert()? {
                    let path = c
                        .chain()
                        .map(|s| s.iter().map(|x| x.to_owned()).collect())
                        .unwrap_or_default();
                    Ok(Ok(path))
                } else {
                    Ok(Err((c.error(), c.error_depth())))
                }
            })
            .map_err(internal)?;
        outcome.map_err(|(err, depth)| map_verify_error(err, depth, leaf))
    }
}

fn map_verify_error(err: X509VerifyResult, depth: u32, leaf: &X509Ref) -> Violation {
    use openssl_sys as s;
    let reason = format!("{} (depth {depth})", err.error_string());
    match err.as_raw() {
        s::X509_V_ERR_CERT_REVOKED => Violation::Revoked,
        s::X509_V_ERR_CERT_HAS_EXPIRED if depth == 0 => Violation::Expired {
            not_after: leaf.not_after().to_string(),
        },
        s::X509_V_ERR_CERT_NOT_YET_VALID if depth == 0 => Violation::NotYetValid {
            not_before: leaf.not_before().to_string(),
        },
        s::X509_V_ERR_UNABLE_TO_GET_CRL
        | s::X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE
        | s::X509_V_ERR_CRL_SIGNATURE_FAILURE
        | s::X509_V_ERR_CRL_NOT_YET_VALID
        | s::X509_V_ERR_CRL_HAS_EXPIRED
        | s::X509_V_ERR_ERROR_IN_CRL_LAST_UPDATE_FIELD
        | s::X509_V_ERR_ERROR_IN_CRL_NEXT_UPDATE_FIELD
        | s::X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER
        | s::X509_V_ERR_KEYUSAGE_NO_CRL_SIGN
        | s::X509_V_ERR_DIFFERENT_CRL_SCOPE => Violation::RevocationUnknown { reason },
        _ => Violation::UntrustedChain { reason },
    }
}
