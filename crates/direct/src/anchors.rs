//! Trust anchors per peer domain and direction: which CAs we trust for the certificates we
//! encrypt to (outbound) and for the signers of what we receive (inbound). Each anchor set
//! names the domains it serves (none: every domain), as Direct trust bundles do.
//!
//! Owns the selection only; validation is `trust::TrustStore`.

use openssl::x509::X509;

use super::trust::TrustStore;

/// Which way an anchor set is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Outbound,
    Inbound,
}

/// One set of anchors.
#[derive(Debug, Clone)]
pub struct AnchorSet {
    /// Lowercased domains; empty: every domain.
    pub domains: Vec<String>,
    pub outbound: bool,
    pub inbound: bool,
    pub certs: Vec<X509>,
}

/// All configured anchor sets.
#[derive(Debug, Clone, Default)]
pub struct Anchors {
    sets: Vec<AnchorSet>,
}

impl Anchors {
    pub fn new(sets: Vec<AnchorSet>) -> Self {
        Self { sets }
    }

    /// The trust store for a peer in `domain` (the part after `@`), for `direction`.
    pub fn store_for(&self, domain: &str, direction: Direction) -> TrustStore {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let certs = self
            .sets
            .iter()
            .filter(|s| match direction {
                Direction::Outbound => s.outbound,
                Direction::Inbound => s.inbound,
            })
            .filter(|s| s.domains.is_empty() || s.domains.contains(&domain))
            .flat_map(|s| s.certs.iter().cloned())
            .collect();
        TrustStore::from_anchors(certs)
    }
}

/// The domain of an address (lowercased), or the input when it has no `@`.
pub fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or(address)
        .trim()
        .trim_end_matches('>')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}
