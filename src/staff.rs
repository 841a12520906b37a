//! The staff directory urgent notifications go to (`crate::notify`): who, how to reach them,
//! who is on call first. The request and response types are the wire shapes of
//! `PUT /v1/staff/{external_id}` and `GET /v1/staff`.

use serde::{Deserialize, Serialize};

use crate::patients::{PatientService, check_external_id};
use crate::service::{Checks, ServiceError};
use crate::store::{StaffInput, StaffRow, Store};

/// `PUT /v1/staff/{external_id}`: a member of staff.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StaffRequest {
    /// Not empty.
    #[schema(min_length = 1)]
    pub name: String,
    /// A phone number for texts (stored in E.164, read in the organization's region).
    #[serde(default)]
    pub sms: Option<String>,
    /// An email address. At least one of `sms` and `email` is required.
    #[serde(default)]
    pub email: Option<String>,
    /// 1 = called first; absent = not on call.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub on_call_rank: Option<i64>,
    /// Inactive members are never notified (default true).
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

/// A member of staff as the API shows them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StaffView {
    /// The gateway's id.
    pub id: String,
    pub external_id: String,
    pub name: String,
    /// E.164.
    pub sms: Option<String>,
    pub email: Option<String>,
    pub on_call_rank: Option<i64>,
    pub active: bool,
}

impl From<StaffRow> for StaffView {
    fn from(row: StaffRow) -> Self {
        Self {
            id: row.id,
            external_id: row.external_id,
            name: row.name,
            sms: row.sms,
            email: row.email,
            on_call_rank: row.on_call_rank,
            active: row.active,
        }
    }
}

/// `GET /v1/staff`: on-call members first, by rank.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StaffList {
    pub staff: Vec<StaffView>,
}

/// The staff directory of an organization.
#[derive(Clone)]
pub struct StaffService {
    pub store: Store,
    /// For the organization's phone region.
    pub patients: PatientService,
}

impl StaffService {
    /// Creates or replaces the member `external_id`.
    pub async fn upsert(
        &self,
        organization_id: &str,
        external_id: &str,
        request: StaffRequest,
    ) -> Result<StaffView, ServiceError> {
        let mut checks = Checks::new();
        check_external_id(&mut checks, "external_id", external_id);
        checks.check(
            !request.name.trim().is_empty(),
            "/name",
            "name must not be empty",
        );
        checks.check(
            request.on_call_rank.is_none_or(|r| r >= 1),
            "/on_call_rank",
            "on_call_rank starts at 1",
        );
        checks.check(
            request.sms.is_some() || request.email.is_some(),
            "/sms",
            "give sms or email (or both)",
        );
        let sms = match &request.sms {
            Some(number) => {
                let region = self.patients.phone_region(organization_id).await?;
                match crate::phone::to_e164(number, &region) {
                    Ok(e164) => Some(e164),
                    Err(e) => {
                        checks.invalid("/sms", format!("sms: {e}"));
                        None
                    }
                }
            }
            None => None,
        };
        checks.check(
            request.email.as_deref().is_none_or(|e| e.contains('@')),
            "/email",
            "email is not an address",
        );
        checks.finish()?;
        let row = self
            .store
            .staff()
            .upsert(
                organization_id,
                &StaffInput {
                    external_id: external_id.to_string(),
                    name: request.name.trim().to_string(),
                    sms,
                    email: request.email,
                    on_call_rank: request.on_call_rank,
                    active: request.active,
                },
            )
            .await?;
        Ok(StaffView::from(row))
    }

    /// The directory.
    pub async fn list(&self, organization_id: &str) -> Result<StaffList, ServiceError> {
        let staff = self.store.staff().list(organization_id).await?;
        Ok(StaffList {
            staff: staff.into_iter().map(StaffView::from).collect(),
        })
    }
}
