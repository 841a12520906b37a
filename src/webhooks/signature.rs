//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): a secret is `whsec_` +
//! base64 of its key bytes; a message is signed as `v1,` + base64(HMAC-SHA256(key,
//! "{webhook-id}.{webhook-timestamp}.{body}")); a `webhook-signature` header may carry
//! several, space-separated (during a secret rotation both are sent), and a receiver accepts
//! the message when any one verifies. Used for what we send and for `POST /v1/app-events`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;

/// The prefix of a secret in its printed form.
pub const SECRET_PREFIX: &str = "whsec_";
/// Messages whose timestamp is further than this from now are refused (replay window).
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// Why a signed message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("webhook-id, webhook-timestamp and webhook-signature are required")]
    MissingHeaders,
    #[error("webhook-timestamp is not a unix time within five minutes of now")]
    Timestamp,
    #[error("no signature matches")]
    NoMatch,
    #[error("the signing secret cannot be used")]
    Secret,
}

/// A fresh secret: `whsec_` + base64 of 32 random bytes.
pub fn generate_secret() -> Result<String, openssl::error::ErrorStack> {
    let mut key = [0u8; 32];
    openssl::rand::rand_bytes(&mut key)?;
    Ok(format!("{SECRET_PREFIX}{}", STANDARD.encode(key)))
}

/// The key bytes of a secret (`whsec_` prefix optional, as the reference libraries accept).
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let text = secret.trim();
    let text = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
    STANDARD.decode(text).ok().filter(|k| !k.is_empty())
}

/// `v1,<base64 HMAC-SHA256>` over `"{id}.{timestamp}.{body}"`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Result<String, SignatureError> {
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac(key, id, timestamp, body)?)
    ))
}

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Result<Vec<u8>, SignatureError> {
    let pkey = PKey::hmac(key).map_err(|_| SignatureError::Secret)?;
    let mut signer =
        Signer::new(MessageDigest::sha256(), &pkey).map_err(|_| SignatureError::Secret)?;
    let signed = (|| {
        signer.update(id.as_bytes())?;
        signer.update(b".")?;
        signer.update(timestamp.to_string().as_bytes())?;
        signer.update(b".")?;
        signer.update(body)?;
        signer.sign_to_vec()
    })();
    signed.map_err(|_| SignatureError::Secret)
}

/// Checks a received message against any of `keys`: the timestamp within
/// [`TOLERANCE_SECS`] of `now` (unix seconds), then any `v1,` signature of the header, in
/// constant time.
pub fn verify(
    keys: &[Vec<u8>],
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    if id.is_empty() || timestamp.is_empty() || signatures.is_empty() {
        return Err(SignatureError::MissingHeaders);
    }
    let at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::Timestamp)?;
    if (now - at).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Timestamp);
    }
    for key in keys {
        let expected = mac(key, id, at, body)?;
        for given in signatures.split_whitespace() {
            let Some(b64) = given.strip_prefix("v1,") else {
                continue;
            };
            if let Ok(given) = STANDARD.decode(b64)
                && given.len() == expected.len()
                && openssl::memcmp::eq(&given, &expected)
            {
                return Ok(());
            }
        }
    }
    Err(SignatureError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries' test suites.
    #[test]
    fn signs_like_the_reference_libraries() {
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("key");
        let body = br#"{"test": 2432232314}"#;
        let signature = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).expect("sign");
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let now = 1614265330;
        let header = format!("v1,bm90IGl0 {signature}");
        assert_eq!(
            verify(
                std::slice::from_ref(&key),
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "1614265330",
                &header,
                body,
                now
            ),
            Ok(())
        );
        assert_eq!(
            verify(
                std::slice::from_ref(&key),
                "msg_other",
                "1614265330",
                &header,
                body,
                now
            ),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(
                &[key],
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "1614265330",
                &header,
                body,
                now + 600
            ),
            Err(SignatureError::Timestamp)
        );
    }

    #[test]
    fn secrets_are_whsec_and_32_bytes() {
        let secret = generate_secret().expect("secret");
        assert!(secret.starts_with("whsec_"));
        assert_eq!(secret_key(&secret).map(|k| k.len()), Some(32));
        assert_ne!(secret, generate_secret().expect("secret"));
    }
}
