//! The services every edge calls, in one cheap-to-clone handle. The HTTP API, the webhooks
//! and the operators' endpoints reach the records only through these (no edge touches the
//! store); each service validates, decides and calls the store, and answers in
//! `crate::service::ServiceError` (or the message service's `MessageError`).

use crate::app_events::AppEventService;
use crate::appointments::AppointmentService;
use crate::deliveries::DeliveryService;
use crate::events::EventFeed;
use crate::inbound::InboundService;
use crate::keys::KeyService;
use crate::messages::MessageService;
use crate::ops::Ops;
use crate::patients::PatientService;
use crate::reminders::rules::ReminderRules;
use crate::staff::StaffService;
use crate::webhooks::WebhookService;

/// The application's services.
#[derive(Clone)]
pub struct App {
    /// Accepting and showing messages, threads, read receipts.
    pub messages: MessageService,
    /// Patients, contact points, consents.
    pub patients: PatientService,
    /// Appointments and recalls.
    pub appointments: AppointmentService,
    /// Reminder rules and appointments' reminder plans.
    pub reminder_rules: ReminderRules,
    /// Recall campaigns and bulk notices.
    pub campaigns: crate::campaigns::Campaigns,
    /// The staff directory for urgent notifications.
    pub staff: StaffService,
    /// Inbound texts: provider webhooks, the unmatched work queue.
    pub inbound: InboundService,
    /// Providers' status reports on deliveries.
    pub deliveries: DeliveryService,
    /// The events feed.
    pub events: EventFeed,
    /// API key grants.
    pub keys: KeyService,
    /// Readiness, metrics figures, edge refusals.
    pub ops: Ops,
    /// Webhook endpoints and their deliveries.
    pub webhooks: WebhookService,
    /// The messaging app's events in (`POST /v1/app-events`).
    pub app_events: AppEventService,
    /// Fax documents served to providers, fax records.
    pub fax: crate::fax::FaxOffice,
    /// Call scripts and the keys pressed on calls.
    pub voice: crate::voice::VoiceService,
}

impl App {
    /// The services over the message service's store, keyring and configuration.
    pub fn new(messages: MessageService, inbound: InboundService) -> Self {
        let store = messages.store.clone();
        let config = messages.config.clone();
        let patients = PatientService {
            store: store.clone(),
            config: config.clone(),
        };
        let deliveries = DeliveryService {
            store: store.clone(),
            keyring: messages.keyring.clone(),
            config: config.clone(),
        };
        Self {
            campaigns: crate::campaigns::Campaigns {
                store: store.clone(),
                messages: messages.clone(),
                config: config.clone(),
                templates: inbound.templates.clone(),
            },
            appointments: AppointmentService {
                store: store.clone(),
                patients: patients.clone(),
            },
            reminder_rules: ReminderRules {
                store: store.clone(),
                config: config.clone(),
            },
            staff: StaffService {
                store: store.clone(),
                patients: patients.clone(),
            },
            deliveries: deliveries.clone(),
            voice: crate::voice::VoiceService {
                store: store.clone(),
                keyring: messages.keyring.clone(),
                config: config.clone(),
                templates: inbound.templates.clone(),
                replies: inbound.replies.clone(),
                deliveries,
            },
            webhooks: WebhookService {
                store: store.clone(),
                keyring: messages.keyring.clone(),
                config: config.clone(),
            },
            app_events: AppEventService {
                store: store.clone(),
                messages: messages.clone(),
                config: config.clone(),
            },
            events: EventFeed {
                store: store.clone(),
                closing: Default::default(),
            },
            keys: KeyService {
                store: store.clone(),
            },
            fax: crate::fax::FaxOffice {
                store: store.clone(),
                keyring: messages.keyring.clone(),
            },
            ops: Ops::new(
                store,
                messages.group.clone(),
                messages.keyring.clone(),
                &config,
            ),
            patients,
            messages,
            inbound,
        }
    }
}
