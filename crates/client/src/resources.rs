//! One typed method per API call, and the paths they use ([`paths`], public so a caller of the
//! raw [`Client::send`] builds the same URLs).

use crate::types::*;
use crate::{query, Client, Error, Method};
use serde_json::Value;

/// The API's paths, with every id and name percent-encoded.
pub mod paths {
    use crate::segment;

    /// `/v1/apps`
    pub fn apps() -> String {
        "/v1/apps".to_owned()
    }
    /// `/v1/apps/{app_id}`
    pub fn app(app_id: &str) -> String {
        format!("/v1/apps/{}", segment(app_id))
    }
    /// `/v1/apps/{app_id}/api-keys`
    pub fn api_keys(app_id: &str) -> String {
        format!("{}/api-keys", app(app_id))
    }
    /// `/v1/apps/{app_id}/api-keys/{key_id}`
    pub fn api_key(app_id: &str, key_id: &str) -> String {
        format!("{}/{}", api_keys(app_id), segment(key_id))
    }
    /// `/v1/apps/{app_id}/identity-provider` (+ `suffix`, e.g. `/discover`)
    pub fn idp(app_id: &str, suffix: &str) -> String {
        format!("{}/identity-provider{suffix}", app(app_id))
    }
    /// `/v1/apps/{app_id}/providers[/{provider}]`
    pub fn providers(app_id: &str, provider: Option<&str>) -> String {
        match provider {
            None => format!("{}/providers", app(app_id)),
            Some(p) => format!("{}/providers/{}", app(app_id), segment(p)),
        }
    }
    /// `/v1/apps/{app_id}/policies[/{provider}]`
    pub fn policies(app_id: &str, provider: Option<&str>) -> String {
        match provider {
            None => format!("{}/policies", app(app_id)),
            Some(p) => format!("{}/policies/{}", app(app_id), segment(p)),
        }
    }
    /// `/v1/apps/{app_id}/users[/{user_id}]`
    pub fn users(app_id: &str, user_id: Option<&str>) -> String {
        match user_id {
            None => format!("{}/users", app(app_id)),
            Some(u) => format!("{}/users/{}", app(app_id), segment(u)),
        }
    }
    /// `/v1/apps/{app_id}/grants`
    pub fn grants(app_id: &str) -> String {
        format!("{}/grants", app(app_id))
    }
    /// `/v1/apps/{app_id}/grants/{grant_id}/revoke`
    pub fn grant_revoke(app_id: &str, grant_id: &str) -> String {
        format!("{}/{}/revoke", grants(app_id), segment(grant_id))
    }
    /// `/v1/apps/{app_id}/audit`
    pub fn audit(app_id: &str) -> String {
        format!("{}/audit", app(app_id))
    }
}

const NO_BODY: Option<&()> = None;

impl Client {
    // ---- apps and API keys ----

    /// Creates an app; its first API key is in the answer and nowhere else.
    pub async fn create_app(&self, name: &str) -> Result<CreatedApp, Error> {
        self.send(Method::POST, &paths::apps(), Some(&serde_json::json!({ "name": name }))).await
    }
    /// Every app.
    pub async fn list_apps(&self) -> Result<Vec<App>, Error> {
        self.list_all(&paths::apps()).await
    }
    /// One app (404 `app_not_found`).
    pub async fn get_app(&self, app_id: &str) -> Result<App, Error> {
        self.send(Method::GET, &paths::app(app_id), NO_BODY).await
    }
    /// Deletes an app and everything of it, credentials included.
    pub async fn delete_app(&self, app_id: &str) -> Result<(), Error> {
        self.send(Method::DELETE, &paths::app(app_id), NO_BODY).await
    }
    /// Creates an API key (shown only in this answer).
    pub async fn create_api_key(&self, app_id: &str) -> Result<CreatedApiKey, Error> {
        self.send(Method::POST, &paths::api_keys(app_id), NO_BODY).await
    }
    /// The app's API keys (prefixes only).
    pub async fn list_api_keys(&self, app_id: &str) -> Result<Vec<ApiKey>, Error> {
        self.list_all(&paths::api_keys(app_id)).await
    }
    /// Deletes an API key; it stops working at once.
    pub async fn delete_api_key(&self, app_id: &str, key_id: &str) -> Result<(), Error> {
        self.send(Method::DELETE, &paths::api_key(app_id, key_id), NO_BODY).await
    }

    // ---- identity provider ----

    /// Reads an issuer's discovery document; stores nothing.
    ///
    /// ```no_run
    /// # async fn example(client: custody_client::Client) -> Result<(), custody_client::Error> {
    /// use custody_client::DiscoverRequest;
    /// let found = client
    ///     .discover_idp("0b8c…", &DiscoverRequest { issuer_url: "https://acme.eu.auth0.com/".into(), kind: None })
    ///     .await?;
    /// println!("{} at {}", found.kind, found.issuer);
    /// # Ok(()) }
    /// ```
    pub async fn discover_idp(&self, app_id: &str, request: &DiscoverRequest) -> Result<Discovery, Error> {
        self.send(Method::POST, &paths::idp(app_id, "/discover"), Some(request)).await
    }
    /// Configures the app's identity provider (discovery runs again).
    pub async fn create_idp(&self, app_id: &str, request: &NewIdentityProvider) -> Result<IdentityProvider, Error> {
        self.send(Method::POST, &paths::idp(app_id, ""), Some(request)).await
    }
    /// The app's identity provider (404 `idp_not_configured`).
    pub async fn get_idp(&self, app_id: &str) -> Result<IdentityProvider, Error> {
        self.send(Method::GET, &paths::idp(app_id, ""), NO_BODY).await
    }
    /// Changes the audience or the claim mappings.
    pub async fn update_idp(&self, app_id: &str, update: &IdentityProviderUpdate) -> Result<IdentityProvider, Error> {
        self.send(Method::PATCH, &paths::idp(app_id, ""), Some(update)).await
    }
    /// Removes the identity provider (users, grants and tokens stay).
    pub async fn delete_idp(&self, app_id: &str) -> Result<(), Error> {
        self.send(Method::DELETE, &paths::idp(app_id, ""), NO_BODY).await
    }
    /// Fetches the IdP's signing keys now instead of waiting for the cache.
    pub async fn refresh_idp_keys(&self, app_id: &str) -> Result<KeysRefreshed, Error> {
        self.send(Method::POST, &paths::idp(app_id, "/jwks/refresh"), NO_BODY).await
    }
    /// Sets the OIDC sign-in client.
    pub async fn set_oidc(&self, app_id: &str, client: &OidcClient) -> Result<IdentityProvider, Error> {
        self.send(Method::PUT, &paths::idp(app_id, "/oidc"), Some(client)).await
    }
    /// Removes the OIDC sign-in client.
    pub async fn delete_oidc(&self, app_id: &str) -> Result<(), Error> {
        self.send(Method::DELETE, &paths::idp(app_id, "/oidc"), NO_BODY).await
    }
    /// The webhook settings.
    pub async fn webhook_status(&self, app_id: &str) -> Result<WebhookSettings, Error> {
        self.send(Method::GET, &paths::idp(app_id, "/webhook"), NO_BODY).await
    }
    /// Enables lifecycle webhooks (with Clerk's signing secret, or a generated one).
    pub async fn enable_webhook(&self, app_id: &str, secret: &WebhookSecret) -> Result<WebhookSettings, Error> {
        self.send(Method::POST, &paths::idp(app_id, "/webhook/enable"), Some(secret)).await
    }
    /// Replaces the webhook signing secret.
    pub async fn rotate_webhook(&self, app_id: &str, secret: &WebhookSecret) -> Result<WebhookSettings, Error> {
        self.send(Method::POST, &paths::idp(app_id, "/webhook/rotate"), Some(secret)).await
    }
    /// Disables webhooks and forgets the secret.
    pub async fn disable_webhook(&self, app_id: &str) -> Result<WebhookSettings, Error> {
        self.send(Method::POST, &paths::idp(app_id, "/webhook/disable"), NO_BODY).await
    }

    // ---- providers and policies ----

    /// Creates or updates an OAuth provider.
    ///
    /// ```no_run
    /// # async fn example(client: custody_client::Client) -> Result<(), custody_client::Error> {
    /// use custody_client::ProviderSettings;
    /// let github = ProviderSettings {
    ///     preset: Some("github".into()),
    ///     client_id: "Iv1.abc".into(),
    ///     client_secret: Some("secret".into()),
    ///     ..Default::default()
    /// };
    /// client.set_provider("0b8c…", "github", &github).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_provider(&self, app_id: &str, name: &str, settings: &ProviderSettings) -> Result<Provider, Error> {
        self.send(Method::PUT, &paths::providers(app_id, Some(name)), Some(settings)).await
    }
    /// The app's providers.
    pub async fn list_providers(&self, app_id: &str) -> Result<Vec<Provider>, Error> {
        self.list_all(&paths::providers(app_id, None)).await
    }
    /// One provider.
    pub async fn get_provider(&self, app_id: &str, name: &str) -> Result<Provider, Error> {
        self.send(Method::GET, &paths::providers(app_id, Some(name)), NO_BODY).await
    }
    /// Deletes a provider; its grants are revoked and its policy removed.
    pub async fn delete_provider(&self, app_id: &str, name: &str) -> Result<(), Error> {
        self.send(Method::DELETE, &paths::providers(app_id, Some(name)), NO_BODY).await
    }
    /// Sets who may use a provider.
    pub async fn set_policy(&self, app_id: &str, provider: &str, rules: &PolicyRules) -> Result<Policy, Error> {
        self.send(Method::PUT, &paths::policies(app_id, Some(provider)), Some(rules)).await
    }
    /// The app's policies.
    pub async fn list_policies(&self, app_id: &str) -> Result<Vec<Policy>, Error> {
        self.list_all(&paths::policies(app_id, None)).await
    }
    /// One policy.
    pub async fn get_policy(&self, app_id: &str, provider: &str) -> Result<Policy, Error> {
        self.send(Method::GET, &paths::policies(app_id, Some(provider)), NO_BODY).await
    }
    /// Removes a policy (every active user may use the provider again).
    pub async fn delete_policy(&self, app_id: &str, provider: &str) -> Result<(), Error> {
        self.send(Method::DELETE, &paths::policies(app_id, Some(provider)), NO_BODY).await
    }

    // ---- users, grants, audit ----

    /// The app's users, optionally of one status.
    pub async fn list_users(&self, app_id: &str, status: Option<&str>) -> Result<Vec<User>, Error> {
        self.list_all(&format!("{}{}", paths::users(app_id, None), query(&[("status", status)]))).await
    }
    /// One user.
    pub async fn get_user(&self, app_id: &str, user_id: &str) -> Result<User, Error> {
        self.send(Method::GET, &paths::users(app_id, Some(user_id)), NO_BODY).await
    }
    /// Deprovisions a user: every grant revoked, every stored token deleted.
    pub async fn deprovision_user(&self, app_id: &str, user_id: &str) -> Result<User, Error> {
        let path = format!("{}/deprovision", paths::users(app_id, Some(user_id)));
        self.send(Method::POST, &path, NO_BODY).await
    }
    /// The app's grants, newest first.
    pub async fn list_grants(&self, app_id: &str, filter: &GrantFilter) -> Result<Vec<Grant>, Error> {
        let q = query(&[
            ("status", filter.status.as_deref()),
            ("provider", filter.provider.as_deref()),
            ("user_id", filter.user_id.as_deref()),
        ]);
        self.list_all(&format!("{}{q}", paths::grants(app_id))).await
    }
    /// Imports a grant from tokens obtained elsewhere.
    pub async fn import_grant(&self, app_id: &str, import: &GrantImport) -> Result<Grant, Error> {
        self.send(Method::POST, &paths::grants(app_id), Some(import)).await
    }
    /// Revokes a grant.
    pub async fn revoke_grant(&self, app_id: &str, grant_id: &str, request: &RevokeRequest) -> Result<Grant, Error> {
        self.send(Method::POST, &paths::grant_revoke(app_id, grant_id), Some(request)).await
    }
    /// The audit log, newest first.
    pub async fn list_audit(&self, app_id: &str, filter: &AuditFilter) -> Result<Vec<AuditRow>, Error> {
        let q = query(&[("action", filter.action.as_deref()), ("user_id", filter.user_id.as_deref())]);
        self.list_all(&format!("{}{q}", paths::audit(app_id))).await
    }

    // ---- runtime (the client's token is an app's API key) ----

    /// `GET /v1/me` for the user whose token is given.
    pub async fn me(&self, user_token: &str) -> Result<Me, Error> {
        self.send_with(Method::GET, "/v1/me", NO_BODY, Some(user_token)).await
    }
    /// `POST /v1/token`: an access token of the user's grant.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), custody_client::Error> {
    /// use custody_client::{Client, TokenRequest};
    /// let app = Client::new("https://custody.example.com", "ck_…")?;
    /// let request = TokenRequest { provider: Some("github".into()), grant_id: None };
    /// let token = app.token("<user JWT>", &request).await?;
    /// # let _ = token.access_token; Ok(()) }
    /// ```
    pub async fn token(&self, user_token: &str, request: &TokenRequest) -> Result<AccessToken, Error> {
        self.send_with(Method::POST, "/v1/token", Some(request), Some(user_token)).await
    }
    /// `GET /v1/grants`: the user's grants (first page of up to 1000).
    pub async fn my_grants(&self, user_token: &str) -> Result<Vec<Grant>, Error> {
        let page: Value = self.send_with(Method::GET, "/v1/grants?limit=1000", NO_BODY, Some(user_token)).await?;
        serde_json::from_value(page.get("items").cloned().unwrap_or(Value::Array(Vec::new())))
            .map_err(|e| Error::Decode { reason: e.to_string(), request_id: None })
    }
}
