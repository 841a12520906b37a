//! The operator console at `/ops`: server-rendered HTML (minijinja templates compiled into
//! the binary, HTML-escaped), no script, a stylesheet we serve, and a strict
//! `Content-Security-Policy: default-src 'self'`. Sign-in takes an API key holding `admin`
//! and opens a session: a random token in an `HttpOnly; SameSite=Strict` cookie (`Secure`
//! when `server.public_url` is https or a proxy says `X-Forwarded-Proto: https`), stored
//! hashed in the database (every daemon of a fleet knows it), ended by sign-out, by
//! `server.console_idle_secs` without a request, or when the key stops being valid. Every
//! form carries the session's CSRF token (sign-in: a double-submitted one); a POST without
//! it is 403. Pages call the same services as the admin API; PHI stays masked unless a
//! "reveal" POST asks for it, which is audited.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::OnceLock;

use axum::Form;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use minijinja::Environment;
use serde::Serialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{console_grant, hash_token, new_token};
use crate::inbound::{DismissRequest, InboundStatus, ResolveRequest};
use crate::ops::{Hl7Query, Hl7ReprocessFilter, Hl7Reprocessed, ListQuery};
use crate::service::ServiceError;
use crate::store::{ConsoleSessionRow, now_ms};

const SESSION_COOKIE: &str = "sb_ops";
const PRE_COOKIE: &str = "sb_ops_pre";
const CSP: &str = "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// The console's routes (merged into the main router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ops", get(home))
        .route("/ops/console.css", get(css))
        .route("/ops/sign-in", get(sign_in_form).post(sign_in))
        .route("/ops/sign-out", post(sign_out))
        .route("/ops/dead-letters", get(dead_letters))
        .route("/ops/dead-letters/retry", post(retry_all))
        .route("/ops/dead-letters/{id}/retry", post(retry_one))
        .route("/ops/inbound", get(inbound))
        .route("/ops/inbound/{id}/resolve", post(resolve))
        .route("/ops/inbound/{id}/dismiss", post(dismiss))
        .route("/ops/direct", get(direct))
        .route("/ops/direct/{id}/release", post(release))
        .route("/ops/hl7", get(hl7))
        .route("/ops/hl7/reprocess", post(reprocess_all))
        .route("/ops/hl7/{id}", get(hl7_message))
        .route("/ops/hl7/{id}/reveal", post(hl7_reveal))
        .route("/ops/hl7/{id}/reprocess", post(reprocess_one))
        .route("/ops/channels/{name}/{action}", post(pause_channel))
        .route("/ops/connectors/{name}/{action}", post(pause_connector))
}

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // Every template ends in .html: minijinja escapes every value put into them.
        for (name, source) in [
            ("layout.html", include_str!("console/layout.html")),
            ("sign_in.html", include_str!("console/sign_in.html")),
            ("home.html", include_str!("console/home.html")),
            (
                "dead_letters.html",
                include_str!("console/dead_letters.html"),
            ),
            ("inbound.html", include_str!("console/inbound.html")),
            ("direct.html", include_str!("console/direct.html")),
            ("hl7.html", include_str!("console/hl7.html")),
            ("hl7_message.html", include_str!("console/hl7_message.html")),
        ] {
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "console template does not compile");
            }
        }
        env.add_filter("mask", mask);
        env
    })
}

/// An address with all but its last four characters hidden.
fn mask(value: String) -> String {
    let chars: Vec<char> = value.chars().collect();
    let keep = chars.len().min(4);
    let hidden = chars.len() - keep;
    "•".repeat(hidden) + &chars[hidden..].iter().collect::<String>()
}

/// A signed-in browser.
struct Session {
    token_hash: String,
    organization_id: String,
    key_id: String,
    csrf: String,
}

impl Session {
    fn actor(&self) -> String {
        format!("console:api_key:{}", self.key_id)
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn secure(state: &AppState, headers: &HeaderMap) -> bool {
    state
        .config
        .server
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"))
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn set_cookie(name: &str, value: &str, max_age: Option<u64>, secure: bool) -> HeaderValue {
    let mut cookie = format!("{name}={value}; Path=/ops; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a.as_bytes(), b.as_bytes())
}

/// The request's session, if it has a live one.
async fn session(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>, ServiceError> {
    let Some(token) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let token_hash = hash_token(&token);
    let idle_ms = i64::try_from(state.config.server.console_idle_secs.max(60))
        .unwrap_or(i64::MAX / 2)
        .saturating_mul(1000);
    let Some(row) = state
        .app
        .ops
        .store
        .console_sessions()
        .touch(&token_hash, idle_ms)
        .await?
    else {
        return Ok(None);
    };
    // The key must still be valid and hold admin (revoking it ends its sessions).
    match console_grant(state, &row.key_hash).await? {
        Some((_, _, true)) => {}
        _ => {
            state
                .app
                .ops
                .store
                .console_sessions()
                .delete(&token_hash)
                .await?;
            return Ok(None);
        }
    }
    Ok(Some(Session {
        token_hash,
        organization_id: row.organization_id,
        key_id: row.key_id,
        csrf: row.csrf_token,
    }))
}

fn page(status: StatusCode, template: &str, context: Value) -> Response {
    let body = env()
        .get_template(template)
        .and_then(|t| t.render(minijinja::value::Serde(&context)))
        .unwrap_or_else(|e| {
            tracing::error!(template, error = %e, "console page not rendered");
            "<!doctype html><title>Error</title><p>The page could not be rendered.".into()
        });
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(headers);
    response
}

fn secure_headers(headers: &mut HeaderMap) {
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
}

fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(to) = HeaderValue::from_str(to) {
        response.headers_mut().insert(LOCATION, to);
    }
    secure_headers(response.headers_mut());
    response
}

fn forbidden(why: &str) -> Response {
    page(
        StatusCode::FORBIDDEN,
        "layout.html",
        json!({"title": "Forbidden", "error": why}),
    )
}

fn failed(error: ServiceError) -> Response {
    let (status, text) = match &error {
        ServiceError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, error.to_string()),
        ServiceError::NotFound(_) => (StatusCode::NOT_FOUND, error.to_string()),
        ServiceError::Refused { detail, .. } => (StatusCode::CONFLICT, detail.clone()),
        _ => {
            tracing::error!(error = %error, "console action failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something failed on our side (logged).".to_string(),
            )
        }
    };
    page(
        status,
        "layout.html",
        json!({"title": "Not done", "error": text}),
    )
}

/// `?notice=` shown after an action.
#[derive(Debug, Default, serde::Deserialize)]
struct Notice {
    notice: Option<String>,
}

fn context(session: &Session, title: &str, notice: Option<String>, extra: Value) -> Value {
    let mut context =
        json!({"title": title, "session": true, "csrf": session.csrf, "notice": notice});
    if let (Some(map), Value::Object(extra)) = (context.as_object_mut(), extra) {
        map.extend(extra);
    }
    context
}

fn to_value(value: impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Runs `body` for a signed-in browser; others are sent to the sign-in page.
macro_rules! signed_in {
    ($state:expr, $headers:expr) => {
        match session(&$state, &$headers).await {
            Ok(Some(session)) => session,
            Ok(None) => return redirect("/ops/sign-in"),
            Err(e) => return failed(e),
        }
    };
}

/// For a POST: the session, and its CSRF token matched by the form's.
macro_rules! checked {
    ($state:expr, $headers:expr, $form:expr) => {{
        let session = signed_in!($state, $headers);
        match $form.get("csrf") {
            Some(token) if same(token, &session.csrf) => session,
            _ => return forbidden("The form's CSRF token is missing or wrong: reload the page."),
        }
    }};
}

async fn css() -> Response {
    let mut response = include_str!("console/console.css").into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    secure_headers(response.headers_mut());
    response
}

async fn sign_in_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Ok(Some(_)) = session(&state, &headers).await {
        return redirect("/ops");
    }
    let Ok(pre) = new_token() else {
        return failed(ServiceError::Internal("no randomness".into()));
    };
    let mut response = page(
        StatusCode::OK,
        "sign_in.html",
        json!({"title": "Sign in", "csrf": pre}),
    );
    response.headers_mut().append(
        SET_COOKIE,
        set_cookie(PRE_COOKIE, &pre, Some(600), secure(&state, &headers)),
    );
    response
}

async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    // Double submit: the form's token must be the one the sign-in page set as a cookie.
    match (form.get("csrf"), cookie(&headers, PRE_COOKIE)) {
        (Some(token), Some(pre)) if same(token, &pre) => {}
        _ => return forbidden("The sign-in form's CSRF token is missing or wrong: reload it."),
    }
    let key = form.get("key").map(|k| k.trim()).unwrap_or_default();
    let key_hash = hash_token(key);
    let refused = |why: &str| {
        tracing::info!("console sign-in refused");
        page(
            StatusCode::UNAUTHORIZED,
            "sign_in.html",
            json!({"title": "Sign in", "error": why, "csrf": cookie(&headers, PRE_COOKIE)}),
        )
    };
    let (key_id, organization_id) = match console_grant(&state, &key_hash).await {
        Ok(Some((key_id, organization_id, true))) => (key_id, organization_id),
        Ok(Some(_)) => return refused("This key does not hold the admin scope."),
        Ok(None) => return refused("Unknown, revoked or expired key."),
        Err(e) => return failed(e),
    };
    let (Ok(token), Ok(csrf)) = (new_token(), new_token()) else {
        return failed(ServiceError::Internal("no randomness".into()));
    };
    let now = now_ms();
    let row = ConsoleSessionRow {
        token_hash: hash_token(&token),
        organization_id,
        key_id: key_id.clone(),
        key_hash,
        csrf_token: csrf,
        created_at: now,
        last_seen_at: now,
    };
    let sessions = state.app.ops.store.console_sessions();
    if let Err(e) = sessions.create(&row).await {
        return failed(e.into());
    }
    // Sessions left idle (never signed out) are deleted as others sign in.
    let idle_ms = i64::try_from(state.config.server.console_idle_secs.max(60))
        .unwrap_or(i64::MAX / 2)
        .saturating_mul(1000);
    if let Err(e) = sessions.prune(now - idle_ms).await {
        tracing::warn!(error = %e, "idle console sessions not pruned");
    }
    tracing::info!(key_id = %key_id, "console session opened");
    let mut response = redirect("/ops");
    let secure = secure(&state, &headers);
    let headers = response.headers_mut();
    headers.append(SET_COOKIE, set_cookie(SESSION_COOKIE, &token, None, secure));
    headers.append(SET_COOKIE, set_cookie(PRE_COOKIE, "", Some(0), secure));
    response
}

async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = checked!(state, headers, form);
    if let Err(e) = state
        .app
        .ops
        .store
        .console_sessions()
        .delete(&session.token_hash)
        .await
    {
        return failed(e.into());
    }
    let mut response = redirect("/ops/sign-in");
    response.headers_mut().append(
        SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", Some(0), secure(&state, &headers)),
    );
    response
}

async fn home(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(notice): Query<Notice>,
) -> Response {
    let session = signed_in!(state, headers);
    let org = &session.organization_id;
    let ops = &state.app.ops;
    let view = match ops.channels(org).await {
        Ok(view) => view,
        Err(e) => return failed(e),
    };
    let dead = ops
        .dead_letters(
            org,
            &ListQuery {
                limit: Some(1000),
                ..Default::default()
            },
        )
        .await
        .map(|l| l.dead_letters.len());
    let unmatched = state
        .app
        .inbound
        .list(org, InboundStatus::Unmatched, 1000)
        .await
        .map(|l| l.items.len());
    let quarantined = state
        .app
        .inbound
        .direct_quarantine(org, 1000)
        .await
        .map(|l| l.items.len());
    let hl7 = ops
        .hl7_messages(
            org,
            &Hl7Query {
                limit: Some(100),
                ..Default::default()
            },
        )
        .await;
    let (dead, unmatched, quarantined, hl7) = match (dead, unmatched, quarantined, hl7) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => return failed(e),
    };
    let overview = match ops.overview(org).await {
        Ok(overview) => overview,
        Err(e) => return failed(e),
    };
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for m in &hl7.messages {
        *outcomes.entry(m.status.clone()).or_default() += 1;
    }
    page(
        StatusCode::OK,
        "home.html",
        context(
            &session,
            "Operations",
            notice.notice,
            json!({"view": to_value(&view), "dead_letters": dead, "unmatched": unmatched,
                   "quarantined": quarantined, "hl7_last": hl7.messages.first().map(to_value),
                   "hl7_outcomes": outcomes, "overview": to_value(&overview),
                   "expiry_days": crate::ops::EXPIRY_WARNING_DAYS}),
        ),
    )
}

async fn pause_channel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    pause(state, headers, "channel", name, action, form).await
}

async fn pause_connector(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    pause(state, headers, "connector", name, action, form).await
}

async fn pause(
    state: AppState,
    headers: HeaderMap,
    kind: &str,
    name: String,
    action: String,
    form: HashMap<String, String>,
) -> Response {
    let session = checked!(state, headers, form);
    let pause = match action.as_str() {
        "pause" => true,
        "resume" => false,
        _ => return failed(ServiceError::NotFound("page")),
    };
    match state
        .app
        .ops
        .set_paused(
            &session.organization_id,
            &session.actor(),
            kind,
            &name,
            pause,
            form.get("reason")
                .map(String::as_str)
                .filter(|r| !r.is_empty()),
        )
        .await
    {
        Ok(done) => redirect(&format!(
            "/ops?notice={kind}+{name}+{}{}",
            if pause { "paused" } else { "resumed" },
            if pause {
                String::new()
            } else {
                format!(";+{}+waiting+deliveries+enqueued", done.enqueued)
            }
        )),
        Err(e) => failed(e),
    }
}

async fn dead_letters(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(notice): Query<Notice>,
) -> Response {
    let session = signed_in!(state, headers);
    match state
        .app
        .ops
        .dead_letters(&session.organization_id, &ListQuery::default())
        .await
    {
        Ok(list) => page(
            StatusCode::OK,
            "dead_letters.html",
            context(
                &session,
                "Dead letters",
                notice.notice,
                json!({"list": to_value(&list)}),
            ),
        ),
        Err(e) => failed(e),
    }
}

async fn retry_all(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = checked!(state, headers, form);
    match state
        .app
        .ops
        .retry_dead_letters(&session.organization_id, &ListQuery::default())
        .await
    {
        Ok(done) => redirect(&format!(
            "/ops/dead-letters?notice={}+retried",
            done.retried
        )),
        Err(e) => failed(e),
    }
}

async fn retry_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = checked!(state, headers, form);
    match state
        .app
        .ops
        .retry_dead_letter(&session.organization_id, &id)
        .await
    {
        Ok(done) => redirect(&format!(
            "/ops/dead-letters?notice={}+retried",
            done.retried
        )),
        Err(e) => failed(e),
    }
}

async fn inbound(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(notice): Query<Notice>,
) -> Response {
    let session = signed_in!(state, headers);
    match state
        .app
        .inbound
        .list(&session.organization_id, InboundStatus::Unmatched, 100)
        .await
    {
        Ok(list) => page(
            StatusCode::OK,
            "inbound.html",
            context(
                &session,
                "Unmatched inbound",
                notice.notice,
                json!({"list": to_value(&list)}),
            ),
        ),
        Err(e) => failed(e),
    }
}

async fn resolve(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = checked!(state, headers, form);
    let request = ResolveRequest {
        patient: form.get("patient").cloned().unwrap_or_default(),
        reason: Some("resolved in the console".into()),
    };
    match state
        .app
        .inbound
        .resolve_for(&session.organization_id, &id, request, &session.actor())
        .await
    {
        Ok(_) => redirect("/ops/inbound?notice=resolved"),
        Err(e) => failed(e),
    }
}

async fn dismiss(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = checked!(state, headers, form);
    let request = DismissRequest {
        reason: form.get("reason").cloned().filter(|r| !r.is_empty()),
    };
    match state
        .app
        .inbound
        .dismiss(&session.organization_id, &id, request, &session.actor())
        .await
    {
        Ok(_) => redirect("/ops/inbound?notice=dismissed"),
        Err(e) => failed(e),
    }
}

async fn direct(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(notice): Query<Notice>,
) -> Response {
    let session = signed_in!(state, headers);
    match state
        .app
        .inbound
        .direct_quarantine(&session.organization_id, 100)
        .await
    {
        Ok(list) => page(
            StatusCode::OK,
            "direct.html",
            context(
                &session,
                "Direct quarantine",
                notice.notice,
                json!({"list": to_value(&list)}),
            ),
        ),
        Err(e) => failed(e),
    }
}

/// The Release button: the message's trust checks run again (audited); the notice says
/// where it went.
async fn release(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = checked!(state, headers, form);
    match state
        .app
        .inbound
        .release_quarantined(&session.organization_id, &id, &session.actor())
        .await
    {
        Ok(item) => redirect(&format!("/ops/direct?notice=released+{}", item.status)),
        Err(e) => failed(e),
    }
}

async fn hl7(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(notice): Query<Notice>,
) -> Response {
    let session = signed_in!(state, headers);
    let mut messages = Vec::new();
    for status in ["error", "rejected"] {
        match state
            .app
            .ops
            .hl7_messages(
                &session.organization_id,
                &Hl7Query {
                    status: Some(status.into()),
                    ..Default::default()
                },
            )
            .await
        {
            Ok(list) => messages.extend(list.messages),
            Err(e) => return failed(e),
        }
    }
    messages.sort_by(|a, b| b.received_at.cmp(&a.received_at));
    page(
        StatusCode::OK,
        "hl7.html",
        context(
            &session,
            "HL7 errors",
            notice.notice,
            json!({"messages": to_value(&messages)}),
        ),
    )
}

async fn show_hl7(state: &AppState, session: &Session, id: &str, reveal: bool) -> Response {
    match state
        .app
        .ops
        .hl7_message(&session.organization_id, id, reveal, &session.actor())
        .await
    {
        Ok(view) => page(
            StatusCode::OK,
            "hl7_message.html",
            context(
                session,
                "HL7 message",
                None,
                json!({"view": to_value(&view)}),
            ),
        ),
        Err(e) => failed(e),
    }
}

async fn hl7_message(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let session = signed_in!(state, headers);
    show_hl7(&state, &session, &id, false).await
}

/// Revealing is a POST (audited as `hl7_revealed` under the console's key), never a link.
async fn hl7_reveal(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = checked!(state, headers, form);
    show_hl7(&state, &session, &id, true).await
}

fn reprocessed(result: Result<Hl7Reprocessed, ServiceError>) -> Response {
    match result {
        Ok(done) => redirect(&format!(
            "/ops/hl7?notice={}+reprocessed,+{}+applied",
            done.reprocessed,
            done.messages
                .iter()
                .filter(|m| m.status == "applied")
                .count()
        )),
        Err(e) => failed(e),
    }
}

async fn reprocess_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = checked!(state, headers, form);
    reprocessed(
        state
            .app
            .ops
            .hl7_reprocess(&session.organization_id, &id, &session.actor())
            .await,
    )
}

async fn reprocess_all(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = checked!(state, headers, form);
    let mut all = Hl7Reprocessed {
        reprocessed: 0,
        messages: Vec::new(),
    };
    for status in ["error", "rejected"] {
        let filter = Hl7ReprocessFilter {
            status: Some(status.into()),
            ..Default::default()
        };
        match state
            .app
            .ops
            .hl7_reprocess_all(&session.organization_id, &filter, &session.actor())
            .await
        {
            Ok(done) => {
                all.reprocessed += done.reprocessed;
                all.messages.extend(done.messages);
            }
            Err(e) => return failed(e),
        }
    }
    reprocessed(Ok(all))
}
