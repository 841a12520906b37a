//! A test PKI made with the `openssl` CLI (`req`, `ca`) and the CLI as the sending STA
//! (`cms -sign`, `cms -encrypt`): an independent implementation on the other side of every
//! inbound test. The PKI is made once per test binary (in a temporary directory that is
//! removed again) and kept in memory as PEM.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use switchboard_direct::anchors::{AnchorSet, Anchors};

pub const ALICE: &str = "alice@sender.example";
pub const CAROL: &str = "carol@sender.example";
pub const BOB: &str = "bob@recipient.example";

/// Runs `openssl args…` in `dir`; stdout, or stderr as the error.
pub fn ossl_try(dir: &Path, args: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("running openssl: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs `openssl args…` in `dir`; panics with stderr on failure.
pub fn ossl(dir: &Path, args: &[&str]) -> Vec<u8> {
    ossl_try(dir, args).unwrap_or_else(|e| panic!("{e}"))
}

/// A certificate and its key, as PEM.
#[derive(Clone)]
pub struct Ident {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl Ident {
    pub fn cert(&self) -> X509 {
        X509::from_pem(&self.cert_pem).expect("certificate")
    }

    pub fn pair(&self) -> (X509, PKey<Private>) {
        (
            self.cert(),
            PKey::private_key_from_pem(&self.key_pem).expect("key"),
        )
    }

    /// Writes `<name>.pem` and `<name>.key` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) {
        std::fs::write(dir.join(format!("{name}.pem")), &self.cert_pem).expect("write cert");
        std::fs::write(dir.join(format!("{name}.key")), &self.key_pem).expect("write key");
    }
}

/// `openssl ca` configuration: a CA in the current directory.
const CA_CNF: &str = "\
[ ca ]
default_ca = CA_default
[ CA_default ]
dir = .
database = index.txt
new_certs_dir = newcerts
serial = serial
crlnumber = crlnumber
certificate = ca.pem
private_key = ca.key
default_md = sha256
default_days = 30
default_crl_days = 7
policy = policy_any
unique_subject = no
email_in_dn = yes
[ policy_any ]
commonName = supplied
emailAddress = optional
";

/// Makes a CA (RSA 2048, SHA-256) in `dir` ready for `openssl ca`.
pub fn make_ca(dir: &Path, cn: &str) -> Ident {
    std::fs::create_dir_all(dir.join("newcerts")).expect("newcerts");
    std::fs::write(dir.join("index.txt"), "").expect("index");
    std::fs::write(dir.join("serial"), "1000\n").expect("serial");
    std::fs::write(dir.join("crlnumber"), "1000\n").expect("crlnumber");
    std::fs::write(dir.join("ca.cnf"), CA_CNF).expect("cnf");
    ossl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-days",
            "60",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    read_ident(dir, "ca")
}

/// Makes an intermediate CA with an RSA key of `bits` in `dir`, issued by the CA in `root_dir`.
pub fn make_sub_ca(root_dir: &Path, dir: &Path, cn: &str, bits: u32) -> Ident {
    std::fs::create_dir_all(dir.join("newcerts")).expect("newcerts");
    std::fs::write(dir.join("index.txt"), "").expect("index");
    std::fs::write(dir.join("serial"), "2000\n").expect("serial");
    std::fs::write(dir.join("crlnumber"), "2000\n").expect("crlnumber");
    std::fs::write(dir.join("ca.cnf"), CA_CNF).expect("cnf");
    ossl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            &format!("rsa:{bits}"),
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            "ca.key",
            "-out",
            "ca.csr",
        ],
    );
    let ext = "[ext]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n";
    std::fs::write(dir.join("ca.ext"), ext).expect("ext");
    let path = |f: &str| dir.join(f).display().to_string();
    ossl(
        root_dir,
        &[
            "ca",
            "-batch",
            "-notext",
            "-config",
            "ca.cnf",
            "-in",
            &path("ca.csr"),
            "-out",
            &path("ca.pem"),
            "-extfile",
            &path("ca.ext"),
            "-extensions",
            "ext",
            "-days",
            "30",
        ],
    );
    read_ident(dir, "ca")
}

fn read_ident(dir: &Path, name: &str) -> Ident {
    Ident {
        cert_pem: std::fs::read(dir.join(format!("{name}.pem"))).expect("cert"),
        key_pem: std::fs::read(dir.join(format!("{name}.key"))).expect("key"),
    }
}

/// A leaf certificate to issue with `openssl ca`.
pub struct Leaf<'a> {
    pub name: &'a str,
    pub subject: String,
    /// `subjectAltName` value, e.g. `email:a@b` or `DNS:b`; `None`: no SAN.
    pub san: Option<String>,
    pub bits: u32,
    /// The CA's signature digest.
    pub md: &'a str,
    /// `(startdate, enddate)` as `YYYYMMDDHHMMSSZ`; `None`: now for 30 days.
    pub dates: Option<(&'a str, &'a str)>,
    /// A CRL distribution point URL.
    pub crl_url: Option<String>,
}

impl<'a> Leaf<'a> {
    pub fn new(name: &'a str, email: &str) -> Self {
        Self {
            name,
            subject: format!("/CN={name}"),
            san: Some(format!("email:{email}")),
            bits: 2048,
            md: "sha256",
            dates: None,
            crl_url: None,
        }
    }
}

/// Issues `leaf` from the CA in `ca_dir` (see [`make_ca`]).
pub fn issue(ca_dir: &Path, leaf: &Leaf<'_>) -> Ident {
    let name = leaf.name;
    let mut ext = "[ext]\nbasicConstraints=CA:FALSE\n\
                   keyUsage=critical,digitalSignature,keyEncipherment\n\
                   extendedKeyUsage=emailProtection\n"
        .to_string();
    if let Some(san) = &leaf.san {
        ext.push_str(&format!("subjectAltName={san}\n"));
    }
    if let Some(url) = &leaf.crl_url {
        ext.push_str(&format!("crlDistributionPoints=URI:{url}\n"));
    }
    std::fs::write(ca_dir.join(format!("{name}.ext")), ext).expect("ext");
    ossl(
        ca_dir,
        &[
            "req",
            "-new",
            "-newkey",
            &format!("rsa:{}", leaf.bits),
            "-nodes",
            "-subj",
            &leaf.subject,
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    let (csr, out, extfile) = (
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.ext"),
    );
    let mut args = vec![
        "ca",
        "-batch",
        "-notext",
        "-config",
        "ca.cnf",
        "-in",
        &csr,
        "-out",
        &out,
        "-extfile",
        &extfile,
        "-extensions",
        "ext",
        "-md",
        leaf.md,
    ];
    match leaf.dates {
        Some((start, end)) => args.extend(["-startdate", start, "-enddate", end]),
        None => args.extend(["-days", "30"]),
    }
    ossl(ca_dir, &args);
    read_ident(ca_dir, name)
}

/// The shared test PKI: `ca` (trusted), `weak_sub` (an intermediate of `ca` with a 1024-bit
/// key) and `rogue` (not trusted), and the leaves by name.
pub struct Pki {
    pub ca: Ident,
    pub weak_sub: Ident,
    pub rogue: Ident,
    pub ids: HashMap<&'static str, Ident>,
}

impl Pki {
    pub fn id(&self, name: &str) -> &Ident {
        self.ids
            .get(name)
            .unwrap_or_else(|| panic!("no identity {name}"))
    }

    /// Anchors with `ca` for inbound messages from every domain.
    pub fn anchors(&self) -> Anchors {
        Anchors::new(vec![AnchorSet {
            domains: Vec::new(),
            outbound: false,
            inbound: true,
            certs: vec![self.ca.cert()],
        }])
    }
}

/// The PKI, made on first use.
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca_dir = tmp.path().join("ca");
        let rogue_dir = tmp.path().join("rogue");
        let ca = make_ca(&ca_dir, "Switchboard Test Direct CA");
        let rogue = make_ca(&rogue_dir, "Someone Else's CA");
        let sub_dir = tmp.path().join("weak-sub");
        let weak_sub = make_sub_ca(&ca_dir, &sub_dir, "Weak Intermediate CA", 1024);
        let mut ids = HashMap::new();
        let mut add = |name: &'static str, dir: &Path, leaf: Leaf<'_>| {
            ids.insert(name, issue(dir, &leaf));
        };
        add("bob", &ca_dir, Leaf::new("bob", BOB));
        add("bob_next", &ca_dir, Leaf::new("bob_next", BOB));
        add("alice", &ca_dir, Leaf::new("alice", ALICE));
        add("carol", &ca_dir, Leaf::new("carol", CAROL));
        add(
            "alice_domain",
            &ca_dir,
            Leaf {
                san: Some("DNS:sender.example".into()),
                ..Leaf::new("alice_domain", ALICE)
            },
        );
        add(
            "toby",
            &ca_dir,
            Leaf {
                san: Some("DNS:nhind.hsgincubator.com".into()),
                ..Leaf::new("toby", "")
            },
        );
        add(
            "alice_expired",
            &ca_dir,
            Leaf {
                dates: Some(("20200101000000Z", "20210101000000Z")),
                ..Leaf::new("alice_expired", ALICE)
            },
        );
        add(
            "alice_untrusted",
            &rogue_dir,
            Leaf::new("alice_untrusted", ALICE),
        );
        add(
            "alice_sha1_cert",
            &ca_dir,
            Leaf {
                md: "sha1",
                ..Leaf::new("alice_sha1_cert", ALICE)
            },
        );
        add(
            "alice_1024",
            &ca_dir,
            Leaf {
                bits: 1024,
                ..Leaf::new("alice_1024", ALICE)
            },
        );
        add(
            "alice_dn_only",
            &ca_dir,
            Leaf {
                subject: format!("/CN=alice_dn_only/emailAddress={ALICE}"),
                san: None,
                ..Leaf::new("alice_dn_only", ALICE)
            },
        );
        add(
            "alice_weak_sub",
            &sub_dir,
            Leaf::new("alice_weak_sub", ALICE),
        );
        Pki {
            ca,
            weak_sub,
            rogue,
            ids,
        }
    })
}

/// A small RFC 5322 message from `from` to bob, CRLF line ends.
pub fn inner_message(from: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <{BOB}>\r\nDate: Mon, 1 Jun 2026 10:00:00 +0000\r\n\
         Message-ID: <m1@sender.example>\r\nSubject: Referral\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n\
         Hello Bob,\r\nplease see the referral.\r\n"
    )
    .into_bytes()
}

/// `inner` as a message/rfc822 entity (no transfer encoding).
pub fn wrapped(inner: &[u8]) -> Vec<u8> {
    let mut e = b"Content-Type: message/rfc822\r\n\r\n".to_vec();
    e.extend_from_slice(inner);
    e
}

/// CLI: signs `entity` (detached, binary) with `signers` (PKI names) and `md` into
/// `dir/signed.eml`.
pub fn sign(dir: &Path, entity: &[u8], signers: &[&Ident], md: &str) {
    sign_carrying(dir, entity, signers, None, md);
}

/// As [`sign`], the signature also carrying `extra` (an intermediate) with `-certfile`.
pub fn sign_carrying(
    dir: &Path,
    entity: &[u8],
    signers: &[&Ident],
    extra: Option<&Ident>,
    md: &str,
) {
    std::fs::write(dir.join("entity.eml"), entity).expect("entity");
    let mut args: Vec<String> = ["cms", "-sign", "-binary", "-md", md, "-in", "entity.eml"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(extra) = extra {
        std::fs::write(dir.join("extra.pem"), &extra.cert_pem).expect("extra");
        args.extend(["-certfile".into(), "extra.pem".into()]);
    }
    for (i, id) in signers.iter().enumerate() {
        let name = format!("signer{i}");
        id.write(dir, &name);
        args.extend([
            "-signer".into(),
            format!("{name}.pem"),
            "-inkey".into(),
            format!("{name}.key"),
        ]);
    }
    args.extend(["-out".into(), "signed.eml".into()]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    ossl(dir, &a);
}

/// CLI: encrypts `dir/signed.eml` to `recipient` with `cipher` (e.g. `-aes-128-cbc`) and
/// `keyopts` (e.g. `rsa_padding_mode:oaep`), outer From `from`; the message bytes.
pub fn encrypt(
    dir: &Path,
    recipient: &Ident,
    cipher: &str,
    keyopts: &[&str],
    from: &str,
) -> Vec<u8> {
    recipient.write(dir, "recipient");
    let mut args = vec![
        "cms",
        "-encrypt",
        "-binary",
        "-in",
        "signed.eml",
        "-out",
        "enc.eml",
        "-from",
        from,
        "-to",
        BOB,
        "-subject",
        "Direct",
        cipher,
        "-recip",
        "recipient.pem",
    ];
    // -keyopt applies to the preceding -recip.
    args.extend(keyopts.iter().flat_map(|k| ["-keyopt", *k]));
    ossl(dir, &args);
    std::fs::read(dir.join("enc.eml")).expect("enc.eml")
}

/// Sign with `signers` and `md`, encrypt to bob with `cipher`: the usual sending STA.
pub fn sealed(entity: &[u8], signers: &[&Ident], md: &str, cipher: &str, from: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    sign(dir.path(), entity, signers, md);
    encrypt(dir.path(), pki().id("bob"), cipher, &[], from)
}
