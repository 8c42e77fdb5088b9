//! The Developer Portal (`/portal`): the operator's web console, server-rendered from askama
//! templates (`templates/portal/`), usable without JavaScript. Contract: section 1 of the shared
//! `surfaces.md`; labels there are binding because an acceptance suite clicks them.
//!
//! - Sign-in with the admin token (checked by [`AppState::is_admin_token`], constant-time),
//!   throttled per client ([`session::SignInThrottle`]); the session cookie `custody_portal` is
//!   HttpOnly, SameSite=Strict, Path=/portal, Secure on https, 8 hours, stored as a keyed hash.
//! - Every form carries the session's CSRF token; every page the Wallet's security headers
//!   (`html::security_headers`) and a CSP that allows only this server's style sheet and copy
//!   script (`/portal/static/…`): no inline script or style.
//! - Every change goes through the same use cases as the admin API (`state.identity`,
//!   `state.vault`, `state.signin`, `state.webhooks`) with the actor `operator:portal`, so the
//!   portal has no rule of its own and writes the same audit rows.
//!
//! Submodules: `session` (tokens, CSRF, throttle), `pages` (apps, API keys), `identity` (the
//! Identity page: IdP, OIDC sign-in, webhooks), `people` (users, grants, audit), `catalog`
//! (providers, policies).

mod catalog;
mod identity;
mod pages;
mod people;
pub mod session;

pub use catalog::{delete_policy, delete_provider, policies_page, providers_page, put_policy, put_provider};
pub use identity::{
    add_provider, discover, identity_page, oidc_save, refresh_keys, remove_idp, save_mappings, webhooks_disable,
    webhooks_enable, webhooks_rotate,
};
pub use pages::{api_keys_page, app_page, apps_page, create_api_key, create_app, delete_api_key};
pub use people::{audit_page, deprovision, grants_page, revoke_grant, user_page, users_page};
pub use session::SignInThrottle;

use crate::html;
use crate::json::{full, rfc3339, HttpResponse};
use crate::problem::ApiError;
use crate::routes::Call;
use crate::state::AppState;
use askama::Template;
use custody_identity::audit::Actor;
use custody_identity::{App, UnixTime};
use custody_store::prelude::*;
use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use hyper::{Response, StatusCode};
use std::collections::HashMap;
use std::sync::Arc;

/// The portal's session cookie.
pub const SESSION_COOKIE: &str = "custody_portal";

/// The portal's Content-Security-Policy: only this server's style sheet and copy script.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLE: &str = include_str!("../../static/portal.css");
const COPY_SCRIPT: &str = include_str!("../../static/copy.js");

/// The actor of every portal change.
fn actor() -> Actor {
    Actor::portal()
}

/// A time as the portal shows it everywhere: `2026-11-22 10:00:00 UTC`.
pub fn utc(t: UnixTime) -> String {
    format!("{} UTC", rfc3339(t).replace('T', " ").trim_end_matches('Z'))
}

/// [`utc`] or "never".
pub fn utc_or(t: Option<UnixTime>, none: &str) -> String {
    t.map(utc).unwrap_or_else(|| none.to_owned())
}

/// One link of an app's navigation.
#[derive(Debug, Clone)]
pub struct NavLink {
    pub label: &'static str,
    pub href: String,
    pub current: bool,
}

/// What every page's layout needs.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub title: String,
    pub csrf: String,
    pub signed_in: bool,
    pub app_name: Option<String>,
    pub nav: Vec<NavLink>,
    pub notice: Option<String>,
    pub error: Option<String>,
}

/// Errors shown next to their fields.
#[derive(Debug, Clone, Default)]
pub struct FieldErrors(Vec<(&'static str, String)>);

impl FieldErrors {
    pub fn one(field: &'static str, message: impl Into<String>) -> Self {
        FieldErrors(vec![(field, message.into())])
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.iter().find(|(f, _)| *f == field).map(|(_, m)| m.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The signed-in operator of a request.
#[derive(Debug)]
pub struct Operator {
    pub csrf: String,
    token: String,
}

impl Operator {
    /// The layout of a page outside any app.
    pub fn layout(&self, title: impl Into<String>) -> Layout {
        Layout { title: title.into(), csrf: self.csrf.clone(), signed_in: true, ..Layout::default() }
    }

    /// The layout of a page of `app`, with `section` marked in its navigation.
    pub fn app_layout(&self, app: &App, section: &str) -> Layout {
        let base = format!("/portal/apps/{}", app.id);
        let nav = [
            ("API keys", "api-keys"),
            ("Identity", "identity"),
            ("Users", "users"),
            ("Grants", "grants"),
            ("Providers", "providers"),
            ("Policies", "policies"),
            ("Audit", "audit"),
        ]
        .into_iter()
        .map(|(label, path)| NavLink { label, href: format!("{base}/{path}"), current: path == section })
        .collect();
        let label = nav_label(section);
        Layout {
            title: format!("{label}: {}", app.name.as_str()),
            app_name: Some(app.name.as_str().to_owned()),
            nav,
            ..self.layout("")
        }
    }
}

fn nav_label(section: &str) -> &'static str {
    match section {
        "identity" => "Identity",
        "users" => "Users",
        "grants" => "Grants",
        "providers" => "Providers",
        "policies" => "Policies",
        "audit" => "Audit",
        _ => "API keys",
    }
}

/// A page or redirect to answer instead of the one asked for.
pub struct Answer(Box<HttpResponse>);

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Answer").field(&self.0.status()).finish()
    }
}

impl From<HttpResponse> for Answer {
    fn from(r: HttpResponse) -> Self {
        Answer(Box::new(r))
    }
}

pub type PortalResult = Result<HttpResponse, Answer>;

/// Ends a portal handler: whatever it answered, as a response.
pub fn finish(result: PortalResult) -> Result<HttpResponse, ApiError> {
    Ok(result.unwrap_or_else(|Answer(r)| *r))
}

/// A rendered template as a page with the portal's headers.
pub fn page(status: StatusCode, template: &impl Template) -> HttpResponse {
    match template.render() {
        Ok(markup) => html_response(status, markup),
        Err(e) => {
            tracing::error!(error = %e, "a portal template failed to render");
            html_response(StatusCode::INTERNAL_SERVER_ERROR, "<!DOCTYPE html><title>Error</title><p>Error</p>".into())
        }
    }
}

fn html_response(status: StatusCode, markup: String) -> HttpResponse {
    let mut response = Response::new(full(markup));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    portal_headers(&mut response);
    response
}

/// The Wallet's security headers plus the portal's CSP.
fn portal_headers(response: &mut HttpResponse) {
    html::security_headers(response);
    response.headers_mut().insert(HeaderName::from_static("content-security-policy"), HeaderValue::from_static(CSP));
}

/// A 303 to `location` with the portal's headers.
pub fn see_other(location: &str) -> HttpResponse {
    let mut response = html::redirect(StatusCode::SEE_OTHER, location);
    portal_headers(&mut response);
    response
}

#[derive(Debug, Template)]
#[template(path = "portal/message.html")]
pub struct MessagePage {
    pub layout: Layout,
    pub heading: String,
    pub text: String,
    pub back: String,
}

/// A short page that says what happened and links back.
pub fn message(status: StatusCode, layout: Layout, heading: &str, text: &str, back: &str) -> HttpResponse {
    page(status, &MessagePage { layout, heading: heading.into(), text: text.into(), back: back.into() })
}

/// A failed use case as a page (the admin API's problem detail, which says what to do).
pub fn failure(op: &Operator, e: ApiError, back: &str) -> Answer {
    if e.status.is_server_error() {
        tracing::error!(code = e.code, "portal action failed");
    }
    message(e.status, op.layout("Not done"), "That did not work", &e.detail, back).into()
}

#[derive(Debug, Template)]
#[template(path = "portal/confirm.html")]
pub struct ConfirmPage {
    pub layout: Layout,
    pub heading: String,
    pub text: String,
    pub action: String,
    pub button: String,
    pub back: String,
    pub hidden: Vec<(String, String)>,
}

/// Asks before a destructive action: the same form posted again with `confirm=yes`.
pub fn confirm(op: &Operator, heading: &str, text: &str, action: &str, button: &str, back: &str) -> HttpResponse {
    page(
        StatusCode::OK,
        &ConfirmPage {
            layout: op.layout(heading),
            heading: heading.into(),
            text: text.into(),
            action: action.into(),
            button: button.into(),
            back: back.into(),
            hidden: Vec::new(),
        },
    )
}

/// The fields of a submitted form.
pub fn form(call: &Call) -> HashMap<String, String> {
    url::form_urlencoded::parse(&call.body).into_owned().collect()
}

/// A trimmed form field, `None` when empty.
pub fn field<'a>(fields: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    fields.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn secure(state: &AppState) -> bool {
    state.public_url.starts_with("https://")
}

fn session_cookie(state: &AppState, value: &str, max_age: i64) -> Option<HeaderValue> {
    HeaderValue::from_str(&session_cookie_text(secure(state), value, max_age)).ok()
}

/// The `Set-Cookie` value of the session cookie (`max_age` 0 deletes it).
fn session_cookie_text(secure: bool, value: &str, max_age: i64) -> String {
    cookie::Cookie::build((SESSION_COOKIE, value.to_owned()))
        .path("/portal")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(secure)
        .max_age(cookie::time::Duration::seconds(max_age.max(0)))
        .build()
        .to_string()
}

/// The signed-in operator, or the answer for a signed-out browser: the sign-in page (303 to
/// `/portal`) with the stale cookie cleared.
pub async fn operator(state: &AppState, call: &Call) -> Result<Operator, Answer> {
    let signed_out = || {
        let mut response = see_other("/portal");
        if let Some(v) = session_cookie(state, "", 0) {
            response.headers_mut().append(SET_COOKIE, v);
        }
        Answer::from(response)
    };
    let Some(token) = html::request_cookie(&call.headers, SESSION_COOKIE) else { return Err(signed_out()) };
    let hash = session::token_hash(state.hasher.as_ref(), token);
    let stored = state.store.get_portal_session(&hash).await.map_err(|e| unavailable(e.into()))?;
    match stored {
        Some(s) if s.expires_at.0 > state.clock.now().0 => {
            Ok(Operator { csrf: session::csrf_token(state.hasher.as_ref(), token), token: token.to_owned() })
        }
        Some(_) => {
            let _ = state.store.delete_portal_session(&hash).await;
            Err(signed_out())
        }
        None => Err(signed_out()),
    }
}

fn unavailable(e: ApiError) -> Answer {
    tracing::error!(code = e.code, "storage failure on a portal page");
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        Layout { title: "Temporarily unavailable".into(), ..Layout::default() },
        "Temporarily unavailable",
        "The portal cannot be shown right now. Please try again in a moment.",
        "/portal",
    )
    .into()
}

/// The signed-in operator and the fields of a form whose CSRF token matched.
pub async fn operator_form(state: &AppState, call: &Call) -> Result<(Operator, HashMap<String, String>), Answer> {
    let op = operator(state, call).await?;
    let fields = form(call);
    let ok = fields.get("csrf").is_some_and(|c| session::csrf_matches(state.hasher.as_ref(), &op.token, c));
    if !ok {
        tracing::warn!("portal form refused: missing or wrong CSRF token");
        return Err(message(
            StatusCode::FORBIDDEN,
            op.layout("This form has expired"),
            "This form has expired",
            "Nothing was changed. Go back, reload the page and try again.",
            "/portal",
        )
        .into());
    }
    Ok((op, fields))
}

/// The app of the path's first parameter, or a 404 page.
pub async fn app_of(state: &AppState, call: &Call, op: &Operator) -> Result<App, Answer> {
    let not_found = || -> Answer {
        message(StatusCode::NOT_FOUND, op.layout("Not found"), "No such app", "This app does not exist.", "/portal")
            .into()
    };
    let id = call.app_id(0).map_err(|_| not_found())?;
    match state.store.get_app(&id).await {
        Ok(Some(app)) => Ok(app),
        Ok(None) => Err(not_found()),
        Err(e) => Err(unavailable(e.into())),
    }
}

/// A path parameter made safe to put back into a path.
pub fn url_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The key the sign-in throttle counts failures under: the client's IP address (the TCP peer).
/// `X-Forwarded-For` is not trusted, so behind a reverse proxy every client shares the proxy's
/// address (docs/portal.md).
fn client_key(call: &Call) -> String {
    call.peer.map_or_else(|| "unknown".to_owned(), |peer| peer.ip().to_string())
}

#[derive(Template)]
#[template(path = "portal/signin.html")]
struct SignInPage {
    layout: Layout,
    errors: FieldErrors,
}

fn sign_in_form(status: StatusCode, errors: FieldErrors) -> HttpResponse {
    page(status, &SignInPage { layout: Layout { title: "Sign in".into(), ..Layout::default() }, errors })
}

/// `GET /portal`: the apps, or the sign-in form without a session.
pub async fn home(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    if html::request_cookie(&call.headers, SESSION_COOKIE).is_none() {
        return Ok(sign_in_form(StatusCode::OK, FieldErrors::default()));
    }
    match operator(&state, &call).await {
        Ok(op) => finish(pages::apps(&state, &call, &op, None, FieldErrors::default()).await),
        Err(_) => {
            let mut response = sign_in_form(StatusCode::OK, FieldErrors::default());
            if let Some(v) = session_cookie(&state, "", 0) {
                response.headers_mut().append(SET_COOKIE, v);
            }
            Ok(response)
        }
    }
}

/// `POST /portal/sign-in`.
pub async fn sign_in(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let key = client_key(&call);
    let now = state.clock.now();
    if let Some(wait) = state.portal_throttle.locked_for(&key, now) {
        tracing::warn!(wait_secs = wait, "portal sign-in refused: too many failed attempts");
        let mut response = sign_in_form(
            StatusCode::TOO_MANY_REQUESTS,
            FieldErrors::one("admin_token", format!("Too many failed sign-ins. Wait {wait} seconds, then try again.")),
        );
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            response.headers_mut().insert(hyper::header::RETRY_AFTER, v);
        }
        return Ok(response);
    }
    let fields = form(&call);
    let presented = field(&fields, "admin_token").unwrap_or_default();
    if presented.is_empty() || !state.is_admin_token(presented) {
        let (failures, lock) = state.portal_throttle.fail(&key, now);
        tracing::warn!(failures, lock_secs = lock, "portal sign-in failed: wrong admin token");
        return Ok(sign_in_form(
            StatusCode::UNAUTHORIZED,
            FieldErrors::one("admin_token", "That is not the admin token. Check it and try again."),
        ));
    }
    state.portal_throttle.succeed(&key);
    let token = session::new_token(state.random.as_ref());
    let stored = custody_store::PortalSession {
        id_hash: session::token_hash(state.hasher.as_ref(), &token),
        created_at: now,
        expires_at: UnixTime(now.0 + session::SESSION_SECS),
    };
    state.store.create_portal_session(&stored).await?;
    tracing::info!("portal sign-in");
    let mut response = see_other("/portal");
    if let Some(v) = session_cookie(&state, &token, session::SESSION_SECS) {
        response.headers_mut().append(SET_COOKIE, v);
    }
    Ok(response)
}

/// `POST /portal/sign-out`.
pub async fn sign_out(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let (op, _) = operator_form(&state, &call).await?;
            let hash = session::token_hash(state.hasher.as_ref(), &op.token);
            state.store.delete_portal_session(&hash).await.map_err(|e| unavailable(e.into()))?;
            let mut response = see_other("/portal");
            if let Some(v) = session_cookie(&state, "", 0) {
                response.headers_mut().append(SET_COOKIE, v);
            }
            Ok(response)
        }
        .await,
    )
}

/// `GET /portal/static/{file}`: the style sheet and the copy-button script.
pub async fn static_file(_state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let (body, content_type) = match call.param(0) {
        "portal.css" => (STYLE, "text/css; charset=utf-8"),
        "copy.js" => (COPY_SCRIPT, "text/javascript; charset=utf-8"),
        _ => return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such file")),
    };
    let mut response = Response::new(full(body));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    response
        .headers_mut()
        .insert(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
    Ok(response)
}

#[derive(Template)]
#[template(path = "portal/landing.html")]
struct Landing {
    layout: Layout,
}

/// `GET /`: what this server is and where to go.
pub async fn landing(_state: Arc<AppState>, _call: Call) -> Result<HttpResponse, ApiError> {
    Ok(page(StatusCode::OK, &Landing { layout: Layout { title: "Custody".into(), ..Layout::default() } }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_strict_and_secure_on_https() {
        let https = session_cookie_text(true, "abc", session::SESSION_SECS);
        for part in ["custody_portal=abc", "HttpOnly", "SameSite=Strict", "Path=/portal", "Max-Age=28800", "Secure"] {
            assert!(https.contains(part), "{https} lacks {part}");
        }
        assert!(!session_cookie_text(false, "abc", 10).contains("Secure"));
        assert!(session_cookie_text(true, "", 0).contains("Max-Age=0"));
    }

    #[test]
    fn one_time_format_everywhere() {
        assert_eq!(utc(UnixTime(1_795_341_600)), "2026-11-22 10:00:00 UTC");
        assert_eq!(utc_or(None, "never"), "never");
    }
}
