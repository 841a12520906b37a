//! The connector engine: HTTP providers described by manifests (`connectors/*.toml`, see
//! [`manifest`]) instead of code. One [`HttpConnector`] per `[connectors.<name>] kind = "http"`
//! entry: it sends deliveries (a [`Channel`]), reads the provider's status callbacks and inbound
//! messages, verifies their signatures, and looks messages up for reconciliation.
//!
//! Credentials come from the connector config (files or systemd credentials), never from
//! manifests.

pub mod auth;
pub mod manifest;
pub mod payload;
mod registry;
pub mod signature;

pub use registry::Connectors;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use minijinja::Environment;
use serde::Serialize;
use tracing::{debug, warn};

use crate::channels::fax::{FaxDesk, FaxDocument, FaxFile};
use crate::channels::{Channel, ChannelError, OutboundDelivery, SendOutcome};
use crate::config::{HttpConnectorConfig, Secret};
use crate::domain::DeliveryStatus;
use crate::ratelimit::RateLimiter;
use auth::AuthState;
use manifest::{Encoding, Manifest, ManifestError};
use payload::Payload;
use signature::{SignatureError, SignedRequest};

/// Longest SMS we send (segments); longer texts are refused, never truncated.
pub const MAX_SMS_SEGMENTS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("connector {name}: {reason}")]
    Config { name: String, reason: String },
}

/// A provider status report read from a callback or a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    pub provider_ref: String,
    /// The provider's id of this webhook event, when the manifest says where it is.
    pub event_id: Option<String>,
    /// The provider's own word for the state.
    pub provider_status: String,
    /// Ours, when the manifest maps it.
    pub status: Option<DeliveryStatus>,
    pub error: Option<String>,
    /// Pages sent, when the provider says (fax).
    pub pages: Option<u32>,
    /// A failure the manifest lists in `transient_errors` (busy, no answer): worth another
    /// attempt later.
    pub transient: bool,
}

/// An inbound message read from a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    pub provider_ref: Option<String>,
    pub from: String,
    pub to: String,
    pub body: String,
    pub media: Vec<String>,
}

/// An inbound fax read from a webhook (the document itself is posted, or at `media_url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundFaxEvent {
    /// The provider's fax id.
    pub provider_ref: String,
    /// The webhook event's id, when the provider numbers events.
    pub event_id: Option<String>,
    pub from: String,
    pub to: String,
    pub pages: Option<i64>,
    pub partial: bool,
    pub provider_status: Option<String>,
    /// A temporary URL to download the document from (not fetched here).
    pub media_url: Option<String>,
    /// Which file part of the multipart body holds the document.
    pub document_part: Option<String>,
}

/// A call-script request: the provider's call id, whether a machine answered, and the keys
/// pressed (when it posts a `<Gather>`'s result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEvent {
    pub provider_ref: String,
    pub machine: bool,
    pub digits: Option<String>,
}

/// Why a webhook was not taken.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("forged or unsigned: {0}")]
    Signature(#[from] SignatureError),
    #[error("{0}")]
    Malformed(String),
    /// The body is not the form or JSON the manifest says.
    #[error("{0}")]
    Payload(#[from] payload::PayloadError),
    #[error("this connector does not take {0} webhooks")]
    NotSupported(&'static str),
}

/// One configured HTTP provider.
pub struct HttpConnector {
    name: String,
    manifest: Manifest,
    config: HttpConnectorConfig,
    credentials: BTreeMap<String, String>,
    base_url: String,
    templates: Environment<'static>,
    client: reqwest::Client,
    limiter: Option<RateLimiter>,
    auth: AuthState,
    /// Serves fax documents and records faxes (fax connectors only).
    fax_desk: Option<Arc<dyn FaxDesk>>,
}

impl std::fmt::Debug for HttpConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConnector")
            .field("name", &self.name)
            .field("manifest", &self.manifest.name)
            .finish()
    }
}

#[derive(Serialize)]
struct Context<'a> {
    to: &'a str,
    body: &'a str,
    media_url: &'a str,
    status_callback_url: &'a str,
    call_url: &'a str,
    delivery_id: &'a str,
    provider_ref: &'a str,
    text: &'a str,
    base_url: &'a str,
    params: &'a BTreeMap<String, String>,
    credentials: &'a BTreeMap<String, String>,
}

impl HttpConnector {
    pub fn new(name: &str, config: &HttpConnectorConfig) -> Result<Self, ConnectorError> {
        let manifest = Manifest::load(&config.manifest)?;
        let cfg_err = |reason: String| ConnectorError::Config {
            name: name.to_string(),
            reason,
        };
        let mut credentials = BTreeMap::new();
        for (key, secret) in &config.credentials {
            let value = Secret::read(secret).map_err(|e| cfg_err(e.to_string()))?;
            credentials.insert(key.clone(), value.trim().to_string());
        }
        let mut templates = Environment::new();
        templates.set_auto_escape_callback(|name| {
            if name.ends_with(".xml") {
                minijinja::AutoEscape::Html
            } else {
                minijinja::AutoEscape::None
            }
        });
        let mut add = |key: String, source: &str| {
            templates
                .add_template_owned(key.clone(), source.to_string())
                .map_err(|e| cfg_err(format!("template {key}: {e}")))
        };
        add("send.url".into(), &manifest.send.url)?;
        for (field, source) in &manifest.send.fields {
            add(format!("send.fields.{field}"), source)?;
        }
        for (header, source) in &manifest.send.headers {
            add(format!("send.headers.{header}"), source)?;
        }
        for (key, source) in manifest_auth_templates(&manifest) {
            add(format!("auth.{key}"), &source)?;
        }
        if let Some(query) = &manifest.query {
            add("query.url".into(), &query.url)?;
        }
        if let Some(refresh) = manifest
            .inbound
            .as_ref()
            .and_then(|i| i.refresh_url.as_ref())
        {
            add("inbound.refresh_url".into(), refresh)?;
        }
        if let Some(voice) = &manifest.voice {
            add("voice.prompt.xml".into(), &voice.prompt)?;
            add("voice.say.xml".into(), &voice.say)?;
        }
        if let Some(inbound) = &manifest.inbound {
            if let Some(reply) = &inbound.reply {
                add("inbound.reply.xml".into(), reply)?;
            }
            if let Some(none) = &inbound.no_reply {
                add("inbound.no_reply.xml".into(), none)?;
            }
        }
        let client = crate::http_client::builder()
            .timeout(Duration::from_secs(config.timeout_secs.max(1)))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| cfg_err(e.to_string()))?;
        let base_url = config
            .base_url
            .clone()
            .unwrap_or_else(|| manifest.base_url.clone())
            .trim_end_matches('/')
            .to_string();
        Ok(Self {
            name: name.to_string(),
            auth: AuthState::new(manifest.auth.clone()),
            manifest,
            config: config.clone(),
            credentials,
            base_url,
            templates,
            client,
            // Evenly spaced: providers limit per sending number (Twilio: one message a second).
            limiter: RateLimiter::per_second(config.rate_per_sec, 1),
            fax_desk: None,
        })
    }

    /// Gives a fax connector the office that serves its documents and records its faxes.
    pub fn with_fax_desk(mut self, desk: Arc<dyn FaxDesk>) -> Self {
        self.fax_desk = Some(desk);
        self
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The public base URL webhooks are addressed to, if configured.
    pub fn public_url(&self) -> Option<&str> {
        self.config.public_url.as_deref()
    }

    pub fn reconcile_after_secs(&self) -> u64 {
        self.config.reconcile_after_secs
    }

    /// Which organization inbound webhooks belong to (slug), if configured.
    pub fn organization(&self) -> Option<&str> {
        self.config.organization.as_deref()
    }

    fn context<'a>(
        &'a self,
        to: &'a str,
        body: &'a str,
        delivery_id: &'a str,
        provider_ref: &'a str,
        callback: &'a str,
        text: &'a str,
    ) -> Context<'a> {
        Context {
            to,
            body,
            media_url: "",
            status_callback_url: callback,
            call_url: "",
            delivery_id,
            provider_ref,
            text,
            base_url: &self.base_url,
            params: &self.config.params,
            credentials: &self.credentials,
        }
    }

    fn render(&self, key: &str, context: &Context<'_>) -> Result<String, ChannelError> {
        let template = self
            .templates
            .get_template(key)
            .map_err(|e| ChannelError::Permanent(format!("connector manifest: {e}")))?;
        template
            .render(minijinja::value::Serde(context))
            .map(|s| s.trim().to_string())
            .map_err(|e| ChannelError::Permanent(format!("connector manifest {key}: {e}")))
    }

    /// Where the provider should post status callbacks for this delivery. The delivery's
    /// reference token (not its id) is in the URL so a callback that beats our own `sent`
    /// record still finds it; the hook binds it to this connector.
    pub fn status_callback_url(&self, reference: &str) -> String {
        match (&self.config.public_url, &self.manifest.status) {
            (Some(public), Some(_)) => format!(
                "{}/hooks/{}/status?delivery={reference}",
                public.trim_end_matches('/'),
                self.name
            ),
            _ => String::new(),
        }
    }

    async fn request(
        &self,
        method: &str,
        url: &str,
        context: &Context<'_>,
    ) -> Result<reqwest::RequestBuilder, ChannelError> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| ChannelError::Permanent(format!("connector manifest: method {method}")))?;
        let builder = self.client.request(method, url);
        self.auth
            .apply(
                builder,
                &|key| self.render(&format!("auth.{key}"), context),
                &self.client,
            )
            .await
    }

    async fn send_message(&self, delivery: &OutboundDelivery) -> Result<SendOutcome, ChannelError> {
        let region = &delivery.sender.settings.phone_region;
        let to = if self.manifest.channel.is_phone() {
            crate::phone::to_e164(&delivery.recipient, region).map_err(|e| {
                ChannelError::Permanent(format!("recipient is not a valid phone number: {e}"))
            })?
        } else {
            delivery.recipient.clone()
        };
        if self.manifest.channel == crate::domain::Channel::Sms {
            let count = crate::phone::segments(&delivery.body);
            if count.segments > MAX_SMS_SEGMENTS {
                return Err(ChannelError::Permanent(format!(
                    "text needs {} SMS segments; the limit is {MAX_SMS_SEGMENTS}",
                    count.segments
                )));
            }
        }
        let fax = match self.manifest.channel {
            crate::domain::Channel::Fax => Some(FaxDocument::compose(delivery)?),
            _ => None,
        };
        if let Some(limiter) = &self.limiter {
            limiter.acquire().await;
        }
        let callback = self.status_callback_url(&delivery.reference);
        let send = &self.manifest.send;
        // The document as file parts (each file, or the whole fax merged into one PDF), or
        // served at a media URL; either way within the provider's size limit.
        let mut file_parts: Vec<(String, FaxFile)> = Vec::new();
        let mut media_url = String::new();
        if let (Some(document), Some(how)) = (&fax, send.document.as_deref()) {
            if how == "media_url" {
                let pdf = document.single_pdf()?;
                self.within_document_limit(pdf.len())?;
                media_url = self.publish(delivery, pdf).await?;
            } else if send.merge_documents {
                let pdf = document.single_pdf()?;
                self.within_document_limit(pdf.len())?;
                file_parts.push((
                    how.to_string(),
                    FaxFile {
                        filename: "fax.pdf".into(),
                        content_type: "application/pdf".into(),
                        data: pdf.into(),
                        pages: document.pages,
                    },
                ));
            } else {
                self.within_document_limit(document.files.iter().map(|f| f.data.len()).sum())?;
                file_parts.extend(document.files.iter().map(|f| (how.to_string(), f.clone())));
            }
        }
        let call_url = match self.manifest.channel {
            crate::domain::Channel::Voice => self.call_url(&delivery.reference, None)?,
            _ => String::new(),
        };
        let mut context = self.context(&to, &delivery.body, &delivery.reference, "", &callback, "");
        context.media_url = &media_url;
        context.call_url = &call_url;
        let url = self.render("send.url", &context)?;
        let mut fields: Vec<(String, String)> = Vec::new();
        for field in self.manifest.send.fields.keys() {
            let value = self.render(&format!("send.fields.{field}"), &context)?;
            if !value.is_empty() {
                fields.push((field.clone(), value));
            }
        }
        let mut request = self
            .request(&self.manifest.send.method, &url, &context)
            .await?;
        for header in self.manifest.send.headers.keys() {
            let value = self.render(&format!("send.headers.{header}"), &context)?;
            if !value.is_empty() {
                request = request.header(header.as_str(), value);
            }
        }
        request = match self.manifest.send.encoding {
            Encoding::Form => request.form(&fields),
            Encoding::Json => request.json(&json_body(&fields)),
            Encoding::Multipart => {
                let mut form = reqwest::multipart::Form::new();
                for (k, v) in fields {
                    form = form.text(k, v);
                }
                for (name, file) in file_parts {
                    let bytes = reqwest::multipart::Part::stream(reqwest::Body::from(file.data))
                        .file_name(file.filename)
                        .mime_str(&file.content_type)
                        .map_err(|_| {
                            ChannelError::Permanent(format!(
                                "attachment type {}",
                                file.content_type
                            ))
                        })?;
                    form = form.part(name, bytes);
                }
                request.multipart(form)
            }
        };
        let response = request.send().await.map_err(|e| {
            let reason = format!("{}: {}", self.name, transport_error(&e));
            // A connection never made carried nothing; any other failure may have come after
            // the provider took the request.
            if e.is_connect() {
                ChannelError::Transient(reason)
            } else {
                ChannelError::Unanswered(reason)
            }
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            ChannelError::Unanswered(format!(
                "{}: reading the answer: {}",
                self.name,
                transport_error(&e)
            ))
        })?;
        let answer = Payload::parse(Encoding::Json, &bytes)
            .unwrap_or(Payload::Json(serde_json::Value::Null));
        let spec = &self.manifest.send.response;
        if status.is_success() {
            let provider_ref = answer.get(&spec.id).ok_or_else(|| {
                ChannelError::Transient(format!(
                    "{}: HTTP {} without a message id",
                    self.name,
                    status.as_u16()
                ))
            })?;
            let provider_status = spec.status.as_deref().and_then(|s| answer.get(s));
            let mapped = provider_status
                .as_deref()
                .and_then(|s| spec.status_map.get(s))
                .and_then(|s| DeliveryStatus::parse(s));
            debug!(delivery_id = %delivery.delivery_id, connector = %self.name, provider_ref = %provider_ref, "provider accepted");
            if let (Some(document), Some(desk)) = (&fax, &self.fax_desk)
                && let Err(e) = desk
                    .sent(&self.name, &provider_ref, delivery, document.pages)
                    .await
            {
                // The provider has the fax: a retry would send it twice. Callbacks (matched by
                // the provider's id on the delivery) create the record later.
                warn!(delivery_id = %delivery.delivery_id, connector = %self.name, error = %e, "fax record not written");
            }
            return match mapped {
                Some(DeliveryStatus::Failed) => Err(ChannelError::Permanent(format!(
                    "{}: provider reports {}",
                    self.name,
                    provider_status.unwrap_or_default()
                ))),
                Some(DeliveryStatus::Delivered) => Ok(SendOutcome {
                    status: DeliveryStatus::Delivered,
                    provider_ref: Some(provider_ref),
                }),
                _ => Ok(SendOutcome {
                    status: DeliveryStatus::Sent,
                    provider_ref: Some(provider_ref),
                }),
            };
        }
        let code = spec.error_code.as_deref().and_then(|p| answer.get(p));
        // Provider messages quote the number ("The 'To' number +1555... is not valid"): the
        // reason is stored and logged, so numbers are masked.
        let message = redact_numbers(
            &spec
                .error_message
                .as_deref()
                .and_then(|p| answer.get(p))
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string()),
        );
        let reason = match &code {
            Some(code) => format!(
                "{}: HTTP {} code {code}: {message}",
                self.name,
                status.as_u16()
            ),
            None => format!("{}: HTTP {}: {message}", self.name, status.as_u16()),
        };
        let transient = match &code {
            Some(code) if spec.permanent_codes.contains(code) => false,
            Some(code) if spec.transient_codes.contains(code) => true,
            _ => spec.transient_http.contains(&status.as_u16()) || status.is_server_error(),
        };
        warn!(delivery_id = %delivery.delivery_id, connector = %self.name, http = status.as_u16(), code = code.as_deref().unwrap_or(""), transient, "provider refused");
        if transient {
            Err(ChannelError::Transient(reason))
        } else {
            Err(ChannelError::Permanent(reason))
        }
    }

    /// Verifies a webhook's signature. `url` is the URL the provider called.
    pub fn verify(
        &self,
        url: &str,
        header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
        payload: &Payload,
    ) -> Result<(), SignatureError> {
        signature::verify(
            &self.manifest.signature,
            &self.credentials,
            &SignedRequest {
                url,
                header,
                body,
                payload,
                now_secs: chrono::Utc::now().timestamp(),
            },
        )
    }

    /// Reads a status callback (after [`verify`](Self::verify)). `Ok(None)` when the body names
    /// no message (an event this connector does not track).
    pub fn read_status(&self, payload: &Payload) -> Result<Option<StatusReport>, WebhookError> {
        let spec = self
            .manifest
            .status
            .as_ref()
            .ok_or(WebhookError::NotSupported("status"))?;
        let report = match (payload.get(&spec.id), payload.get(&spec.status)) {
            (Some(id), Some(status)) => {
                let error = match (
                    spec.error_code.as_deref().and_then(|p| payload.get(p)),
                    spec.error_message.as_deref().and_then(|p| payload.get(p)),
                ) {
                    (Some(c), Some(m)) => Some(format!("code {c}: {m}")),
                    (Some(c), None) => Some(format!("code {c}")),
                    (None, m) => m,
                };
                let mapped = spec.map.get(&status).and_then(|s| DeliveryStatus::parse(s));
                let code = spec.error_code.as_deref().and_then(|p| payload.get(p));
                let message = spec.error_message.as_deref().and_then(|p| payload.get(p));
                Some(StatusReport {
                    provider_ref: id,
                    event_id: spec.event_id.as_deref().and_then(|p| payload.get(p)),
                    transient: mapped == Some(DeliveryStatus::Failed)
                        && is_transient(
                            &spec.transient_errors,
                            &[Some(status.as_str()), code.as_deref()],
                            message.as_deref(),
                        ),
                    pages: spec.pages.as_deref().and_then(|p| pages(payload, p)),
                    status: mapped,
                    provider_status: status,
                    error,
                })
            }
            _ => None,
        };
        Ok(report)
    }

    /// A permanent failure when a fax's document bytes exceed what the provider takes.
    fn within_document_limit(&self, bytes: usize) -> Result<(), ChannelError> {
        match self.manifest.send.max_document_bytes {
            Some(most) if bytes as u64 > most => Err(ChannelError::Permanent(format!(
                "{}: the fax document is {bytes} bytes; the provider takes at most {most}",
                self.name
            ))),
            _ => Ok(()),
        }
    }

    /// Serves the fax (one PDF) and returns its URL.
    async fn publish(
        &self,
        delivery: &OutboundDelivery,
        pdf: Vec<u8>,
    ) -> Result<String, ChannelError> {
        let desk = self.fax_desk.as_ref().ok_or_else(|| {
            ChannelError::Permanent(format!("{}: no document service for media URLs", self.name))
        })?;
        let public = self.config.public_url.as_deref().ok_or_else(|| {
            ChannelError::Permanent(format!(
                "{}: public_url is needed to serve the fax document",
                self.name
            ))
        })?;
        desk.publish(
            public,
            delivery,
            "application/pdf",
            pdf,
            self.config.media_ttl_secs,
        )
        .await
    }

    /// The encoding webhooks of this kind use (to parse before verifying).
    pub fn webhook_encoding(&self, kind: &str) -> Encoding {
        match kind {
            "status" => self.manifest.status.as_ref().map(|s| s.encoding),
            "voice" => self.manifest.voice.as_ref().map(|s| s.encoding),
            _ => self.manifest.inbound.as_ref().map(|s| s.encoding),
        }
        .unwrap_or_default()
    }

    /// Reads an inbound message. `Ok(None)` for events that are not inbound messages.
    pub fn read_inbound(&self, payload: &Payload) -> Result<Option<InboundMessage>, WebhookError> {
        let spec = self
            .manifest
            .inbound
            .as_ref()
            .ok_or(WebhookError::NotSupported("inbound"))?;
        if let Some((location, wanted)) = &spec.only_when
            && payload.get(location).as_deref() != Some(wanted.as_str())
        {
            return Ok(None);
        }
        let from = payload
            .get(&spec.from)
            .ok_or_else(|| WebhookError::Malformed(format!("no sender at {}", spec.from)))?;
        Ok(Some(InboundMessage {
            provider_ref: payload.get(&spec.id),
            to: payload.get(&spec.to).unwrap_or_default(),
            body: payload.get(&spec.body).unwrap_or_default(),
            media: spec
                .media
                .as_deref()
                .map(|m| payload.media(m))
                .unwrap_or_default(),
            from,
        }))
    }

    /// Whether this connector carries faxes (its inbound webhooks are faxes).
    pub fn is_fax(&self) -> bool {
        self.manifest.channel == crate::domain::Channel::Fax
    }

    /// Reads an inbound fax. `Ok(None)` for events that are not received faxes.
    pub fn read_fax(&self, payload: &Payload) -> Result<Option<InboundFaxEvent>, WebhookError> {
        let spec = self
            .manifest
            .inbound
            .as_ref()
            .ok_or(WebhookError::NotSupported("inbound"))?;
        if let Some((location, wanted)) = &spec.only_when
            && payload.get(location).as_deref() != Some(wanted.as_str())
        {
            return Ok(None);
        }
        let required = |location: &str, what: &str| {
            payload
                .get(location)
                .ok_or_else(|| WebhookError::Malformed(format!("no {what} at {location}")))
        };
        let provider_ref = required(&spec.id, "fax id")?;
        let from = payload.get(&spec.from).unwrap_or_default();
        let to = required(&spec.to, "number it was sent to")?;
        let provider_status = spec.status.as_deref().and_then(|s| payload.get(s));
        let partial = spec
            .partial
            .as_deref()
            .and_then(|p| payload.get(p))
            .is_some_and(|v| v == "true")
            || provider_status
                .as_deref()
                .is_some_and(|s| spec.partial_statuses.iter().any(|p| p == s));
        let event = InboundFaxEvent {
            provider_ref,
            event_id: spec.event_id.as_deref().and_then(|p| payload.get(p)),
            from,
            to,
            pages: spec
                .pages
                .as_deref()
                .and_then(|p| payload.get(p))
                .and_then(|p| p.parse().ok()),
            partial,
            provider_status,
            media_url: spec.media_url.as_deref().and_then(|p| payload.get(p)),
            document_part: spec.document.clone(),
        };
        if event.media_url.is_none()
            && !event
                .document_part
                .as_deref()
                .is_some_and(|part| payload.files().iter().any(|f| f.name == part))
        {
            return Err(WebhookError::Malformed(
                "the fax has neither a document part nor a media URL".into(),
            ));
        }
        Ok(Some(event))
    }

    /// Whether the manifest lists `host` among the hosts fax media may come from.
    pub fn media_host_listed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.manifest.inbound.as_ref().is_some_and(|spec| {
            spec.media_hosts.iter().any(|listed| {
                let listed = listed.trim_end_matches('.').to_ascii_lowercase();
                match listed.strip_prefix("*.") {
                    Some(suffix) => host.ends_with(&format!(".{suffix}")),
                    None => host == listed,
                }
            })
        })
    }

    /// Asks the provider for a fresh media URL of a received fax whose URL expired: the
    /// manifest's `refresh_url`, then its `[query]` URL read at `refreshed_media_url`.
    /// `Ok(None)` when the manifest says nothing of refreshing.
    pub async fn refresh_media(&self, provider_ref: &str) -> Result<Option<String>, ChannelError> {
        let Some(spec) = self.manifest.inbound.as_ref() else {
            return Ok(None);
        };
        if spec.refresh_url.is_none() {
            return Ok(None);
        }
        let context = self.context("", "", "", provider_ref, "", "");
        let url = self.render("inbound.refresh_url", &context)?;
        let response = self
            .request("POST", &url, &context)
            .await?
            .send()
            .await
            .map_err(|e| ChannelError::Transient(transport_error(&e)))?;
        if !response.status().is_success() {
            return Err(ChannelError::Transient(format!(
                "{}: media refresh HTTP {}",
                self.name,
                response.status().as_u16()
            )));
        }
        let (Some(query), Some(pointer)) = (&self.manifest.query, &spec.refreshed_media_url) else {
            return Ok(None);
        };
        let url = self.render("query.url", &context)?;
        let response = self
            .request(&query.method, &url, &context)
            .await?
            .send()
            .await
            .map_err(|e| ChannelError::Transient(transport_error(&e)))?;
        if !response.status().is_success() {
            return Err(ChannelError::Transient(format!(
                "{}: fax lookup HTTP {}",
                self.name,
                response.status().as_u16()
            )));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ChannelError::Transient(transport_error(&e)))?;
        let payload = Payload::parse(Encoding::Json, &bytes)
            .map_err(|e| ChannelError::Transient(e.to_string()))?;
        Ok(payload.get(pointer))
    }

    /// The webhook answer: `(content type, body)`, carrying `reply` when the manifest can (TwiML).
    /// `None` when the provider expects an empty answer; a reply then goes out as a message.
    pub fn inbound_answer(&self, reply: Option<&str>) -> Option<(String, String)> {
        let spec = self.manifest.inbound.as_ref()?;
        let content_type = spec.reply_content_type.clone()?;
        let key = match reply {
            Some(_) if spec.reply.is_some() => "inbound.reply.xml",
            _ if spec.no_reply.is_some() => "inbound.no_reply.xml",
            _ => return None,
        };
        let text = reply.unwrap_or("");
        let context = self.context("", "", "", "", "", text);
        let body = self.render(key, &context).ok()?;
        Some((content_type, body))
    }

    /// Whether webhook answers carry replies (else replies are sent as messages).
    pub fn replies_inline(&self) -> bool {
        self.manifest
            .inbound
            .as_ref()
            .is_some_and(|i| i.reply.is_some() && i.reply_content_type.is_some())
    }

    /// Where the provider fetches the script of the call carrying delivery `reference` (its
    /// reference token, never its id), or posts the key pressed at `step` (`gather-1`, ...).
    pub fn call_url(&self, reference: &str, step: Option<&str>) -> Result<String, ChannelError> {
        let public = self.config.public_url.as_deref().ok_or_else(|| {
            ChannelError::Permanent(format!(
                "{}: public_url is needed to serve the call's script",
                self.name
            ))
        })?;
        let mut url = format!(
            "{}/hooks/{}/voice?delivery={reference}",
            public.trim_end_matches('/'),
            self.name
        );
        if let Some(step) = step {
            url.push_str("&step=");
            url.push_str(step);
        }
        Ok(url)
    }

    /// Reads a call-script request (after [`verify`](Self::verify)).
    pub fn read_call(&self, payload: &Payload) -> Result<CallEvent, WebhookError> {
        let spec = self
            .manifest
            .voice
            .as_ref()
            .ok_or(WebhookError::NotSupported("voice"))?;
        let provider_ref = payload
            .get(&spec.call_id)
            .ok_or_else(|| WebhookError::Malformed(format!("no call id at {}", spec.call_id)))?;
        let machine = spec
            .answered_by
            .as_deref()
            .and_then(|p| payload.get(p))
            .is_some_and(|who| spec.machine_answers.contains(&who));
        Ok(CallEvent {
            provider_ref,
            machine,
            digits: payload.get(&spec.digits),
        })
    }

    /// A call script in the provider's format: `(content type, body)`. `action_url`: read
    /// `text`, then wait for a key posted there; `None`: read `text` and hang up.
    pub fn call_script(
        &self,
        text: &str,
        language: &str,
        action_url: Option<&str>,
    ) -> Result<(String, String), WebhookError> {
        let spec = self
            .manifest
            .voice
            .as_ref()
            .ok_or(WebhookError::NotSupported("voice"))?;
        let key = match action_url {
            Some(_) => "voice.prompt.xml",
            None => "voice.say.xml",
        };
        let template = self
            .templates
            .get_template(key)
            .map_err(|e| WebhookError::Malformed(format!("connector manifest: {e}")))?;
        let body = template
            .render(minijinja::context! {
                text => text,
                language => language,
                action_url => action_url.unwrap_or_default(),
            })
            .map_err(|e| WebhookError::Malformed(format!("connector manifest {key}: {e}")))?;
        Ok((spec.content_type.clone(), body))
    }

    /// Asks the provider for the message's current state (reconciliation).
    pub async fn lookup(&self, provider_ref: &str) -> Result<Option<StatusReport>, ChannelError> {
        let Some(query) = &self.manifest.query else {
            return Ok(None);
        };
        let context = self.context("", "", "", provider_ref, "", "");
        let url = self.render("query.url", &context)?;
        let response = self
            .request(&query.method, &url, &context)
            .await?
            .send()
            .await
            .map_err(|e| ChannelError::Transient(transport_error(&e)))?;
        if !response.status().is_success() {
            return Err(ChannelError::Transient(format!(
                "{}: lookup HTTP {}",
                self.name,
                response.status().as_u16()
            )));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ChannelError::Transient(transport_error(&e)))?;
        let payload = Payload::parse(Encoding::Json, &bytes)
            .map_err(|e| ChannelError::Transient(e.to_string()))?;
        Ok(payload.get(&query.status).map(|status| {
            let mapped = self
                .manifest
                .status
                .as_ref()
                .and_then(|s| s.map.get(&status))
                .or_else(|| self.manifest.send.response.status_map.get(&status))
                .and_then(|s| DeliveryStatus::parse(s));
            let code = query.error_code.as_deref().and_then(|p| payload.get(p));
            let transient_errors = self
                .manifest
                .status
                .as_ref()
                .map(|s| s.transient_errors.as_slice())
                .unwrap_or_default();
            StatusReport {
                event_id: None,
                provider_ref: provider_ref.to_string(),
                transient: mapped == Some(DeliveryStatus::Failed)
                    && is_transient(
                        transient_errors,
                        &[Some(status.as_str()), code.as_deref()],
                        None,
                    ),
                pages: query.pages.as_deref().and_then(|p| pages(&payload, p)),
                status: mapped,
                error: code.map(|c| format!("code {c}")),
                provider_status: status,
            }
        }))
    }
}

#[async_trait::async_trait]
impl Channel for HttpConnector {
    fn name(&self) -> &str {
        &self.name
    }

    fn external(&self) -> bool {
        true
    }

    async fn send(&self, delivery: &OutboundDelivery) -> Result<SendOutcome, ChannelError> {
        self.send_message(delivery).await
    }
}

/// Whether a failure is one the manifest lists as worth another attempt: its provider state or
/// error code is listed, or its reason contains a listed phrase (case-insensitive).
fn is_transient(listed: &[String], codes: &[Option<&str>], message: Option<&str>) -> bool {
    let lower = |s: &str| s.to_ascii_lowercase();
    listed.iter().any(|entry| {
        let entry = lower(entry);
        codes.iter().flatten().any(|c| lower(c) == entry)
            || message.is_some_and(|m| lower(m).contains(&entry))
    })
}

/// A page count at `location` (a number, bounded).
fn pages(payload: &Payload, location: &str) -> Option<u32> {
    payload
        .get(location)?
        .parse::<u32>()
        .ok()
        .filter(|n| *n <= 100_000)
}

fn manifest_auth_templates(manifest: &Manifest) -> Vec<(String, String)> {
    use manifest::Auth;
    match &manifest.auth {
        Auth::None => vec![],
        Auth::Basic { username, password } => vec![
            ("username".into(), username.clone()),
            ("password".into(), password.clone()),
        ],
        Auth::Bearer { token } => vec![("token".into(), token.clone())],
        Auth::Header { value, .. } => vec![("value".into(), value.clone())],
        Auth::Oauth2ClientCredentials {
            token_url,
            client_id,
            client_secret,
            ..
        } => vec![
            ("token_url".into(), token_url.clone()),
            ("client_id".into(), client_id.clone()),
            ("client_secret".into(), client_secret.clone()),
        ],
    }
}

/// A JSON body from rendered fields: `a.b` nests, `x[]` makes an array.
fn json_body(fields: &[(String, String)]) -> serde_json::Value {
    let mut root = serde_json::Map::new();
    for (name, value) in fields {
        let (name, array) = match name.strip_suffix("[]") {
            Some(n) => (n, true),
            None => (name.as_str(), false),
        };
        let value = if array {
            serde_json::Value::Array(vec![serde_json::Value::String(value.clone())])
        } else {
            serde_json::Value::String(value.clone())
        };
        let mut parts: Vec<&str> = name.split('.').collect();
        let last = parts.pop().unwrap_or(name);
        let mut node = &mut root;
        for part in parts {
            let entry = node
                .entry(part.to_string())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if !entry.is_object() {
                *entry = serde_json::Value::Object(Default::default());
            }
            match entry {
                serde_json::Value::Object(map) => node = map,
                _ => unreachable!("just made an object"),
            }
        }
        node.insert(last.to_string(), value);
    }
    serde_json::Value::Object(root)
}

/// Masks runs of 6 or more digits (phone numbers, account ids) in provider text.
pub fn redact_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let digits = run.chars().filter(char::is_ascii_digit).count();
        let end = run.rfind(|c: char| c.is_ascii_digit()).map_or(0, |i| i + 1);
        if digits >= 6 {
            out.push_str("[number]");
            out.push_str(&run[end..]);
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        let continues =
            c.is_ascii_digit() || (!run.is_empty() && matches!(c, ' ' | '-' | '(' | ')' | '.'));
        if c.is_ascii_digit() || (run.is_empty() && c == '+') || continues {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// A transport error without the URL (which may carry account ids).
fn transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else if e.is_body() || e.is_decode() {
        "bad answer body".into()
    } else {
        "request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifests_load() {
        for (name, _) in manifest::BUILTIN {
            let m = Manifest::load(name).unwrap();
            assert!(m.status.is_some() && m.query.is_some());
            match m.channel.as_str() {
                "sms" => assert!(m.inbound.is_some()),
                "fax" => assert!(m.send.document.is_some()),
                "voice" => assert!(m.voice.is_some()),
                other => panic!("{other}"),
            }
        }
    }

    #[test]
    fn provider_text_loses_phone_numbers() {
        assert_eq!(
            redact_numbers("The 'To' number +15005550001 is not a valid phone number."),
            "The 'To' number [number] is not a valid phone number."
        );
        assert_eq!(redact_numbers("code 21211"), "code 21211");
    }

    #[test]
    fn json_bodies_nest_and_make_arrays() {
        let body = json_body(&[
            ("to".into(), "+1".into()),
            ("media_urls[]".into(), "u".into()),
            ("options.callback".into(), "c".into()),
        ]);
        assert_eq!(
            body,
            serde_json::json!({"to": "+1", "media_urls": ["u"], "options": {"callback": "c"}})
        );
    }
}
