//! Portal pages outside the Identity page: apps, API keys, users, grants, providers, policies
//! and the audit log. Each action calls the admin API's use case with the actor
//! `operator:portal`.

use super::{
    actor, app_of, confirm, failure, field, finish, operator, operator_form, page, see_other, utc, utc_or, FieldErrors,
    Layout, Operator, PortalResult,
};
use crate::problem::ApiError;
use crate::routes::Call;
use crate::state::AppState;
use askama::Template;
use custody_identity::audit::AuditFilter;
use custody_identity::page::{Page, PageRequest};
use custody_identity::ports::IdentityStore as _;
use custody_identity::{ApiKeyId, App, AppName, Secret, UserId, UserStatus};
use custody_vault::ports::GrantFilter;
use custody_vault::service::ProviderInput;
use custody_vault::{Grant, GrantId, GrantStatus, ProviderName};
use hyper::StatusCode;
use std::sync::Arc;

const PER_PAGE: u32 = 50;

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `?cursor=` of a list page (an invalid one starts over).
fn page_request(call: &Call) -> PageRequest {
    let cursor = call.query.get("cursor").filter(|c| !c.is_empty()).cloned();
    PageRequest::new(Some(PER_PAGE), cursor).unwrap_or_else(|_| PageRequest::first())
}

/// The link to the next page: `base` with its filters and the cursor.
fn next_link<T>(page: &Page<T>, base: &str, filters: &[(&str, &str)]) -> Option<String> {
    let cursor = page.next_cursor.as_deref()?;
    let mut query: Vec<String> =
        filters.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k}={}", enc(v))).collect();
    query.push(format!("cursor={}", enc(cursor)));
    Some(format!("{base}?{}", query.join("&")))
}

// ----- apps -----

#[derive(Debug)]
pub struct AppRow {
    pub name: String,
    pub href: String,
    pub created: String,
}

/// A secret shown once, in the response that created it.
#[derive(Debug)]
pub struct ShownOnce {
    pub label: String,
    pub value: String,
}

#[derive(Template)]
#[template(path = "portal/apps.html")]
struct AppsPage {
    layout: Layout,
    apps: Vec<AppRow>,
    next: Option<String>,
    created: Option<ShownOnce>,
    errors: FieldErrors,
}

pub(super) async fn apps(
    state: &AppState,
    call: &Call,
    op: &Operator,
    created: Option<ShownOnce>,
    errors: FieldErrors,
) -> PortalResult {
    let listed = state.store.list_apps(&page_request(call)).await.map_err(|e| failure(op, e.into(), "/portal"))?;
    let apps = listed
        .items
        .iter()
        .map(|a| AppRow {
            name: a.name.as_str().to_owned(),
            href: format!("/portal/apps/{}/identity", a.id),
            created: utc(a.created_at),
        })
        .collect();
    let status = if errors.is_empty() {
        if created.is_some() {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        }
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok(page(
        status,
        &AppsPage { layout: op.layout("Apps"), apps, next: next_link(&listed, "/portal", &[]), created, errors },
    ))
}

/// `GET /portal/apps` (the same list as `/portal`).
pub async fn apps_page(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let op = operator(&state, &call).await?;
            apps(&state, &call, &op, None, FieldErrors::default()).await
        }
        .await,
    )
}

use crate::json::HttpResponse;

/// `POST /portal/apps`: **Create app**; the first API key is shown once.
pub async fn create_app(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let (op, fields) = operator_form(&state, &call).await?;
            let name = match AppName::parse(field(&fields, "name").unwrap_or_default()) {
                Ok(name) => name,
                Err(e) => return apps(&state, &call, &op, None, FieldErrors::one("name", format!("Name: {e}"))).await,
            };
            let (app, key) =
                state.identity.create_app(name, &actor()).await.map_err(|e| failure(&op, e.into(), "/portal"))?;
            let shown = ShownOnce { label: format!("API key of {}", app.name.as_str()), value: key.secret };
            apps(&state, &call, &op, Some(shown), FieldErrors::default()).await
        }
        .await,
    )
}

/// `GET /portal/apps/{app_id}`: to the app's Identity page.
pub async fn app_page(_state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    Ok(see_other(&format!("/portal/apps/{}/identity", super::url_segment(call.param(0)))))
}

// ----- API keys -----

#[derive(Debug)]
pub struct KeyRow {
    pub prefix: String,
    pub created: String,
    pub last_used: String,
    pub delete: String,
}

#[derive(Template)]
#[template(path = "portal/api_keys.html")]
struct KeysPage {
    layout: Layout,
    keys: Vec<KeyRow>,
    next: Option<String>,
    created: Option<ShownOnce>,
    create: String,
}

async fn keys(state: &AppState, call: &Call, op: &Operator, app: &App, created: Option<ShownOnce>) -> PortalResult {
    let back = format!("/portal/apps/{}/api-keys", app.id);
    let listed =
        state.store.list_api_keys(&app.id, &page_request(call)).await.map_err(|e| failure(op, e.into(), &back))?;
    let keys = listed
        .items
        .iter()
        .map(|k| KeyRow {
            prefix: format!("ck_{}…", k.prefix),
            created: utc(k.created_at),
            last_used: utc_or(k.last_used_at, "never"),
            delete: format!("{back}/{}/delete", k.id),
        })
        .collect();
    let status = if created.is_some() { StatusCode::CREATED } else { StatusCode::OK };
    Ok(page(
        status,
        &KeysPage {
            layout: op.app_layout(app, "api-keys"),
            keys,
            next: next_link(&listed, &back, &[]),
            created,
            create: back.clone(),
        },
    ))
}

/// `GET /portal/apps/{app_id}/api-keys`.
pub async fn api_keys_page(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let op = operator(&state, &call).await?;
            let app = app_of(&state, &call, &op).await?;
            keys(&state, &call, &op, &app, None).await
        }
        .await,
    )
}

/// `POST /portal/apps/{app_id}/api-keys`: a new key, shown once.
pub async fn create_api_key(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let (op, _) = operator_form(&state, &call).await?;
            let app = app_of(&state, &call, &op).await?;
            let back = format!("/portal/apps/{}/api-keys", app.id);
            let key = state
                .identity
                .create_api_key(&app.id, &actor())
                .await
                .map_err(|e| failure(&op, e.into(), &back))?
                .ok_or_else(|| failure(&op, ApiError::not_found("app"), "/portal"))?;
            keys(&state, &call, &op, &app, Some(ShownOnce { label: "New API key".into(), value: key.secret })).await
        }
        .await,
    )
}

/// `POST /portal/apps/{app_id}/api-keys/{key_id}/delete` (asks first).
pub async fn delete_api_key(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let (op, fields) = operator_form(&state, &call).await?;
            let app = app_of(&state, &call, &op).await?;
            let back = format!("/portal/apps/{}/api-keys", app.id);
            let key =
                ApiKeyId::parse(call.param(1)).map_err(|_| failure(&op, ApiError::not_found("API key"), &back))?;
            if field(&fields, "confirm") != Some("yes") {
                return Ok(confirm(
                    &op,
                    "Delete this API key?",
                    "Requests with this key fail at once. This cannot be undone.",
                    &format!("{back}/{key}/delete"),
                    "Delete API key",
                    &back,
                ));
            }
            if !state
                .identity
                .delete_api_key(&app.id, &key, &actor())
                .await
                .map_err(|e| failure(&op, e.into(), &back))?
            {
                return Err(failure(&op, ApiError::not_found("API key"), &back));
            }
            Ok(see_other(&back))
        }
        .await,
    )
}

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

// ----- providers and policies -----

#[derive(Debug)]
pub struct ProviderRow {
    pub name: String,
    pub client_id: String,
    pub scopes: String,
    pub authorization_url: String,
    pub updated: String,
    pub delete: String,
}

#[derive(Template)]
#[template(path = "portal/providers.html")]
struct ProvidersPage {
    layout: Layout,
    providers: Vec<ProviderRow>,
    action: String,
    errors: FieldErrors,
}

async fn providers(state: &AppState, op: &Operator, app: &App, errors: FieldErrors) -> PortalResult {
    let base = format!("/portal/apps/{}/providers", app.id);
    let listed = state
        .vault
        .store()
        .list_providers(&app.id, &PageRequest::new(Some(1000), None).unwrap_or_else(|_| PageRequest::first()))
        .await
        .map_err(|e| failure(op, e.into(), &base))?;
    let providers = listed
        .items
        .iter()
        .map(|p| ProviderRow {
            name: p.name.as_str().to_owned(),
            client_id: p.client_id.clone(),
            scopes: p.scopes.join(" "),
            authorization_url: p.authorization_url.clone(),
            updated: utc(p.updated_at),
            delete: format!("{base}/{}/delete", enc(p.name.as_str())),
        })
        .collect();
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    Ok(page(status, &ProvidersPage { layout: op.app_layout(app, "providers"), providers, action: base, errors }))
}

/// `GET /portal/apps/{app_id}/providers`.
pub async fn providers_page(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let op = operator(&state, &call).await?;
            let app = app_of(&state, &call, &op).await?;
            providers(&state, &op, &app, FieldErrors::default()).await
        }
        .await,
    )
}

/// `POST /portal/apps/{app_id}/providers`: create or update (a preset or custom endpoints).
pub async fn put_provider(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let (op, fields) = operator_form(&state, &call).await?;
            let app = app_of(&state, &call, &op).await?;
            let name = match ProviderName::parse(field(&fields, "name").unwrap_or_default()) {
                Ok(n) => n,
                Err(e) => return providers(&state, &op, &app, FieldErrors::one("name", format!("Name: {e}"))).await,
            };
            let text = |k: &str| field(&fields, k).map(str::to_owned);
            let input = ProviderInput {
                preset: text("preset"),
                authorization_url: text("authorization_url"),
                token_url: text("token_url"),
                revocation_url: text("revocation_url").map(Some),
                client_id: text("client_id").unwrap_or_default(),
                client_secret: text("client_secret").map(Secret::new),
                scopes: text("scopes").map(|s| s.split_whitespace().map(str::to_owned).collect()),
            };
            match state.vault.put_provider(&app.id, &name, input, &actor()).await {
                Ok(_) => Ok(see_other(&format!("/portal/apps/{}/providers", app.id))),
                Err(e) => {
                    let e = ApiError::from(e);
                    if e.status.is_client_error() {
                        let field = [
                            "preset",
                            "authorization_url",
                            "token_url",
                            "revocation_url",
                            "client_id",
                            "client_secret",
                            "scopes",
                        ]
                        .into_iter()
                        .find(|f| e.detail.starts_with(&format!("{f}:")))
                        .unwrap_or("name");
                        providers(&state, &op, &app, FieldErrors::one(field, e.detail)).await
                    } else {
                        Err(failure(&op, e, "/portal"))
                    }
                }
            }
        }
        .await,
    )
}

/// `POST /portal/apps/{app_id}/providers/{provider}/delete` (asks first).
pub async fn delete_provider(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let (op, fields) = operator_form(&state, &call).await?;
            let app = app_of(&state, &call, &op).await?;
            let back = format!("/portal/apps/{}/providers", app.id);
            let name =
                ProviderName::parse(call.param(1)).map_err(|_| failure(&op, ApiError::not_found("provider"), &back))?;
            if field(&fields, "confirm") != Some("yes") {
                return Ok(confirm(
                    &op,
                    &format!("Delete provider {}?", name.as_str()),
                    "Every grant of this provider is revoked.",
                    &format!("{back}/{}/delete", enc(name.as_str())),
                    "Delete provider",
                    &back,
                ));
            }
            state.vault.delete_provider(&app.id, &name, &actor()).await.map_err(|e| failure(&op, e.into(), &back))?;
            state.wake_outbox();
            Ok(see_other(&back))
        }
        .await,
    )
}

#[derive(Debug)]
pub struct PolicyRow {
    pub provider: String,
    pub groups: String,
    pub roles: String,
    pub updated: String,
    pub delete: String,
}

#[derive(Template)]
#[template(path = "portal/policies.html")]
struct PoliciesPage {
    layout: Layout,
    policies: Vec<PolicyRow>,
    providers: Vec<String>,
    action: String,
    errors: FieldErrors,
}

async fn policies(state: &AppState, op: &Operator, app: &App, errors: FieldErrors) -> PortalResult {
    let base = format!("/portal/apps/{}/policies", app.id);
    let all = PageRequest::new(Some(1000), None).unwrap_or_else(|_| PageRequest::first());
    let listed = state.vault.store().list_policies(&app.id, &all).await.map_err(|e| failure(op, e.into(), &base))?;
    let providers =
        state.vault.store().list_providers(&app.id, &all).await.map_err(|e| failure(op, e.into(), &base))?;
    let policies = listed
        .items
        .iter()
        .map(|p| PolicyRow {
            provider: p.provider.as_str().to_owned(),
            groups: p.allow_groups.iter().cloned().collect::<Vec<_>>().join(", "),
            roles: p.allow_roles.iter().cloned().collect::<Vec<_>>().join(", "),
            updated: utc(p.updated_at),
            delete: format!("{base}/{}/delete", enc(p.provider.as_str())),
        })
        .collect();
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    Ok(page(
        status,
        &PoliciesPage {
            layout: op.app_layout(app, "policies"),
            policies,
            providers: providers.items.iter().map(|p| p.name.as_str().to_owned()).collect(),
            action: base,
            errors,
        },
    ))
}

/// `GET /portal/apps/{app_id}/policies`.
pub async fn policies_page(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let op = operator(&state, &call).await?;
            let app = app_of(&state, &call, &op).await?;
            policies(&state, &op, &app, FieldErrors::default()).await
        }
        .await,
    )
}

fn names(text: Option<&str>) -> Vec<String> {
    text.unwrap_or_default().split([',', '\n']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// `POST /portal/apps/{app_id}/policies`: set a provider's allowed groups and roles.
pub async fn put_policy(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let (op, fields) = operator_form(&state, &call).await?;
            let app = app_of(&state, &call, &op).await?;
            let Ok(provider) = ProviderName::parse(field(&fields, "provider").unwrap_or_default()) else {
                return policies(&state, &op, &app, FieldErrors::one("provider", "Choose a provider.")).await;
            };
            let groups = names(field(&fields, "allow_groups"));
            let roles = names(field(&fields, "allow_roles"));
            // The token_access choice (handout / proxy_only) lands with the proxy work; see
            // docs/portal.md. TOKEN_ACCESS: add the field here when `put_policy` takes it.
            match state.vault.put_policy(&app.id, &provider, groups, roles, &actor()).await {
                Ok(_) => Ok(see_other(&format!("/portal/apps/{}/policies", app.id))),
                Err(e) => {
                    let e = ApiError::from(e);
                    let field = if e.detail.starts_with("allow_roles") {
                        "allow_roles"
                    } else if e.detail.starts_with("allow_groups") {
                        "allow_groups"
                    } else {
                        "provider"
                    };
                    if e.status.is_client_error() {
                        policies(&state, &op, &app, FieldErrors::one(field, e.detail)).await
                    } else {
                        Err(failure(&op, e, "/portal"))
                    }
                }
            }
        }
        .await,
    )
}

/// `POST /portal/apps/{app_id}/policies/{provider}/delete` (asks first).
pub async fn delete_policy(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let (op, fields) = operator_form(&state, &call).await?;
            let app = app_of(&state, &call, &op).await?;
            let back = format!("/portal/apps/{}/policies", app.id);
            let name =
                ProviderName::parse(call.param(1)).map_err(|_| failure(&op, ApiError::not_found("policy"), &back))?;
            if field(&fields, "confirm") != Some("yes") {
                return Ok(confirm(
                    &op,
                    &format!("Delete the policy of {}?", name.as_str()),
                    "Without a policy every user of the app may use this provider.",
                    &format!("{back}/{}/delete", enc(name.as_str())),
                    "Delete policy",
                    &back,
                ));
            }
            state.vault.delete_policy(&app.id, &name, &actor()).await.map_err(|e| failure(&op, e.into(), &back))?;
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
