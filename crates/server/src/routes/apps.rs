//! Operator endpoints for apps, API keys, and the operator's views of users and audit rows.

use super::Call;
use crate::json::{json_response, no_content, parse_json, rfc3339, HttpResponse};
use crate::problem::ApiError;
use crate::state::AppState;
use custody_identity::audit::Actor;
use custody_identity::audit::{AuditEntry, AuditFilter};
use custody_identity::page::Page;
use custody_identity::{ApiKeyId, ApiKeyRecord, App, AppId, AppName, User, UserId, UserStatus};
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;

/// An app as the API shows it.
#[derive(Serialize)]
pub struct AppJson<'a> {
    id: &'a AppId,
    name: &'a str,
    created_at: String,
}

impl<'a> From<&'a App> for AppJson<'a> {
    fn from(app: &'a App) -> Self {
        Self { id: &app.id, name: app.name.as_str(), created_at: rfc3339(app.created_at) }
    }
}

/// The answer to creating an app: the app and its first API key, shown this once.
#[derive(Serialize)]
struct CreatedAppJson<'a> {
    #[serde(flatten)]
    app: AppJson<'a>,
    api_key: &'a str,
}

/// An API key's record (never the key).
#[derive(Serialize)]
struct KeyJson<'a> {
    id: &'a ApiKeyId,
    prefix: String,
    created_at: String,
    last_used_at: Option<String>,
}

impl<'a> From<&'a ApiKeyRecord> for KeyJson<'a> {
    fn from(key: &'a ApiKeyRecord) -> Self {
        Self {
            id: &key.id,
            prefix: format!("ck_{}", key.prefix),
            created_at: rfc3339(key.created_at),
            last_used_at: key.last_used_at.map(rfc3339),
        }
    }
}

/// The answer to creating an API key: the key itself, shown this once.
#[derive(Serialize)]
struct CreatedKeyJson<'a> {
    id: &'a ApiKeyId,
    api_key: &'a str,
    prefix: String,
    created_at: String,
}

/// A user as the API shows it.
#[derive(Serialize)]
pub struct UserJson<'a> {
    user_id: &'a UserId,
    subject: &'a str,
    status: &'static str,
    email: Option<&'a str>,
    name: Option<&'a str>,
    groups: &'a BTreeSet<String>,
    roles: &'a BTreeSet<String>,
    created_at: String,
    last_seen_at: Option<String>,
}

impl<'a> From<&'a User> for UserJson<'a> {
    fn from(user: &'a User) -> Self {
        Self {
            user_id: &user.id,
            subject: &user.subject,
            status: user.status.as_str(),
            email: user.email.as_deref(),
            name: user.name.as_deref(),
            groups: &user.groups,
            roles: &user.roles,
            created_at: rfc3339(user.created_at),
            last_seen_at: user.last_seen_at.map(rfc3339),
        }
    }
}

/// An audit row as the API shows it.
#[derive(Serialize)]
struct AuditJson<'a> {
    id: &'a str,
    at: String,
    action: &'a str,
    actor: &'a str,
    user_id: Option<&'a UserId>,
    grant_id: Option<&'a str>,
    provider: Option<&'a str>,
    outcome: &'static str,
    detail: Option<&'a str>,
}

impl<'a> From<&'a AuditEntry> for AuditJson<'a> {
    fn from(entry: &'a AuditEntry) -> Self {
        Self {
            id: &entry.id,
            at: rfc3339(entry.at),
            action: &entry.action,
            actor: &entry.actor,
            user_id: entry.user_id.as_ref(),
            grant_id: entry.grant_id.as_deref(),
            provider: entry.provider.as_deref(),
            outcome: entry.outcome.as_str(),
            detail: entry.detail.as_deref(),
        }
    }
}

/// A page of a list: `{"items": [...], "next_cursor": ...}`.
#[derive(Serialize)]
pub struct ListJson<'a, J> {
    items: Vec<J>,
    next_cursor: Option<&'a str>,
}

impl<'a, J> ListJson<'a, J> {
    /// The page's items shown as `J`.
    pub fn of<T>(page: &'a Page<T>) -> Self
    where
        J: From<&'a T>,
    {
        Self { items: page.items.iter().map(J::from).collect(), next_cursor: page.next_cursor.as_deref() }
    }
}

/// The app named by the path, or 404 `app_not_found`.
pub async fn existing_app(state: &AppState, call: &Call) -> Result<App, ApiError> {
    let id = call.app_id(0)?;
    state
        .identity()
        .get_app(&id)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "app_not_found", "app not found"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAppBody {
    name: String,
}

pub async fn create_app(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let body: CreateAppBody = parse_json(&call.body)?;
    let name = AppName::parse(&body.name).map_err(|e| ApiError::invalid_request(format!("name: {e}")))?;
    let (app, key) = state.identity().create_app(name, &Actor::operator()).await?;
    Ok(json_response(StatusCode::CREATED, &CreatedAppJson { app: AppJson::from(&app), api_key: &key.secret }))
}

pub async fn list_apps(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let page = state.identity().list_apps(&call.page()?).await?;
    Ok(json_response(StatusCode::OK, &ListJson::<AppJson>::of(&page)))
}

pub async fn get_app(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    Ok(json_response(StatusCode::OK, &AppJson::from(&app)))
}

pub async fn delete_app(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let id = call.app_id(0)?;
    if !state.identity().delete_app(&id).await? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "app_not_found", "app not found"));
    }
    Ok(no_content())
}

pub async fn create_api_key(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let id = call.app_id(0)?;
    let key = state
        .identity()
        .create_api_key(&id, &Actor::operator())
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "app_not_found", "app not found"))?;
    Ok(json_response(
        StatusCode::CREATED,
        &CreatedKeyJson {
            id: &key.record.id,
            api_key: &key.secret,
            prefix: format!("ck_{}", key.record.prefix),
            created_at: rfc3339(key.record.created_at),
        },
    ))
}

pub async fn list_api_keys(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let page = state.identity().list_api_keys(&app.id, &call.page()?).await?;
    Ok(json_response(StatusCode::OK, &ListJson::<KeyJson>::of(&page)))
}

pub async fn delete_api_key(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "api_key_not_found", "API key not found");
    let key = ApiKeyId::parse(call.param(1)).map_err(|_| not_found())?;
    if !state.identity().delete_api_key(&app.id, &key, &Actor::operator()).await? {
        return Err(not_found());
    }
    Ok(no_content())
}

pub async fn list_users(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let status = match call.query.get("status").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            UserStatus::parse(s)
                .ok_or_else(|| ApiError::invalid_request("status: expected active, suspended or deprovisioned"))?,
        ),
    };
    let page = state.identity().list_users(&app.id, status, &call.page()?).await?;
    Ok(json_response(StatusCode::OK, &ListJson::<UserJson>::of(&page)))
}

pub async fn get_user(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "user_not_found", "user not found");
    let user_id = UserId::parse(call.param(1)).map_err(|_| not_found())?;
    let user = state.identity().get_user(&app.id, &user_id).await?.ok_or_else(not_found)?;
    Ok(json_response(StatusCode::OK, &UserJson::from(&user)))
}

pub async fn deprovision_user(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "user_not_found", "user not found");
    let user_id = UserId::parse(call.param(1)).map_err(|_| not_found())?;
    let (user, _revoked) =
        state.vault().deprovision_user(&app.id, &user_id, Actor::operator().as_str()).await?.ok_or_else(not_found)?;
    state.wake_outbox();
    Ok(json_response(StatusCode::OK, &UserJson::from(&user)))
}

pub async fn list_audit(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let user_id = match call.query.get("user_id").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(UserId::parse(s).map_err(|_| ApiError::invalid_request("user_id: not a valid id"))?),
    };
    let filter = AuditFilter { action: call.query.get("action").filter(|s| !s.is_empty()).cloned(), user_id };
    let page = state.identity().list_audit(&app.id, &filter, &call.page()?).await?;
    Ok(json_response(StatusCode::OK, &ListJson::<AuditJson>::of(&page)))
}
