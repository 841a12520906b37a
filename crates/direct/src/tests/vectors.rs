//! Third-party vectors: the ONC Edge Testing Tool message, the Direct RI
//! certificates and the trust bundle.

use super::*;
use crate::policy::{self, Check, DigestUse, KeyPurpose, Violation};
use crate::smime::{DirectError, open};
use crate::trust::{TrustStore, load_certs};

fn ri(name: &str) -> X509 {
    let bytes = std::fs::read(vectors().join("ri-certs").join(name)).expect("ri cert");
    X509::from_der(&bytes).expect("der cert")
}

/// The ETT p12 needs OpenSSL 3's legacy provider (RC2-40); convert it with the
/// CLI rather than loading the provider into the test process.
fn ett_identity() -> (X509, PKey<Private>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p12 = vectors().join("messages/ett-testCert.p12");
    let pem = ossl(
        dir.path(),
        &[
            "pkcs12",
            "-legacy",
            "-in",
            &p12.display().to_string(),
            "-passin",
            "pass:",
            "-nodes",
        ],
    );
    let cert = X509::from_pem(&pem).expect("cert");
    let key = PKey::private_key_from_pem(&pem).expect("key");
    (cert, key)
}

#[test]
fn ett_message_decrypts_then_is_rejected_under_v13_policy() -> TestResult {
    let raw = std::fs::read(vectors().join("messages/ett-TestGeneratedMessage.txt"))?;
    let (cert, key) = ett_identity();
    let signer_anchor = TrustStore::from_anchors(vec![cert.clone()]);
    let res = open(&raw, &[(cert, key)], &signer_anchor, "from@test.com", now());
    let Err(DirectError::Rejected { reason, verdicts }) = res else {
        panic!("ETT message must decrypt and then be rejected, got {res:?}");
    };
    // Decryption worked (AES-128-CBC) and the signature itself verifies.
    assert!(
        verdicts
            .iter()
            .any(|v| v.check == Check::ContentCipher && v.passed())
    );
    assert!(
        verdicts
            .iter()
            .any(|v| v.check == Check::Signature && v.passed())
    );
    let failed: Vec<&Violation> = verdicts
        .iter()
        .filter_map(|v| v.result.as_ref().err())
        .collect();
    assert!(
        failed.contains(&&Violation::WeakKey {
            alg: "RSA".into(),
            bits: 1024
        }),
        "{failed:?}"
    );
    assert!(failed.iter().any(|v| matches!(v, Violation::WeakDigest { alg, usage: DigestUse::CertificateSignature } if alg == "md5WithRSAEncryption")));
    assert!(failed.iter().any(|v| matches!(
        v,
        Violation::WeakDigest {
            usage: DigestUse::MessageSignature,
            ..
        }
    )));
    assert!(
        failed
            .iter()
            .any(|v| matches!(v, Violation::Expired { .. }))
    );
    assert!(failed.contains(&&Violation::NotBoundToAddress));
    assert!(
        matches!(
            reason,
            Violation::WeakDigest { .. } | Violation::WeakKey { .. } | Violation::Expired { .. }
        ),
        "{reason}"
    );
    Ok(())
}

#[test]
fn trust_bundle_p7b_pem_and_der() -> TestResult {
    let pem = std::fs::read(vectors().join("testBundle.p7b"))?;
    let certs = load_certs(&pem)?;
    assert_eq!(certs.len(), 1);
    assert!(crate::smime::subject_string(&certs[0]).contains("CN=sm1.direct.com Root CA"));
    let der = openssl::pkcs7::Pkcs7::from_pem(&pem)?.to_der()?;
    assert_eq!(load_certs(&der)?.len(), 1);
    let mut store = TrustStore::new();
    assert_eq!(store.add_anchors(&der)?, 1);
    // DER and PEM single certificates.
    assert_eq!(load_certs(&ri("cacert.der").to_der()?)?.len(), 1);
    assert_eq!(load_certs(&ri("cacert.der").to_pem()?)?.len(), 1);
    assert!(load_certs(b"not a certificate").is_err());
    Ok(())
}

#[test]
fn ri_alt_name_only_binds_via_san() {
    let c = ri("altNameOnly.der");
    assert_eq!(
        policy::check_address_binding(&c, "altNameOnly@test.email.com"),
        Ok(())
    );
    assert_eq!(
        policy::check_address_binding(&c, "ALTNAMEONLY@Test.Email.COM"),
        Ok(())
    );
    assert_eq!(
        policy::check_address_binding(&c, "other@test.email.com"),
        Err(Violation::NotBoundToAddress)
    );
    // It chains to its CA (whose own SHA-1 self-signature is not judged).
    let store = TrustStore::from_anchors(vec![ri("Test_Alt_Name_CA_ROO.der")]);
    assert!(store.verify(&c, &[], now(), KeyPurpose::Signing).is_ok());
}

#[test]
fn ri_domain_bound_and_key_usage() {
    let dual = ri("dualUse.der");
    let sig = ri("digSigOnly.der");
    let enc = ri("keyEncOnly.der");
    // dNSName keyusage.com binds any address in that domain, and only that domain.
    assert_eq!(
        policy::check_address_binding(&dual, "anyone@KeyUsage.com"),
        Ok(())
    );
    assert_eq!(
        policy::check_address_binding(&dual, "anyone@sub.keyusage.com"),
        Err(Violation::NotBoundToAddress)
    );
    // emailAddress=keyusage.com in the DN does not bind anything.
    assert_eq!(policy::check_key_usage(&dual, KeyPurpose::Signing), Ok(()));
    assert_eq!(
        policy::check_key_usage(&dual, KeyPurpose::Encryption),
        Ok(())
    );
    assert_eq!(policy::check_key_usage(&sig, KeyPurpose::Signing), Ok(()));
    assert_eq!(
        policy::check_key_usage(&sig, KeyPurpose::Encryption),
        Err(Violation::KeyUsage {
            needed: KeyPurpose::Encryption
        })
    );
    assert_eq!(
        policy::check_key_usage(&enc, KeyPurpose::Signing),
        Err(Violation::KeyUsage {
            needed: KeyPurpose::Signing
        })
    );
    assert_eq!(
        policy::check_key_usage(&enc, KeyPurpose::Encryption),
        Ok(())
    );
    // An absent KeyUsage extension allows both (the ETT certificate has no extensions).
    let (ett, _) = ett_identity();
    assert!(ett.key_usage().is_none());
    assert_eq!(policy::check_key_usage(&ett, KeyPurpose::Signing), Ok(()));
    assert_eq!(
        policy::check_key_usage(&ett, KeyPurpose::Encryption),
        Ok(())
    );
    // All three are 1024-bit.
    assert_eq!(
        policy::check_key_strength(&dual),
        Err(Violation::WeakKey {
            alg: "RSA".into(),
            bits: 1024
        })
    );
}

#[test]
fn ri_sha1_certificates_are_identified_and_rejected_for_signing() {
    let leaves = [
        ("altNameOnly.der", "altNameOnly@test.email.com"),
        ("user1.der", "user1@cerner.com"),
        ("gm2552.der", "gm2552@securehealthemail.com"),
        ("expired.der", "expired@testexpired.email.com"),
        ("digSigOnly.der", "x@keyusage.com"),
        ("dualUse.der", "x@keyusage.com"),
        ("keyEncOnly.der", "x@keyusage.com"),
    ];
    let all = leaves.iter().map(|(f, _)| *f).chain([
        "cacert.der",
        "secureHealthEmailCACert.der",
        "Test_Alt_Name_CA_ROO.der",
        "KeyUsageCA.der",
    ]);
    for f in all {
        let c = ri(f);
        // Every RI certificate is sha1WithRSAEncryption.
        assert_eq!(
            c.signature_algorithm().object().to_string(),
            "sha1WithRSAEncryption",
            "{f}"
        );
        assert!(matches!(
            policy::check_cert_digest(&c),
            Err(Violation::WeakDigest {
                usage: DigestUse::CertificateSignature,
                ..
            })
        ));
    }
    for (f, addr) in leaves {
        let verdicts = policy::evaluate_signer(&ri(f), addr, now(), None);
        let digest = verdicts
            .iter()
            .find(|v| v.check == Check::CertificateDigest)
            .expect("digest verdict");
        assert!(!digest.passed(), "{f} must be rejected for signing");
    }
    // user1 fails only on its SHA-1 signature: 2048 bits, valid, usable, bound.
    let v = policy::evaluate_signer(&ri("user1.der"), "User1@Cerner.com", now(), None);
    let failed: Vec<Check> = v.iter().filter(|v| !v.passed()).map(|v| v.check).collect();
    assert_eq!(failed, vec![Check::CertificateDigest]);
    // Its chain is valid; the policy, not the path, rejects it.
    let store = TrustStore::from_anchors(vec![ri("cacert.der")]);
    assert!(
        store
            .verify(&ri("user1.der"), &[], now(), KeyPurpose::Signing)
            .is_ok()
    );
    let store = TrustStore::from_anchors(vec![ri("secureHealthEmailCACert.der")]);
    assert!(
        store
            .verify(&ri("gm2552.der"), &[], now(), KeyPurpose::Signing)
            .is_ok()
    );
    assert!(matches!(
        store.verify(&ri("user1.der"), &[], now(), KeyPurpose::Signing),
        Err(Violation::UntrustedChain { .. })
    ));
    // expired.der is expired.
    assert!(matches!(
        policy::check_validity(&ri("expired.der"), now()),
        Err(Violation::Expired { .. })
    ));
}

#[test]
fn nhind_wrapped_vectors_unwrap() -> TestResult {
    use crate::open::{split_signed, unwrap};
    // message/rfc822 with Content-Transfer-Encoding: base64 (forbidden by RFC 2046, seen in the wild).
    let raw = std::fs::read(vectors().join("messages/nhind-Wrapped_Base64.eml"))?;
    let outer = switchboard_mail::parse_message(&raw).ok_or("parse")?;
    let (inner, wrapped) = unwrap(&raw, &outer)?;
    assert!(wrapped);
    let inner = String::from_utf8(inner)?;
    assert!(
        inner.contains("Subject: This message has a base64 internal message\r\n"),
        "{inner}"
    );
    // multipart/signed whose message/rfc822 part is quoted-printable.
    let raw = std::fs::read(vectors().join("messages/nhind-Wrapped_Quoted.eml"))?;
    let (entity, sig, detached) = split_signed(&raw)?;
    assert!(detached && !sig.is_empty());
    let outer = switchboard_mail::parse_message(&raw).ok_or("parse")?;
    let (inner, wrapped) = unwrap(&entity, &outer)?;
    assert!(wrapped);
    let inner = String::from_utf8(inner)?;
    assert!(
        inner.contains("Message-ID: <59dc9670-6e1c-404d-ada7-89972c742778@directaddress.net>"),
        "{inner}"
    );
    assert!(inner.contains("boundary=\"----=_NextPart_51415223.066511374841\""));
    Ok(())
}
