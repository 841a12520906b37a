//! `switchboard direct seal|open` against the `openssl` CLI as the other STA.

use std::path::Path;
use std::process::{Command, Stdio};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and one leaf for `address` (RSA 2048, SAN rfc822Name, S/MIME key usage).
fn pki(dir: &Path, name: &str, address: &str) {
    if !dir.join("ca.pem").exists() {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:3072",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=Test CA",
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
    }
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!("subjectAltName=email:{address}\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\n"),
    )
    .expect("ext");
    openssl(
        dir,
        &[
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
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-sha256",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

#[test]
fn seal_interoperates_with_openssl_and_open_reports_each_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    pki(d, "alice", "alice@direct.example.org");
    pki(d, "bob", "bob@direct.example.org");
    std::fs::write(
        d.join("in.eml"),
        "From: alice@direct.example.org\r\nTo: bob@direct.example.org\r\nSubject: Referral\r\nMessage-ID: <r1@direct.example.org>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nReferral attached.\r\n",
    )
    .expect("input");
    let bin = env!("CARGO_BIN_EXE_switchboard");
    let sealed = Command::new(bin)
        .current_dir(d)
        .args([
            "direct",
            "seal",
            "in.eml",
            "--from",
            "alice@direct.example.org",
            "--to",
            "bob@direct.example.org",
            "--sign-cert",
            "alice.pem",
            "--sign-key",
            "alice.key",
            "--recipient-cert",
            "bob.pem",
            "--cipher",
            "aes256-gcm",
        ])
        .output()
        .expect("seal");
    assert!(
        sealed.status.success(),
        "{}",
        String::from_utf8_lossy(&sealed.stderr)
    );
    std::fs::write(d.join("out.eml"), &sealed.stdout).expect("out");

    // The other STA: openssl decrypts and verifies what we sealed.
    openssl(
        d,
        &[
            "cms",
            "-decrypt",
            "-in",
            "out.eml",
            "-recip",
            "bob.pem",
            "-inkey",
            "bob.key",
            "-out",
            "signed.eml",
        ],
    );
    let verified = Command::new("openssl")
        .current_dir(d)
        .args(["cms", "-verify", "-in", "signed.eml", "-CAfile", "ca.pem"])
        .stderr(Stdio::piped())
        .output()
        .expect("verify");
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(String::from_utf8_lossy(&verified.stdout).contains("Referral attached."));

    // And our open prints its verdicts and the original message.
    let opened = Command::new(bin)
        .current_dir(d)
        .args([
            "direct",
            "open",
            "out.eml",
            "--cert",
            "bob.pem",
            "--key",
            "bob.key",
            "--anchors",
            "ca.pem",
        ])
        .output()
        .expect("open");
    let report = String::from_utf8_lossy(&opened.stderr);
    assert!(opened.status.success(), "{report}");
    assert!(report.contains("verdict: ACCEPTED"), "{report}");
    assert!(
        report.lines().any(|l| l.trim_start().starts_with("pass")),
        "{report}"
    );
    assert!(!report.contains("FAIL"), "{report}");
    assert!(String::from_utf8_lossy(&opened.stdout).contains("Referral attached."));

    // Against the wrong anchors it is rejected, with the reason.
    let other = tempfile::tempdir().expect("tempdir");
    pki(other.path(), "x", "x@other.example.org");
    let rejected = Command::new(bin)
        .current_dir(d)
        .args([
            "direct",
            "open",
            "out.eml",
            "--cert",
            "bob.pem",
            "--key",
            "bob.key",
            "--anchors",
        ])
        .arg(other.path().join("ca.pem"))
        .output()
        .expect("open");
    assert!(!rejected.status.success());
    assert!(String::from_utf8_lossy(&rejected.stderr).contains("verdict: REJECTED"));
}
