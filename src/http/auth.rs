//! Bearer API keys. A key is `sbk_` + 32 random bytes (hex); only its SHA-256 is stored.
//! Each key belongs to one organization, and every query is scoped to it: records of other
//! organizations answer 404, as if absent. Recently verified keys are cached for 30 s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use openssl::hash::{MessageDigest, hash};

use super::AppState;
use super::problem::Problem;

const CACHE_TTL: Duration = Duration::from_secs(30);

/// A fresh API key (shown once, never stored).
pub fn new_token() -> Result<String, openssl::error::ErrorStack> {
    let mut bytes = [0u8; 32];
    openssl::rand::rand_bytes(&mut bytes)?;
    Ok(format!("sbk_{}", hex::encode(bytes)))
}

/// What is stored for a key.
pub fn hash_token(token: &str) -> String {
    hash(MessageDigest::sha256(), token.as_bytes())
        .map(hex::encode)
        .unwrap_or_default()
}

#[derive(Clone, Default)]
pub struct KeyCache {
    entries: Arc<Mutex<HashMap<String, (String, Instant)>>>,
}

impl KeyCache {
    fn get(&self, hash: &str) -> Option<String> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(hash)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(org, _)| org.clone())
    }

    fn put(&self, hash: String, organization_id: String) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() > 10_000 {
                entries.clear();
            }
            entries.insert(hash, (organization_id, Instant::now()));
        }
    }
}

/// The organization the request's API key belongs to.
pub struct Org(pub String);

impl FromRequestParts<AppState> for Org {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(Problem::unauthorized)?;
        let key_hash = hash_token(token);
        if let Some(org) = state.keys.get(&key_hash) {
            return Ok(Org(org));
        }
        match state.store.organization_for_key(&key_hash).await? {
            Some(org) => {
                state.keys.put(key_hash, org.clone());
                Ok(Org(org))
            }
            None => Err(Problem::unauthorized()),
        }
    }
}
