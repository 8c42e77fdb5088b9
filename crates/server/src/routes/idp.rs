//! Operator endpoints for the app's identity provider: discovery, create, read, patch, delete,
//! and the key-set refresh.

use super::apps::existing_app;
use super::signin::OidcJson;
use super::webhooks::WebhookJson;
use super::Call;
use crate::json::{double_option, json_response, no_content, parse_json, rfc3339, HttpResponse};
use crate::problem::ApiError;
use crate::state::AppState;
use custody_identity::audit::Actor;
use custody_identity::idp::{IdpConfig, IdpKind, IdpPatch, RequestedClaims};
use custody_identity::kinds::SecretSource;
use custody_identity::service::{AddIdp, DiscoveredIdp};
use custody_identity::{ClaimMappings, ClaimPath, IdpId};
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ClaimsBody {
    #[serde(default)]
    user_id: Option<ClaimPath>,
    #[serde(default, deserialize_with = "double_option")]
    group: Option<Option<ClaimPath>>,
    #[serde(default, deserialize_with = "double_option")]
    role: Option<Option<ClaimPath>>,
}

impl From<ClaimsBody> for RequestedClaims {
    fn from(b: ClaimsBody) -> Self {
        RequestedClaims { user_id: b.user_id, group: b.group, role: b.role }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscoverBody {
    issuer_url: String,
    #[serde(default)]
    kind: Option<IdpKind>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    issuer_url: String,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    kind: Option<IdpKind>,
    #[serde(default)]
    claims: Option<ClaimsBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[serde(default, deserialize_with = "double_option")]
    audience: Option<Option<String>>,
    #[serde(default)]
    claims: Option<ClaimsBody>,
}

/// The claim mappings: `{"user_id", "group", "role"}`.
#[derive(Serialize)]
struct ClaimsJson<'a> {
    user_id: &'a ClaimPath,
    group: Option<&'a ClaimPath>,
    role: Option<&'a ClaimPath>,
}

impl<'a> From<&'a ClaimMappings> for ClaimsJson<'a> {
    fn from(claims: &'a ClaimMappings) -> Self {
        Self { user_id: &claims.user_id, group: claims.group.as_ref(), role: claims.role.as_ref() }
    }
}

/// The IdP object of the contract; [`super::signin::idp_object`] reads its stored webhook
/// settings and OIDC client.
#[derive(Serialize)]
pub struct IdpJson<'a> {
    id: &'a IdpId,
    kind: &'a str,
    issuer: &'a str,
    jwks_uri: &'a str,
    audience: Option<&'a str>,
    claims: ClaimsJson<'a>,
    claims_locked: bool,
    claims_locked_at: Option<String>,
    oidc: OidcJson,
    webhook: WebhookJson,
    created_at: String,
}

impl<'a> IdpJson<'a> {
    pub fn new(config: &'a IdpConfig, oidc: OidcJson, webhook: WebhookJson) -> Self {
        Self {
            id: &config.id,
            kind: config.kind.as_str(),
            issuer: config.issuer.as_str(),
            jwks_uri: &config.jwks_uri,
            audience: config.audience.as_deref(),
            claims: ClaimsJson::from(&config.claims),
            claims_locked: config.claims_locked(),
            claims_locked_at: config.claims_locked_at.map(rfc3339),
            oidc,
            webhook,
            created_at: rfc3339(config.created_at),
        }
    }
}

/// The webhook settings of an IdP whose webhooks were never set up: disabled, at the URL they
/// would have.
pub fn default_webhook(state: &AppState, config: &IdpConfig) -> WebhookJson {
    let public_url = state.public_url();
    WebhookJson {
        url: format!("{public_url}/v1/webhooks/{}", config.app_id),
        enabled: false,
        secret_source: state.identity().kind_adapter(&config.kind).webhook_secret().as_str(),
        rotated_at: None,
    }
}

/// The answer to a discovery: what would be stored, and what the IdP supports.
#[derive(Serialize)]
struct DiscoveredJson<'a> {
    kind: &'a str,
    issuer: &'a str,
    jwks_uri: &'a str,
    authorization_endpoint: Option<&'a str>,
    token_endpoint: Option<&'a str>,
    end_session_endpoint: Option<&'a str>,
    signing_algs: &'a [String],
    claims: ClaimsJson<'a>,
    capabilities: CapabilitiesJson,
}

#[derive(Serialize)]
struct CapabilitiesJson {
    webhooks: &'static str,
    oidc_sign_in: bool,
}

/// The key set just fetched: `{"kids", "fetched_at"}`.
#[derive(Serialize)]
struct KeysJson<'a> {
    kids: &'a [String],
    fetched_at: String,
}

fn validate_audience(audience: &Option<String>) -> Result<(), ApiError> {
    match audience {
        Some(a) if a.is_empty() || a.len() > 512 => {
            Err(ApiError::invalid_request("audience: must be 1 to 512 characters"))
        }
        _ => Ok(()),
    }
}

pub async fn discover(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    existing_app(&state, &call).await?;
    let body: DiscoverBody = parse_json(&call.body)?;
    let DiscoveredIdp { kind, document, claims, webhook_secret, .. } =
        state.identity().discover(&body.issuer_url, body.kind).await?;
    let oidc_sign_in = document.authorization_endpoint.is_some() && document.token_endpoint.is_some();
    Ok(json_response(
        StatusCode::OK,
        &DiscoveredJson {
            kind: kind.as_str(),
            issuer: &document.issuer,
            jwks_uri: &document.jwks_uri,
            authorization_endpoint: document.authorization_endpoint.as_deref(),
            token_endpoint: document.token_endpoint.as_deref(),
            end_session_endpoint: document.end_session_endpoint.as_deref(),
            signing_algs: &document.signing_algs,
            claims: ClaimsJson::from(&claims),
            capabilities: CapabilitiesJson {
                webhooks: match webhook_secret {
                    SecretSource::Provided => "provided_secret",
                    SecretSource::Generated => "generated_secret",
                },
                oidc_sign_in,
            },
        },
    ))
}

pub async fn create(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let body: CreateBody = parse_json(&call.body)?;
    validate_audience(&body.audience)?;
    let request = AddIdp {
        issuer_url: body.issuer_url,
        audience: body.audience,
        kind: body.kind,
        claims: body.claims.map(RequestedClaims::from).unwrap_or_default(),
    };
    let config = state.identity().add_idp(&app.id, request, &Actor::operator()).await?;
    Ok(json_response(StatusCode::CREATED, &super::signin::idp_object(&state, &config).await?))
}

pub async fn get(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let config = state.identity().get_idp(&app.id).await?.ok_or_else(ApiError::idp_not_configured)?;
    Ok(json_response(StatusCode::OK, &super::signin::idp_object(&state, &config).await?))
}

/// `POST .../identity-provider/jwks/refresh`: fetches the IdP's key set now, so a key the IdP
/// removed stops verifying from the next request (cached tokens included).
pub async fn refresh_jwks(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let config = state.identity().get_idp(&app.id).await?.ok_or_else(ApiError::idp_not_configured)?;
    let refreshed = state.identity().refresh_keys(&config).await?;
    Ok(json_response(StatusCode::OK, &KeysJson { kids: &refreshed.kids, fetched_at: rfc3339(refreshed.fetched_at) }))
}

pub async fn patch(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let body: PatchBody = parse_json(&call.body)?;
    if let Some(audience) = &body.audience {
        validate_audience(audience)?;
    }
    let patch =
        IdpPatch { audience: body.audience, claims: body.claims.map(RequestedClaims::from).unwrap_or_default() };
    let config = state.identity().patch_idp(&app.id, &patch, &Actor::operator()).await?;
    Ok(json_response(StatusCode::OK, &super::signin::idp_object(&state, &config).await?))
}

pub async fn delete(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    if !state.identity().delete_idp(&app.id, &Actor::operator()).await? {
        return Err(ApiError::idp_not_configured());
    }
    Ok(no_content())
}
