//! Status reports from providers' webhooks, applied to deliveries. The HTTP edge verifies the
//! signature and reads the report; this service binds it to a delivery and applies it.
//!
//! Trust binding: a report applies only to a delivery carried by *this* connector — matched by
//! the provider's id first; the `?delivery=` hint is a keyed reference token that must name a
//! delivery of this connector and agree with the provider id when both are known — and never
//! rewrites the delivery's connector or provider id. Events the provider numbers (Telnyx) are
//! recorded, so a replay is a no-op. The update is the same monotonic one the worker uses:
//! late and duplicate reports are recorded and never regress a delivery.

use std::sync::Arc;

use tracing::{info, warn};

use crate::config::Config;
use crate::connectors::StatusReport;
use crate::crypto::Keyring;
use crate::domain::DeliveryStatus;
use crate::service::ServiceError;
use crate::store::{DeliveryRow, DeliveryUpdate, Store, StoreError};

/// What became of a status report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// The provider's event id was seen before: ignored.
    Replayed,
    /// No delivery of this connector matches: ignored (the provider is answered 2xx anyway,
    /// so it stops retrying).
    NoDelivery,
    /// The manifest maps the provider's state to none of ours: ignored.
    Unmapped { delivery_id: String },
    /// Recorded on the delivery; `moved` when its status changed.
    Recorded { delivery_id: String, moved: bool },
}

/// Deliveries as providers report on them.
#[derive(Clone)]
pub struct DeliveryService {
    pub store: Store,
    /// Opens reference tokens.
    pub keyring: Keyring,
    pub config: Arc<Config>,
}

impl DeliveryService {
    /// Applies a status report that reached connector `connector`'s webhook, `hint` being the
    /// `?delivery=` reference token of the callback URL.
    pub async fn report(
        &self,
        connector: &str,
        report: &StatusReport,
        hint: Option<String>,
    ) -> Result<ReportOutcome, ServiceError> {
        if let Some(event) = &report.event_id
            && !self
                .store
                .inbound()
                .record_webhook_event(connector, event)
                .await?
        {
            info!(connector, "status webhook event seen before; ignored");
            return Ok(ReportOutcome::Replayed);
        }
        let Some(delivery) = self
            .delivery_for_report(connector, &report.provider_ref, hint)
            .await?
        else {
            info!(
                connector,
                "status callback for no delivery of this connector; ignored"
            );
            return Ok(ReportOutcome::NoDelivery);
        };
        let Some(mut update) = report_update(report, connector, &format!("webhook:{connector}"))
        else {
            info!(connector, delivery_id = %delivery.id, "provider state not mapped; ignored");
            return Ok(ReportOutcome::Unmapped {
                delivery_id: delivery.id,
            });
        };
        // A webhook never rewrites which connector carried the delivery, nor the provider's id.
        update.connector = None;
        update.provider_ref = None;
        if delivery.connector.is_some() {
            update.expect_connector = Some(connector.to_string());
        }
        update.retry_at = crate::voice::retry_in_window(
            &self.store,
            &self.config,
            &delivery,
            transient_retry(&self.config, &delivery, report),
        )
        .await?;
        let moved = self
            .store
            .deliveries()
            .update(&delivery.id, &update)
            .await?;
        info!(connector, delivery_id = %delivery.id, status = update.status.as_str(), moved, "status callback");
        crate::testing_hooks::kill_point("report-applied");
        after_report(&self.store, connector, &delivery, report, &update, moved).await?;
        Ok(ReportOutcome::Recorded {
            delivery_id: delivery.id,
            moved,
        })
    }

    /// The delivery a status report from connector `name` is about: the delivery this
    /// connector knows by the provider's id; else the one the reference token names, when it
    /// is carried by this connector (or, before our own `sent` record, is being sent on a
    /// channel this connector carries) and its provider id, if known, is the report's.
    /// Anything else is no delivery of this connector's. (A call's script is bound the same
    /// way, `crate::voice`.)
    pub async fn delivery_for_report(
        &self,
        name: &str,
        provider_ref: &str,
        hint: Option<String>,
    ) -> Result<Option<DeliveryRow>, ServiceError> {
        if let Some(id) = self
            .store
            .deliveries()
            .by_provider_ref(name, provider_ref)
            .await?
        {
            let delivery = self.store.deliveries().get(&id).await?;
            if let Some(token) = &hint
                && !self
                    .keyring
                    .delivery_ids_for_token(token)
                    .contains(&delivery.id)
            {
                warn!(connector = %name, delivery_id = %delivery.id, "status callback's reference names another delivery than its provider id; ignored");
                return Ok(None);
            }
            return Ok(Some(delivery));
        }
        let Some(token) = hint else {
            return Ok(None);
        };
        for id in self.keyring.delivery_ids_for_token(&token) {
            let delivery = match self.store.deliveries().get(&id).await {
                Ok(delivery) => delivery,
                Err(StoreError::NotFound) => continue,
                Err(e) => return Err(e.into()),
            };
            let carried_here = match &delivery.connector {
                Some(connector) => connector == name,
                None => self.config.channel(&delivery.channel).connector == name,
            };
            let same_ref = delivery
                .provider_ref
                .as_deref()
                .is_none_or(|r| r == provider_ref);
            if carried_here && same_ref {
                return Ok(Some(delivery));
            }
            warn!(connector = %name, delivery_id = %delivery.id, "status callback's reference names a delivery of another connector or provider id; ignored");
        }
        Ok(None)
    }
}

/// When `report` is a failure the manifest calls transient (busy, no answer) and attempts
/// remain (`max_attempts` counts every attempt of the chain): when the retry — a new delivery
/// of the same message, queued in the transaction that records the failure — is due.
pub fn transient_retry(
    config: &Config,
    delivery: &DeliveryRow,
    report: &StatusReport,
) -> Option<i64> {
    if !report.transient || report.status != Some(DeliveryStatus::Failed) {
        return None;
    }
    if delivery.attempts >= delivery.max_attempts {
        info!(delivery_id = %delivery.id, attempts = delivery.attempts, "transient failure after the last attempt; not retried");
        return None;
    }
    let delay = crate::queue::retry::backoff(&config.channel(&delivery.channel), delivery.attempts);
    Some(crate::store::now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2))
}

/// What a report means beyond the delivery's state, once `update` was applied (`moved`: it
/// moved the delivery): a fax's record keeps the provider's state, pages and reason.
pub async fn after_report(
    store: &Store,
    connector: &str,
    delivery: &DeliveryRow,
    report: &StatusReport,
    update: &DeliveryUpdate,
    moved: bool,
) -> Result<(), StoreError> {
    if delivery.channel == crate::domain::Channel::Fax.as_str() {
        store
            .faxes()
            .note_report(
                connector,
                &report.provider_ref,
                &delivery.organization_id,
                &delivery.id,
                &report.provider_status,
                report.pages,
                report.error.as_deref(),
            )
            .await?;
    }
    if moved && let Some(retry_at) = update.retry_at {
        let delay_ms = (retry_at - crate::store::now_ms()).max(0);
        info!(connector, delivery_id = %delivery.id, delay_ms, "transient failure; retried as a new delivery");
    }
    Ok(())
}

/// The delivery update a provider's status report asks for — from a callback or a lookup
/// (`source` says which, e.g. `webhook:twilio`); `None` when the manifest maps no state of
/// ours. A failure carries the provider's state and error code as its reason.
pub fn report_update(
    report: &StatusReport,
    connector: &str,
    source: &str,
) -> Option<DeliveryUpdate> {
    let status = report.status?;
    let mut update = DeliveryUpdate::new(status, source);
    update.connector = Some(connector.to_string());
    update.provider_ref = Some(report.provider_ref.clone());
    update.detail = Some(match &report.error {
        Some(error) => format!("{} ({error})", report.provider_status),
        None => report.provider_status.clone(),
    });
    if status == DeliveryStatus::Failed {
        let error = report.error.as_deref().map(|e| format!(", {e}"));
        update.reason = Some(format!(
            "{connector}: {}{}",
            report.provider_status,
            error.unwrap_or_default()
        ));
    }
    Some(update)
}
