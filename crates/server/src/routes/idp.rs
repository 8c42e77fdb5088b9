//! Operator endpoints for the app's identity provider: discovery, create, read, patch, delete,
//! and the key-set refresh.

use super::apps::existing_app;
use super::Call;
use crate::json::{double_option, json_response, no_content, parse_json, rfc3339, rfc3339_opt, HttpResponse};
use crate::problem::ApiError;
use crate::state::AppState;
use custody_identity::audit::Actor;
use custody_identity::idp::{IdpConfig, IdpKind, IdpPatch, RequestedClaims};
use custody_identity::service::{AddIdp, DiscoveredIdp};
use custody_identity::ClaimMappings;
use custody_identity::ClaimPath;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
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

fn claims_json(claims: &ClaimMappings) -> Value {
    json!({"user_id": claims.user_id, "group": claims.group, "role": claims.role})
}

fn webhook_secret_source(kind: IdpKind) -> &'static str {
    if kind.webhook_secret_is_provided() {
        "provided"
    } else {
        "generated"
    }
}

/// The IdP object of the contract, its webhook settings at their defaults (disabled) and no OIDC
/// client; [`super::webhooks::idp_object`] fills in the stored webhook settings and
/// [`super::signin::idp_object`] the OIDC client too.
pub fn idp_json(state: &AppState, config: &IdpConfig) -> Value {
    let public = &state.public_url;
    json!({
        "id": config.id,
        "kind": config.kind.as_str(),
        "issuer": config.issuer.as_str(),
        "jwks_uri": config.jwks_uri,
        "audience": config.audience,
        "claims": claims_json(&config.claims),
        "claims_locked": config.claims_locked(),
        "claims_locked_at": rfc3339_opt(config.claims_locked_at),
        "oidc": super::signin::oidc_json(public, None),
        "webhook": {
            "url": format!("{public}/v1/webhooks/{}", config.app_id),
            "enabled": false,
            "secret_source": webhook_secret_source(config.kind),
            "rotated_at": null,
        },
        "created_at": rfc3339(config.created_at),
    })
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
    let DiscoveredIdp { kind, document, claims } = state.identity.discover(&body.issuer_url, body.kind).await?;
    let oidc_sign_in = document.authorization_endpoint.is_some() && document.token_endpoint.is_some();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "kind": kind.as_str(),
            "issuer": document.issuer,
            "jwks_uri": document.jwks_uri,
            "authorization_endpoint": document.authorization_endpoint,
            "token_endpoint": document.token_endpoint,
            "end_session_endpoint": document.end_session_endpoint,
            "signing_algs": document.signing_algs,
            "claims": claims_json(&claims),
            "capabilities": {
                "webhooks": if kind.webhook_secret_is_provided() { "provided_secret" } else { "generated_secret" },
                "oidc_sign_in": oidc_sign_in,
            },
        }),
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
    let config = state.identity.add_idp(&app.id, request, &Actor::operator()).await?;
    Ok(json_response(StatusCode::CREATED, &super::signin::idp_object(&state, &config).await?))
}

pub async fn get(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    use custody_store::prelude::*;
    let config = state.store.get_idp(&app.id).await?.ok_or_else(ApiError::idp_not_configured)?;
    Ok(json_response(StatusCode::OK, &super::signin::idp_object(&state, &config).await?))
}

/// `POST .../identity-provider/jwks/refresh`: fetches the IdP's key set now, so a key the IdP
/// removed stops verifying from the next request (cached tokens included).
pub async fn refresh_jwks(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    use custody_store::prelude::*;
    let config = state.store.get_idp(&app.id).await?.ok_or_else(ApiError::idp_not_configured)?;
    let refreshed = state.verifier.refresh_now(&config.jwks_uri).await?;
    let fetched_at = refreshed
        .fetched_at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| custody_identity::UnixTime(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)))
        .unwrap_or(custody_identity::UnixTime(0));
    Ok(json_response(StatusCode::OK, &json!({"kids": refreshed.kids, "fetched_at": rfc3339(fetched_at)})))
}

pub async fn patch(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let body: PatchBody = parse_json(&call.body)?;
    if let Some(audience) = &body.audience {
        validate_audience(audience)?;
    }
    let patch =
        IdpPatch { audience: body.audience, claims: body.claims.map(RequestedClaims::from).unwrap_or_default() };
    let config = state.identity.patch_idp(&app.id, &patch, &Actor::operator()).await?;
    Ok(json_response(StatusCode::OK, &super::signin::idp_object(&state, &config).await?))
}

pub async fn delete(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    if !state.identity.delete_idp(&app.id, &Actor::operator()).await? {
        return Err(ApiError::idp_not_configured());
    }
    Ok(no_content())
}
