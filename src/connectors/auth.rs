//! Request authentication per manifest: basic, bearer, an API-key header, or OAuth 2.0 client
//! credentials (token fetched, cached until shortly before it expires).

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::manifest::Auth;
use crate::channels::ChannelError;

pub struct AuthState {
    scheme: Auth,
    token: Mutex<Option<(String, Instant)>>,
}

impl AuthState {
    pub fn new(scheme: Auth) -> Self {
        Self {
            scheme,
            token: Mutex::new(None),
        }
    }

    /// Adds credentials to a request. `value(key)` renders the manifest's auth templates.
    pub async fn apply(
        &self,
        request: reqwest::RequestBuilder,
        value: &(dyn Fn(&str) -> Result<String, ChannelError> + Sync),
        client: &reqwest::Client,
    ) -> Result<reqwest::RequestBuilder, ChannelError> {
        Ok(match &self.scheme {
            Auth::None => request,
            Auth::Basic { .. } => request.basic_auth(value("username")?, Some(value("password")?)),
            Auth::Bearer { .. } => request.bearer_auth(value("token")?),
            Auth::Header { header, .. } => request.header(header.as_str(), value("value")?),
            Auth::Oauth2ClientCredentials { scope, .. } => {
                let token = self.oauth_token(value, scope.as_deref(), client).await?;
                request.bearer_auth(token)
            }
        })
    }

    async fn oauth_token(
        &self,
        value: &(dyn Fn(&str) -> Result<String, ChannelError> + Sync),
        scope: Option<&str>,
        client: &reqwest::Client,
    ) -> Result<String, ChannelError> {
        let mut cached = self.token.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let mut form = vec![("grant_type", "client_credentials".to_string())];
        if let Some(scope) = scope {
            form.push(("scope", scope.to_string()));
        }
        let response = client
            .post(value("token_url")?)
            .basic_auth(value("client_id")?, Some(value("client_secret")?))
            .form(&form)
            .send()
            .await
            .map_err(|_| ChannelError::Transient("OAuth token endpoint unreachable".into()))?;
        let status = response.status();
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|_| ChannelError::Transient("OAuth token answer is not JSON".into()))?;
        if !status.is_success() {
            let reason = format!("OAuth token refused: HTTP {}", status.as_u16());
            return Err(if status.is_server_error() {
                ChannelError::Transient(reason)
            } else {
                ChannelError::Permanent(reason)
            });
        }
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| ChannelError::Transient("OAuth answer has no access_token".into()))?
            .to_string();
        let lifetime = body["expires_in"].as_u64().unwrap_or(300);
        let until = Instant::now() + Duration::from_secs(lifetime.saturating_sub(30).max(1));
        *cached = Some((token.clone(), until));
        Ok(token)
    }
}
