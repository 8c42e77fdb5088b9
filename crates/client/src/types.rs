//! The API's request bodies and answers as Rust types (see `docs/api.md`). Times are RFC 3339
//! strings and ids UUID strings, as on the wire. Request bodies leave out what is `None`, so an
//! omitted field keeps the server's default; where the API gives `null` a meaning (clearing a
//! PATCH field) the type says so with a nested `Option`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An app (`GET /v1/apps/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

/// A new app with its first API key, shown only in this answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedApp {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub api_key: String,
}

/// An API key as listed (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

/// A new API key; `api_key` is shown only in this answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedApiKey {
    pub id: String,
    pub api_key: String,
    pub prefix: String,
    pub created_at: String,
}

/// Which claims carry the user id, groups and roles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Option<String>>,
}

/// `POST .../identity-provider/discover`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoverRequest {
    pub issuer_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// `POST .../identity-provider`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewIdentityProvider {
    pub issuer_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims: Option<Claims>,
}

/// `PATCH .../identity-provider`: `Some(None)` clears `audience` (or a claim), `None` keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityProviderUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims: Option<Claims>,
}

/// The discovery result (`discover` stores nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Discovery {
    pub kind: String,
    pub issuer: String,
    pub jwks_uri: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub signing_algs: Vec<String>,
    pub claims: Value,
    pub capabilities: Value,
}

/// The app's identity provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityProvider {
    pub id: String,
    pub kind: String,
    pub issuer: String,
    pub jwks_uri: String,
    pub audience: Option<String>,
    pub claims: Value,
    pub claims_locked: bool,
    pub claims_locked_at: Option<String>,
    pub oidc: Value,
    pub webhook: Value,
    pub created_at: String,
}

/// `PUT .../identity-provider/oidc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcClient {
    pub client_id: String,
    pub client_secret: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_method: Option<String>,
}

/// The `enable` / `rotate` body: Clerk's signing secret, or nothing for a generated one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSecret {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
}

/// The webhook settings; `signing_secret` only in the answer that generated it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSettings {
    pub url: String,
    pub enabled: bool,
    pub secret_source: String,
    pub rotated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
}

/// `POST .../identity-provider/jwks/refresh`: the key ids fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysRefreshed {
    pub kids: Vec<String>,
    pub fetched_at: String,
}

/// `PUT .../providers/{provider}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation_url: Option<String>,
    pub client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
}

/// An OAuth provider of the app (never its client secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provider {
    pub provider: String,
    pub authorization_url: String,
    pub token_url: String,
    pub revocation_url: Option<String>,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// `PUT .../policies/{provider}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRules {
    pub allow_groups: Vec<String>,
    pub allow_roles: Vec<String>,
}

/// Who may use a provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub provider: String,
    pub allow_groups: Vec<String>,
    pub allow_roles: Vec<String>,
    pub updated_at: String,
}

/// A user of the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub user_id: String,
    pub subject: String,
    pub status: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    pub created_at: String,
    pub last_seen_at: Option<String>,
}

/// A grant (never a token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub provider: String,
    pub status: String,
    pub scopes: Vec<String>,
    pub account: Option<String>,
    pub user_id: String,
    pub created_at: String,
    pub updated_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// `POST .../grants`: a grant imported from tokens obtained elsewhere. Exactly one of `subject`
/// and `user_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantImport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub provider: String,
    pub access_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
}

/// `POST .../grants/{id}/revoke`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One audit row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    pub id: Value,
    pub at: String,
    pub action: String,
    pub actor: String,
    pub user_id: Option<String>,
    pub grant_id: Option<String>,
    pub provider: Option<String>,
    pub outcome: String,
    pub detail: Option<Value>,
}

/// `POST /v1/token`: by provider or by grant id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
}

/// A handed-out access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessToken {
    pub access_token: String,
    pub token_type: String,
    pub expires_at: Option<String>,
    pub grant_id: String,
    pub provider: String,
    pub scopes: Vec<String>,
}

/// `GET /v1/me`: the signed-in user.
pub type Me = User;

/// Filters of `GET .../grants`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantFilter {
    pub status: Option<String>,
    pub provider: Option<String>,
    pub user_id: Option<String>,
}

/// Filters of `GET .../audit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub user_id: Option<String>,
}
