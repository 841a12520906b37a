//! Tests for `direct`, with the `openssl` CLI (3.0) as the independent peer.
//!
//! Owns: a test PKI made at test time with the `openssl` crate's builders
//! (CA RSA 3072; leaves RSA 2048 with SAN rfc822Name, KU
//! digitalSignature+keyEncipherment, EKU emailProtection, plus the bad
//! variants the negative tests need), CLI helpers, and the path to the shared
//! vectors (`$DIRECT_VECTORS`, else the repository's `tests/data/direct`).

mod interop;
mod mdn;
mod negative;
mod policy;
mod vectors;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509NameBuilder};

pub(super) type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A certificate with its key.
pub(super) struct Id {
    pub cert: X509,
    pub key: PKey<Private>,
}

impl Id {
    pub fn pair(&self) -> (X509, PKey<Private>) {
        (self.cert.clone(), self.key.clone())
    }
}

/// The whole test PKI. Addresses: alice@sender.example signs, bob@recipient.example receives.
pub(super) struct Pki {
    pub ca: Id,
    pub rogue_ca: Id,
    pub alice: Id,
    pub carol: Id,
    pub bob: Id,
    pub alice_expired: Id,
    pub alice_revoked: Id,
    pub alice_untrusted: Id,
    pub alice_1024: Id,
    pub alice_dn_only: Id,
    pub alice_wildcard: Id,
    pub alice_sha1_cert: Id,
}

pub(super) const ALICE: &str = "alice@sender.example";
pub(super) const BOB: &str = "bob@recipient.example";
pub(super) const CAROL: &str = "carol@sender.example";

pub(super) fn now() -> DateTime<Utc> {
    Utc::now()
}

fn rsa(bits: u32) -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(bits).expect("rsa")).expect("pkey")
}

fn serial() -> openssl::asn1::Asn1Integer {
    let mut bn = BigNum::new().expect("bn");
    bn.rand(120, MsbOption::MAYBE_ZERO, false).expect("rand");
    bn.to_asn1_integer().expect("serial")
}

fn days(d: i64) -> Asn1Time {
    Asn1Time::from_unix(Utc::now().timestamp() + d * 86_400).expect("time")
}

fn make_ca(cn: &str) -> Id {
    let key = rsa(3072);
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", cn).expect("cn");
    name.append_entry_by_text("O", "Switchboard Test")
        .expect("o");
    let name = name.build();
    let mut b = X509Builder::new().expect("builder");
    b.set_version(2).expect("v3");
    b.set_serial_number(&serial()).expect("serial");
    b.set_subject_name(&name).expect("subject");
    b.set_issuer_name(&name).expect("issuer");
    b.set_pubkey(&key).expect("pubkey");
    b.set_not_before(&days(-30)).expect("nb");
    b.set_not_after(&days(3650)).expect("na");
    b.append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
        .expect("bc");
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .expect("ku"),
    )
    .expect("ku");
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(None, None))
        .expect("ski");
    b.append_extension(ski).expect("ski");
    b.sign(&key, MessageDigest::sha256()).expect("sign");
    Id {
        cert: b.build(),
        key,
    }
}

/// Options for a leaf certificate.
struct LeafSpec<'a> {
    cn: &'a str,
    dn_email: Option<&'a str>,
    san_email: &'a [&'a str],
    san_dns: &'a [&'a str],
    bits: u32,
    from_days: i64,
    to_days: i64,
    md: MessageDigest,
}

impl<'a> LeafSpec<'a> {
    fn new(cn: &'a str, emails: &'a [&'a str]) -> Self {
        Self {
            cn,
            dn_email: None,
            san_email: emails,
            san_dns: &[],
            bits: 2048,
            from_days: -1,
            to_days: 365,
            md: MessageDigest::sha256(),
        }
    }
}

fn make_leaf(ca: &Id, spec: LeafSpec<'_>) -> Id {
    let key = rsa(spec.bits);
    let mut name = X509NameBuilder::new().expect("name");
    if let Some(e) = spec.dn_email {
        name.append_entry_by_text("emailAddress", e).expect("email");
    }
    name.append_entry_by_text("CN", spec.cn).expect("cn");
    let name = name.build();
    let mut b = X509Builder::new().expect("builder");
    b.set_version(2).expect("v3");
    b.set_serial_number(&serial()).expect("serial");
    b.set_subject_name(&name).expect("subject");
    b.set_issuer_name(ca.cert.subject_name()).expect("issuer");
    b.set_pubkey(&key).expect("pubkey");
    b.set_not_before(&days(spec.from_days)).expect("nb");
    b.set_not_after(&days(spec.to_days)).expect("na");
    b.append_extension(BasicConstraints::new().critical().build().expect("bc"))
        .expect("bc");
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build()
            .expect("ku"),
    )
    .expect("ku");
    b.append_extension(
        ExtendedKeyUsage::new()
            .email_protection()
            .build()
            .expect("eku"),
    )
    .expect("eku");
    if !spec.san_email.is_empty() || !spec.san_dns.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for e in spec.san_email {
            san.email(e);
        }
        for d in spec.san_dns {
            san.dns(d);
        }
        let ext = san
            .build(&b.x509v3_context(Some(&ca.cert), None))
            .expect("san");
        b.append_extension(ext).expect("san");
    }
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(Some(&ca.cert), None))
        .expect("ski");
    b.append_extension(ski).expect("ski");
    let aki = AuthorityKeyIdentifier::new()
        .keyid(false)
        .build(&b.x509v3_context(Some(&ca.cert), None))
        .expect("aki");
    b.append_extension(aki).expect("aki");
    b.sign(&ca.key, spec.md).expect("sign");
    Id {
        cert: b.build(),
        key,
    }
}

pub(super) fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = make_ca("Switchboard Test Direct CA");
        let rogue_ca = make_ca("Rogue CA");
        let alice = make_leaf(&ca, LeafSpec::new("Alice", &[ALICE]));
        let carol = make_leaf(&ca, LeafSpec::new("Carol", &[CAROL]));
        let bob = make_leaf(&ca, LeafSpec::new("Bob", &[BOB]));
        let alice_expired = make_leaf(
            &ca,
            LeafSpec {
                from_days: -60,
                to_days: -2,
                ..LeafSpec::new("Alice expired", &[ALICE])
            },
        );
        let alice_revoked = make_leaf(&ca, LeafSpec::new("Alice revoked", &[ALICE]));
        let alice_untrusted = make_leaf(&rogue_ca, LeafSpec::new("Alice rogue", &[ALICE]));
        let alice_1024 = make_leaf(
            &ca,
            LeafSpec {
                bits: 1024,
                ..LeafSpec::new("Alice weak", &[ALICE])
            },
        );
        let alice_dn_only = make_leaf(
            &ca,
            LeafSpec {
                dn_email: Some(ALICE),
                ..LeafSpec::new("Alice DN only", &["someone.else@sender.example"])
            },
        );
        let alice_wildcard = make_leaf(
            &ca,
            LeafSpec {
                san_dns: &["*.sender.example", "*sender.example"],
                ..LeafSpec::new("Alice wildcard", &["*@sender.example"])
            },
        );
        let alice_sha1_cert = make_leaf(
            &ca,
            LeafSpec {
                md: MessageDigest::sha1(),
                ..LeafSpec::new("Alice SHA-1 cert", &[ALICE])
            },
        );
        Pki {
            ca,
            rogue_ca,
            alice,
            carol,
            bob,
            alice_expired,
            alice_revoked,
            alice_untrusted,
            alice_1024,
            alice_dn_only,
            alice_wildcard,
            alice_sha1_cert,
        }
    })
}

pub(super) fn trust() -> super::trust::TrustStore {
    super::trust::TrustStore::from_anchors(vec![pki().ca.cert.clone()])
}

/// Writes `<name>.pem` (certificate) and `<name>.key` into `dir`.
pub(super) fn write_id(dir: &Path, name: &str, id: &Id) -> (PathBuf, PathBuf) {
    let c = dir.join(format!("{name}.pem"));
    let k = dir.join(format!("{name}.key"));
    std::fs::write(&c, id.cert.to_pem().expect("pem")).expect("write cert");
    std::fs::write(&k, id.key.private_key_to_pem_pkcs8().expect("pem")).expect("write key");
    (c, k)
}

/// Runs `openssl args…`; panics with stderr on failure. Returns stdout.
pub(super) fn ossl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A small RFC 5322 message from alice to bob, CRLF line ends.
pub(super) fn sample_message() -> Vec<u8> {
    format!(
        "From: Alice <{ALICE}>\r\nTo: Bob <{BOB}>\r\nCc: <{CAROL}>\r\n\
         Date: Mon, 1 Jun 2026 10:00:00 +0000\r\nMessage-ID: <m1@sender.example>\r\n\
         Subject: Referral for patient\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n\
         Hello Bob,\r\nplease see the referral.\r\n"
    )
    .into_bytes()
}

/// The shared Direct vectors folder.
pub(super) fn vectors() -> PathBuf {
    if let Ok(p) = std::env::var("DIRECT_VECTORS") {
        return PathBuf::from(p);
    }
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/direct"
    ))
}

/// CLI: sign `entity` (detached, binary, CRLF) with the given signers and
/// digest, then encrypt to bob with `cipher` and `keyopts`; returns the message bytes.
pub(super) fn cli_sign_encrypt(
    dir: &Path,
    entity: &[u8],
    signers: &[(&str, &Id)],
    md: &str,
    cipher: &str,
    keyopts: &[&str],
) -> Vec<u8> {
    std::fs::write(dir.join("entity.txt"), entity).expect("entity");
    let mut args: Vec<String> = [
        "cms",
        "-sign",
        "-binary",
        "-crlfeol",
        "-md",
        md,
        "-in",
        "entity.txt",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (name, id) in signers {
        let (c, k) = write_id(dir, name, id);
        args.extend([
            "-signer".into(),
            c.display().to_string(),
            "-inkey".into(),
            k.display().to_string(),
        ]);
    }
    args.extend(["-out".into(), "signed.eml".into()]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    ossl(dir, &a);
    encrypt_file(dir, "signed.eml", cipher, keyopts)
}

/// CLI: encrypt `file` to bob with `cipher` (e.g. `-aes-128-cbc`) and `keyopts`
/// (e.g. `rsa_padding_mode:oaep`).
pub(super) fn encrypt_file(dir: &Path, file: &str, cipher: &str, keyopts: &[&str]) -> Vec<u8> {
    let (bob_c, _) = write_id(dir, "bob", &pki().bob);
    let bob_c = bob_c.display().to_string();
    let mut args = vec![
        "cms", "-encrypt", "-binary", "-crlfeol", "-in", file, "-out", "enc.eml", "-from", ALICE,
        "-to", BOB, "-subject", "Direct",
    ];
    // -keyopt applies to the preceding -recip.
    args.extend([cipher, "-recip", bob_c.as_str()]);
    args.extend(keyopts.iter().flat_map(|k| ["-keyopt", k]));
    ossl(dir, &args);
    std::fs::read(dir.join("enc.eml")).expect("enc.eml")
}

/// The message/rfc822 wrapping of `inner` as an entity to sign.
pub(super) fn wrapped(inner: &[u8]) -> Vec<u8> {
    let mut e = b"Content-Type: message/rfc822\r\n\r\n".to_vec();
    e.extend_from_slice(inner);
    e
}
