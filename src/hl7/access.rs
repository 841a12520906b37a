//! Who may talk to the MLLP listener: the source-address allow-list (`hl7.allow_from`) and
//! the client-certificate subjects accepted under mutual TLS (`hl7.allowed_subjects`). Only
//! the matching rules live here; the listener applies them before it reads a byte, and
//! configuration validation uses the parsers to refuse a bad entry at start-up.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use openssl::x509::X509NameRef;

/// Source addresses allowed to connect. Empty: every source.
#[derive(Debug, Clone, Default)]
pub struct SourceAllowList(Vec<IpNet>);

impl SourceAllowList {
    /// Parses IP addresses (`10.1.2.3`) and CIDR blocks (`10.0.0.0/8`). A block of every
    /// address (`0.0.0.0/0`, `::/0`) is refused: it would only look like a restriction.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut nets = Vec::with_capacity(entries.len());
        for entry in entries {
            let text = entry.trim();
            let net = if text.contains('/') {
                IpNet::from_str(text)
                    .map_err(|_| format!("{entry:?} is not an IP address or CIDR block"))?
                    .trunc()
            } else {
                let ip = IpAddr::from_str(text)
                    .map_err(|_| format!("{entry:?} is not an IP address or CIDR block"))?;
                IpNet::from(ip.to_canonical())
            };
            if net.prefix_len() == 0 {
                return Err(format!(
                    "{entry:?} allows every address; list the sending systems' addresses"
                ));
            }
            nets.push(net);
        }
        Ok(Self(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a peer at `ip` may connect (an IPv4 peer seen on an IPv6 socket as
    /// `::ffff:a.b.c.d` is matched as `a.b.c.d`).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.is_empty() || self.0.iter().any(|net| net.contains(&ip))
    }
}

/// One accepted certificate subject: a set of `ATTR=value` pairs, attribute names compared
/// without regard to case, values exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectPattern(Vec<(String, String)>);

impl SubjectPattern {
    /// Parses `CN=ehr.clinic.example,O=North Clinic\, Inc.` (pairs in any order, spaces around
    /// separators ignored, `\,` for a comma inside a value).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut current = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(escaped) => current.push(escaped),
                    None => return Err("ends with a lone backslash".into()),
                },
                ',' => parts.push(std::mem::take(&mut current)),
                c => current.push(c),
            }
        }
        parts.push(current);
        let mut pairs = Vec::with_capacity(parts.len());
        for part in parts {
            let Some((attr, value)) = part.split_once('=') else {
                return Err(format!(
                    "{:?} is not ATTR=value (e.g. \"CN=ehr.clinic.example\")",
                    part.trim()
                ));
            };
            let (attr, value) = (attr.trim(), value.trim());
            if attr.is_empty() || !attr.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(format!("{attr:?} is not an attribute name such as CN or O"));
            }
            if value.is_empty() {
                return Err(format!("{attr} has no value"));
            }
            pairs.push((attr.to_ascii_uppercase(), value.to_string()));
        }
        pairs.sort();
        Ok(Self(pairs))
    }

    /// The subject of a certificate in this form; `None` when an attribute is not text.
    fn of_name(name: &X509NameRef) -> Option<Self> {
        let mut pairs = Vec::new();
        for entry in name.entries() {
            let attr = entry.object().nid().short_name().ok()?;
            // Not `as_utf8`, which stops at an embedded NUL (`CN=ehr\0.evil` would pass as `ehr`).
            let value = entry.data().to_string().ok()?;
            pairs.push((attr.to_ascii_uppercase(), value.to_string()));
        }
        pairs.sort();
        Some(Self(pairs))
    }

    /// Whether `name` (a certificate subject) is exactly one of `patterns`.
    pub fn any_matches(patterns: &[SubjectPattern], name: &X509NameRef) -> bool {
        Self::of_name(name).is_some_and(|subject| patterns.contains(&subject))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Result<SourceAllowList, String> {
        SourceAllowList::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn allow_list_matches_addresses_and_blocks() {
        let allow = list(&["127.0.0.2", "10.0.0.0/8", "fd00::/8"]).expect("parse");
        assert!(allow.allows("127.0.0.2".parse().expect("ip")));
        assert!(!allow.allows("127.0.0.1".parse().expect("ip")));
        assert!(allow.allows("10.200.3.4".parse().expect("ip")));
        assert!(allow.allows("::ffff:10.1.1.1".parse().expect("ip")));
        assert!(allow.allows("fd12::1".parse().expect("ip")));
        assert!(!allow.allows("192.168.1.1".parse().expect("ip")));
        assert!(
            list(&[])
                .expect("empty")
                .allows("8.8.8.8".parse().expect("ip"))
        );
        assert!(list(&["0.0.0.0/0"]).is_err());
        assert!(list(&["::/0"]).is_err());
        assert!(list(&["10.0.0.0/33"]).is_err());
        assert!(list(&["clinic.example"]).is_err());
    }

    #[test]
    fn subjects_are_sets_of_pairs() {
        let a = SubjectPattern::parse("CN=ehr.clinic.example, o=North Clinic\\, Inc.").expect("a");
        let b = SubjectPattern::parse("O=North Clinic\\, Inc.,CN=ehr.clinic.example").expect("b");
        assert_eq!(a, b);
        assert_ne!(
            a,
            SubjectPattern::parse("CN=ehr.clinic.example").expect("cn")
        );
        assert!(SubjectPattern::parse("ehr.clinic.example").is_err());
        assert!(SubjectPattern::parse("CN=").is_err());
        assert!(SubjectPattern::parse("C N=x").is_err());

        let mut name = openssl::x509::X509NameBuilder::new().expect("builder");
        name.append_entry_by_text("O", "North Clinic, Inc.")
            .expect("O");
        name.append_entry_by_text("CN", "ehr.clinic.example")
            .expect("CN");
        let name = name.build();
        assert!(SubjectPattern::any_matches(&[a], &name));
        let cn_only = SubjectPattern::parse("CN=ehr.clinic.example").expect("cn");
        assert!(!SubjectPattern::any_matches(&[cn_only], &name));
    }
}
