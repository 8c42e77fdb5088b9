//! Portal pages for the app's third-party OAuth providers (presets and custom) and their
//! policies. Actions call the admin API's use cases as `operator:portal`.

use super::{
    actor, app_of, confirm, failure, field, finish, operator, operator_form, page, see_other, utc, FieldErrors, Layout,
    Operator, PortalResult,
};
use crate::json::HttpResponse;
use crate::problem::ApiError;
use crate::routes::Call;
use crate::state::AppState;
use askama::Template;
use custody_identity::page::PageRequest;
use custody_identity::{App, Secret};
use custody_store::prelude::*;
use custody_vault::policy::TokenAccess;
use custody_vault::service::ProviderInput;
use custody_vault::ProviderName;
use hyper::StatusCode;
use std::sync::Arc;

use super::pages::enc;

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
        .store
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
                api_base_url: text("api_base_url").map(Some),
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
    let listed = state.store.list_policies(&app.id, &all).await.map_err(|e| failure(op, e.into(), &base))?;
    let providers = state.store.list_providers(&app.id, &all).await.map_err(|e| failure(op, e.into(), &base))?;
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
            let Some(token_access) = TokenAccess::parse(field(&fields, "token_access").unwrap_or("handout")) else {
                return policies(&state, &op, &app, FieldErrors::one("token_access", "Choose how tokens may be used."))
                    .await;
            };
            match state.vault.put_policy(&app.id, &provider, groups, roles, token_access, &actor()).await {
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
