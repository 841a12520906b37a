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
use openssl::symm::{Cipher, Crypter, Mode, decrypt_aead};

const MAGIC: &[u8; 3] = b"SB1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Label of the key derived (HMAC-SHA256) from an at-rest key for delivery reference tokens.
const TOKEN_LABEL: &[u8] = b"switchboard/reference-token/delivery/v1";
/// Prefix of a delivery reference token, and of a delivery id.
const TOKEN_PREFIX: &str = "r";
const DELIVERY_PREFIX: &str = "dlv_";

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

/// One AES-256 key and its id (first 8 bytes of its SHA-256, hex), with the key derived
/// from it for reference tokens.
#[derive(Clone)]
struct Key {
    id: String,
    bytes: [u8; 32],
    token: [u8; 32],
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
        let token = derive(&bytes, TOKEN_LABEL)?;
        Ok(Self {
            id: hex::encode(&digest[..8]),
            bytes,
            token,
        })
    }
}

/// The keys this daemon can seal and open with. `Debug` prints key ids only. Cheap to clone:
/// every clone shares one copy of the key material (each service and request holds one).
#[derive(Clone)]
pub struct Keyring {
    keys: std::sync::Arc<Keys>,
}

struct Keys {
    current: Key,
    all: HashMap<String, Key>,
}

impl Keys {
    /// The current key, then every previous one (lookups that must match values made under
    /// any key try the current one first).
    fn current_first(&self) -> impl Iterator<Item = &Key> {
        std::iter::once(&self.current).chain(self.all.values().filter(|k| k.id != self.current.id))
    }
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.keys.current.id)
            .field("keys", &self.keys.all.len())
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
        Ok(Self {
            keys: std::sync::Arc::new(Keys { current, all }),
        })
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
        &self.keys.current.id
    }

    /// Encrypts `plain`, bound to `context` (e.g. the row id).
    pub fn seal(&self, plain: &[u8], context: &str) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand_bytes(&mut nonce)?;
        // Encrypted straight into the output (one buffer the size of the plaintext, not two:
        // attachments are megabytes).
        let cipher = Cipher::aes_256_gcm();
        let mut crypter = Crypter::new(
            cipher,
            Mode::Encrypt,
            &self.keys.current.bytes,
            Some(&nonce),
        )?;
        crypter.aad_update(context.as_bytes())?;
        let id = self.keys.current.id.as_bytes();
        let header = MAGIC.len() + 1 + id.len() + NONCE_LEN;
        // Zeroed by the allocator (fresh pages for a large buffer), not byte by byte.
        let mut out = vec![0u8; header + plain.len() + cipher.block_size() + TAG_LEN];
        out[..MAGIC.len()].copy_from_slice(MAGIC);
        out[MAGIC.len()] = id.len() as u8;
        out[MAGIC.len() + 1..header - NONCE_LEN].copy_from_slice(id);
        out[header - NONCE_LEN..header].copy_from_slice(&nonce);
        let written = crypter.update(plain, &mut out[header..])?;
        let written = written + crypter.finalize(&mut out[header + written..])?;
        let end = header + written;
        crypter.get_tag(&mut out[end..end + TAG_LEN])?;
        out.truncate(end + TAG_LEN);
        Ok(out)
    }

    /// The reference token a third party sees instead of a delivery id (in Message-IDs, VERP
    /// return paths, provider callback URLs): the id's 128-bit ULID enciphered with AES-256
    /// under a key derived from the current at-rest key, in lowercase Crockford base32 with an
    /// `r` prefix. Without the key a token can neither be made for a chosen delivery nor be
    /// read back to an id, and tokens of consecutive ids share nothing; with it the id comes
    /// back without a lookup table. `None` for a value that is not a delivery id.
    pub fn delivery_token(&self, delivery_id: &str) -> Option<String> {
        let ulid = delivery_id
            .strip_prefix(DELIVERY_PREFIX)
            .and_then(|u| ulid::Ulid::from_string(u).ok())?;
        let block = aes_block(&self.keys.current.token, &ulid.to_bytes(), true)?;
        let token = ulid::Ulid::from_bytes(block).to_string().to_lowercase();
        Some(format!("{TOKEN_PREFIX}{token}"))
    }

    /// The delivery ids a token may stand for: one per configured key (tokens made before a
    /// key rotation still resolve). Callers look each up and bind it to the connector and
    /// organization the token arrived through; a forged token yields ids that do not exist.
    pub fn delivery_ids_for_token(&self, token: &str) -> Vec<String> {
        let Some(ulid) = token
            .strip_prefix(TOKEN_PREFIX)
            .filter(|t| t.len() == 26)
            .and_then(|t| ulid::Ulid::from_string(t).ok())
        else {
            return Vec::new();
        };
        self.keys
            .current_first()
            .filter_map(|key| aes_block(&key.token, &ulid.to_bytes(), false))
            .map(|plain| {
                let id = ulid::Ulid::from_bytes(plain).to_string().to_lowercase();
                format!("{DELIVERY_PREFIX}{id}")
            })
            .collect()
    }

    /// The keyed digests of an SSN (`domain::identifier`), under the current key first and then
    /// every previous one: what is stored is the first; a lookup tries them all, so digests
    /// stored before a rotation still match. Without the key a digest cannot be reversed or
    /// made for a guessed number (the space of SSNs is small enough to enumerate a plain hash).
    pub fn identifier_digests(&self, ssn: &str) -> Vec<String> {
        let value = crate::domain::identifier::normalized_ssn(ssn);
        self.keys
            .current_first()
            .filter_map(|key| {
                let derived = derive(&key.bytes, b"switchboard ssn digest v1").ok()?;
                let mac = derive(&derived, value.as_bytes()).ok()?;
                Some(format!(
                    "{}{}",
                    crate::domain::identifier::DIGEST_PREFIX,
                    hex::encode(mac)
                ))
            })
            .collect()
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
            .keys
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

/// HMAC-SHA256(`key`, `label`): a key for one purpose derived from the at-rest key.
fn derive(key: &[u8; 32], label: &[u8]) -> Result<[u8; 32], CryptoError> {
    let pkey = openssl::pkey::PKey::hmac(key)?;
    let mut signer = openssl::sign::Signer::new(MessageDigest::sha256(), &pkey)?;
    signer.update(label)?;
    let mac = signer.sign_to_vec()?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&mac[..32]);
    Ok(out)
}

/// One AES-256 block (a keyed permutation of 128-bit values), forward or back.
fn aes_block(key: &[u8; 32], block: &[u8; 16], encrypt: bool) -> Option<[u8; 16]> {
    use openssl::symm::{Crypter, Mode};
    let mode = if encrypt {
        Mode::Encrypt
    } else {
        Mode::Decrypt
    };
    let mut crypter = Crypter::new(Cipher::aes_256_ecb(), mode, key, None).ok()?;
    crypter.pad(false);
    let mut out = [0u8; 32];
    let n = crypter.update(block, &mut out).ok()?;
    let m = crypter.finalize(&mut out[n..]).ok()?;
    (n + m == 16).then(|| {
        let mut block = [0u8; 16];
        block.copy_from_slice(&out[..16]);
        block
    })
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

    #[test]
    fn delivery_tokens_hide_ids_and_round_trip_across_rotation() {
        const KEY_B: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";
        let a = Keyring::from_texts(KEY_A, &[]).expect("key");
        let id = "dlv_01jd5x7k8m0000000000000000";
        let next = "dlv_01jd5x7k8m0000000000000001";
        let token = a.delivery_token(id).expect("token");
        assert!(token.starts_with('r') && token.len() == 27, "{token}");
        assert!(
            !token.contains("01jd5x7k8m"),
            "the id shows through: {token}"
        );
        let other = a.delivery_token(next).expect("token");
        // Consecutive ids give unrelated tokens (no shared prefix beyond chance).
        let shared = token
            .chars()
            .zip(other.chars())
            .take_while(|(x, y)| x == y)
            .count();
        assert!(shared < 4, "{token} vs {other}");
        assert_eq!(a.delivery_ids_for_token(&token), vec![id.to_string()]);
        // After a rotation (B current, A previous) the old token still resolves.
        let b = Keyring::from_texts(KEY_B, &[KEY_A.to_string()]).expect("keys");
        assert!(b.delivery_ids_for_token(&token).contains(&id.to_string()));
        assert_ne!(b.delivery_token(id), Some(token.clone()));
        // Another key's holder cannot make or read tokens.
        let stranger = Keyring::from_texts(KEY_B, &[]).expect("key");
        assert!(
            !stranger
                .delivery_ids_for_token(&token)
                .contains(&id.to_string())
        );
        // Not tokens at all.
        assert!(a.delivery_ids_for_token(id).is_empty());
        assert!(a.delivery_ids_for_token("r../../etc").is_empty());
        assert!(a.delivery_ids_for_token("").is_empty());
        assert_eq!(a.delivery_token("msg_01jd5x7k8m0000000000000000"), None);
    }
}
