//! LDAP lookups for Direct certificate discovery, the step after DNS CERT (Direct Project
//! "Certificate Discovery for Direct", as the ONC test tool exercises it).
//!
//! The recipient domain's `_ldap._tcp.<domain>` SRV records name the directory servers. They
//! are tried by priority, then weight (RFC 2782 weighted random order within a priority); a
//! server that cannot be reached, or does not answer within the timeout, is skipped and tried
//! after the others for a while. On the first server that answers: an anonymous bind, the
//! search bases (configured, or every `namingContexts` of the root DSE), a subtree search for
//! `(|(mail=<address>)(mail=<domain>))` (RFC 4515 escaped), and each `userCertificate;binary`
//! value as a certificate (DER; PEM tolerated). That server's answer is final, even when
//! empty. Port 389 is plain LDAP (the certificates are public and are validated like any
//! other), 636 LDAPS (TLS, the server's certificate checked against the SRV target name).
//!
//! Every SRV target passes the discovery [`FetchPolicy`] before any connection: port 389 or
//! 636, a host under the queried domain, public addresses only (each one checked; the
//! connection goes to a checked address), unless `fetch_allow` lists it. A refused target is
//! noted and never contacted.
//!
//! No SRV record, or only refused targets: an empty answer. The SRV lookup failing, or every
//! permitted server failing: an error (the send is retried). Entries are read from the BER structure by hand, so a malformed
//! answer is ignored rather than trusted to `ldap3`'s panicking `SearchEntry::construct`.
//! Owns transport and parsing only; which certificates are usable is `discovery`'s decision.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::{RData, RecordType};
use ldap3::asn1::StructureTag;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchOptions};
use openssl::x509::X509;

use super::DiscoveryError;
use super::fetch::Fetch;
use crate::discovery::options::LdapDiscoveryConfig;

/// Entries read from one search at most (also asked of the server as its size limit).
const MAX_ENTRIES: usize = 20;
/// Certificates taken from one server at most.
const MAX_CERTS: usize = 50;
/// The certificate attribute, asked for with the `;binary` transfer option (RFC 4523).
const CERT_ATTRS: [&str; 2] = ["userCertificate;binary", "userCertificate"];

/// An LDAP discovery client.
#[derive(Clone)]
pub struct LdapCerts {
    resolver: TokioResolver,
    base: Option<String>,
    connect_timeout: Duration,
    timeout: Duration,
    dead_for: Duration,
    /// Servers that failed recently (address → when), tried after the others.
    dead: Arc<Mutex<HashMap<SocketAddr, Instant>>>,
    policy: Arc<dyn Fetch>,
}

/// One SRV target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Host name, without the trailing dot.
    pub target: String,
}

/// What one LDAP lookup found.
#[derive(Debug, Clone, Default)]
pub struct LdapAnswer {
    /// Every certificate the answering server returned (not yet checked in any way).
    pub certs: Vec<X509>,
    /// What was tried, in order: SRV records, servers skipped, the server and bases that
    /// answered. For the operator (`certs check`); names servers, never the address.
    pub notes: Vec<String>,
}

/// Why one server was skipped.
#[derive(Debug, thiserror::Error)]
enum ServerError {
    #[error("{0}")]
    Ldap(#[from] ldap3::LdapError),
    #[error("connection failed: {0}")]
    Connect(std::io::ErrorKind),
    #[error("no answer within {0} s")]
    Timeout(u64),
    #[error("its root DSE names no namingContexts (configure ldap.base)")]
    NoNamingContexts,
    #[error("search failed: {0}")]
    Search(String),
}

/// Escapes a value for an LDAP filter (RFC 4515 §3): `*`, `(`, `)`, `\`, NUL and every
/// non-ASCII byte become `\XX`.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'*' | b'(' | b')' | b'\\' | 0 | 0x80..=0xff => out.push_str(&format!("\\{b:02x}")),
            _ => out.push(char::from(b)),
        }
    }
    out
}

/// Orders SRV records for contact (RFC 2782): ascending priority; within a priority, weighted
/// random order, with `random(n)` a uniform number in `0..=n`. Targets `.` ("no service") are
/// dropped.
pub fn order_srv(records: Vec<SrvTarget>, mut random: impl FnMut(u32) -> u32) -> Vec<SrvTarget> {
    let mut records: Vec<SrvTarget> = records
        .into_iter()
        .filter(|r| !r.target.is_empty() && r.target != ".")
        .collect();
    records.sort_by_key(|r| r.priority);
    let mut out = Vec::with_capacity(records.len());
    let mut rest = records.as_slice();
    while let Some(first) = rest.first() {
        let same = rest
            .iter()
            .take_while(|r| r.priority == first.priority)
            .count();
        let (group, tail) = rest.split_at(same);
        // Weight 0 first, as the RFC asks, then pick by running sums.
        let mut pool: Vec<SrvTarget> = group.iter().filter(|r| r.weight == 0).cloned().collect();
        pool.extend(group.iter().filter(|r| r.weight > 0).cloned());
        while !pool.is_empty() {
            let total: u32 = pool.iter().map(|r| u32::from(r.weight)).sum();
            let pick = random(total).min(total);
            let mut running = 0u32;
            let mut index = pool.len() - 1;
            for (i, r) in pool.iter().enumerate() {
                running += u32::from(r.weight);
                if running >= pick {
                    index = i;
                    break;
                }
            }
            out.push(pool.remove(index));
        }
        rest = tail;
    }
    out
}

/// A uniform random number in `0..=n` (load spreading only; not for secrets).
fn random_up_to(n: u32) -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (hasher.finish() % (u64::from(n) + 1)) as u32
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

impl LdapCerts {
    /// A client resolving SRV records through `resolver` (see `dns::resolver`), contacting
    /// only the servers `policy` permits.
    pub fn new(
        config: &LdapDiscoveryConfig,
        resolver: TokioResolver,
        policy: Arc<dyn Fetch>,
    ) -> Self {
        let base = config.base.trim();
        Self {
            resolver,
            base: (!base.is_empty()).then(|| base.to_string()),
            connect_timeout: Duration::from_secs(config.connect_timeout_secs.max(1)),
            timeout: Duration::from_secs(config.timeout_secs.max(1)),
            dead_for: Duration::from_secs(config.dead_server_secs),
            dead: Arc::default(),
            policy,
        }
    }

    /// The `_ldap._tcp` SRV records of `domain`, in contact order (empty: none published).
    pub async fn servers(&self, domain: &str) -> Result<Vec<SrvTarget>, DiscoveryError> {
        let name = fqdn(&format!("_ldap._tcp.{domain}"));
        let answer = match self.resolver.lookup(name.as_str(), RecordType::SRV).await {
            Ok(a) => a,
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => return Ok(Vec::new()),
            Err(e) => return Err(DiscoveryError::Dns(e.to_string())),
        };
        let records = answer
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(SrvTarget {
                    priority: srv.priority,
                    weight: srv.weight,
                    port: srv.port,
                    target: srv.target.to_ascii().trim_end_matches('.').to_string(),
                }),
                _ => None,
            })
            .collect();
        Ok(order_srv(records, random_up_to))
    }

    /// The certificates the directory of `address`'s domain holds for the address or its
    /// domain (see the module docs).
    pub async fn lookup(&self, address: &str) -> Result<LdapAnswer, DiscoveryError> {
        let domain = crate::anchors::domain_of(address);
        let mut answer = LdapAnswer::default();
        let servers = self.servers(&domain).await?;
        if servers.is_empty() {
            answer
                .notes
                .push(format!("no _ldap._tcp.{domain} SRV record"));
            return Ok(answer);
        }
        // Every address of every permitted target, in SRV order; recently failed ones last.
        let mut fresh = Vec::new();
        let mut stale = Vec::new();
        for srv in &servers {
            let ips: Vec<IpAddr> = match self.resolver.lookup_ip(fqdn(&srv.target)).await {
                Ok(ips) => ips.iter().collect(),
                Err(e) => {
                    answer.notes.push(format!(
                        "{} (priority {}, weight {}): address lookup failed ({e}), skipped",
                        srv.target, srv.priority, srv.weight
                    ));
                    continue;
                }
            };
            if let Err(e) = self.policy.check_ldap(&domain, &srv.target, srv.port, &ips) {
                answer.notes.push(format!(
                    "{} (priority {}, weight {}): {e}, not contacted",
                    srv.target, srv.priority, srv.weight
                ));
                continue;
            }
            for ip in ips {
                let addr = SocketAddr::new(ip, srv.port);
                if self.failed_recently(addr) {
                    stale.push((srv, addr));
                } else {
                    fresh.push((srv, addr));
                }
            }
        }
        let filter = format!(
            "(|(mail={})(mail={}))",
            escape_filter_value(address),
            escape_filter_value(&domain)
        );
        let stale_from = fresh.len();
        if fresh.is_empty() && stale.is_empty() {
            // Nothing permitted to try (or no target resolved): nothing found. Retrying
            // would not change a refusal.
            return Ok(answer);
        }
        for (i, (srv, addr)) in fresh.into_iter().chain(stale).enumerate() {
            let label = format!(
                "ldap://{addr} ({}, priority {}, weight {}{})",
                srv.target,
                srv.priority,
                srv.weight,
                if i >= stale_from {
                    ", failed recently"
                } else {
                    ""
                }
            );
            match self.search(&srv.target, addr, &filter).await {
                Ok((bases, certs)) => {
                    self.mark(addr, true);
                    answer.notes.push(format!(
                        "{label}: base {}, {} certificate(s)",
                        bases.join(" | "),
                        certs.len()
                    ));
                    answer.certs = certs;
                    return Ok(answer);
                }
                Err(e) => {
                    self.mark(addr, false);
                    answer.notes.push(format!("{label}: {e}, skipped"));
                }
            }
        }
        Err(DiscoveryError::Ldap(format!(
            "no directory server answered: {}",
            answer.notes.join("; ")
        )))
    }

    fn failed_recently(&self, addr: SocketAddr) -> bool {
        let dead = self.dead.lock().unwrap_or_else(|p| p.into_inner());
        dead.get(&addr).is_some_and(|t| t.elapsed() < self.dead_for)
    }

    fn mark(&self, addr: SocketAddr, ok: bool) {
        let mut dead = self.dead.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            dead.remove(&addr);
        } else {
            dead.retain(|_, t| t.elapsed() < self.dead_for);
            dead.insert(addr, Instant::now());
        }
    }

    /// Connect to the checked `addr` of `target`, bind, find the bases and search; the whole
    /// exchange is bounded.
    async fn search(
        &self,
        target: &str,
        addr: SocketAddr,
        filter: &str,
    ) -> Result<(Vec<String>, Vec<X509>), ServerError> {
        // Our own connect, to the address the policy checked; ldap3 gets the stream (the URL
        // only says whether to start TLS, and the name to check the server's certificate).
        let stream =
            match tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(ServerError::Connect(e.kind())),
                Err(_) => return Err(ServerError::Timeout(self.connect_timeout.as_secs())),
            };
        let stream = stream
            .into_std()
            .map_err(|e| ServerError::Connect(e.kind()))?;
        let scheme = if addr.port() == 636 { "ldaps" } else { "ldap" };
        let url = format!(
            "{scheme}://{}:{}",
            target.trim_end_matches('.'),
            addr.port()
        );
        let settings = LdapConnSettings::new()
            .set_conn_timeout(self.connect_timeout)
            .set_std_stream(ldap3::StdStream::Tcp(stream));
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &url).await?;
        ldap3::drive!(conn);
        // Bind + root DSE + a search per base, each bounded by `timeout`; the total too.
        let total = self.timeout * 4;
        let result = match tokio::time::timeout(total, self.exchange(&mut ldap, filter)).await {
            Ok(r) => r,
            Err(_) => Err(ServerError::Timeout(total.as_secs())),
        };
        if result.is_ok() {
            let _ = tokio::time::timeout(self.timeout, ldap.unbind()).await;
        }
        // Dropping the handle ends the connection task.
        result
    }

    async fn exchange(
        &self,
        ldap: &mut Ldap,
        filter: &str,
    ) -> Result<(Vec<String>, Vec<X509>), ServerError> {
        let secs = self.timeout.as_secs();
        let timed = |e: ldap3::LdapError| match e {
            ldap3::LdapError::Timeout { .. } => ServerError::Timeout(secs),
            other => ServerError::Ldap(other),
        };
        ldap.with_timeout(self.timeout)
            .simple_bind("", "")
            .await
            .map_err(timed)?
            .success()?;
        let bases = match &self.base {
            Some(base) => vec![base.clone()],
            None => {
                let (entries, _) = ldap
                    .with_timeout(self.timeout)
                    .search("", Scope::Base, "(objectClass=*)", vec!["namingContexts"])
                    .await
                    .map_err(timed)?
                    .success()?;
                let bases: Vec<String> = entries
                    .into_iter()
                    .flat_map(|e| attribute_values(e.0, |name| name == "namingcontexts"))
                    .filter_map(|v| String::from_utf8(v).ok())
                    .collect();
                if bases.is_empty() {
                    return Err(ServerError::NoNamingContexts);
                }
                bases
            }
        };
        let mut certs = Vec::new();
        let limit = i32::try_from(secs).unwrap_or(i32::MAX);
        for base in &bases {
            let result = ldap
                .with_search_options(
                    SearchOptions::new()
                        .sizelimit(MAX_ENTRIES as i32)
                        .timelimit(limit),
                )
                .with_timeout(self.timeout)
                .search(base, Scope::Subtree, filter, CERT_ATTRS.to_vec())
                .await
                .map_err(timed)?;
            // 0 success, 4 size limit exceeded (keep what came), 10 referral (not chased),
            // 32 no such object (the base is not there: nothing).
            match result.1.rc {
                0 | 4 | 10 | 32 => {}
                rc => return Err(ServerError::Search(format!("result code {rc}"))),
            }
            for entry in result.0.into_iter().take(MAX_ENTRIES) {
                for value in attribute_values(entry.0, |name| {
                    name.split(';').next() == Some("usercertificate")
                }) {
                    if certs.len() >= MAX_CERTS {
                        break;
                    }
                    certs.extend(crate::load_certs(&value).unwrap_or_default());
                }
            }
        }
        certs.truncate(MAX_CERTS);
        Ok((bases, certs))
    }
}

/// The values of the attributes of a SearchResultEntry (`[APPLICATION 4] { objectName,
/// attributes }`, RFC 4511 §4.5.2) whose lowercased description `wanted` accepts. Anything
/// not shaped like an entry yields nothing.
fn attribute_values(entry: StructureTag, wanted: impl Fn(&str) -> bool) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let Some(parts) = entry.match_id(4).and_then(StructureTag::expect_constructed) else {
        return out;
    };
    let Some(attributes) = parts
        .into_iter()
        .nth(1)
        .and_then(StructureTag::expect_constructed)
    else {
        return out;
    };
    for attribute in attributes {
        let Some(mut pair) = attribute.expect_constructed().map(Vec::into_iter) else {
            continue;
        };
        let (Some(name), Some(values)) = (pair.next(), pair.next()) else {
            continue;
        };
        let Some(name) = name
            .expect_primitive()
            .and_then(|n| String::from_utf8(n).ok())
        else {
            continue;
        };
        if !wanted(&name.to_ascii_lowercase()) {
            continue;
        }
        for value in values.expect_constructed().unwrap_or_default() {
            if let Some(v) = value.expect_primitive() {
                out.push(v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, target: &str) -> SrvTarget {
        SrvTarget {
            priority,
            weight,
            port: 389,
            target: target.into(),
        }
    }

    fn targets(list: &[SrvTarget]) -> Vec<&str> {
        list.iter().map(|s| s.target.as_str()).collect()
    }

    #[test]
    fn filter_values_are_escaped() {
        assert_eq!(
            escape_filter_value("a*b(c)d\\e\0f"),
            "a\\2ab\\28c\\29d\\5ce\\00f"
        );
        assert_eq!(escape_filter_value("dr.jones@x.org"), "dr.jones@x.org");
        assert_eq!(escape_filter_value("é"), "\\c3\\a9");
        assert_eq!(escape_filter_value("*)(mail=*"), "\\2a\\29\\28mail=\\2a");
    }

    #[test]
    fn srv_order_is_priority_then_weight() {
        let records = vec![
            srv(10, 0, "c"),
            srv(0, 0, "a"),
            srv(5, 10, "b1"),
            srv(5, 90, "b2"),
            srv(20, 0, "."),
        ];
        // random always 0: the first in running-sum order (weight order as listed).
        let low = order_srv(records.clone(), |_| 0);
        assert_eq!(targets(&low), ["a", "b1", "b2", "c"]);
        // random always the maximum: the last one of the pool each time.
        let high = order_srv(records.clone(), |n| n);
        assert_eq!(targets(&high), ["a", "b2", "b1", "c"]);
        // Within a priority, weight 0 comes first unless chosen otherwise.
        let zero = order_srv(vec![srv(1, 5, "w"), srv(1, 0, "z")], |_| 0);
        assert_eq!(targets(&zero), ["z", "w"]);
    }

    #[test]
    fn weights_spread_the_load() {
        let records = vec![srv(0, 1, "rare"), srv(0, 99, "common")];
        let common_first = (0..400)
            .filter(|_| order_srv(records.clone(), random_up_to)[0].target == "common")
            .count();
        assert!(common_first > 300, "{common_first}");
    }

    #[test]
    fn malformed_entries_yield_nothing() {
        use ldap3::asn1::{PL, TagClass};
        let leaf = |bytes: &[u8]| StructureTag {
            class: TagClass::Universal,
            id: 4,
            payload: PL::P(bytes.to_vec()),
        };
        let seq = |inner: Vec<StructureTag>| StructureTag {
            class: TagClass::Universal,
            id: 16,
            payload: PL::C(inner),
        };
        let entry = |inner: Vec<StructureTag>| StructureTag {
            class: TagClass::Application,
            id: 4,
            payload: PL::C(inner),
        };
        let good = entry(vec![
            leaf(b"cn=x"),
            seq(vec![seq(vec![
                leaf(b"userCertificate;binary"),
                seq(vec![leaf(b"\x30\x00")]),
            ])]),
        ]);
        let wanted = |n: &str| n.split(';').next() == Some("usercertificate");
        assert_eq!(attribute_values(good, wanted), vec![b"\x30\x00".to_vec()]);
        // Values that are not octet strings, attributes without values, no attribute list.
        let odd = entry(vec![
            leaf(b"cn=x"),
            seq(vec![
                seq(vec![leaf(b"userCertificate"), leaf(b"not a set")]),
                seq(vec![leaf(b"userCertificate")]),
                leaf(b"stray"),
            ]),
        ]);
        assert!(attribute_values(odd, wanted).is_empty());
        assert!(attribute_values(entry(vec![leaf(b"cn=x")]), wanted).is_empty());
        assert!(attribute_values(leaf(b"x"), wanted).is_empty());
    }
}
