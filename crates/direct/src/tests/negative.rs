//! The negative matrix: each bad message is rejected with its specific reason.

use super::*;
use crate::policy::{Check, DigestUse, Violation};
use crate::smime::{DirectError, SealOptions, open, seal};
use crate::trust::TrustStore;

/// Signs the sample with `signer` via the CLI (sha256 unless `md`) and encrypts with `cipher`.
fn cli_message(signer: &Id, md: &str, cipher: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    cli_sign_encrypt(
        dir.path(),
        &wrapped(&sample_message()),
        &[("signer", signer)],
        md,
        cipher,
        &[],
    )
}

fn reason_of(res: Result<crate::Opened, DirectError>) -> (Violation, Vec<crate::Verdict>) {
    match res {
        Err(DirectError::Rejected { reason, verdicts }) => (reason, verdicts),
        Err(other) => panic!("expected a policy rejection, got {other}"),
        Ok(_) => panic!("expected a rejection, message was accepted"),
    }
}

fn open_with(raw: &[u8], trust: &TrustStore) -> Result<crate::Opened, DirectError> {
    open(raw, &[pki().bob.pair()], trust, ALICE, now())
}

#[test]
fn expired_signer() {
    let (reason, _) = reason_of(open_with(
        &cli_message(&pki().alice_expired, "sha256", "-aes-128-cbc"),
        &trust(),
    ));
    assert!(matches!(reason, Violation::Expired { .. }), "{reason}");
}

#[test]
fn not_yet_valid_with_injected_clock() {
    let raw = cli_message(&pki().alice, "sha256", "-aes-128-cbc");
    let past = now() - chrono::Duration::days(30);
    let (reason, _) = reason_of(open(&raw, &[pki().bob.pair()], &trust(), ALICE, past));
    assert!(matches!(reason, Violation::NotYetValid { .. }), "{reason}");
}

#[test]
fn revoked_signer_via_cli_crl() -> TestResult {
    let p = pki();
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    write_id(d, "ca", &p.ca);
    write_id(d, "revoked", &p.alice_revoked);
    std::fs::write(d.join("index.txt"), b"")?;
    std::fs::write(d.join("crlnumber"), b"01\n")?;
    std::fs::write(
        d.join("ca.cnf"),
        "[ca]\ndefault_ca = dflt\n[dflt]\ndatabase = index.txt\nnew_certs_dir = .\n\
         certificate = ca.pem\nprivate_key = ca.key\ncrlnumber = crlnumber\n\
         default_md = sha256\ndefault_crl_days = 30\npolicy = pol\n[pol]\ncommonName = supplied\n",
    )?;
    ossl(
        d,
        &[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-revoke",
            "revoked.pem",
            "-crl_reason",
            "keyCompromise",
        ],
    );
    ossl(
        d,
        &[
            "ca", "-batch", "-config", "ca.cnf", "-gencrl", "-out", "crl.pem",
        ],
    );
    let mut store = trust();
    assert_eq!(store.add_crls(&std::fs::read(d.join("crl.pem"))?)?, 1);
    assert!(store.has_crl_for(&p.alice_revoked.cert));

    let (reason, _) = reason_of(open_with(
        &cli_message(&p.alice_revoked, "sha256", "-aes-128-cbc"),
        &store,
    ));
    assert_eq!(reason, Violation::Revoked);

    // The same CRL does not disturb a good signer from that CA.
    let ok = open_with(&cli_message(&p.alice, "sha256", "-aes-128-cbc"), &store)?;
    assert_eq!(ok.inner, sample_message());

    // DER CRLs load too.
    let der = ossl(d, &["crl", "-in", "crl.pem", "-outform", "DER"]);
    assert_eq!(crate::load_crls(&der)?.len(), 1);
    Ok(())
}

#[test]
fn untrusted_chain() {
    let (reason, _) = reason_of(open_with(
        &cli_message(&pki().alice_untrusted, "sha256", "-aes-128-cbc"),
        &trust(),
    ));
    assert!(
        matches!(reason, Violation::UntrustedChain { .. }),
        "{reason}"
    );
    // Trusting the rogue CA makes it pass: the rejection was only about trust.
    let rogue = TrustStore::from_anchors(vec![pki().rogue_ca.cert.clone()]);
    assert!(
        open_with(
            &cli_message(&pki().alice_untrusted, "sha256", "-aes-128-cbc"),
            &rogue
        )
        .is_ok()
    );
}

#[test]
fn altered_body() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    std::fs::write(d.join("entity.txt"), wrapped(&sample_message()))?;
    let (c, k) = write_id(d, "alice", &pki().alice);
    ossl(
        d,
        &[
            "cms",
            "-sign",
            "-binary",
            "-crlfeol",
            "-md",
            "sha256",
            "-in",
            "entity.txt",
            "-signer",
            &c.display().to_string(),
            "-inkey",
            &k.display().to_string(),
            "-out",
            "signed.eml",
        ],
    );
    let signed = String::from_utf8(std::fs::read(d.join("signed.eml"))?)?;
    assert!(signed.contains("please see the referral"));
    std::fs::write(
        d.join("tampered.eml"),
        signed.replace("please see the referral", "please see the REFERRAL"),
    )?;
    let raw = encrypt_file(d, "tampered.eml", "-aes-128-cbc", &[]);
    let (reason, verdicts) = reason_of(open_with(&raw, &trust()));
    assert!(matches!(reason, Violation::BadSignature { .. }), "{reason}");
    assert!(
        verdicts
            .iter()
            .any(|v| v.check == Check::Signature && !v.passed())
    );
    Ok(())
}

#[test]
fn sha1_message_signature() {
    let (reason, _) = reason_of(open_with(
        &cli_message(&pki().alice, "sha1", "-aes-128-cbc"),
        &trust(),
    ));
    assert_eq!(
        reason,
        Violation::WeakDigest {
            alg: "sha1".into(),
            usage: DigestUse::MessageSignature
        }
    );
}

#[test]
fn sha1_signed_certificate() {
    let (reason, _) = reason_of(open_with(
        &cli_message(&pki().alice_sha1_cert, "sha256", "-aes-128-cbc"),
        &trust(),
    ));
    assert!(
        matches!(&reason, Violation::WeakDigest { usage: DigestUse::CertificateSignature, alg } if alg == "sha1WithRSAEncryption"),
        "{reason}"
    );
}

#[test]
fn triple_des_content() {
    let (reason, verdicts) = reason_of(open_with(
        &cli_message(&pki().alice, "sha256", "-des3"),
        &trust(),
    ));
    assert_eq!(
        reason,
        Violation::WeakCipher {
            alg: "3DES-CBC".into()
        }
    );
    assert_eq!(verdicts.len(), 1, "rejected before decryption");
}

#[test]
fn weak_1024_bit_signer() {
    let (reason, _) = reason_of(open_with(
        &cli_message(&pki().alice_1024, "sha256", "-aes-128-cbc"),
        &trust(),
    ));
    assert_eq!(
        reason,
        Violation::WeakKey {
            alg: "RSA".into(),
            bits: 1024
        }
    );
}

#[test]
fn address_only_in_subject_dn() {
    let (reason, _) = reason_of(open_with(
        &cli_message(&pki().alice_dn_only, "sha256", "-aes-128-cbc"),
        &trust(),
    ));
    assert_eq!(reason, Violation::NotBoundToAddress);
}

#[test]
fn wildcard_names_do_not_bind() {
    let (reason, _) = reason_of(open_with(
        &cli_message(&pki().alice_wildcard, "sha256", "-aes-128-cbc"),
        &trust(),
    ));
    assert_eq!(reason, Violation::NotBoundToAddress);
}

#[test]
fn wrong_sender_address() {
    let raw = cli_message(&pki().alice, "sha256", "-aes-128-cbc");
    let (reason, _) = reason_of(open(&raw, &[pki().bob.pair()], &trust(), CAROL, now()));
    assert_eq!(reason, Violation::NotBoundToAddress);
}

#[test]
fn inner_from_must_be_the_sender() {
    let inner = String::from_utf8(sample_message()).expect("utf8").replace(
        &format!("From: Alice <{ALICE}>"),
        &format!("From: <{CAROL}>"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = cli_sign_encrypt(
        dir.path(),
        &wrapped(inner.as_bytes()),
        &[("alice", &pki().alice)],
        "sha256",
        "-aes-128-cbc",
        &[],
    );
    let (reason, _) = reason_of(open_with(&raw, &trust()));
    assert_eq!(reason, Violation::FromMismatch);
}

#[test]
fn not_our_message() {
    let raw = cli_message(&pki().alice, "sha256", "-aes-128-cbc");
    let res = open(&raw, &[pki().carol.pair()], &trust(), ALICE, now());
    assert!(
        matches!(res, Err(DirectError::NoMatchingRecipient)),
        "{res:?}"
    );
}

#[test]
fn seal_refuses_weak_or_unbound_certificates() {
    let p = pki();
    let res = seal(
        &sample_message(),
        ALICE,
        &[BOB],
        &p.alice.cert,
        &p.alice.key,
        &[],
        std::slice::from_ref(&p.alice_1024.cert),
        SealOptions::default(),
    );
    assert!(
        matches!(
            res,
            Err(DirectError::Policy {
                role: "recipient",
                violation: Violation::WeakKey { bits: 1024, .. }
            })
        ),
        "{res:?}"
    );
    let res = seal(
        &sample_message(),
        ALICE,
        &[BOB],
        &p.carol.cert,
        &p.carol.key,
        &[],
        std::slice::from_ref(&p.bob.cert),
        SealOptions::default(),
    );
    assert!(
        matches!(
            res,
            Err(DirectError::Policy {
                role: "signer",
                violation: Violation::NotBoundToAddress
            })
        ),
        "{res:?}"
    );
    let res = seal(
        &sample_message(),
        "not an address",
        &[BOB],
        &p.alice.cert,
        &p.alice.key,
        &[],
        std::slice::from_ref(&p.bob.cert),
        SealOptions::default(),
    );
    assert!(
        matches!(res, Err(DirectError::InvalidAddress("sender"))),
        "{res:?}"
    );
}

#[test]
fn garbage_never_panics() {
    let p = pki();
    let sealed = seal(
        &sample_message(),
        ALICE,
        &[BOB],
        &p.alice.cert,
        &p.alice.key,
        &[],
        std::slice::from_ref(&p.bob.cert),
        SealOptions::default(),
    )
    .expect("seal");
    let mut inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\r\n\r\n".to_vec(),
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\n!!!not base64!!!\r\n".to_vec(),
        b"Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQAx\r\n".to_vec(),
        b"Content-Type: multipart/signed; boundary=x\r\n\r\n--x\r\n\r\n--x--\r\n".to_vec(),
        sample_message(),
    ];
    for cut in [10, sealed.len() / 3, sealed.len() / 2, sealed.len() - 200] {
        inputs.push(sealed[..cut].to_vec());
    }
    let mut flipped = sealed.clone();
    let mid = flipped.len() / 2;
    flipped[mid] = if flipped[mid] == b'A' { b'B' } else { b'A' };
    inputs.push(flipped);
    for input in inputs {
        assert!(open_with(&input, &trust()).is_err());
        let _ = crate::mdn::parse_notifications(&input);
    }
}
