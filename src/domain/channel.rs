//! The channels a delivery can go over. Stored and shown by name (`sms`, `email`, …): the
//! names are what the database's `channel` columns, the API (`recipients[].channel`,
//! `channels`), the configuration (`[channels.<name>]`, reminder and campaign channel lists)
//! and the job queue names (`switchboard.deliver.<name>`) carry, so they never change.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A logical channel. `outbox` is the local sink (nothing leaves the host): a channel in its
/// own right for tests and dry runs, and the connector every channel falls back to in the
/// embedded default configuration.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Outbox,
    Sms,
    Email,
    Fax,
    Direct,
}

/// A name that is not a channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown channel {0:?}; known: outbox, sms, email, fax, direct")]
pub struct UnknownChannel(pub String);

impl Channel {
    /// Every channel, in the order errors list them.
    pub const ALL: [Channel; 5] = [
        Channel::Outbox,
        Channel::Sms,
        Channel::Email,
        Channel::Fax,
        Channel::Direct,
    ];

    /// The names of [`Channel::ALL`], in the same order.
    pub const NAMES: [&'static str; 5] = [
        Channel::Outbox.as_str(),
        Channel::Sms.as_str(),
        Channel::Email.as_str(),
        Channel::Fax.as_str(),
        Channel::Direct.as_str(),
    ];

    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::Outbox => "outbox",
            Channel::Sms => "sms",
            Channel::Email => "email",
            Channel::Fax => "fax",
            Channel::Direct => "direct",
        }
    }

    /// Whether its addresses are phone numbers (compared in E.164).
    pub const fn is_phone(self) -> bool {
        matches!(self, Channel::Sms | Channel::Fax)
    }

    /// Contact point systems (`contact_points.system`) whose value this channel can reach, in
    /// order of preference. The outbox takes any.
    pub const fn contact_systems(self) -> &'static [&'static str] {
        match self {
            Channel::Sms => &["sms", "phone"],
            Channel::Email => &["email"],
            Channel::Fax => &["fax"],
            Channel::Direct => &["direct"],
            Channel::Outbox => &["sms", "phone", "email", "fax", "direct"],
        }
    }

    /// The channel whose addresses a contact point system holds (`phone`, `mobile` and `sms`
    /// numbers are texted; `None` for a system no channel uses).
    pub fn of_contact_system(system: &str) -> Option<Channel> {
        match system {
            "sms" | "mobile" | "phone" => Some(Channel::Sms),
            "fax" => Some(Channel::Fax),
            "email" => Some(Channel::Email),
            "direct" => Some(Channel::Direct),
            _ => None,
        }
    }
}

impl FromStr for Channel {
    type Err = UnknownChannel;

    /// Exactly the stored names (case matters: the database and the API hold lower case).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Channel::ALL
            .into_iter()
            .find(|c| c.as_str() == name)
            .ok_or_else(|| UnknownChannel(name.to_string()))
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for Channel {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for Channel {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Channel {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<Channel> for str {
    fn eq(&self, other: &Channel) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Channel> for String {
    fn eq(&self, other: &Channel) -> bool {
        self == other.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_json() {
        for channel in Channel::ALL {
            assert_eq!(channel.as_str().parse::<Channel>(), Ok(channel));
            let json = serde_json::to_string(&channel).expect("json");
            assert_eq!(json, format!("\"{channel}\""));
            assert_eq!(
                serde_json::from_str::<Channel>(&json).expect("parse"),
                channel
            );
        }
        assert_eq!(
            Channel::NAMES,
            Channel::ALL.map(Channel::as_str),
            "NAMES follows ALL"
        );
    }

    #[test]
    fn unknown_and_differently_cased_names_are_refused() {
        for name in ["SMS", "text", "", "*", "voice"] {
            let err = name.parse::<Channel>().unwrap_err();
            assert_eq!(err, UnknownChannel(name.to_string()));
        }
        assert_eq!(
            "voice".parse::<Channel>().unwrap_err().to_string(),
            "unknown channel \"voice\"; known: outbox, sms, email, fax, direct"
        );
    }

    #[test]
    fn compares_with_stored_text() {
        assert!(Channel::Sms == *"sms");
        let stored: String = ["f", "ax"].concat();
        assert!(stored == Channel::Fax);
        assert!(*"email" != Channel::Direct);
    }
}
