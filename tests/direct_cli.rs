//! `switchboard direct seal|open` against the `openssl` CLI as the other STA.

mod common;

use std::process::{Command, Stdio};

use common::pki::{Pki, openssl};

#[test]
fn seal_interoperates_with_openssl_and_open_reports_each_check() {
    let pki = Pki::new();
    pki.ca("ca")
        .leaf("ca", "alice", "email:alice@direct.example.org")
        .leaf("ca", "bob", "email:bob@direct.example.org");
    let d = pki.root();
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
    let other = Pki::new();
    other.ca("ca").leaf("ca", "x", "email:x@other.example.org");
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
        .arg(other.path("ca.pem"))
        .output()
        .expect("open");
    assert!(!rejected.status.success());
    assert!(String::from_utf8_lossy(&rejected.stderr).contains("verdict: REJECTED"));
}
