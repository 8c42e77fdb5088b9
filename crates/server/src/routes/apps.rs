//! Operator endpoints for apps, API keys, and the operator's views of users and audit rows.

use super::Call;
use crate::json::{json_response, no_content, parse_json, rfc3339, rfc3339_opt, HttpResponse};
use crate::problem::ApiError;
use crate::state::AppState;
use custody_identity::audit::Actor;
use custody_identity::audit::{AuditEntry, AuditFilter};
use custody_identity::{ApiKeyId, ApiKeyRecord, App, AppName, User, UserId, UserStatus};
use custody_store::prelude::*;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

pub fn app_json(app: &App) -> Value {
    json!({"id": app.id, "name": app.name.as_str(), "created_at": rfc3339(app.created_at)})
}

fn key_json(key: &ApiKeyRecord) -> Value {
    json!({"id": key.id, "prefix": format!("ck_{}", key.prefix), "created_at": rfc3339(key.created_at), "last_used_at": rfc3339_opt(key.last_used_at)})
}

pub fn user_json(user: &User) -> Value {
    json!({
        "user_id": user.id,
        "subject": user.subject,
        "status": user.status.as_str(),
        "email": user.email,
        "name": user.name,
        "groups": user.groups,
        "roles": user.roles,
        "created_at": rfc3339(user.created_at),
        "last_seen_at": rfc3339_opt(user.last_seen_at),
    })
}

fn audit_json(entry: &AuditEntry) -> Value {
    json!({
        "id": entry.id,
        "at": rfc3339(entry.at),
        "action": entry.action,
        "actor": entry.actor,
        "user_id": entry.user_id,
        "grant_id": entry.grant_id,
        "provider": entry.provider,
        "outcome": entry.outcome.as_str(),
        "detail": entry.detail,
    })
}

pub fn list_json(items: Vec<Value>, next_cursor: Option<String>) -> Value {
    json!({"items": items, "next_cursor": next_cursor})
}

/// The app named by the path, or 404 `app_not_found`.
pub async fn existing_app(state: &AppState, call: &Call) -> Result<App, ApiError> {
    let id = call.app_id(0)?;
    state
        .store
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
    let (app, key) = state.identity.create_app(name, &Actor::operator()).await?;
    let mut out = app_json(&app);
    out["api_key"] = Value::String(key.secret);
    Ok(json_response(StatusCode::CREATED, &out))
}

pub async fn list_apps(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let page = state.store.list_apps(&call.page()?).await?;
    Ok(json_response(StatusCode::OK, &list_json(page.items.iter().map(app_json).collect(), page.next_cursor)))
}

pub async fn get_app(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    Ok(json_response(StatusCode::OK, &app_json(&app)))
}

pub async fn delete_app(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let id = call.app_id(0)?;
    let idp = state.store.get_idp(&id).await?;
    if !state.store.delete_app(&id).await? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "app_not_found", "app not found"));
    }
    if let Some(config) = idp {
        use custody_identity::ports::TokenVerifier as _;
        state.verifier.forget(&config).await;
    }
    Ok(no_content())
}

pub async fn create_api_key(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let id = call.app_id(0)?;
    let key = state
        .identity
        .create_api_key(&id, &Actor::operator())
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "app_not_found", "app not found"))?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"id": key.record.id, "api_key": key.secret, "prefix": format!("ck_{}", key.record.prefix), "created_at": rfc3339(key.record.created_at)}),
    ))
}

pub async fn list_api_keys(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let page = state.store.list_api_keys(&app.id, &call.page()?).await?;
    Ok(json_response(StatusCode::OK, &list_json(page.items.iter().map(key_json).collect(), page.next_cursor)))
}

pub async fn delete_api_key(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "api_key_not_found", "API key not found");
    let key = ApiKeyId::parse(call.param(1)).map_err(|_| not_found())?;
    if !state.identity.delete_api_key(&app.id, &key, &Actor::operator()).await? {
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
    let page = state.store.list_users(&app.id, status, &call.page()?).await?;
    Ok(json_response(StatusCode::OK, &list_json(page.items.iter().map(user_json).collect(), page.next_cursor)))
}

pub async fn get_user(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "user_not_found", "user not found");
    let user_id = UserId::parse(call.param(1)).map_err(|_| not_found())?;
    let user = state.store.get_user(&app.id, &user_id).await?.ok_or_else(not_found)?;
    Ok(json_response(StatusCode::OK, &user_json(&user)))
}

pub async fn deprovision_user(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "user_not_found", "user not found");
    let user_id = UserId::parse(call.param(1)).map_err(|_| not_found())?;
    let (user, _revoked) =
        state.vault.deprovision_user(&app.id, &user_id, Actor::operator().as_str()).await?.ok_or_else(not_found)?;
    state.wake_outbox();
    Ok(json_response(StatusCode::OK, &user_json(&user)))
}

pub async fn list_audit(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let app = existing_app(&state, &call).await?;
    let user_id = match call.query.get("user_id").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(UserId::parse(s).map_err(|_| ApiError::invalid_request("user_id: not a valid id"))?),
    };
    let filter = AuditFilter { action: call.query.get("action").filter(|s| !s.is_empty()).cloned(), user_id };
    let page = state.store.list_audit(&app.id, &filter, &call.page()?).await?;
    Ok(json_response(StatusCode::OK, &list_json(page.items.iter().map(audit_json).collect(), page.next_cursor)))
}
