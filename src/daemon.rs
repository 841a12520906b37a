//! Wiring: opens the store, the at-rest keyring (checked against the fleet's key canary) and
//! the queue; starts the HTTP API, the
//! delivery workers (one per channel), the sweeper and the scheduled reminder run (an
//! apalis-cron worker); stops them in order on shutdown (stop accepting, let in-flight jobs
//! and a reminder pass in progress finish, close the pool). Every long-lived background task
//! (reminder cron, urgent notifier, sweeper, reconciler, bounce and Direct pollers, Direct
//! expiry, the Direct MDN senders, the HL7 accept loop) runs under [`crate::supervise`]:
//! restarted with backoff after a panic or an unexpected end, counted in `/metrics`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{BackendExt, Monitor, Strategy, WorkerBuilder, WorkerBuilderExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::app::App;
use crate::channels::outbox::OutboxSink;
use crate::config::{Config, ConfigError, ConnectorConfig, credential_path};
use crate::connectors::Connectors;
use crate::connectors::HttpConnector;
use crate::crypto::{CryptoError, Keyring};
use crate::domain::Channel;
use crate::hl7::processor::Hl7Processor;
use crate::http::{self, AppState};
use crate::inbound::InboundService;
use crate::messages::MessageService;
use crate::queue::jobs::{Enqueuer, queue_name};
use crate::queue::poll::Interval;
use crate::queue::wakeups::QueueWakeups;
use crate::queue::worker::{ChannelWork, deliver_job};
use crate::queue::{Deliverer, JobQueue, sweeper};
use crate::reminders::Reminders;
use crate::reminders::cron::ReminderCron;
use crate::store::{GroupCommit, Store, StoreError};
use crate::supervise::{Supervisor, TaskMetrics};
use crate::templates::Templates;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("job workers: {0}")]
    Workers(String),
    #[error(transparent)]
    Connector(#[from] crate::connectors::ConnectorError),
    #[error("templates: {0}")]
    Templates(String),
    #[error(
        "at-rest key mismatch: this daemon's keyring (current key {ours}) cannot open the key \
         canary in the database, sealed with key {fleet} by the daemon that first used it. Every \
         daemon sharing a database must hold the same at-rest key: copy the fleet's key into \
         security.at_rest_key (or, while rotating to a new key, list the fleet's key in \
         security.previous_keys). Refusing to start: what this daemon sealed, the others could \
         not open"
    )]
    KeyMismatch { ours: String, fleet: String },
    /// The database's schema is not this binary's (admin commands never migrate).
    #[error("{0}")]
    Schema(String),
}

/// The parts every command needs: configuration, store, keyring, queue.
#[derive(Clone)]
pub struct Core {
    pub config: Arc<Config>,
    pub store: Store,
    pub group: GroupCommit,
    pub keyring: Keyring,
    pub queue: JobQueue,
    /// Shared by every [`MessageService`] of this process.
    pub regions: crate::messages::PhoneRegions,
    /// The MDNs we owe senders of inbound Direct messages: inbound processing enqueues here,
    /// the `direct-mdn:<connector>` senders started by [`start`] send them.
    pub mdns: crate::direct::mdn::MdnOutbox,
}

impl Core {
    /// Connects and migrates the store, loads (or on first run generates) the at-rest key.
    pub async fn open(config: Config) -> Result<Self, DaemonError> {
        let keyring = load_keyring(&config)?;
        let store = Store::connect(
            &config.database_url(),
            config.database.max_connections,
            config.database.sqlite_synchronous == "full",
        )
        .await?;
        store.migrate().await?;
        check_key_canary(&store, &keyring).await?;
        let fixed = store
            .consents()
            .canonicalize_recipients(|slug, channel, recipient| {
                let region = config.organization(slug).phone_region;
                crate::domain::consent::canonical_recipient(channel, recipient, &region)
            })
            .await?;
        if fixed > 0 {
            info!(
                entries = fixed,
                "consent recipients rewritten in their canonical form"
            );
        }
        let digested = store
            .patients()
            .digest_clear_ssns(|value| {
                keyring
                    .identifier_digests(value)
                    .into_iter()
                    .next()
                    .unwrap_or_default()
            })
            .await?;
        if digested > 0 {
            info!(
                identifiers = digested,
                "social security numbers held in clear replaced by their keyed digests"
            );
        }
        let queue = JobQueue::new(&store, &config.queue);
        let enqueuer = Enqueuer {
            queue: queue.clone(),
            store: store.clone(),
        };
        let group = GroupCommit::start(
            &store,
            Some(Arc::new(enqueuer)),
            crate::store::Pushes::Detached,
            config.fax_inbound.record_writers,
        );
        let config = Arc::new(config);
        Ok(Self {
            mdns: crate::direct::mdn::MdnOutbox::new(store.clone(), config.clone()),
            config,
            group,
            store,
            keyring,
            queue,
            regions: Default::default(),
        })
    }

    /// Connects to a store that is already migrated to exactly this binary's schema, for the
    /// admin commands: only `migrate` and `run` change the schema ([`Core::open`]). A database
    /// without our schema, or behind or ahead of this binary, is refused with what to do.
    pub async fn attach(config: Config) -> Result<Self, DaemonError> {
        // Nothing is created for a database that is not there (no file, no key).
        let url = config.database_url();
        if let Some(path) = url.strip_prefix("sqlite://")
            && !path.starts_with(':')
            && !std::path::Path::new(path).exists()
        {
            return Err(DaemonError::Schema(format!(
                "there is no database at {path}: run `switchboard migrate` (or start the daemon) \
                 first, or name the daemon's configuration with --config"
            )));
        }
        let keyring = load_keyring(&config)?;
        let store = Store::connect(
            &config.database_url(),
            config.database.max_connections,
            config.database.sqlite_synchronous == "full",
        )
        .await?;
        if let Some(problem) = store.schema_state().await?.problem() {
            store.close().await;
            return Err(DaemonError::Schema(problem));
        }
        check_key_canary(&store, &keyring).await?;
        let queue = JobQueue::new(&store, &config.queue);
        let enqueuer = Enqueuer {
            queue: queue.clone(),
            store: store.clone(),
        };
        // Admin commands exit once answered: their accepts wait for the job push.
        let group = GroupCommit::start(
            &store,
            Some(Arc::new(enqueuer)),
            crate::store::Pushes::Awaited,
            config.fax_inbound.record_writers,
        );
        let config = Arc::new(config);
        Ok(Self {
            mdns: crate::direct::mdn::MdnOutbox::new(store.clone(), config.clone()),
            config,
            group,
            store,
            keyring,
            queue,
            regions: Default::default(),
        })
    }

    pub fn messages(&self) -> MessageService {
        MessageService {
            store: self.store.clone(),
            group: self.group.clone(),
            keyring: self.keyring.clone(),
            config: self.config.clone(),
            regions: self.regions.clone(),
        }
    }

    /// The templates (built-in plus `templates.dir`), refused when the lint finds a problem.
    pub fn templates(&self) -> Result<Arc<Templates>, DaemonError> {
        let templates = Templates::load(self.config.templates.dir.as_deref())
            .map_err(|e| DaemonError::Templates(e.to_string()))?;
        let problems = templates.lint();
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            return Err(DaemonError::Templates(list.join("; ")));
        }
        Ok(Arc::new(templates))
    }

    /// Inbound texts; `tenancy` binds each to the organization owning its number.
    pub fn inbound(
        &self,
        templates: Arc<Templates>,
        tenancy: Arc<crate::tenancy::Tenancy>,
    ) -> InboundService {
        InboundService {
            store: self.store.clone(),
            keyring: self.keyring.clone(),
            config: self.config.clone(),
            replies: Arc::new(self.reminders(templates.clone())),
            templates,
            tenancy,
            messages: self.messages(),
            direct: None,
        }
    }

    /// The services the edges call.
    pub fn app(&self, templates: Arc<Templates>, tenancy: Arc<crate::tenancy::Tenancy>) -> App {
        App::new(self.messages(), self.inbound(templates, tenancy))
    }

    /// Inbound Direct over every Direct connector (keys loaded, anchors read).
    pub fn direct_inbound(
        &self,
        tenancy: Arc<crate::tenancy::Tenancy>,
    ) -> Result<crate::direct::inbound::DirectInbound, crate::channels::direct::DirectChannelError>
    {
        crate::direct::inbound::DirectInbound::new(
            crate::intake::Intake {
                store: self.store.clone(),
                keyring: self.keyring.clone(),
                config: self.config.clone(),
            },
            self.mdns.clone(),
            tenancy,
            &self.config,
        )
    }

    pub fn reminders(&self, templates: Arc<Templates>) -> Reminders {
        Reminders {
            store: self.store.clone(),
            messages: self.messages(),
            config: self.config.clone(),
            templates,
        }
    }

    pub fn connectors(&self, templates: &Arc<Templates>) -> Result<Connectors, DaemonError> {
        let mut connectors = Connectors::default();
        let sink =
            OutboxSink::new(self.config.outbox.dir.clone()).map_err(|source| DaemonError::Io {
                what: format!("outbox directory {}", self.config.outbox.dir.display()),
                source,
            })?;
        connectors.insert(Arc::new(sink));
        for (name, connector) in &self.config.connectors {
            match connector {
                ConnectorConfig::Http(http) => {
                    let mut connector = HttpConnector::new(name, http)?;
                    if connector.manifest().channel == Channel::Fax {
                        connector = connector.with_fax_desk(Arc::new(crate::fax::FaxOffice {
                            store: self.store.clone(),
                            keyring: self.keyring.clone(),
                        }));
                    }
                    connectors.insert_http(Arc::new(connector));
                }
                ConnectorConfig::Smtp(_) | ConnectorConfig::Direct(_) => {}
            }
        }
        for channel in crate::channels::email::build_connectors(&self.config, templates)
            .map_err(|e| DaemonError::Config(ConfigError::Invalid(e.to_string())))?
        {
            connectors.insert(channel);
        }
        for channel in crate::channels::direct::build_connectors(&self.config)
            .map_err(|e| DaemonError::Config(ConfigError::Invalid(e.to_string())))?
        {
            connectors.insert(channel);
        }
        for channel in Channel::NAMES {
            if let Some(wanted) = self.config.connector_for(channel)
                && connectors.get(&wanted).is_none()
            {
                return Err(DaemonError::Config(ConfigError::Invalid(format!(
                    "channels.{channel}.connector: no connector named {wanted:?} is set up"
                ))));
            }
        }
        Ok(connectors)
    }
}

/// What the canary seals, and the context it is bound to.
const CANARY: &[u8] = b"switchboard at-rest key canary";
const CANARY_CONTEXT: &str = "keyring_canary";

/// Refuses a keyring that cannot open the fleet's canary; writes the canary on first use and
/// reseals it with the current key after a rotation (opened with a previous key).
async fn check_key_canary(store: &Store, keyring: &Keyring) -> Result<(), DaemonError> {
    let sealed = match store.canary().get().await? {
        Some(sealed) => sealed,
        None => {
            store
                .canary()
                .insert(&keyring.seal(CANARY, CANARY_CONTEXT)?)
                .await?;
            // Another daemon may have written first: check whichever won.
            store.canary().get().await?.ok_or(StoreError::NotFound)?
        }
    };
    let fleet = Keyring::sealed_key_id(&sealed)
        .unwrap_or("(unreadable)")
        .to_string();
    match keyring.open(&sealed, CANARY_CONTEXT) {
        Ok(plain) if plain == CANARY => {}
        _ => {
            return Err(DaemonError::KeyMismatch {
                ours: keyring.current_key_id().to_string(),
                fleet,
            });
        }
    }
    if fleet != keyring.current_key_id() {
        let fresh = keyring.seal(CANARY, CANARY_CONTEXT)?;
        if store.canary().reseal(&sealed, &fresh).await? {
            info!(from = %fleet, to = %keyring.current_key_id(), "key canary resealed with the current at-rest key");
        }
    }
    Ok(())
}

fn load_keyring(config: &Config) -> Result<Keyring, DaemonError> {
    let current = match &config.security.at_rest_key {
        Some(secret) => secret.read()?,
        None => match credential_path("at-rest-key").filter(|p| p.exists()) {
            Some(path) => std::fs::read_to_string(&path).map_err(|source| DaemonError::Io {
                what: format!("credential {}", path.display()),
                source,
            })?,
            None => {
                let path: PathBuf = config.data_dir.join("at-rest.key");
                let (text, generated) = Keyring::load_or_generate(&path)?;
                if generated {
                    warn!(path = %path.display(), "generated a new at-rest encryption key; back it up with the database");
                }
                text
            }
        },
    };
    let previous = config
        .security
        .previous_keys
        .iter()
        .map(|s| s.read())
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Keyring::from_texts(&current, &previous)?)
}

/// A running daemon: its HTTP address and a handle to stop it.
pub struct Daemon {
    pub addr: SocketAddr,
    /// The MLLP listener's address, when `hl7.listen` is set.
    pub hl7_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), DaemonError>>,
}

impl Daemon {
    /// Asks the daemon to stop.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until it has stopped.
    pub async fn wait(self) -> Result<(), DaemonError> {
        match self.handle.await {
            Ok(result) => result,
            Err(e) => Err(DaemonError::Workers(e.to_string())),
        }
    }
}

/// Starts everything on `config.server.listen` and returns once the API is listening.
pub async fn start(config: Config) -> Result<Daemon, DaemonError> {
    let core = Core::open(config).await?;
    let listener = TcpListener::bind(core.config.server.listen)
        .await
        .map_err(|source| DaemonError::Io {
            what: format!("binding {}", core.config.server.listen),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| DaemonError::Io {
        what: "listener address".into(),
        source,
    })?;
    let shutdown = CancellationToken::new();
    let supervisor = Supervisor::new(shutdown.clone(), TaskMetrics::default());
    let templates = core.templates()?;
    let connectors = core.connectors(&templates)?;
    let deliverer = Arc::new(Deliverer::new(
        core.store.clone(),
        core.group.clone(),
        core.keyring.clone(),
        connectors.clone(),
        core.queue.clone(),
        core.config.clone(),
    ));

    let notifier = crate::notify::Notifier {
        store: core.store.clone(),
        messages: core.messages(),
        config: core.config.clone(),
        templates: templates.clone(),
    };
    notifier
        .init()
        .await
        .map_err(|e| DaemonError::Workers(format!("urgent notifier: {e}")))?;
    let notifier = supervisor.spawn("notifier", move |stop| notifier.clone().run(stop));
    let reminders = if core.config.reminders.enabled {
        let cron = ReminderCron::new(
            core.reminders(templates.clone()),
            format!("{}:{}", core.config.node_id(), ulid::Ulid::new()),
            core.config.reminders.cron_schedule()?,
        );
        Some(supervisor.spawn("reminders", move |stop| cron.clone().run(stop)))
    } else {
        None
    };

    // One LISTEN connection for the delivery workers and the events feed (see
    // `queue::wakeups`); the workers subscribe to it in `build_monitor`.
    let wakeups = QueueWakeups::new(Channel::NAMES.iter().map(|c| queue_name(c)));
    let events_listener = core.store.is_postgres().then(|| {
        let (store, wakeups) = (core.store.clone(), wakeups.clone());
        supervisor.spawn("pg-listener", move |stop| {
            crate::queue::wakeups::listen(store.clone(), wakeups.clone(), stop)
        })
    });
    let webhooks = if core.config.webhooks.dispatch {
        let dispatcher = crate::webhooks::dispatch::Dispatcher::new(
            core.store.clone(),
            core.keyring.clone(),
            core.config.clone(),
        )
        .map_err(|e| DaemonError::Workers(format!("webhook dispatcher: {e}")))?;
        Some(supervisor.spawn("webhooks", move |stop| dispatcher.clone().run(stop)))
    } else {
        None
    };

    let tenancy = Arc::new(crate::tenancy::Tenancy::from_config(&core.config)?);
    let direct_tenancy = tenancy.clone();
    let fax_inbound = crate::inbound::fax::FaxInbound::new(
        crate::intake::Intake {
            store: core.store.clone(),
            keyring: core.keyring.clone(),
            config: core.config.clone(),
        },
        tenancy.clone(),
        connectors.clone(),
        core.group.clone(),
    )
    .map_err(|e| DaemonError::Config(ConfigError::Invalid(format!("fax_inbound: {e}"))))?;
    let fax_job = connectors
        .http_connectors()
        .iter()
        .any(|c| c.is_fax())
        .then(|| {
            let job = fax_inbound.clone();
            supervisor.spawn("fax-inbound", move |stop| job.clone().run(stop))
        });
    let direct_inbound = Arc::new(
        core.direct_inbound(direct_tenancy)
            .map_err(|e| DaemonError::Config(ConfigError::Invalid(e.to_string())))?,
    );
    let mut app = core.app(templates.clone(), tenancy);
    app.inbound.direct = Some(direct_inbound.clone());
    app.events.closing = shutdown.child_token();
    let mut state = AppState::new(app, connectors.clone(), core.config.clone());
    state.tasks = supervisor.metrics.clone();
    let alerts_task = match crate::alerts::Alerter::new(
        core.store.clone(),
        core.config.clone(),
        state.app.ops.gauges.clone(),
        format!("{}:{}", core.config.node_id(), ulid::Ulid::new()),
    ) {
        Ok(Some(alerter)) => {
            Some(supervisor.spawn("alerts", move |stop| alerter.clone().run(stop)))
        }
        Ok(None) => None,
        Err(e) => return Err(ConfigError::Invalid(e.to_string()).into()),
    };
    let metrics_task = {
        let ops = state.app.ops.clone();
        let every = Duration::from_secs(core.config.metrics.refresh_secs.max(1));
        supervisor.spawn("metrics", move |stop| {
            ops.clone().refresh_metrics_regularly(every, stop)
        })
    };
    state.fax_inbound = Some(Arc::new(fax_inbound));
    if let Some(secret) = &core.config.server.metrics_token {
        let token = secret.read()?;
        if token.is_empty() {
            return Err(
                ConfigError::Invalid("server.metrics_token: the token is empty".into()).into(),
            );
        }
        state.metrics_token = Some(Arc::new(token));
    }
    core.config
        .webhooks
        .check_app_listen(core.store.is_postgres())
        .map_err(ConfigError::Invalid)?;
    let app_listen = if core.config.webhooks.app_listen.is_empty() {
        None
    } else {
        let mut channels = std::collections::BTreeMap::new();
        for entry in &core.config.webhooks.app_listen {
            let name = core
                .config
                .organization(&entry.organization)
                .display_name
                .unwrap_or_else(|| entry.organization.clone());
            let org = core
                .store
                .organizations()
                .ensure(&entry.organization, &name)
                .await?;
            channels.insert(entry.channel.clone(), org.id);
        }
        let (service, channels) = (state.app.app_events.clone(), Arc::new(channels));
        Some(supervisor.spawn("app-listen", move |stop| {
            crate::app_events::listen(service.clone(), channels.clone(), stop)
        }))
    };
    let hl7_intake = state.app.ops.hl7.clone();
    let http = tokio::spawn(http::serve(listener, state, shutdown.clone()));

    let (hl7, hl7_addr) = match core.config.hl7.listen {
        None => (None, None),
        Some(listen) => {
            let processor = Hl7Processor::new(
                core.store.clone(),
                core.keyring.clone(),
                core.config.hl7.clone(),
                &core
                    .config
                    .organization(&core.config.hl7.organization)
                    .phone_region,
                Some(core.group.clone()),
            )
            .await?;
            // The reprocess endpoints run archived messages through this same intake.
            let _ = hl7_intake.0.set(processor.clone());
            let listener = TcpListener::bind(listen)
                .await
                .map_err(|source| DaemonError::Io {
                    what: format!("binding the MLLP listener on {listen}"),
                    source,
                })?;
            let tls = crate::hl7::listener::tls_acceptor(&core.config.hl7)
                .map_err(|e| DaemonError::Config(ConfigError::Invalid(e)))?;
            let addr = listener.local_addr().ok();
            // A restarted accept loop takes a duplicate of the bound socket: the port stays
            // bound (and its backlog kept) across restarts.
            let socket = listener.into_std().map_err(|source| DaemonError::Io {
                what: "the MLLP listener".into(),
                source,
            })?;
            let accept = supervisor.spawn("hl7-listener", move |stop| {
                let listener = socket.try_clone().and_then(TcpListener::from_std);
                let (processor, tls) = (processor.clone(), tls.clone());
                async move {
                    crate::hl7::listener::serve(listener?, processor, tls, stop).await;
                    Ok::<(), std::io::Error>(())
                }
            });
            (Some(accept), addr)
        }
    };

    let sweeper = {
        let (store, queue) = (core.store.clone(), core.queue.clone());
        let interval = Duration::from_secs(core.config.queue.sweep_interval_secs.max(1));
        let stuck_after = Duration::from_secs(core.config.queue.stuck_after_secs.max(1));
        let routes = crate::queue::pause::Routes::of(&core.config);
        let node = core.config.node_id();
        supervisor.spawn("sweeper", move |stop| {
            // A new holder per start: a restart after a panic takes the lease over as a new
            // sweeper, so its recovery pass runs again.
            sweeper::Sweeper::new(
                store.clone(),
                queue.clone(),
                interval,
                stuck_after,
                routes.clone(),
                format!("{node}:{}", ulid::Ulid::new()),
            )
            .run(interval, stop)
        })
    };

    let retention = {
        let retention = crate::retention::Retention::new(
            core.store.clone(),
            core.config.retention.clone(),
            format!("{}:{}", core.config.node_id(), ulid::Ulid::new()),
        );
        supervisor.spawn("retention", move |stop| retention.clone().run(stop))
    };

    let reconciler = {
        let (store, connectors, config) =
            (core.store.clone(), connectors.clone(), core.config.clone());
        supervisor.spawn("reconciler", move |stop| {
            crate::queue::reconcile::run(store.clone(), connectors.clone(), config.clone(), stop)
        })
    };
    let mut bounces =
        crate::queue::bounces::spawn(&core.config, &core.store, &core.keyring, &supervisor);
    bounces.extend(crate::queue::direct::spawn(
        &core.config,
        &core.store,
        &supervisor,
        Some(direct_inbound),
    ));
    bounces.extend(crate::direct::mdn::spawn(
        &core.config,
        &core.mdns,
        &supervisor,
    ));

    let monitor = build_monitor(&core, deliverer, &wakeups);
    let workers_shutdown = shutdown.clone();
    let workers = tokio::spawn(async move {
        monitor
            .run_with_signal(async move {
                workers_shutdown.cancelled().await;
                Ok(())
            })
            .await
            .map_err(|e| DaemonError::Workers(e.to_string()))
    });

    info!(%addr, database = if core.store.is_postgres() { "postgres" } else { "sqlite" }, "switchboard is running");
    let store = core.store.clone();
    let token = shutdown.clone();
    let handle = tokio::spawn(async move {
        let http_result = http.await;
        token.cancel();
        let worker_result = workers.await;
        let _ = sweeper.await;
        let _ = reconciler.await;
        let _ = retention.await;
        let _ = metrics_task.await;
        let _ = notifier.await;
        for task in [events_listener, webhooks, app_listen, fax_job, alerts_task]
            .into_iter()
            .flatten()
        {
            let _ = task.await;
        }
        if let Some(reminders) = reminders {
            let _ = reminders.await;
        }
        for poller in bounces {
            let _ = poller.await;
        }
        if let Some(hl7) = hl7 {
            let _ = hl7.await;
        }
        store.close().await;
        info!("switchboard stopped");
        match http_result {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                return Err(DaemonError::Io {
                    what: "http server".into(),
                    source,
                });
            }
            Err(e) => return Err(DaemonError::Workers(e.to_string())),
        }
        match worker_result {
            Ok(result) => result,
            Err(e) => Err(DaemonError::Workers(e.to_string())),
        }
    });
    Ok(Daemon {
        addr,
        hl7_addr,
        shutdown,
        handle,
    })
}

/// One apalis worker per channel queue, named uniquely per process so that the jobs a dead
/// predecessor held are re-enqueued by apalis's heartbeat.
fn build_monitor(core: &Core, deliverer: Arc<Deliverer>, wakeups: &QueueWakeups) -> Monitor {
    let run_id = ulid::Ulid::new().to_string().to_lowercase();
    let node = core.config.node_id();
    let poll = Duration::from_millis(core.config.queue.poll_interval_ms.max(10));
    // A worker whose backend poll fails (the database unreachable, its pool timed out) ends;
    // without a restart its channel would stop delivering until the daemon restarts while the
    // sweeper kept re-enqueueing. Restart it, after a short pause so a database that is down
    // does not turn into a busy loop (the pause blocks only this rare path).
    let mut monitor = Monitor::new()
        .shutdown_timeout(Duration::from_secs(core.config.queue.shutdown_grace_secs))
        .should_restart(|worker, error| {
            warn!(worker = %worker.name(), restarts = worker.restarts(), error = %error, "delivery worker failed; restarting it");
            std::thread::sleep(Duration::from_millis(250));
            true
        });
    for channel in Channel::NAMES {
        // A channel no connector carries has no deliveries to work (they are refused at
        // accept): no worker. A delivery left from before the channel was removed waits, as
        // if paused, until it is configured again.
        if core.config.connector_for(channel).is_none() {
            continue;
        }
        let concurrency = core.config.channel(channel).concurrency;
        let name = format!("{node}:{channel}:{run_id}");
        let work = ChannelWork::new(deliverer.clone(), concurrency);
        match &core.queue {
            JobQueue::Sqlite(storages) => {
                let Some(storage) = storages.get(channel).cloned() else {
                    continue;
                };
                monitor = monitor.register(move |_| {
                    WorkerBuilder::new(name.clone())
                        .backend(
                            storage
                                .clone()
                                .poll_with_strategy(Strategy::new().apply(Interval::new(poll))),
                        )
                        .data(work.clone())
                        .concurrency(concurrency)
                        .build(deliver_job)
                });
            }
            JobQueue::Postgres(storages) => {
                let Some(storage) = storages.get(channel).cloned() else {
                    continue;
                };
                let queue = queue_name(channel);
                let wakeups = wakeups.clone();
                monitor = monitor.register(move |_| {
                    WorkerBuilder::new(name.clone())
                        .backend(
                            storage.clone().poll_with_strategy(
                                Strategy::new()
                                    .stream(wakeups.subscribe(&queue))
                                    .apply(Interval::new(poll)),
                            ),
                        )
                        .data(work.clone())
                        .concurrency(concurrency)
                        .build(deliver_job)
                });
            }
        }
    }
    monitor
}

/// Runs until SIGTERM or SIGINT, telling systemd when ready and when stopping.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    let daemon = start(config).await?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    wait_for_signal().await;
    info!("shutting down: draining in-flight deliveries");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    daemon.shutdown();
    daemon.wait().await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
