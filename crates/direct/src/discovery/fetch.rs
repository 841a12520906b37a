//! What certificate discovery needs from the network, as a trait the daemon implements: every
//! HTTP fetch (AIA `caIssuers`, CRL distribution points, DNS CERT IPKIX/URI records) goes
//! through [`Fetch::get`], and every LDAP server an SRV record names through
//! [`Fetch::check_ldap`] before a socket is opened. Certificates and SRV records come from
//! whoever controls a recipient domain's DNS or directory, so the rules that keep them from
//! making the daemon probe its own network (the SSRF policy) live in one place, the daemon's
//! `fetch` module; this crate only calls them.

use std::net::IpAddr;

/// Redirects followed per fetch at most.
pub const MAX_REDIRECTS: usize = 3;
/// Why a destination was refused or a fetch failed. Names hosts and ports only.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("not a usable URL")]
    Url,
    #[error("scheme {0:?} refused (http and https only)")]
    Scheme(String),
    #[error("{host}:{port} refused: port not allowed (not in security.fetch_allow)")]
    Port { host: String, port: u16 },
    #[error("{host}:{port} refused: not under {domain} (not in security.fetch_allow)")]
    OutsideDomain {
        host: String,
        port: u16,
        domain: String,
    },
    #[error("{host}:{port} refused: {class} address {ip} (not in security.fetch_allow)")]
    Address {
        host: String,
        port: u16,
        ip: IpAddr,
        class: &'static str,
    },
    #[error("{host}: address lookup failed ({reason})")]
    Resolve { host: String, reason: String },
    #[error("{host}:{port}: {reason}")]
    Transport {
        host: String,
        port: u16,
        reason: String,
    },
    #[error("{host}:{port}: HTTP status {status}")]
    Status {
        host: String,
        port: u16,
        status: u16,
    },
    #[error("{host}:{port}: response larger than {limit} bytes")]
    TooLarge {
        host: String,
        port: u16,
        limit: usize,
    },
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("no answer within {0} s")]
    Timeout(u64),
}

impl FetchError {
    /// True when the policy refused the destination (no connection was attempted).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Url
                | Self::Scheme(_)
                | Self::Port { .. }
                | Self::OutsideDomain { .. }
                | Self::Address { .. }
        )
    }
}

/// What is fetched: decides the size cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A certificate or certificate bundle (AIA, DNS CERT URL).
    Certificate,
    /// A certificate revocation list.
    Crl,
}

/// The outbound policy discovery goes through (implemented by the daemon's `FetchPolicy`).
#[async_trait::async_trait]
pub trait Fetch: Send + Sync + std::fmt::Debug {
    /// GETs `url` under the policy: the body, at most the cap for `purpose`, of a 2xx answer.
    async fn get(&self, url: &str, purpose: Purpose) -> Result<Vec<u8>, FetchError>;

    /// Checks an LDAP server from `domain`'s SRV records: the target `host`, `port` and every
    /// address the target resolved to (all must pass) — before any connection.
    fn check_ldap(
        &self,
        domain: &str,
        host: &str,
        port: u16,
        ips: &[IpAddr],
    ) -> Result<(), FetchError>;
}
