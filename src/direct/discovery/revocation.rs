//! Fetching what a recipient certificate points at: missing intermediates from its AIA
//! `caIssuers` URL, and its CRL from the CRL distribution point (HTTP only, bounded size and
//! time, cached per URL). Whether an unreachable CRL rejects the certificate (`hard`) or not
//! (`soft`) is configuration.
//!
//! Owns the fetching and the cache; the validation itself is `trust::TrustStore`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openssl::nid::Nid;
use openssl::x509::{X509, X509Crl, X509Ref};

use crate::config::{CrlMode, RevocationConfig};
use crate::direct::{load_certs, load_crls};

/// Largest certificate bundle or CRL fetched.
const MAX_BYTES: usize = 4 * 1024 * 1024;

/// An HTTP fetcher with a CRL cache.
pub struct Fetcher {
    http: reqwest::Client,
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

impl Fetcher {
    pub fn new(config: RevocationConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs.max(1)))
            .build()?;
        Ok(Self {
            http,
            config,
            crls: Mutex::new(HashMap::new()),
        })
    }

    async fn get(&self, url: &str) -> Option<Vec<u8>> {
        let response = self.http.get(url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let bytes = response.bytes().await.ok()?;
        (bytes.len() <= MAX_BYTES).then(|| bytes.to_vec())
    }

    /// Intermediates named by `cert`'s AIA (empty when off or unreachable).
    pub async fn intermediates(&self, cert: &X509Ref) -> Vec<X509> {
        if !self.config.aia {
            return Vec::new();
        }
        let mut out = Vec::new();
        for url in ca_issuer_urls(cert) {
            if let Some(bytes) = self.get(&url).await {
                out.extend(load_certs(&bytes).unwrap_or_default());
            }
        }
        out
    }

    /// The CRLs for `cert`: `Ok(None)` when it names none or checking is off, `Err(url)` when
    /// one could not be fetched.
    pub async fn crls(&self, cert: &X509Ref) -> Result<Option<Vec<X509Crl>>, String> {
        if self.config.crl == CrlMode::Off {
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
                    let Some(b) = self.get(&url).await else {
                        return Err(url);
                    };
                    if let Ok(mut cache) = self.crls.lock() {
                        cache.insert(url.clone(), (Instant::now(), b.clone()));
                    }
                    b
                }
            };
            let crls = load_crls(&bytes).map_err(|_| url.clone())?;
            if crls.is_empty() {
                return Err(url);
            }
            all.extend(crls);
        }
        Ok(Some(all))
    }
}
