//! Provider webhooks as `http::hooks` reads them: the body parsed as the connector's manifest
//! says (form for Twilio, JSON for Telnyx), the signature checked (Twilio HMAC-SHA1 over URL and
//! sorted parameters with `bodySHA256`, Telnyx Ed25519 over `timestamp|body` with its time
//! window, and the generic HMAC-SHA256 scheme) with fuzzed URL, headers and body, then the
//! status report or inbound message read and the inline reply rendered.
//!
//! Input: byte 0 picks the connector and hook; the rest is `url \n signature \n timestamp \n
//! body`. The clock is fixed at 1 800 000 000 s; `fuzz/data/seeds.sh` signs the seeds.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use switchboard::config::HttpConnectorConfig;
use switchboard::connectors::HttpConnector;
use switchboard::connectors::manifest::Signature;
use switchboard::connectors::payload::Payload;
use switchboard::connectors::signature::{SignedRequest, verify};

/// The Twilio auth token of the seeds.
const TWILIO_TOKEN: &str = "fuzz-auth-token";
/// The raw Ed25519 public key (base64) of `fuzz/data/telnyx.key`.
const TELNYX_PUBLIC: &str = "yKPvb8K5H/gC8ab90U69MMjck6M0J3pPHHFv1nYL/qo=";
const NOW: i64 = 1_800_000_000;

struct Provider {
    connector: HttpConnector,
    signature: Signature,
    credentials: BTreeMap<String, String>,
}

fn provider(
    manifest: &str,
    credentials: &[(&str, &str)],
    signature: Option<Signature>,
) -> Provider {
    let config: HttpConnectorConfig =
        toml::from_str(&format!("manifest = \"{manifest}\"")).expect("connector config");
    let connector = HttpConnector::new(manifest, &config).expect("connector");
    Provider {
        signature: signature.unwrap_or_else(|| connector.manifest().signature.clone()),
        connector,
        credentials: credentials
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

static PROVIDERS: LazyLock<[Provider; 3]> = LazyLock::new(|| {
    [
        provider("twilio", &[("auth_token", TWILIO_TOKEN)], None),
        provider("telnyx", &[("public_key", TELNYX_PUBLIC)], None),
        // Twilio's payloads under the generic scheme: hex or base64 HMAC-SHA256 of `ts.body`.
        provider(
            "twilio",
            &[("secret", TWILIO_TOKEN)],
            Some(Signature::HmacSha256 {
                header: "x-signature".into(),
                secret: "secret".into(),
                timestamp_header: Some("x-timestamp".into()),
                prefix: Some("sha256=".into()),
            }),
        ),
    ]
});

/// Checks one input (called by libFuzzer and by the seed replay in `tests/fuzz_seeds.rs`).
pub fn run(data: &[u8]) {
    let [select, rest @ ..] = data else {
        return;
    };
    let p = &PROVIDERS[usize::from(*select % 3)];
    let kind = if select & 0x80 == 0 {
        "status"
    } else {
        "inbound"
    };
    let mut parts = rest.splitn(4, |&b| b == b'\n');
    let url = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let signature = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let timestamp = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let body = parts.next().unwrap_or_default();

    let Ok(payload) = Payload::parse(p.connector.webhook_encoding(kind), body) else {
        return;
    };
    let header = |name: &str| match name.to_ascii_lowercase().as_str() {
        "x-twilio-signature" | "telnyx-signature-ed25519" | "x-signature" => {
            Some(signature.clone())
        }
        "telnyx-timestamp" | "x-timestamp" => Some(timestamp.clone()),
        _ => None,
    };
    let request = SignedRequest {
        url: &url,
        header: &header,
        body,
        payload: &payload,
        now_secs: NOW,
    };
    let _verified = verify(&p.signature, &p.credentials, &request);
    // Read whatever the body says, verified or not: the readers must not trust it either.
    if kind == "status" {
        if let Ok(Some(report)) = p.connector.read_status(&payload) {
            assert!(!report.provider_ref.is_empty() && !report.provider_status.is_empty());
        }
    } else if let Ok(Some(message)) = p.connector.read_inbound(&payload) {
        assert!(!message.from.is_empty());
        let _ = p.connector.inbound_answer(Some(&message.body));
    }
}
