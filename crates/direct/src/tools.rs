//! `switchboard direct seal|open`: interop debugging without the daemon. `seal` signs and
//! encrypts a message as our STA would; `open` decrypts and verifies one and prints the verdict
//! of every policy check, then the unwrapped message. Output goes to the operator's terminal:
//! these commands are for test messages and interop diagnosis.

use std::path::Path;

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use super::smime::{KeyTransport, SealCipher, SealOptions};
use super::trust::{TrustError, TrustStore, load_certs};
use super::{DirectError, open, seal};

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error(transparent)]
    Direct(#[from] DirectError),
    #[error("{0}")]
    Usage(String),
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>, ToolError> {
    std::fs::read(path).map_err(|e| ToolError::File {
        path: format!("{flag} {}", path.display()),
        reason: e.to_string(),
    })
}

/// What an OpenSSL failure says in a few words (its first entry's reason, not the whole
/// stack of library, function and source line).
fn openssl_reason(stack: &openssl::error::ErrorStack) -> String {
    stack
        .errors()
        .first()
        .and_then(|e| e.reason())
        .unwrap_or("unreadable")
        .to_string()
}

fn trust_reason(error: &TrustError) -> String {
    match error {
        TrustError::Parse { source, .. } => openssl_reason(source),
        TrustError::Openssl(stack) => openssl_reason(stack),
        other => other.to_string(),
    }
}

/// A certificate (PEM or DER; the first one of a file), for the option `flag`.
pub fn load_cert(flag: &str, path: &Path) -> Result<Vec<X509>, ToolError> {
    let certs = load_certs(&read(flag, path)?).map_err(|e| ToolError::File {
        path: format!("{flag} {}", path.display()),
        reason: format!(
            "not a certificate: expected PEM, DER or a PKCS#7 bundle ({})",
            trust_reason(&e)
        ),
    })?;
    if certs.is_empty() {
        return Err(ToolError::Usage(format!(
            "{flag} {}: no certificate in the file",
            path.display()
        )));
    }
    Ok(certs)
}

/// A private key: PEM (PKCS#8 or traditional) or DER PKCS#8, for the option `flag`.
pub fn load_key(flag: &str, path: &Path) -> Result<PKey<Private>, ToolError> {
    let bytes = read(flag, path)?;
    PKey::private_key_from_pem(&bytes)
        .or_else(|_| PKey::private_key_from_pkcs8(&bytes))
        .or_else(|_| PKey::private_key_from_der(&bytes))
        .map_err(|e| ToolError::File {
            path: format!("{flag} {}", path.display()),
            reason: format!(
                "not a private key: expected PEM or DER PKCS#8 ({})",
                openssl_reason(&e)
            ),
        })
}

/// `--cipher` names.
pub fn cipher(name: &str) -> Result<SealCipher, ToolError> {
    Ok(match name {
        "aes128-cbc" => SealCipher::Aes128Cbc,
        "aes256-cbc" => SealCipher::Aes256Cbc,
        "aes128-gcm" => SealCipher::Aes128Gcm,
        "aes256-gcm" => SealCipher::Aes256Gcm,
        other => {
            return Err(ToolError::Usage(format!(
                "unknown cipher {other:?} (aes128-cbc, aes256-cbc, aes128-gcm, aes256-gcm)"
            )));
        }
    })
}

/// Signs and encrypts `input` from `from` to `to`.
pub fn seal_file(
    input: &Path,
    from: &str,
    to: &str,
    sign_cert: &Path,
    sign_key: &Path,
    recipient_certs: &[std::path::PathBuf],
    cipher: SealCipher,
) -> Result<Vec<u8>, ToolError> {
    let mut chain = load_cert("--sign-cert", sign_cert)?;
    let signer = chain.remove(0);
    let key = load_key("--sign-key", sign_key)?;
    let mut recipients = Vec::new();
    for path in recipient_certs {
        recipients.extend(load_cert("--recipient-cert", path)?);
    }
    let options = SealOptions {
        cipher,
        wrap: true,
        key_transport: KeyTransport::OaepSha256,
    };
    Ok(seal(
        &read("input", input)?,
        from,
        &[to],
        &signer,
        &key,
        &chain,
        &recipients,
        options,
    )?)
}

/// Opens `input`; returns the report lines and the unwrapped message (when accepted).
pub fn open_file(
    input: &Path,
    cert: &Path,
    key: &Path,
    anchors: &[std::path::PathBuf],
    sender: Option<&str>,
) -> Result<(Vec<String>, Option<Vec<u8>>), ToolError> {
    let raw = read("input", input)?;
    let sender = match sender {
        Some(s) => s.to_string(),
        None => switchboard_mail::parse_message(&raw)
            .and_then(|m| {
                m.from()
                    .and_then(|f| f.first())
                    .and_then(|a| a.address())
                    .map(str::to_string)
            })
            .ok_or_else(|| ToolError::Usage("no From address; pass --sender".into()))?,
    };
    let mut trust = TrustStore::new();
    for path in anchors {
        trust
            .add_anchors(&read("--anchors", path)?)
            .map_err(|e| ToolError::File {
                path: format!("--anchors {}", path.display()),
                reason: format!(
                    "not a trust anchor: expected PEM, DER or a PKCS#7 bundle ({})",
                    trust_reason(&e)
                ),
            })?;
    }
    let mut certs = load_cert("--cert", cert)?;
    let keys = vec![(certs.remove(0), load_key("--key", key)?)];
    let mut lines = vec![format!("sender: {sender}")];
    let verdict_line = |v: &super::Verdict| {
        let who = v
            .signer
            .map(|i| format!(" (signer {i})"))
            .unwrap_or_default();
        match &v.result {
            Ok(()) => format!("  pass  {}{who}", v.check),
            Err(reason) => format!("  FAIL  {}{who}: {reason}", v.check),
        }
    };
    match open(&raw, &keys, &trust, &sender, chrono::Utc::now()) {
        Ok(opened) => {
            lines.push(format!("content cipher: {}", opened.cipher));
            lines.extend(opened.verdicts.iter().map(verdict_line));
            lines.push("verdict: ACCEPTED".into());
            Ok((lines, Some(opened.inner)))
        }
        Err(DirectError::Rejected { reason, verdicts }) => {
            lines.extend(verdicts.iter().map(verdict_line));
            lines.push(format!("verdict: REJECTED — {reason}"));
            Ok((lines, None))
        }
        Err(other) => {
            lines.push(format!("verdict: REJECTED — {other}"));
            Ok((lines, None))
        }
    }
}
