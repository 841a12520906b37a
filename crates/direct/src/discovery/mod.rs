//! Certificate discovery for an outbound Direct recipient: the local store first, then DNS
//! CERT records (RFC 4398), then LDAP (`_ldap._tcp` SRV), address-bound before domain-bound
//! at each.
//!
//! The rule (Direct Applicability Statement v1.3, §5): if a certificate bound to the full
//! address is found, only address-bound certificates are considered; an address-bound
//! certificate that fails validation is *not* replaced by the domain's. Each candidate must
//! allow key encipherment with a strong RSA key, bind the address (or its domain), be within
//! its validity and chain to an outbound trust anchor for the recipient's domain.
//!
//! Network fetches are the attack surface (a hostile domain chooses the certificates, their
//! URLs and its SRV records), so [`evaluate`] fetches nothing for a certificate it will
//! reject anyway: the local checks first, then the chain to an anchor with what we hold; an
//! AIA intermediate only for a leaf that names another issuer than itself and than any
//! anchor (a self-signed certificate never causes a fetch), and used only if the chain then
//! holds; the CRL only once the chain holds. Every fetch goes through [`fetch::FetchPolicy`].
//!
//! Owns the search order and the verdicts. Does not own the lookups' transport (`dns`,
//! `ldap`, `fetch`) or the store layout (`local`). Step notes name hosts and fingerprints,
//! never addresses, so that the operator log may carry them.

pub mod dns;
pub mod fetch;
pub mod ldap;
pub mod local;
pub mod options;
pub mod revocation;

use chrono::{DateTime, Utc};
use openssl::x509::X509;

use super::anchors::{Anchors, Direction, domain_of};
use super::policy::{self, KeyPurpose, Violation};
pub use local::{LocalStore, StoredCert, bound_names};

/// Why discovery could not answer.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("certificate store: {0}")]
    Store(String),
    /// DNS failed for a reason other than "no such record" (retry later).
    #[error("dns: {0}")]
    Dns(String),
    /// The domain publishes LDAP servers and none answered (retry later).
    #[error("ldap: {0}")]
    Ldap(String),
    #[error("openssl: {0}")]
    Openssl(#[from] openssl::error::ErrorStack),
}

impl DiscoveryError {
    /// The error for the operator log: DNS and LDAP details (servers, never the address),
    /// but not a store path (its directory is named after the address).
    pub fn log_detail(&self) -> String {
        match self {
            Self::Store(_) => "certificate store: could not be read".into(),
            other => other.to_string(),
        }
    }
}

/// Where a candidate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Local,
    Dns,
    Ldap,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Local => "local store",
            Self::Dns => "DNS CERT",
            Self::Ldap => "LDAP",
        })
    }
}

/// One lookup made: where, for which name, and the verdict on each certificate found.
#[derive(Debug, Clone)]
pub struct Step {
    pub source: Source,
    /// The name looked up (address, domain, or DNS owner name).
    pub name: String,
    /// Address-bound (true) or domain-bound (false) lookup.
    pub address_bound: bool,
    /// (SHA-256 fingerprint, verdict) per certificate found.
    pub verdicts: Vec<(String, Result<(), Violation>)>,
    /// How the lookup went, for the operator (LDAP: SRV records, servers skipped or refused,
    /// the server and base that answered; fetches refused or failing, by host). Names hosts,
    /// never the address looked up: the operator log carries them.
    pub notes: Vec<String>,
}

/// What discovery found.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// The usable certificates (empty: none valid).
    pub certs: Vec<X509>,
    /// Every lookup, in order.
    pub steps: Vec<Step>,
}

impl Found {
    /// The reason to give when nothing usable was found.
    pub fn first_violation(&self) -> Option<&Violation> {
        self.steps
            .iter()
            .flat_map(|s| s.verdicts.iter())
            .find_map(|(_, v)| v.as_ref().err())
    }
}

/// Local store, DNS and LDAP, with the outbound anchors.
#[derive(Clone)]
pub struct Discovery {
    pub local: Option<LocalStore>,
    pub dns: Option<dns::DnsCerts>,
    pub ldap: Option<ldap::LdapCerts>,
    pub anchors: std::sync::Arc<Anchors>,
    /// AIA intermediates and CRLs (none: only what the anchors and store hold).
    pub fetcher: Option<std::sync::Arc<revocation::Fetcher>>,
}

/// Whether `cert` may be used to encrypt to `address` at `now`. With a `fetcher`, a missing
/// intermediate may be fetched from its AIA and, once it chains, its CRL is fetched and
/// checked (see the module docs for when).
pub async fn evaluate(
    cert: &X509,
    address: &str,
    anchors: &Anchors,
    fetcher: Option<&revocation::Fetcher>,
    now: DateTime<Utc>,
) -> Result<(), Violation> {
    evaluate_noting(cert, address, anchors, fetcher, now, &mut Vec::new()).await
}

/// Whether an AIA fetch could complete `cert`'s chain in `trust`: there are anchors, the
/// certificate is not self-issued, and its issuer is not itself an anchor (then the chain
/// failed for another reason than a missing intermediate).
fn aia_may_help(cert: &X509, trust: &crate::TrustStore) -> bool {
    let same = |a: &openssl::x509::X509NameRef, b: &openssl::x509::X509NameRef| {
        a.try_cmp(b).is_ok_and(|o| o.is_eq())
    };
    !trust.is_empty()
        && !same(cert.issuer_name(), cert.subject_name())
        && !trust
            .anchors()
            .iter()
            .any(|a| same(a.subject_name(), cert.issuer_name()))
}

/// [`evaluate`], noting fetches refused or failing in `notes`.
pub async fn evaluate_noting(
    cert: &X509,
    address: &str,
    anchors: &Anchors,
    fetcher: Option<&revocation::Fetcher>,
    now: DateTime<Utc>,
    notes: &mut Vec<String>,
) -> Result<(), Violation> {
    policy::check_for_use(cert, KeyPurpose::Encryption)?;
    policy::check_address_binding(cert, address)?;
    policy::check_validity(cert, now)?;
    policy::check_cert_digest(cert)?;
    let mut trust = anchors.store_for(&domain_of(address), Direction::Outbound);
    // 1. The chain, with what we hold and no CRL: nothing is fetched before it holds.
    let mut intermediates = Vec::new();
    match trust.verify(cert, &[], now, KeyPurpose::Encryption) {
        Ok(_) => {}
        Err(first @ Violation::UntrustedChain { .. }) => {
            let Some(fetcher) = fetcher.filter(|_| aia_may_help(cert, &trust)) else {
                return Err(first);
            };
            intermediates = fetcher.intermediates(cert, notes).await;
            if intermediates.is_empty() {
                return Err(first);
            }
            trust.verify(cert, &intermediates, now, KeyPurpose::Encryption)?;
        }
        Err(other) => return Err(other),
    }
    let Some(fetcher) = fetcher else {
        return Ok(());
    };
    // 2. Revocation, now that the certificate chains to an anchor.
    match fetcher.crls(cert).await {
        Ok(Some(crls)) => {
            for crl in crls {
                trust.add_crl(crl);
            }
        }
        Ok(None) => return Ok(()),
        Err(e) => {
            notes.push(e.to_string());
            if fetcher.config.crl == crate::discovery::options::CrlMode::Hard {
                return Err(Violation::RevocationUnknown {
                    reason: "the CRL distribution point could not be read".into(),
                });
            }
            return Ok(());
        }
    }
    trust
        .verify(cert, &intermediates, now, KeyPurpose::Encryption)
        .map(|_| ())
}

fn fingerprint(cert: &X509) -> String {
    cert.digest(openssl::hash::MessageDigest::sha256())
        .map(hex::encode)
        .unwrap_or_default()
}

impl Discovery {
    /// Finds the certificates to encrypt to `address` (see the module docs for the order).
    pub async fn find(&self, address: &str, now: DateTime<Utc>) -> Result<Found, DiscoveryError> {
        let address = address.trim().to_ascii_lowercase();
        let domain = domain_of(&address);
        let mut found = Found::default();
        // One LDAP search answers both LDAP steps (its filter asks for the address and the
        // domain); made only when the earlier sources found nothing.
        let mut ldap_answer: Option<ldap::LdapAnswer> = None;
        // (source, address-bound) in order; the first lookup that returns any certificate
        // decides, valid or not.
        for (source, address_bound) in [
            (Source::Local, true),
            (Source::Local, false),
            (Source::Dns, true),
            (Source::Dns, false),
            (Source::Ldap, true),
            (Source::Ldap, false),
        ] {
            let mut notes = Vec::new();
            let (name, certs) = match source {
                Source::Local => {
                    let Some(store) = &self.local else { continue };
                    let name = if address_bound { &address } else { &domain };
                    let certs = store.lookup(name)?.into_iter().map(|s| s.cert).collect();
                    (name.clone(), certs)
                }
                Source::Dns => {
                    let Some(dns) = &self.dns else { continue };
                    let owner = if address_bound {
                        dns::owner_name(&address)
                    } else {
                        Some(domain.clone())
                    };
                    let Some(owner) = owner else { continue };
                    let answer = dns.lookup(&owner).await?;
                    notes = answer.notes;
                    (owner, answer.certs)
                }
                Source::Ldap => {
                    let Some(ldap) = &self.ldap else { continue };
                    let answer = match ldap_answer.take() {
                        Some(a) => a,
                        None => {
                            let a = ldap.lookup(&address).await?;
                            notes = a.notes.clone();
                            a
                        }
                    };
                    let certs = answer.certs.clone();
                    ldap_answer = Some(answer);
                    let name = if address_bound { &address } else { &domain };
                    (name.clone(), certs)
                }
            };
            // A domain-bound lookup must return domain-bound certificates and vice versa.
            let certs: Vec<X509> = certs
                .into_iter()
                .filter(|c| {
                    let names = bound_names(c);
                    if address_bound {
                        names.contains(&address)
                    } else {
                        names.contains(&domain)
                    }
                })
                .collect();
            if certs.is_empty() {
                found.steps.push(Step {
                    source,
                    name,
                    address_bound,
                    verdicts: Vec::new(),
                    notes,
                });
                continue;
            }
            let mut step = Step {
                source,
                name,
                address_bound,
                verdicts: Vec::new(),
                notes,
            };
            for cert in certs {
                let verdict = evaluate_noting(
                    &cert,
                    &address,
                    &self.anchors,
                    self.fetcher.as_deref(),
                    now,
                    &mut step.notes,
                )
                .await;
                if verdict.is_ok() {
                    found.certs.push(cert.clone());
                }
                step.verdicts.push((fingerprint(&cert), verdict));
            }
            found.steps.push(step);
            return Ok(found);
        }
        Ok(found)
    }
}
