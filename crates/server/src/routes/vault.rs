//! Vault endpoints: providers and policies (operator), the connect flow, the user's grants,
//! token hand-out, and the operator's grant views, revocation and import.

use super::apps::{existing_app, ListJson};
use super::runtime::acting_user;
use super::user_token;
use super::wallet::{cookie, set_cookie};
use super::Call;
use crate::json::{double_option, json_response, no_content, parse_json, redirect, rfc3339, HttpResponse};
use crate::problem::ApiError;
use crate::state::AppState;
use custody_identity::audit::Actor;
use custody_identity::{Secret, UserId};
use custody_vault::grant::TokenSet;
use custody_vault::handout::HandoutError;
use custody_vault::policy::{Policy, PolicyLookup, TokenAccess};
use custody_vault::ports::GrantFilter;
use custody_vault::service::{GrantSelector, GrantUseError, ImportGrant, ProviderInput};
use custody_vault::{Grant, GrantId, GrantStatus, ProviderConfig, ProviderName};
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;

/// A grant as the API shows it (never its tokens).
#[derive(Serialize)]
pub struct GrantJson<'a> {
    id: &'a GrantId,
    provider: &'a ProviderName,
    status: &'static str,
    scopes: &'a [String],
    account: Option<&'a str>,
    user_id: &'a UserId,
    created_at: String,
    updated_at: String,
    last_used_at: Option<String>,
    revoked_at: Option<String>,
}

impl<'a> From<&'a Grant> for GrantJson<'a> {
    fn from(grant: &'a Grant) -> Self {
        Self {
            id: &grant.id,
            provider: &grant.provider,
            status: grant.status.as_str(),
            scopes: &grant.scopes,
            account: grant.account.as_deref(),
            user_id: &grant.user_id,
            created_at: rfc3339(grant.created_at),
            updated_at: rfc3339(grant.updated_at),
            last_used_at: grant.last_used_at.map(rfc3339),
            revoked_at: grant.revoked_at.map(rfc3339),
        }
    }
}

/// A provider as the API shows it (never its client secret).
#[derive(Serialize)]
struct ProviderJson<'a> {
    provider: &'a ProviderName,
    authorization_url: &'a str,
    token_url: &'a str,
    revocation_url: Option<&'a str>,
    client_id: &'a str,
    scopes: &'a [String],
    api_base_url: Option<&'a str>,
    created_at: String,
    updated_at: String,
}

impl<'a> From<&'a ProviderConfig> for ProviderJson<'a> {
    fn from(p: &'a ProviderConfig) -> Self {
        Self {
            provider: &p.name,
            authorization_url: &p.authorization_url,
            token_url: &p.token_url,
            revocation_url: p.revocation_url.as_deref(),
            client_id: &p.client_id,
            scopes: &p.scopes,
            api_base_url: p.api_base_url.as_deref(),
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
        }
    }
}

/// A policy as the API shows it.
#[derive(Serialize)]
struct PolicyJson<'a> {
    provider: &'a ProviderName,
    allow_groups: &'a BTreeSet<String>,
    allow_roles: &'a BTreeSet<String>,
    token_access: &'static str,
    updated_at: String,
}

impl<'a> From<&'a Policy> for PolicyJson<'a> {
    fn from(p: &'a Policy) -> Self {
        Self {
            provider: &p.provider,
            allow_groups: &p.allow_groups,
            allow_roles: &p.allow_roles,
            token_access: p.token_access.as_str(),
            updated_at: rfc3339(p.updated_at),
        }
    }
}

/// The answer to starting a connect flow.
#[derive(Serialize)]
struct ConnectSessionJson<'a> {
    connect_url: &'a str,
    expires_at: String,
}

/// A handed-out token (RFC 6749 section 5.1 style).
#[derive(Serialize)]
struct HandoutJson<'a> {
    access_token: &'a str,
    token_type: &'a str,
    expires_at: Option<String>,
    grant_id: &'a GrantId,
    provider: &'a ProviderName,
    scopes: &'a [String],
}

fn provider_param(call: &Call, n: usize) -> Result<ProviderName, ApiError> {
    ProviderName::parse(call.param(n)).map_err(|e| ApiError::invalid_request(format!("provider: {e}")))
}

fn grant_param(call: &Call, n: usize) -> Result<GrantId, ApiError> {
    GrantId::parse(call.param(n)).map_err(|_| ApiError::grant_not_found())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderBody {
    #[serde(default)]
    preset: Option<String>,
    #[serde(default)]
    authorization_url: Option<String>,
    #[serde(default)]
    token_url: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    revocation_url: Option<Option<String>>,
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "double_option")]
    api_base_url: Option<Option<String>>,
}

pub async fn put_provider(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let name = provider_param(&call, 1)?;
    let body: ProviderBody = parse_json(&call.body)?;
    let input = ProviderInput {
        preset: body.preset,
        authorization_url: body.authorization_url,
        token_url: body.token_url,
        revocation_url: body.revocation_url,
        client_id: body.client_id,
        client_secret: body.client_secret.map(Secret::new),
        scopes: body.scopes,
        api_base_url: body.api_base_url,
    };
    let provider = state.vault().put_provider(&app.id, &name, input, &Actor::operator()).await?;
    Ok(json_response(StatusCode::OK, &ProviderJson::from(&provider)))
}

pub async fn get_provider(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let name = provider_param(&call, 1)?;
    let provider =
        state.vault().get_provider(&app.id, &name).await?.ok_or_else(|| ApiError::provider_not_found(&name))?;
    Ok(json_response(StatusCode::OK, &ProviderJson::from(&provider)))
}

pub async fn list_providers(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let page = state.vault().list_providers(&app.id, &call.page()?).await?;
    Ok(json_response(StatusCode::OK, &ListJson::<ProviderJson>::of(&page)))
}

pub async fn delete_provider(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let name = provider_param(&call, 1)?;
    if !state.vault().delete_provider(&app.id, &name, &Actor::operator()).await? {
        return Err(ApiError::provider_not_found(&name));
    }
    state.wake_outbox();
    Ok(no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    #[serde(default)]
    allow_groups: Vec<String>,
    #[serde(default)]
    allow_roles: Vec<String>,
    #[serde(default)]
    token_access: Option<String>,
}

pub async fn put_policy(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let name = provider_param(&call, 1)?;
    let body: PolicyBody = parse_json(&call.body)?;
    let token_access = match body.token_access.as_deref() {
        None => TokenAccess::Handout,
        Some(raw) => TokenAccess::parse(raw)
            .ok_or_else(|| ApiError::invalid_request("token_access: expected handout or proxy_only"))?,
    };
    let policy = state
        .vault()
        .put_policy(&app.id, &name, body.allow_groups, body.allow_roles, token_access, &Actor::operator())
        .await?;
    Ok(json_response(StatusCode::OK, &PolicyJson::from(&policy)))
}

pub async fn get_policy(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let name = provider_param(&call, 1)?;
    match state.vault().get_policy(&app.id, &name).await? {
        PolicyLookup::Found(policy) => Ok(json_response(StatusCode::OK, &PolicyJson::from(&policy))),
        PolicyLookup::None => Err(ApiError::policy_not_found(&name)),
        PolicyLookup::Unreadable => Err(ApiError::internal()),
    }
}

pub async fn list_policies(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let page = state.vault().list_policies(&app.id, &call.page()?).await?;
    Ok(json_response(StatusCode::OK, &ListJson::<PolicyJson>::of(&page)))
}

pub async fn delete_policy(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let name = provider_param(&call, 1)?;
    if !state.vault().delete_policy(&app.id, &name, &Actor::operator()).await? {
        return Err(ApiError::policy_not_found(&name));
    }
    Ok(no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectBody {
    provider: ProviderName,
    return_url: String,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

pub async fn create_connect_session(state: Arc<AppState>, mut call: Call) -> Result<HttpResponse, ApiError> {
    let user = acting_user(&state, &mut call).await?;
    let body: ConnectBody = parse_json(&call.body)?;
    let session = state.vault().start_connect(&user, &body.provider, &body.return_url, body.scopes).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &ConnectSessionJson { connect_url: &session.connect_url, expires_at: rfc3339(session.expires_at) },
    ))
}

/// Where the connect binding cookie is sent: the start and callback endpoints only.
const CONNECT_COOKIE_PATH: &str = "/v1/connect";

/// The cookie that binds one connect flow to the browser that opened it: one per flow (named
/// after the state's hash), so flows for two providers in two tabs do not clobber each other.
fn connect_cookie_name(state_value: &str) -> String {
    let hash = custody_vault::service::state_hash(state_value);
    format!("custody_connect_{}", &hash[..16])
}

pub async fn connect_start(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let token = call.query.get("state").ok_or_else(|| ApiError::invalid_request("state: required"))?;
    let name = connect_cookie_name(token);
    let (url, binding) = state.vault().connect_redirect(token, cookie(&call, &name)).await?;
    let mut response = redirect(&url);
    if let Some(value) = binding {
        // HttpOnly; SameSite=Lax so the provider's top-level redirect back carries it; Secure
        // over https; it lives as long as the connect session may.
        let max_age = custody_vault::service::CONNECT_STATE_TTL_SECS;
        set_cookie(&state, &mut response, &name, value.expose(), CONNECT_COOKIE_PATH, max_age);
    }
    Ok(response)
}

pub async fn connect_callback(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let token = call.query.get("state").ok_or_else(|| ApiError::invalid_request("state: required"))?;
    let name = connect_cookie_name(token);
    let url = state
        .vault()
        .complete_connect(
            token,
            cookie(&call, &name),
            call.query.get("code").map(String::as_str),
            call.query.get("error").map(String::as_str),
        )
        .await?;
    let mut response = redirect(&url);
    set_cookie(&state, &mut response, &name, "", CONNECT_COOKIE_PATH, 0);
    Ok(response)
}

pub async fn list_my_grants(state: Arc<AppState>, mut call: Call) -> Result<HttpResponse, ApiError> {
    let user = acting_user(&state, &mut call).await?;
    let page = state.vault().user_grants(&user, &call.page()?).await?;
    Ok(json_response(StatusCode::OK, &ListJson::<GrantJson>::of(&page)))
}

pub async fn revoke_my_grant(state: Arc<AppState>, mut call: Call) -> Result<HttpResponse, ApiError> {
    let user = acting_user(&state, &mut call).await?;
    let id = grant_param(&call, 0)?;
    let grant = state.vault().revoke_user_grant(&user, &id).await?;
    state.wake_outbox();
    Ok(json_response(StatusCode::OK, &GrantJson::from(&grant)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    #[serde(default)]
    provider: Option<ProviderName>,
    #[serde(default)]
    grant_id: Option<String>,
}

pub async fn token(state: Arc<AppState>, mut call: Call) -> Result<HttpResponse, ApiError> {
    let caller = call.app.take().ok_or_else(ApiError::unauthorized)?;
    let token = user_token(&call)?;
    let selector = match token_selector(&call.body) {
        Ok(selector) => selector,
        Err(invalid) => {
            // A bad key or user token outranks a bad body (401 before 400), as on every runtime
            // route: check both the ordinary way before answering the body's error.
            let presented = super::bearer(&call.headers).ok_or_else(ApiError::unauthorized)?;
            let (key, idp) = state.authenticate_api_key_with_idp(presented).await?;
            state.identity().resolve_user_under(&key.app_id, idp, token).await?;
            return Err(invalid);
        }
    };
    // The key, the user and the grant in one read (`custody_vault::handout`).
    let handout = match state.handouts().hand_out(&caller, token, &selector).await {
        Ok(handout) => handout,
        Err(HandoutError::Use(GrantUseError::GrantNotFound)) => {
            return Err(no_grant(&state, &caller.key.app_id, &selector).await)
        }
        Err(HandoutError::KeyNotValid) => return Err(ApiError::unauthorized()),
        Err(HandoutError::Resolve(e)) => return Err(e.into()),
        Err(HandoutError::Use(e)) => return Err(e.into()),
    };
    let mut response = json_response(
        StatusCode::OK,
        &HandoutJson {
            access_token: handout.access_token.expose(),
            token_type: &handout.token_type,
            expires_at: handout.expires_at.map(rfc3339),
            grant_id: &handout.grant_id,
            provider: &handout.provider,
            scopes: &handout.scopes,
        },
    );
    // RFC 6749 section 5.1: responses carrying tokens must not be cached.
    response.headers_mut().insert(hyper::header::CACHE_CONTROL, hyper::header::HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The grant a `POST /v1/token` body selects: exactly one of `provider` and `grant_id`.
fn token_selector(body: &[u8]) -> Result<GrantSelector, ApiError> {
    let body: TokenBody = parse_json(body)?;
    match (body.provider, body.grant_id) {
        (Some(p), None) => Ok(GrantSelector::Provider(p)),
        (None, Some(id)) => Ok(GrantSelector::Id(GrantId::parse(&id).map_err(|_| ApiError::grant_not_found())?)),
        _ => Err(ApiError::invalid_request("provider: give exactly one of provider and grant_id")),
    }
}

/// Why `POST /v1/token` found no grant, in terms the caller can act on: the app never
/// configured the provider (404 `provider_not_found`), or the user never connected it (404
/// `grant_not_found`, pointing at the connect flow). Only read on this error path.
async fn no_grant(state: &AppState, app: &custody_identity::AppId, selector: &GrantSelector) -> ApiError {
    let GrantSelector::Provider(provider) = selector else {
        return ApiError::grant_not_found();
    };
    match state.vault().get_provider(app, provider).await {
        Ok(None) => ApiError::new(
            StatusCode::NOT_FOUND,
            "provider_not_found",
            format!(
                "provider `{provider}` is not configured for this app: the operator adds it with \
                 PUT /v1/apps/{{app_id}}/providers/{provider}"
            ),
        ),
        Ok(Some(_)) => ApiError::new(
            StatusCode::NOT_FOUND,
            "grant_not_found",
            format!(
                "the user has not connected `{provider}`: start a connect flow with POST /v1/connect/sessions \
                 {{\"provider\": \"{provider}\", \"return_url\": ...}} and send the user to its connect_url"
            ),
        ),
        Err(error) => error.into(),
    }
}

pub async fn list_app_grants(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let q = |k: &str| call.query.get(k).filter(|v| !v.is_empty());
    let filter = GrantFilter {
        user_id: q("user_id")
            .map(|v| UserId::parse(v))
            .transpose()
            .map_err(|_| ApiError::invalid_request("user_id: not a valid id"))?,
        provider: q("provider")
            .map(|v| ProviderName::parse(v))
            .transpose()
            .map_err(|e| ApiError::invalid_request(format!("provider: {e}")))?,
        status: q("status")
            .map(|v| {
                GrantStatus::parse(v)
                    .ok_or_else(|| ApiError::invalid_request("status: expected active, expired or revoked"))
            })
            .transpose()?,
    };
    let page = state.vault().list_grants(&app.id, &filter, &call.page()?).await?;
    Ok(json_response(StatusCode::OK, &ListJson::<GrantJson>::of(&page)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    #[serde(default)]
    reason: Option<String>,
}

pub async fn revoke_app_grant(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let id = grant_param(&call, 1)?;
    let body: RevokeBody = parse_json(&call.body)?;
    if body.reason.as_ref().is_some_and(|r| r.len() > 1000) {
        return Err(ApiError::invalid_request("reason: at most 1000 characters"));
    }
    let grant = state.vault().revoke_grant(&app.id, &id, body.reason, &Actor::operator()).await?;
    state.wake_outbox();
    Ok(json_response(StatusCode::OK, &GrantJson::from(&grant)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBody {
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    provider: ProviderName,
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    token_type: Option<String>,
}

pub async fn import_grant(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let body: ImportBody = parse_json(&call.body)?;
    let import = ImportGrant {
        provider: body.provider,
        tokens: TokenSet {
            access_token: Secret::new(body.access_token),
            refresh_token: body.refresh_token.map(Secret::new),
            token_type: body.token_type.unwrap_or_else(|| "Bearer".into()),
            expires_in: body.expires_in,
            scopes: body.scopes,
        },
        account: body.account,
    };
    // Everything that can refuse the import is checked before a user may be created for it, so
    // a refused import changes nothing.
    import.validate()?;
    if state.vault().get_provider(&app.id, &import.provider).await?.is_none() {
        return Err(ApiError::provider_not_found(&import.provider));
    }
    let user = match (body.subject, body.user_id) {
        (Some(subject), None) => {
            if subject.is_empty() || subject.len() > custody_identity::claims::MAX_SUBJECT_LEN || subject.contains('\0')
            {
                return Err(ApiError::invalid_request("subject: must be 1 to 255 characters, without NUL"));
            }
            state.identity().ensure_user(&app.id, &subject).await?
        }
        (None, Some(id)) => {
            let id = UserId::parse(&id).map_err(|_| ApiError::user_not_found())?;
            state.identity().get_user(&app.id, &id).await?.ok_or_else(ApiError::user_not_found)?
        }
        _ => return Err(ApiError::invalid_request("subject: give exactly one of subject and user_id")),
    };
    // A suspended user's grants are kept, so one may be imported; a deprovisioned user is final.
    if user.status == custody_identity::UserStatus::Deprovisioned {
        return Err(custody_identity::user::UserRefused::Deprovisioned.into());
    }
    let grant = state.vault().import_grant(&app.id, &user.id, import, &Actor::operator()).await?;
    Ok(json_response(StatusCode::CREATED, &GrantJson::from(&grant)))
}
