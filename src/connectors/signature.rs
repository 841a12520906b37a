//! Webhook signature schemes: Twilio (HMAC-SHA1 over URL + sorted parameters), HMAC-SHA256
//! over the body, and Ed25519 over `timestamp|body` (Telnyx). Comparisons are constant-time.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey};
use openssl::sign::{Signer, Verifier};

use super::manifest::Signature;
use super::payload::Payload;

/// Why a webhook was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("signature header {0} is missing")]
    Missing(String),
    #[error("signature does not match")]
    Mismatch,
    #[error("timestamp outside the allowed window")]
    Stale,
    #[error("this connector's manifest names no signature scheme; webhooks are refused")]
    Unsigned,
    #[error("credential {0} is not configured")]
    NoSecret(String),
}

/// What a webhook request brings for verification.
pub struct SignedRequest<'a> {
    /// The URL the provider called, as it saw it (scheme, host, path and query).
    pub url: &'a str,
    pub header: &'a dyn Fn(&str) -> Option<String>,
    pub body: &'a [u8],
    pub payload: &'a Payload,
    pub now_secs: i64,
}

pub fn verify(
    scheme: &Signature,
    credentials: &BTreeMap<String, String>,
    request: &SignedRequest<'_>,
) -> Result<(), SignatureError> {
    let secret = |name: &str| {
        credentials
            .get(name)
            .map(|s| s.trim().to_string())
            .ok_or_else(|| SignatureError::NoSecret(name.to_string()))
    };
    let header = |name: &str| {
        (request.header)(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| SignatureError::Missing(name.to_string()))
    };
    match scheme {
        Signature::None => Err(SignatureError::Unsigned),
        Signature::Twilio {
            header: name,
            secret: key,
        } => {
            let given = header(name)?;
            let token = secret(key)?;
            let candidates = url_variants(request.url);
            let ok = candidates.iter().any(|url| {
                twilio_signature(&token, url, request.payload.form_pairs())
                    .is_some_and(|expected| constant_eq(expected.as_bytes(), given.as_bytes()))
            });
            if !ok {
                return Err(SignatureError::Mismatch);
            }
            // JSON bodies are bound to the URL by bodySHA256.
            if let Some(hash) = query_param(request.url, "bodySHA256") {
                let actual = openssl::sha::sha256(request.body);
                if !constant_eq(
                    hex::encode(actual).as_bytes(),
                    hash.to_lowercase().as_bytes(),
                ) {
                    return Err(SignatureError::Mismatch);
                }
            }
            Ok(())
        }
        Signature::HmacSha256 {
            header: name,
            secret: key,
            timestamp_header,
            prefix,
        } => {
            let given = header(name)?;
            let given = match prefix {
                Some(p) => given.strip_prefix(p.as_str()).unwrap_or(&given).to_string(),
                None => given,
            };
            let mut signed = Vec::new();
            if let Some(ts) = timestamp_header {
                let ts = header(ts)?;
                check_fresh(&ts, request.now_secs, 300)?;
                signed.extend_from_slice(ts.as_bytes());
                signed.push(b'.');
            }
            signed.extend_from_slice(request.body);
            let mac = hmac(MessageDigest::sha256(), secret(key)?.as_bytes(), &signed)
                .ok_or(SignatureError::Mismatch)?;
            let ok = constant_eq(
                hex::encode(&mac).as_bytes(),
                given.to_lowercase().as_bytes(),
            ) || constant_eq(B64.encode(&mac).as_bytes(), given.as_bytes());
            if ok {
                Ok(())
            } else {
                Err(SignatureError::Mismatch)
            }
        }
        Signature::Phaxio {
            header: name,
            secret: key,
        } => {
            let given = header(name)?;
            let token = secret(key)?;
            let files: Vec<(String, Vec<u8>)> = request
                .payload
                .files()
                .iter()
                .map(|f| (f.name.clone(), f.data.to_vec()))
                .collect();
            let expected =
                phaxio_signature(&token, request.url, request.payload.form_pairs(), &files)
                    .ok_or(SignatureError::Mismatch)?;
            if constant_eq(expected.as_bytes(), given.trim().to_lowercase().as_bytes()) {
                Ok(())
            } else {
                Err(SignatureError::Mismatch)
            }
        }
        Signature::Ed25519 {
            header: name,
            timestamp_header,
            public_key,
            tolerance_secs,
        } => {
            let given = B64
                .decode(header(name)?.trim())
                .map_err(|_| SignatureError::Mismatch)?;
            let ts = header(timestamp_header)?;
            check_fresh(&ts, request.now_secs, *tolerance_secs)?;
            let raw = B64
                .decode(secret(public_key)?)
                .map_err(|_| SignatureError::NoSecret(public_key.clone()))?;
            let key = PKey::public_key_from_raw_bytes(&raw, Id::ED25519)
                .map_err(|_| SignatureError::NoSecret(public_key.clone()))?;
            let mut signed = ts.into_bytes();
            signed.push(b'|');
            signed.extend_from_slice(request.body);
            let ok = Verifier::new_without_digest(&key)
                .and_then(|mut v| v.verify_oneshot(&given, &signed))
                .unwrap_or(false);
            if ok {
                Ok(())
            } else {
                Err(SignatureError::Mismatch)
            }
        }
    }
}

/// `X-Twilio-Signature` for a request: base64(HMAC-SHA1(token, url + name1value1 + ...)),
/// parameters sorted by name (values of a repeated name in sorted order).
pub fn twilio_signature(token: &str, url: &str, params: &[(String, String)]) -> Option<String> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = url.to_string();
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    hmac(MessageDigest::sha1(), token.as_bytes(), data.as_bytes()).map(|mac| B64.encode(mac))
}

/// `X-Phaxio-Signature` for a callback: hex HMAC-SHA1 keyed by the callback token over the
/// URL Phaxio called, then each POST field sorted by name as `name + value` (the last value of a
/// repeated name, as Django's `QueryDict` gives it), then each file part sorted by name as
/// `name + sha1_hex(bytes)` — django-phaxio's `validate_signature`.
pub fn phaxio_signature(
    token: &str,
    url: &str,
    fields: &[(String, String)],
    files: &[(String, Vec<u8>)],
) -> Option<String> {
    let mut by_name: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, value) in fields {
        by_name.insert(name, value);
    }
    let mut data = url.to_string();
    for (name, value) in by_name {
        data.push_str(name);
        data.push_str(value);
    }
    let mut hashed: BTreeMap<&str, String> = BTreeMap::new();
    for (name, bytes) in files {
        let digest = openssl::hash::hash(MessageDigest::sha1(), bytes).ok()?;
        hashed.insert(name, hex::encode(digest));
    }
    for (name, digest) in hashed {
        data.push_str(name);
        data.push_str(&digest);
    }
    hmac(MessageDigest::sha1(), token.as_bytes(), data.as_bytes()).map(hex::encode)
}

fn hmac(digest: MessageDigest, key: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    let key = PKey::hmac(key).ok()?;
    let mut signer = Signer::new(digest, &key).ok()?;
    signer.update(data).ok()?;
    signer.sign_to_vec().ok()
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

fn check_fresh(ts: &str, now: i64, tolerance: i64) -> Result<(), SignatureError> {
    let ts: i64 = ts.trim().parse().map_err(|_| SignatureError::Stale)?;
    if u64::try_from(tolerance)
        .ok()
        .is_none_or(|t| now.abs_diff(ts) > t)
    {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The URL as given, and with the default port added or removed: proxies and Twilio disagree
/// on whether `:443` is part of the URL, so Twilio's own validators try both.
fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return out;
    };
    let default = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return out,
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let suffix = format!(":{default}");
    if let Some(host) = authority.strip_suffix(&suffix) {
        out.push(format!("{scheme}://{host}{tail}"));
    } else if !authority.contains(':') {
        out.push(format!("{scheme}://{authority}{suffix}{tail}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::manifest::Encoding;

    #[derive(serde::Deserialize)]
    struct Vectors {
        auth_token: String,
        cases: Vec<Case>,
    }
    #[derive(serde::Deserialize)]
    struct Case {
        url: String,
        #[serde(default)]
        params: Vec<(String, String)>,
        #[serde(default)]
        json_body: Option<String>,
        signature: String,
    }

    fn vectors() -> Vectors {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/providers/twilio-signature-vectors.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("json")
    }

    fn twilio() -> Signature {
        Signature::Twilio {
            header: "X-Twilio-Signature".into(),
            secret: "auth_token".into(),
        }
    }

    #[test]
    fn twilio_vectors_verify_and_forgeries_do_not() {
        let v = vectors();
        let creds = BTreeMap::from([("auth_token".to_string(), v.auth_token.clone())]);
        for case in &v.cases {
            let (body, payload) = match &case.json_body {
                Some(json) => (
                    json.as_bytes().to_vec(),
                    Payload::parse(Encoding::Json, json.as_bytes()).unwrap(),
                ),
                None => (Vec::new(), Payload::Form(case.params.clone())),
            };
            let sig = case.signature.clone();
            let header = move |name: &str| (name == "X-Twilio-Signature").then(|| sig.clone());
            let request = SignedRequest {
                url: &case.url,
                header: &header,
                body: &body,
                payload: &payload,
                now_secs: 0,
            };
            assert_eq!(verify(&twilio(), &creds, &request), Ok(()), "{}", case.url);

            // One changed parameter, URL or body breaks it.
            let tampered_url = case.url.replace("foo=1", "foo=2");
            let request = SignedRequest {
                url: &tampered_url,
                ..request
            };
            assert_eq!(
                verify(&twilio(), &creds, &request),
                Err(SignatureError::Mismatch)
            );
        }
        // Missing header.
        let none = |_: &str| None;
        let payload = Payload::Form(vec![]);
        let request = SignedRequest {
            url: "https://x",
            header: &none,
            body: b"",
            payload: &payload,
            now_secs: 0,
        };
        assert!(matches!(
            verify(&twilio(), &creds_of(&v), &request),
            Err(SignatureError::Missing(_))
        ));
    }

    fn creds_of(v: &Vectors) -> BTreeMap<String, String> {
        BTreeMap::from([("auth_token".to_string(), v.auth_token.clone())])
    }

    #[test]
    fn json_body_must_match_body_sha256() {
        let v = vectors();
        let case = v.cases.iter().find(|c| c.json_body.is_some()).unwrap();
        let body = b"{\"property\": \"other\"}";
        let payload = Payload::parse(Encoding::Json, body).unwrap();
        let sig = case.signature.clone();
        let header = move |_: &str| Some(sig.clone());
        let request = SignedRequest {
            url: &case.url,
            header: &header,
            body,
            payload: &payload,
            now_secs: 0,
        };
        assert_eq!(
            verify(&twilio(), &creds_of(&v), &request),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn ed25519_over_timestamp_and_body() {
        let key = PKey::generate_ed25519().unwrap();
        let public = B64.encode(key.raw_public_key().unwrap());
        let body = br#"{"data":{"event_type":"message.finalized"}}"#;
        let ts = "1700000000";
        let mut signed = ts.as_bytes().to_vec();
        signed.push(b'|');
        signed.extend_from_slice(body);
        let sig = Signer::new_without_digest(&key)
            .unwrap()
            .sign_oneshot_to_vec(&signed)
            .unwrap();
        let sig = B64.encode(sig);
        let scheme = Signature::Ed25519 {
            header: "telnyx-signature-ed25519".into(),
            timestamp_header: "telnyx-timestamp".into(),
            public_key: "public_key".into(),
            tolerance_secs: 300,
        };
        let creds = BTreeMap::from([("public_key".to_string(), public)]);
        let payload = Payload::parse(Encoding::Json, body).unwrap();
        let header = |name: &str| match name {
            "telnyx-signature-ed25519" => Some(sig.clone()),
            "telnyx-timestamp" => Some(ts.to_string()),
            _ => None,
        };
        let request = SignedRequest {
            url: "https://gw/hooks/telnyx/status",
            header: &header,
            body,
            payload: &payload,
            now_secs: 1_700_000_100,
        };
        assert_eq!(verify(&scheme, &creds, &request), Ok(()));
        let late = SignedRequest {
            now_secs: 1_700_001_000,
            ..request
        };
        assert_eq!(verify(&scheme, &creds, &late), Err(SignatureError::Stale));
        let altered = SignedRequest {
            body: br#"{"data":{"event_type":"message.received"}}"#,
            now_secs: 1_700_000_100,
            ..late
        };
        assert_eq!(
            verify(&scheme, &creds, &altered),
            Err(SignatureError::Mismatch)
        );
    }

    /// Found while writing `fuzz/webhook`: a timestamp header of `-9223372036854775808`
    /// overflowed the freshness check (`now - ts`), a panic in the webhook handler.
    #[test]
    fn extreme_timestamps_are_stale() {
        let key = PKey::generate_ed25519().unwrap();
        let scheme = Signature::Ed25519 {
            header: "telnyx-signature-ed25519".into(),
            timestamp_header: "telnyx-timestamp".into(),
            public_key: "public_key".into(),
            tolerance_secs: 300,
        };
        let creds = BTreeMap::from([(
            "public_key".to_string(),
            B64.encode(key.raw_public_key().unwrap()),
        )]);
        let payload = Payload::parse(Encoding::Json, b"{}").unwrap();
        for ts in ["-9223372036854775808", "9223372036854775807"] {
            let header = |name: &str| match name {
                "telnyx-signature-ed25519" => Some(B64.encode([0u8; 64])),
                "telnyx-timestamp" => Some(ts.to_string()),
                _ => None,
            };
            let request = SignedRequest {
                url: "https://gw/hooks/telnyx/status",
                header: &header,
                body: b"{}",
                payload: &payload,
                now_secs: 1_700_000_000,
            };
            assert_eq!(
                verify(&scheme, &creds, &request),
                Err(SignatureError::Stale),
                "{ts}"
            );
        }
    }

    #[test]
    fn port_variants() {
        assert_eq!(
            url_variants("https://a.example:443/x?y=1"),
            vec!["https://a.example:443/x?y=1", "https://a.example/x?y=1"]
        );
        assert_eq!(
            url_variants("https://a.example/x"),
            vec!["https://a.example/x", "https://a.example:443/x"]
        );
    }

    /// A known answer computed outside this code (Python's `hmac`/`hashlib`, the way
    /// django-phaxio's `validate_signature` builds it): token `tok`, fields given b then a
    /// (signed sorted), the file part `file` holding `%PDF-1.4`.
    #[test]
    fn phaxio_known_answer_and_tampering() {
        let url = "https://gw.example.org/hooks/phaxio/inbound";
        let fields = vec![
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), "1".to_string()),
        ];
        let files = vec![("file".to_string(), b"%PDF-1.4".to_vec())];
        let sig = phaxio_signature("tok", url, &fields, &files).unwrap();
        assert_eq!(sig, "49245bffaa3a6d1a4fdf3419008b77aa7836b087");
        let other = vec![("file".to_string(), b"%PDF-1.5".to_vec())];
        assert_ne!(phaxio_signature("tok", url, &fields, &other).unwrap(), sig);
        let wrong_url = format!("{url}/");
        assert_ne!(
            phaxio_signature("tok", &wrong_url, &fields, &files).unwrap(),
            sig
        );
        assert_ne!(phaxio_signature("tak", url, &fields, &files).unwrap(), sig);
    }
}
