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
use crate::json::{json_response, parse_json, rfc3339, HttpResponse};
use crate::problem::ApiError;
use crate::state::AppState;
use custody_identity::audit::Actor;
use custody_identity::idp::IdpConfig;
use custody_identity::{AppId, Secret};
use custody_vault::webhook::{Delivery, EnabledWebhooks, SvixHeaders, WebhookSettingsError, WebhookView};
use hyper::header::AUTHORIZATION;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The body of `enable` and `rotate`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SecretBody {
    #[serde(default)]
    signing_secret: Option<String>,
}

/// The settings object `{"url", "enabled", "secret_source", "rotated_at"}`.
#[derive(Serialize)]
pub struct WebhookJson {
    pub url: String,
    pub enabled: bool,
    pub secret_source: &'static str,
    pub rotated_at: Option<String>,
}

impl From<&WebhookView> for WebhookJson {
    fn from(view: &WebhookView) -> Self {
        Self {
            url: view.url.clone(),
            enabled: view.enabled,
            secret_source: view.secret_source.as_str(),
            rotated_at: view.rotated_at.map(rfc3339),
        }
    }
}

/// The settings after enabling or rotating, with the generated secret this once.
#[derive(Serialize)]
struct EnabledJson {
    #[serde(flatten)]
    view: WebhookJson,
    /// Shown in this response only; the server keeps its keyed hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    signing_secret: Option<String>,
}

impl From<EnabledWebhooks> for EnabledJson {
    fn from(enabled: EnabledWebhooks) -> Self {
        Self { view: WebhookJson::from(&enabled.view), signing_secret: enabled.signing_secret.map(Secret::into_inner) }
    }
}

/// The `webhook` member of the IdP object: the stored settings of `config`'s app, or the
/// defaults (disabled) when webhooks were never set up.
pub async fn idp_webhook(state: &AppState, config: &IdpConfig) -> Result<WebhookJson, ApiError> {
    match state.webhooks().settings(&config.app_id).await {
        Ok(view) => Ok(WebhookJson::from(&view)),
        // Gone since the caller read it: the defaults stand, as for an IdP without settings.
        Err(WebhookSettingsError::NotConfigured) => Ok(super::idp::default_webhook(state, config)),
        Err(e) => Err(e.into()),
    }
}

/// The answer to a delivery: what became of its events.
#[derive(Serialize)]
struct CountsJson {
    processed: u32,
    ignored: u32,
    duplicates: u32,
}

/// The answer to Okta's verification challenge.
#[derive(Serialize)]
struct VerificationJson {
    verification: String,
}

fn secret_of(body: SecretBody) -> Option<Secret> {
    body.signing_secret.map(Secret::new)
}

pub async fn get_settings(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let view = state.webhooks().settings(&app.id).await?;
    Ok(json_response(StatusCode::OK, &WebhookJson::from(&view)))
}

pub async fn enable(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let body: SecretBody = parse_json(&call.body)?;
    let enabled = state.webhooks().enable(&app.id, secret_of(body), &Actor::operator()).await?;
    Ok(json_response(StatusCode::OK, &EnabledJson::from(enabled)))
}

pub async fn rotate(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let body: SecretBody = parse_json(&call.body)?;
    let rotated = state.webhooks().rotate(&app.id, secret_of(body), &Actor::operator()).await?;
    Ok(json_response(StatusCode::OK, &EnabledJson::from(rotated)))
}

pub async fn disable(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let view = state.webhooks().disable(&app.id, &Actor::operator()).await?;
    Ok(json_response(StatusCode::OK, &WebhookJson::from(&view)))
}

fn header(call: &Call, name: &str) -> Option<String> {
    call.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// `GET /v1/webhooks/{app_id}`: an identity provider's one-time verification of the webhook URL
/// (Okta event hooks), answered `{"verification": <the challenge header's value>}` once the
/// request proves the webhook secret.
pub async fn verify(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = AppId::parse(call.param(0)).map_err(|_| ApiError::webhooks_not_enabled())?;
    let authorization = call.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let verification = state.webhooks().verify_endpoint(&app, authorization, &|name| header(&call, name)).await?;
    tracing::info!(app = app.as_str(), "webhook URL verified by the identity provider");
    Ok(json_response(StatusCode::OK, &VerificationJson { verification }))
}

/// `POST /v1/webhooks/{app_id}`: an identity provider's lifecycle events.
pub async fn receive(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    // A malformed app id is as unknown as a missing app: nothing to tell the caller apart.
    let app = AppId::parse(call.param(0)).map_err(|_| ApiError::webhooks_not_enabled())?;
    let svix = SvixHeaders {
        id: header(&call, "svix-id"),
        timestamp: header(&call, "svix-timestamp"),
        signature: header(&call, "svix-signature"),
    };
    let authorization = call.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let delivery = Delivery { authorization, svix: &svix, body: &call.body };
    let counts = state.webhooks().receive(&app, &delivery).await?;
    tracing::info!(
        app = app.as_str(),
        processed = counts.processed,
        ignored = counts.ignored,
        duplicates = counts.duplicates,
        "lifecycle webhook delivery applied"
    );
    Ok(json_response(
        StatusCode::OK,
        &CountsJson { processed: counts.processed, ignored: counts.ignored, duplicates: counts.duplicates },
    ))
}
