//! Sign-in over HTTP: the operator's OIDC client settings (`PUT`/`DELETE
//! /v1/apps/{app_id}/identity-provider/oidc`), SDK sessions (`POST /v1/auth/sessions`, `GET
//! /v1/auth/sessions/{session_id}`) and the SDK callback page (`GET /v1/auth/callback`). The
//! Wallet's pages are in `wallet.rs`.

use super::apps::{existing_app, UserJson};
use super::idp::IdpJson;
use super::Call;
use crate::html::{escape, Page};
use crate::json::{json_response, no_content, parse_json, rfc3339, HttpResponse};
use crate::problem::ApiError;
use crate::state::AppState;
use custody_identity::audit::Actor;
use custody_identity::idp::IdpConfig;
use custody_identity::signin::service::{CallbackError, OidcClientInput, SignedIn};
use custody_identity::signin::{OidcClient, SdkSessionId, SignInFailure, SignInPurpose, TokenAuthMethod};
use custody_identity::{AppId, Secret};
use hyper::header::{HeaderValue, CACHE_CONTROL};
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

fn no_store(mut response: HttpResponse) -> HttpResponse {
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The `oidc` member of the IdP object: whether a client is set, its id (never the secret), and
/// the URLs the operator registers at the IdP.
#[derive(Serialize)]
pub struct OidcJson {
    configured: bool,
    client_id: Option<String>,
    token_endpoint_auth_method: Option<&'static str>,
    redirect_uris: RedirectUrisJson,
    logout_url: String,
}

#[derive(Serialize)]
struct RedirectUrisJson {
    sdk: String,
    wallet: String,
}

impl OidcJson {
    pub fn new(public_url: &str, client: Option<&OidcClient>) -> Self {
        Self {
            configured: client.is_some(),
            client_id: client.map(|c| c.client_id.as_str().to_owned()),
            token_endpoint_auth_method: client.map(|c| c.auth_method.as_str()),
            redirect_uris: RedirectUrisJson {
                sdk: format!("{public_url}{}", SignInPurpose::Sdk.callback_path()),
                wallet: format!("{public_url}{}", SignInPurpose::Wallet.callback_path()),
            },
            logout_url: format!("{public_url}/wallet/sign-in"),
        }
    }
}

/// The IdP object with its stored sub-resources: the webhook settings and the OIDC client.
pub async fn idp_object<'a>(state: &AppState, config: &'a IdpConfig) -> Result<IdpJson<'a>, ApiError> {
    let webhook = super::webhooks::idp_webhook(state, config).await?;
    let client = state.signin().client(&config.app_id).await?.filter(|c| c.idp_id == config.id);
    Ok(IdpJson::new(config, OidcJson::new(state.public_url(), client.as_ref()), webhook))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OidcBody {
    client_id: String,
    client_secret: String,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
}

/// `PUT /v1/apps/{app_id}/identity-provider/oidc`.
pub async fn put_oidc(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let body: OidcBody = parse_json(&call.body)?;
    let auth_method = body
        .token_endpoint_auth_method
        .map(|m| {
            TokenAuthMethod::parse(&m).ok_or_else(|| {
                ApiError::invalid_request(
                    "token_endpoint_auth_method: expected client_secret_basic or client_secret_post",
                )
            })
        })
        .transpose()?;
    let input =
        OidcClientInput { client_id: body.client_id, client_secret: Secret::new(body.client_secret), auth_method };
    let (config, _) = state.signin().put_client(&app.id, input, &Actor::operator()).await?;
    Ok(json_response(StatusCode::OK, &idp_object(&state, &config).await?))
}

/// `DELETE /v1/apps/{app_id}/identity-provider/oidc`.
pub async fn delete_oidc(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    if state.identity().get_idp(&app.id).await?.is_none() {
        return Err(ApiError::idp_not_configured());
    }
    if !state.signin().delete_client(&app.id, &Actor::operator()).await? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "oidc_not_configured", "the app has no OIDC client"));
    }
    Ok(no_content())
}

/// The body of `POST /v1/auth/sessions`: nothing yet.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionBody {}

/// `POST /v1/auth/sessions`.
pub async fn create_session(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let key = call.app_key()?.clone();
    let _: SessionBody = parse_json(&call.body)?;
    let started = state.signin().start_sdk_session(&key.app_id).await?;
    Ok(no_store(json_response(
        StatusCode::CREATED,
        &StartedSessionJson {
            session_id: started.id.as_str(),
            authorize_url: &started.authorize_url,
            expires_at: rfc3339(started.expires_at),
        },
    )))
}

/// The answer to starting an SDK session.
#[derive(Serialize)]
struct StartedSessionJson<'a> {
    session_id: &'a str,
    authorize_url: &'a str,
    expires_at: String,
}

/// An SDK session's state; `user` once completed, `error` once failed, `user_token` on the
/// first read after completion only.
#[derive(Serialize)]
struct SessionJson<'a> {
    session_id: &'a str,
    status: &'static str,
    expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<UserJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_token: Option<&'a str>,
}

/// `GET /v1/auth/sessions/{session_id}`: the status, and the user token on the first read after
/// completion (never again).
pub async fn get_session(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let key = call.app_key()?.clone();
    let id = SdkSessionId::parse(call.param(0)).map_err(|_| ApiError::session_not_found())?;
    let view = state.signin().sdk_session(&key.app_id, &id).await?;
    let body = SessionJson {
        session_id: view.id.as_str(),
        status: view.status.as_str(),
        expires_at: rfc3339(view.expires_at),
        user: view.user.as_ref().map(UserJson::from),
        error: view.error.map(|e| e.as_str()),
        // The one response that hands the token out.
        user_token: view.user_token.as_ref().map(|t| t.expose()),
    };
    Ok(no_store(json_response(StatusCode::OK, &body)))
}

/// The app's display name, for pages (`None` for an unknown app).
pub async fn app_name(state: &AppState, app: &AppId) -> Option<String> {
    state.identity().get_app(app).await.ok().flatten().map(|a| a.name.as_str().to_owned())
}

/// The status of a page reporting a failed sign-in.
pub fn failure_status(failure: SignInFailure) -> StatusCode {
    match failure {
        SignInFailure::UserSuspended | SignInFailure::UserDeprovisioned => StatusCode::FORBIDDEN,
        SignInFailure::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        SignInFailure::CodeExchangeFailed => StatusCode::BAD_GATEWAY,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// `GET /v1/auth/callback`: completes an SDK session and tells the person they can close the
/// window.
pub async fn sdk_callback(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let param = |name: &str| call.query.get(name).map(String::as_str);
    let result = state
        .signin()
        .complete(SignInPurpose::Sdk, param("state").unwrap_or_default(), param("code"), param("error"))
        .await;
    log_sign_in_failure("sdk", &result);
    let response = match result {
        Ok(SignedIn::Sdk { app_id, .. }) => {
            let to = match app_name(&state, &app_id).await {
                Some(name) => format!("to {}", escape(&name)),
                None => "to the app".to_owned(),
            };
            Page::new(
                "Signed in",
                format!(
                    "<h1>You are signed in</h1>\n<p>You can close this window and return {to}.</p>\n\
                     <p class=\"muted\">The app that asked you to sign in now continues on its own.</p>"
                ),
            )
            .response(StatusCode::OK)
        }
        Ok(SignedIn::Wallet { .. }) => message_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Sign-in failed",
            &escape(SignInFailure::ServerError.explanation()),
        ),
        Err(CallbackError::UnknownState) => message_page(
            StatusCode::BAD_REQUEST,
            "This sign-in link is not valid",
            "It was already used, or it expired. Start the sign-in again from the app.",
        ),
        Err(CallbackError::Failed { failure, .. }) => message_page(
            failure_status(failure),
            "Sign-in failed",
            &format!(
                "{} You can close this window and start again from the app. <span class=\"muted\">(Error: <code>{}</code>)</span>",
                escape(failure.explanation()),
                escape(failure.as_str())
            ),
        ),
        Err(CallbackError::Store(e)) => {
            tracing::error!(error = %e, "storage failure at the sign-in callback");
            message_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "The sign-in could not be completed right now. Please try again in a moment.",
            )
        }
    };
    Ok(response)
}

/// Logs why a sign-in callback failed, at `warn` (never the code, state or any token).
pub fn log_sign_in_failure<T>(purpose: &str, result: &Result<T, CallbackError>) {
    match result {
        Ok(_) => {}
        Err(CallbackError::UnknownState) => {
            tracing::warn!(purpose, reason = "unknown_state", "sign-in failed: the state is unknown, expired or used")
        }
        Err(CallbackError::Failed { app_id, failure }) => {
            tracing::warn!(purpose, app_id = %app_id, reason = failure.as_str(), "sign-in failed: {}", failure.explanation())
        }
        Err(CallbackError::Store(_)) => {}
    }
}

/// A page with a heading and one paragraph of markup (escaped by the caller).
pub fn message_page(status: StatusCode, title: &str, paragraph_html: &str) -> HttpResponse {
    Page::new(title, format!("<h1>{}</h1>\n<p>{paragraph_html}</p>", escape(title))).response(status)
}
