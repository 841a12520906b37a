//! The manifest format (`connectors/*.toml`): what an HTTP provider looks like, as data.
//!
//! Values written as templates (`"{{ params.account_sid }}"`) are rendered with minijinja
//! against the delivery (`to`, `from`, `body`, `media_url`, `status_callback_url`,
//! `delivery_id`), the connector's `params` and `credentials`, and `base_url`. A field that
//! renders empty is left out of the request.
//!
//! Locations in payloads are JSON pointers (`/data/payload/id`) for JSON bodies and field
//! names (`MessageSid`) for form bodies.
//!
//! A manifest may build on another: `extends = "<built-in name or path>"` starts from that
//! manifest and merges this one over it — tables key by key, every other value replaced. A
//! send field set to `""` renders empty and is therefore not sent.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The logical channel it carries: `sms`, `fax` or `voice`.
    pub channel: crate::domain::Channel,
    pub base_url: String,
    pub auth: Auth,
    pub send: Send,
    #[serde(default)]
    pub status: Option<StatusCallback>,
    #[serde(default)]
    pub signature: Signature,
    #[serde(default)]
    pub inbound: Option<Inbound>,
    /// Re-checking a delivery that stays `sent` (carriers that never send receipts).
    #[serde(default)]
    pub query: Option<Query>,
    /// Calls: how the provider asks for a call's instructions and posts the keys pressed.
    #[serde(default)]
    pub voice: Option<Voice>,
}

/// A voice connector's call script (`POST /hooks/<connector>/voice`). The provider fetches the
/// script when the call is answered (`{{ call_url }}` in a send field) and posts the keys
/// pressed to the `action_url` the script names; both requests are signed like webhooks. The
/// templates are rendered with `text` (what is read), `language` (a BCP 47 tag such as
/// `en-US`) and `action_url`, XML-escaped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Voice {
    #[serde(default)]
    pub encoding: Encoding,
    /// The provider's id of the call (Twilio `CallSid`).
    pub call_id: String,
    /// Who answered, when the provider detects it (Twilio `AnsweredBy`).
    #[serde(default)]
    pub answered_by: Option<String>,
    /// Values of `answered_by` that mean an answering machine or a fax: they get the short
    /// message without details.
    #[serde(default)]
    pub machine_answers: Vec<String>,
    /// The keys pressed (Twilio `Digits`).
    pub digits: String,
    pub content_type: String,
    /// Reads `text` and waits for one key, posted to `action_url` (also when none is pressed).
    pub prompt: String,
    /// Reads `text` and hangs up.
    pub say: String,
}

/// How requests authenticate.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    None,
    Basic {
        username: String,
        password: String,
    },
    Bearer {
        token: String,
    },
    /// An API key in a header (`X-API-Key: ...`).
    Header {
        header: String,
        value: String,
    },
    /// OAuth 2.0 client credentials: a token fetched from `token_url` and cached until it
    /// expires (the hook for providers that need it).
    Oauth2ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: String,
        #[serde(default)]
        scope: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    Form,
    Json,
    Multipart,
}

/// The send request and how to read its answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Send {
    #[serde(default = "post")]
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub encoding: Encoding,
    /// Body fields. For JSON, a dotted name (`to.0`, `options.callback`) builds nested values;
    /// a field whose name ends in `[]` becomes an array of the non-empty rendered value.
    pub fields: BTreeMap<String, String>,
    /// Extra headers (e.g. an idempotency key: `"{{ delivery_id }}"`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Fax only: how the document travels. `media_url`: one PDF we serve at a signed URL that
    /// works once and expires in minutes (`{{ media_url }}` in a field); any other value names
    /// the multipart file part each document is sent as (`file[]`).
    #[serde(default)]
    pub document: Option<String>,
    /// Fax, file parts only: `true` sends the whole fax — cover page and documents merged into
    /// one PDF — as a single part (Telnyx `contents`); `false` sends each document as its own
    /// part (Phaxio `file[]`).
    #[serde(default)]
    pub merge_documents: bool,
    /// Fax: the most document bytes the provider takes in one send; a larger fax fails
    /// permanently before anything is sent.
    #[serde(default)]
    pub max_document_bytes: Option<u64>,
    pub response: Response,
}

/// Where the answer carries what we need, and which failures are worth retrying.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    /// The provider's id for the message.
    pub id: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub status_map: BTreeMap<String, String>,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
    /// HTTP statuses to retry. Default: 408, 425, 429 and every 5xx. Other 4xx are permanent.
    #[serde(default = "transient_http")]
    pub transient_http: Vec<u16>,
    /// Provider error codes to retry even on a 4xx (rate limits named in the body).
    #[serde(default)]
    pub transient_codes: Vec<String>,
    /// Provider error codes that are permanent even on a 5xx.
    #[serde(default)]
    pub permanent_codes: Vec<String>,
}

/// Status callbacks (`POST /hooks/<connector>/status`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusCallback {
    #[serde(default)]
    pub encoding: Encoding,
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
    /// Where the provider's id of this webhook event is (Telnyx `/data/id`): an event seen
    /// before is answered and ignored, so a replayed webhook changes nothing.
    #[serde(default)]
    pub event_id: Option<String>,
    /// Provider state → ours (`queued`, `sending`, `sent`, `delivered`, `failed`). States not
    /// listed are recorded but change nothing.
    pub map: BTreeMap<String, String>,
    /// Where the pages sent (fax) are: kept on the fax record.
    #[serde(default)]
    pub pages: Option<String>,
    /// Failure reasons worth another attempt (busy, no answer): a failure whose provider state
    /// or error code is one of these, or whose reason contains one (case-insensitive), is
    /// retried with backoff as a new delivery, up to the channel's `max_attempts`. Every other
    /// failure is permanent.
    #[serde(default)]
    pub transient_errors: Vec<String>,
}

/// How webhooks prove they come from the provider.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(tag = "scheme", rename_all = "snake_case", deny_unknown_fields)]
pub enum Signature {
    /// No signature: webhooks for this connector are refused (never trusted unsigned).
    #[default]
    None,
    /// Twilio: base64 HMAC-SHA1 over the full URL followed by the sorted form parameters
    /// (name + value); JSON bodies carry `bodySHA256` in the URL instead.
    Twilio { header: String, secret: String },
    /// Hex or base64 HMAC-SHA256 over the raw body (optionally prefixed by a timestamp header).
    HmacSha256 {
        header: String,
        secret: String,
        #[serde(default)]
        timestamp_header: Option<String>,
        #[serde(default)]
        prefix: Option<String>,
    },
    /// Phaxio: hex HMAC-SHA1 keyed by the callback token over the called URL, then the POST
    /// fields sorted by name (`name + value`), then the file parts sorted by name
    /// (`name + sha1_hex(bytes)`).
    Phaxio { header: String, secret: String },
    /// Ed25519 over `timestamp|body` (Telnyx), with a public key credential (base64).
    Ed25519 {
        header: String,
        timestamp_header: String,
        public_key: String,
        #[serde(default = "tolerance")]
        tolerance_secs: i64,
    },
}

/// Inbound messages (`POST /hooks/<connector>/inbound`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inbound {
    #[serde(default)]
    pub encoding: Encoding,
    pub id: String,
    pub from: String,
    pub to: String,
    /// The text (SMS); faxes have none.
    #[serde(default)]
    pub body: String,
    /// Fax: the multipart file part holding the document as posted (Phaxio `file`).
    #[serde(default)]
    pub document: Option<String>,
    /// Fax: where a temporary URL of the document is (Telnyx `/data/payload/media_url`),
    /// downloaded by the inbound job — https only, from `media_hosts` only, no redirects.
    #[serde(default)]
    pub media_url: Option<String>,
    /// Hosts the document may be downloaded from: a name, or `*.suffix` for any name under it.
    #[serde(default)]
    pub media_hosts: Vec<String>,
    /// Fax: asks the provider for a fresh `media_url` once the one given expired (Telnyx
    /// `POST /v2/faxes/{id}/actions/refresh`); the new URL is then read with `[query]`'s URL
    /// at `refreshed_media_url`.
    #[serde(default)]
    pub refresh_url: Option<String>,
    #[serde(default)]
    pub refreshed_media_url: Option<String>,
    /// Fax: the page count.
    #[serde(default)]
    pub pages: Option<String>,
    /// Fax: a location holding `true` when only part of the fax arrived (Telnyx
    /// `partial_content`).
    #[serde(default)]
    pub partial: Option<String>,
    /// Fax: the provider's status, and which of its values mean a partial fax (Phaxio
    /// `partialsuccess`).
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub partial_statuses: Vec<String>,
    /// The provider's id of this webhook event (Telnyx `/data/id`): stored, a replay is
    /// answered and ignored.
    #[serde(default)]
    pub event_id: Option<String>,
    /// Form field prefix of media URLs (`MediaUrl` → `MediaUrl0`, `MediaUrl1`, ...) or a JSON
    /// pointer to an array of objects with `url`.
    #[serde(default)]
    pub media: Option<String>,
    /// Only handle payloads where this location holds this value (`/data/event_type` =
    /// `message.received`); others are acknowledged and ignored.
    #[serde(default)]
    pub only_when: Option<(String, String)>,
    /// Content type and template of a webhook answer that carries a reply (`{{ text }}`), e.g.
    /// TwiML. Without it, replies are sent as new outbound messages.
    #[serde(default)]
    pub reply_content_type: Option<String>,
    #[serde(default)]
    pub reply: Option<String>,
    #[serde(default)]
    pub no_reply: Option<String>,
}

/// Looking a message up at the provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    #[serde(default = "get")]
    pub method: String,
    /// May use `{{ provider_ref }}`.
    pub url: String,
    pub status: String,
    #[serde(default)]
    pub error_code: Option<String>,
    /// Where the pages sent are (fax).
    #[serde(default)]
    pub pages: Option<String>,
}

fn post() -> String {
    "POST".into()
}
fn get() -> String {
    "GET".into()
}
fn transient_http() -> Vec<u16> {
    vec![408, 425, 429, 500, 502, 503, 504]
}
fn tolerance() -> i64 {
    300
}

/// The manifests shipped in `connectors/`, built into the binary.
pub const BUILTIN: &[(&str, &str)] = &[
    ("twilio", include_str!("../../connectors/twilio.toml")),
    ("telnyx", include_str!("../../connectors/telnyx.toml")),
    (
        "telnyx_fax",
        include_str!("../../connectors/telnyx_fax.toml"),
    ),
    (
        "telnyx_fax_upload",
        include_str!("../../connectors/telnyx_fax_upload.toml"),
    ),
    ("phaxio", include_str!("../../connectors/phaxio.toml")),
    (
        "twilio_voice",
        include_str!("../../connectors/twilio_voice.toml"),
    ),
];

/// How many manifests deep `extends` may go.
const MAX_EXTENDS: usize = 4;

/// Merges `over` into `base`: tables key by key, any other value replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(value)) => merge(inner, value),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("connector manifest {name}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("connector manifest {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl Manifest {
    /// A built-in manifest by name, or a manifest file by path.
    pub fn load(name_or_path: &str) -> Result<Self, ManifestError> {
        let table = Self::table(name_or_path, 0)?;
        let name = name_or_path.to_string();
        let manifest: Manifest =
            table
                .try_into()
                .map_err(|e: toml::de::Error| ManifestError::Invalid {
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
        manifest
            .check()
            .map_err(|reason| ManifestError::Invalid { name, reason })?;
        Ok(manifest)
    }

    /// The manifest's TOML with what it `extends` merged in (at most [`MAX_EXTENDS`] deep).
    fn table(name_or_path: &str, depth: usize) -> Result<toml::Table, ManifestError> {
        let invalid = |reason: String| ManifestError::Invalid {
            name: name_or_path.to_string(),
            reason,
        };
        let text = match BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            Some((_, text)) => text.to_string(),
            None => std::fs::read_to_string(name_or_path).map_err(|source| ManifestError::Io {
                path: name_or_path.to_string(),
                source,
            })?,
        };
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let Some(base) = table.remove("extends") else {
            return Ok(table);
        };
        let base = base
            .as_str()
            .ok_or_else(|| invalid("extends names a manifest (a string)".into()))?;
        if depth >= MAX_EXTENDS {
            return Err(invalid(format!(
                "extends goes more than {MAX_EXTENDS} manifests deep (a cycle?)"
            )));
        }
        let mut merged = Self::table(base, depth + 1)?;
        merge(&mut merged, table);
        Ok(merged)
    }

    fn check(&self) -> Result<(), String> {
        if !self.channel.is_phone() {
            return Err(format!(
                "channel {:?} is not sms, fax or voice",
                self.channel.as_str()
            ));
        }
        if self.channel == crate::domain::Channel::Fax {
            match self.send.document.as_deref() {
                None | Some("") => {
                    return Err(
                        "a fax manifest says how the document travels (send.document)".into(),
                    );
                }
                Some("media_url") if self.send.encoding == Encoding::Multipart => {
                    return Err("send.document = \"media_url\" needs a form or JSON body".into());
                }
                Some("media_url") => {}
                Some(_) if self.send.encoding != Encoding::Multipart => {
                    return Err(
                        "a document sent as a file part needs encoding = \"multipart\"".into(),
                    );
                }
                Some(_) => {}
            }
        }
        if self.send.merge_documents
            && (self.send.encoding != Encoding::Multipart
                || self.send.document.as_deref() == Some("media_url"))
        {
            return Err("send.merge_documents needs a document sent as a file part".into());
        }
        if self.channel == crate::domain::Channel::Voice && self.voice.is_none() {
            return Err("a voice manifest says how calls are scripted ([voice])".into());
        }
        if let Some(status) = &self.status {
            for ours in status.map.values() {
                if crate::domain::DeliveryStatus::parse(ours).is_none() {
                    return Err(format!("status.map maps to unknown status {ours:?}"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extends_merges_tables_key_by_key() {
        let upload = Manifest::load("telnyx_fax_upload").expect("built in");
        let base = Manifest::load("telnyx_fax").expect("built in");
        assert_eq!(upload.name, "telnyx_fax_upload");
        assert_eq!(upload.send.encoding, Encoding::Multipart);
        assert_eq!(upload.send.document.as_deref(), Some("contents"));
        assert!(upload.send.merge_documents);
        // Kept from the base: the URL, the other fields, the response and everything else.
        assert_eq!(upload.send.url, base.send.url);
        assert_eq!(
            upload.send.fields["connection_id"],
            "{{ params.connection_id }}"
        );
        assert_eq!(upload.send.fields["media_url"], "", "not sent");
        assert_eq!(upload.send.response.id, base.send.response.id);
        assert_eq!(
            upload.inbound.as_ref().map(|i| &i.media_hosts),
            base.inbound.as_ref().map(|i| &i.media_hosts)
        );
    }

    #[test]
    fn extends_refuses_a_cycle_and_a_bad_merge() {
        let dir = tempfile::tempdir().expect("dir");
        let looped = dir.path().join("loop.toml");
        let path = looped.to_str().expect("utf-8");
        std::fs::write(&looped, format!("extends = {path:?}\n")).expect("write");
        let error = Manifest::load(path).expect_err("a cycle").to_string();
        assert!(error.contains("more than 4 manifests deep"), "{error}");

        // What the merge yields is checked like any manifest: a merged document needs file
        // parts, which the JSON `telnyx_fax` send does not have.
        let merged = dir.path().join("merged.toml");
        std::fs::write(
            &merged,
            "extends = \"telnyx_fax\"\n[send]\nmerge_documents = true\n",
        )
        .expect("write");
        let error = Manifest::load(merged.to_str().expect("utf-8"))
            .expect_err("refused")
            .to_string();
        assert!(error.contains("merge_documents needs"), "{error}");
    }
}
