//! TEMPORARY stand-in for the MDN outbox (helper `mdn` replaces this file): records the MDNs
//! owed in `direct_mdns`; nothing sends them yet.

use std::sync::Arc;

use crate::config::{Config, ConnectorConfig, DirectMode};
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Processed,
    Dispatched,
    Failed,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Processed => "processed",
            Disposition::Dispatched => "dispatched",
            Disposition::Failed => "failed",
        }
    }
}

pub struct NewMdn {
    pub organization_id: String,
    pub inbound_item_id: String,
    pub connector: String,
    pub disposition: Disposition,
    pub recipient: String,
    pub original_message_id: String,
    pub final_destination: bool,
    pub recipient_certs: Vec<openssl::x509::X509>,
}

#[derive(Clone)]
pub struct MdnOutbox {
    store: Store,
    config: Arc<Config>,
}

impl MdnOutbox {
    pub fn new(store: Store, config: Arc<Config>) -> Self {
        Self { store, config }
    }

    pub async fn enqueue(&self, mdn: &NewMdn) -> Result<bool, StoreError> {
        match self.config.connectors.get(&mdn.connector) {
            Some(ConnectorConfig::Direct(d)) if d.mode == DirectMode::Sign => {}
            _ => return Ok(false),
        }
        let pem = mdn
            .recipient_certs
            .iter()
            .filter_map(|c| c.to_pem().ok())
            .map(|p| String::from_utf8_lossy(&p).into_owned())
            .collect::<String>();
        self.store
            .insert_mdn_stub(
                &mdn.organization_id,
                &mdn.inbound_item_id,
                &mdn.connector,
                mdn.disposition.as_str(),
                &mdn.recipient,
                &mdn.original_message_id,
                mdn.final_destination,
                &pem,
            )
            .await
    }
}
