//! Unit checks of `policy` on the generated PKI, with an injected clock.

use super::*;
use crate::policy::{self, ContentCipher, KeyPurpose, Violation};

#[test]
fn binding_is_san_only_case_insensitive_and_never_wildcard() {
    let p = pki();
    assert_eq!(
        policy::check_address_binding(&p.alice.cert, "ALICE@Sender.Example"),
        Ok(())
    );
    assert_eq!(
        policy::check_address_binding(&p.alice.cert, " alice@sender.example. "),
        Ok(())
    );
    assert_eq!(
        policy::check_address_binding(&p.alice.cert, CAROL),
        Err(Violation::NotBoundToAddress)
    );
    assert_eq!(
        policy::check_address_binding(&p.alice.cert, "not-an-address"),
        Err(Violation::NotBoundToAddress)
    );
    assert_eq!(
        policy::check_address_binding(&p.alice.cert, "@sender.example"),
        Err(Violation::NotBoundToAddress)
    );
    assert_eq!(
        policy::check_address_binding(&p.alice_dn_only.cert, ALICE),
        Err(Violation::NotBoundToAddress)
    );
    assert_eq!(
        policy::check_address_binding(&p.alice_wildcard.cert, ALICE),
        Err(Violation::NotBoundToAddress)
    );
    assert_eq!(
        policy::check_address_binding(&p.alice_wildcard.cert, "x@a.sender.example"),
        Err(Violation::NotBoundToAddress)
    );
}

#[test]
fn validity_uses_the_injected_clock() {
    let c = &pki().alice.cert;
    assert_eq!(policy::check_validity(c, now()), Ok(()));
    assert!(matches!(
        policy::check_validity(c, now() + chrono::Duration::days(400)),
        Err(Violation::Expired { .. })
    ));
    assert!(matches!(
        policy::check_validity(c, now() - chrono::Duration::days(2)),
        Err(Violation::NotYetValid { .. })
    ));
    // The path check follows the same clock.
    assert!(trust().verify(c, &[], now(), KeyPurpose::Signing).is_ok());
    assert!(matches!(
        trust().verify(
            c,
            &[],
            now() + chrono::Duration::days(400),
            KeyPurpose::Signing
        ),
        Err(Violation::Expired { .. })
    ));
}

#[test]
fn ciphers_and_keys() {
    assert_eq!(
        policy::check_content_cipher(&ContentCipher::Aes128Gcm),
        Ok(())
    );
    for weak in [
        ContentCipher::DesEde3Cbc,
        ContentCipher::Rc2Cbc,
        ContentCipher::DesCbc,
        ContentCipher::Other("1.2.3".into()),
    ] {
        assert!(matches!(
            policy::check_content_cipher(&weak),
            Err(Violation::WeakCipher { .. })
        ));
    }
    assert_eq!(policy::check_key_strength(&pki().alice.cert), Ok(()));
    assert_eq!(policy::check_key_strength(&pki().ca.cert), Ok(()));
    assert_eq!(
        policy::check_key_strength(&pki().alice_1024.cert),
        Err(Violation::WeakKey {
            alg: "RSA".into(),
            bits: 1024
        })
    );
    assert_eq!(policy::check_cert_digest(&pki().alice.cert), Ok(()));
}

#[test]
fn reasons_read_well() {
    let text = Violation::WeakKey {
        alg: "RSA".into(),
        bits: 1024,
    }
    .to_string();
    assert_eq!(
        text,
        "RSA key of 1024 bits is too weak (Direct v1.3 requires RSA of at least 2048 bits)"
    );
    assert_eq!(
        Violation::KeyUsage {
            needed: KeyPurpose::Encryption
        }
        .to_string(),
        "certificate key usage does not allow encryption (keyEncipherment)"
    );
}
