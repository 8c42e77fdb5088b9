//! The Wallet: the end user's own pages, server-rendered, readable without JavaScript.
//!
//! - `GET /wallet/sign-in?app_id=` (or `?state=<app id>`, as the IdP's end-session endpoint
//!   sends the browser back): the app's name and a sign-in button.
//! - `GET /wallet/login?app_id=`: starts a sign-in and redirects to the IdP. A short-lived
//!   cookie holding the state binds the sign-in to this browser.
//! - `GET /wallet/auth/callback`: completes it, sets the session cookie (HttpOnly,
//!   SameSite=Lax, Secure when the public URL is https, path `/wallet`) and goes to `/wallet`.
//! - `GET /wallet`: the user's grants (provider, scopes, status, created, last used) with a
//!   Revoke button each; never a token.
//! - `POST /wallet/grants/{grant_id}/revoke`, `POST /wallet/sign-out`: forms carrying the
//!   session's CSRF token.
//!
//! The session is checked on every request (`SignInService::wallet_access`): an expired session,
//! or one whose user is suspended or deprovisioned, ends there.

use super::signin::{app_name, failure_status, message_page};
use super::Call;
use crate::html::{self, escape, origin_of, Page};
use crate::json::HttpResponse;
use crate::problem::ApiError;
use crate::state::AppState;
use custody_identity::page::PageRequest;
use custody_identity::ports::StoreError;
use custody_identity::signin::service::{CallbackError, SessionEnd, SignedIn, StartSignInError, WalletAccess};
use custody_identity::signin::{SignInPurpose, WalletSession};
use custody_identity::{AppId, User};
use custody_vault::service::FindGrantError;
use custody_vault::{Grant, GrantId, GrantStatus, ProviderName};
use hyper::header::{HeaderValue, SET_COOKIE};
use hyper::StatusCode;
use std::collections::HashMap;
use std::sync::Arc;

/// The Wallet session cookie.
pub(crate) const SESSION_COOKIE: &str = "custody_wallet";
/// The cookie binding a pending sign-in to the browser that started it.
const BINDING_COOKIE: &str = "custody_wallet_signin";
/// Grants shown per page.
const GRANTS_PER_PAGE: u32 = 100;

/// A page to show instead of the one asked for.
struct PageError(Box<HttpResponse>);

fn page_error(page: HttpResponse) -> PageError {
    PageError(Box::new(page))
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "storage failure on a Wallet page");
        page_error(message_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable",
            "Your wallet cannot be shown right now. Please try again in a moment.",
        ))
    }
}

type PageResult = Result<HttpResponse, PageError>;

fn finish(result: PageResult) -> Result<HttpResponse, ApiError> {
    Ok(result.unwrap_or_else(|PageError(page)| *page))
}

/// Whether cookies must be `Secure`: the public URL is https.
fn secure(state: &AppState) -> bool {
    state.public_url().starts_with("https://")
}

/// The value of cookie `name` in the request, if any.
pub(super) fn cookie<'a>(call: &'a Call, name: &str) -> Option<&'a str> {
    html::request_cookie(&call.headers, name)
}

/// Adds a `Set-Cookie`: HttpOnly, SameSite=Lax, Secure over https; `max_age` 0 deletes it.
pub(super) fn set_cookie(
    state: &AppState,
    response: &mut HttpResponse,
    name: &str,
    value: &str,
    path: &str,
    max_age: i64,
) {
    let secure = if secure(state) { "; Secure" } else { "" };
    let cookie = format!("{name}={value}; Path={path}; Max-Age={}; HttpOnly; SameSite=Lax{secure}", max_age.max(0));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(SET_COOKIE, v);
    }
}

fn clear_session_cookie(state: &AppState, response: &mut HttpResponse) {
    set_cookie(state, response, SESSION_COOKIE, "", "/wallet", 0);
}

/// The fields of a submitted form.
fn form(call: &Call) -> HashMap<String, String> {
    url::form_urlencoded::parse(&call.body).into_owned().collect()
}

fn sign_in_url(app: &AppId) -> String {
    format!("/wallet/sign-in?app_id={app}")
}

fn back_to_sign_in(app: &AppId) -> String {
    format!(r#"<p><a href="{}">Back to sign-in</a></p>"#, escape(&sign_in_url(app)))
}

fn not_found_page() -> PageError {
    page_error(message_page(
        StatusCode::NOT_FOUND,
        "Unknown app",
        "This sign-in link does not name an app Custody knows. Open the Wallet link your app gave you.",
    ))
}

/// The app a sign-in page is for: `app_id`, or `state` as the IdP's end-session endpoint hands
/// it back.
fn app_param(call: &Call) -> Result<AppId, PageError> {
    let raw = call.query.get("app_id").or_else(|| call.query.get("state")).ok_or_else(not_found_page)?;
    AppId::parse(raw).map_err(|_| not_found_page())
}

/// A live session of an active user, or the page to show instead (the cookie cleared when the
/// session is gone).
async fn session(state: &AppState, call: &Call) -> Result<(String, WalletSession, User), PageError> {
    let signed_out = |state: &AppState| {
        let mut page = message_page(
            StatusCode::UNAUTHORIZED,
            "You are signed out",
            "Open the Wallet link your app gave you to sign in again.",
        );
        clear_session_cookie(state, &mut page);
        page_error(page)
    };
    let Some(token) = cookie(call, SESSION_COOKIE) else { return Err(signed_out(state)) };
    match state.signin().wallet_access(token).await? {
        WalletAccess::Active { session, user } => Ok((token.to_owned(), *session, *user)),
        WalletAccess::Unknown => Err(signed_out(state)),
        WalletAccess::Ended { app_id, reason } => {
            let mut page = match reason {
                SessionEnd::Expired => html::redirect(StatusCode::SEE_OTHER, &sign_in_url(&app_id)),
                SessionEnd::Suspended => message_page(
                    StatusCode::FORBIDDEN,
                    "Your account is suspended",
                    "You have been signed out. Contact the app's support if you think this is a mistake.",
                ),
                SessionEnd::Deprovisioned => message_page(
                    StatusCode::FORBIDDEN,
                    "Your account has been removed",
                    "You have been signed out, and the app no longer holds access to your accounts.",
                ),
            };
            clear_session_cookie(state, &mut page);
            Err(page_error(page))
        }
    }
}

/// Checks a form's CSRF token against the session's.
fn check_csrf(state: &AppState, token: &str, fields: &HashMap<String, String>) -> Result<(), PageError> {
    match fields.get("csrf") {
        Some(presented) if state.signin().csrf_matches(token, presented) => Ok(()),
        _ => Err(page_error(message_page(
            StatusCode::FORBIDDEN,
            "This form has expired",
            r#"Nothing was changed. <a href="/wallet">Go back to your wallet</a> and try again."#,
        ))),
    }
}

/// `GET /wallet/sign-in?app_id=` (or `?state=`).
pub async fn sign_in_page(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(sign_in_page_inner(&state, &call).await)
}

async fn sign_in_page_inner(state: &AppState, call: &Call) -> PageResult {
    let app_id = app_param(call)?;
    let app = state.identity().get_app(&app_id).await?.ok_or_else(not_found_page)?;
    // Already signed in to this app's Wallet: straight there.
    if let Some(token) = cookie(call, SESSION_COOKIE) {
        if let WalletAccess::Active { session, .. } = state.signin().wallet_access(token).await? {
            if session.app_id == app_id {
                return Ok(html::redirect(StatusCode::SEE_OTHER, "/wallet"));
            }
        }
    }
    let name = escape(app.name.as_str());
    let idp = state.identity().get_idp(&app_id).await?;
    let client = state.signin().client(&app_id).await?;
    let configured = matches!((&idp, &client), (Some(i), Some(c)) if c.idp_id == i.id);
    if !configured {
        return Ok(message_page(
            StatusCode::CONFLICT,
            "Sign-in is not available",
            &format!("{name} has not set up sign-in to the Wallet yet."),
        ));
    }
    let authorization_origin =
        idp.as_ref().and_then(|i| i.endpoints.authorization_endpoint.as_deref()).and_then(origin_of);
    let body = format!(
        "<p class=\"eyebrow\">{name}</p>\n\
         <h1>Sign in to your Wallet</h1>\n\
         <p>Your Wallet shows the accounts {name} can use on your behalf, such as your mail, chat or code \
         hosting, and lets you revoke that access.</p>\n\
         <form method=\"get\" action=\"/wallet/login\">\n\
         <input type=\"hidden\" name=\"app_id\" value=\"{app_id}\">\n\
         <button type=\"submit\">Sign in</button>\n\
         </form>\n\
         <p class=\"muted\">You sign in with {name}'s usual sign-in page; Custody never sees your password.</p>",
        app_id = escape(app_id.as_str()),
    );
    Ok(Page::new(format!("Sign in: {}", app.name.as_str()), body)
        .allow_form_origin(authorization_origin)
        .response(StatusCode::OK))
}

/// `GET /wallet/login?app_id=`: to the IdP.
pub async fn login(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(login_inner(&state, &call).await)
}

async fn login_inner(state: &AppState, call: &Call) -> PageResult {
    let app_id = call.query.get("app_id").and_then(|a| AppId::parse(a).ok()).ok_or_else(not_found_page)?;
    if state.identity().get_app(&app_id).await?.is_none() {
        return Err(not_found_page());
    }
    let started = match state.signin().start_wallet_sign_in(&app_id).await {
        Ok(started) => started,
        Err(StartSignInError::NotConfigured(_)) => {
            return Ok(message_page(
                StatusCode::CONFLICT,
                "Sign-in is not available",
                "This app has not set up sign-in to the Wallet yet.",
            ))
        }
        Err(StartSignInError::Sealing) => {
            tracing::error!("a sign-in secret could not be sealed");
            return Ok(message_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in failed",
                &escape(custody_identity::signin::SignInFailure::ServerError.explanation()),
            ));
        }
        Err(StartSignInError::Store(e)) => return Err(e.into()),
    };
    let mut response = html::redirect(StatusCode::FOUND, &started.authorize_url);
    let ttl = started.expires_at.seconds() - state.now().seconds();
    set_cookie(state, &mut response, BINDING_COOKIE, started.state.expose(), "/wallet/auth", ttl);
    Ok(response)
}

/// `GET /wallet/auth/callback`: back from the IdP.
pub async fn callback(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(callback_inner(&state, &call).await)
}

async fn callback_inner(state: &AppState, call: &Call) -> PageResult {
    let param = |name: &str| call.query.get(name).map(String::as_str);
    let returned_state = param("state").unwrap_or_default();
    // The sign-in must come back to the browser that started it (login CSRF): the state is
    // compared with the cookie `/wallet/login` set, before anything is consumed.
    let bound = cookie(call, BINDING_COOKIE).is_some_and(|c| {
        !returned_state.is_empty()
            && c.len() == returned_state.len()
            && openssl::memcmp::eq(c.as_bytes(), returned_state.as_bytes())
    });
    if !bound {
        tracing::warn!(purpose = "wallet", reason = "unbound_state", "sign-in failed: not the browser that started it");
        return Ok(message_page(
            StatusCode::BAD_REQUEST,
            "This sign-in link is not valid",
            "It was started in another browser, already used, or it expired. Open the Wallet link your app gave \
             you and sign in again.",
        ));
    }
    let result = state.signin().complete(SignInPurpose::Wallet, returned_state, param("code"), param("error")).await;
    super::signin::log_sign_in_failure("wallet", &result);
    let mut response = match result {
        Ok(SignedIn::Wallet { session_token, expires_at, .. }) => {
            let mut response = html::redirect(StatusCode::SEE_OTHER, "/wallet");
            let ttl = expires_at.seconds() - state.now().seconds();
            set_cookie(state, &mut response, SESSION_COOKIE, session_token.expose(), "/wallet", ttl);
            response
        }
        Ok(SignedIn::Sdk { .. }) => message_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Sign-in failed",
            &escape(custody_identity::signin::SignInFailure::ServerError.explanation()),
        ),
        Err(CallbackError::UnknownState) => message_page(
            StatusCode::BAD_REQUEST,
            "This sign-in link is not valid",
            "It was already used, or it expired. Open the Wallet link your app gave you and sign in again.",
        ),
        Err(CallbackError::Failed { app_id, failure }) => Page::new(
            "Sign-in failed",
            format!(
                "<h1>Sign-in failed</h1>\n<p>{} <span class=\"muted\">(Error: <code>{}</code>)</span></p>\n{}",
                escape(failure.explanation()),
                escape(failure.as_str()),
                back_to_sign_in(&app_id)
            ),
        )
        .response(failure_status(failure)),
        Err(CallbackError::Store(e)) => return Err(e.into()),
    };
    set_cookie(state, &mut response, BINDING_COOKIE, "", "/wallet/auth", 0);
    Ok(response)
}

fn status_label(status: GrantStatus) -> &'static str {
    match status {
        GrantStatus::Active => "Active",
        GrantStatus::Expired => "Expired",
        GrantStatus::Revoked => "Revoked",
    }
}

fn grant_row(grant: &Grant, csrf: &str) -> String {
    let provider = escape(grant.provider.as_str());
    let account = grant.account.as_deref().map(|a| format!("<br><span class=\"account\">{}</span>", escape(a)));
    let scopes = if grant.scopes.is_empty() {
        "<span class=\"muted\">none</span>".to_owned()
    } else {
        grant.scopes.iter().map(|s| escape(s)).collect::<Vec<_>>().join(" ")
    };
    let last_used = grant.last_used_at.map(html::time).unwrap_or_else(|| "Never".to_owned());
    let action = if grant.status == GrantStatus::Revoked {
        match grant.revoked_at {
            Some(at) => format!("<span class=\"muted\">Revoked {}</span>", html::time(at)),
            None => "<span class=\"muted\">Revoked</span>".to_owned(),
        }
    } else {
        format!(
            "<form method=\"post\" action=\"/wallet/grants/{id}/revoke\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button type=\"submit\" class=\"danger\" aria-label=\"Revoke access to {provider}\">Revoke</button>\
             </form>",
            id = escape(grant.id.as_str()),
            csrf = escape(csrf),
        )
    };
    format!(
        "<tr>\n<th scope=\"row\">{provider}{account}</th>\n<td class=\"scopes\">{scopes}</td>\n\
         <td><span class=\"status status-{status_class}\">{status}</span></td>\n<td>{created}</td>\n<td>{last_used}</td>\n\
         <td>{action}</td>\n</tr>",
        account = account.unwrap_or_default(),
        status_class = grant.status.as_str(),
        status = status_label(grant.status),
        created = html::time(grant.created_at),
    )
}

/// `GET /wallet`: the user's grants.
pub async fn wallet_page(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(wallet_page_inner(&state, &call).await)
}

async fn wallet_page_inner(state: &AppState, call: &Call) -> PageResult {
    let (token, session, user) = session(state, call).await?;
    let app = app_name(state, &session.app_id).await.unwrap_or_else(|| "The app".to_owned());
    let app = escape(&app);
    let cursor = call.query.get("cursor").filter(|c| !c.is_empty()).cloned();
    let page = PageRequest::new(Some(GRANTS_PER_PAGE), cursor.clone()).unwrap_or_else(|_| PageRequest::first());
    let grants = match state.vault().user_grants(&user, &page).await {
        Ok(grants) => grants,
        Err(StoreError::InvalidCursor) => state.vault().user_grants(&user, &PageRequest::first()).await?,
        Err(e) => return Err(e.into()),
    };
    let csrf = state.signin().csrf_token(&token);
    let who = user.email.as_deref().or(user.name.as_deref()).unwrap_or(&user.subject);
    let notice = call
        .query
        .get("revoked")
        .filter(|provider| ProviderName::parse(provider).is_ok())
        .map(|provider| {
            format!(
                "<p class=\"notice\" role=\"status\">Access to <strong>{}</strong> was revoked. {app} can no longer \
                 use it.</p>\n",
                escape(provider)
            )
        })
        .unwrap_or_default();
    let table = if grants.items.is_empty() && cursor.is_none() {
        format!("<p>{app} holds no access to your accounts.</p>")
    } else {
        let rows: Vec<String> = grants.items.iter().map(|g| grant_row(g, &csrf)).collect();
        let more = grants
            .next_cursor
            .as_deref()
            .map(|c| {
                format!(
                    "<p><a href=\"/wallet?cursor={}\">Older connections</a></p>",
                    escape(&url::form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>())
                )
            })
            .unwrap_or_default();
        format!(
            "<table>\n<caption>Accounts {app} can use for you</caption>\n<thead>\n<tr><th scope=\"col\">Provider</th>\
             <th scope=\"col\">Scopes</th><th scope=\"col\">Status</th><th scope=\"col\">Connected</th>\
             <th scope=\"col\">Last used</th><th scope=\"col\"><span class=\"visually-hidden\">Action</span></th></tr>\n\
             </thead>\n<tbody>\n{}\n</tbody>\n</table>\n{more}",
            rows.join("\n")
        )
    };
    let body = format!(
        "<div class=\"top\">\n<div>\n<p class=\"eyebrow\">{app}</p>\n<h1>Your connected accounts</h1>\n</div>\n\
         <form method=\"post\" action=\"/wallet/sign-out\">\n<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\n\
         <button type=\"submit\" class=\"secondary\">Sign out</button>\n</form>\n</div>\n\
         <p>Signed in as <strong>{who}</strong>.</p>\n{notice}\
         <p>{app} can use these accounts on your behalf. Revoking one stops that at once; {app} would have to ask \
         you to connect it again.</p>\n{table}",
        csrf = escape(&csrf),
        who = escape(who),
    );
    let end_session_origin = state
        .identity()
        .get_idp(&session.app_id)
        .await?
        .and_then(|i| i.endpoints.end_session_endpoint)
        .as_deref()
        .and_then(origin_of);
    Ok(Page::new("Your connected accounts", body).allow_form_origin(end_session_origin).response(StatusCode::OK))
}

fn grant_page_error(e: FindGrantError) -> PageError {
    match e {
        FindGrantError::Store(e) => e.into(),
        FindGrantError::NotFound => page_error(message_page(
            StatusCode::NOT_FOUND,
            "Not found",
            r#"This connection does not exist. <a href="/wallet">Go back to your wallet</a>."#,
        )),
    }
}

/// `POST /wallet/grants/{grant_id}/revoke`.
pub async fn revoke(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(revoke_inner(&state, &call).await)
}

async fn revoke_inner(state: &AppState, call: &Call) -> PageResult {
    let (token, _, user) = session(state, call).await?;
    check_csrf(state, &token, &form(call))?;
    let id = GrantId::parse(call.param(0)).map_err(|_| grant_page_error(FindGrantError::NotFound))?;
    let grant = state.vault().revoke_user_grant(&user, &id).await.map_err(grant_page_error)?;
    state.wake_outbox();
    let provider: String = url::form_urlencoded::byte_serialize(grant.provider.as_str().as_bytes()).collect();
    Ok(html::redirect(StatusCode::SEE_OTHER, &format!("/wallet?revoked={provider}")))
}

/// `POST /wallet/sign-out`: ends the session, then the IdP's session.
pub async fn sign_out(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(sign_out_inner(&state, &call).await)
}

async fn sign_out_inner(state: &AppState, call: &Call) -> PageResult {
    let (token, session, _) = session(state, call).await?;
    check_csrf(state, &token, &form(call))?;
    let location = state.signin().sign_out(&session).await?;
    let mut response = html::redirect(StatusCode::SEE_OTHER, &location);
    clear_session_cookie(state, &mut response);
    Ok(response)
}
