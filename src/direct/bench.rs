//! `switchboard bench --direct-messages N`: the Direct send path without the network — build
//! the message around a 100 KB C-CDA, seal it (wrap, sign SHA-256, encrypt AES-256-CBC to one
//! RSA-2048 recipient with OAEP) and SMTP-frame it (dot-stuffing, `CRLF.CRLF`) — on one
//! core, beside `openssl cms -sign | openssl cms -encrypt` on the same input (which includes
//! two process starts per message; its figure is the CLI pipeline's, not libcrypto's).
//! A throwaway test PKI is made with the openssl CLI.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use openssl::pkey::PKey;
use openssl::x509::X509;

use super::{SealOptions, seal};

const FROM: &str = "bench@direct.north.example";
const TO: &str = "doc@direct.south.example";

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .context("running the openssl CLI")?;
    if !out.status.success() {
        bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn leaf(dir: &Path, name: &str, email: &str) -> Result<()> {
    let ext = format!(
        "subjectAltName=email:{email}\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    );
    std::fs::write(dir.join(format!("{name}.ext")), ext)?;
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=bench",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "2",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    )
}

/// A C-CDA padded (with an XML comment) to exactly 100 KiB.
fn ccda_100k() -> String {
    let base = std::fs::read_to_string("../shared/vectors/ccda/CCD-2.xml").unwrap_or_else(|_| {
        "<?xml version=\"1.0\"?><ClinicalDocument xmlns=\"urn:hl7-org:v3\"></ClinicalDocument>"
            .into()
    });
    let target = 100 * 1024;
    let mut doc = base;
    if doc.len() + 8 < target {
        let pad = target - doc.len() - 8;
        doc.push_str("\n<!--");
        doc.extend(std::iter::repeat_n('x', pad));
        doc.push_str("-->");
    }
    doc
}

/// SMTP DATA framing: leading dots doubled, ended by `CRLF.CRLF`.
///
/// Only the places where a line starts with a dot are visited (a vectorised
/// search for `LF.`); everything between them is copied in one piece.
pub fn smtp_frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    if message.first() == Some(&b'.') {
        out.push(b'.');
    }
    let mut copied = 0;
    for i in memchr::memmem::find_iter(message, b"\n.") {
        // Copy through the LF, add the stuffed dot; the original dot follows.
        out.extend_from_slice(&message[copied..=i]);
        out.push(b'.');
        copied = i + 1;
    }
    out.extend_from_slice(&message[copied..]);
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

pub fn run(messages: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=bench CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )?;
    leaf(d, "us", FROM)?;
    leaf(d, "doc", TO)?;
    let cert = X509::from_pem(&std::fs::read(d.join("us.pem"))?)?;
    let key = PKey::private_key_from_pem(&std::fs::read(d.join("us.key"))?)?;
    let recipient = X509::from_pem(&std::fs::read(d.join("doc.pem"))?)?;
    let doc = ccda_100k();

    let started = Instant::now();
    let mut bytes = 0usize;
    for i in 0..messages {
        let inner = crate::channels::direct::compose::inner_message(
            FROM,
            TO,
            &format!("bench{i}@direct.north.example"),
            Some("Referral"),
            &doc,
        );
        let sealed = seal(
            &inner,
            FROM,
            &[TO],
            &cert,
            &key,
            &[],
            std::slice::from_ref(&recipient),
            SealOptions::default(),
        )?;
        bytes += smtp_frame(&sealed).len();
    }
    let ours = started.elapsed();
    let ours_rate = messages as f64 / ours.as_secs_f64();
    println!(
        "direct seal ({} KiB C-CDA, sign SHA-256 + AES-256-CBC/RSA-OAEP + SMTP framing, 1 core): \
         {messages} messages in {:.2} s = {ours_rate:.0} messages/s, {:.0} KiB per message on the wire",
        doc.len() / 1024,
        ours.as_secs_f64(),
        bytes as f64 / messages.max(1) as f64 / 1024.0
    );

    // The same input through the openssl CLI.
    let inner = crate::channels::direct::compose::inner_message(
        FROM,
        TO,
        "bench-cli@direct.north.example",
        Some("Referral"),
        &doc,
    );
    std::fs::write(d.join("inner.eml"), &inner)?;
    let cli_runs = messages.clamp(1, 100);
    let pipeline = "openssl cms -sign -binary -md sha256 -in inner.eml -signer us.pem -inkey us.key \
         | openssl cms -encrypt -binary -aes256 -recip doc.pem -keyopt rsa_padding_mode:oaep \
           -keyopt rsa_oaep_md:sha256 -out out.p7m";
    let started = Instant::now();
    for _ in 0..cli_runs {
        let status = Command::new("sh")
            .current_dir(d)
            .arg("-c")
            .arg(pipeline)
            .status()
            .context("sh")?;
        if !status.success() {
            bail!("openssl cms pipeline failed");
        }
    }
    let cli = started.elapsed();
    let cli_rate = cli_runs as f64 / cli.as_secs_f64();
    println!(
        "openssl cms -sign | openssl cms -encrypt (same input, 2 processes per message): \
         {cli_runs} messages in {:.2} s = {cli_rate:.0} messages/s",
        cli.as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn framing_stuffs_dots() {
        assert_eq!(
            super::smtp_frame(b"a\r\n.b\r\n"),
            b"a\r\n..b\r\n.\r\n".to_vec()
        );
        assert_eq!(
            super::smtp_frame(b".a\r\n.\r\n..\r\nb"),
            b"..a\r\n..\r\n...\r\nb\r\n.\r\n".to_vec()
        );
        assert_eq!(super::smtp_frame(b""), b"\r\n.\r\n".to_vec());
    }
}
