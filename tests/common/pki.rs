//! A test PKI made with the `openssl` CLI (an implementation independent of the code under
//! test) in a temp dir: every certificate `name` is `<name>.pem` with its key `<name>.key`.
//! CAs and leaves are RSA 2048, SHA-256, valid 30 days.

use std::path::{Path, PathBuf};
use std::process::Command;

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

/// `openssl <args>` in `dir`; panics with its stderr if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl CLI");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The extensions of an S/MIME leaf bound by `san` (`email:a@b` or `DNS:b`).
pub fn smime_ext(san: &str) -> String {
    format!(
        "subjectAltName={san}\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=emailProtection\nbasicConstraints=CA:FALSE\n"
    )
}

/// Certificates and keys in a temp dir (see the module doc).
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    /// An empty PKI.
    pub fn new() -> Self {
        Pki {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The folder everything is in.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A file of the PKI.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// `openssl <args>` in the PKI's folder.
    pub fn openssl(&self, args: &[&str]) {
        openssl(self.root(), args)
    }

    /// A self-signed CA `name`.
    pub fn ca(&self, name: &str) -> &Self {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-days",
            "30",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        self
    }

    /// An S/MIME leaf `name` bound by `san` (`email:a@b` or `DNS:b`), issued by CA `ca`.
    pub fn leaf(&self, ca: &str, name: &str, san: &str) -> &Self {
        self.issue(ca, name, &smime_ext(san))
    }

    /// A certificate `name` with the extensions `ext` (an `openssl x509 -extfile`), issued by
    /// `ca`.
    pub fn issue(&self, ca: &str, name: &str, ext: &str) -> &Self {
        self.request(name, ext);
        self.openssl(&[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "30",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ]);
        self
    }

    /// A self-signed certificate `name` with the extensions `ext`.
    pub fn self_signed(&self, name: &str, ext: &str) -> &Self {
        self.request(name, ext);
        self.openssl(&[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "30",
            "-in",
            &format!("{name}.csr"),
            "-signkey",
            &format!("{name}.key"),
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ]);
        self
    }

    /// A key and a signing request for `name`, and its extensions file.
    fn request(&self, name: &str, ext: &str) {
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        std::fs::write(self.path(&format!("{name}.ext")), ext).expect("ext");
    }

    /// `<ca>.crl`, the CRL of CA `ca` revoking the certificates `revoked` (`openssl ca`).
    pub fn crl(&self, ca: &str, revoked: &[&str]) -> PathBuf {
        std::fs::write(self.path(&format!("{ca}-index.txt")), "").expect("index");
        std::fs::write(self.path(&format!("{ca}-crlnumber")), "01\n").expect("crlnumber");
        let config = format!("{ca}-ca.cnf");
        std::fs::write(
            self.path(&config),
            format!(
                "[ca]\ndefault_ca = CA_default\n[CA_default]\ndir = .\ndatabase = {ca}-index.txt\n\
                 new_certs_dir = .\ncertificate = {ca}.pem\nprivate_key = {ca}.key\n\
                 crlnumber = {ca}-crlnumber\ndefault_md = sha256\ndefault_crl_days = 7\n"
            ),
        )
        .expect("ca config");
        for name in revoked {
            self.openssl(&["ca", "-config", &config, "-revoke", &format!("{name}.pem")]);
        }
        let crl = format!("{ca}.crl");
        self.openssl(&["ca", "-config", &config, "-gencrl", "-out", &crl]);
        self.path(&crl)
    }

    /// `<name>.der`, the certificate in DER (`openssl x509 -outform DER`).
    pub fn der_file(&self, name: &str) -> PathBuf {
        let der = format!("{name}.der");
        self.openssl(&[
            "x509",
            "-in",
            &format!("{name}.pem"),
            "-outform",
            "DER",
            "-out",
            &der,
        ]);
        self.path(&der)
    }

    pub fn cert(&self, name: &str) -> X509 {
        X509::from_pem(&std::fs::read(self.path(&format!("{name}.pem"))).expect("pem"))
            .expect("cert")
    }

    pub fn key(&self, name: &str) -> PKey<Private> {
        PKey::private_key_from_pem(&std::fs::read(self.path(&format!("{name}.key"))).expect("key"))
            .expect("key")
    }
}
