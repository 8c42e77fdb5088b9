//! RFC 9457 problem responses with a stable `code`, and the mapping from domain errors to them.
//! `detail` is for humans and never carries a secret.

use custody_identity::jwt::TokenRejection;
use custody_identity::ports::StoreError;
use custody_identity::service::{AddIdpError, DiscoverError, PatchIdpError, ResolveError};
use custody_identity::user::UserRefused;
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
            AddIdpError::AppNotFound => ApiError::new(StatusCode::NOT_FOUND, "app_not_found", "app not found"),
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

impl From<custody_vault::service::VaultError> for ApiError {
    fn from(e: custody_vault::service::VaultError) -> Self {
        use custody_vault::service::VaultError as V;
        match e {
            V::Invalid(detail) => ApiError::invalid_request(detail),
            V::ProviderNotFound(name) => ApiError::new(
                StatusCode::NOT_FOUND,
                "provider_not_found",
                format!("provider `{name}` is not configured"),
            ),
            V::PolicyNotFound(name) => {
                ApiError::new(StatusCode::NOT_FOUND, "policy_not_found", format!("no policy for `{name}`"))
            }
            V::GrantNotFound => ApiError::new(StatusCode::NOT_FOUND, "grant_not_found", "grant not found"),
            V::GrantRevoked => ApiError::new(StatusCode::GONE, "grant_revoked", "the grant has been revoked"),
            V::ReauthRequired => {
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
            V::PolicyDenied(reason) => ApiError::new(StatusCode::FORBIDDEN, "policy_denied", reason),
            e @ V::HandoutDisabled(_) => ApiError::new(
                StatusCode::FORBIDDEN,
                "handout_disabled",
                format!("{e}; call the provider's API through /v1/proxy/{{provider}}/... instead"),
            ),
            V::ProviderError(detail) => {
                tracing::warn!(reason = %detail, "a call to the provider failed (code exchange, refresh or revocation)");
                ApiError::new(StatusCode::BAD_GATEWAY, "provider_error", detail)
            }
            V::UnknownConnectState => {
                tracing::warn!(reason = "invalid_state", "connect failed: the state is unknown, expired or used");
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_state",
                    "the connect session is unknown, expired or already used",
                )
            }
            V::ConnectBrowserMismatch => {
                tracing::warn!(reason = "connect_browser_mismatch", "connect failed: not the browser that started it");
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "connect_browser_mismatch",
                    "this connect flow was started in another browser, or this browser did not send its \
                     connect cookie back; start a new connect session from the app in this browser",
                )
            }
            V::Sealing => {
                tracing::error!("a sealed value could not be opened");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "sealing_error",
                    "a stored credential could not be opened",
                )
            }
            V::Store(e) => e.into(),
        }
    }
}
