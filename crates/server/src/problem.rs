//! RFC 9457 problem responses with a stable `code`, and the mapping from domain errors to them:
//! every domain error type becomes a problem here, once, and handlers only use `?` (or the named
//! constructors below for answers that are not a domain error, such as a malformed path
//! parameter). `detail` is for humans and never carries a secret.

use custody_identity::jwt::TokenRejection;
use custody_identity::ports::StoreError;
use custody_identity::service::{AddIdpError, DiscoverError, PatchIdpError, ResolveError};
use custody_identity::signin::service::{PutClientError, SdkSessionError, StartSignInError};
use custody_identity::user::UserRefused;
use custody_identity::Invalid;
use custody_providers::HttpError;
use custody_vault::service::{
    CompleteConnectError, ConnectRedirectError, FindGrantError, GrantUseError, ImportGrantError, ProxyLeaseError,
    PutPolicyError, PutProviderError, StartConnectError,
};
use custody_vault::webhook::{DisableError, ReceiveError, SecretChangeError, WebhookSettingsError};
use custody_vault::ProviderName;
use hyper::StatusCode;
use serde_json::json;

/// An error answer: status, stable code, human detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self { status, code, detail: detail.into() }
    }

    pub fn invalid_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or invalid credentials")
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    pub fn idp_not_configured() -> Self {
        Self::new(StatusCode::NOT_FOUND, "idp_not_configured", "the app has no identity provider")
    }

    /// 404 `app_not_found`: also for an app id that is not a valid id.
    pub fn app_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "app_not_found", "app not found")
    }

    pub fn api_key_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "api_key_not_found", "API key not found")
    }

    pub fn user_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "user_not_found", "user not found")
    }

    /// 404 `grant_not_found`: also for a grant id that is not a valid id.
    pub fn grant_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "grant_not_found", "grant not found")
    }

    pub fn provider_not_found(name: &ProviderName) -> Self {
        Self::new(StatusCode::NOT_FOUND, "provider_not_found", format!("provider `{name}` is not configured"))
    }

    pub fn policy_not_found(name: &ProviderName) -> Self {
        Self::new(StatusCode::NOT_FOUND, "policy_not_found", format!("no policy for `{name}`"))
    }

    /// 404 `webhooks_not_enabled`: the receiver's answer for an app that has no webhooks,
    /// including an app that does not exist (the URL reveals nothing).
    pub fn webhooks_not_enabled() -> Self {
        Self::new(StatusCode::NOT_FOUND, "webhooks_not_enabled", "webhooks are not enabled for this app")
    }

    /// 409 `oidc_not_configured`: sign-in is not set up; the detail says what is missing.
    pub fn oidc_not_configured(detail: &str) -> Self {
        Self::new(StatusCode::CONFLICT, "oidc_not_configured", detail)
    }

    pub fn session_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "session_not_found", "sign-in session not found")
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", detail)
    }

    /// The server is at one of its limits (connections, buffered request bodies): retry shortly.
    /// Answered with `Retry-After`.
    pub fn server_busy() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_busy", "the server is at capacity; retry in a second")
    }

    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "an unexpected error occurred")
    }

    /// The problem document.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "type": format!("urn:custody:error:{}", self.code),
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code,
        })
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidCursor => ApiError::invalid_request("cursor: not a valid cursor"),
            StoreError::Unavailable(_) => {
                tracing::error!(error = %e, "storage failure");
                ApiError::unavailable("storage is unavailable; nothing was changed, retry later")
            }
        }
    }
}

impl From<DiscoverError> for ApiError {
    fn from(e: DiscoverError) -> Self {
        match e {
            DiscoverError::InvalidIssuerUrl(e) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_issuer_url", e.to_string())
            }
            DiscoverError::Failed(e) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "discovery_failed", e.to_string())
            }
            e @ DiscoverError::UnknownKind { .. } => ApiError::invalid_request(e.to_string()),
        }
    }
}

impl From<AddIdpError> for ApiError {
    fn from(e: AddIdpError) -> Self {
        match e {
            AddIdpError::Discover(e) => e.into(),
            AddIdpError::AlreadyConfigured => ApiError::new(
                StatusCode::CONFLICT,
                "idp_already_configured",
                "the app already has an identity provider; delete it first",
            ),
            AddIdpError::AppNotFound => ApiError::app_not_found(),
            AddIdpError::Store(e) => e.into(),
        }
    }
}

impl From<PatchIdpError> for ApiError {
    fn from(e: PatchIdpError) -> Self {
        match e {
            PatchIdpError::NotConfigured => ApiError::idp_not_configured(),
            PatchIdpError::Locked(e) => ApiError::new(StatusCode::CONFLICT, "claim_mappings_locked", e.to_string()),
            PatchIdpError::Store(e) => e.into(),
        }
    }
}

impl From<TokenRejection> for ApiError {
    fn from(e: TokenRejection) -> Self {
        match e {
            TokenRejection::KeysUnavailable => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "idp_unavailable", e.to_string())
            }
            other => ApiError::new(StatusCode::UNAUTHORIZED, "invalid_user_token", other.to_string()),
        }
    }
}

impl From<UserRefused> for ApiError {
    fn from(e: UserRefused) -> Self {
        match e {
            UserRefused::Suspended => ApiError::new(StatusCode::FORBIDDEN, "user_suspended", e.to_string()),
            UserRefused::Deprovisioned => ApiError::new(StatusCode::FORBIDDEN, "user_deprovisioned", e.to_string()),
        }
    }
}

impl From<ResolveError> for ApiError {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::NotConfigured => {
                ApiError::new(StatusCode::CONFLICT, "idp_not_configured", "the app has no identity provider")
            }
            ResolveError::InvalidToken(e) => e.into(),
            ResolveError::Refused(e) => e.into(),
            ResolveError::ConfigChanged => {
                ApiError::unavailable("the identity provider configuration kept changing; retry")
            }
            ResolveError::Store(e) => e.into(),
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::invalid_request(e.to_string())
    }
}

// ----- vault -----

/// 500 `sealing_error`, logged: a sealed value did not open (or a value did not seal), which
/// means a key is missing from the key ring or the row was tampered with.
fn sealing_error(log: &'static str, detail: &'static str) -> ApiError {
    tracing::error!("{log}");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "sealing_error", detail)
}

/// A vault credential or provider secret that did not open.
fn credential_sealing_error() -> ApiError {
    sealing_error("a sealed value could not be opened", "a stored credential could not be opened")
}

/// 502 `provider_error`, logged: the third-party provider failed.
fn provider_error(detail: String) -> ApiError {
    tracing::warn!(reason = %detail, "a call to the provider failed (code exchange, refresh or revocation)");
    ApiError::new(StatusCode::BAD_GATEWAY, "provider_error", detail)
}

fn policy_denied(reason: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "policy_denied", reason)
}

fn unknown_connect_state() -> ApiError {
    tracing::warn!(reason = "invalid_state", "connect failed: the state is unknown, expired or used");
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_state", "the connect session is unknown, expired or already used")
}

fn connect_browser_mismatch() -> ApiError {
    tracing::warn!(reason = "connect_browser_mismatch", "connect failed: not the browser that started it");
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "connect_browser_mismatch",
        "this connect flow was started in another browser, or this browser did not send its \
         connect cookie back; start a new connect session from the app in this browser",
    )
}

impl From<PutProviderError> for ApiError {
    fn from(e: PutProviderError) -> Self {
        match e {
            PutProviderError::Invalid(e) => e.into(),
            PutProviderError::Sealing => credential_sealing_error(),
            PutProviderError::Store(e) => e.into(),
        }
    }
}

impl From<PutPolicyError> for ApiError {
    fn from(e: PutPolicyError) -> Self {
        match e {
            PutPolicyError::ProviderNotFound(name) => ApiError::provider_not_found(&name),
            PutPolicyError::Invalid(e) => e.into(),
            PutPolicyError::Store(e) => e.into(),
        }
    }
}

impl From<StartConnectError> for ApiError {
    fn from(e: StartConnectError) -> Self {
        match e {
            StartConnectError::Invalid(e) => e.into(),
            StartConnectError::ProviderNotFound(name) => ApiError::provider_not_found(&name),
            StartConnectError::PolicyDenied(reason) => policy_denied(reason),
            StartConnectError::Sealing => credential_sealing_error(),
            StartConnectError::Store(e) => e.into(),
        }
    }
}

impl From<ConnectRedirectError> for ApiError {
    fn from(e: ConnectRedirectError) -> Self {
        match e {
            ConnectRedirectError::UnknownState => unknown_connect_state(),
            ConnectRedirectError::BrowserMismatch => connect_browser_mismatch(),
            ConnectRedirectError::ProviderNotFound(name) => ApiError::provider_not_found(&name),
            ConnectRedirectError::Provider(detail) => provider_error(detail),
            ConnectRedirectError::Sealing => credential_sealing_error(),
            ConnectRedirectError::Store(e) => e.into(),
        }
    }
}

impl From<CompleteConnectError> for ApiError {
    fn from(e: CompleteConnectError) -> Self {
        match e {
            CompleteConnectError::UnknownState => unknown_connect_state(),
            CompleteConnectError::BrowserMismatch => connect_browser_mismatch(),
            CompleteConnectError::Invalid(e) => e.into(),
            CompleteConnectError::Store(e) => e.into(),
        }
    }
}

impl From<FindGrantError> for ApiError {
    fn from(e: FindGrantError) -> Self {
        match e {
            FindGrantError::NotFound => ApiError::grant_not_found(),
            FindGrantError::Store(e) => e.into(),
        }
    }
}

impl From<ImportGrantError> for ApiError {
    fn from(e: ImportGrantError) -> Self {
        match e {
            ImportGrantError::Invalid(e) => e.into(),
            ImportGrantError::ProviderNotFound(name) => ApiError::provider_not_found(&name),
            ImportGrantError::Sealing => credential_sealing_error(),
            ImportGrantError::Store(e) => e.into(),
        }
    }
}

impl From<GrantUseError> for ApiError {
    fn from(e: GrantUseError) -> Self {
        match e {
            GrantUseError::GrantNotFound => ApiError::grant_not_found(),
            GrantUseError::GrantRevoked => {
                ApiError::new(StatusCode::GONE, "grant_revoked", "the grant has been revoked")
            }
            GrantUseError::ReauthRequired => {
                tracing::warn!(
                    reason = "invalid_grant",
                    "refresh refused by the provider; the user must connect again"
                );
                ApiError::new(
                    StatusCode::GONE,
                    "reauth_required",
                    "the provider no longer accepts this grant; the user must connect again",
                )
            }
            GrantUseError::PolicyDenied(reason) => policy_denied(reason),
            e @ GrantUseError::HandoutDisabled(_) => ApiError::new(
                StatusCode::FORBIDDEN,
                "handout_disabled",
                format!("{e}; call the provider's API through /v1/proxy/{{provider}}/... instead"),
            ),
            GrantUseError::Provider(detail) => provider_error(detail),
            GrantUseError::Sealing => credential_sealing_error(),
            GrantUseError::Store(e) => e.into(),
        }
    }
}

impl From<ProxyLeaseError> for ApiError {
    fn from(e: ProxyLeaseError) -> Self {
        match e {
            ProxyLeaseError::Grant(e) => e.into(),
            ProxyLeaseError::ProviderNotFound(name) => ApiError::provider_not_found(&name),
            e @ ProxyLeaseError::NoApiBaseUrl(_) => ApiError::invalid_request(e.to_string()),
        }
    }
}

// ----- lifecycle webhooks -----

fn webhook_sealing_error() -> ApiError {
    sealing_error("a webhook secret could not be sealed or opened", "a stored secret could not be used")
}

fn webhooks_not_enabled_conflict() -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "webhooks_not_enabled", "webhooks are not enabled; enable them first")
}

impl From<WebhookSettingsError> for ApiError {
    fn from(e: WebhookSettingsError) -> Self {
        match e {
            WebhookSettingsError::NotConfigured => ApiError::idp_not_configured(),
            WebhookSettingsError::Store(e) => e.into(),
        }
    }
}

impl From<SecretChangeError> for ApiError {
    fn from(e: SecretChangeError) -> Self {
        match e {
            SecretChangeError::NotConfigured => ApiError::idp_not_configured(),
            SecretChangeError::AlreadyEnabled => ApiError::new(
                StatusCode::CONFLICT,
                "webhooks_already_enabled",
                "webhooks are already enabled; rotate the secret or disable them first",
            ),
            SecretChangeError::NotEnabled => webhooks_not_enabled_conflict(),
            SecretChangeError::InvalidSigningSecret(e) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_signing_secret", e.to_string())
            }
            SecretChangeError::Invalid(e) => e.into(),
            SecretChangeError::Sealing => webhook_sealing_error(),
            SecretChangeError::Store(e) => e.into(),
        }
    }
}

impl From<DisableError> for ApiError {
    fn from(e: DisableError) -> Self {
        match e {
            DisableError::NotConfigured => ApiError::idp_not_configured(),
            DisableError::NotEnabled => webhooks_not_enabled_conflict(),
            DisableError::Store(e) => e.into(),
        }
    }
}

impl From<ReceiveError> for ApiError {
    fn from(e: ReceiveError) -> Self {
        match e {
            ReceiveError::NotEnabled => ApiError::webhooks_not_enabled(),
            ReceiveError::InvalidSignature(reason) => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                format!("the delivery is not authentic: {reason}"),
            ),
            ReceiveError::Malformed(e) => ApiError::new(StatusCode::BAD_REQUEST, "malformed_payload", e.to_string()),
            ReceiveError::Store { error, applied } => {
                tracing::error!(
                    error = %error,
                    processed = applied.processed,
                    "storage failed while applying a webhook delivery; the identity provider will retry"
                );
                ApiError::unavailable(format!(
                    "storage is unavailable; the failing event was not applied ({} earlier events were), retry later",
                    applied.processed
                ))
            }
            ReceiveError::Sealing => webhook_sealing_error(),
        }
    }
}

// ----- sign-in -----

fn sign_in_sealing_error() -> ApiError {
    sealing_error("a sign-in secret could not be sealed or opened", "a stored secret could not be used")
}

impl From<PutClientError> for ApiError {
    fn from(e: PutClientError) -> Self {
        match e {
            PutClientError::IdpNotConfigured => ApiError::idp_not_configured(),
            PutClientError::Invalid(e) => e.into(),
            PutClientError::Sealing => sign_in_sealing_error(),
            PutClientError::Store(e) => e.into(),
        }
    }
}

impl From<StartSignInError> for ApiError {
    fn from(e: StartSignInError) -> Self {
        match e {
            StartSignInError::NotConfigured(detail) => ApiError::oidc_not_configured(detail),
            StartSignInError::Sealing => sign_in_sealing_error(),
            StartSignInError::Store(e) => e.into(),
        }
    }
}

impl From<SdkSessionError> for ApiError {
    fn from(e: SdkSessionError) -> Self {
        match e {
            SdkSessionError::NotFound => ApiError::session_not_found(),
            SdkSessionError::Sealing => sign_in_sealing_error(),
            SdkSessionError::Store(e) => e.into(),
        }
    }
}

// ----- the proxy's upstream -----

/// The provider's API failed a proxied request (or could not be reached in time).
impl From<&HttpError> for ApiError {
    fn from(e: &HttpError) -> Self {
        match e {
            HttpError::Timeout { .. } => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "provider_timeout",
                format!("{e}; try again later or raise CUSTODY_PROXY_TIMEOUT_SECS"),
            ),
            _ => ApiError::new(StatusCode::BAD_GATEWAY, "provider_error", e.to_string()),
        }
    }
}
