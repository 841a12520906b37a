//! Loading a Direct connector's key material and trust: our signing certificate, its chain
//! and key, the keys that may decrypt notifications, and the anchor sets. Read once at
//! start-up; a missing or unusable file fails the start, not a delivery.

use std::path::Path;
use std::sync::Arc;

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use super::DirectChannelError;
use crate::config::{DirectConnectorConfig, DirectMode, Secret, TrustDirection};
use crate::direct::anchors::{AnchorSet, Anchors};
use crate::direct::{KeyPurpose, load_certs, policy};

/// Our identity in `sign` mode.
pub struct Signer {
    pub cert: X509,
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
}

/// Everything a connector holds in memory.
pub struct KeyMaterial {
    pub signer: Option<Signer>,
    /// (certificate, key) pairs that may decrypt what we receive.
    pub decryption: Vec<(X509, PKey<Private>)>,
    pub anchors: Arc<Anchors>,
}

fn read(path: &Path) -> Result<Vec<u8>, DirectChannelError> {
    std::fs::read(path).map_err(|e| DirectChannelError::Config(format!("{}: {e}", path.display())))
}

fn certs(path: &Path) -> Result<Vec<X509>, DirectChannelError> {
    let certs = load_certs(&read(path)?)
        .map_err(|e| DirectChannelError::Config(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(DirectChannelError::Config(format!(
            "{}: no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn key(secret: &Secret) -> Result<PKey<Private>, DirectChannelError> {
    let path = secret.path()?;
    let bytes = read(&path)?;
    PKey::private_key_from_pem(&bytes)
        .or_else(|_| PKey::private_key_from_pkcs8(&bytes))
        .or_else(|_| PKey::private_key_from_der(&bytes))
        .map_err(|_| DirectChannelError::Config(format!("{}: not a private key", path.display())))
}

/// Loads and checks the connector's keys and anchors.
pub fn load(config: &DirectConnectorConfig) -> Result<KeyMaterial, DirectChannelError> {
    let mut decryption = Vec::new();
    let signer = match (&config.certificate, &config.private_key) {
        (Some(cert_path), Some(secret)) => {
            let mut all = certs(cert_path)?;
            let cert = all.remove(0);
            let key = key(secret)?;
            if !cert
                .public_key()
                .map(|p| p.public_eq(&key))
                .unwrap_or(false)
            {
                return Err(DirectChannelError::Config(format!(
                    "{}: the private key does not belong to the certificate",
                    cert_path.display()
                )));
            }
            policy::check_for_use(&cert, KeyPurpose::Signing)
                .map_err(|v| DirectChannelError::Config(format!("signing certificate: {v}")))?;
            policy::check_address_binding(&cert, &config.address).map_err(|v| {
                DirectChannelError::Config(format!("signing certificate vs address: {v}"))
            })?;
            decryption.push((cert.clone(), key.clone()));
            Some(Signer {
                cert,
                chain: all,
                key,
            })
        }
        (None, None) => None,
        _ => {
            return Err(DirectChannelError::Config(
                "certificate and private_key go together".into(),
            ));
        }
    };
    if config.mode == DirectMode::Sign && signer.is_none() {
        return Err(DirectChannelError::Config(
            "mode \"sign\" needs certificate and private_key".into(),
        ));
    }
    for pair in &config.decryption_keys {
        let cert = certs(&pair.certificate)?.remove(0);
        decryption.push((cert, key(&pair.private_key)?));
    }
    let anchors = load_anchors(config)?;
    let metrics = crate::metrics::metrics();
    let mut seen = std::collections::HashSet::new();
    for (i, (cert, _)) in decryption.iter().enumerate() {
        let role = if i == 0 && signer.is_some() {
            "signing"
        } else {
            "decryption"
        };
        record_expiry(metrics, &config.address, role, cert, &mut seen);
    }
    for t in &config.trust {
        for f in &t.files {
            for cert in certs(f)? {
                record_expiry(metrics, &config.address, "anchor", &cert, &mut seen);
            }
        }
    }
    Ok(KeyMaterial {
        signer,
        decryption,
        anchors: Arc::new(anchors),
    })
}

/// Shows a certificate's expiry at `/metrics` (and to `certificate_expiring` alerts).
fn record_expiry(
    metrics: &crate::metrics::Metrics,
    address: &str,
    role: &str,
    cert: &openssl::x509::X509Ref,
    seen: &mut std::collections::HashSet<(String, String)>,
) {
    let subject = cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .unwrap_or_else(|| "unnamed".into());
    if !seen.insert((role.to_string(), subject.clone())) {
        return;
    }
    let not_after = openssl::asn1::Asn1Time::from_unix(0)
        .ok()
        .and_then(|epoch| epoch.diff(cert.not_after()).ok())
        .map(|d| i64::from(d.days) * 86_400 + i64::from(d.secs));
    if let Some(not_after) = not_after {
        metrics.certificate(address, role, &subject, not_after);
    }
}

/// The connector's trust anchor sets.
pub fn load_anchors(config: &DirectConnectorConfig) -> Result<Anchors, DirectChannelError> {
    let mut sets = Vec::new();
    for t in &config.trust {
        let mut anchors = Vec::new();
        for f in &t.files {
            anchors.extend(certs(f)?);
        }
        sets.push(AnchorSet {
            domains: t
                .domains
                .iter()
                .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            outbound: t.direction != TrustDirection::Inbound,
            inbound: t.direction != TrustDirection::Outbound,
            certs: anchors,
        });
    }
    Ok(Anchors::new(sets))
}
