//! The configured connectors by name: every channel the workers send through (`dyn Channel`:
//! the outbox sink, SMTP, Direct, HTTP providers) and, for webhooks and reconciliation, the
//! HTTP providers themselves. The daemon builds it at start-up (`daemon::Core::connectors`).

use std::collections::HashMap;
use std::sync::Arc;

use super::HttpConnector;
use crate::channels::Channel;

/// The configured connectors by name.
#[derive(Clone, Default)]
pub struct Connectors {
    // Shared: built at start-up, then cloned into every request's state and every worker.
    by_name: Arc<HashMap<String, Arc<dyn Channel>>>,
    http: Arc<HashMap<String, Arc<HttpConnector>>>,
}

impl Connectors {
    /// Registers a manifest-driven provider (also reachable for webhooks).
    pub fn insert_http(&mut self, connector: Arc<HttpConnector>) {
        Arc::make_mut(&mut self.http).insert(connector.name().to_string(), connector.clone());
        Arc::make_mut(&mut self.by_name).insert(connector.name().to_string(), connector);
    }

    /// The HTTP provider with this name (webhooks, reconciliation).
    pub fn http(&self, name: &str) -> Option<Arc<HttpConnector>> {
        self.http.get(name).cloned()
    }

    pub fn http_connectors(&self) -> Vec<Arc<HttpConnector>> {
        self.http.values().cloned().collect()
    }

    pub fn insert(&mut self, channel: Arc<dyn Channel>) {
        Arc::make_mut(&mut self.by_name).insert(channel.name().to_string(), channel);
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Channel>> {
        self.by_name.get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<_> = self.by_name.keys().cloned().collect();
        names.sort();
        names
    }
}
