//! Inbound Direct S/MIME: [`open`] decrypts, verifies the detached (or
//! opaque) signature, applies the v1.3 policy per signer and unwraps the
//! original message. Re-exported from `smime`.
//!
//! Owns: the order of checks on receipt and what "accepted" means (at least
//! one signer valid, trusted, policy-conformant and bound to the sender, and
//! the inner From is the sender). Does not own the rules (`policy`), trust
//! (`trust`) or the outbound shape (`smime`). Never logs content or addresses.

use chrono::{DateTime, Utc};
use mail_parser::MimeHeaders;
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509, X509Ref};

use super::cms::envelope_info;
use super::policy::{self, Check, ContentCipher, KeyPurpose, Verdict, Violation};
use super::smime::DirectError;
use super::trust::TrustStore;
use super::{ffi, mime};

/// A message that passed [`open`].
#[derive(Debug, Clone)]
pub struct Opened {
    /// The original RFC 5322 message (unwrapped from message/rfc822, or the
    /// outer headers plus the signed entity when the sender did not wrap).
    pub inner: Vec<u8>,
    /// Whether the sender wrapped the message as message/rfc822.
    pub wrapped: bool,
    /// Subject DNs of the signers that passed every check.
    pub signer_subjects: Vec<String>,
    /// The content-encryption algorithm the sender used.
    pub cipher: ContentCipher,
    /// Every check made, passed or failed (failed ones may belong to other signers).
    pub verdicts: Vec<Verdict>,
}

/// The subject DN as `CN=…, O=…` text (for display and audit, not for logs).
pub fn subject_string(cert: &X509Ref) -> String {
    cert.subject_name()
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let val = e.data().to_string().unwrap_or_default();
            format!("{key}={val}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn reject(verdicts: Vec<Verdict>) -> DirectError {
    let (check, reason) = verdicts
        .iter()
        .find_map(|v| v.result.clone().err().map(|e| (v.check, e)))
        .unwrap_or((
            Check::Signature,
            Violation::BadSignature {
                reason: "no acceptable signer".into(),
            },
        ));
    // Reasons name algorithms, dates and OpenSSL errors, never addresses or content.
    tracing::info!(%check, %reason, "direct message rejected");
    DirectError::Rejected { reason, verdicts }
}

/// Decrypts `raw` with one of `my_keys`, verifies its signature, applies the
/// Direct v1.3 policy at `now` and returns the original message.
///
/// Accepted when at least one signer has a valid signature, a strong digest,
/// a policy-conformant certificate that is bound to `sender` by
/// subjectAltName and chains to `trust` (and is not revoked per loaded CRLs),
/// and the inner From address is `sender`.
pub fn open(
    raw: &[u8],
    my_keys: &[(X509, PKey<Private>)],
    trust: &TrustStore,
    sender: &str,
    now: DateTime<Utc>,
) -> Result<Opened, DirectError> {
    open_signers(raw, my_keys, trust, sender, now).map(|o| o.opened)
}

/// What [`open_signers`] returns beyond [`Opened`]: the good signers' certificates (in the
/// order of `opened.signer_subjects`) and the certificates the signature carried.
pub(super) struct OpenedSigners {
    pub opened: Opened,
    pub good: Vec<(usize, X509)>,
    pub carried: Vec<X509>,
}

/// [`open`], keeping the certificates (for revocation checks and MDN encryption).
pub(super) fn open_signers(
    raw: &[u8],
    my_keys: &[(X509, PKey<Private>)],
    trust: &TrustStore,
    sender: &str,
    now: DateTime<Utc>,
) -> Result<OpenedSigners, DirectError> {
    let outer = switchboard_mail::parse_message(raw)
        .ok_or(DirectError::Malformed("message does not parse"))?;
    let mtype = mime::mime_type(&outer);
    if mtype != "application/pkcs7-mime" && mtype != "application/x-pkcs7-mime" {
        return Err(DirectError::NotEncrypted("not application/pkcs7-mime"));
    }
    if let Some(st) = mime::ct_param(&outer, "smime-type") {
        let st = st.to_ascii_lowercase();
        if st != "enveloped-data" && st != "authenveloped-data" {
            return Err(DirectError::NotEncrypted(
                "smime-type is not enveloped-data",
            ));
        }
    }
    let env = CmsContentInfo::from_der(outer.root_part().contents())
        .map_err(|_| DirectError::Malformed("encrypted part is not CMS"))?;
    let (kind, cipher) =
        envelope_info(&env).ok_or(DirectError::NotEncrypted("CMS is not (auth)enveloped data"))?;

    let mut verdicts = vec![Verdict {
        check: Check::ContentCipher,
        signer: None,
        result: policy::check_content_cipher(&cipher),
    }];
    if !verdicts[0].passed() {
        return Err(reject(verdicts));
    }

    let decrypted = decrypt(&env, my_keys)?;
    let (signed_entity, sig_der, detached) = split_signed(&decrypted)?;

    // Signature arithmetic. Exact bytes first; then, for content stored with
    // bare LFs, OpenSSL's canonicalising (non-binary) mode.
    let mut sig = None;
    let mut last_err = String::new();
    for flags in [
        CMSOptions::NOVERIFY | CMSOptions::BINARY,
        CMSOptions::NOVERIFY,
    ] {
        let mut cms = CmsContentInfo::from_der(&sig_der)
            .map_err(|_| DirectError::Malformed("signature is not CMS"))?;
        let mut content = Vec::new();
        let data = detached.then_some(signed_entity.as_slice());
        match cms.verify(None, None, data, Some(&mut content), flags) {
            Ok(()) => {
                sig = Some((cms, content));
                break;
            }
            Err(e) => last_err = e.to_string(),
        }
    }
    let Some((sig_cms, content)) = sig else {
        verdicts.push(Verdict {
            check: Check::Signature,
            signer: None,
            result: Err(Violation::BadSignature { reason: last_err }),
        });
        return Err(reject(verdicts));
    };
    verdicts.push(Verdict {
        check: Check::Signature,
        signer: None,
        result: Ok(()),
    });
    let entity = if detached { signed_entity } else { content };

    // Per-signer policy and trust.
    let carried = ffi::certs(&sig_cms);
    let mut good = Vec::new();
    let mut good_certs = Vec::new();
    let mut signer_verdicts = Vec::new();
    for (i, s) in ffi::signers(&sig_cms).into_iter().enumerate() {
        let mut v = vec![Verdict {
            check: Check::SignerDigest,
            signer: Some(i),
            result: policy::check_signer_digest(s.digest, &s.digest_name),
        }];
        let Some(cert) = s.cert else {
            v.push(Verdict {
                check: Check::Signature,
                signer: Some(i),
                result: Err(Violation::BadSignature {
                    reason: "signer certificate not found".into(),
                }),
            });
            signer_verdicts.extend(v);
            continue;
        };
        v.extend(policy::evaluate_signer(&cert, sender, now, Some(i)));
        match trust.verify(&cert, &carried, now, KeyPurpose::Signing) {
            Ok(path) => {
                v.push(Verdict {
                    check: Check::Chain,
                    signer: Some(i),
                    result: Ok(()),
                });
                // The v1.3 rules hold for every certificate on the path, not only the
                // signer's: judge the intermediates' issuer signatures and keys (the leaf
                // was judged above; the anchor's self-signature is not judged, see `policy`).
                let n = path.len();
                for c in path.iter().take(n.saturating_sub(1)).skip(1) {
                    for (check, result) in [
                        (Check::CertificateDigest, policy::check_cert_digest(c)),
                        (Check::KeyStrength, policy::check_key_strength(c)),
                    ] {
                        if result.is_err() {
                            v.push(Verdict {
                                check,
                                signer: Some(i),
                                result,
                            });
                        }
                    }
                }
            }
            Err(e) => v.push(Verdict {
                check: Check::Chain,
                signer: Some(i),
                result: Err(e),
            }),
        }
        if v.iter().all(Verdict::passed) {
            good.push(subject_string(&cert));
            good_certs.push((i, cert));
        }
        signer_verdicts.extend(v);
    }
    // Failures of a rejected message are reported signer by signer, in check order.
    verdicts.extend(signer_verdicts);
    if good.is_empty() {
        return Err(reject(verdicts));
    }

    let (inner, wrapped) = unwrap(&entity, &outer)?;
    let from_ok = switchboard_mail::parse_headers(&inner)
        .and_then(|m| mime::from_address(&m))
        .is_some_and(|f| f.eq_ignore_ascii_case(sender.trim()));
    verdicts.push(Verdict {
        check: Check::FromHeader,
        signer: None,
        result: if from_ok {
            Ok(())
        } else {
            Err(Violation::FromMismatch)
        },
    });
    if !from_ok {
        // Not `reject`: other signers' failures must not mask this reason.
        tracing::info!(check = %Check::FromHeader, "direct message rejected");
        return Err(DirectError::Rejected {
            reason: Violation::FromMismatch,
            verdicts,
        });
    }
    tracing::debug!(?kind, %cipher, signers = good.len(), wrapped, "direct message opened");
    Ok(OpenedSigners {
        opened: Opened {
            inner,
            wrapped,
            signer_subjects: good,
            cipher,
            verdicts,
        },
        good: good_certs,
        carried,
    })
}

fn decrypt(
    env: &CmsContentInfo,
    my_keys: &[(X509, PKey<Private>)],
) -> Result<Vec<u8>, DirectError> {
    // Only try keys whose certificate a KeyTransRecipientInfo names: this gives
    // a clear "not for us" and avoids feeding foreign RecipientInfos to our keys.
    let (cert, key) = my_keys
        .iter()
        .find(|(cert, _)| ffi::is_recipient(env, cert))
        .ok_or(DirectError::NoMatchingRecipient)?;
    env.decrypt(key, cert)
        .map_err(|e| DirectError::Decrypt(e.to_string()))
}

/// Splits a decrypted entity into (signed bytes, signature DER, detached?).
/// Opaque signed-data yields (empty, DER, false).
pub(super) fn split_signed(entity: &[u8]) -> Result<(Vec<u8>, Vec<u8>, bool), DirectError> {
    let msg = switchboard_mail::parse_message(entity)
        .ok_or(DirectError::Malformed("decrypted content does not parse"))?;
    match mime::mime_type(&msg).as_str() {
        "multipart/signed" => {
            let children = msg.root_part().sub_parts().unwrap_or_default();
            let (Some(&c), Some(&s)) = (children.first(), children.get(1)) else {
                return Err(DirectError::Malformed("multipart/signed needs two parts"));
            };
            let (Some(content), Some(sig)) = (msg.parts.get(c as usize), msg.parts.get(s as usize))
            else {
                return Err(DirectError::Malformed("multipart/signed parts missing"));
            };
            let signed = msg
                .raw_message()
                .get(content.raw_header_offset() as usize..content.raw_end_offset() as usize)
                .ok_or(DirectError::Malformed("signed part out of range"))?;
            let sig_type = sig
                .content_type()
                .map(|ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default()))
                .unwrap_or_default()
                .to_ascii_lowercase();
            if !sig_type.ends_with("pkcs7-signature") {
                return Err(DirectError::Unsigned);
            }
            Ok((signed.to_vec(), sig.contents().to_vec(), true))
        }
        "application/pkcs7-mime" | "application/x-pkcs7-mime" => {
            let st = mime::ct_param(&msg, "smime-type").unwrap_or("signed-data");
            if !st.eq_ignore_ascii_case("signed-data") {
                return Err(DirectError::Unsigned);
            }
            Ok((Vec::new(), msg.root_part().contents().to_vec(), false))
        }
        _ => Err(DirectError::Unsigned),
    }
}

/// The original message from the signed entity: the body of a message/rfc822
/// entity (base64 or quoted-printable tolerated), or, for an unwrapped message,
/// the outer non-MIME headers followed by the entity.
pub(super) fn unwrap(
    entity: &[u8],
    outer: &mail_parser::Message<'_>,
) -> Result<(Vec<u8>, bool), DirectError> {
    // The header is all that is needed (the body is decoded below, if wrapped).
    let msg = switchboard_mail::parse_headers(entity)
        .ok_or(DirectError::Malformed("signed content does not parse"))?;
    if mime::mime_type(&msg) == "message/rfc822" {
        let start =
            mime::body_start(entity).ok_or(DirectError::Malformed("wrapped part has no body"))?;
        let body = entity.get(start..).unwrap_or_default();
        let inner = mime::transfer_decode(mime::root_cte(&msg), body)
            .ok_or(DirectError::Malformed("wrapped part encoding is invalid"))?;
        return Ok((inner, true));
    }
    let mut inner = mime::raw_header_lines(outer, |n| {
        let n = n.to_ascii_lowercase();
        !n.starts_with("content-") && n != "mime-version"
    });
    inner.extend_from_slice(b"MIME-Version: 1.0\r\n");
    inner.extend_from_slice(entity);
    Ok((inner, false))
}
