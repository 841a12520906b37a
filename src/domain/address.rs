//! Addresses as compared: the one form in which a recipient, a sender, a contact point and a
//! consent-ledger entry are matched against each other. Every place that compares an address
//! (the disclosure gate on every path, the consent ledger, inbound matching, outreach)
//! computes it with [`Address::canonical`]; nothing else lower-cases or re-formats one.
//!
//! The rule, per channel:
//! - **sms, fax** (phone numbers): E.164 (`+14155552671`) through [`crate::phone::to_e164`],
//!   numbers without a country code read in the organization's phone region. A value that is
//!   not a valid number is kept as given, trimmed (a short code, a sender id): it still
//!   equals itself, and nothing invents a number for it.
//! - **email, direct**: trimmed, a `mailto:` prefix and enclosing `<…>` removed, and the
//!   **whole** address lower-cased. RFC 5321 lets a server treat the local part as
//!   case-sensitive, but no mailbox provider (nor any HISP) does, and an opt-out recorded as
//!   `Jane@Example.org` must stop mail to `jane@example.org`: for consent the safe error is
//!   to treat the two as one mailbox. (The ledger has recorded lower-cased addresses all
//!   along, so stored entries keep matching.)
//! - **outbox**, and a ledger entry for every channel (`*`): by shape — an address with `@`
//!   follows the email rule, anything else the phone rule.

use std::fmt;

use super::Channel;

/// Why an address given for a channel cannot be sent to (checked when a message is accepted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("not a phone number; give it in E.164, e.g. +14155552671")]
    NotPhone,
    #[error("not a valid phone number for region {0}; give it in E.164, e.g. +14155552671")]
    InvalidPhone(String),
    #[error("not an email address (RFC 5321): {0}")]
    Mailbox(&'static str),
    #[error("not a Direct address: {0}")]
    Direct(&'static str),
    #[error("must be 1 to 320 characters")]
    Length,
}

/// An address in its canonical form for its channel (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(String);

impl Address {
    /// The canonical form of `raw` on `channel`; phone numbers without a country code are
    /// read in `region` (ISO 3166 alpha-2, e.g. `US`).
    pub fn canonical(channel: Channel, raw: &str, region: &str) -> Address {
        match channel {
            Channel::Sms | Channel::Fax | Channel::Voice => Self::phone(raw, region),
            Channel::Email | Channel::Direct => Self::mailbox(raw),
            Channel::Outbox => Self::any(raw, region),
        }
    }

    /// The canonical form of `raw` on `channel`, or why it cannot be sent to: phone numbers
    /// must parse to a valid E.164 number (in `region` when they carry no country code),
    /// email addresses must follow RFC 5321's mailbox syntax (`local@domain`, a domain name
    /// of at least two labels; no address literals), Direct addresses the same with a
    /// dot-atom local part (what HISPs issue and certificate discovery can look up). The
    /// outbox (a test sink) takes any non-empty address.
    pub fn parse(channel: Channel, raw: &str, region: &str) -> Result<Address, AddressError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.len() > 320 {
            return Err(AddressError::Length);
        }
        match channel {
            Channel::Sms | Channel::Fax | Channel::Voice => {
                match crate::phone::to_e164(trimmed, region) {
                    Ok(e164) => Ok(Address(e164)),
                    Err(crate::phone::PhoneError::Unparseable) => Err(AddressError::NotPhone),
                    Err(crate::phone::PhoneError::Invalid) => {
                        Err(AddressError::InvalidPhone(region.to_string()))
                    }
                }
            }
            Channel::Email => {
                let address = Self::mailbox(trimmed);
                mailbox_syntax(address.as_str(), false).map_err(AddressError::Mailbox)?;
                Ok(address)
            }
            Channel::Direct => {
                let address = Self::mailbox(trimmed);
                mailbox_syntax(address.as_str(), true).map_err(AddressError::Direct)?;
                Ok(address)
            }
            Channel::Outbox => Ok(Self::any(trimmed, region)),
        }
    }

    /// The canonical form for a stored channel name, `*` (every channel) included: a known
    /// channel's rule, else the rule by shape.
    pub fn canonical_for(channel: &str, raw: &str, region: &str) -> Address {
        match channel.parse::<Channel>() {
            Ok(channel) => Self::canonical(channel, raw, region),
            Err(_) => Self::any(raw, region),
        }
    }

    /// Whether this is a phone number in E.164 (what `contact_points.e164` holds).
    pub fn is_e164(&self) -> bool {
        self.0.len() > 1
            && self.0.starts_with('+')
            && self.0[1..].bytes().all(|b| b.is_ascii_digit())
    }

    /// Whether this has the shape `local@domain.tld` (one `@`, a dot in the domain).
    pub fn is_mailbox(&self) -> bool {
        self.0.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    fn phone(raw: &str, region: &str) -> Address {
        let trimmed = raw.trim();
        match crate::phone::to_e164(trimmed, region) {
            Ok(e164) => Address(e164),
            Err(_) => Address(trimmed.to_string()),
        }
    }

    fn mailbox(raw: &str) -> Address {
        let trimmed = raw.trim();
        let bare = match trimmed.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case("mailto:") => &trimmed[7..],
            _ => trimmed,
        };
        let bare = bare.trim();
        let bare = match bare.strip_prefix('<').and_then(|b| b.strip_suffix('>')) {
            Some(inner) => inner.trim(),
            None => bare,
        };
        Address(bare.to_lowercase())
    }

    fn any(raw: &str, region: &str) -> Address {
        if raw.contains('@') {
            Self::mailbox(raw)
        } else {
            Self::phone(raw, region)
        }
    }
}

/// RFC 5321 `Mailbox` syntax (section 4.1.2) with a domain name (not an address literal) of
/// two or more labels; `dot_atom_only` refuses a quoted local part (Direct). Sizes per
/// section 4.5.3.1: local part ≤ 64 octets, domain ≤ 255, each label ≤ 63.
fn mailbox_syntax(address: &str, dot_atom_only: bool) -> Result<(), &'static str> {
    if !address.is_ascii() {
        return Err("only ASCII addresses are accepted");
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err("no @");
    };
    if local.is_empty() {
        return Err("empty local part");
    }
    if local.len() > 64 {
        return Err("local part over 64 characters");
    }
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b);
    if let Some(quoted) = local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
        if dot_atom_only {
            return Err("a quoted local part is not accepted");
        }
        let mut bytes = quoted.bytes();
        while let Some(b) = bytes.next() {
            match b {
                b'\\' => {
                    if !bytes.next().is_some_and(|n| (32..=126).contains(&n)) {
                        return Err("bad escape in the quoted local part");
                    }
                }
                32..=33 | 35..=91 | 93..=126 => {}
                _ => return Err("bad character in the quoted local part"),
            }
        }
    } else if local
        .split('.')
        .any(|atom| atom.is_empty() || !atom.bytes().all(atext))
    {
        return Err("bad local part (letters, digits, !#$%&'*+-/=?^_`{|}~ and single dots)");
    }
    if domain.starts_with('[') {
        return Err("address literals are not accepted; give a domain name");
    }
    if domain.is_empty() || domain.len() > 255 {
        return Err("the domain must be 1 to 255 characters");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err("the domain needs at least two labels (example.org)");
    }
    for label in &labels {
        let bytes = label.as_bytes();
        let ldh = bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-');
        if label.is_empty()
            || label.len() > 63
            || !ldh
            || bytes.first() == Some(&b'-')
            || bytes.last() == Some(&b'-')
        {
            return Err("bad domain label (letters, digits and inner hyphens, 1 to 63)");
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("the domain is an IP address; give a domain name");
    }
    Ok(())
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Address {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Address {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl From<Address> for String {
    fn from(address: Address) -> String {
        address.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(channel: Channel, raw: &str) -> String {
        Address::canonical(channel, raw, "US").into_string()
    }

    #[test]
    fn sms_numbers_become_e164_in_the_region() {
        for raw in [
            "(415) 555-2671",
            "415-555-2671",
            " 4155552671 ",
            "+1 415 555 2671",
            "+14155552671",
            "tel:+14155552671",
            "1 (415) 555-2671",
        ] {
            assert_eq!(canon(Channel::Sms, raw), "+14155552671", "{raw}");
        }
        assert_eq!(
            Address::canonical(Channel::Sms, "020 7946 0958", "GB").as_str(),
            "+442079460958"
        );
        assert_eq!(canon(Channel::Sms, "+44 20 7946 0958"), "+442079460958");
        assert!(Address::canonical(Channel::Sms, "(415) 555-2671", "US").is_e164());
    }

    #[test]
    fn numbers_that_do_not_parse_are_kept_trimmed_as_given() {
        assert_eq!(canon(Channel::Sms, " 12345 "), "12345");
        assert_eq!(canon(Channel::Sms, "ClinicName"), "ClinicName");
        assert_eq!(canon(Channel::Sms, "+1 555 0100"), "+1 555 0100");
        assert!(!Address::canonical(Channel::Sms, "12345", "US").is_e164());
    }

    #[test]
    fn fax_numbers_follow_the_phone_rule() {
        assert_eq!(canon(Channel::Fax, "(212) 555-0100 "), "+12125550100");
        assert_eq!(canon(Channel::Fax, "+1-212-555-0100"), "+12125550100");
    }

    #[test]
    fn email_addresses_are_lower_cased_whole() {
        assert_eq!(
            canon(Channel::Email, "Jane.Roe@Example.ORG"),
            "jane.roe@example.org"
        );
        assert_eq!(
            canon(Channel::Email, "  jane@example.org\t"),
            "jane@example.org"
        );
        assert_eq!(
            canon(Channel::Email, "mailto:Jane@Example.org"),
            "jane@example.org"
        );
        assert_eq!(
            canon(Channel::Email, "MAILTO:<jane@example.org>"),
            "jane@example.org"
        );
        assert_eq!(
            canon(Channel::Email, "<Jane@Example.org>"),
            "jane@example.org"
        );
        // Not an address: still one form, never a panic.
        assert_eq!(canon(Channel::Email, "not an address"), "not an address");
        assert!(!Address::canonical(Channel::Email, "nobody", "US").is_mailbox());
        assert!(Address::canonical(Channel::Email, "a@b.org", "US").is_mailbox());
    }

    #[test]
    fn direct_addresses_follow_the_email_rule() {
        assert_eq!(
            canon(Channel::Direct, " Dr.Who@Direct.Clinic.EXAMPLE "),
            "dr.who@direct.clinic.example"
        );
        assert_eq!(
            canon(Channel::Direct, "<referrals@direct.north.example>"),
            "referrals@direct.north.example"
        );
    }

    #[test]
    fn outbox_and_every_channel_go_by_shape() {
        assert_eq!(canon(Channel::Outbox, "(415) 555-2671"), "+14155552671");
        assert_eq!(
            canon(Channel::Outbox, "Jane@Example.org"),
            "jane@example.org"
        );
        assert_eq!(
            Address::canonical_for("*", "(415) 555-2671", "US").as_str(),
            "+14155552671"
        );
        assert_eq!(
            Address::canonical_for("*", "Jane@Example.org", "US").as_str(),
            "jane@example.org"
        );
        assert_eq!(
            Address::canonical_for("sms", "(415) 555-2671", "US").as_str(),
            "+14155552671"
        );
        // An unknown stored channel name: by shape.
        assert_eq!(
            Address::canonical_for("pager", "(415) 555-2671", "US").as_str(),
            "+14155552671"
        );
    }

    #[test]
    fn phone_numbers_must_be_valid_to_be_sent_to() {
        assert_eq!(
            Address::parse(Channel::Sms, " (415) 555-2671 ", "US").unwrap(),
            Address::canonical(Channel::Sms, "+14155552671", "US")
        );
        assert_eq!(
            Address::parse(Channel::Fax, "020 7946 0958", "GB")
                .unwrap()
                .as_str(),
            "+442079460958"
        );
        assert_eq!(
            Address::parse(Channel::Sms, "not-a-phone", "US"),
            Err(AddressError::NotPhone)
        );
        assert_eq!(
            Address::parse(Channel::Sms, "555-01", "US"),
            Err(AddressError::InvalidPhone("US".into()))
        );
        assert_eq!(
            Address::parse(Channel::Fax, "+1 555 0100", "US"),
            Err(AddressError::InvalidPhone("US".into()))
        );
        assert_eq!(
            Address::parse(Channel::Sms, "", "US"),
            Err(AddressError::Length)
        );
    }

    #[test]
    fn email_addresses_follow_rfc_5321() {
        for good in [
            "jane@example.org",
            "Jane.Roe+tag@Mail.Example.ORG",
            "mailto:<jane@example.org>",
            "o'brien@example.co.uk",
            "\"jane roe\"@example.org",
            "a@b-c.example",
        ] {
            assert!(Address::parse(Channel::Email, good, "US").is_ok(), "{good}");
        }
        for bad in [
            "bob",
            "@example.org",
            "jane@",
            "jane@localhost",
            "jane..roe@example.org",
            ".jane@example.org",
            "jane@exa mple.org",
            "jane@-example.org",
            "jane@example..org",
            "jane@[127.0.0.1]",
            "jane@127.0.0.1",
            "jane@exämple.org",
            "jane roe@example.org",
            "jane@example.org>",
            "\"unterminated@example.org",
        ] {
            assert!(
                matches!(
                    Address::parse(Channel::Email, bad, "US"),
                    Err(AddressError::Mailbox(_) | AddressError::Length)
                ),
                "{bad}"
            );
        }
        let long_local = format!("{}@example.org", "a".repeat(65));
        assert!(Address::parse(Channel::Email, &long_local, "US").is_err());
        let long_label = format!("a@{}.org", "b".repeat(64));
        assert!(Address::parse(Channel::Email, &long_label, "US").is_err());
    }

    #[test]
    fn direct_addresses_need_a_dot_atom_and_a_domain_name() {
        assert_eq!(
            Address::parse(Channel::Direct, "Dr.Who@Direct.Clinic.Example", "US")
                .unwrap()
                .as_str(),
            "dr.who@direct.clinic.example"
        );
        for bad in [
            "\"dr who\"@direct.example.org",
            "drwho@direct",
            "drwho",
            "drwho@[10.0.0.1]",
        ] {
            assert!(
                matches!(
                    Address::parse(Channel::Direct, bad, "US"),
                    Err(AddressError::Direct(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_outbox_takes_any_address() {
        assert!(Address::parse(Channel::Outbox, "anything at all", "US").is_ok());
        assert_eq!(
            Address::parse(Channel::Outbox, "  ", "US"),
            Err(AddressError::Length)
        );
    }

    #[test]
    fn canonical_forms_are_fixed_points() {
        for channel in Channel::ALL {
            for raw in ["(415) 555-2671", "Jane@Example.org", " 12345 ", "x"] {
                let once = Address::canonical(channel, raw, "US");
                let twice = Address::canonical(channel, once.as_str(), "US");
                assert_eq!(once, twice, "{channel} {raw:?}");
            }
        }
    }
}
