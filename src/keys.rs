//! API key grants: what a bearer key's hash is allowed (its organization, scopes, expiry).
//! What each scope permits is decided in `http::auth`; keys are created, listed, revoked and
//! rotated by `cli_keys`.

use crate::service::ServiceError;
use crate::store::Store;

pub use crate::store::KeyGrant;

/// Looks keys up by hash.
#[derive(Clone)]
pub struct KeyService {
    pub store: Store,
}

impl KeyService {
    /// The grant of the live (unrevoked) key with this SHA-256, if any. Expiry is the
    /// caller's check, so a cached grant expires on time.
    pub async fn grant(&self, key_hash: &str) -> Result<Option<KeyGrant>, ServiceError> {
        Ok(self.store.api_keys().grant(key_hash).await?)
    }
}
