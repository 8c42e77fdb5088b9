//! Sign-in over HTTP: the operator's OIDC client settings (`PUT`/`DELETE
//! /v1/apps/{app_id}/identity-provider/oidc`), SDK sessions (`POST /v1/auth/sessions`, `GET
//! /v1/auth/sessions/{session_id}`) and the SDK callback page (`GET /v1/auth/callback`). The
//! Wallet's pages are in `wallet.rs`.

use super::apps::{existing_app, user_json};
use super::Call;
use crate::html::{escape, Page};
use crate::json::{json_response, no_content, parse_json, rfc3339, HttpResponse};
use crate::problem::ApiError;
use crate::state::AppState;
use custody_identity::audit::Actor;
use custody_identity::idp::IdpConfig;
use custody_identity::{AppId, Secret};
use custody_store::prelude::*;
use custody_vault::signin::service::{
    CallbackError, OidcClientInput, PutClientError, SdkSessionError, SignedIn, StartSignInError,
};
use custody_vault::signin::{OidcClient, SdkSessionId, SignInFailure, SignInPurpose, TokenAuthMethod};
use hyper::header::{HeaderValue, CACHE_CONTROL};
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

impl From<PutClientError> for ApiError {
    fn from(e: PutClientError) -> Self {
        match e {
            PutClientError::IdpNotConfigured => ApiError::idp_not_configured(),
            PutClientError::Invalid(detail) => ApiError::invalid_request(detail),
            PutClientError::Sealing => sealing_error(),
            PutClientError::Store(e) => e.into(),
        }
    }
}

impl From<StartSignInError> for ApiError {
    fn from(e: StartSignInError) -> Self {
        match e {
            StartSignInError::NotConfigured(detail) => oidc_not_configured(detail),
            StartSignInError::Sealing => sealing_error(),
            StartSignInError::Store(e) => e.into(),
        }
    }
}

impl From<SdkSessionError> for ApiError {
    fn from(e: SdkSessionError) -> Self {
        match e {
            SdkSessionError::NotFound => session_not_found(),
            SdkSessionError::Sealing => sealing_error(),
            SdkSessionError::Store(e) => e.into(),
        }
    }
}

/// 409 `oidc_not_configured`.
pub fn oidc_not_configured(detail: &str) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "oidc_not_configured", detail)
}

fn session_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "session_not_found", "sign-in session not found")
}

fn sealing_error() -> ApiError {
    tracing::error!("a sign-in secret could not be sealed or opened");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "sealing_error", "a stored secret could not be used")
}

fn no_store(mut response: HttpResponse) -> HttpResponse {
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The `oidc` member of the IdP object: whether a client is set, its id (never the secret), and
/// the URLs the operator registers at the IdP.
pub fn oidc_json(public_url: &str, client: Option<&OidcClient>) -> Value {
    json!({
        "configured": client.is_some(),
        "client_id": client.map(|c| c.client_id.as_str()),
        "token_endpoint_auth_method": client.map(|c| c.auth_method.as_str()),
        "redirect_uris": {
            "sdk": format!("{public_url}{}", SignInPurpose::Sdk.callback_path()),
            "wallet": format!("{public_url}{}", SignInPurpose::Wallet.callback_path()),
        },
        "logout_url": format!("{public_url}/wallet/sign-in"),
    })
}

/// The IdP object with its stored sub-resources: the webhook settings and the OIDC client.
pub async fn idp_object(state: &AppState, config: &IdpConfig) -> Result<Value, ApiError> {
    let mut object = super::webhooks::idp_object(state, config).await?;
    let client = state.signin.client(&config.app_id).await?.filter(|c| c.idp_id == config.id);
    object["oidc"] = oidc_json(&state.public_url, client.as_ref());
    Ok(object)
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
    let (config, _) = state.signin.put_client(&app.id, input, &Actor::operator()).await?;
    Ok(json_response(StatusCode::OK, &idp_object(&state, &config).await?))
}

/// `DELETE /v1/apps/{app_id}/identity-provider/oidc`.
pub async fn delete_oidc(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    if state.store.get_idp(&app.id).await?.is_none() {
        return Err(ApiError::idp_not_configured());
    }
    if !state.signin.delete_client(&app.id, &Actor::operator()).await? {
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
    let started = state.signin.start_sdk_session(&key.app_id).await?;
    Ok(no_store(json_response(
        StatusCode::CREATED,
        &json!({
            "session_id": started.id.as_str(),
            "authorize_url": started.authorize_url,
            "expires_at": rfc3339(started.expires_at),
        }),
    )))
}

/// `GET /v1/auth/sessions/{session_id}`: the status, and the user token on the first read after
/// completion (never again).
pub async fn get_session(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let key = call.app_key()?.clone();
    let id = SdkSessionId::parse(call.param(0)).map_err(|_| session_not_found())?;
    let view = state.signin.sdk_session(&key.app_id, &id).await?;
    let mut body = json!({
        "session_id": view.id.as_str(),
        "status": view.status.as_str(),
        "expires_at": rfc3339(view.expires_at),
    });
    if let Some(user) = &view.user {
        body["user"] = user_json(user);
    }
    if let Some(error) = view.error {
        body["error"] = json!(error.as_str());
    }
    if let Some(token) = &view.user_token {
        // The one response that hands the token out.
        body["user_token"] = json!(token.expose());
    }
    Ok(no_store(json_response(StatusCode::OK, &body)))
}

/// The app's display name, for pages (`None` for an unknown app).
pub async fn app_name(state: &AppState, app: &AppId) -> Option<String> {
    state.store.get_app(app).await.ok().flatten().map(|a| a.name.as_str().to_owned())
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
        .signin
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
