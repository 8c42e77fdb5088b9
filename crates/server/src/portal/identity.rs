//! The Identity page of an app: add the identity provider (Issuer URL → Discover → Add
//! Provider), edit its claim mappings until the first sign-in locks them, remove it, refresh its
//! keys; the User Authentication (OIDC) section; the Webhooks section in both shapes (a
//! generated secret shown once for Auth0 and custom OIDC, a pasted `whsec_…` for Clerk).

use super::pages::ShownOnce;
use super::{
    actor, app_of, confirm, failure, field, finish, operator, operator_form, page, see_other, utc, FieldErrors, Layout,
    Operator, PortalResult,
};
use crate::json::HttpResponse;
use crate::problem::ApiError;
use crate::routes::Call;
use crate::state::AppState;
use askama::Template;
use custody_identity::idp::{IdpKind, IdpPatch, RequestedClaims};
use custody_identity::service::AddIdp;
use custody_identity::signin::service::{OidcClientInput, PutClientError};
use custody_identity::signin::SignInPurpose;
use custody_identity::{App, ClaimPath, Secret};
use custody_vault::webhook::SecretSource;
use hyper::StatusCode;
use std::collections::HashMap;
use std::sync::Arc;

/// The name people read for a kind (its adapter's label); empty for a kind no adapter has.
fn kind_label(state: &AppState, kind: &IdpKind) -> String {
    state.identity().kinds().get(kind).map(|a| a.label().to_owned()).unwrap_or_default()
}

/// The add form: the issuer alone, or after Discover with the detected kind and mappings.
#[derive(Debug, Default)]
pub struct AddForm {
    pub discovered: bool,
    pub issuer_url: String,
    pub kind: String,
    pub kind_label: String,
    pub user_id_claim: String,
    pub group_claim: String,
    pub role_claim: String,
    pub audience: String,
}

#[derive(Debug)]
pub struct IdpView {
    pub issuer: String,
    pub kind: String,
    pub jwks_uri: String,
    pub audience: String,
    pub user_id_claim: String,
    pub group_claim: String,
    pub role_claim: String,
    pub locked_at: Option<String>,
}

#[derive(Debug)]
pub struct OidcView {
    pub sdk_redirect: String,
    pub wallet_redirect: String,
    pub logout_url: String,
    pub client_id: String,
    pub secret_set: bool,
}

#[derive(Debug)]
pub struct WebhooksView {
    pub url: String,
    pub enabled: bool,
    /// Clerk: the secret is pasted, not generated.
    pub provided: bool,
    /// Show the Signing Secret field for this action (`enable` or `rotate`).
    pub secret_form: Option<String>,
    pub rotated_at: Option<String>,
}

#[derive(Template)]
#[template(path = "portal/identity.html")]
struct IdentityPage {
    layout: Layout,
    base: String,
    add: Option<AddForm>,
    idp: Option<IdpView>,
    oidc: Option<OidcView>,
    webhooks: Option<WebhooksView>,
    shown: Option<ShownOnce>,
    errors: FieldErrors,
    /// The Kind select's options: every registered kind's name and label.
    kinds: Vec<(String, String)>,
}

/// What a render of the page adds to the stored state.
#[derive(Default)]
struct Extra {
    add: Option<AddForm>,
    shown: Option<ShownOnce>,
    errors: FieldErrors,
    notice: Option<String>,
    secret_form: Option<String>,
}

async fn render(state: &AppState, op: &Operator, app: &App, extra: Extra) -> PortalResult {
    let base = format!("/portal/apps/{}/identity", app.id);
    let fail = |e: ApiError| failure(op, e, &base);
    let config = state.identity().get_idp(&app.id).await.map_err(|e| fail(e.into()))?;
    let (idp, oidc, webhooks) = match &config {
        None => (None, None, None),
        Some(c) => {
            let idp = IdpView {
                issuer: c.issuer.as_str().to_owned(),
                kind: kind_label(state, &c.kind),
                jwks_uri: c.jwks_uri.clone(),
                audience: c.audience.clone().unwrap_or_default(),
                user_id_claim: c.claims.user_id.to_string(),
                group_claim: c.claims.group.as_ref().map(ToString::to_string).unwrap_or_default(),
                role_claim: c.claims.role.as_ref().map(ToString::to_string).unwrap_or_default(),
                locked_at: c.claims_locked_at.map(utc),
            };
            let client =
                state.signin().client(&app.id).await.map_err(|e| fail(e.into()))?.filter(|cl| cl.idp_id == c.id);
            let settings = state.signin().settings();
            let oidc = OidcView {
                sdk_redirect: settings.redirect_uri(SignInPurpose::Sdk),
                wallet_redirect: settings.redirect_uri(SignInPurpose::Wallet),
                logout_url: settings.logout_url(),
                client_id: client.as_ref().map(|cl| cl.client_id.to_string()).unwrap_or_default(),
                secret_set: client.is_some(),
            };
            let view = state.webhooks().settings(&app.id).await.map_err(|e| fail(e.into()))?;
            let webhooks = WebhooksView {
                url: view.url,
                enabled: view.enabled,
                provided: view.secret_source == SecretSource::Provided,
                secret_form: extra.secret_form.clone(),
                rotated_at: view.rotated_at.map(utc),
            };
            (Some(idp), Some(oidc), Some(webhooks))
        }
    };
    let status = if !extra.errors.is_empty() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let mut layout = op.app_layout(app, "identity");
    layout.notice = extra.notice;
    Ok(page(
        status,
        &IdentityPage {
            layout,
            base,
            add: if config.is_none() { extra.add } else { None },
            idp,
            oidc,
            webhooks,
            shown: extra.shown,
            errors: extra.errors,
            kinds: state
                .identity()
                .kinds()
                .all()
                .map(|a| (a.kind().as_str().to_owned(), a.label().to_owned()))
                .collect(),
        },
    ))
}

/// `GET /portal/apps/{app_id}/identity` (`?add` opens the add form, `?webhooks=enable|rotate`
/// the Signing Secret field for Clerk).
pub async fn identity_page(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let op = operator(&state, &call).await?;
            let app = app_of(&state, &call, &op).await?;
            let add = call.query.contains_key("add").then(AddForm::default);
            let secret_form = call.query.get("webhooks").filter(|a| *a == "enable" || *a == "rotate").cloned();
            render(&state, &op, &app, Extra { add, secret_form, ..Extra::default() }).await
        }
        .await,
    )
}

/// `POST /portal/apps/{app_id}/identity/discover`: **Discover** fills the mappings.
pub async fn discover(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let (op, fields) = operator_form(&state, &call).await?;
            let app = app_of(&state, &call, &op).await?;
            let issuer_url = field(&fields, "issuer_url").unwrap_or_default().to_owned();
            let mut add = AddForm { issuer_url: issuer_url.clone(), ..AddForm::default() };
            if issuer_url.is_empty() {
                let errors = FieldErrors::one(
                    "issuer_url",
                    "Enter the issuer URL of your identity provider, such as https://your-tenant.us.auth0.com/.",
                );
                return render(&state, &op, &app, Extra { add: Some(add), errors, ..Extra::default() }).await;
            }
            let kind = field(&fields, "kind").and_then(IdpKind::parse);
            match state.identity().discover(&issuer_url, kind).await {
                Ok(found) => {
                    add.discovered = true;
                    add.kind = found.kind.as_str().to_owned();
                    add.kind_label = found.label.to_owned();
                    add.user_id_claim = found.claims.user_id.to_string();
                    add.group_claim = found.claims.group.as_ref().map(ToString::to_string).unwrap_or_default();
                    add.role_claim = found.claims.role.as_ref().map(ToString::to_string).unwrap_or_default();
                    render(&state, &op, &app, Extra { add: Some(add), ..Extra::default() }).await
                }
                Err(e) => {
                    let e = ApiError::from(e);
                    render(
                        &state,
                        &op,
                        &app,
                        Extra { add: Some(add), errors: FieldErrors::one("issuer_url", e.detail), ..Extra::default() },
                    )
                    .await
                }
            }
        }
        .await,
    )
}

fn claim(fields: &HashMap<String, String>, name: &'static str) -> Result<Option<ClaimPath>, FieldErrors> {
    match field(fields, name) {
        None => Ok(None),
        Some(text) => ClaimPath::parse(text).map(Some).map_err(|e| FieldErrors::one(name, e.to_string())),
    }
}

fn claims(fields: &HashMap<String, String>) -> Result<RequestedClaims, FieldErrors> {
    let user_id = claim(fields, "user_id_claim")?
        .ok_or_else(|| FieldErrors::one("user_id_claim", "The user ID claim is required (usually sub)."))?;
    Ok(RequestedClaims {
        user_id: Some(user_id),
        group: Some(claim(fields, "group_claim")?),
        role: Some(claim(fields, "role_claim")?),
    })
}

/// `POST /portal/apps/{app_id}/identity`: **Add Provider**.
pub async fn add_provider(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let (op, fields) = operator_form(&state, &call).await?;
            let app = app_of(&state, &call, &op).await?;
            let text = |k: &str| field(&fields, k).unwrap_or_default().to_owned();
            let kind = IdpKind::parse(&text("kind"));
            let add = AddForm {
                discovered: true,
                issuer_url: text("issuer_url"),
                kind: text("kind"),
                kind_label: kind.as_ref().map(|k| kind_label(&state, k)).unwrap_or_default(),
                user_id_claim: text("user_id_claim"),
                group_claim: text("group_claim"),
                role_claim: text("role_claim"),
                audience: text("audience"),
            };
            let requested = match claims(&fields) {
                Ok(c) => c,
                Err(errors) => {
                    return render(&state, &op, &app, Extra { add: Some(add), errors, ..Extra::default() }).await
                }
            };
            let audience = field(&fields, "audience").map(str::to_owned);
            if audience.as_ref().is_some_and(|a| a.len() > 512) {
                let errors = FieldErrors::one("audience", "The audience must be at most 512 characters.");
                return render(&state, &op, &app, Extra { add: Some(add), errors, ..Extra::default() }).await;
            }
            let request = AddIdp { issuer_url: add.issuer_url.clone(), audience, kind, claims: requested };
            match state.identity().add_idp(&app.id, request, &actor()).await {
                Ok(_) => Ok(see_other(&format!("/portal/apps/{}/identity", app.id))),
                Err(e) => {
                    let e = ApiError::from(e);
                    if e.status.is_server_error() {
                        return Err(failure(&op, e, "/portal"));
                    }
                    render(
                        &state,
                        &op,
                        &app,
                        Extra { add: Some(add), errors: FieldErrors::one("issuer_url", e.detail), ..Extra::default() },
                    )
                    .await
                }
            }
        }
        .await,
    )
}

/// `POST /portal/apps/{app_id}/identity/mappings`: **Save** the mappings and audience (before
/// the lock).
pub async fn save_mappings(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let (op, fields) = operator_form(&state, &call).await?;
            let app = app_of(&state, &call, &op).await?;
            let requested = match claims(&fields) {
                Ok(c) => c,
                Err(errors) => return render(&state, &op, &app, Extra { errors, ..Extra::default() }).await,
            };
            let patch = IdpPatch { audience: Some(field(&fields, "audience").map(str::to_owned)), claims: requested };
            match state.identity().patch_idp(&app.id, &patch, &actor()).await {
                Ok(_) => render(&state, &op, &app, Extra { notice: Some("Saved.".into()), ..Extra::default() }).await,
                Err(e) => {
                    let e = ApiError::from(e);
                    if e.status.is_server_error() {
                        return Err(failure(&op, e, "/portal"));
                    }
                    render(
                        &state,
                        &op,
                        &app,
                        Extra { errors: FieldErrors::one("user_id_claim", e.detail), ..Extra::default() },
                    )
                    .await
                }
            }
        }
        .await,
    )
}

/// `POST /portal/apps/{app_id}/identity/remove`: **Remove Identity Provider** (asks first).
pub async fn remove_idp(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(async {
        let (op, fields) = operator_form(&state, &call).await?;
        let app = app_of(&state, &call, &op).await?;
        let base = format!("/portal/apps/{}/identity", app.id);
        if field(&fields, "confirm") != Some("yes") {
            return Ok(confirm(
                &op,
                "Remove the identity provider?",
                "User tokens of this provider stop working at once, and its OIDC sign-in and webhook settings go with it.",
                &format!("{base}/remove"),
                "Remove Identity Provider",
                &base,
            ));
        }
        // Deleting the IdP also forgets what the token verifier cached for it.
        if !state.identity().delete_idp(&app.id, &actor()).await.map_err(|e| failure(&op, e.into(), &base))? {
            return Err(failure(&op, ApiError::idp_not_configured(), &base));
        }
        Ok(see_other(&base))
    }
    .await)
}

/// `POST /portal/apps/{app_id}/identity/refresh-keys`: **Refresh keys** fetches the IdP's key
/// set now, as the API's `jwks/refresh` does.
pub async fn refresh_keys(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let (op, _) = operator_form(&state, &call).await?;
            let app = app_of(&state, &call, &op).await?;
            let base = format!("/portal/apps/{}/identity", app.id);
            let config = state
                .identity()
                .get_idp(&app.id)
                .await
                .map_err(|e| failure(&op, e.into(), &base))?
                .ok_or_else(|| failure(&op, ApiError::idp_not_configured(), &base))?;
            // The same fetch as `POST .../identity-provider/jwks/refresh`: keys the IdP removed
            // stop verifying from the next request.
            let refreshed = state.identity().refresh_keys(&config).await.map_err(|e| failure(&op, e.into(), &base))?;
            tracing::info!(app = app.id.as_str(), keys = refreshed.kids.len(), "portal: JWKS fetched on request");
            render(
                &state,
                &op,
                &app,
                Extra {
                    notice: Some(format!(
                        "Keys refreshed: the identity provider publishes {} signing key(s) ({}).",
                        refreshed.kids.len(),
                        refreshed.kids.join(", ")
                    )),
                    ..Extra::default()
                },
            )
            .await
        }
        .await,
    )
}

/// `POST /portal/apps/{app_id}/identity/oidc`: **Save** the OIDC client.
pub async fn oidc_save(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let (op, fields) = operator_form(&state, &call).await?;
            let app = app_of(&state, &call, &op).await?;
            let Some(client_id) = field(&fields, "client_id") else {
                return render(
                    &state,
                    &op,
                    &app,
                    Extra {
                        errors: FieldErrors::one(
                            "client_id",
                            "Enter the client ID of the application you registered at your identity provider.",
                        ),
                        ..Extra::default()
                    },
                )
                .await;
            };
            let Some(secret) = fields.get("client_secret").filter(|s| !s.is_empty()) else {
                return render(
                    &state,
                    &op,
                    &app,
                    Extra {
                        errors: FieldErrors::one(
                            "client_secret",
                            "Enter the client secret (it is never shown back; enter it again to change the client).",
                        ),
                        ..Extra::default()
                    },
                )
                .await;
            };
            let input = OidcClientInput {
                client_id: client_id.to_owned(),
                client_secret: Secret::new(secret.clone()),
                auth_method: None,
            };
            match state.signin().put_client(&app.id, input, &actor()).await {
                Ok(_) => {
                    render(&state, &op, &app, Extra { notice: Some("OIDC client saved.".into()), ..Extra::default() })
                        .await
                }
                Err(e) => {
                    let field = match &e {
                        PutClientError::Invalid(invalid) if invalid.field == "client_secret" => "client_secret",
                        _ => "client_id",
                    };
                    let e = ApiError::from(e);
                    if e.status.is_server_error() {
                        return Err(failure(&op, e, "/portal"));
                    }
                    render(&state, &op, &app, Extra { errors: FieldErrors::one(field, e.detail), ..Extra::default() })
                        .await
                }
            }
        }
        .await,
    )
}

/// The pasted signing secret, if the form has one.
fn pasted(fields: &HashMap<String, String>) -> Option<Secret> {
    field(fields, "signing_secret").map(|s| Secret::new(s.to_owned()))
}

/// `POST /portal/apps/{app_id}/identity/webhooks/enable`: **Enable Webhooks** (generated secret
/// shown once) or **Save Secret** (Clerk's pasted `whsec_…`).
pub async fn webhooks_enable(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    webhook_change(state, call, "enable").await
}

/// `POST /portal/apps/{app_id}/identity/webhooks/rotate`: **Rotate Secret**.
pub async fn webhooks_rotate(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    webhook_change(state, call, "rotate").await
}

async fn webhook_change(state: Arc<AppState>, call: Call, action: &'static str) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let (op, fields) = operator_form(&state, &call).await?;
            let app = app_of(&state, &call, &op).await?;
            let secret = pasted(&fields);
            let result = match action {
                "enable" => state.webhooks().enable(&app.id, secret, &actor()).await.map_err(ApiError::from),
                _ => state.webhooks().rotate(&app.id, secret, &actor()).await.map_err(ApiError::from),
            };
            match result {
                Ok(enabled) => {
                    let shown = enabled
                        .signing_secret
                        .map(|s| ShownOnce { label: "Signing secret".into(), value: s.into_inner() });
                    let notice = Some(
                        if action == "enable" {
                            "Webhooks enabled."
                        } else {
                            "Secret rotated: the old one no longer works."
                        }
                        .to_owned(),
                    );
                    render(&state, &op, &app, Extra { shown, notice, ..Extra::default() }).await
                }
                Err(e)
                    if e.status.is_client_error()
                        && (e.code == "invalid_signing_secret" || e.code == "invalid_request") =>
                {
                    render(
                        &state,
                        &op,
                        &app,
                        Extra {
                            errors: FieldErrors::one("signing_secret", e.detail),
                            secret_form: Some(action.to_owned()),
                            ..Extra::default()
                        },
                    )
                    .await
                }
                Err(e) => Err(failure(&op, e, &format!("/portal/apps/{}/identity", app.id))),
            }
        }
        .await,
    )
}

/// `POST /portal/apps/{app_id}/identity/webhooks/disable`: **Disable Webhooks** (asks first).
pub async fn webhooks_disable(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    finish(
        async {
            let (op, fields) = operator_form(&state, &call).await?;
            let app = app_of(&state, &call, &op).await?;
            let base = format!("/portal/apps/{}/identity", app.id);
            if field(&fields, "confirm") != Some("yes") {
                return Ok(confirm(
                &op,
                "Disable webhooks?",
                "Deliveries from your identity provider are refused from now on and the signing secret is forgotten.",
                &format!("{base}/webhooks/disable"),
                "Disable Webhooks",
                &base,
            ));
            }
            state.webhooks().disable(&app.id, &actor()).await.map_err(|e| failure(&op, e.into(), &base))?;
            Ok(see_other(&base))
        }
        .await,
    )
}
