//! Bearer API keys. A key is `sbk_` + 32 random bytes (hex); only its SHA-256 is stored.
//! Each key belongs to one organization, and every query is scoped to it: records of other
//! organizations answer 404, as if absent. A key carries scopes (`send`, `read`, `admin`,
//! independent of each other) and may expire; [`required_scope`] is the one table saying
//! which scope each `/v1` route needs, and a route missing from it needs `admin`.
//!
//! Verified keys are cached for [`CACHE_TTL`] (under a second), counted from the moment the
//! database was asked: a key revoked on any daemon of a fleet, or by `switchboard keys
//! revoke`, is refused everywhere within that time.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::Method;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use openssl::hash::{MessageDigest, hash};

use super::AppState;
use super::problem::Problem;
use crate::keys::{KeyGrant, KeyService};
use crate::service::ServiceError;

/// How long a verified key is trusted without asking the database again. Revocation and
/// expiry take effect on every daemon within this time.
pub const CACHE_TTL: Duration = Duration::from_millis(500);

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Write clinical and operational records: send messages, upsert patients, appointments
    /// and recalls, mark messages read.
    Send,
    /// Read records: messages, threads, patients, appointments, events, inbound, staff, rules.
    Read,
    /// Change how the organization works: reminder rules, the staff directory, filing
    /// unmatched inbound items.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Send, Scope::Read, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Send => "send",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "send" => Ok(Scope::Send),
            "read" => Ok(Scope::Read),
            "admin" => Ok(Scope::Admin),
            other => Err(format!("unknown scope {other:?}; known: send, read, admin")),
        }
    }
}

/// The scopes a key holds, as stored: space-separated words (unknown words grant nothing).
pub fn parse_scopes(stored: &str) -> Vec<Scope> {
    let mut scopes: Vec<Scope> = stored
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    scopes.sort();
    scopes.dedup();
    scopes
}

/// Scopes as stored (`send read admin`).
pub fn format_scopes(scopes: &[Scope]) -> String {
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The scope a route needs: the single table of the API's permissions (README "API keys").
/// A route not listed needs `admin`, so a route added without a decision fails closed.
pub fn required_scope(method: &Method, route: &str) -> Scope {
    match (method.as_str(), route) {
        ("POST", "/v1/messages")
        | ("POST", "/v1/app-events")
        | ("POST", "/v1/messages/{id}/read")
        | ("PUT", "/v1/patients/{external_id}")
        | ("PUT", "/v1/appointments/{filler_id}")
        | ("PUT", "/v1/recalls/{external_id}") => Scope::Send,
        (
            "GET" | "HEAD",
            "/v1/messages/{id}"
            | "/v1/messages/{id}/attachments/{attachment_id}"
            | "/v1/threads/{id}/messages"
            | "/v1/patients/{external_id}"
            | "/v1/patients/{external_id}/appointments"
            | "/v1/appointments/{filler_id}"
            | "/v1/appointments/{filler_id}/reminders"
            | "/v1/recalls/{external_id}"
            | "/v1/events"
            | "/v1/events/stream"
            | "/v1/inbound"
            | "/v1/inbound/{id}"
            | "/v1/staff"
            | "/v1/reminder-rules",
        ) => Scope::Read,
        // PUT /v1/reminder-rules/{id}, PUT /v1/staff/{external_id},
        // POST /v1/inbound/{id}/resolve|reassign|dismiss, and anything not listed above.
        _ => Scope::Admin,
    }
}

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

/// A verified key: whose it is and what it may do.
#[derive(Debug, Clone)]
struct Grant {
    key_id: String,
    organization_id: String,
    scopes: Vec<Scope>,
    expires_at: Option<i64>,
}

impl From<KeyGrant> for Grant {
    fn from(row: KeyGrant) -> Self {
        Self {
            scopes: parse_scopes(&row.scopes),
            key_id: row.id,
            organization_id: row.organization_id,
            expires_at: row.expires_at,
        }
    }
}

/// Recently verified keys by hash; `None` remembers an unknown or revoked key for the same
/// short time, so a client hammering with a dead key costs one query per [`CACHE_TTL`].
#[derive(Clone, Default)]
pub struct KeyCache {
    entries: Arc<Mutex<HashMap<String, Cached>>>,
}

/// A grant (or its absence) and when the database was asked.
type Cached = (Option<Grant>, Instant);

impl KeyCache {
    fn get(&self, hash: &str) -> Option<Option<Grant>> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(hash)
            .filter(|(_, asked_at)| asked_at.elapsed() < CACHE_TTL)
            .map(|(grant, _)| grant.clone())
    }

    fn put(&self, hash: String, grant: Option<Grant>, asked_at: Instant) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() > 10_000 {
                entries.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
            }
            if entries.len() > 10_000 {
                entries.clear();
            }
            entries.insert(hash, (grant, asked_at));
        }
    }

    /// The key's grant, from the cache when asked less than [`CACHE_TTL`] ago.
    async fn verify(
        &self,
        keys: &KeyService,
        key_hash: &str,
    ) -> Result<Option<Grant>, ServiceError> {
        if let Some(grant) = self.get(key_hash) {
            return Ok(grant);
        }
        // The entry's age counts from before the query: a revocation that commits while the
        // query runs is seen at most CACHE_TTL after it.
        let asked_at = Instant::now();
        let grant = keys.grant(key_hash).await?.map(Grant::from);
        self.put(key_hash.to_string(), grant.clone(), asked_at);
        Ok(grant)
    }
}

/// The organization the request's API key belongs to, once the key is verified (live, not
/// expired) and holds the scope the route needs ([`required_scope`]).
pub struct Org(pub String);

impl FromRequestParts<AppState> for Org {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Org(authorize(parts, state).await?.organization_id))
    }
}

/// [`Org`] with the API key's id, for handlers that record who did what (the audit table's
/// actor, `api_key:<id>`).
pub struct Caller {
    pub organization_id: String,
    pub key_id: String,
}

impl Caller {
    /// The audit actor: `api_key:<key id>`.
    pub fn actor(&self) -> String {
        format!("api_key:{}", self.key_id)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let grant = authorize(parts, state).await?;
        Ok(Caller {
            organization_id: grant.organization_id,
            key_id: grant.key_id,
        })
    }
}

/// A live API key as the console sees it: `(key id, organization id, holds admin)`, or
/// `None` for an unknown, revoked or expired key. `key_hash` is [`hash_token`]'s.
pub(super) async fn console_grant(
    state: &AppState,
    key_hash: &str,
) -> Result<Option<(String, String, bool)>, ServiceError> {
    let Some(grant) = state.keys.verify(&state.app.keys, key_hash).await? else {
        return Ok(None);
    };
    if grant
        .expires_at
        .is_some_and(|at| at <= chrono::Utc::now().timestamp_millis())
    {
        return Ok(None);
    }
    let admin = grant.scopes.contains(&Scope::Admin);
    Ok(Some((grant.key_id, grant.organization_id, admin)))
}

/// Verifies the bearer key (live, not expired) and that it holds the route's scope.
async fn authorize(parts: &Parts, state: &AppState) -> Result<Grant, Problem> {
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
    let Some(grant) = state.keys.verify(&state.app.keys, &key_hash).await? else {
        return Err(Problem::unauthorized());
    };
    if grant
        .expires_at
        .is_some_and(|at| at <= chrono::Utc::now().timestamp_millis())
    {
        tracing::info!(key_id = %grant.key_id, "expired API key refused");
        return Err(Problem::unauthorized());
    }
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|p| p.as_str())
        .unwrap_or_default();
    let needed = required_scope(&parts.method, route);
    if !grant.scopes.contains(&needed) {
        tracing::info!(key_id = %grant.key_id, scope = %needed, "API key lacks a scope");
        return Err(Problem::insufficient_scope(needed.as_str()));
    }
    Ok(grant)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Revocation reaches every daemon within a second: no verified key is trusted longer.
    #[test]
    fn the_cache_forgets_within_a_second() {
        assert!(CACHE_TTL <= Duration::from_secs(1));
    }

    #[test]
    fn routes_need_the_scope_the_readme_says() {
        let get = Method::GET;
        assert_eq!(required_scope(&Method::POST, "/v1/messages"), Scope::Send);
        assert_eq!(required_scope(&get, "/v1/messages/{id}"), Scope::Read);
        assert_eq!(required_scope(&get, "/v1/events/stream"), Scope::Read);
        assert_eq!(required_scope(&Method::POST, "/v1/app-events"), Scope::Send);
        assert_eq!(
            required_scope(&get, "/v1/webhook-endpoints/{id}"),
            Scope::Admin
        );
        assert_eq!(
            required_scope(&get, "/v1/webhook-endpoints/{id}/deliveries"),
            Scope::Admin
        );
        assert_eq!(
            required_scope(&get, "/v1/messages/{id}/attachments/{attachment_id}"),
            Scope::Read
        );
        assert_eq!(
            required_scope(&Method::PUT, "/v1/patients/{external_id}"),
            Scope::Send
        );
        assert_eq!(
            required_scope(&Method::PUT, "/v1/reminder-rules/{id}"),
            Scope::Admin
        );
        assert_eq!(required_scope(&get, "/v1/reminder-rules"), Scope::Read);
        assert_eq!(
            required_scope(&Method::PUT, "/v1/staff/{external_id}"),
            Scope::Admin
        );
        for decision in ["resolve", "reassign", "dismiss"] {
            assert_eq!(
                required_scope(&Method::POST, &format!("/v1/inbound/{{id}}/{decision}")),
                Scope::Admin
            );
        }
        // Fails closed.
        assert_eq!(required_scope(&get, "/v1/not-yet-decided"), Scope::Admin);
        assert_eq!(
            required_scope(&Method::DELETE, "/v1/messages/{id}"),
            Scope::Admin
        );
    }

    #[test]
    fn scopes_round_trip_and_ignore_unknown_words() {
        assert_eq!(parse_scopes("admin read send"), Scope::ALL.to_vec());
        assert_eq!(parse_scopes("read bogus"), vec![Scope::Read]);
        assert_eq!(format_scopes(&[Scope::Admin, Scope::Send]), "send admin");
        assert!("root".parse::<Scope>().is_err());
    }
}
