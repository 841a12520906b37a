//! Positive interop: our `seal` → `openssl cms`, and `openssl cms` → our `open`.

use super::*;
use crate::policy::ContentCipher;
use crate::smime::{KeyTransport, SealCipher, SealOptions, open, seal};

fn seal_sample(opts: SealOptions) -> Vec<u8> {
    let p = pki();
    seal(
        &sample_message(),
        ALICE,
        &[BOB],
        &p.alice.cert,
        &p.alice.key,
        &[],
        std::slice::from_ref(&p.bob.cert),
        opts,
    )
    .expect("seal")
}

#[test]
fn seal_is_accepted_by_openssl_cli() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (bob_c, bob_k) = write_id(d, "bob", &pki().bob);
    std::fs::write(d.join("ca.pem"), pki().ca.cert.to_pem()?)?;
    let matrix = [
        (SealCipher::Aes128Cbc, KeyTransport::OaepSha256),
        (SealCipher::Aes256Cbc, KeyTransport::Pkcs1v15),
        (SealCipher::Aes256Cbc, KeyTransport::OaepSha1),
        (SealCipher::Aes128Gcm, KeyTransport::OaepSha256),
        (SealCipher::Aes256Gcm, KeyTransport::Pkcs1v15),
    ];
    for (cipher, key_transport) in matrix {
        let sealed = seal_sample(SealOptions {
            cipher,
            key_transport,
            wrap: true,
        });
        let text = String::from_utf8(sealed.clone())?;
        assert!(text.contains("Subject: Direct Secure Message\r\n"));
        assert!(
            !text.contains("Referral"),
            "real subject must not leak to the outer header"
        );
        assert!(text.contains("Message-ID: <m1@sender.example>\r\n"));
        let gcm = matches!(cipher, SealCipher::Aes128Gcm | SealCipher::Aes256Gcm);
        assert_eq!(text.contains("smime-type=authEnveloped-data"), gcm);
        std::fs::write(d.join("sealed.eml"), &sealed)?;

        let printed =
            String::from_utf8(ossl(d, &["cms", "-cmsout", "-print", "-in", "sealed.eml"]))?;
        let oaep = printed.contains("rsaesOaep");
        assert_eq!(
            oaep,
            key_transport != KeyTransport::Pkcs1v15,
            "{cipher:?}/{key_transport:?}"
        );
        if key_transport == KeyTransport::OaepSha256 {
            assert!(printed.contains("sha256"));
        }
        assert_eq!(printed.contains("-gcm"), gcm);

        ossl(
            d,
            &[
                "cms",
                "-decrypt",
                "-in",
                "sealed.eml",
                "-recip",
                &bob_c.display().to_string(),
                "-inkey",
                &bob_k.display().to_string(),
                "-out",
                "dec.eml",
            ],
        );
        let dec = std::fs::read(d.join("dec.eml"))?;
        assert!(String::from_utf8_lossy(&dec).contains("micalg=sha-256"));
        // Default (canonical) mode, as deployed peers verify: OpenSSL's -binary
        // multipart splitter keeps the CRLF that belongs to the boundary.
        ossl(
            d,
            &[
                "cms",
                "-verify",
                "-in",
                "dec.eml",
                "-CAfile",
                "ca.pem",
                "-out",
                "content.txt",
            ],
        );
        assert_eq!(
            std::fs::read(d.join("content.txt"))?,
            wrapped(&sample_message())
        );

        // And we read our own output.
        let opened = open(&sealed, &[pki().bob.pair()], &trust(), ALICE, now())?;
        assert_eq!(opened.inner, sample_message());
        assert!(opened.wrapped);
        assert_eq!(opened.cipher, ContentCipher::from(cipher));
        assert_eq!(opened.signer_subjects, vec!["CN=Alice".to_string()]);
    }
    Ok(())
}

#[test]
fn unwrapped_seal_round_trips() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (bob_c, bob_k) = write_id(d, "bob", &pki().bob);
    std::fs::write(d.join("ca.pem"), pki().ca.cert.to_pem()?)?;
    let sealed = seal_sample(SealOptions {
        wrap: false,
        ..SealOptions::default()
    });
    assert!(String::from_utf8_lossy(&sealed).contains("Subject: Referral for patient\r\n"));
    std::fs::write(d.join("sealed.eml"), &sealed)?;
    ossl(
        d,
        &[
            "cms",
            "-decrypt",
            "-in",
            "sealed.eml",
            "-recip",
            &bob_c.display().to_string(),
            "-inkey",
            &bob_k.display().to_string(),
            "-out",
            "dec.eml",
        ],
    );
    ossl(
        d,
        &[
            "cms", "-verify", "-in", "dec.eml", "-CAfile", "ca.pem", "-out", "c.txt",
        ],
    );
    let opened = open(&sealed, &[pki().bob.pair()], &trust(), ALICE, now())?;
    assert!(!opened.wrapped);
    let inner = String::from_utf8(opened.inner)?;
    assert!(inner.contains("Subject: Referral for patient\r\n"));
    assert!(inner.ends_with("Content-Type: text/plain; charset=us-ascii\r\n\r\nHello Bob,\r\nplease see the referral.\r\n"));
    Ok(())
}

#[test]
fn openssl_cli_messages_are_accepted() -> TestResult {
    let p = pki();
    let ciphers = [
        ("-aes-128-cbc", ContentCipher::Aes128Cbc),
        ("-aes-256-gcm", ContentCipher::Aes256Gcm),
    ];
    let keyopts: [&[&str]; 3] = [
        &[
            "rsa_padding_mode:oaep",
            "rsa_oaep_md:sha256",
            "rsa_mgf1_md:sha256",
        ],
        &["rsa_padding_mode:oaep", "rsa_oaep_md:sha1"],
        &[],
    ];
    let signer_sets: [&[(&str, &Id)]; 2] = [
        &[("alice", &p.alice)],
        &[("carol", &p.carol), ("alice", &p.alice)],
    ];
    for (cipher, expect) in &ciphers {
        for opts in keyopts {
            for signers in signer_sets {
                let dir = tempfile::tempdir()?;
                let raw = cli_sign_encrypt(
                    dir.path(),
                    &wrapped(&sample_message()),
                    signers,
                    "sha256",
                    cipher,
                    opts,
                );
                let opened = open(&raw, &[p.bob.pair()], &trust(), ALICE, now())
                    .map_err(|e| format!("{cipher} {opts:?} {} signers: {e}", signers.len()))?;
                assert_eq!(opened.inner, sample_message());
                assert_eq!(&opened.cipher, expect);
                // Carol's signature is valid and trusted but not bound to alice's address.
                assert_eq!(opened.signer_subjects, vec!["CN=Alice".to_string()]);
                if signers.len() == 2 {
                    // SignerInfos is a DER SET: order is not the command-line order.
                    assert!(opened.verdicts.iter().any(|v| v.signer.is_some()
                        && v.result == Err(crate::Violation::NotBoundToAddress)));
                }
            }
        }
    }
    Ok(())
}

#[test]
fn base64_wrapped_and_unwrapped_cli_messages_are_accepted() -> TestResult {
    use base64::Engine;
    let p = pki();
    let dir = tempfile::tempdir()?;
    let mut entity =
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    let b64 = base64::engine::general_purpose::STANDARD.encode(sample_message());
    for chunk in b64.as_bytes().chunks(76) {
        entity.extend_from_slice(chunk);
        entity.extend_from_slice(b"\r\n");
    }
    let raw = cli_sign_encrypt(
        dir.path(),
        &entity,
        &[("alice", &p.alice)],
        "sha256",
        "-aes-256-cbc",
        &[],
    );
    let opened = open(&raw, &[p.bob.pair()], &trust(), ALICE, now())?;
    assert!(opened.wrapped);
    assert_eq!(opened.inner, sample_message());

    let dir = tempfile::tempdir()?;
    let entity = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nunwrapped body\r\n";
    let raw = cli_sign_encrypt(
        dir.path(),
        entity,
        &[("alice", &p.alice)],
        "sha256",
        "-aes-128-cbc",
        &[],
    );
    let opened = open(&raw, &[p.bob.pair()], &trust(), ALICE, now())?;
    assert!(!opened.wrapped);
    let inner = String::from_utf8(opened.inner)?;
    assert!(inner.contains(&format!("From: {ALICE}")), "{inner}");
    assert!(inner.ends_with("\r\n\r\nunwrapped body\r\n"));
    Ok(())
}

#[test]
fn lf_only_signed_content_is_canonicalised() -> TestResult {
    // Some MTAs store mail with bare LF; a signature made over CRLF must still verify.
    let p = pki();
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let entity = wrapped(&sample_message());
    std::fs::write(d.join("entity.txt"), &entity)?;
    let (c, k) = write_id(d, "alice", &p.alice);
    ossl(
        d,
        &[
            "cms",
            "-sign",
            "-binary",
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
    let signed = std::fs::read(d.join("signed.eml"))?;
    let lf: Vec<u8> = String::from_utf8(signed)?
        .replace("\r\n", "\n")
        .into_bytes();
    std::fs::write(d.join("lf.eml"), lf)?;
    let raw = encrypt_file(d, "lf.eml", "-aes-128-cbc", &[]);
    let opened = open(&raw, &[p.bob.pair()], &trust(), ALICE, now())?;
    assert_eq!(
        String::from_utf8(opened.inner)?.replace("\r\n", "\n"),
        String::from_utf8(sample_message())?.replace("\r\n", "\n")
    );
    Ok(())
}

/// A message the size of the benchmark's (a C-CDA of about 300 KiB as a base64
/// attachment), written with bare LF line ends: sealing goes through the CRLF
/// conversion, the header-only parse of a multipart message and many base64
/// blocks, and the openssl CLI still decrypts and verifies it byte for byte.
#[test]
fn large_lf_message_seals_for_openssl_cli() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (bob_c, bob_k) = write_id(d, "bob", &pki().bob);
    std::fs::write(d.join("ca.pem"), pki().ca.cert.to_pem()?)?;
    let mut doc =
        String::from("<?xml version=\"1.0\"?><ClinicalDocument xmlns=\"urn:hl7-org:v3\">");
    while doc.len() < 300 * 1024 {
        doc.push_str("<component><section><text>.leading dot\n</text></section></component>");
    }
    doc.push_str("</ClinicalDocument>");
    // A multipart message with the document as a base64 attachment, as the daemon's Direct
    // channel composes one.
    let mut crlf = format!(
        "From: <{ALICE}>\r\nTo: <{BOB}>\r\nMessage-ID: <big@sender.example>\r\n\
         Subject: Referral\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"=_b\"\r\n\r\n\
         --=_b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\
         A clinical document is attached.\r\n\
         --=_b\r\nContent-Type: application/xml; name=\"document.xml\"\r\n\
         Content-Disposition: attachment; filename=\"document.xml\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n"
    )
    .into_bytes();
    crate::mime::append_base64_folded(&mut crlf, doc.as_bytes());
    crlf.extend_from_slice(b"--=_b--\r\n");
    let lf = String::from_utf8(crlf.clone())?.replace("\r\n", "\n");
    let sealed = seal(
        lf.as_bytes(),
        ALICE,
        &[BOB],
        &pki().alice.cert,
        &pki().alice.key,
        &[],
        std::slice::from_ref(&pki().bob.cert),
        SealOptions::default(),
    )?;
    std::fs::write(d.join("sealed.eml"), &sealed)?;
    let bob_c = bob_c.display().to_string();
    let bob_k = bob_k.display().to_string();
    let decrypt = [
        "cms",
        "-decrypt",
        "-in",
        "sealed.eml",
        "-recip",
        &bob_c,
        "-inkey",
        &bob_k,
        "-out",
        "dec.eml",
    ];
    ossl(d, &decrypt);
    let verify = [
        "cms",
        "-verify",
        "-in",
        "dec.eml",
        "-CAfile",
        "ca.pem",
        "-out",
        "content.txt",
    ];
    ossl(d, &verify);
    assert_eq!(std::fs::read(d.join("content.txt"))?, wrapped(&crlf));

    let opened = open(&sealed, &[pki().bob.pair()], &trust(), ALICE, now())?;
    assert_eq!(opened.inner, crlf);
    Ok(())
}
