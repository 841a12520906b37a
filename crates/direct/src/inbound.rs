//! Security processing of a received Direct message (Applicability Statement v1.3): [`accept`]
//! takes the raw message as it came from the HISP mailbox and either hands back the original
//! message with the signers that passed every check ([`Accepted`]), or says which check failed
//! ([`Refusal`]).
//!
//! Order: the outer From is the sender; decrypt with any of our keys (several during a
//! rollover); refuse DES/3DES/RC2; verify the signature; per signer: a SHA-2/3 digest, RSA ≥
//! 2048 (EC ≥ 256), a certificate not signed with MD5/SHA-1, validity at `now`,
//! digitalSignature, the sender bound by subjectAltName (rfc822Name or the domain's dNSName;
//! never the subject DN) and a path to the connector's *inbound* anchors for the sender's
//! domain; then, only for a signer that passed all of that, revocation by CRL (fetched through
//! the daemon's SSRF policy via [`Fetcher`], cached; `revocation.inbound_crl`, `hard` by
//! default); the inner From must be the sender. One good signer suffices.
//!
//! Owns the inbound order and what a refusal means for the daemon (`retryable`: the verdict
//! could not be reached, try again later). Does not own the rules (`policy`), path validation
//! (`trust`) or the CRL fetching (`discovery::revocation`). Never logs addresses or content.

use std::fmt;

use chrono::{DateTime, Utc};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use crate::anchors::{Anchors, Direction, domain_of};
use crate::discovery::options::CrlMode;
use crate::discovery::revocation::Fetcher;
use crate::open::{OpenedSigners, open_signers, subject_string};
use crate::policy::{Check, KeyPurpose, Verdict, Violation};
use crate::smime::{DirectError, Opened};
use crate::trust::TrustStore;

/// A message that passed security processing.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The original message, its cipher, every verdict; `signer_subjects` lists exactly the
    /// subjects of [`Accepted::signers`].
    pub opened: Opened,
    /// The outer From address, trimmed, lower-case.
    pub sender: String,
    /// The signers that passed every check, revocation included (MDNs are encrypted to these).
    pub signers: Vec<X509>,
}

/// Why a message was not accepted.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The failing check (its `Display` is a stable snake_case name).
    pub check: Check,
    /// For operators: algorithms, dates, hosts, OpenSSL errors; never addresses or content.
    pub reason: String,
    /// True only when the verdict could not be reached (a signer's CRL could not be had under
    /// `hard`): the daemon keeps the message and retries later.
    pub retryable: bool,
    /// Every check made, passed or failed.
    pub verdicts: Vec<Verdict>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.check, self.reason)
    }
}

impl std::error::Error for Refusal {}

impl Refusal {
    fn new(check: Check, reason: impl ToString, verdicts: Vec<Verdict>) -> Self {
        Self {
            check,
            reason: reason.to_string(),
            retryable: false,
            verdicts,
        }
    }
}

/// The refusal for an error of `open`.
fn refusal_of(err: DirectError) -> Refusal {
    match err {
        DirectError::Malformed(_) | DirectError::Openssl(_) => {
            Refusal::new(Check::Malformed, err, Vec::new())
        }
        DirectError::NotEncrypted(_) => Refusal::new(Check::NotEncrypted, err, Vec::new()),
        DirectError::NoMatchingRecipient | DirectError::Decrypt(_) => {
            Refusal::new(Check::Decrypt, err, Vec::new())
        }
        DirectError::Unsigned => Refusal::new(Check::NotSigned, err, Vec::new()),
        DirectError::Rejected { reason, verdicts } => {
            let check = if reason == Violation::FromMismatch {
                Check::FromHeader
            } else {
                verdicts
                    .iter()
                    .find(|v| v.result.as_ref().err() == Some(&reason))
                    .map_or(Check::Signature, |v| v.check)
            };
            Refusal::new(check, reason, verdicts)
        }
        // Seal-side errors; `open` does not return them.
        DirectError::InvalidAddress(_) | DirectError::NoRecipients | DirectError::Policy { .. } => {
            Refusal::new(Check::Malformed, err, Vec::new())
        }
    }
}

/// A signer's revocation status.
enum Status {
    /// Not revoked (`checked`: a CRL was consulted).
    Good { checked: bool },
    /// Revoked, or failed on re-validation with its CRL.
    Bad(Violation),
    /// The CRL could not be had or used, under `hard`.
    Unknown(Violation),
}

async fn revocation(
    fetcher: &Fetcher,
    mode: CrlMode,
    anchors: &TrustStore,
    cert: &X509,
    carried: &[X509],
    now: DateTime<Utc>,
) -> Status {
    let unknown = |reason: String| {
        if mode == CrlMode::Hard {
            Status::Unknown(Violation::RevocationUnknown { reason })
        } else {
            Status::Good { checked: false }
        }
    };
    let crls = match fetcher.crls_with(cert, mode).await {
        Ok(None) => return Status::Good { checked: false },
        Ok(Some(crls)) => crls,
        Err(e) => return unknown(e.to_string()),
    };
    let mut store = TrustStore::from_anchors(anchors.anchors().to_vec());
    for crl in crls {
        store.add_crl(crl);
    }
    if !store.has_crl_for(cert) {
        return unknown(
            "no CRL at the distribution point is issued by the certificate's issuer".into(),
        );
    }
    match store.verify(cert, carried, now, KeyPurpose::Signing) {
        Ok(_) => Status::Good { checked: true },
        Err(Violation::RevocationUnknown { reason }) => unknown(reason),
        Err(v) => Status::Bad(v),
    }
}

/// Security processing of `raw` (the message as received) at `now`: decrypt with one of
/// `my_keys`, verify, the v1.3 policy per signer, the chain to `anchors`' inbound anchors for
/// the sender's domain, then CRL revocation of each otherwise good signer through `fetcher`
/// under `fetcher.config.inbound_crl` (no fetcher: not checked).
pub async fn accept(
    raw: &[u8],
    my_keys: &[(X509, PKey<Private>)],
    anchors: &Anchors,
    fetcher: Option<&Fetcher>,
    now: DateTime<Utc>,
) -> Result<Accepted, Refusal> {
    let refuse = |r: Refusal| {
        tracing::info!(check = %r.check, retryable = r.retryable, "direct message refused");
        r
    };
    let sender = switchboard_mail::parse_headers(raw)
        .ok_or_else(|| Refusal::new(Check::Malformed, "message does not parse", Vec::new()))
        .and_then(|m| {
            switchboard_mail::mime::from_address(&m).ok_or_else(|| {
                Refusal::new(
                    Check::Malformed,
                    "the message has no From address",
                    Vec::new(),
                )
            })
        })
        .map_err(refuse)?
        .trim()
        .to_ascii_lowercase();
    let store = anchors.store_for(&domain_of(&sender), Direction::Inbound);
    let OpenedSigners {
        mut opened,
        good,
        carried,
    } = open_signers(raw, my_keys, &store, &sender, now).map_err(|e| refuse(refusal_of(e)))?;

    let Some(fetcher) = fetcher else {
        return Ok(Accepted {
            opened,
            sender,
            signers: good.into_iter().map(|(_, c)| c).collect(),
        });
    };
    let mode = fetcher.config.inbound_crl;
    let mut signers = Vec::new();
    let mut unknown = false;
    let mut failure = None;
    for (i, cert) in good {
        let result = match revocation(fetcher, mode, &store, &cert, &carried, now).await {
            Status::Good { checked } => {
                signers.push(cert);
                if !checked {
                    continue;
                }
                Ok(())
            }
            Status::Bad(v) => Err(v),
            Status::Unknown(v) => {
                unknown = true;
                Err(v)
            }
        };
        if let Err(v) = &result {
            failure.get_or_insert_with(|| v.clone());
        }
        opened.verdicts.push(Verdict {
            check: Check::Revocation,
            signer: Some(i),
            result,
        });
    }
    if signers.is_empty() {
        let reason = failure.map_or_else(|| "no signer left".to_string(), |v| v.to_string());
        return Err(refuse(Refusal {
            check: Check::Revocation,
            reason,
            retryable: unknown,
            verdicts: opened.verdicts,
        }));
    }
    opened.signer_subjects = signers.iter().map(|c| subject_string(c)).collect();
    Ok(Accepted {
        opened,
        sender,
        signers,
    })
}
