//! Pauses as the queue applies them: a delivery waits while its channel, or the connector its
//! channel is routed to, is paused (the `pauses` table, fleet-wide). A worker that gets a job
//! for such a delivery drops the job without claiming it (no attempt is spent, the status
//! stays) and marks it as having no job; the sweeper skips paused channels; a resume pushes a
//! job for each delivery held ([`wake`]).

use std::collections::BTreeMap;

use crate::config::Config;
use crate::domain::Channel;
use crate::store::{PauseRow, StoreError};

/// Which connector each channel is routed to (read from the configuration).
#[derive(Debug, Clone, Default)]
pub struct Routes(BTreeMap<String, Option<String>>);

impl Routes {
    pub fn of(config: &Config) -> Self {
        Self(
            Channel::NAMES
                .iter()
                .map(|c| (c.to_string(), config.connector_for(c)))
                .collect(),
        )
    }

    /// The connector `channel` is routed to, if any.
    pub fn connector(&self, channel: &str) -> Option<&str> {
        self.0.get(channel).and_then(|c| c.as_deref())
    }

    /// The channels routed to `connector`.
    pub fn channels_of(&self, connector: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, c)| c.as_deref() == Some(connector))
            .map(|(channel, _)| channel.clone())
            .collect()
    }

    /// The pause that holds `channel` back: its own, else its connector's.
    pub fn pause_of<'p>(&self, channel: &str, pauses: &'p [PauseRow]) -> Option<&'p PauseRow> {
        let connector = self.connector(channel);
        pauses
            .iter()
            .find(|p| p.kind == "channel" && p.name == channel)
            .or_else(|| {
                pauses
                    .iter()
                    .find(|p| p.kind == "connector" && Some(p.name.as_str()) == connector)
            })
    }

    /// Every channel held back by `pauses`.
    pub fn held_channels(&self, pauses: &[PauseRow]) -> Vec<String> {
        self.0
            .keys()
            .filter(|c| self.pause_of(c, pauses).is_some())
            .cloned()
            .collect()
    }
}

/// After a resume: the deliveries of `channels` held without a job (and not held by another
/// pause still in force), as `(channel, delivery id)` for the enqueuer.
pub async fn held_deliveries(
    store: &crate::store::Store,
    routes: &Routes,
    channels: &[String],
) -> Result<Vec<(String, String)>, StoreError> {
    let pauses = store.pauses().all().await?;
    let mut held = Vec::new();
    for channel in channels {
        if routes.pause_of(channel, &pauses).is_some() {
            continue;
        }
        let mut after = String::new();
        loop {
            let batch = store.pauses().held(channel, &after, 1_000).await?;
            let Some(last) = batch.last() else { break };
            after = last.id.clone();
            held.extend(batch.into_iter().map(|item| (item.channel, item.id)));
        }
    }
    Ok(held)
}
