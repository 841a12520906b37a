//! The one outbound policy of certificate discovery. Every HTTP fetch it makes (AIA
//! `caIssuers`, CRL distribution points, DNS CERT IPKIX/URI records) goes through
//! [`FetchPolicy::get`], and every LDAP server an SRV record names through
//! [`FetchPolicy::check_ldap`], before a socket is opened. Certificates and SRV records come
//! from whoever controls a recipient domain's DNS or directory, so without this a tenant
//! sending to a hostile address could make the daemon probe its own network.
//!
//! The rules:
//! * HTTP: only `http`/`https` URLs, on ports 80 and 443; LDAP: ports 389 and 636, on a host
//!   under the queried domain.
//! * The name is resolved first and **every** address checked; a name with any loopback,
//!   private, link-local, unspecified, multicast or otherwise non-public address (IPv4 and
//!   IPv6, IPv4-mapped and NAT64 forms included) is refused. The connection then goes to a
//!   checked address, so a second DNS answer cannot swap in another one: an `http` URL is
//!   requested at the address itself (the `Host` header names the host); an `https` one
//!   through a client whose resolver is pinned to the checked addresses (built per request,
//!   as reqwest's overrides are per client: costly, but RFC 5280 advises http for these
//!   URLs); LDAP connects to the checked socket address.
//! * A destination listed in `[security] fetch_allow` (`"host"`: any port, `"host:port"`: that
//!   port; the host as named or one of its addresses) passes the port, domain and address
//!   checks. Tests and on-premises directories use it.
//! * Redirects are followed by hand (at most [`MAX_REDIRECTS`]), each hop checked again; no
//!   proxy is used (it would resolve the name where we cannot check it).
//! * Bodies are capped (certificates and CRLs separately) while they stream in; the whole
//!   fetch, resolution and redirects included, has one timeout.
//!
//! Errors name the host and port, never the URL path (which may carry an address): they end
//! up in operator logs. Owns the checks and the bounded GET; which URLs are fetched is
//! `revocation` and `dns`, the LDAP protocol is `ldap`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use crate::config::SecurityConfig;
pub use switchboard_direct::discovery::fetch::{FetchError, MAX_REDIRECTS, Purpose};

/// Ports an HTTP destination may use without a `fetch_allow` entry.
const HTTP_PORTS: [u16; 2] = [80, 443];
/// Ports an LDAP server may use without a `fetch_allow` entry (389 plain, 636 LDAPS).
const LDAP_PORTS: [u16; 2] = [389, 636];

/// A host in `fetch_allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AllowedHost {
    Ip(IpAddr),
    /// Lowercased, without a trailing dot.
    Name(String),
}

/// One `fetch_allow` entry: `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    host: AllowedHost,
    /// `None`: any port.
    port: Option<u16>,
}

impl FromStr for AllowEntry {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or("an IPv6 address in [] lacks its ]")?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or("expected :port after ]")?),
            };
            (host, port)
        } else if text.matches(':').count() > 1 {
            (text, None) // a bare IPv6 address
        } else {
            match text.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (text, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(format!("{p:?} is not a port")),
            },
        };
        let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
        let host = if let Ok(ip) = host.parse::<IpAddr>() {
            AllowedHost::Ip(canonical(ip))
        } else if !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        {
            AllowedHost::Name(host)
        } else {
            return Err(format!("{host:?} is not a host name or IP address"));
        };
        Ok(Self { host, port })
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is; others unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Why `ip` is not a public unicast address (`None`: it is).
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if a == 100 && (b & 0xc0) == 64 {
        Some("shared (CGNAT)")
    } else if ip.is_broadcast() || a >= 240 {
        Some("reserved")
    } else if (a, b, c) == (192, 0, 0)
        || (a, b, c) == (192, 0, 2)
        || (a, b, c) == (198, 51, 100)
        || (a, b, c) == (203, 0, 113)
        || (a == 198 && (b & 0xfe) == 18)
    {
        Some("special-purpose")
    } else {
        None
    }
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let embedded =
        |hi: u16, lo: u16| non_public_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Some("private (unique local)")
    } else if (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xffc0) == 0xfec0 {
        Some("link-local")
    } else if s[..6] == [0, 0, 0, 0, 0, 0] {
        // IPv4-compatible (deprecated): as the IPv4 address.
        embedded(s[6], s[7]).or(Some("reserved"))
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..3] == [0x64, 0xff9b, 1] {
        // NAT64: reaches the embedded IPv4 address.
        embedded(s[6], s[7])
    } else if s[0] == 0x2002 {
        // 6to4: reaches the embedded IPv4 address.
        embedded(s[1], s[2])
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        Some("documentation")
    } else if s[0] == 0x2001 && s[1] == 0 {
        Some("Teredo")
    } else if s[..4] == [0x100, 0, 0, 0] {
        Some("discard")
    } else {
        None
    }
}

/// The policy: the allow list, the size caps and the timeout, and the client for `http`.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    allow: Vec<AllowEntry>,
    max_cert_bytes: usize,
    max_crl_bytes: usize,
    timeout: Duration,
    /// For `http` URLs, requested at a checked address (so its resolver is never used).
    http: reqwest::Client,
}

#[async_trait::async_trait]
impl switchboard_direct::discovery::fetch::Fetch for FetchPolicy {
    async fn get(&self, url: &str, purpose: Purpose) -> Result<Vec<u8>, FetchError> {
        FetchPolicy::get(self, url, purpose).await
    }

    fn check_ldap(
        &self,
        domain: &str,
        host: &str,
        port: u16,
        ips: &[IpAddr],
    ) -> Result<(), FetchError> {
        FetchPolicy::check_ldap(self, domain, host, port, ips)
    }
}

impl FetchPolicy {
    /// The policy `[security]` describes; each fetch bounded by `timeout`.
    pub fn new(security: &SecurityConfig, timeout: Duration) -> Result<Self, String> {
        let allow = parse_allow(&security.fetch_allow)?;
        let timeout = timeout.max(Duration::from_secs(1));
        Ok(Self {
            allow,
            max_cert_bytes: security.fetch_max_cert_bytes.max(1),
            max_crl_bytes: security.fetch_max_crl_bytes.max(1),
            timeout,
            http: client(timeout)
                .build()
                .map_err(|e| format!("HTTP client: {e}"))?,
        })
    }

    fn listed(&self, host: &str, ip: IpAddr, port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let named_ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok()
            .map(canonical);
        self.allow.iter().any(|e| {
            let host_matches = match &e.host {
                AllowedHost::Name(n) => *n == host,
                AllowedHost::Ip(a) => *a == canonical(ip) || Some(*a) == named_ip,
            };
            host_matches && e.port.is_none_or(|p| p == port)
        })
    }

    /// Checks an HTTP destination: `host` as named in the URL, `port`, and every address
    /// the name resolved to (all must pass).
    pub fn check_http(&self, host: &str, port: u16, ips: &[IpAddr]) -> Result<(), FetchError> {
        self.check(host, port, ips, &HTTP_PORTS, None)
    }

    /// Checks an LDAP server from `domain`'s SRV records: the target `host`, `port` and
    /// every address the target resolved to (all must pass).
    pub fn check_ldap(
        &self,
        domain: &str,
        host: &str,
        port: u16,
        ips: &[IpAddr],
    ) -> Result<(), FetchError> {
        self.check(host, port, ips, &LDAP_PORTS, Some(domain))
    }

    fn check(
        &self,
        host: &str,
        port: u16,
        ips: &[IpAddr],
        ports: &[u16],
        domain: Option<&str>,
    ) -> Result<(), FetchError> {
        if ips.is_empty() {
            return Err(FetchError::Resolve {
                host: host.to_string(),
                reason: "no address".into(),
            });
        }
        for &ip in ips {
            if self.listed(host, ip, port) {
                continue;
            }
            if !ports.contains(&port) {
                return Err(FetchError::Port {
                    host: host.to_string(),
                    port,
                });
            }
            if let Some(domain) = domain {
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                let domain = domain.trim_end_matches('.').to_ascii_lowercase();
                if host != domain && !host.ends_with(&format!(".{domain}")) {
                    return Err(FetchError::OutsideDomain { host, port, domain });
                }
            }
            if let Some(class) = non_public(ip) {
                return Err(FetchError::Address {
                    host: host.to_string(),
                    port,
                    ip,
                    class,
                });
            }
        }
        Ok(())
    }

    fn limit(&self, purpose: Purpose) -> usize {
        match purpose {
            Purpose::Certificate => self.max_cert_bytes,
            Purpose::Crl => self.max_crl_bytes,
        }
    }

    /// The timeout of one fetch.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// GETs `url` under the policy (see the module docs): the body, at most the cap for
    /// `purpose`, of a 2xx answer.
    pub async fn get(&self, url: &str, purpose: Purpose) -> Result<Vec<u8>, FetchError> {
        let limit = self.limit(purpose);
        match tokio::time::timeout(self.timeout, self.get_unbounded(url, limit, MAX_REDIRECTS))
            .await
        {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout(self.timeout.as_secs())),
        }
    }

    /// GETs a provider's media (an inbound fax's document) under the same address and port
    /// checks, with its own size cap and timeout, and **no** redirect followed: a 3xx is an
    /// error (the media is where the provider said, or nowhere). Which hosts and schemes are
    /// acceptable is the caller's rule, checked before this is called.
    pub async fn get_media(
        &self,
        url: &str,
        limit: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, FetchError> {
        match tokio::time::timeout(timeout, self.get_unbounded(url, limit.max(1), 0)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout(timeout.as_secs())),
        }
    }

    /// Whether `[security] fetch_allow` names this host (as named or as an IP literal) on
    /// this port: the test and on-premises override, under which plain `http` media is taken.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let literal = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        self.listed(host, literal, port)
    }

    async fn get_unbounded(
        &self,
        url: &str,
        limit: usize,
        redirects: usize,
    ) -> Result<Vec<u8>, FetchError> {
        let mut url = reqwest::Url::parse(url).map_err(|_| FetchError::Url)?;
        for _ in 0..=redirects {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(FetchError::Scheme(url.scheme().to_string()));
            }
            let port = url.port_or_known_default().ok_or(FetchError::Url)?;
            let host = url.host_str().ok_or(FetchError::Url)?.to_ascii_lowercase();
            let literal = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok();
            let ips = match literal {
                Some(ip) => vec![ip],
                None => resolve(&host, port).await?,
            };
            self.check_http(&host, port, &ips)?;
            let transport = |e: reqwest::Error| FetchError::Transport {
                host: host.clone(),
                port,
                reason: transport_reason(&e),
            };
            let mut response = if url.scheme() == "http" {
                // At each checked address in turn (the next one only when connecting failed).
                let host_header = match url.port() {
                    Some(p) => format!("{host}:{p}"),
                    None => host.clone(),
                };
                let mut answer = None;
                let mut failure = None;
                for ip in &ips {
                    let mut direct = url.clone();
                    direct.set_ip_host(*ip).map_err(|_| FetchError::Url)?;
                    let request = self
                        .http
                        .get(direct)
                        .header(reqwest::header::HOST, &host_header);
                    match request.send().await {
                        Ok(r) => {
                            answer = Some(r);
                            break;
                        }
                        Err(e) if e.is_connect() => failure = Some(e),
                        Err(e) => return Err(transport(e)),
                    }
                }
                match (answer, failure) {
                    (Some(r), _) => r,
                    (None, Some(e)) => return Err(transport(e)),
                    (None, None) => return Err(FetchError::Url),
                }
            } else {
                // TLS needs the name: a client of its own, its resolver pinned to the checked
                // addresses (an IP literal is not resolved at all).
                let mut builder = client(self.timeout);
                if literal.is_none() {
                    let addrs: Vec<SocketAddr> =
                        ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
                    builder = builder.resolve_to_addrs(&host, &addrs);
                }
                let client = builder.build().map_err(transport)?;
                client.get(url.clone()).send().await.map_err(transport)?
            };
            let status = response.status();
            if status.is_redirection() && redirects > 0 {
                let next = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok());
                match next {
                    Some(next) => {
                        url = next;
                        continue;
                    }
                    None => {
                        return Err(FetchError::Status {
                            host,
                            port,
                            status: status.as_u16(),
                        });
                    }
                }
            }
            if !status.is_success() {
                return Err(FetchError::Status {
                    host,
                    port,
                    status: status.as_u16(),
                });
            }
            let too_large = || FetchError::TooLarge {
                host: host.clone(),
                port,
                limit,
            };
            if response.content_length().is_some_and(|n| n > limit as u64) {
                return Err(too_large());
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(transport)? {
                if body.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            return Ok(body);
        }
        Err(FetchError::TooManyRedirects)
    }
}

/// A client that follows no redirect and uses no proxy, bounded by `timeout`.
fn client(timeout: Duration) -> reqwest::ClientBuilder {
    crate::http_client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(timeout)
        .timeout(timeout)
}

/// The addresses of `host` (the system resolver, as reqwest would have used).
async fn resolve(host: &str, port: u16) -> Result<Vec<IpAddr>, FetchError> {
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| FetchError::Resolve {
            host: host.to_string(),
            reason: e.kind().to_string(),
        })?;
    let mut ips: Vec<IpAddr> = Vec::new();
    for a in addrs {
        if !ips.contains(&a.ip()) {
            ips.push(a.ip());
        }
    }
    Ok(ips)
}

/// A transport error without the URL (reqwest's `Display` includes it).
fn transport_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else if e.is_body() || e.is_decode() {
        "reading the body failed".into()
    } else {
        "request failed".into()
    }
}

/// Parses `fetch_allow` (start-up check and [`FetchPolicy::new`]).
pub fn parse_allow(entries: &[String]) -> Result<Vec<AllowEntry>, String> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            e.parse::<AllowEntry>()
                .map_err(|why| format!("security.fetch_allow[{i}] {e:?}: {why}"))
        })
        .collect()
}

/// Default cap on a fetched certificate: 1 MiB.
pub fn default_max_cert_bytes() -> usize {
    1024 * 1024
}

/// Default cap on a fetched CRL: 10 MiB.
pub fn default_max_crl_bytes() -> usize {
    10 * 1024 * 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> FetchPolicy {
        let security = SecurityConfig {
            fetch_allow: allow.iter().map(|s| s.to_string()).collect(),
            ..SecurityConfig::default()
        };
        FetchPolicy::new(&security, Duration::from_secs(2)).expect("policy")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn non_public_ranges() {
        for (addr, class) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("255.255.255.255", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("fd00::1", "private (unique local)"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:7f00:1::", "loopback"),
        ] {
            assert_eq!(non_public(ip(addr)), Some(class), "{addr}");
        }
        for addr in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(non_public(ip(addr)), None, "{addr}");
        }
    }

    #[test]
    fn allow_entries_parse() {
        for bad in ["", "host:0", "host:x", "[::1", "a b", "[::1]x"] {
            assert!(bad.parse::<AllowEntry>().is_err(), "{bad:?}");
        }
        assert_eq!(
            "127.0.0.1:18080".parse::<AllowEntry>(),
            Ok(AllowEntry {
                host: AllowedHost::Ip(ip("127.0.0.1")),
                port: Some(18080)
            })
        );
        assert_eq!(
            "[::1]:8080".parse::<AllowEntry>().map(|e| e.port),
            Ok(Some(8080))
        );
        assert_eq!("::1".parse::<AllowEntry>().map(|e| e.port), Ok(None));
        assert_eq!(
            "LDAP.Example.ORG.".parse::<AllowEntry>().map(|e| e.host),
            Ok(AllowedHost::Name("ldap.example.org".into()))
        );
    }

    #[test]
    fn http_destinations() {
        let strict = policy(&[]);
        let public = [ip("93.184.216.34")];
        assert!(strict.check_http("crl.example", 80, &public).is_ok());
        assert!(strict.check_http("crl.example", 443, &public).is_ok());
        assert!(matches!(
            strict.check_http("crl.example", 8080, &public),
            Err(FetchError::Port { .. })
        ));
        assert!(matches!(
            strict.check_http("127.0.0.1", 80, &[ip("127.0.0.1")]),
            Err(FetchError::Address { .. })
        ));
        // One bad address among good ones refuses the name.
        assert!(
            strict
                .check_http("mixed.example", 80, &[public[0], ip("10.0.0.1")])
                .is_err()
        );
        assert!(strict.check_http("nothing.example", 80, &[]).is_err());

        let allow = policy(&["127.0.0.1:18080", "10.0.0.5", "crl.internal"]);
        assert!(
            allow
                .check_http("127.0.0.1", 18080, &[ip("127.0.0.1")])
                .is_ok()
        );
        assert!(
            allow
                .check_http("127.0.0.1", 18081, &[ip("127.0.0.1")])
                .is_err()
        );
        // A name resolving to an allow-listed address, on its port.
        assert!(
            allow
                .check_http("x.example", 18080, &[ip("127.0.0.1")])
                .is_ok()
        );
        assert!(
            allow
                .check_http("::ffff:127.0.0.1", 18080, &[ip("::ffff:127.0.0.1")])
                .is_ok()
        );
        // A bare host: any port.
        assert!(
            allow
                .check_http("10.0.0.5", 9999, &[ip("10.0.0.5")])
                .is_ok()
        );
        assert!(
            allow
                .check_http("crl.internal", 8443, &[ip("192.168.0.9")])
                .is_ok()
        );
        assert!(
            allow
                .check_http("crl.internal.evil", 80, &[ip("192.168.0.9")])
                .is_err()
        );
    }

    #[test]
    fn ldap_destinations() {
        let strict = policy(&[]);
        let public = [ip("93.184.216.34")];
        assert!(
            strict
                .check_ldap("south.example", "ldap.south.example", 389, &public)
                .is_ok()
        );
        assert!(
            strict
                .check_ldap("south.example", "south.example", 636, &public)
                .is_ok()
        );
        assert!(matches!(
            strict.check_ldap("south.example", "ldap.south.example", 22, &public),
            Err(FetchError::Port { .. })
        ));
        assert!(matches!(
            strict.check_ldap("south.example", "ldap.elsewhere.example", 389, &public),
            Err(FetchError::OutsideDomain { .. })
        ));
        assert!(matches!(
            strict.check_ldap("south.example", "evilsouth.example", 389, &public),
            Err(FetchError::OutsideDomain { .. })
        ));
        assert!(matches!(
            strict.check_ldap(
                "south.example",
                "ldap.south.example",
                389,
                &[ip("127.0.0.1")]
            ),
            Err(FetchError::Address { .. })
        ));
        let allow = policy(&["ldap.elsewhere.example"]);
        assert!(
            allow
                .check_ldap(
                    "south.example",
                    "ldap.elsewhere.example",
                    1389,
                    &[ip("127.0.0.1")]
                )
                .is_ok()
        );
    }
}
