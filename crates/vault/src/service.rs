//! Vault use cases: providers and policies for the operator; connecting, listing, revoking and
//! using grants for a user; importing and revoking for the operator; draining the revocation
//! outbox; and pruning old webhook event ids and audit rows. They reach the world only through
//! the ports they are built with.

use crate::grant::{Credential, Grant, GrantId, GrantStatus, TokenKind, TokenSet};
use crate::policy::{allows_handout, evaluate, Policy, PolicyDecision, PolicyLookup, TokenAccess};
use crate::ports::{
    ConnectState, ConnectStates, CredentialStore, GrantFilter, GrantStore, HandoutView, LifecycleLedger, Maintenance,
    OAuthClient, OAuthEndpoint, OAuthError, OutboxItem, PolicyStore, ProviderStore, RefreshLock, RefreshLockError,
    RevocationOutbox, RevokeScope, SaveGrantError, SealedValues,
};
use crate::provider::{is_valid_scope, preset, ProviderConfig, ProviderName};
use custody_identity::audit::{Actor, AuditEntry, AuditOutcome};
use custody_identity::cipher::{Cipher, CipherError};
use custody_identity::page::{Page, PageRequest};
use custody_identity::ports::{AuditLog, Clock, Random, StoreError};
use custody_identity::{AppId, Invalid, Secret, UnixTime, User, UserId};
use futures_util::future::{BoxFuture, FutureExt as _, Shared};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// How long a connect flow may take.
pub const CONNECT_STATE_TTL_SECS: i64 = 600;
/// `last_used_at` is written at most this often per grant.
pub const LAST_USED_GRANULARITY_SECS: i64 = 60;
/// Revocation attempts before an outbox item is given up (with an audit row).
pub const MAX_REVOCATION_ATTEMPTS: i32 = 12;

/// Settings of the vault use cases.
#[derive(Debug, Clone)]
pub struct VaultSettings {
    /// Refresh when the access token expires within this many seconds.
    pub refresh_window_secs: i64,
    /// The public base URL, for the connect start and callback URLs.
    pub public_url: String,
    /// The first retry delay of a failed provider revocation; it doubles per attempt, capped
    /// at one hour.
    pub outbox_retry_base_secs: i64,
    /// Whether a provider's `api_base_url` may be plain `http` on a loopback host (development
    /// and tests, like insecure issuers); otherwise it must be `https`.
    pub allow_insecure_api_base: bool,
}

// Errors: one enum per use case (or per family of use cases that fail in exactly the same
// ways), each mapped to HTTP answers once, in the server's `problem` module. Input the use case
// refuses is always `Invalid`, which names the field.

/// The text of every `Sealing` variant: a sealed value did not open (or a value did not seal).
const SEALING: &str = "a stored secret could not be opened";

/// Errors of [`VaultService::put_provider`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PutProviderError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{SEALING}")]
    Sealing,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Errors of [`VaultService::put_policy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PutPolicyError {
    #[error("provider `{0}` is not configured")]
    ProviderNotFound(ProviderName),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Errors of [`VaultService::start_connect`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartConnectError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("provider `{0}` is not configured")]
    ProviderNotFound(ProviderName),
    /// The policy does not let this user use the provider; the text says why.
    #[error("{0}")]
    PolicyDenied(String),
    #[error("{SEALING}")]
    Sealing,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Errors of [`VaultService::connect_redirect`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectRedirectError {
    #[error("the connect session is unknown or already used")]
    UnknownState,
    /// The connect flow was opened in another browser (RFC 6749 section 10.12).
    #[error("the connect session belongs to another browser")]
    BrowserMismatch,
    #[error("provider `{0}` is not configured")]
    ProviderNotFound(ProviderName),
    #[error("the provider failed: {0}")]
    Provider(String),
    #[error("{SEALING}")]
    Sealing,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Errors of [`VaultService::complete_connect`]. How the flow itself failed goes back to the
/// app's `return_url`; these are the cases with nowhere to send the browser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompleteConnectError {
    #[error("the connect session is unknown or already used")]
    UnknownState,
    /// This browser did not send back the cookie that binds the flow (RFC 6749 section 10.12).
    #[error("the connect session belongs to another browser")]
    BrowserMismatch,
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Errors of finding or revoking one grant: [`VaultService::user_grant`],
/// [`VaultService::revoke_user_grant`] and [`VaultService::revoke_grant`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FindGrantError {
    /// No such grant in the app, or (for a user) not the user's own.
    #[error("grant not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Errors of [`VaultService::import_grant`] (and of [`ImportGrant::validate`], as `Invalid`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportGrantError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("provider `{0}` is not configured")]
    ProviderNotFound(ProviderName),
    #[error("{SEALING}")]
    Sealing,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Errors of using a grant's access token: [`VaultService::hand_out`],
/// [`VaultService::proxy_force_refresh`] and the grant part of [`VaultService::proxy_lease`]
/// (the same rules, so the same failures).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantUseError {
    #[error("grant not found")]
    GrantNotFound,
    #[error("the grant has been revoked")]
    GrantRevoked,
    #[error("the grant needs the user to connect again")]
    ReauthRequired,
    /// The user may not use the provider; the text says why (it goes into the audit row too).
    #[error("{0}")]
    PolicyDenied(String),
    /// The provider's policy is `proxy_only`: its tokens never leave Custody.
    #[error("the policy for `{0}` allows its tokens to be used only through the proxy")]
    HandoutDisabled(ProviderName),
    /// A refresh failed at the provider (not `invalid_grant`, which is `ReauthRequired`).
    #[error("the provider failed: {0}")]
    Provider(String),
    #[error("{SEALING}")]
    Sealing,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<RefreshLockError> for GrantUseError {
    fn from(e: RefreshLockError) -> Self {
        match e {
            // Another refresh of the grant held the lock all along: a provider that does not
            // answer, not a storage failure.
            RefreshLockError::TimedOut => GrantUseError::Provider(
                "another refresh of this grant is still waiting for the provider; retry later".into(),
            ),
            RefreshLockError::Store(e) => e.into(),
        }
    }
}

/// Errors of [`VaultService::proxy_lease`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyLeaseError {
    #[error(transparent)]
    Grant(#[from] GrantUseError),
    #[error("provider `{0}` is not configured")]
    ProviderNotFound(ProviderName),
    /// The provider has no `api_base_url`, so there is nowhere to proxy to.
    #[error("provider `{0}` has no api_base_url; set one on the provider to use the proxy")]
    NoApiBaseUrl(ProviderName),
}

impl From<StoreError> for ProxyLeaseError {
    fn from(e: StoreError) -> Self {
        GrantUseError::Store(e).into()
    }
}

/// Errors of [`VaultService::reseal_all`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResealError {
    #[error("{SEALING}")]
    Sealing,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A sealed value that does not open is the same failure for every use case that has one.
macro_rules! sealing_from_cipher {
    ($($error:ident),*) => {$(
        impl From<CipherError> for $error {
            fn from(_: CipherError) -> Self {
                $error::Sealing
            }
        }
    )*};
}
sealing_from_cipher!(
    PutProviderError,
    StartConnectError,
    ConnectRedirectError,
    ImportGrantError,
    GrantUseError,
    ResealError
);

/// An operator's provider settings.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderInput {
    pub preset: Option<String>,
    pub authorization_url: Option<String>,
    pub token_url: Option<String>,
    /// `Some(None)` clears it.
    pub revocation_url: Option<Option<String>>,
    pub client_id: String,
    /// Required when the provider is new; kept when omitted on an update.
    pub client_secret: Option<Secret>,
    pub scopes: Option<Vec<String>>,
    /// `None` takes the preset's (or none); `Some(None)` clears it.
    pub api_base_url: Option<Option<String>>,
}

impl fmt::Debug for ProviderInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderInput")
            .field("preset", &self.preset)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

pub use crate::ports::GrantSelector;

/// An access token handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handout {
    pub access_token: Secret,
    pub token_type: String,
    pub expires_at: Option<UnixTime>,
    pub grant_id: GrantId,
    pub provider: ProviderName,
    pub scopes: Vec<String>,
}

/// What a grant's token is being used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenUse {
    Handout,
    Proxy,
}

impl TokenUse {
    fn audit_action(self) -> &'static str {
        match self {
            TokenUse::Handout => "token.handout",
            TokenUse::Proxy => "proxy.request",
        }
    }
}

/// A grant that passed every rule, with its access token opened.
struct UsableGrant {
    access_token: Secret,
    token_type: String,
    expires_at: Option<UnixTime>,
    credential_version: i64,
    touch: Option<UnixTime>,
    grant: Grant,
}

impl UsableGrant {
    fn into_handout(self) -> Handout {
        Handout {
            access_token: self.access_token,
            token_type: self.token_type,
            expires_at: self.expires_at,
            grant_id: self.grant.id,
            provider: self.grant.provider,
            scopes: self.grant.scopes,
        }
    }
}

/// A grant the proxy may use for one request: its access token (never shown to the caller),
/// and where the provider's API lives.
pub struct ProxyLease {
    pub api_base_url: String,
    pub access_token: Secret,
    pub grant: Grant,
    credential_version: i64,
    touch: Option<UnixTime>,
    actor: String,
}

impl fmt::Debug for ProxyLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyLease")
            .field("api_base_url", &self.api_base_url)
            .field("grant", &self.grant.id)
            .finish_non_exhaustive()
    }
}

/// What the audit row of a proxied request records: never headers, bodies or the query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRecord {
    pub method: String,
    pub host: String,
    /// The upstream path, without the query.
    pub path: String,
    /// `None` when the provider never answered (connection failure, timeout).
    pub upstream_status: Option<u16>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl ProxyRecord {
    fn detail(&self) -> String {
        let status = self.upstream_status.map_or_else(|| "no answer".to_owned(), |s| s.to_string());
        let mut path: String = self.path.chars().take(512).collect();
        if path.len() < self.path.len() {
            path.push('…');
        }
        format!(
            "{} {}{} -> {}; {} bytes sent, {} bytes received",
            self.method, self.host, path, status, self.bytes_sent, self.bytes_received
        )
    }
}

/// A started connect flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectSession {
    pub connect_url: String,
    pub expires_at: UnixTime,
}

/// A grant to import (operator), tokens in the clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportGrant {
    pub provider: ProviderName,
    pub tokens: TokenSet,
    pub account: Option<String>,
}

/// The longest token accepted for import, in bytes.
pub const MAX_IMPORTED_TOKEN_BYTES: usize = 16 * 1024;
/// The longest `expires_in` accepted for import: ten years.
pub const MAX_IMPORTED_EXPIRES_IN: i64 = 10 * 365 * 86_400;

impl ImportGrant {
    /// Checks the imported values; the caller runs this before creating anything (such as the
    /// user the grant is for), so a bad import changes nothing.
    pub fn validate(&self) -> Result<(), Invalid> {
        let bad = |field, reason: &str| Err(Invalid::new(field, reason));
        let token_ok = |t: &Secret| !t.expose().is_empty() && t.expose().len() <= MAX_IMPORTED_TOKEN_BYTES;
        if !token_ok(&self.tokens.access_token) {
            return bad("access_token", "must be 1 to 16384 characters");
        }
        if self.tokens.refresh_token.as_ref().is_some_and(|t| !token_ok(t)) {
            return bad("refresh_token", "must be 1 to 16384 characters");
        }
        if self.tokens.expires_in.is_some_and(|e| !(0..=MAX_IMPORTED_EXPIRES_IN).contains(&e)) {
            return bad("expires_in", "must be between 0 and 315360000 seconds");
        }
        if self.account.as_ref().is_some_and(|a| a.len() > 320) {
            return bad("account", "at most 320 characters");
        }
        // PostgreSQL cannot store NUL and SQLite can: refused here, the same on both.
        let nul = |t: &str| t.contains('\0');
        for (field, value) in [
            ("access_token", Some(self.tokens.access_token.expose())),
            ("refresh_token", self.tokens.refresh_token.as_ref().map(Secret::expose)),
            ("token_type", Some(self.tokens.token_type.as_str())),
            ("account", self.account.as_deref()),
        ] {
            if value.is_some_and(nul) {
                return bad(field, "must not contain a NUL character");
            }
        }
        if let Some(scopes) = &self.tokens.scopes {
            check_scopes("scopes", scopes)?;
        }
        Ok(())
    }
}

/// One refresh attempt of a grant, awaited by every caller that needs the grant refreshed while
/// it runs.
type RefreshAttempt = Shared<BoxFuture<'static, Result<Credential, GrantUseError>>>;

/// The refresh attempts running in this process, by grant, each with a serial number so an
/// attempt removes its own entry and never a newer one.
#[derive(Default)]
struct RefreshFlights {
    running: HashMap<GrantId, (u64, RefreshAttempt)>,
    serial: u64,
}

/// The ports the vault use cases run on: the storage roles they use, and the outside world.
#[derive(Clone)]
pub struct VaultPorts {
    pub providers: Arc<dyn ProviderStore>,
    pub policies: Arc<dyn PolicyStore>,
    pub grants: Arc<dyn GrantStore>,
    pub credentials: Arc<dyn CredentialStore>,
    pub lifecycle: Arc<dyn LifecycleLedger>,
    pub connect_states: Arc<dyn ConnectStates>,
    pub outbox: Arc<dyn RevocationOutbox>,
    pub sealed: Arc<dyn SealedValues>,
    /// Retention: pruning webhook event ids and audit rows.
    pub maintenance: Arc<dyn Maintenance>,
    pub audit: Arc<dyn AuditLog>,
    pub locks: Arc<dyn RefreshLock>,
    pub oauth: Arc<dyn OAuthClient>,
    pub cipher: Arc<dyn Cipher>,
    pub clock: Arc<dyn Clock>,
    pub random: Arc<dyn Random>,
}

impl fmt::Debug for VaultPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultPorts").finish_non_exhaustive()
    }
}

/// The vault use cases over their ports.
#[derive(Clone)]
pub struct VaultService {
    providers: Arc<dyn ProviderStore>,
    policies: Arc<dyn PolicyStore>,
    grants: Arc<dyn GrantStore>,
    credentials: Arc<dyn CredentialStore>,
    lifecycle: Arc<dyn LifecycleLedger>,
    connect_states: Arc<dyn ConnectStates>,
    outbox: Arc<dyn RevocationOutbox>,
    sealed: Arc<dyn SealedValues>,
    maintenance: Arc<dyn Maintenance>,
    audit_log: Arc<dyn AuditLog>,
    locks: Arc<dyn RefreshLock>,
    oauth: Arc<dyn OAuthClient>,
    cipher: Arc<dyn Cipher>,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    settings: VaultSettings,
    flights: Arc<Mutex<RefreshFlights>>,
}

impl fmt::Debug for VaultService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultService").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// Checks that a URL is absolute http(s) without credentials or fragment.
fn check_url(field: &'static str, value: &str) -> Result<(), Invalid> {
    let bad = || Invalid::new(field, "expected an absolute http(s) URL");
    let url = url::Url::parse(value).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.fragment().is_some()
    {
        return Err(bad());
    }
    Ok(())
}

/// Checks a provider's API base URL: absolute `https` (plain `http` only on a loopback host when
/// `allow_insecure`), no credentials, query or fragment. Returns it without a trailing `/`, so
/// the proxy can append `/{path}`.
fn check_api_base_url(value: &str, allow_insecure: bool) -> Result<String, Invalid> {
    let bad = |why: &str| Invalid::new("api_base_url", why);
    let url = url::Url::parse(value).map_err(|_| bad("expected an absolute https URL"))?;
    let host = url.host().ok_or_else(|| bad("expected an absolute https URL"))?;
    let loopback = match &host {
        url::Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    };
    match url.scheme() {
        "https" => {}
        "http" if allow_insecure && loopback => {}
        "http" => return Err(bad("must use https (plain http only on loopback when insecure issuers are allowed)")),
        _ => return Err(bad("expected an absolute https URL")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry a user name or password"));
    }
    if url.query().is_some() || url.fragment().is_some() || value.contains('?') || value.contains('#') {
        return Err(bad("must not carry a query or a fragment"));
    }
    if value.len() > 2048 {
        return Err(bad("at most 2048 characters"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn check_scopes(field: &'static str, scopes: &[String]) -> Result<(), Invalid> {
    if scopes.len() > 100 || !scopes.iter().all(|s| is_valid_scope(s)) {
        return Err(Invalid::new(
            field,
            "each scope is 1 to 256 printable characters without spaces, quotes or backslashes",
        ));
    }
    Ok(())
}

impl VaultService {
    pub fn new(ports: VaultPorts, settings: VaultSettings) -> Self {
        let VaultPorts {
            providers,
            policies,
            grants,
            credentials,
            lifecycle,
            connect_states,
            outbox,
            sealed,
            maintenance,
            audit,
            locks,
            oauth,
            cipher,
            clock,
            random,
        } = ports;
        Self {
            providers,
            policies,
            grants,
            credentials,
            lifecycle,
            connect_states,
            outbox,
            sealed,
            maintenance,
            audit_log: audit,
            locks,
            oauth,
            cipher,
            clock,
            random,
            settings,
            flights: Arc::default(),
        }
    }

    fn audit(&self, app: &AppId, action: &str, actor: String) -> AuditEntry {
        AuditEntry::new(self.random.ordered_uuid(), app.clone(), self.clock.now(), action, &actor)
    }

    fn grant_audit(&self, grant: &Grant, action: &str, actor: String) -> AuditEntry {
        AuditEntry {
            user_id: Some(grant.user_id.clone()),
            grant_id: Some(grant.id.to_string()),
            provider: Some(grant.provider.to_string()),
            ..self.audit(&grant.app_id, action, actor)
        }
    }

    fn new_grant_id(&self) -> GrantId {
        GrantId::parse(&self.random.uuid()).unwrap_or_else(|_| panic!("the Random port returned a malformed UUID"))
    }

    fn random_token(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.random.bytes(32))
    }

    // ----- providers and policies (operator) -----

    /// Creates or updates a provider. A `preset` fills the endpoints the body leaves out.
    pub async fn put_provider(
        &self,
        app: &AppId,
        name: &ProviderName,
        input: ProviderInput,
        actor: &Actor,
    ) -> Result<ProviderConfig, PutProviderError> {
        let preset = match &input.preset {
            None => None,
            Some(p) => Some(preset(p).ok_or_else(|| {
                Invalid::new("preset", format!("unknown preset `{p}` (google, github, slack, microsoft)"))
            })?),
        };
        let existing = self.providers.get_provider(app, name).await?;
        let authorization_url = input
            .authorization_url
            .or_else(|| preset.map(|p| p.authorization_url.to_owned()))
            .ok_or_else(|| Invalid::new("authorization_url", "required (or name a preset)"))?;
        let token_url = input
            .token_url
            .or_else(|| preset.map(|p| p.token_url.to_owned()))
            .ok_or_else(|| Invalid::new("token_url", "required (or name a preset)"))?;
        let revocation_url = match input.revocation_url {
            Some(explicit) => explicit,
            None => preset.and_then(|p| p.revocation_url.map(str::to_owned)),
        };
        check_url("authorization_url", &authorization_url)?;
        check_url("token_url", &token_url)?;
        if let Some(r) = &revocation_url {
            check_url("revocation_url", r)?;
        }
        if input.client_id.is_empty() || input.client_id.len() > 512 || input.client_id.contains('\0') {
            return Err(Invalid::new("client_id", "must be 1 to 512 characters, without NUL").into());
        }
        let scopes = input.scopes.unwrap_or_else(|| {
            preset.map(|p| p.default_scopes.iter().map(|s| s.to_string()).collect()).unwrap_or_default()
        });
        check_scopes("scopes", &scopes)?;
        let api_base_url = match input.api_base_url {
            Some(explicit) => explicit,
            None => preset.map(|p| p.api_base_url.to_owned()),
        }
        .map(|u| check_api_base_url(&u, self.settings.allow_insecure_api_base))
        .transpose()?;
        let aad = ProviderConfig::secret_aad(app, name);
        let client_secret = match (input.client_secret, &existing) {
            (Some(secret), _) => {
                if secret.expose().is_empty() || secret.expose().len() > 4096 {
                    return Err(Invalid::new("client_secret", "must be 1 to 4096 characters").into());
                }
                self.cipher.seal_secret(&secret, &aad)?
            }
            (None, Some(existing)) => existing.client_secret.clone(),
            (None, None) => return Err(Invalid::new("client_secret", "required").into()),
        };
        let now = self.clock.now();
        let config = ProviderConfig {
            app_id: app.clone(),
            name: name.clone(),
            authorization_url,
            token_url,
            revocation_url,
            client_id: input.client_id,
            client_secret,
            scopes,
            api_base_url,
            created_at: existing.as_ref().map(|e| e.created_at).unwrap_or(now),
            updated_at: now,
        };
        let mut audit =
            self.audit(app, if existing.is_some() { "provider.update" } else { "provider.create" }, actor.to_string());
        audit.provider = Some(name.to_string());
        self.providers.put_provider(&config, &audit).await?;
        Ok(config)
    }

    /// Deletes a provider and revokes its grants. `false` when there was none.
    pub async fn delete_provider(&self, app: &AppId, name: &ProviderName, actor: &Actor) -> Result<bool, StoreError> {
        let mut audit = self.audit(app, "provider.delete", actor.to_string());
        audit.provider = Some(name.to_string());
        audit.detail = Some("provider deleted; its grants are revoked".into());
        let revoked = self.providers.delete_provider(app, name, self.clock.now(), &audit).await?;
        Ok(revoked.is_some())
    }

    /// Sets a provider's policy; the provider must exist.
    pub async fn put_policy(
        &self,
        app: &AppId,
        provider: &ProviderName,
        allow_groups: Vec<String>,
        allow_roles: Vec<String>,
        token_access: TokenAccess,
        actor: &Actor,
    ) -> Result<Policy, PutPolicyError> {
        if self.providers.get_provider(app, provider).await?.is_none() {
            return Err(PutPolicyError::ProviderNotFound(provider.clone()));
        }
        let clean = |field: &'static str, values: Vec<String>| -> Result<_, Invalid> {
            if values.len() > 256 || values.iter().any(|v| v.is_empty() || v.len() > 255) {
                return Err(Invalid::new(field, "at most 256 names of 1 to 255 characters"));
            }
            Ok(values.into_iter().collect())
        };
        let policy = Policy {
            app_id: app.clone(),
            provider: provider.clone(),
            allow_groups: clean("allow_groups", allow_groups)?,
            allow_roles: clean("allow_roles", allow_roles)?,
            token_access,
            updated_at: self.clock.now(),
        };
        let mut audit = self.audit(app, "policy.put", actor.to_string());
        audit.provider = Some(provider.to_string());
        self.policies.put_policy(&policy, &audit).await?;
        Ok(policy)
    }

    /// Deletes a provider's policy. `false` when there was none.
    pub async fn delete_policy(&self, app: &AppId, provider: &ProviderName, actor: &Actor) -> Result<bool, StoreError> {
        let mut audit = self.audit(app, "policy.delete", actor.to_string());
        audit.provider = Some(provider.to_string());
        self.policies.delete_policy(app, provider, &audit).await
    }

    async fn check_policy(&self, user: &User, provider: &ProviderName) -> Result<(), StartConnectError> {
        let lookup = self.policies.get_policy(&user.app_id, provider).await?;
        match evaluate(&lookup, user) {
            PolicyDecision::Allow => Ok(()),
            PolicyDecision::Deny(reason) => Err(StartConnectError::PolicyDenied(reason)),
        }
    }

    fn endpoint<'a>(provider: &'a ProviderConfig, secret: &'a Secret) -> OAuthEndpoint<'a> {
        OAuthEndpoint {
            authorization_url: &provider.authorization_url,
            token_url: &provider.token_url,
            client_id: &provider.client_id,
            client_secret: secret,
        }
    }

    fn open_client_secret(&self, provider: &ProviderConfig) -> Result<Secret, CipherError> {
        self.cipher.open_secret(&provider.client_secret, &ProviderConfig::secret_aad(&provider.app_id, &provider.name))
    }

    // ----- connect flow -----

    fn callback_url(&self) -> String {
        format!("{}/v1/connect/callback", self.settings.public_url)
    }

    /// Starts a connect flow for `user`: checks the policy, stores a single-use state with a
    /// sealed PKCE verifier, and returns the URL that sends the browser to the provider.
    pub async fn start_connect(
        &self,
        user: &User,
        provider: &ProviderName,
        return_url: &str,
        scopes: Option<Vec<String>>,
    ) -> Result<ConnectSession, StartConnectError> {
        check_url("return_url", return_url)?;
        let config = self
            .providers
            .get_provider(&user.app_id, provider)
            .await?
            .ok_or_else(|| StartConnectError::ProviderNotFound(provider.clone()))?;
        self.check_policy(user, provider).await?;
        let scopes = scopes.unwrap_or_else(|| config.scopes.clone());
        check_scopes("scopes", &scopes)?;
        let state = self.random_token();
        let state_hash = state_hash(&state);
        let verifier = self.random_token();
        let now = self.clock.now();
        let record = ConnectState {
            state_hash: state_hash.clone(),
            app_id: user.app_id.clone(),
            user_id: user.id.clone(),
            provider: provider.clone(),
            return_url: return_url.to_owned(),
            scopes,
            pkce_verifier: self.cipher.seal(verifier.as_bytes(), &ConnectState::verifier_aad(&state_hash))?,
            created_at: now,
            expires_at: now.plus_seconds(CONNECT_STATE_TTL_SECS),
            browser_hash: None,
        };
        self.connect_states.create_connect_state(&record).await?;
        Ok(ConnectSession {
            connect_url: format!("{}/v1/connect/start?state={state}", self.settings.public_url),
            expires_at: record.expires_at,
        })
    }

    /// Opening `connect_url`: binds the pending flow to this browser and returns the provider
    /// authorization URL, with the value of the binding cookie to set when this call bound it.
    ///
    /// The first browser to open the URL binds the flow (a random value whose hash is stored
    /// with the state; the browser keeps the value in a cookie). Opening it again in that
    /// browser (`browser` is its cookie) works; in any other browser it is refused, so a connect
    /// URL an attacker opened cannot be finished by a victim, nor the other way round.
    pub async fn connect_redirect(
        &self,
        state: &str,
        browser: Option<&str>,
    ) -> Result<(String, Option<Secret>), ConnectRedirectError> {
        let hash = state_hash(state);
        let record = self.connect_states.peek_connect_state(&hash).await?.ok_or(ConnectRedirectError::UnknownState)?;
        if record.expires_at <= self.clock.now() {
            return Err(ConnectRedirectError::UnknownState);
        }
        let binding = match &record.browser_hash {
            None => {
                let value = self.random_token();
                if !self.connect_states.bind_connect_state(&hash, &state_hash(&value)).await? {
                    // Another browser bound it first (or it was just consumed).
                    return Err(ConnectRedirectError::BrowserMismatch);
                }
                Some(Secret::new(value))
            }
            Some(bound) if browser.is_some_and(|b| hashes_equal(&state_hash(b), bound)) => None,
            Some(_) => return Err(ConnectRedirectError::BrowserMismatch),
        };
        let provider = self
            .providers
            .get_provider(&record.app_id, &record.provider)
            .await?
            .ok_or_else(|| ConnectRedirectError::ProviderNotFound(record.provider.clone()))?;
        let secret = self.open_client_secret(&provider)?;
        let verifier = self.cipher.open(&record.pkce_verifier, &ConnectState::verifier_aad(&record.state_hash))?;
        let verifier = String::from_utf8(verifier).map_err(|_| ConnectRedirectError::Sealing)?;
        let url = self
            .oauth
            .authorization_url(
                &Self::endpoint(&provider, &secret),
                &self.callback_url(),
                &record.scopes,
                state,
                &verifier,
            )
            .map_err(|e| ConnectRedirectError::Provider(e.to_string()))?;
        Ok((url, binding))
    }

    /// Completes a connect flow at the callback. Returns the URL to send the browser to:
    /// `return_url` with `grant_id` and `status=connected`, or `status=error&error=...`.
    /// `Err` when the state is unknown (there is no return URL to go back to), or when `browser`
    /// (the binding cookie) is missing or not the one of the browser that opened the flow: then
    /// nothing is consumed and no grant is stored.
    pub async fn complete_connect(
        &self,
        state: &str,
        browser: Option<&str>,
        code: Option<&str>,
        provider_error: Option<&str>,
    ) -> Result<String, CompleteConnectError> {
        let hash = state_hash(state);
        let pending = self.connect_states.peek_connect_state(&hash).await?.ok_or(CompleteConnectError::UnknownState)?;
        let bound_here = |record: &ConnectState| matches!((&record.browser_hash, browser), (Some(bound), Some(b)) if hashes_equal(&state_hash(b), bound));
        if !bound_here(&pending) {
            return Err(CompleteConnectError::BrowserMismatch);
        }
        let record =
            self.connect_states.consume_connect_state(&hash).await?.ok_or(CompleteConnectError::UnknownState)?;
        let back = |pairs: &[(&str, &str)]| {
            // Checked by `start_connect` when it was stored.
            let mut url = url::Url::parse(&record.return_url)
                .map_err(|_| Invalid::new("return_url", "expected an absolute http(s) URL"))?;
            url.query_pairs_mut().extend_pairs(pairs);
            Ok::<String, CompleteConnectError>(url.into())
        };
        let mut audit = AuditEntry {
            user_id: Some(record.user_id.clone()),
            provider: Some(record.provider.to_string()),
            ..self.audit(&record.app_id, "grant.connect", format!("user:{}", record.user_id))
        };
        let outcome = self.finish_connect(&record, code, provider_error).await;
        match outcome {
            Ok(grant) => back(&[("grant_id", grant.id.as_str()), ("status", "connected")]),
            Err(error) => {
                audit.outcome = AuditOutcome::Failure;
                audit.detail = Some(format!("connect failed: {error}"));
                // The failure is reported to the browser either way; the audit row is best effort.
                let _ = self.audit_log.append_audit(&audit).await;
                back(&[("status", "error"), ("error", error.as_str())])
            }
        }
    }

    async fn finish_connect(
        &self,
        record: &ConnectState,
        code: Option<&str>,
        provider_error: Option<&str>,
    ) -> Result<Grant, ConnectFailure> {
        if record.expires_at <= self.clock.now() {
            return Err(ConnectFailure::Expired);
        }
        if let Some(e) = provider_error {
            return Err(if e == "access_denied" { ConnectFailure::AccessDenied } else { ConnectFailure::Provider });
        }
        let code = code.filter(|c| !c.is_empty()).ok_or(ConnectFailure::Provider)?;
        let provider = self
            .providers
            .get_provider(&record.app_id, &record.provider)
            .await
            .map_err(|_| ConnectFailure::Server)?
            .ok_or(ConnectFailure::Provider)?;
        let secret = self.open_client_secret(&provider).map_err(|_| ConnectFailure::Server)?;
        let verifier = self
            .cipher
            .open(&record.pkce_verifier, &ConnectState::verifier_aad(&record.state_hash))
            .map_err(|_| ConnectFailure::Server)?;
        let verifier = String::from_utf8(verifier).map_err(|_| ConnectFailure::Server)?;
        let tokens = self
            .oauth
            .exchange_code(&Self::endpoint(&provider, &secret), code, &self.callback_url(), &verifier)
            .await
            .map_err(|_| ConnectFailure::Provider)?;
        let actor = format!("user:{}", record.user_id);
        self.save_tokens(
            &record.app_id,
            &record.user_id,
            &record.provider,
            tokens,
            None,
            Some(record.scopes.clone()),
            "grant.connect",
            actor,
        )
        .await
        .map_err(|_| ConnectFailure::Server)
    }

    /// Seals tokens and stores them as the user's active grant for the provider, creating it or
    /// updating the existing one.
    #[allow(clippy::too_many_arguments)]
    async fn save_tokens(
        &self,
        app: &AppId,
        user: &UserId,
        provider: &ProviderName,
        tokens: TokenSet,
        account: Option<String>,
        requested_scopes: Option<Vec<String>>,
        action: &str,
        actor: String,
    ) -> Result<Grant, ImportGrantError> {
        for _ in 0..4 {
            let now = self.clock.now();
            let existing =
                self.grants.current_grant(app, user, provider).await?.filter(|g| g.status == GrantStatus::Active);
            let id = existing.as_ref().map(|g| g.id.clone()).unwrap_or_else(|| self.new_grant_id());
            let scopes = tokens.scopes.clone().or_else(|| requested_scopes.clone()).unwrap_or_default();
            let grant = Grant {
                id: id.clone(),
                app_id: app.clone(),
                user_id: user.clone(),
                provider: provider.clone(),
                status: GrantStatus::Active,
                scopes,
                account: account.clone().or_else(|| existing.as_ref().and_then(|g| g.account.clone())),
                created_at: existing.as_ref().map(|g| g.created_at).unwrap_or(now),
                updated_at: now,
                last_used_at: existing.as_ref().and_then(|g| g.last_used_at),
                revoked_at: None,
            };
            let credential = self.seal_credential(&id, &tokens, now, 1)?;
            let audit = self.grant_audit(&grant, action, actor.clone());
            match self.grants.save_grant(&grant, &credential, existing.is_none(), &audit).await {
                Ok(()) => return Ok(grant),
                Err(SaveGrantError::Conflict) => continue,
                Err(SaveGrantError::Store(e)) => return Err(e.into()),
            }
        }
        Err(StoreError::Unavailable("the grant kept changing concurrently".into()).into())
    }

    fn seal_credential(
        &self,
        grant: &GrantId,
        tokens: &TokenSet,
        now: UnixTime,
        version: i64,
    ) -> Result<Credential, CipherError> {
        Ok(Credential {
            grant_id: grant.clone(),
            access_token: self.cipher.seal_secret(&tokens.access_token, &Credential::aad(grant, TokenKind::Access))?,
            refresh_token: match &tokens.refresh_token {
                Some(rt) => Some(self.cipher.seal_secret(rt, &Credential::aad(grant, TokenKind::Refresh))?),
                None => None,
            },
            token_type: if tokens.token_type.is_empty() { "Bearer".into() } else { tokens.token_type.clone() },
            expires_at: tokens.expires_in.map(|s| now.plus_seconds(s)),
            version,
        })
    }

    // ----- grants for the user -----

    /// The user's grants, newest first.
    pub async fn user_grants(&self, user: &User, page: &PageRequest) -> Result<Page<Grant>, StoreError> {
        let filter = GrantFilter { user_id: Some(user.id.clone()), ..GrantFilter::default() };
        self.grants.list_grants(&user.app_id, &filter, page).await
    }

    /// The user's own grant, or `GrantNotFound` (also for another user's grant).
    pub async fn user_grant(&self, user: &User, id: &GrantId) -> Result<Grant, FindGrantError> {
        self.grants.get_grant(&user.app_id, id).await?.filter(|g| g.user_id == user.id).ok_or(FindGrantError::NotFound)
    }

    /// Revokes the user's own grant.
    pub async fn revoke_user_grant(&self, user: &User, id: &GrantId) -> Result<Grant, FindGrantError> {
        let grant = self.user_grant(user, id).await?;
        self.revoke(grant, format!("user:{}", user.id), None).await
    }

    /// Revokes a grant of the app (operator).
    pub async fn revoke_grant(
        &self,
        app: &AppId,
        id: &GrantId,
        reason: Option<String>,
        actor: &Actor,
    ) -> Result<Grant, FindGrantError> {
        let grant = self.grants.get_grant(app, id).await?.ok_or(FindGrantError::NotFound)?;
        self.revoke(grant, actor.to_string(), reason).await
    }

    async fn revoke(&self, grant: Grant, actor: String, reason: Option<String>) -> Result<Grant, FindGrantError> {
        if grant.status == GrantStatus::Revoked {
            return Ok(grant);
        }
        let mut audit = self.grant_audit(&grant, "grant.revoke", actor);
        audit.detail = reason;
        let revoked = self
            .grants
            .revoke_grants(&grant.app_id, &RevokeScope::Grant(grant.id.clone()), self.clock.now(), &audit)
            .await?;
        // Revoked concurrently by someone else: read the final state.
        match revoked.into_iter().next() {
            Some(g) => Ok(g),
            None => self.grants.get_grant(&grant.app_id, &grant.id).await?.ok_or(FindGrantError::NotFound),
        }
    }

    /// Deprovisions a user (operator or IdP): status `deprovisioned`, every grant revoked and
    /// every stored token deleted in one transaction; provider revocations follow through the
    /// outbox. `None` when the app has no such user.
    pub async fn deprovision_user(
        &self,
        app: &AppId,
        user: &UserId,
        actor: &str,
    ) -> Result<Option<(User, Vec<Grant>)>, StoreError> {
        let mut audit = self.audit(app, "user.deprovision", actor.to_owned());
        audit.user_id = Some(user.clone());
        self.lifecycle.deprovision_user(app, user, self.clock.now(), &audit).await
    }

    /// Imports tokens obtained elsewhere as the user's grant (operator).
    pub async fn import_grant(
        &self,
        app: &AppId,
        user: &UserId,
        import: ImportGrant,
        actor: &Actor,
    ) -> Result<Grant, ImportGrantError> {
        import.validate()?;
        if self.providers.get_provider(app, &import.provider).await?.is_none() {
            return Err(ImportGrantError::ProviderNotFound(import.provider.clone()));
        }
        self.save_tokens(
            app,
            user,
            &import.provider,
            import.tokens,
            import.account,
            None,
            "grant.import",
            actor.to_string(),
        )
        .await
    }

    /// Operator's grant listing.
    pub async fn list_grants(
        &self,
        app: &AppId,
        filter: &GrantFilter,
        page: &PageRequest,
    ) -> Result<Page<Grant>, StoreError> {
        self.grants.list_grants(app, filter, page).await
    }

    // ----- hand-out -----

    /// Hands out an access token of the user's grant: grant found (the caller's own), policy
    /// (which must allow hand-out, not be `proxy_only`), refresh when it expires within the
    /// window, audit row, answer.
    pub async fn hand_out(&self, user: &User, selector: &GrantSelector) -> Result<Handout, GrantUseError> {
        let usable = self.usable_grant(user, selector, TokenUse::Handout).await?;
        self.record_and_answer(user, usable).await
    }

    /// [`VaultService::hand_out`] for a grant the caller already read (with its policy and
    /// credential, as [`CredentialStore::handout_view`] reads them; `None` when the user has no
    /// such grant): the one-read hand-out ([`crate::handout`]) reads it together with the key
    /// and the user.
    pub async fn hand_out_viewed(&self, user: &User, view: Option<HandoutView>) -> Result<Handout, GrantUseError> {
        let usable = self.usable_view(user, view, TokenUse::Handout).await?;
        self.record_and_answer(user, usable).await
    }

    /// The hand-out's audit row (durable before the answer), then the answer.
    async fn record_and_answer(&self, user: &User, usable: UsableGrant) -> Result<Handout, GrantUseError> {
        let audit = self.grant_audit(&usable.grant, "token.handout", format!("user:{}", user.id));
        self.credentials.record_handout(&usable.grant.id, usable.touch, &audit).await?;
        Ok(usable.into_handout())
    }

    /// The proxy's side of hand-out: the same user, grant, policy and refresh rules as
    /// [`VaultService::hand_out`] (a `proxy_only` policy is fine here), plus the provider's API
    /// base URL. Nothing is recorded yet: the proxy calls [`VaultService::record_proxy`] with the
    /// upstream outcome, which writes the one audit row of the request.
    pub async fn proxy_lease(&self, user: &User, selector: &GrantSelector) -> Result<ProxyLease, ProxyLeaseError> {
        let usable = self.usable_grant(user, selector, TokenUse::Proxy).await?;
        let provider = self
            .providers
            .get_provider(&user.app_id, &usable.grant.provider)
            .await?
            .ok_or_else(|| ProxyLeaseError::ProviderNotFound(usable.grant.provider.clone()))?;
        let api_base_url =
            provider.api_base_url.ok_or_else(|| ProxyLeaseError::NoApiBaseUrl(usable.grant.provider.clone()))?;
        Ok(ProxyLease {
            api_base_url,
            access_token: usable.access_token,
            credential_version: usable.credential_version,
            touch: usable.touch,
            grant: usable.grant,
            actor: format!("user:{}", user.id),
        })
    }

    /// After the provider answered 401 to a proxied request: refreshes the grant's token once,
    /// even if it does not look expired (unless someone refreshed it meanwhile), and returns the
    /// new access token. `None` when the grant has no refresh token (the 401 then stands).
    pub async fn proxy_force_refresh(&self, lease: &mut ProxyLease) -> Result<Option<Secret>, GrantUseError> {
        let seen = self.credentials.load_credential(&lease.grant.id).await?.ok_or(GrantUseError::ReauthRequired)?;
        if seen.refresh_token.is_none() && seen.version == lease.credential_version {
            return Ok(None);
        }
        let fresh = if seen.version != lease.credential_version {
            seen
        } else {
            let guard = self.locks.lock(&lease.grant.id).await?;
            let result = self.refresh_locked(&lease.grant, seen, true).await;
            guard.release().await;
            result?
        };
        let token =
            self.cipher.open_secret(&fresh.access_token, &Credential::aad(&lease.grant.id, TokenKind::Access))?;
        lease.credential_version = fresh.version;
        lease.access_token = token.clone();
        Ok(Some(token))
    }

    /// Writes the `proxy.request` audit row of a proxied request (and touches `last_used_at`).
    pub async fn record_proxy(&self, lease: &ProxyLease, record: &ProxyRecord) -> Result<(), StoreError> {
        let mut audit = self.grant_audit(&lease.grant, "proxy.request", lease.actor.clone());
        audit.detail = Some(record.detail());
        if record.upstream_status.is_none() {
            audit.outcome = AuditOutcome::Failure;
        }
        self.credentials.record_handout(&lease.grant.id, lease.touch, &audit).await
    }

    /// The rules shared by hand-out and the proxy: the user active, the grant the user's own and
    /// active, the policy allowing the user (and, for hand-out, allowing the token to leave),
    /// the token refreshed when it expires within the window, and opened.
    async fn usable_grant(
        &self,
        user: &User,
        selector: &GrantSelector,
        purpose: TokenUse,
    ) -> Result<UsableGrant, GrantUseError> {
        user.ensure_active().map_err(|e| GrantUseError::PolicyDenied(e.to_string()))?;
        // One read for the grant, its policy and its credential.
        let view = self.credentials.handout_view(&user.app_id, &user.id, selector).await?;
        self.usable_view(user, view, purpose).await
    }

    /// The rules of [`VaultService::usable_grant`] applied to a grant already read.
    async fn usable_view(
        &self,
        user: &User,
        view: Option<HandoutView>,
        purpose: TokenUse,
    ) -> Result<UsableGrant, GrantUseError> {
        user.ensure_active().map_err(|e| GrantUseError::PolicyDenied(e.to_string()))?;
        let HandoutView { grant, policy, credential } = view.ok_or(GrantUseError::GrantNotFound)?;
        match grant.status {
            GrantStatus::Active => {}
            GrantStatus::Revoked => return Err(GrantUseError::GrantRevoked),
            GrantStatus::Expired => return Err(GrantUseError::ReauthRequired),
        }
        let refusal = match evaluate(&policy, user) {
            PolicyDecision::Deny(reason) => Some(GrantUseError::PolicyDenied(reason)),
            PolicyDecision::Allow if purpose == TokenUse::Handout && !allows_handout(&policy) => {
                Some(GrantUseError::HandoutDisabled(grant.provider.clone()))
            }
            PolicyDecision::Allow => None,
        };
        if let Some(refused) = refusal {
            let mut audit = self.grant_audit(&grant, purpose.audit_action(), format!("user:{}", user.id));
            audit.outcome = AuditOutcome::Denied;
            audit.detail = Some(refused.to_string());
            self.credentials.record_handout(&grant.id, None, &audit).await?;
            return Err(refused);
        }
        let mut credential = credential.ok_or(GrantUseError::ReauthRequired)?;
        let now = self.clock.now();
        if credential.needs_refresh(now, self.settings.refresh_window_secs) {
            let still_valid = credential.expires_at.is_some_and(|exp| exp > now);
            if credential.refresh_token.is_some() {
                credential = match self.refresh(&grant, credential.clone()).await {
                    Ok(refreshed) => refreshed,
                    // The provider is in trouble but the current access token has not expired:
                    // it is still good, so hand it out rather than fail the caller.
                    Err(GrantUseError::Provider(_)) if still_valid => credential,
                    Err(e) => return Err(e),
                };
            } else if !still_valid && credential.expires_at.is_some() {
                // Expired with nothing to refresh it: the grant can never hand out again.
                let mut audit = self.grant_audit(&grant, "token.refresh", "system".into());
                audit.outcome = AuditOutcome::Failure;
                audit.detail =
                    Some("the access token expired and there is no refresh token; the grant is expired".into());
                if self.credentials.expire_grant(&grant.id, credential.version, now, &audit).await? {
                    return Err(GrantUseError::ReauthRequired);
                }
                // The credential moved on meanwhile (a reconnect): hand out the new one.
                credential = self.answer_for_lost_grant(&grant).await?;
            }
        }
        let access_token =
            self.cipher.open_secret(&credential.access_token, &Credential::aad(&grant.id, TokenKind::Access))?;
        let touch =
            grant.last_used_at.is_none_or(|t| now.seconds() - t.seconds() >= LAST_USED_GRANULARITY_SECS).then_some(now);
        Ok(UsableGrant {
            access_token,
            token_type: credential.token_type,
            expires_at: credential.expires_at,
            credential_version: credential.version,
            touch,
            grant,
        })
    }

    /// Refreshes a grant, one attempt at a time per grant in this process: a caller that needs
    /// the grant refreshed while an attempt runs awaits that attempt and shares its outcome
    /// (success or failure), so a provider that hangs or fails sees one call per attempt, not
    /// one per caller. Across processes the grant's refresh lock serialises the attempts, and a
    /// process that waited finds the new credential when it re-reads it.
    async fn refresh(&self, grant: &Grant, seen: Credential) -> Result<Credential, GrantUseError> {
        let attempt = {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            match flights.running.get(&grant.id) {
                Some((_, running)) => running.clone(),
                None => {
                    flights.serial += 1;
                    let serial = flights.serial;
                    let (this, owned) = (self.clone(), grant.clone());
                    let attempt = async move {
                        let outcome = this.refresh_once(&owned, seen).await;
                        let mut flights = this.flights.lock().unwrap_or_else(PoisonError::into_inner);
                        if flights.running.get(&owned.id).is_some_and(|(s, _)| *s == serial) {
                            flights.running.remove(&owned.id);
                        }
                        outcome
                    }
                    .boxed()
                    .shared();
                    flights.running.insert(grant.id.clone(), (serial, attempt.clone()));
                    attempt
                }
            }
        };
        attempt.await
    }

    /// One refresh attempt under the grant's refresh lock.
    async fn refresh_once(&self, grant: &Grant, seen: Credential) -> Result<Credential, GrantUseError> {
        let guard = self.locks.lock(&grant.id).await?;
        let result = self.refresh_locked(grant, seen, false).await;
        guard.release().await;
        result
    }

    /// `forced`: refresh even when the token does not look expired (the provider refused it),
    /// unless it changed since `seen`.
    async fn refresh_locked(&self, grant: &Grant, seen: Credential, forced: bool) -> Result<Credential, GrantUseError> {
        let current = self.credentials.load_credential(&grant.id).await?.ok_or(GrantUseError::ReauthRequired)?;
        let now = self.clock.now();
        if current.version != seen.version
            || (!forced && !current.needs_refresh(now, self.settings.refresh_window_secs))
        {
            return Ok(current);
        }
        let Some(refresh_box) = &current.refresh_token else { return Ok(current) };
        let provider =
            self.providers.get_provider(&grant.app_id, &grant.provider).await?.ok_or(GrantUseError::GrantRevoked)?;
        let secret = self.open_client_secret(&provider)?;
        let refresh_token = self.cipher.open_secret(refresh_box, &Credential::aad(&grant.id, TokenKind::Refresh))?;
        match self.oauth.refresh(&Self::endpoint(&provider, &secret), &refresh_token).await {
            Ok(mut tokens) => {
                let rotated = tokens.refresh_token.is_some();
                // RFC 6749 section 6: the provider may keep the old refresh token.
                if !rotated {
                    tokens.refresh_token = Some(refresh_token);
                }
                let mut next = self.seal_credential(&grant.id, &tokens, now, current.version + 1)?;
                if !rotated {
                    // The same sealed box: the store revokes a refresh token only when it changes.
                    next.refresh_token = current.refresh_token.clone();
                }
                let audit = self.grant_audit(grant, "token.refresh", "system".into());
                if self.credentials.replace_credential(&next, current.version, &audit).await? {
                    return Ok(next);
                }
                // The grant was revoked, expired or reconnected while the provider minted these
                // tokens: they belong to nobody now, so queue their revocation rather than leave
                // them live at the provider.
                self.queue_orphaned(&provider, &next, rotated).await?;
                self.answer_for_lost_grant(grant).await
            }
            Err(OAuthError::InvalidGrant) => {
                // The refresh token may have been spent by someone who stored its successor
                // meanwhile (another process on the same database, a reconnect): then the newer
                // credential is the answer, and the grant is fine.
                if let Some(latest) = self.credentials.load_credential(&grant.id).await? {
                    if latest.version != current.version {
                        return Ok(latest);
                    }
                }
                // A revoke that raced this refresh may have revoked the refresh token at the
                // provider first: then the grant is revoked, not expired.
                if self
                    .grants
                    .get_grant(&grant.app_id, &grant.id)
                    .await?
                    .is_none_or(|g| g.status != GrantStatus::Active)
                {
                    return self.answer_for_lost_grant(grant).await;
                }
                let mut audit = self.grant_audit(grant, "token.refresh", "system".into());
                audit.outcome = AuditOutcome::Failure;
                audit.detail = Some("the provider rejected the refresh token; the grant is expired".into());
                // Expires only the credential whose token was rejected (compare-and-set on its
                // version); one stored after our re-read wins.
                if self.credentials.expire_grant(&grant.id, current.version, now, &audit).await? {
                    return Err(GrantUseError::ReauthRequired);
                }
                self.answer_for_lost_grant(grant).await
            }
            Err(e) => Err(GrantUseError::Provider(e.to_string())),
        }
    }

    /// What to answer when a grant changed under a refresh: its credential if it is (again) active
    /// (a reconnect), else why it cannot hand out.
    async fn answer_for_lost_grant(&self, grant: &Grant) -> Result<Credential, GrantUseError> {
        match self.grants.get_grant(&grant.app_id, &grant.id).await?.map(|g| g.status) {
            Some(GrantStatus::Active) => {
                self.credentials.load_credential(&grant.id).await?.ok_or(GrantUseError::ReauthRequired)
            }
            Some(GrantStatus::Expired) => Err(GrantUseError::ReauthRequired),
            Some(GrantStatus::Revoked) | None => Err(GrantUseError::GrantRevoked),
        }
    }

    /// Queues the provider revocation of tokens minted for a grant that no longer wants them
    /// (sealed in `orphan`, still bound to the grant's id). A refresh token the provider did not
    /// rotate is the grant's old one, which the revocation that removed the grant already queued.
    async fn queue_orphaned(
        &self,
        provider: &ProviderConfig,
        orphan: &Credential,
        rotated: bool,
    ) -> Result<(), StoreError> {
        let Some(url) = provider.revocation_url.clone() else { return Ok(()) };
        let now = self.clock.now();
        let item = |kind: TokenKind, token: &custody_identity::cipher::SealedBox, label: &str| OutboxItem {
            id: format!("{}:{label}:v{}", orphan.grant_id, orphan.version),
            app_id: provider.app_id.clone(),
            grant_id: orphan.grant_id.clone(),
            provider: provider.name.clone(),
            token_kind: kind,
            token: token.clone(),
            revocation_url: url.clone(),
            client_id: provider.client_id.clone(),
            client_secret: provider.client_secret.clone(),
            attempts: 0,
            next_attempt_at: now,
        };
        let mut items = vec![item(TokenKind::Access, &orphan.access_token, "access")];
        if let (true, Some(refresh)) = (rotated, &orphan.refresh_token) {
            items.push(item(TokenKind::Refresh, refresh, "refresh"));
        }
        self.outbox.queue_revocations(&items, now).await
    }

    // ----- revocation outbox -----

    /// Attempts the due provider revocations once. Returns how many were completed.
    pub async fn drain_outbox(&self, limit: u32) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let mut done = 0;
        for item in self.outbox.due_revocations(now, limit).await? {
            let opened = self
                .cipher
                .open_secret(&item.token, &Credential::aad(&item.grant_id, item.token_kind))
                .and_then(|token| {
                    Ok((
                        token,
                        self.cipher.open_secret(
                            &item.client_secret,
                            &ProviderConfig::secret_aad(&item.app_id, &item.provider),
                        )?,
                    ))
                });
            let result = match &opened {
                Ok((token, secret)) => {
                    self.oauth.revoke(&item.revocation_url, &item.client_id, secret, token, item.token_kind).await
                }
                Err(_) => Err(OAuthError::Rejected("unopenable".into())),
            };
            let mut audit = AuditEntry {
                grant_id: Some(item.grant_id.to_string()),
                provider: Some(item.provider.to_string()),
                ..self.audit(&item.app_id, "grant.provider_revoke", "system".into())
            };
            match result {
                // RFC 7009 section 2.2: an invalid token also answers 200; a rejected token is
                // as good as revoked for us.
                Ok(()) | Err(OAuthError::InvalidGrant) => {
                    self.outbox.finish_revocation(&item.id, Some(&audit)).await?;
                    done += 1;
                }
                Err(e) if item.attempts + 1 >= MAX_REVOCATION_ATTEMPTS || opened.is_err() => {
                    audit.outcome = AuditOutcome::Failure;
                    audit.detail = Some(format!("gave up revoking at the provider: {e}"));
                    self.outbox.finish_revocation(&item.id, Some(&audit)).await?;
                }
                Err(_) => {
                    let attempts = item.attempts + 1;
                    // Exponential backoff from the base delay, capped at one hour.
                    let base = self.settings.outbox_retry_base_secs.max(1);
                    let delay = base.saturating_mul(1i64 << (attempts - 1).clamp(0, 16)).min(3600);
                    self.outbox.retry_revocation(&item.id, attempts, now.plus_seconds(delay)).await?;
                }
            }
        }
        Ok(done)
    }

    /// Re-seals every stored secret that an older key sealed under the current key, in
    /// batches of `batch` rows, each row by compare-and-set so concurrent writers (the server
    /// keeps serving) are never overwritten: a row changed meanwhile was sealed by the current
    /// key anyway.
    pub async fn reseal_all(&self, batch: u32) -> Result<ResealReport, ResealError> {
        self.reseal_all_with_progress(batch, |_, _| {}).await
    }

    /// As [`VaultService::reseal_all`], calling `progress` after every batch with the totals so
    /// far and how many kinds of sealed values are still to go (for `custody reseal`'s progress
    /// line; counting every row first would cost a full scan of each table).
    pub async fn reseal_all_with_progress(
        &self,
        batch: u32,
        mut progress: impl FnMut(&ResealReport, usize) + Send,
    ) -> Result<ResealReport, ResealError> {
        use crate::ports::SealedKind::*;
        let mut report = ResealReport::default();
        let kinds = [
            CredentialAccess,
            CredentialRefresh,
            ProviderSecret,
            OutboxToken,
            OutboxClientSecret,
            ConnectVerifier,
            InstanceSecret,
            WebhookSecret,
        ];
        for (done, kind) in kinds.into_iter().enumerate() {
            let kinds_left = kinds.len() - done - 1;
            let mut after: Option<String> = None;
            loop {
                let values = self.sealed.sealed_values(kind, after.as_deref(), batch).await?;
                let Some(last) = values.last() else { break };
                after = Some(last.cursor.clone());
                for value in &values {
                    report.examined += 1;
                    if !self.cipher.is_stale(&value.sealed) {
                        continue;
                    }
                    let plain = self.cipher.open(&value.sealed, &value.associated_data)?;
                    let fresh = self.cipher.seal(&plain, &value.associated_data)?;
                    if self.sealed.replace_sealed(value, &fresh).await? {
                        report.resealed += 1;
                    }
                }
                progress(&report, kinds_left);
                if values.len() < batch as usize {
                    break;
                }
            }
        }
        Ok(report)
    }

    // ----- operator reads and maintenance (the server never reaches the store itself) -----

    /// The app's provider `name`, if configured (its client secret stays sealed).
    pub async fn get_provider(&self, app: &AppId, name: &ProviderName) -> Result<Option<ProviderConfig>, StoreError> {
        self.providers.get_provider(app, name).await
    }

    /// One page of the app's providers, by name.
    pub async fn list_providers(&self, app: &AppId, page: &PageRequest) -> Result<Page<ProviderConfig>, StoreError> {
        self.providers.list_providers(app, page).await
    }

    /// The app's policy for `provider`: found, absent, or stored but unreadable (which every
    /// decision treats as a denial).
    pub async fn get_policy(&self, app: &AppId, provider: &ProviderName) -> Result<PolicyLookup, StoreError> {
        self.policies.get_policy(app, provider).await
    }

    /// One page of the app's policies.
    pub async fn list_policies(&self, app: &AppId, page: &PageRequest) -> Result<Page<Policy>, StoreError> {
        self.policies.list_policies(app, page).await
    }

    /// Forgets the webhook event ids received more than [`WEBHOOK_EVENT_RETENTION_SECS`] ago;
    /// a redelivery that late is no longer recognised as a duplicate. Returns how many.
    pub async fn prune_webhook_events(&self) -> Result<u64, StoreError> {
        self.maintenance.prune_webhook_events(self.clock.now().plus_seconds(-WEBHOOK_EVENT_RETENTION_SECS)).await
    }

    /// Deletes the audit rows (of every app) older than `retention_days`, see
    /// [`prune_audit_before`]. Returns how many.
    pub async fn prune_audit(&self, retention_days: u32) -> Result<u64, StoreError> {
        prune_audit_before(self.maintenance.as_ref(), audit_cutoff(self.clock.now(), retention_days)).await
    }
}

pub use custody_identity::cipher::ResealReport;

/// How a connect flow failed, as reported to `return_url` in `error=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectFailure {
    Expired,
    AccessDenied,
    Provider,
    Server,
}

impl ConnectFailure {
    fn as_str(self) -> &'static str {
        match self {
            ConnectFailure::Expired => "expired",
            ConnectFailure::AccessDenied => "access_denied",
            ConnectFailure::Provider => "provider_error",
            ConnectFailure::Server => "server_error",
        }
    }
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compares two hex hashes in time independent of where they differ.
fn hashes_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub use custody_identity::digest::state_hash;

/// How long webhook event ids are kept to recognise redeliveries.
pub const WEBHOOK_EVENT_RETENTION_SECS: i64 = 8 * 24 * 3600;

/// Audit rows deleted per statement when pruning: small enough that each delete is a short
/// transaction that never holds up hand-outs for long.
pub const AUDIT_PRUNE_BATCH: u32 = 1000;

/// The time before which audit rows are older than `retention_days` at `now`.
pub fn audit_cutoff(now: UnixTime, retention_days: u32) -> UnixTime {
    now.plus_seconds(-i64::from(retention_days) * 86_400)
}

/// Deletes the audit rows recorded before `cutoff`, in batches of [`AUDIT_PRUNE_BATCH`],
/// letting other tasks run between batches. Returns how many were deleted.
pub async fn prune_audit_before(store: &dyn Maintenance, cutoff: UnixTime) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let deleted = store.prune_audit(cutoff, AUDIT_PRUNE_BATCH).await?;
        total += deleted;
        if deleted == 0 {
            return Ok(total);
        }
        yield_now().await;
    }
}

/// Returns to the executor once, so a long prune shares the thread with the requests (the
/// domain has no runtime to ask; any executor honours a waker woken right away).
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}
