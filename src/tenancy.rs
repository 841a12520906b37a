//! Which organization something that arrives from outside belongs to.
//!
//! An inbound SMS or fax is bound to an organization by what its sender cannot forge: the
//! number (or address) it was sent **to**, which the organization declares it owns
//! (`[organizations.<slug>] numbers = ["+1…"]`, `addresses = ["…"]`), or a connector the
//! organization owns outright (`[connectors.<name>] organization = "<slug>"`). Never by an id
//! it carries, and never by a fallback: an item no organization owns is an orphan, kept sealed
//! for the operator (`switchboard inbound orphans`) and filed into no tenant.
//!
//! The table is built once from the configuration; two organizations claiming the same number
//! or address is a start-up error naming both.

use std::collections::BTreeMap;

use crate::config::{Config, ConfigError};
use crate::domain::{Address, Channel};

/// The region a number an item was sent to is read in: before the item is bound to an
/// organization there is no organization's region to use (numbers arrive in E.164 anyway).
pub const REGION: &str = "US";

/// Where an inbound item goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The organization (slug) that owns it.
    Organization(String),
    /// Nobody's: quarantined for the operator, with the reason.
    Orphan(String),
}

/// Numbers and addresses each organization owns.
#[derive(Debug, Clone, Default)]
pub struct Tenancy {
    numbers: BTreeMap<String, String>,
    addresses: BTreeMap<String, String>,
}

impl Tenancy {
    /// The table from `organizations.*.numbers` / `addresses`; refuses a number or address
    /// claimed twice, or a number that is not a phone number.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let mut tenancy = Tenancy::default();
        for (slug, org) in &config.organizations {
            for (i, raw) in org.numbers.iter().enumerate() {
                let number = crate::phone::to_e164(raw, &org.phone_region).map_err(|_| {
                    ConfigError::Invalid(format!(
                        "organizations.{slug}.numbers[{i}] {raw:?} is not a phone number"
                    ))
                })?;
                if let Some(other) = tenancy.numbers.insert(number.clone(), slug.clone())
                    && &other != slug
                {
                    return Err(ConfigError::Invalid(format!(
                        "organizations.{other}.numbers and organizations.{slug}.numbers both claim {number}; a number belongs to one organization"
                    )));
                }
            }
            for (i, raw) in org.addresses.iter().enumerate() {
                let address = canonical_address(raw).ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "organizations.{slug}.addresses[{i}] {raw:?} is not an email or Direct address"
                    ))
                })?;
                if let Some(other) = tenancy.addresses.insert(address.clone(), slug.clone())
                    && &other != slug
                {
                    return Err(ConfigError::Invalid(format!(
                        "organizations.{other}.addresses and organizations.{slug}.addresses both claim {address}; an address belongs to one organization"
                    )));
                }
            }
        }
        Ok(tenancy)
    }

    /// The organization owning the number an item was sent to, if any.
    pub fn number_owner(&self, to: &str) -> Option<&str> {
        let number = Address::canonical(Channel::Sms, to, REGION);
        self.numbers.get(number.as_str()).map(String::as_str)
    }

    /// The organization owning an address an item was sent to, if any.
    pub fn address_owner(&self, to: &str) -> Option<&str> {
        canonical_address(to)
            .and_then(|a| self.addresses.get(&a))
            .map(String::as_str)
    }

    /// Routes an item sent to `to` (a number) through a connector owned by
    /// `connector_organization` (if it is owned by one).
    pub fn route_number(&self, to: &str, connector_organization: Option<&str>) -> Route {
        route(self.number_owner(to), connector_organization, "number")
    }

    /// Routes an item sent to `to` (an email or Direct address).
    pub fn route_address(&self, to: &str, connector_organization: Option<&str>) -> Route {
        route(self.address_owner(to), connector_organization, "address")
    }
}

fn route(owner: Option<&str>, connector: Option<&str>, what: &str) -> Route {
    match (owner, connector) {
        (Some(owner), Some(connector)) if owner == connector => Route::Organization(owner.into()),
        (Some(owner), Some(connector)) => Route::Orphan(format!(
            "the {what} it was sent to belongs to organization {owner}, but it arrived through a connector of organization {connector}"
        )),
        (Some(owner), None) => Route::Organization(owner.into()),
        (None, Some(connector)) => Route::Organization(connector.into()),
        (None, None) => Route::Orphan(format!(
            "no organization owns the {what} it was sent to, and the connector belongs to none"
        )),
    }
}

/// An email or Direct address as compared ([`Address::canonical`]); `None` when it is not
/// `local@domain`.
pub fn canonical_address(raw: &str) -> Option<String> {
    let address = Address::canonical(Channel::Email, raw, REGION);
    address.is_mailbox().then(|| address.into_string())
}

/// The organization a delivery is sent for, as patients see it: its stored name (or the
/// configured display name) and its configured settings.
pub async fn sender(
    store: &crate::store::Store,
    config: &Config,
    organization_id: &str,
) -> Result<crate::channels::Sender, crate::store::StoreError> {
    let org = store.organizations().get(organization_id).await?;
    let settings = config.organization(&org.slug);
    Ok(crate::channels::Sender {
        organization_id: org.id,
        slug: org.slug,
        name: settings.display_name.clone().unwrap_or(org.name),
        settings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Result<Tenancy, ConfigError> {
        Tenancy::from_config(&Config::from_toml(text)?)
    }

    #[test]
    fn items_go_to_the_owner_of_the_number_they_were_sent_to() {
        let tenancy = config(
            "[organizations.north]\nnumbers = [\"+1 212 555 0100\"]\n\
             [organizations.south]\nnumbers = [\"(305) 555-0100\"]\n",
        )
        .expect("config");
        assert_eq!(
            tenancy.route_number("+12125550100", None),
            Route::Organization("north".into())
        );
        assert_eq!(
            tenancy.route_number("+13055550100", None),
            Route::Organization("south".into())
        );
        // A connector owned by an organization routes what no organization claims to it ...
        assert_eq!(
            tenancy.route_number("+14155550100", Some("south")),
            Route::Organization("south".into())
        );
        // ... but never what another organization claims.
        assert!(matches!(
            tenancy.route_number("+12125550100", Some("south")),
            Route::Orphan(_)
        ));
        // Nobody's number through a shared connector: an orphan, not the oldest organization.
        assert!(matches!(
            tenancy.route_number("+14155550100", None),
            Route::Orphan(_)
        ));
    }

    #[test]
    fn two_organizations_cannot_claim_one_number_or_address() {
        let err = config(
            "[organizations.north]\nnumbers = [\"+12125550100\"]\n\
             [organizations.south]\nnumbers = [\"+1 (212) 555-0100\"]\n",
        )
        .expect_err("claimed twice");
        let text = err.to_string();
        assert!(
            text.contains("north") && text.contains("south") && text.contains("+12125550100"),
            "{text}"
        );
        let err = config(
            "[organizations.north]\naddresses = [\"Intake@Direct.North.example\"]\n\
             [organizations.south]\naddresses = [\"intake@direct.north.example\"]\n",
        )
        .expect_err("claimed twice");
        assert!(err.to_string().contains("both claim"), "{err}");
        let err = config("[organizations.north]\nnumbers = [\"not a number\"]\n")
            .expect_err("bad number");
        assert!(
            err.to_string().contains("organizations.north.numbers[0]"),
            "{err}"
        );
    }

    #[test]
    fn addresses_route_case_insensitively() {
        let tenancy =
            config("[organizations.north]\naddresses = [\"intake@direct.north.example\"]\n")
                .expect("config");
        assert_eq!(
            tenancy.route_address("<Intake@DIRECT.north.example>", None),
            Route::Organization("north".into())
        );
        assert!(matches!(
            tenancy.route_address("other@direct.north.example", None),
            Route::Orphan(_)
        ));
    }
}
