//! At-rest envelope encryption for message bodies, attachments and raw inbound items.
//!
//! AES-256-GCM (OpenSSL) under a key read from a file or systemd credential. A sealed value is
//! self-describing: `SB1 | key-id length | key id | 12-byte nonce | ciphertext | 16-byte tag`, so
//! keys can rotate: new rows use the current key, old rows open with any key still listed in
//! `security.previous_keys`. The associated data binds a ciphertext to the row it belongs to,
//! so a sealed body copied onto another row does not open.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use openssl::hash::{MessageDigest, hash};
use openssl::rand::rand_bytes;
use openssl::symm::{Cipher, decrypt_aead, encrypt_aead};

const MAGIC: &[u8; 3] = b"SB1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("at-rest key: {0}")]
    BadKey(String),
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed with key {0}, which is not configured")]
    UnknownKey(String),
    #[error("sealed value failed authentication (wrong key, or tampered)")]
    Authentication,
    #[error("openssl: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    #[error("key file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// One AES-256 key and its id (first 8 bytes of its SHA-256, hex).
#[derive(Clone)]
struct Key {
    id: String,
    bytes: [u8; 32],
}

impl Key {
    fn parse(text: &str) -> Result<Self, CryptoError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|e| CryptoError::BadKey(e.to_string()))?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| CryptoError::BadKey("expected 32 bytes as hex or base64".into()))?
        };
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| CryptoError::BadKey("expected exactly 32 bytes".into()))?;
        let digest = hash(MessageDigest::sha256(), &bytes)?;
        Ok(Self {
            id: hex::encode(&digest[..8]),
            bytes,
        })
    }
}

/// The keys this daemon can seal and open with. `Debug` prints key ids only.
#[derive(Clone)]
pub struct Keyring {
    current: Key,
    all: HashMap<String, Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.id)
            .field("keys", &self.all.len())
            .finish()
    }
}

impl Keyring {
    /// A keyring from the current key's text and any previous keys' texts.
    pub fn from_texts(current: &str, previous: &[String]) -> Result<Self, CryptoError> {
        let current = Key::parse(current)?;
        let mut all = HashMap::new();
        for text in previous {
            let key = Key::parse(text)?;
            all.insert(key.id.clone(), key);
        }
        all.insert(current.id.clone(), current.clone());
        Ok(Self { current, all })
    }

    /// Reads the key file, generating a fresh random key (mode 0600, in an owner-only
    /// directory when it creates one) when it does not exist.
    /// Returns whether a key was generated, so the caller can say so.
    pub fn load_or_generate(path: &Path) -> Result<(String, bool), CryptoError> {
        let io = |source| CryptoError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((text, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                rand_bytes(&mut bytes)?;
                let text = hex::encode(bytes);
                if let Some(dir) = path.parent() {
                    crate::files::private_dir(dir).map_err(io)?;
                }
                crate::files::create_private(path, text.as_bytes()).map_err(io)?;
                Ok((text, true))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The id of the key a sealed value names (`None` when it is not a sealed value).
    pub fn sealed_key_id(sealed: &[u8]) -> Option<&str> {
        let rest = sealed.strip_prefix(MAGIC)?;
        let (&id_len, rest) = rest.split_first()?;
        std::str::from_utf8(rest.get(..usize::from(id_len))?).ok()
    }

    /// The id of the key new values are sealed with.
    pub fn current_key_id(&self) -> &str {
        &self.current.id
    }

    /// Encrypts `plain`, bound to `context` (e.g. the row id).
    pub fn seal(&self, plain: &[u8], context: &str) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand_bytes(&mut nonce)?;
        let mut tag = [0u8; TAG_LEN];
        let ct = encrypt_aead(
            Cipher::aes_256_gcm(),
            &self.current.bytes,
            Some(&nonce),
            context.as_bytes(),
            plain,
            &mut tag,
        )?;
        let id = self.current.id.as_bytes();
        let mut out = Vec::with_capacity(4 + id.len() + NONCE_LEN + ct.len() + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Decrypts a value sealed by [`Keyring::seal`] with the same `context`.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, CryptoError> {
        let rest = sealed.strip_prefix(MAGIC).ok_or(CryptoError::Malformed)?;
        let (&id_len, rest) = rest.split_first().ok_or(CryptoError::Malformed)?;
        let id_len = usize::from(id_len);
        if rest.len() < id_len + NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Malformed);
        }
        let (id, rest) = rest.split_at(id_len);
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let id = std::str::from_utf8(id).map_err(|_| CryptoError::Malformed)?;
        let key = self
            .all
            .get(id)
            .ok_or_else(|| CryptoError::UnknownKey(id.to_string()))?;
        decrypt_aead(
            Cipher::aes_256_gcm(),
            &key.bytes,
            Some(nonce),
            context.as_bytes(),
            ct,
            tag,
        )
        .map_err(|_| CryptoError::Authentication)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const KEY_B: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

    #[test]
    fn seals_and_opens_with_the_same_context() {
        let ring = Keyring::from_texts(KEY_A, &[]).expect("key");
        let sealed = ring.seal(b"hello", "msg_1").expect("seal");
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
        assert_eq!(ring.open(&sealed, "msg_1").expect("open"), b"hello");
        assert!(matches!(
            ring.open(&sealed, "msg_2"),
            Err(CryptoError::Authentication)
        ));
    }

    #[test]
    fn rotated_keys_still_open_old_values() {
        let old = Keyring::from_texts(KEY_A, &[]).expect("old");
        let sealed = old.seal(b"body", "ctx").expect("seal");
        let rotated = Keyring::from_texts(KEY_B, &[KEY_A.to_string()]).expect("rotated");
        assert_ne!(rotated.current_key_id(), old.current_key_id());
        assert_eq!(rotated.open(&sealed, "ctx").expect("open"), b"body");
        let new_only = Keyring::from_texts(KEY_B, &[]).expect("new");
        assert!(matches!(
            new_only.open(&sealed, "ctx"),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn tampering_and_garbage_are_refused() {
        let ring = Keyring::from_texts(KEY_A, &[]).expect("key");
        let mut sealed = ring.seal(b"body", "ctx").expect("seal");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(ring.open(&sealed, "ctx").is_err());
        assert!(matches!(
            ring.open(b"SB", "ctx"),
            Err(CryptoError::Malformed)
        ));
        assert!(Keyring::from_texts("too short", &[]).is_err());
    }
}
