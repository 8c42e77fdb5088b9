//! Portal pages about the app's people and what happened: users (with Deprovision), grants
//! (with Revoke) and the audit log. Actions call the admin API's use cases as `operator:portal`.

use super::{
    actor, app_of, confirm, failure, field, finish, operator, operator_form, page, see_other, utc, utc_or, Layout,
};
use crate::json::HttpResponse;
use crate::problem::ApiError;
use crate::routes::Call;
use crate::state::AppState;
use askama::Template;
use custody_identity::audit::AuditFilter;
use custody_identity::page::PageRequest;
use custody_identity::{App, UserId, UserStatus};
use custody_store::prelude::*;
use custody_vault::ports::GrantFilter;
use custody_vault::{Grant, GrantId, GrantStatus, ProviderName};
use hyper::StatusCode;
use std::sync::Arc;

use super::pages::{next_link, page_request};

// ----- users -----

#[derive(Debug)]
pub struct UserRow {
    pub subject: String,
    pub email: String,
    pub status: String,
    pub groups: String,
    pub roles: String,
    pub first_seen: String,
    pub last_seen: String,
    pub href: String,
}

#[derive(Template)]
#[template(path = "portal/users.html")]
struct UsersPage {
    layout: Layout,
    users: Vec<UserRow>,
    next: Option<String>,
    status: String,
    search: String,
    action: String,
}

/// `GET /portal/apps/{app_id}/users?status=&q=`: the app's users, filtered by status and
/// searched by subject or email (within the page read).
pub async fn users_page(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let op = operator(&state, &call).await?;
            let app = app_of(&state, &call, &op).await?;
            let base = format!("/portal/apps/{}/users", app.id);
            let status_text = call.query.get("status").cloned().unwrap_or_default();
            let status = UserStatus::parse(&status_text);
            let search = call.query.get("q").map(|q| q.trim().to_owned()).unwrap_or_default();
            let needle = search.to_lowercase();
            let listed = state
                .store
                .list_users(&app.id, status, &page_request(&call))
                .await
                .map_err(|e| failure(&op, e.into(), &base))?;
            let users = listed
                .items
                .iter()
                .filter(|u| {
                    needle.is_empty()
                        || u.subject.to_lowercase().contains(&needle)
                        || u.email.as_deref().is_some_and(|e| e.to_lowercase().contains(&needle))
                })
                .map(|u| UserRow {
                    subject: u.subject.clone(),
                    email: u.email.clone().unwrap_or_default(),
                    status: u.status.as_str().to_owned(),
                    groups: u.groups.iter().cloned().collect::<Vec<_>>().join(", "),
                    roles: u.roles.iter().cloned().collect::<Vec<_>>().join(", "),
                    first_seen: utc(u.created_at),
                    last_seen: utc_or(u.last_seen_at, "never"),
                    href: format!("{base}/{}", u.id),
                })
                .collect();
            let next = next_link(&listed, &base, &[("status", &status_text), ("q", &search)]);
            Ok(page(
                StatusCode::OK,
                &UsersPage {
                    layout: op.app_layout(&app, "users"),
                    users,
                    next,
                    status: status_text,
                    search,
                    action: base,
                },
            ))
        }
        .await,
    )
}

#[derive(Debug)]
pub struct GrantRow {
    pub provider: String,
    pub user: String,
    pub user_href: String,
    pub scopes: String,
    pub status: String,
    pub created: String,
    pub revoked: String,
    pub revoke: Option<String>,
}

fn grant_row(app: &App, grant: &Grant) -> GrantRow {
    let base = format!("/portal/apps/{}", app.id);
    GrantRow {
        provider: grant.provider.as_str().to_owned(),
        user: grant.user_id.as_str().to_owned(),
        user_href: format!("{base}/users/{}", grant.user_id),
        scopes: grant.scopes.join(" "),
        status: grant.status.as_str().to_owned(),
        created: utc(grant.created_at),
        revoked: utc_or(grant.revoked_at, ""),
        revoke: (grant.status != GrantStatus::Revoked).then(|| format!("{base}/grants/{}/revoke", grant.id)),
    }
}

#[derive(Template)]
#[template(path = "portal/user.html")]
struct UserPage {
    layout: Layout,
    user: UserRow,
    grants: Vec<GrantRow>,
    deprovision: Option<String>,
}

/// `GET /portal/apps/{app_id}/users/{user_id}`: the user and their grants.
pub async fn user_page(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let op = operator(&state, &call).await?;
            let app = app_of(&state, &call, &op).await?;
            let base = format!("/portal/apps/{}/users", app.id);
            let not_found = || failure(&op, ApiError::not_found("user"), &base);
            let user_id = UserId::parse(call.param(1)).map_err(|_| not_found())?;
            let user = state
                .store
                .get_user(&app.id, &user_id)
                .await
                .map_err(|e| failure(&op, e.into(), &base))?
                .ok_or_else(not_found)?;
            let filter = GrantFilter { user_id: Some(user.id.clone()), provider: None, status: None };
            let grants = state
                .vault
                .list_grants(
                    &app.id,
                    &filter,
                    &PageRequest::new(Some(1000), None).unwrap_or_else(|_| PageRequest::first()),
                )
                .await
                .map_err(|e| failure(&op, e.into(), &base))?;
            let href = format!("{base}/{}", user.id);
            let row = UserRow {
                subject: user.subject.clone(),
                email: user.email.clone().unwrap_or_default(),
                status: user.status.as_str().to_owned(),
                groups: user.groups.iter().cloned().collect::<Vec<_>>().join(", "),
                roles: user.roles.iter().cloned().collect::<Vec<_>>().join(", "),
                first_seen: utc(user.created_at),
                last_seen: utc_or(user.last_seen_at, "never"),
                href: href.clone(),
            };
            let mut layout = op.app_layout(&app, "users");
            layout.title = format!("User {}", user.subject);
            Ok(page(
                StatusCode::OK,
                &UserPage {
                    layout,
                    user: row,
                    grants: grants.items.iter().map(|g| grant_row(&app, g)).collect(),
                    deprovision: (user.status != UserStatus::Deprovisioned).then(|| format!("{href}/deprovision")),
                },
            ))
        }
        .await,
    )
}

/// `POST /portal/apps/{app_id}/users/{user_id}/deprovision` (asks first).
pub async fn deprovision(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let (op, fields) = operator_form(&state, &call).await?;
            let app = app_of(&state, &call, &op).await?;
            let back = format!("/portal/apps/{}/users/{}", app.id, super::url_segment(call.param(1)));
            let user_id = UserId::parse(call.param(1)).map_err(|_| failure(&op, ApiError::not_found("user"), &back))?;
            if field(&fields, "confirm") != Some("yes") {
                return Ok(confirm(
                    &op,
                    "Deprovision this user?",
                    "Every grant of this user is revoked and their stored tokens deleted. This cannot be undone.",
                    &format!("{back}/deprovision"),
                    "Deprovision",
                    &back,
                ));
            }
            state
                .vault
                .deprovision_user(&app.id, &user_id, actor().as_str())
                .await
                .map_err(|e| failure(&op, e.into(), &back))?
                .ok_or_else(|| failure(&op, ApiError::not_found("user"), &back))?;
            state.wake_outbox();
            Ok(see_other(&back))
        }
        .await,
    )
}

// ----- grants -----

#[derive(Template)]
#[template(path = "portal/grants.html")]
struct GrantsPage {
    layout: Layout,
    grants: Vec<GrantRow>,
    next: Option<String>,
    status: String,
    provider: String,
    user: String,
    action: String,
}

/// `GET /portal/apps/{app_id}/grants?status=&provider=&user=`.
pub async fn grants_page(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let op = operator(&state, &call).await?;
            let app = app_of(&state, &call, &op).await?;
            let base = format!("/portal/apps/{}/grants", app.id);
            let q = |k: &str| call.query.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
            let (status, provider, user) = (q("status"), q("provider"), q("user"));
            let filter = GrantFilter {
                status: GrantStatus::parse(&status),
                provider: ProviderName::parse(&provider).ok(),
                user_id: UserId::parse(&user).ok(),
            };
            let listed = state
                .vault
                .list_grants(&app.id, &filter, &page_request(&call))
                .await
                .map_err(|e| failure(&op, e.into(), &base))?;
            let next = next_link(&listed, &base, &[("status", &status), ("provider", &provider), ("user", &user)]);
            Ok(page(
                StatusCode::OK,
                &GrantsPage {
                    layout: op.app_layout(&app, "grants"),
                    grants: listed.items.iter().map(|g| grant_row(&app, g)).collect(),
                    next,
                    status,
                    provider,
                    user,
                    action: base,
                },
            ))
        }
        .await,
    )
}

/// `POST /portal/apps/{app_id}/grants/{grant_id}/revoke`.
pub async fn revoke_grant(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let (op, _) = operator_form(&state, &call).await?;
            let app = app_of(&state, &call, &op).await?;
            let back = format!("/portal/apps/{}/grants", app.id);
            let id = GrantId::parse(call.param(1)).map_err(|_| failure(&op, ApiError::not_found("grant"), &back))?;
            state
                .vault
                .revoke_grant(&app.id, &id, Some("revoked in the Developer Portal".into()), &actor())
                .await
                .map_err(|e| failure(&op, e.into(), &back))?;
            state.wake_outbox();
            Ok(see_other(&back))
        }
        .await,
    )
}

// ----- audit -----

#[derive(Debug)]
pub struct AuditRow {
    pub at: String,
    pub action: String,
    pub actor: String,
    pub user: String,
    pub provider: String,
    pub outcome: String,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "portal/audit.html")]
struct AuditPage {
    layout: Layout,
    rows: Vec<AuditRow>,
    next: Option<String>,
    action: String,
    user: String,
    form_action: String,
}

/// `GET /portal/apps/{app_id}/audit?action=&user=`: newest first, paged with the API's cursors.
pub async fn audit_page(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let op = operator(&state, &call).await?;
            let app = app_of(&state, &call, &op).await?;
            let base = format!("/portal/apps/{}/audit", app.id);
            let q = |k: &str| call.query.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
            let (action, user) = (q("action"), q("user"));
            let filter = AuditFilter {
                action: Some(action.clone()).filter(|a| !a.is_empty()),
                user_id: UserId::parse(&user).ok(),
            };
            let listed = state
                .store
                .list_audit(&app.id, &filter, &page_request(&call))
                .await
                .map_err(|e| failure(&op, e.into(), &base))?;
            let rows = listed
                .items
                .iter()
                .map(|e| AuditRow {
                    at: utc(e.at),
                    action: e.action.clone(),
                    actor: e.actor.clone(),
                    user: e.user_id.as_ref().map(|u| u.as_str().to_owned()).unwrap_or_default(),
                    provider: e.provider.clone().unwrap_or_default(),
                    outcome: e.outcome.as_str().to_owned(),
                    detail: e.detail.clone().unwrap_or_default(),
                })
                .collect();
            let next = next_link(&listed, &base, &[("action", &action), ("user", &user)]);
            Ok(page(
                StatusCode::OK,
                &AuditPage { layout: op.app_layout(&app, "audit"), rows, next, action, user, form_action: base },
            ))
        }
        .await,
    )
}
