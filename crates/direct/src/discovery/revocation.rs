//! Fetching what a recipient certificate points at: missing intermediates from its AIA
//! `caIssuers` URL, and its CRL from the CRL distribution point (through the discovery
//! [`FetchPolicy`]: public http(s) destinations or `fetch_allow`, bounded size and time; CRLs
//! cached per URL). Whether an unreachable CRL rejects the certificate (`hard`) or not
//! (`soft`) is configuration. *When* to fetch is `discovery::evaluate`'s decision: CRLs only
//! for a certificate that already chains to an anchor.
//!
//! Owns the fetching and the cache; the validation itself is `trust::TrustStore`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openssl::nid::Nid;
use openssl::x509::{X509, X509Crl, X509Ref};

use super::fetch::{Fetch, FetchError, Purpose};
use crate::discovery::options::{CrlMode, RevocationConfig};
use crate::{load_certs, load_crls};

/// A fetcher with a CRL cache.
pub struct Fetcher {
    policy: Arc<dyn Fetch>,
    pub config: RevocationConfig,
    crls: Mutex<HashMap<String, (Instant, Vec<u8>)>>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("config", &self.config)
            .finish()
    }
}

/// Why the CRL of a certificate could not be had. Names the host, never the URL.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    #[error("CRL {0}")]
    Fetch(#[from] FetchError),
    #[error("CRL from {0}: not a CRL")]
    Parse(String),
}

/// The `http(s)://` URIs of a stack of general names.
fn uris<'a>(names: impl Iterator<Item = &'a openssl::x509::GeneralNameRef>) -> Vec<String> {
    names
        .filter_map(|n| n.uri())
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .map(str::to_string)
        .collect()
}

/// AIA caIssuers URLs of `cert`.
pub fn ca_issuer_urls(cert: &X509Ref) -> Vec<String> {
    cert.authority_info()
        .map(|aia| {
            uris(
                aia.iter()
                    .filter(|a| a.method().nid() == Nid::AD_CA_ISSUERS)
                    .map(|a| a.location()),
            )
        })
        .unwrap_or_default()
}

/// CRL distribution point URLs of `cert`.
pub fn crl_urls(cert: &X509Ref) -> Vec<String> {
    let Some(points) = cert.crl_distribution_points() else {
        return Vec::new();
    };
    points
        .iter()
        .filter_map(|p| p.distpoint().and_then(|d| d.fullname()))
        .flat_map(|names| uris(names.iter()))
        .collect()
}

fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

impl Fetcher {
    /// A fetcher under `policy` (its timeout: `config.timeout_secs`, see
    /// [`FetchPolicy::new`]).
    pub fn new(config: RevocationConfig, policy: Arc<dyn Fetch>) -> Self {
        Self {
            policy,
            config,
            crls: Mutex::new(HashMap::new()),
        }
    }

    /// Intermediates named by `cert`'s AIA (empty when off or unreachable); what went wrong
    /// goes to `notes`.
    pub async fn intermediates(&self, cert: &X509Ref, notes: &mut Vec<String>) -> Vec<X509> {
        if !self.config.aia {
            return Vec::new();
        }
        let mut out = Vec::new();
        for url in ca_issuer_urls(cert) {
            match self.policy.get(&url, Purpose::Certificate).await {
                Ok(bytes) => match load_certs(&bytes) {
                    Ok(certs) => out.extend(certs),
                    Err(_) => notes.push(format!("AIA from {}: not a certificate", host_of(&url))),
                },
                Err(e) => notes.push(format!("AIA {e}")),
            }
        }
        out
    }

    /// The CRLs for `cert` under the outbound mode (`config.crl`): `Ok(None)` when it names
    /// none or checking is off, `Err` when one could not be had.
    pub async fn crls(&self, cert: &X509Ref) -> Result<Option<Vec<X509Crl>>, CrlError> {
        self.crls_with(cert, self.config.crl).await
    }

    /// The CRLs for `cert` under `mode` (e.g. `config.inbound_crl` for the signers of
    /// received messages); otherwise as [`Fetcher::crls`]. Whether an `Err` rejects
    /// (`hard`) or is ignored (`soft`) is the caller's decision.
    pub async fn crls_with(
        &self,
        cert: &X509Ref,
        mode: CrlMode,
    ) -> Result<Option<Vec<X509Crl>>, CrlError> {
        if mode == CrlMode::Off {
            return Ok(None);
        }
        let urls = crl_urls(cert);
        if urls.is_empty() {
            return Ok(None);
        }
        let ttl = Duration::from_secs(self.config.cache_secs);
        let mut all = Vec::new();
        for url in urls {
            let cached = self.crls.lock().ok().and_then(|c| {
                c.get(&url)
                    .filter(|(at, _)| at.elapsed() < ttl)
                    .map(|(_, v)| v.clone())
            });
            let bytes = match cached {
                Some(b) => b,
                None => {
                    let b = self.policy.get(&url, Purpose::Crl).await?;
                    if let Ok(mut cache) = self.crls.lock() {
                        cache.insert(url.clone(), (Instant::now(), b.clone()));
                    }
                    b
                }
            };
            let crls = load_crls(&bytes).map_err(|_| CrlError::Parse(host_of(&url)))?;
            if crls.is_empty() {
                return Err(CrlError::Parse(host_of(&url)));
            }
            all.extend(crls);
        }
        Ok(Some(all))
    }
}
