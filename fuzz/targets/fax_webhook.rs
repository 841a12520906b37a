//! Fax providers' webhooks as `http::hooks` reads them: the body parsed as the manifest says
//! (Phaxio `multipart/form-data` with the document as a file part, Telnyx JSON), the signature
//! checked with fuzzed URL and headers (Phaxio's HMAC-SHA1 over URL, sorted fields and file
//! digests; Telnyx's Ed25519 over `timestamp|body`), then the status report or the received
//! fax read, and a received fax stored and read back as the `fax-inbound` job does
//! (`FaxDocument` encode → decode must round-trip).
//!
//! Input: byte 0 picks the provider (bit 0) and the hook (bit 7: inbound); the rest is
//! `url \n signature \n timestamp \n content-type \n body`. The clock is fixed at
//! 1 800 000 000 s.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use switchboard::config::HttpConnectorConfig;
use switchboard::connectors::HttpConnector;
use switchboard::connectors::payload::Payload;
use switchboard::connectors::signature::{SignedRequest, verify};
use switchboard::inbound::fax::{FaxDocument, FaxHeader};

/// Phaxio's callback token of the seeds.
const PHAXIO_TOKEN: &str = "fuzz-callback-token";
/// The raw Ed25519 public key (base64) of `fuzz/data/telnyx.key`.
const TELNYX_PUBLIC: &str = "yKPvb8K5H/gC8ab90U69MMjck6M0J3pPHHFv1nYL/qo=";
const NOW: i64 = 1_800_000_000;

struct Provider {
    connector: HttpConnector,
    credentials: BTreeMap<String, String>,
}

fn provider(manifest: &str, credentials: &[(&str, &str)]) -> Provider {
    let config: HttpConnectorConfig =
        toml::from_str(&format!("manifest = \"{manifest}\"")).expect("connector config");
    Provider {
        connector: HttpConnector::new(manifest, &config).expect("connector"),
        credentials: credentials
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

static PROVIDERS: LazyLock<[Provider; 2]> = LazyLock::new(|| {
    [
        provider("phaxio", &[("callback_token", PHAXIO_TOKEN)]),
        provider("telnyx_fax", &[("public_key", TELNYX_PUBLIC)]),
    ]
});

/// Checks one input (called by libFuzzer and by the seed replay in `tests/fuzz_seeds.rs`).
pub fn run(data: &[u8]) {
    let [select, rest @ ..] = data else {
        return;
    };
    let p = &PROVIDERS[usize::from(*select & 1)];
    let kind = if select & 0x80 == 0 {
        "status"
    } else {
        "inbound"
    };
    let mut parts = rest.splitn(5, |&b| b == b'\n');
    let mut text = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (url, signature, timestamp, content_type) = (text(), text(), text(), text());
    let body = parts.next().unwrap_or_default();

    let Ok(payload) = Payload::parse_typed(
        p.connector.webhook_encoding(kind),
        Some(&content_type),
        body,
    ) else {
        return;
    };
    let header = |name: &str| match name.to_ascii_lowercase().as_str() {
        "x-phaxio-signature" | "telnyx-signature-ed25519" => Some(signature.clone()),
        "telnyx-timestamp" => Some(timestamp.clone()),
        _ => None,
    };
    let request = SignedRequest {
        url: &url,
        header: &header,
        body,
        payload: &payload,
        now_secs: NOW,
    };
    let _verified = verify(&p.connector.manifest().signature, &p.credentials, &request);
    // Read whatever the body says, verified or not: the readers must not trust it either.
    if kind == "status" {
        if let Ok(Some(report)) = p.connector.read_status(&payload) {
            assert!(!report.provider_ref.is_empty() && !report.provider_status.is_empty());
        }
        return;
    }
    let Ok(Some(event)) = p.connector.read_fax(&payload) else {
        return;
    };
    assert!(!event.provider_ref.is_empty() && !event.to.is_empty());
    let file = event
        .document_part
        .as_deref()
        .and_then(|part| payload.files().iter().find(|f| f.name == part));
    let stored = FaxDocument {
        header: FaxHeader {
            provider: p.connector.manifest().name.clone(),
            connector: p.connector.manifest().name.clone(),
            provider_ref: event.provider_ref,
            from: event.from,
            to: event.to,
            pages: event.pages,
            partial: event.partial,
            provider_status: event.provider_status,
            media_url: event.media_url,
            content_type: file.and_then(|f| f.content_type.clone()),
        },
        document: file.map(|f| f.data.to_vec()).unwrap_or_default(),
    };
    assert_eq!(FaxDocument::decode(&stored.encode()).as_ref(), Ok(&stored));
}
