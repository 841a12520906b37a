//! S/MIME through the `openssl` CLI, the independent peer of the Direct tests: a sender's
//! STA sealing a message to us, and a recipient's STA opening what we sent.

use super::hisp::{DOC, US};
use super::pki::{Pki, openssl};

/// A message from `DOC` to us: `entity` (a MIME entity) signed by `signer` and encrypted to
/// `us` by the openssl CLI, with `message_id` on the outer headers (as a HISP delivers it).
pub fn openssl_send(pki: &Pki, signer: &str, entity: &str, message_id: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("entity.txt"), entity).expect("write");
    let path = |name: &str| pki.path(name).display().to_string();
    openssl(
        dir.path(),
        &[
            "cms",
            "-sign",
            "-md",
            "sha256",
            "-in",
            "entity.txt",
            "-signer",
            &path(&format!("{signer}.pem")),
            "-inkey",
            &path(&format!("{signer}.key")),
            "-out",
            "signed.eml",
        ],
    );
    openssl(
        dir.path(),
        &[
            "cms",
            "-encrypt",
            "-aes256",
            "-in",
            "signed.eml",
            "-from",
            DOC,
            "-to",
            US,
            "-subject",
            "Referral",
            "-out",
            "sealed.eml",
            "-recip",
            &path("us.pem"),
            "-keyopt",
            "rsa_padding_mode:oaep",
            "-keyopt",
            "rsa_oaep_md:sha256",
        ],
    );
    let sealed = std::fs::read(dir.path().join("sealed.eml")).expect("sealed");
    let mut out = format!("Message-ID: <{message_id}>\r\n").into_bytes();
    out.extend_from_slice(&sealed);
    out
}

/// A referral as a wrapped message (message/rfc822), asking for final-delivery notice.
pub fn referral(message_id: &str, body: &str) -> String {
    format!(
        "Content-Type: message/rfc822\r\n\r\n\
         From: <{DOC}>\r\nTo: <{US}>\r\nSubject: Referral\r\nMessage-ID: <{message_id}>\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
         Disposition-Notification-Options: X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
}

/// `openssl cms -decrypt` with the key of `recipient`, then `openssl cms -verify` against the
/// CA (S/MIME signing purpose): the signed entity as another S/MIME stack reads it.
pub fn openssl_open(pki: &Pki, recipient: &str, raw: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("in.eml"), raw).expect("write");
    openssl(
        dir.path(),
        &[
            "cms",
            "-decrypt",
            "-in",
            "in.eml",
            "-recip",
            &pki.path(&format!("{recipient}.pem")).display().to_string(),
            "-inkey",
            &pki.path(&format!("{recipient}.key")).display().to_string(),
            "-out",
            "signed.eml",
        ],
    );
    openssl(
        dir.path(),
        &[
            "cms",
            "-verify",
            "-in",
            "signed.eml",
            "-CAfile",
            &pki.path("ca.pem").display().to_string(),
            "-purpose",
            "smimesign",
            "-out",
            "inner.eml",
        ],
    );
    std::fs::read(dir.path().join("inner.eml")).expect("inner")
}

/// [`openssl_open`], as text.
pub fn openssl_open_text(pki: &Pki, recipient: &str, raw: &[u8]) -> String {
    String::from_utf8(openssl_open(pki, recipient, raw)).expect("utf-8")
}
