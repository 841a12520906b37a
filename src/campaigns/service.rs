//! Campaigns over the API (`admin` scope): the service behind `POST /v1/campaigns`,
//! `GET /v1/campaigns[/{id}]`, `POST /v1/campaigns/{id}/preview|pause|resume|cancel` and
//! `GET /v1/campaigns/{id}/report`, with its wire types. A definition is checked before it is
//! stored (422 with a pointer per field at fault, `/channels/1`); another organization's
//! campaign is a 404; pausing a cancelled campaign, or resuming one that is not paused, is a 409
//! `campaign_wrong_state`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Campaign, CampaignError, Campaigns, Preview, definition};
use crate::messages::rfc3339;
use crate::service::{Refusal, ServiceError};
use crate::store::{CampaignRow, StoreError};

/// Campaigns listed at most.
const LIST_LIMIT: i64 = 200;

/// A campaign as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CampaignView {
    pub id: String,
    pub name: String,
    /// recall | notice
    pub kind: String,
    /// active | paused | cancelled
    pub state: String,
    pub definition: Campaign,
    /// The next scheduled run (RFC 3339), if the campaign is scheduled.
    pub next_run_at: Option<String>,
    /// The last scheduled pass that ran.
    pub last_pass_at: Option<String>,
    pub created_at: String,
    pub progress: Progress,
}

/// How far a campaign is.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Progress {
    /// Targets (recalls, noticed patients) reached by at least one attempt.
    pub targeted: i64,
    pub sent: i64,
    pub skipped: i64,
}

/// `GET /v1/campaigns`
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CampaignList {
    pub campaigns: Vec<CampaignView>,
}

/// `GET /v1/campaigns/{id}/report`
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CampaignReport {
    pub campaign: String,
    pub targeted: i64,
    pub sent: i64,
    pub skipped: i64,
    /// Skipped attempts per reason.
    pub skipped_by_reason: BTreeMap<String, i64>,
    pub delivered: i64,
    pub failed: i64,
    pub confirmed: i64,
    pub booked: i64,
}

impl From<CampaignError> for ServiceError {
    fn from(error: CampaignError) -> Self {
        match error {
            CampaignError::Store(e) => e.into(),
            CampaignError::Message(e) => e.into(),
            CampaignError::Invalid(detail) => ServiceError::Internal(detail),
        }
    }
}

fn not_found(e: StoreError) -> ServiceError {
    match e {
        StoreError::NotFound => ServiceError::NotFound("campaign"),
        other => other.into(),
    }
}

impl Campaigns {
    async fn owned(&self, organization_id: &str, id: &str) -> Result<CampaignRow, ServiceError> {
        self.store
            .campaigns()
            .get_of(organization_id, id)
            .await
            .map_err(not_found)
    }

    async fn view(&self, row: CampaignRow) -> Result<CampaignView, ServiceError> {
        let counts = self
            .store
            .campaigns()
            .counts(&row.id, crate::store::now_ms())
            .await?;
        Ok(CampaignView {
            definition: definition(&row)?,
            next_run_at: row.next_run_at.map(rfc3339),
            last_pass_at: row.last_pass_at.map(rfc3339),
            created_at: rfc3339(row.created_at),
            progress: Progress {
                targeted: counts.targeted,
                sent: counts.sent,
                skipped: counts.skipped,
            },
            id: row.id,
            name: row.name,
            kind: row.kind,
            state: row.state,
        })
    }

    /// `POST /v1/campaigns`: validates (every field at fault) and stores the campaign.
    pub async fn api_create(
        &self,
        organization_id: &str,
        campaign: Campaign,
        now: DateTime<Utc>,
    ) -> Result<CampaignView, ServiceError> {
        let errors = campaign.field_errors();
        if !errors.is_empty() {
            return Err(ServiceError::Invalid(errors));
        }
        let id = self.create(organization_id, &campaign, now).await?;
        let row = self.owned(organization_id, &id).await?;
        self.view(row).await
    }

    pub async fn api_list(&self, organization_id: &str) -> Result<CampaignList, ServiceError> {
        let rows = self
            .store
            .campaigns()
            .list(organization_id, LIST_LIMIT)
            .await?;
        let mut campaigns = Vec::with_capacity(rows.len());
        for row in rows {
            campaigns.push(self.view(row).await?);
        }
        Ok(CampaignList { campaigns })
    }

    pub async fn api_show(
        &self,
        organization_id: &str,
        id: &str,
    ) -> Result<CampaignView, ServiceError> {
        let row = self.owned(organization_id, id).await?;
        self.view(row).await
    }

    pub async fn api_preview(
        &self,
        organization_id: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Preview, ServiceError> {
        self.owned(organization_id, id).await?;
        Ok(self.preview(id, now).await?)
    }

    /// Pause (from active), resume (from paused) or cancel (from active or paused).
    pub async fn api_transition(
        &self,
        organization_id: &str,
        id: &str,
        action: &str,
    ) -> Result<CampaignView, ServiceError> {
        self.owned(organization_id, id).await?;
        let (from, to): (&[&str], &str) = match action {
            "pause" => (&["active"], "paused"),
            "resume" => (&["paused"], "active"),
            _ => (&["active", "paused"], "cancelled"),
        };
        if !self.store.campaigns().set_state(id, from, to).await? {
            let row = self.owned(organization_id, id).await?;
            // Asking for the state it is in already is not an error.
            if row.state != to {
                return Err(ServiceError::Refused {
                    refusal: Refusal::CampaignWrongState,
                    detail: format!("a {} campaign cannot be {action}d", row.state),
                });
            }
        }
        let row = self.owned(organization_id, id).await?;
        self.view(row).await
    }

    pub async fn api_report(
        &self,
        organization_id: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<CampaignReport, ServiceError> {
        self.owned(organization_id, id).await?;
        let r = self.report(id, now).await?;
        Ok(CampaignReport {
            campaign: id.to_string(),
            targeted: r.targeted,
            sent: r.sent,
            skipped: r.skipped,
            skipped_by_reason: self.store.campaigns().skips(id).await?,
            delivered: r.delivered,
            failed: r.failed,
            confirmed: r.confirmed,
            booked: r.booked,
        })
    }
}
