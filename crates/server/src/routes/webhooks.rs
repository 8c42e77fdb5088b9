//! Lifecycle webhooks over HTTP: the operator's settings under
//! `/v1/apps/{app_id}/identity-provider/webhook` (read, enable, rotate, disable) and the
//! receiver `POST /v1/webhooks/{app_id}`, which the identity provider calls.
//!
//! The receiver authenticates the raw body (already capped at 1 MiB by the router) before
//! anything parses it, then hands it to [`custody_vault::webhook::WebhookService`]. Its answers:
//! 200 `{"processed", "ignored", "duplicates"}`, 404 `webhooks_not_enabled` (also for an unknown
//! app, so the URL reveals nothing), 401 `invalid_signature`, 400 `malformed_payload`, 503 on a
//! storage failure with nothing of the failing event applied.

use super::apps::existing_app;
use super::Call;
use crate::json::{json_response, parse_json, rfc3339_opt, HttpResponse};
use crate::problem::ApiError;
use crate::state::AppState;
use custody_identity::audit::Actor;
use custody_identity::idp::IdpConfig;
use custody_identity::{AppId, Secret};
use custody_vault::webhook::{
    Delivery, DisableError, EnableError, EnabledWebhooks, ReceiveError, RotateError, SvixHeaders, WebhookSettingsError,
    WebhookView,
};
use hyper::header::AUTHORIZATION;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// The body of `enable` and `rotate`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SecretBody {
    #[serde(default)]
    signing_secret: Option<String>,
}

fn not_enabled() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "webhooks_not_enabled", "webhooks are not enabled for this app")
}

fn already_enabled() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "webhooks_already_enabled",
        "webhooks are already enabled; rotate the secret or disable them first",
    )
}

fn not_enabled_conflict() -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "webhooks_not_enabled", "webhooks are not enabled; enable them first")
}

fn invalid_signing_secret(detail: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_signing_secret", detail)
}

fn sealing_error() -> ApiError {
    tracing::error!("a webhook secret could not be sealed or opened");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "sealing_error", "a stored secret could not be used")
}

impl From<WebhookSettingsError> for ApiError {
    fn from(e: WebhookSettingsError) -> Self {
        match e {
            WebhookSettingsError::NotConfigured => ApiError::idp_not_configured(),
            WebhookSettingsError::Store(e) => e.into(),
        }
    }
}

impl From<EnableError> for ApiError {
    fn from(e: EnableError) -> Self {
        match e {
            EnableError::NotConfigured => ApiError::idp_not_configured(),
            EnableError::AlreadyEnabled => already_enabled(),
            EnableError::InvalidSigningSecret(detail) => invalid_signing_secret(detail),
            EnableError::Invalid(detail) => ApiError::invalid_request(detail),
            EnableError::Sealing => sealing_error(),
            EnableError::Store(e) => e.into(),
        }
    }
}

impl From<RotateError> for ApiError {
    fn from(e: RotateError) -> Self {
        match e {
            RotateError::NotConfigured => ApiError::idp_not_configured(),
            RotateError::NotEnabled => not_enabled_conflict(),
            RotateError::InvalidSigningSecret(detail) => invalid_signing_secret(detail),
            RotateError::Invalid(detail) => ApiError::invalid_request(detail),
            RotateError::Sealing => sealing_error(),
            RotateError::Store(e) => e.into(),
        }
    }
}

impl From<DisableError> for ApiError {
    fn from(e: DisableError) -> Self {
        match e {
            DisableError::NotConfigured => ApiError::idp_not_configured(),
            DisableError::NotEnabled => not_enabled_conflict(),
            DisableError::Store(e) => e.into(),
        }
    }
}

impl From<ReceiveError> for ApiError {
    fn from(e: ReceiveError) -> Self {
        match e {
            ReceiveError::NotEnabled => not_enabled(),
            ReceiveError::InvalidSignature(reason) => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                format!("the delivery is not authentic: {reason}"),
            ),
            ReceiveError::Malformed(e) => ApiError::new(StatusCode::BAD_REQUEST, "malformed_payload", e.to_string()),
            ReceiveError::Store { error, applied } => {
                tracing::error!(
                    error = %error,
                    processed = applied.processed,
                    "storage failed while applying a webhook delivery; the identity provider will retry"
                );
                ApiError::unavailable(format!(
                    "storage is unavailable; the failing event was not applied ({} earlier events were), retry later",
                    applied.processed
                ))
            }
            ReceiveError::Sealing => sealing_error(),
        }
    }
}

/// The settings object `{"url", "enabled", "secret_source", "rotated_at"}`.
pub fn view_json(view: &WebhookView) -> Value {
    json!({
        "url": view.url,
        "enabled": view.enabled,
        "secret_source": view.secret_source.as_str(),
        "rotated_at": rfc3339_opt(view.rotated_at),
    })
}

fn enabled_json(enabled: EnabledWebhooks) -> Value {
    let mut out = view_json(&enabled.view);
    if let Some(secret) = enabled.signing_secret {
        // Shown in this response only; the server keeps its keyed hash.
        out["signing_secret"] = Value::String(secret.into_inner());
    }
    out
}

/// The IdP object of the contract, with the real webhook settings of `config`.
pub async fn idp_object(state: &AppState, config: &IdpConfig) -> Result<Value, ApiError> {
    let mut object = super::idp::idp_json(state, config);
    if let Some(target) = custody_vault::webhook::WebhookStore::webhook_target(&state.store, &config.app_id).await? {
        object["webhook"] = view_json(&state.webhooks.view_of(&config.app_id, &target));
    }
    Ok(object)
}

fn secret_of(body: SecretBody) -> Option<Secret> {
    body.signing_secret.map(Secret::new)
}

pub async fn get_settings(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let view = state.webhooks.settings(&app.id).await?;
    Ok(json_response(StatusCode::OK, &view_json(&view)))
}

pub async fn enable(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let body: SecretBody = parse_json(&call.body)?;
    let enabled = state.webhooks.enable(&app.id, secret_of(body), &Actor::operator()).await?;
    Ok(json_response(StatusCode::OK, &enabled_json(enabled)))
}

pub async fn rotate(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let body: SecretBody = parse_json(&call.body)?;
    let rotated = state.webhooks.rotate(&app.id, secret_of(body), &Actor::operator()).await?;
    Ok(json_response(StatusCode::OK, &enabled_json(rotated)))
}

pub async fn disable(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let view = state.webhooks.disable(&app.id, &Actor::operator()).await?;
    Ok(json_response(StatusCode::OK, &view_json(&view)))
}

fn header(call: &Call, name: &str) -> Option<String> {
    call.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// `GET /v1/webhooks/{app_id}`: an identity provider's one-time verification of the webhook URL
/// (Okta event hooks), answered `{"verification": <the challenge header's value>}` once the
/// request proves the webhook secret.
pub async fn verify(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = AppId::parse(call.param(0)).map_err(|_| not_enabled())?;
    let authorization = call.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let verification = state.webhooks.verify_endpoint(&app, authorization, &|name| header(&call, name)).await?;
    tracing::info!(app = app.as_str(), "webhook URL verified by the identity provider");
    Ok(json_response(StatusCode::OK, &json!({"verification": verification})))
}

/// `POST /v1/webhooks/{app_id}`: an identity provider's lifecycle events.
pub async fn receive(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    // A malformed app id is as unknown as a missing app: nothing to tell the caller apart.
    let app = AppId::parse(call.param(0)).map_err(|_| not_enabled())?;
    let svix = SvixHeaders {
        id: header(&call, "svix-id"),
        timestamp: header(&call, "svix-timestamp"),
        signature: header(&call, "svix-signature"),
    };
    let authorization = call.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let delivery = Delivery { authorization, svix: &svix, body: &call.body };
    let counts = state.webhooks.receive(&app, &delivery).await?;
    tracing::info!(
        app = app.as_str(),
        processed = counts.processed,
        ignored = counts.ignored,
        duplicates = counts.duplicates,
        "lifecycle webhook delivery applied"
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({"processed": counts.processed, "ignored": counts.ignored, "duplicates": counts.duplicates}),
    ))
}
