//! Composing one patient email from templates.
//!
//! The PHI rule (minimum necessary, decided in `crate::disclosure`): the email carries the
//! message text (template `email/message`) only when the delivery's purpose is one whose body
//! comes from PHI-linted templates (`notification`, `reminder`, `campaign`, set by the daemon
//! only) or a client purpose the organization lists in `phi_email_purposes`. Otherwise it
//! renders `email/secure_message` ("a secure message is waiting, sign in at the portal") and
//! neither the body nor the subject is handed to the template at all.
//!
//! Attachments (`delivery.attachments`) follow the same rule: under it they are MIME parts of
//! a `multipart/mixed` next to the text; otherwise the email carries none.
//!
//! Headers: `Message-ID: <delivery id@domain>` (so a bounce that returns our headers names the
//! delivery), `Date`, `From` (organization `email_from`, else the connector's `from`),
//! `Reply-To` (organization), `To` (the delivery's recipient). With VERP the envelope sender
//! is `<local>+<delivery id>@<domain>` of the connector's `from`.

use std::sync::Arc;

use lettre::Address;
use lettre::address::Envelope;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart};
use serde::Serialize;

use super::EmailError;
use crate::channels::OutboundDelivery;
use crate::config::SmtpConnectorConfig;
use crate::templates::Templates;

/// Whether the email for this delivery may carry the message text.
pub fn carries_text(delivery: &OutboundDelivery) -> bool {
    crate::disclosure::email_carries_text(
        &delivery.purpose,
        &delivery.sender.settings.phi_email_purposes,
    )
}

/// What the templates see. `subject` and `body` are present only under the PHI rule.
#[derive(Debug, Serialize)]
struct Context<'a> {
    organization: &'a str,
    portal_url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
}

/// The connector's Message-ID (and VERP) domain: `domain`, else the domain of `from`.
pub fn message_domain(config: &SmtpConnectorConfig) -> Option<String> {
    match config.domain.as_deref().map(str::trim) {
        Some(domain) if !domain.is_empty() => Some(domain.to_string()),
        _ => config
            .from
            .parse::<Mailbox>()
            .ok()
            .map(|m| m.email.domain().to_string()),
    }
}

/// Builds messages for one connector.
pub struct Composer {
    templates: Arc<Templates>,
    from: Mailbox,
    domain: String,
    verp: bool,
}

impl Composer {
    pub fn new(
        templates: Arc<Templates>,
        config: &SmtpConnectorConfig,
    ) -> Result<Self, EmailError> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|_| EmailError::Address { what: "from" })?;
        let domain = message_domain(config).unwrap_or_else(|| from.email.domain().to_string());
        Ok(Self {
            templates,
            from,
            domain,
            verp: config.verp,
        })
    }

    /// The domain of our `Message-ID`s.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// `<reference@domain>` (the delivery's reference token, never its id).
    pub fn message_id(&self, reference: &str) -> String {
        format!("<{reference}@{}>", self.domain)
    }

    /// The envelope sender: the connector's `from`, with `+<reference>` under VERP.
    pub fn return_path(&self, reference: &str) -> Result<Address, EmailError> {
        if !self.verp {
            return Ok(self.from.email.clone());
        }
        let user = self.from.email.user();
        let base = user.split_once('+').map(|(b, _)| b).unwrap_or(user);
        Address::new(format!("{base}+{reference}"), self.from.email.domain()).map_err(|_| {
            EmailError::Address {
                what: "return path",
            }
        })
    }

    /// The whole message: multipart/alternative text + HTML with our headers and envelope.
    pub fn compose(&self, delivery: &OutboundDelivery) -> Result<lettre::Message, EmailError> {
        let settings = &delivery.sender.settings;
        let with_text = carries_text(delivery);
        let context = Context {
            organization: &delivery.sender.name,
            portal_url: &settings.portal_url,
            subject: with_text.then_some(delivery.subject.as_deref()).flatten(),
            body: with_text.then_some(delivery.body.as_str()),
        };
        let base = if with_text {
            "email/message"
        } else {
            "email/secure_message"
        };
        let locale = &settings.default_locale;
        let subject = self.templates.render(base, locale, "subject", &context)?;
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        let text = self.templates.render(base, locale, "txt", &context)?;
        let html = self.templates.render(base, locale, "html", &context)?;

        let from = match &settings.email_from {
            Some(from) => from
                .parse::<Mailbox>()
                .map_err(|_| EmailError::Address { what: "email_from" })?,
            None => self.from.clone(),
        };
        let to: Mailbox = delivery
            .recipient
            .trim()
            .parse()
            .map_err(|_| EmailError::Address { what: "recipient" })?;
        let envelope = Envelope::new(
            Some(self.return_path(&delivery.reference)?),
            vec![to.email.clone()],
        )?;
        let mut builder = lettre::Message::builder()
            .from(from)
            .to(to)
            .subject(subject)
            .message_id(Some(self.message_id(&delivery.reference)))
            .date_now()
            .envelope(envelope);
        if let Some(reply_to) = &settings.reply_to {
            let reply_to = reply_to
                .parse::<Mailbox>()
                .map_err(|_| EmailError::Address { what: "reply_to" })?;
            builder = builder.reply_to(reply_to);
        }
        let alternative = MultiPart::alternative_plain_html(text, html);
        // Attachments go only where the text may: a "secure message is waiting" email carries
        // no content at all.
        if !with_text || delivery.attachments.is_empty() {
            return builder.multipart(alternative).map_err(EmailError::Build);
        }
        let mut mixed = MultiPart::mixed().multipart(alternative);
        for attachment in &delivery.attachments {
            let content_type = ContentType::parse(&attachment.content_type)
                .or_else(|_| ContentType::parse("application/octet-stream"))
                .map_err(|_| EmailError::Address {
                    what: "attachment content type",
                })?;
            mixed = mixed.singlepart(
                Attachment::new(attachment.filename.clone())
                    .body(attachment.data.to_vec(), content_type),
            );
        }
        builder.multipart(mixed).map_err(EmailError::Build)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::Sender;
    use crate::config::OrganizationConfig;

    fn config(verp: bool) -> SmtpConnectorConfig {
        let text = format!(
            "host = \"127.0.0.1\"\nfrom = \"Gateway <bounces@mail.clinic.example>\"\nverp = {verp}\n"
        );
        toml::from_str(&text).expect("smtp config")
    }

    fn delivery(purpose: &str, phi_purposes: &[&str]) -> OutboundDelivery {
        let settings = OrganizationConfig {
            portal_url: "https://portal.north.example".into(),
            reply_to: Some("Front Desk <desk@north.example>".into()),
            phi_email_purposes: phi_purposes.iter().map(|p| p.to_string()).collect(),
            ..OrganizationConfig::default()
        };
        OutboundDelivery {
            delivery_id: "dlv_01jtest".into(),
            reference: "r01jref".into(),
            organization_id: "org_1".into(),
            message_id: "msg_1".into(),
            channel: crate::domain::Channel::Email,
            recipient: "patient@example.org".into(),
            subject: Some("Lab results for Jane Roe".into()),
            body: "Your HbA1c is 9.1 percent".into(),
            urgent: false,
            attempt: 1,
            purpose: purpose.into(),
            sender: Arc::new(Sender {
                organization_id: "org_1".into(),
                slug: "north".into(),
                name: "North Clinic".into(),
                settings,
            }),
            attachments: vec![crate::channels::Attachment {
                filename: "labs.pdf".into(),
                content_type: "application/pdf".into(),
                data: bytes::Bytes::from_static(b"%PDF-1.7 HbA1c attached"),
            }],
        }
    }

    fn render(delivery: &OutboundDelivery, verp: bool) -> (String, lettre::Message) {
        let composer =
            Composer::new(Arc::new(Templates::builtin()), &config(verp)).expect("composer");
        let message = composer.compose(delivery).expect("compose");
        (
            String::from_utf8_lossy(&message.formatted()).into_owned(),
            message,
        )
    }

    #[test]
    fn a_message_purpose_never_carries_the_text() {
        let (raw, message) = render(&delivery("message", &[]), true);
        assert!(!raw.contains("HbA1c"), "{raw}");
        assert!(!raw.contains("Jane Roe"), "{raw}");
        assert!(raw.contains("secure message"), "{raw}");
        assert!(
            !raw.contains("labs.pdf"),
            "an attachment under the PHI rule: {raw}"
        );
        assert!(!raw.contains("multipart/mixed"), "{raw}");
        assert!(raw.contains("https://portal.north.example"), "{raw}");
        assert!(
            raw.contains("Message-ID: <r01jref@mail.clinic.example>"),
            "{raw}"
        );
        assert!(
            raw.contains("Reply-To: \"Front Desk\" <desk@north.example>"),
            "{raw}"
        );
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(raw.contains("Date: "), "{raw}");
        let from = message.envelope().from().expect("envelope sender");
        assert_eq!(from.to_string(), "bounces+r01jref@mail.clinic.example");
        assert!(!raw.contains("dlv_01jtest"), "the delivery id shows: {raw}");
    }

    #[test]
    fn text_purposes_and_listed_purposes_carry_the_text() {
        for purpose in crate::disclosure::TEMPLATE_PURPOSES {
            let (raw, _) = render(&delivery(purpose, &[]), false);
            assert!(raw.contains("HbA1c"), "{purpose}: {raw}");
        }
        let (raw, _) = render(&delivery("results", &["results"]), false);
        assert!(raw.contains("HbA1c"), "{raw}");
        assert!(raw.contains("multipart/mixed"), "{raw}");
        assert!(raw.contains("filename=\"labs.pdf\""), "{raw}");
        let (raw, _) = render(&delivery("results", &["other"]), false);
        assert!(!raw.contains("HbA1c"), "{raw}");
    }

    #[test]
    fn without_verp_the_return_path_is_from() {
        let (_, message) = render(&delivery("message", &[]), false);
        let from = message.envelope().from().expect("envelope sender");
        assert_eq!(from.to_string(), "bounces@mail.clinic.example");
    }

    #[test]
    fn an_invalid_recipient_is_an_error_without_the_address() {
        let mut d = delivery("message", &[]);
        d.recipient = "not an address".into();
        let composer = Composer::new(Arc::new(Templates::builtin()), &config(true)).expect("c");
        let err = composer.compose(&d).expect_err("invalid");
        assert!(!err.to_string().contains("not an address"), "{err}");
    }
}
