//! The local certificate store: a directory the operator fills with `switchboard certs
//! import`. Layout: `<dir>/<bound name>/<sha-256 fingerprint>.pem`, where the bound name is a
//! lowercased address (`user@example.org`, from a subjectAltName rfc822Name) or domain
//! (`example.org`, from a dNSName). A directory rather than a table so that the CLI works
//! without the database and operators can inspect, back up or provision it with ordinary
//! tools.
//!
//! Owns the layout only; whether a certificate is usable is `discovery`'s decision.

use std::path::{Path, PathBuf};

use openssl::hash::MessageDigest;
use openssl::x509::{X509, X509Ref};

use super::DiscoveryError;
use crate::load_certs;

/// A certificate store directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    dir: PathBuf,
}

/// One stored certificate.
#[derive(Debug, Clone)]
pub struct StoredCert {
    /// The address or domain it is filed under.
    pub name: String,
    pub fingerprint: String,
    pub cert: X509,
}

/// The names a certificate binds (lowercased, wildcards ignored).
pub fn bound_names(cert: &X509Ref) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(sans) = cert.subject_alt_names() {
        for san in &sans {
            let name = san.email().or_else(|| san.dnsname());
            if let Some(n) = name
                && !n.contains('*')
                && !n.trim().is_empty()
            {
                let n = n.trim().trim_end_matches('.').to_ascii_lowercase();
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
    }
    names
}

fn fingerprint(cert: &X509Ref) -> Result<String, DiscoveryError> {
    Ok(hex::encode(cert.digest(MessageDigest::sha256())?))
}

/// A name safe as one path component (addresses and domains only).
fn safe_name(name: &str) -> Option<String> {
    let n = name.trim().to_ascii_lowercase();
    let ok = !n.is_empty()
        && !n.starts_with('.')
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "@.-_+".contains(c));
    ok.then_some(n)
}

impl LocalStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Files every certificate in `bytes` (PEM, DER or `.p7b`) under the names it binds.
    /// Returns what was stored.
    pub fn import(&self, bytes: &[u8]) -> Result<Vec<StoredCert>, DiscoveryError> {
        let certs = load_certs(bytes).map_err(|e| DiscoveryError::Store(e.to_string()))?;
        if certs.is_empty() {
            return Err(DiscoveryError::Store("no certificate in the input".into()));
        }
        let mut stored = Vec::new();
        for cert in certs {
            let names = bound_names(&cert);
            if names.is_empty() {
                return Err(DiscoveryError::Store(
                    "a certificate binds no Direct address or domain (subjectAltName)".into(),
                ));
            }
            let fp = fingerprint(&cert)?;
            let pem = cert.to_pem()?;
            for name in names {
                let Some(safe) = safe_name(&name) else {
                    continue;
                };
                let dir = self.dir.join(&safe);
                std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
                let path = dir.join(format!("{fp}.pem"));
                std::fs::write(&path, &pem).map_err(|e| io(&path, e))?;
                stored.push(StoredCert {
                    name: safe,
                    fingerprint: fp.clone(),
                    cert: cert.clone(),
                });
            }
        }
        Ok(stored)
    }

    /// Certificates filed under `name` (an address or a domain); none when absent.
    pub fn lookup(&self, name: &str) -> Result<Vec<StoredCert>, DiscoveryError> {
        let Some(safe) = safe_name(name) else {
            return Ok(Vec::new());
        };
        self.read_dir(&safe)
    }

    /// Everything in the store, by name.
    pub fn list(&self) -> Result<Vec<StoredCert>, DiscoveryError> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(&self.dir, e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            out.extend(self.read_dir(&name)?);
        }
        Ok(out)
    }

    fn read_dir(&self, name: &str) -> Result<Vec<StoredCert>, DiscoveryError> {
        let dir = self.dir.join(name);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir, e)),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "pem"))
            .collect();
        paths.sort();
        let mut out = Vec::new();
        for path in paths {
            let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
            for cert in load_certs(&bytes).map_err(|e| DiscoveryError::Store(e.to_string()))? {
                out.push(StoredCert {
                    name: name.to_string(),
                    fingerprint: fingerprint(&cert)?,
                    cert,
                });
            }
        }
        Ok(out)
    }
}

fn io(path: &Path, e: std::io::Error) -> DiscoveryError {
    DiscoveryError::Store(format!("{}: {e}", path.display()))
}
