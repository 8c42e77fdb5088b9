//! Portal pages for apps and their API keys (each new key shown once), and the list helpers the
//! other pages share. Each action calls the admin API's use case with the actor
//! `operator:portal`.

use super::{
    actor, app_of, confirm, failure, field, finish, operator, operator_form, page, see_other, utc, utc_or, FieldErrors,
    Layout, Operator, PortalResult,
};
use crate::json::HttpResponse;
use crate::problem::ApiError;
use crate::routes::Call;
use crate::state::AppState;
use askama::Template;
use custody_identity::page::{Page, PageRequest};
use custody_identity::{ApiKeyId, App, AppName};
use custody_store::prelude::*;
use hyper::StatusCode;
use std::sync::Arc;

const PER_PAGE: u32 = 50;

pub(super) fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `?cursor=` of a list page (an invalid one starts over).
pub(super) fn page_request(call: &Call) -> PageRequest {
    let cursor = call.query.get("cursor").filter(|c| !c.is_empty()).cloned();
    PageRequest::new(Some(PER_PAGE), cursor).unwrap_or_else(|_| PageRequest::first())
}

/// The link to the next page: `base` with its filters and the cursor.
pub(super) fn next_link<T>(page: &Page<T>, base: &str, filters: &[(&str, &str)]) -> Option<String> {
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
