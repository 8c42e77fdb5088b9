//! Sign-in use cases: the operator's OIDC client settings, starting a sign-in (an SDK session or
//! the Wallet), completing it at the callback, handing an SDK session's user token out once,
//! and Wallet sessions (access checks on every request, CSRF tokens, sign-out).

use super::ports::{
    AuthorizationRequest, OidcClients, OidcCodeClient, OidcEndpoint, PutOidcClientError, SdkOutcome, SdkSessions,
    SignInStates, WalletSessions,
};
use super::{
    OidcClient, OidcClientId, SdkSession, SdkSessionId, SdkSessionStatus, SignInFailure, SignInPurpose, SignInState,
    TokenAuthMethod, WalletSession,
};
use crate::audit::{Actor, AuditEntry, AuditOutcome};
use crate::cipher::Cipher;
use crate::cipher::ResealReport;
use crate::digest::state_hash;
use crate::idp::IdpConfig;
use crate::jwt::{TokenRejection, VerifiedClaims};
use crate::ports::{AuditLog, Clock, IdpStore, Random, SecretHasher, StoreError, UserStore};
use crate::service::{IdentityService, ResolveError};
use crate::user::UserRefused;
use crate::{AppId, Invalid, Secret, UnixTime, User, UserId, UserStatus};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// How long a sign-in may take: the state (and an SDK session) expires after ten minutes.
pub const SIGN_IN_STATE_TTL_SECS: i64 = 600;
/// How long a Wallet session lasts (absolute, from sign-in).
pub const WALLET_SESSION_TTL_SECS: i64 = 8 * 3600;
/// The scopes every sign-in asks for.
pub const SIGN_IN_SCOPE: &str = "openid profile email";
/// Hash purpose of Wallet CSRF tokens, so they can never stand in for another keyed hash.
pub const CSRF_PURPOSE: &str = "wallet-csrf";
/// Longest session token or state value looked up (longer ones are not ours).
const MAX_TOKEN_LEN: usize = 256;

/// Settings of the sign-in use cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInSettings {
    /// The public base URL (no trailing `/`), for redirect URIs and the logout URL.
    pub public_url: String,
    /// How long a sign-in state (and an SDK session) lives.
    pub state_ttl_secs: i64,
    /// How long a Wallet session lives.
    pub wallet_session_ttl_secs: i64,
}

impl SignInSettings {
    /// The defaults for a public URL.
    pub fn new(public_url: impl Into<String>) -> Self {
        Self {
            public_url: public_url.into(),
            state_ttl_secs: SIGN_IN_STATE_TTL_SECS,
            wallet_session_ttl_secs: WALLET_SESSION_TTL_SECS,
        }
    }

    /// The redirect URI registered at the IdP for a purpose.
    pub fn redirect_uri(&self, purpose: SignInPurpose) -> String {
        format!("{}{}", self.public_url, purpose.callback_path())
    }

    /// The Wallet's sign-in page, bare: the `post_logout_redirect_uri` registered at the IdP.
    pub fn logout_url(&self) -> String {
        format!("{}/wallet/sign-in", self.public_url)
    }
}

/// An operator's OIDC client settings. `Debug` never shows the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcClientInput {
    pub client_id: String,
    pub client_secret: Secret,
    /// `None` takes [`TokenAuthMethod::ClientSecretBasic`].
    pub auth_method: Option<TokenAuthMethod>,
}

/// Errors of [`SignInService::put_client`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PutClientError {
    #[error("the app has no identity provider")]
    IdpNotConfigured,
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("the client secret could not be sealed")]
    Sealing,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Errors of starting a sign-in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartSignInError {
    /// Sign-in is not set up for the app; the text says what is missing.
    #[error("{0}")]
    NotConfigured(&'static str),
    #[error("a sign-in secret could not be sealed")]
    Sealing,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Errors of [`SignInService::complete`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    /// No pending sign-in has this state at this callback: unknown, long expired, or used.
    #[error("the sign-in is unknown or was already used")]
    UnknownState,
    /// The sign-in failed; the failure was recorded (on the SDK session, in the audit log).
    #[error("sign-in failed: {failure}")]
    Failed { app_id: AppId, failure: SignInFailure },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Errors of [`SignInService::sdk_session`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdkSessionError {
    #[error("sign-in session not found")]
    NotFound,
    #[error("the session's token could not be opened")]
    Sealing,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Errors of [`SignInService::reseal_client_secrets`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResealError {
    #[error("a client secret could not be opened or sealed")]
    Sealing,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A started SDK session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedSdkSession {
    pub id: SdkSessionId,
    /// Where the browser goes: the IdP's authorization endpoint with this sign-in's parameters.
    pub authorize_url: String,
    pub expires_at: UnixTime,
}

/// A started Wallet sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedWalletSignIn {
    pub authorize_url: String,
    /// The state value, for binding the sign-in to the browser that started it (a cookie the
    /// callback compares).
    pub state: Secret,
    pub expires_at: UnixTime,
}

/// A completed sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedIn {
    /// The SDK session is complete; the SDK picks the token up.
    Sdk { app_id: AppId, session_id: SdkSessionId, user: User },
    /// A Wallet session was opened; `session_token` goes in the cookie and nowhere else.
    Wallet { app_id: AppId, user: User, session_token: Secret, expires_at: UnixTime },
}

/// Where an SDK session stands, as the SDK sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdkSessionState {
    Pending,
    Complete,
    Failed,
    Expired,
}

impl SdkSessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SdkSessionState::Pending => "pending",
            SdkSessionState::Complete => "complete",
            SdkSessionState::Failed => "failed",
            SdkSessionState::Expired => "expired",
        }
    }
}

/// An SDK session as the SDK sees it. `user_token` is present on the first read after
/// completion only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdkSessionView {
    pub id: SdkSessionId,
    pub status: SdkSessionState,
    pub error: Option<SignInFailure>,
    pub user: Option<User>,
    pub user_token: Option<Secret>,
    pub expires_at: UnixTime,
}

/// Why a Wallet session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    Expired,
    Suspended,
    Deprovisioned,
}

/// What a Wallet session token gives access to, decided on every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalletAccess {
    /// A live session of an active user.
    Active { session: Box<WalletSession>, user: Box<User> },
    /// The session existed and has now ended (it is deleted).
    Ended { app_id: AppId, reason: SessionEnd },
    /// No such session.
    Unknown,
}

/// A failure inside the callback: its stable kind, a detail for the audit log, and the user
/// when one was resolved.
struct Failure {
    kind: SignInFailure,
    detail: String,
    user: Option<UserId>,
}

impl Failure {
    fn new(kind: SignInFailure, detail: impl Into<String>) -> Self {
        Self { kind, detail: detail.into(), user: None }
    }
}

/// A verified sign-in, before it is recorded.
struct Verified {
    config: IdpConfig,
    user: User,
    id_token: Secret,
}

/// The ports the sign-in use cases run on: the identity use cases (token verification and user
/// resolution), the storage roles they use, and the outside world.
#[derive(Clone)]
pub struct SignInPorts {
    pub identity: IdentityService,
    pub idps: Arc<dyn IdpStore>,
    pub users: Arc<dyn UserStore>,
    pub clients: Arc<dyn OidcClients>,
    pub states: Arc<dyn SignInStates>,
    pub sdk_sessions: Arc<dyn SdkSessions>,
    pub wallet_sessions: Arc<dyn WalletSessions>,
    pub audit: Arc<dyn AuditLog>,
    pub oidc: Arc<dyn OidcCodeClient>,
    pub cipher: Arc<dyn Cipher>,
    pub hasher: Arc<dyn SecretHasher>,
    pub clock: Arc<dyn Clock>,
    pub random: Arc<dyn Random>,
}

impl fmt::Debug for SignInPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignInPorts").finish_non_exhaustive()
    }
}

/// The sign-in use cases over their ports.
#[derive(Clone)]
pub struct SignInService {
    identity: IdentityService,
    idps: Arc<dyn IdpStore>,
    users: Arc<dyn UserStore>,
    clients: Arc<dyn OidcClients>,
    states: Arc<dyn SignInStates>,
    sdk_sessions: Arc<dyn SdkSessions>,
    wallet_sessions: Arc<dyn WalletSessions>,
    audit_log: Arc<dyn AuditLog>,
    oidc: Arc<dyn OidcCodeClient>,
    cipher: Arc<dyn Cipher>,
    hasher: Arc<dyn SecretHasher>,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    settings: SignInSettings,
}

impl fmt::Debug for SignInService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignInService").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// Constant-time equality of two byte strings of public length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An IdP's error code as safe to record: printable ASCII, at most 64 characters.
fn sanitize_code(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_graphic()).take(64).collect()
}

/// The RP-initiated logout URL (OpenID Connect RP-Initiated Logout 1.0 section 2).
fn end_session_url(
    endpoint: &str,
    post_logout_redirect_uri: &str,
    app: &AppId,
    client_id: Option<&OidcClientId>,
    id_token_hint: Option<&Secret>,
) -> Option<String> {
    let mut url = url::Url::parse(endpoint).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("post_logout_redirect_uri", post_logout_redirect_uri).append_pair("state", app.as_str());
        if let Some(client_id) = client_id {
            q.append_pair("client_id", client_id.as_str());
        }
        if let Some(hint) = id_token_hint {
            q.append_pair("id_token_hint", hint.expose());
        }
    }
    Some(url.into())
}

impl SignInService {
    pub fn new(ports: SignInPorts, settings: SignInSettings) -> Self {
        let SignInPorts {
            identity,
            idps,
            users,
            clients,
            states,
            sdk_sessions,
            wallet_sessions,
            audit,
            oidc,
            cipher,
            hasher,
            clock,
            random,
        } = ports;
        Self {
            identity,
            idps,
            users,
            clients,
            states,
            sdk_sessions,
            wallet_sessions,
            audit_log: audit,
            oidc,
            cipher,
            hasher,
            clock,
            random,
            settings,
        }
    }

    pub fn settings(&self) -> &SignInSettings {
        &self.settings
    }

    fn random_token(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.random.bytes(32))
    }

    fn user_audit(&self, app: &AppId, action: &str, user: &UserId, detail: String) -> AuditEntry {
        AuditEntry {
            user_id: Some(user.clone()),
            ..self.identity.audit(app, action, &format!("user:{user}"), Some(detail))
        }
    }

    // ----- the operator's OIDC client -----

    /// The app's OIDC client, if one is set.
    pub async fn client(&self, app: &AppId) -> Result<Option<OidcClient>, StoreError> {
        self.clients.get_oidc_client(app).await
    }

    /// Sets the app's OIDC client (replacing any previous settings): the secret is sealed bound
    /// to the app. Returns the IdP configuration it belongs to and the stored client.
    pub async fn put_client(
        &self,
        app: &AppId,
        input: OidcClientInput,
        actor: &Actor,
    ) -> Result<(IdpConfig, OidcClient), PutClientError> {
        let client_id = OidcClientId::parse(&input.client_id).map_err(|e| Invalid::new("client_id", e.to_string()))?;
        let secret_len = input.client_secret.expose().len();
        if secret_len == 0 || secret_len > 4096 || input.client_secret.expose().chars().any(char::is_control) {
            return Err(Invalid::new("client_secret", "must be 1 to 4096 characters without control characters").into());
        }
        let sealed = self
            .cipher
            .seal_secret(&input.client_secret, &OidcClient::secret_aad(app))
            .map_err(|_| PutClientError::Sealing)?;
        // The IdP may be replaced between the read and the write; the store refuses a client
        // for a configuration that is no longer the app's, and we read again.
        for _ in 0..4 {
            let config = self.idps.get_idp(app).await?.ok_or(PutClientError::IdpNotConfigured)?;
            let existing = self.clients.get_oidc_client(app).await?.filter(|c| c.idp_id == config.id);
            let now = self.clock.now();
            let client = OidcClient {
                app_id: app.clone(),
                idp_id: config.id.clone(),
                client_id: client_id.clone(),
                client_secret: sealed.clone(),
                auth_method: input.auth_method.unwrap_or_default(),
                created_at: existing.as_ref().map(|c| c.created_at).unwrap_or(now),
                updated_at: now,
            };
            let audit = self.identity.audit(
                app,
                "idp.oidc_update",
                actor.as_str(),
                Some(format!("OIDC client `{client_id}` set ({})", client.auth_method.as_str())),
            );
            match self.clients.put_oidc_client(&client, &audit).await {
                Ok(()) => return Ok((config, client)),
                Err(PutOidcClientError::IdpChanged) => continue,
                Err(PutOidcClientError::Store(e)) => return Err(e.into()),
            }
        }
        Err(StoreError::Unavailable("the identity provider kept changing concurrently".into()).into())
    }

    /// Removes the app's OIDC client; pending sign-ins go with it. `false` when there was none.
    pub async fn delete_client(&self, app: &AppId, actor: &Actor) -> Result<bool, StoreError> {
        let audit = self.identity.audit(app, "idp.oidc_delete", actor.as_str(), Some("OIDC client removed".into()));
        self.clients.delete_oidc_client(app, &audit).await
    }

    // ----- starting a sign-in -----

    /// Starts an SDK session: a pending session and its sign-in state, and the URL that takes
    /// the browser to the IdP.
    pub async fn start_sdk_session(&self, app: &AppId) -> Result<StartedSdkSession, StartSignInError> {
        let id = SdkSessionId::parse(&self.random.uuid())
            .map_err(|_| StoreError::Unavailable("the random source returned a malformed id".into()))?;
        let now = self.clock.now();
        let session = SdkSession {
            id: id.clone(),
            app_id: app.clone(),
            status: SdkSessionStatus::Pending,
            error: None,
            user_id: None,
            user_token: None,
            created_at: now,
            expires_at: now.plus_seconds(self.settings.state_ttl_secs),
            completed_at: None,
            token_delivered_at: None,
        };
        let started = self.start(app, SignInPurpose::Sdk, Some(&session)).await?;
        Ok(StartedSdkSession { id, authorize_url: started.authorize_url, expires_at: started.expires_at })
    }

    /// Starts a Wallet sign-in.
    pub async fn start_wallet_sign_in(&self, app: &AppId) -> Result<StartedWalletSignIn, StartSignInError> {
        self.start(app, SignInPurpose::Wallet, None).await
    }

    async fn start(
        &self,
        app: &AppId,
        purpose: SignInPurpose,
        session: Option<&SdkSession>,
    ) -> Result<StartedWalletSignIn, StartSignInError> {
        let config = self
            .idps
            .get_idp(app)
            .await?
            .ok_or(StartSignInError::NotConfigured("the app has no identity provider, so sign-in is not set up"))?;
        let client = self.clients.get_oidc_client(app).await?.filter(|c| c.idp_id == config.id).ok_or(
            StartSignInError::NotConfigured(
                "the app's identity provider has no OIDC client; set one with PUT .../identity-provider/oidc",
            ),
        )?;
        let authorization_endpoint =
            config.endpoints.authorization_endpoint.as_deref().ok_or(StartSignInError::NotConfigured(
                "the identity provider's discovery document names no authorization_endpoint",
            ))?;
        if config.endpoints.token_endpoint.is_none() {
            return Err(StartSignInError::NotConfigured(
                "the identity provider's discovery document names no token_endpoint",
            ));
        }
        let (state, nonce, verifier) = (self.random_token(), self.random_token(), self.random_token());
        let hash = state_hash(&state);
        let now = self.clock.now();
        let record = SignInState {
            state_hash: hash.clone(),
            app_id: app.clone(),
            purpose,
            sdk_session: session.map(|s| s.id.clone()),
            nonce_hash: state_hash(&nonce),
            pkce_verifier: self
                .cipher
                .seal(verifier.as_bytes(), &SignInState::verifier_aad(&hash))
                .map_err(|_| StartSignInError::Sealing)?,
            created_at: now,
            expires_at: session.map(|s| s.expires_at).unwrap_or_else(|| now.plus_seconds(self.settings.state_ttl_secs)),
        };
        let redirect_uri = self.settings.redirect_uri(purpose);
        let authorize_url = self
            .oidc
            .authorization_url(&AuthorizationRequest {
                authorization_endpoint,
                client_id: &client.client_id,
                redirect_uri: &redirect_uri,
                scope: SIGN_IN_SCOPE,
                state: &state,
                nonce: &nonce,
                pkce_verifier: &verifier,
            })
            .map_err(|_| {
                StartSignInError::NotConfigured("the identity provider's authorization_endpoint is not a usable URL")
            })?;
        if !self.states.create_sign_in(&record, session).await? {
            return Err(StartSignInError::NotConfigured("the app's OIDC client was removed"));
        }
        Ok(StartedWalletSignIn { authorize_url, state: Secret::new(state), expires_at: record.expires_at })
    }

    // ----- the callback -----

    /// Completes a sign-in at the callback of `purpose`: consumes the state once, exchanges the
    /// code, verifies the ID token, resolves the user, and completes the SDK session or opens a
    /// Wallet session. Failures are recorded before they are returned.
    pub async fn complete(
        &self,
        purpose: SignInPurpose,
        state: &str,
        code: Option<&str>,
        idp_error: Option<&str>,
    ) -> Result<SignedIn, CallbackError> {
        if state.is_empty() || state.len() > MAX_TOKEN_LEN {
            return Err(CallbackError::UnknownState);
        }
        let record =
            self.states.consume_sign_in_state(&state_hash(state), purpose).await?.ok_or(CallbackError::UnknownState)?;
        let app_id = record.app_id.clone();
        match self.verify_sign_in(&record, code, idp_error).await {
            Ok(verified) => match self.record_success(&record, verified).await {
                Ok(signed_in) => Ok(signed_in),
                Err(failure) => {
                    let kind = failure.kind;
                    self.record_failure(&record, failure).await;
                    Err(CallbackError::Failed { app_id, failure: kind })
                }
            },
            Err(failure) => {
                let kind = failure.kind;
                self.record_failure(&record, failure).await;
                Err(CallbackError::Failed { app_id, failure: kind })
            }
        }
    }

    async fn verify_sign_in(
        &self,
        record: &SignInState,
        code: Option<&str>,
        idp_error: Option<&str>,
    ) -> Result<Verified, Failure> {
        use SignInFailure as F;
        let server = |detail: &str| Failure::new(F::ServerError, detail);
        if record.expires_at <= self.clock.now() {
            return Err(Failure::new(F::Expired, "the browser came back after the sign-in expired"));
        }
        if let Some(error) = idp_error {
            let kind = if error == "access_denied" { F::AccessDenied } else { F::IdpError };
            return Err(Failure::new(kind, format!("the identity provider answered `{}`", sanitize_code(error))));
        }
        let code =
            code.filter(|c| !c.is_empty()).ok_or_else(|| Failure::new(F::IdpError, "the callback has no code"))?;
        let app = &record.app_id;
        let client = self
            .clients
            .get_oidc_client(app)
            .await
            .map_err(|e| server(&e.to_string()))?
            .ok_or_else(|| server("the OIDC client was removed"))?;
        let config = self
            .idps
            .get_idp(app)
            .await
            .map_err(|e| server(&e.to_string()))?
            .filter(|c| c.id == client.idp_id)
            .ok_or_else(|| server("the identity provider was replaced"))?;
        let token_endpoint = config
            .endpoints
            .token_endpoint
            .clone()
            .ok_or_else(|| Failure::new(F::IdpError, "the identity provider names no token_endpoint"))?;
        let secret = self
            .cipher
            .open_secret(&client.client_secret, &OidcClient::secret_aad(app))
            .map_err(|_| server("the client secret does not open"))?;
        let verifier = self
            .cipher
            .open(&record.pkce_verifier, &SignInState::verifier_aad(&record.state_hash))
            .ok()
            .and_then(|v| String::from_utf8(v).ok())
            .ok_or_else(|| server("the PKCE verifier does not open"))?;
        let endpoint = OidcEndpoint {
            token_endpoint: &token_endpoint,
            client_id: &client.client_id,
            client_secret: &secret,
            auth_method: client.auth_method,
        };
        let id_token = self
            .oidc
            .exchange_code(&endpoint, code, &self.settings.redirect_uri(record.purpose), &verifier)
            .await
            .map_err(|e| Failure::new(F::CodeExchangeFailed, e.to_string()))?;
        let (config, user) = self.resolve(config, &client, &id_token, &record.nonce_hash).await?;
        Ok(Verified { config, user, id_token })
    }

    /// Verifies the ID token and resolves its user exactly as a runtime JWT is resolved (the
    /// first sight creates the user and locks the claim mappings), then refuses users who may
    /// not act. A configuration change in between makes it verify again under the new one.
    async fn resolve(
        &self,
        mut config: IdpConfig,
        client: &OidcClient,
        id_token: &Secret,
        nonce_hash: &str,
    ) -> Result<(IdpConfig, User), Failure> {
        use SignInFailure as F;
        for _ in 0..4 {
            let verified = self.verify_id_token(&config, client, id_token, nonce_hash).await?;
            match self.identity.resolve_verified(&config, &verified).await {
                Ok(user) => {
                    return match user.ensure_active() {
                        Ok(()) => Ok((config, user)),
                        Err(refused) => {
                            let kind = match refused {
                                UserRefused::Suspended => F::UserSuspended,
                                UserRefused::Deprovisioned => F::UserDeprovisioned,
                            };
                            Err(Failure { kind, detail: refused.to_string(), user: Some(user.id) })
                        }
                    };
                }
                Err(ResolveError::ConfigChanged) => {
                    config = self
                        .idps
                        .get_idp(&client.app_id)
                        .await
                        .map_err(|e| Failure::new(F::ServerError, e.to_string()))?
                        .filter(|c| c.id == client.idp_id)
                        .ok_or_else(|| Failure::new(F::ServerError, "the identity provider was replaced"))?;
                }
                Err(ResolveError::InvalidToken(rejection)) => {
                    return Err(Failure::new(F::InvalidIdToken, rejection.to_string()))
                }
                Err(ResolveError::Refused(refused)) => {
                    let kind = match refused {
                        UserRefused::Suspended => F::UserSuspended,
                        UserRefused::Deprovisioned => F::UserDeprovisioned,
                    };
                    return Err(Failure::new(kind, refused.to_string()));
                }
                Err(e @ (ResolveError::NotConfigured | ResolveError::Store(_))) => {
                    return Err(Failure::new(F::ServerError, e.to_string()))
                }
            }
        }
        Err(Failure::new(F::ServerError, "the identity provider configuration kept changing"))
    }

    /// OpenID Connect Core section 3.1.3.7: signature (through the JWKS cache), `iss`, `aud`
    /// containing the client id, `exp` (and `nbf`, `iat`), `azp` when present or when there are
    /// several audiences, and the `nonce` this sign-in sent.
    async fn verify_id_token(
        &self,
        config: &IdpConfig,
        client: &OidcClient,
        id_token: &Secret,
        nonce_hash: &str,
    ) -> Result<VerifiedClaims, Failure> {
        use SignInFailure as F;
        let verified = self
            .identity
            .verify_token_for_audience(config, id_token.expose(), Some(client.client_id.as_str()))
            .await
            .map_err(|rejection| match rejection {
                TokenRejection::KeysUnavailable => Failure::new(F::ServerError, rejection.to_string()),
                other => Failure::new(F::InvalidIdToken, other.to_string()),
            })?;
        let claims = &verified.claims;
        let several_audiences = matches!(claims.get("aud"), Some(Value::Array(a)) if a.len() > 1);
        match claims.get("azp") {
            Some(Value::String(azp)) if azp == client.client_id.as_str() => {}
            None if !several_audiences => {}
            _ => return Err(Failure::new(F::InvalidIdToken, "the ID token's azp is not this client")),
        }
        let nonce = claims
            .get("nonce")
            .and_then(Value::as_str)
            .ok_or_else(|| Failure::new(F::InvalidIdToken, "the ID token has no nonce"))?;
        if !constant_time_eq(state_hash(nonce).as_bytes(), nonce_hash.as_bytes()) {
            return Err(Failure::new(F::InvalidIdToken, "the ID token's nonce does not match the sign-in"));
        }
        Ok(verified)
    }

    async fn record_success(&self, record: &SignInState, verified: Verified) -> Result<SignedIn, Failure> {
        use SignInFailure as F;
        let Verified { config, user, id_token } = verified;
        let app = &record.app_id;
        let now = self.clock.now();
        match record.purpose {
            SignInPurpose::Sdk => {
                let session_id =
                    record.sdk_session.clone().ok_or_else(|| Failure::new(F::ServerError, "no SDK session"))?;
                let sealed = self
                    .cipher
                    .seal_secret(&id_token, &SdkSession::token_aad(&session_id))
                    .map_err(|_| Failure::new(F::ServerError, "the user token could not be sealed"))?;
                let audit = self.user_audit(app, "user.sign_in", &user.id, "signed in for an SDK session".into());
                let finished = self
                    .sdk_sessions
                    .finish_sdk_session(
                        &session_id,
                        SdkOutcome::Complete { user: &user.id, token: &sealed },
                        now,
                        &audit,
                    )
                    .await
                    .map_err(|e| Failure::new(F::ServerError, e.to_string()))?;
                if !finished {
                    return Err(Failure::new(F::Expired, "the SDK session is gone or no longer pending"));
                }
                Ok(SignedIn::Sdk { app_id: app.clone(), session_id, user })
            }
            SignInPurpose::Wallet => {
                let token = self.random_token();
                let id_hash = state_hash(&token);
                let session = WalletSession {
                    id_hash: id_hash.clone(),
                    app_id: app.clone(),
                    idp_id: config.id.clone(),
                    user_id: user.id.clone(),
                    // Only needed as a hint at sign-out; a session works without it.
                    id_token: self.cipher.seal_secret(&id_token, &WalletSession::token_aad(&id_hash)).ok(),
                    created_at: now,
                    expires_at: now.plus_seconds(self.settings.wallet_session_ttl_secs),
                };
                let audit = self.user_audit(app, "user.sign_in", &user.id, "signed in to the Wallet".into());
                self.wallet_sessions
                    .create_wallet_session(&session, &audit)
                    .await
                    .map_err(|e| Failure::new(F::ServerError, e.to_string()))?;
                Ok(SignedIn::Wallet {
                    app_id: app.clone(),
                    user,
                    session_token: Secret::new(token),
                    expires_at: session.expires_at,
                })
            }
        }
    }

    /// Records a failed sign-in: on the SDK session (which fails) and in the audit log. Best
    /// effort: the browser is told about the failure either way.
    async fn record_failure(&self, record: &SignInState, failure: Failure) {
        let detail = format!("{} sign-in failed: {}: {}", record.purpose.as_str(), failure.kind, failure.detail);
        let mut audit = match &failure.user {
            Some(user) => self.user_audit(&record.app_id, "user.sign_in", user, detail),
            None => self.identity.audit(&record.app_id, "user.sign_in", "system", Some(detail)),
        };
        audit.outcome = if matches!(failure.kind, SignInFailure::UserSuspended | SignInFailure::UserDeprovisioned) {
            AuditOutcome::Denied
        } else {
            AuditOutcome::Failure
        };
        let now = self.clock.now();
        let recorded = match (&record.sdk_session, record.purpose) {
            (Some(id), SignInPurpose::Sdk) => {
                match self.sdk_sessions.finish_sdk_session(id, SdkOutcome::Failed(failure.kind), now, &audit).await {
                    Ok(true) => Ok(()),
                    // The session is gone or finished: the audit row still records the attempt.
                    Ok(false) => self.audit_log.append_audit(&audit).await,
                    Err(e) => Err(e),
                }
            }
            _ => self.audit_log.append_audit(&audit).await,
        };
        // Nothing else to do: the failure is reported to the browser either way.
        let _ = recorded;
    }

    // ----- SDK sessions -----

    /// The app's SDK session as the SDK sees it. The first read of a complete session carries
    /// the user token; no later read does.
    pub async fn sdk_session(&self, app: &AppId, id: &SdkSessionId) -> Result<SdkSessionView, SdkSessionError> {
        let session = self.sdk_sessions.get_sdk_session(app, id).await?.ok_or(SdkSessionError::NotFound)?;
        let now = self.clock.now();
        let mut view = SdkSessionView {
            id: id.clone(),
            status: SdkSessionState::Pending,
            error: session.error,
            user: None,
            user_token: None,
            expires_at: session.expires_at,
        };
        match session.status {
            SdkSessionStatus::Pending => {
                if session.expires_at <= now {
                    view.status = SdkSessionState::Expired;
                }
            }
            // A sign-in that came back too late reads as the session expiring.
            SdkSessionStatus::Failed if session.error == Some(SignInFailure::Expired) => {
                view.status = SdkSessionState::Expired;
            }
            SdkSessionStatus::Failed => view.status = SdkSessionState::Failed,
            SdkSessionStatus::Complete => {
                view.status = SdkSessionState::Complete;
                if session.user_token.is_some() {
                    if let Some(sealed) = self.sdk_sessions.take_sdk_token(app, id, now).await? {
                        view.user_token = Some(
                            self.cipher
                                .open_secret(&sealed, &SdkSession::token_aad(id))
                                .map_err(|_| SdkSessionError::Sealing)?,
                        );
                    }
                }
                if let Some(user) = &session.user_id {
                    view.user = self.users.get_user(app, user).await?;
                }
            }
        }
        Ok(view)
    }

    // ----- Wallet sessions -----

    /// What a Wallet session token gives access to now: checked on every request, so a
    /// session ends as soon as it expires or its user is suspended or deprovisioned (the
    /// session is then deleted).
    pub async fn wallet_access(&self, session_token: &str) -> Result<WalletAccess, StoreError> {
        if session_token.is_empty() || session_token.len() > MAX_TOKEN_LEN {
            return Ok(WalletAccess::Unknown);
        }
        let id_hash = state_hash(session_token);
        let Some(session) = self.wallet_sessions.get_wallet_session(&id_hash).await? else {
            return Ok(WalletAccess::Unknown);
        };
        let app = session.app_id.clone();
        if session.expires_at <= self.clock.now() {
            self.wallet_sessions.delete_wallet_session(&id_hash, None).await?;
            return Ok(WalletAccess::Ended { app_id: app, reason: SessionEnd::Expired });
        }
        let user = self.users.get_user(&app, &session.user_id).await?;
        let reason = match user.as_ref().map(|u| u.status) {
            Some(UserStatus::Active) => None,
            Some(UserStatus::Suspended) => Some(SessionEnd::Suspended),
            Some(UserStatus::Deprovisioned) | None => Some(SessionEnd::Deprovisioned),
        };
        match (reason, user) {
            (None, Some(user)) => Ok(WalletAccess::Active { session: Box::new(session), user: Box::new(user) }),
            (reason, _) => {
                let reason = reason.unwrap_or(SessionEnd::Deprovisioned);
                let detail = match reason {
                    SessionEnd::Suspended => "Wallet session ended: the user is suspended",
                    _ => "Wallet session ended: the user is deprovisioned",
                };
                let audit = AuditEntry {
                    user_id: Some(session.user_id.clone()),
                    ..self.identity.audit(&app, "user.sign_out", "system", Some(detail.into()))
                };
                self.wallet_sessions.delete_wallet_session(&id_hash, Some(&audit)).await?;
                Ok(WalletAccess::Ended { app_id: app, reason })
            }
        }
    }

    /// The CSRF token of a Wallet session: a keyed hash of the session token, so it is tied to
    /// the session, unguessable without the cookie, and needs no storage.
    pub fn csrf_token(&self, session_token: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.hasher.hash(CSRF_PURPOSE, session_token.as_bytes()))
    }

    /// Whether `presented` is the session's CSRF token (compared in constant time).
    pub fn csrf_matches(&self, session_token: &str, presented: &str) -> bool {
        match URL_SAFE_NO_PAD.decode(presented.as_bytes()) {
            Ok(bytes) => self.hasher.verify(CSRF_PURPOSE, session_token.as_bytes(), &bytes),
            Err(_) => false,
        }
    }

    /// Ends a Wallet session and returns where to send the browser: the IdP's end-session
    /// endpoint with `post_logout_redirect_uri` (the bare sign-in page), the app in `state`,
    /// `client_id` and `id_token_hint`; or, when the IdP has none, straight to the sign-in page.
    pub async fn sign_out(&self, session: &WalletSession) -> Result<String, StoreError> {
        let app = &session.app_id;
        let audit = self.user_audit(app, "user.sign_out", &session.user_id, "signed out of the Wallet".into());
        self.wallet_sessions.delete_wallet_session(&session.id_hash, Some(&audit)).await?;
        let fallback = format!("{}?app_id={}", self.settings.logout_url(), app);
        let Some(config) = self.idps.get_idp(app).await? else { return Ok(fallback) };
        let Some(endpoint) = config.endpoints.end_session_endpoint.as_deref() else { return Ok(fallback) };
        let client = self.clients.get_oidc_client(app).await?.filter(|c| c.idp_id == config.id);
        let hint = session
            .id_token
            .as_ref()
            .and_then(|sealed| self.cipher.open_secret(sealed, &WalletSession::token_aad(&session.id_hash)).ok());
        Ok(end_session_url(
            endpoint,
            &self.settings.logout_url(),
            app,
            client.as_ref().map(|c| &c.client_id),
            hint.as_ref(),
        )
        .unwrap_or(fallback))
    }

    // ----- key rotation -----

    /// Re-seals every OIDC client secret sealed by an older key under the current key, in
    /// batches, each by compare-and-set (a secret set meanwhile is left alone).
    pub async fn reseal_client_secrets(&self, batch: u32) -> Result<ResealReport, ResealError> {
        let mut report = ResealReport::default();
        let mut after: Option<AppId> = None;
        loop {
            let values = self.clients.oidc_client_secrets(after.as_ref(), batch).await?;
            let Some((last, _)) = values.last() else { break };
            after = Some(last.clone());
            for (app, sealed) in &values {
                report.examined += 1;
                if !self.cipher.is_stale(sealed) {
                    continue;
                }
                let aad = OidcClient::secret_aad(app);
                let plain = self.cipher.open(sealed, &aad).map_err(|_| ResealError::Sealing)?;
                let fresh = self.cipher.seal(&plain, &aad).map_err(|_| ResealError::Sealing)?;
                if self.clients.replace_oidc_client_secret(app, sealed, &fresh).await? {
                    report.resealed += 1;
                }
            }
            if values.len() < batch as usize {
                break;
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_session_urls() {
        let app = AppId::parse("0f8fad5b-d9cb-469f-a165-70867728950e").unwrap();
        let client = OidcClientId::parse("client-1").unwrap();
        let url = end_session_url(
            "https://idp.example.com/logout?x=1",
            "https://vault.example.com/wallet/sign-in",
            &app,
            Some(&client),
            Some(&Secret::new("a.b.c")),
        )
        .unwrap();
        assert_eq!(
            url,
            "https://idp.example.com/logout?x=1&post_logout_redirect_uri=https%3A%2F%2Fvault.example.com%2Fwallet%2Fsign-in\
             &state=0f8fad5b-d9cb-469f-a165-70867728950e&client_id=client-1&id_token_hint=a.b.c"
        );
        assert_eq!(end_session_url("javascript:alert(1)", "x", &app, None, None), None);
        assert_eq!(end_session_url("not a url", "x", &app, None, None), None);
    }

    #[test]
    fn helpers() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert_eq!(sanitize_code("access_denied"), "access_denied");
        assert_eq!(sanitize_code("a b\n<c>"), "ab<c>");
        let settings = SignInSettings::new("https://v.example.com");
        assert_eq!(settings.redirect_uri(SignInPurpose::Sdk), "https://v.example.com/v1/auth/callback");
        assert_eq!(settings.redirect_uri(SignInPurpose::Wallet), "https://v.example.com/wallet/auth/callback");
        assert_eq!(settings.logout_url(), "https://v.example.com/wallet/sign-in");
    }
}
