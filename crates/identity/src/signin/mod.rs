//! Sign-in through the app's identity provider (OpenID Connect authorization code flow with PKCE
//! S256 and a nonce), for two purposes: an SDK waiting for a user to log in (a CLI, a notebook,
//! an agent's first run) and the Wallet, the end user's own page.
//!
//! The app's OIDC client ([`OidcClient`]) holds the client id and the sealed client secret. A
//! sign-in starts with a [`SignInState`]: a random state value (only its SHA-256 is stored),
//! bound server-side to the app and the [`SignInPurpose`], with a nonce (stored as its SHA-256)
//! and a sealed PKCE verifier, single use, expiring after ten minutes; so one callback URL per
//! purpose serves every app. The callback consumes the state, exchanges the code at the IdP's
//! token endpoint with the app's client credentials, verifies the ID token (signature through
//! the JWKS cache, `iss`, `aud` = the client id, `nonce`, `exp`) and resolves the user exactly as
//! a runtime JWT does. An SDK session ([`SdkSession`]) then holds the ID token, sealed, until the
//! SDK picks it up once; a Wallet sign-in opens a [`WalletSession`] instead.
//!
//! The use cases are in [`service::SignInService`]; the ports they need in [`ports`].

pub mod ports;
pub mod service;

use crate::cipher::SealedBox;
use crate::{AppId, IdpId, InvalidId, UnixTime, UserId};
use std::fmt;

pub use ports::{OidcClients, OidcCodeClient, OidcEndpoint, OidcError, SdkSessions, SignInStates, WalletSessions};
pub use service::{SignInPorts, SignInService, SignInSettings};

/// How Custody authenticates to the IdP's token endpoint (RFC 6749 section 2.3.1, OpenID
/// Connect Core section 9).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum TokenAuthMethod {
    /// HTTP Basic with the form-urlencoded client id and secret: the OpenID Connect default.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the request body.
    ClientSecretPost,
}

impl TokenAuthMethod {
    /// The registered name (`client_secret_basic`, `client_secret_post`).
    pub fn as_str(self) -> &'static str {
        match self {
            TokenAuthMethod::ClientSecretBasic => "client_secret_basic",
            TokenAuthMethod::ClientSecretPost => "client_secret_post",
        }
    }

    /// Parses the registered name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "client_secret_basic" => Some(TokenAuthMethod::ClientSecretBasic),
            "client_secret_post" => Some(TokenAuthMethod::ClientSecretPost),
            _ => None,
        }
    }
}

/// A client id as registered at the IdP: 1 to 512 characters, no whitespace or control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OidcClientId(String);

/// A client id that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("client_id must be 1 to 512 characters without whitespace or control characters")]
pub struct InvalidClientId;

impl OidcClientId {
    pub fn parse(s: &str) -> Result<Self, InvalidClientId> {
        if s.is_empty() || s.chars().count() > 512 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(InvalidClientId);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OidcClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The app's OIDC client at its identity provider. It belongs to one IdP configuration and is
/// deleted with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcClient {
    pub app_id: AppId,
    /// The IdP configuration this client was registered for.
    pub idp_id: IdpId,
    pub client_id: OidcClientId,
    /// Sealed with [`OidcClient::secret_aad`].
    pub client_secret: SealedBox,
    pub auth_method: TokenAuthMethod,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

impl OidcClient {
    /// The associated data of an app's sealed client secret: bound to the app, so a secret
    /// copied to another app's row does not open.
    pub fn secret_aad(app: &AppId) -> Vec<u8> {
        format!("oidc-client-secret:{app}").into_bytes()
    }
}

/// What a sign-in is for; it decides the callback URL and what the callback does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignInPurpose {
    /// An SDK session: the callback completes the session and shows a "you can close this
    /// window" page.
    Sdk,
    /// The Wallet: the callback opens a Wallet session.
    Wallet,
}

impl SignInPurpose {
    /// The stored text form (`sdk`, `wallet`).
    pub fn as_str(self) -> &'static str {
        match self {
            SignInPurpose::Sdk => "sdk",
            SignInPurpose::Wallet => "wallet",
        }
    }

    /// Parses the stored text form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sdk" => Some(SignInPurpose::Sdk),
            "wallet" => Some(SignInPurpose::Wallet),
            _ => None,
        }
    }

    /// The callback path under the public URL that the IdP redirects to.
    pub fn callback_path(self) -> &'static str {
        match self {
            SignInPurpose::Sdk => "/v1/auth/callback",
            SignInPurpose::Wallet => "/wallet/auth/callback",
        }
    }
}

/// An SDK session's id: a canonical UUID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SdkSessionId(String);

impl SdkSessionId {
    /// Parses a canonical UUID (upper-case hex is normalised).
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        UserId::parse(s).map(|u| SdkSessionId(u.as_str().to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SdkSessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A pending sign-in, keyed by the SHA-256 of its state value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInState {
    /// SHA-256 of the state value, hex; the value itself is never stored.
    pub state_hash: String,
    pub app_id: AppId,
    pub purpose: SignInPurpose,
    /// The SDK session this sign-in completes (purpose [`SignInPurpose::Sdk`]).
    pub sdk_session: Option<SdkSessionId>,
    /// SHA-256 of the nonce sent in the authorization request, hex.
    pub nonce_hash: String,
    /// The PKCE code verifier, sealed with [`SignInState::verifier_aad`].
    pub pkce_verifier: SealedBox,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
}

impl SignInState {
    /// The associated data of a sign-in state's sealed PKCE verifier.
    pub fn verifier_aad(state_hash: &str) -> Vec<u8> {
        format!("sign-in:{state_hash}").into_bytes()
    }
}

/// Where an SDK session stands, as stored. "Expired" is not stored: a pending session past its
/// expiry reads as expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SdkSessionStatus {
    Pending,
    Complete,
    Failed,
}

impl SdkSessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SdkSessionStatus::Pending => "pending",
            SdkSessionStatus::Complete => "complete",
            SdkSessionStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(SdkSessionStatus::Pending),
            "complete" => Some(SdkSessionStatus::Complete),
            "failed" => Some(SdkSessionStatus::Failed),
            _ => None,
        }
    }
}

/// Why a sign-in failed, as a stable code (shown to the SDK and on the callback page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignInFailure {
    /// The user declined or cancelled at the IdP.
    AccessDenied,
    /// The IdP answered the authorization request with another error, or without a code.
    IdpError,
    /// The code exchange at the token endpoint failed.
    CodeExchangeFailed,
    /// The ID token did not verify (signature, issuer, audience, nonce, expiry, user id claim).
    InvalidIdToken,
    UserSuspended,
    UserDeprovisioned,
    /// The browser came back after the state expired.
    Expired,
    /// Custody could not finish (storage, a secret that does not open, a configuration that
    /// changed meanwhile).
    ServerError,
}

impl SignInFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            SignInFailure::AccessDenied => "access_denied",
            SignInFailure::IdpError => "idp_error",
            SignInFailure::CodeExchangeFailed => "code_exchange_failed",
            SignInFailure::InvalidIdToken => "invalid_id_token",
            SignInFailure::UserSuspended => "user_suspended",
            SignInFailure::UserDeprovisioned => "user_deprovisioned",
            SignInFailure::Expired => "expired",
            SignInFailure::ServerError => "server_error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            SignInFailure::AccessDenied,
            SignInFailure::IdpError,
            SignInFailure::CodeExchangeFailed,
            SignInFailure::InvalidIdToken,
            SignInFailure::UserSuspended,
            SignInFailure::UserDeprovisioned,
            SignInFailure::Expired,
            SignInFailure::ServerError,
        ]
        .into_iter()
        .find(|f| f.as_str() == s)
    }

    /// A sentence for the person in front of the browser.
    pub fn explanation(self) -> &'static str {
        match self {
            SignInFailure::AccessDenied => "The sign-in was cancelled at the identity provider.",
            SignInFailure::IdpError => "The identity provider reported an error.",
            SignInFailure::CodeExchangeFailed => "The identity provider did not confirm the sign-in.",
            SignInFailure::InvalidIdToken => "The identity provider's answer could not be verified.",
            SignInFailure::UserSuspended => "Your account is suspended.",
            SignInFailure::UserDeprovisioned => "Your account has been removed.",
            SignInFailure::Expired => "The sign-in took too long and expired.",
            SignInFailure::ServerError => "Something went wrong on our side.",
        }
    }
}

impl fmt::Display for SignInFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An SDK sign-in session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdkSession {
    pub id: SdkSessionId,
    pub app_id: AppId,
    pub status: SdkSessionStatus,
    /// Why it failed, when [`SdkSessionStatus::Failed`].
    pub error: Option<SignInFailure>,
    /// The signed-in user, when complete.
    pub user_id: Option<UserId>,
    /// The ID token, sealed with [`SdkSession::token_aad`], until it is handed out.
    pub user_token: Option<SealedBox>,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
    pub completed_at: Option<UnixTime>,
    pub token_delivered_at: Option<UnixTime>,
}

impl SdkSession {
    /// The associated data of a session's sealed ID token.
    pub fn token_aad(id: &SdkSessionId) -> Vec<u8> {
        format!("sdk-session:{id}").into_bytes()
    }
}

/// A Wallet session, keyed by the SHA-256 of the cookie's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletSession {
    /// SHA-256 of the session token, hex; the token itself lives only in the browser's cookie.
    pub id_hash: String,
    pub app_id: AppId,
    /// The IdP configuration the user signed in through; the session goes with it.
    pub idp_id: IdpId,
    pub user_id: UserId,
    /// The ID token, sealed with [`WalletSession::token_aad`], for `id_token_hint` at sign-out.
    pub id_token: Option<SealedBox>,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
}

impl WalletSession {
    /// The associated data of a Wallet session's sealed ID token.
    pub fn token_aad(id_hash: &str) -> Vec<u8> {
        format!("wallet-session:{id_hash}").into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        for m in [TokenAuthMethod::ClientSecretBasic, TokenAuthMethod::ClientSecretPost] {
            assert_eq!(TokenAuthMethod::parse(m.as_str()), Some(m));
        }
        for p in [SignInPurpose::Sdk, SignInPurpose::Wallet] {
            assert_eq!(SignInPurpose::parse(p.as_str()), Some(p));
        }
        for s in [SdkSessionStatus::Pending, SdkSessionStatus::Complete, SdkSessionStatus::Failed] {
            assert_eq!(SdkSessionStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(SignInFailure::parse("invalid_id_token"), Some(SignInFailure::InvalidIdToken));
        assert_eq!(SignInFailure::parse("nope"), None);
    }

    #[test]
    fn client_ids() {
        assert!(OidcClientId::parse("abc_DEF-123.apps.example").is_ok());
        assert_eq!(OidcClientId::parse(""), Err(InvalidClientId));
        assert_eq!(OidcClientId::parse("a b"), Err(InvalidClientId));
        assert_eq!(OidcClientId::parse(&"x".repeat(513)), Err(InvalidClientId));
    }

    #[test]
    fn session_ids_are_uuids() {
        let id = SdkSessionId::parse("0F8FAD5B-D9CB-469F-A165-70867728950E").unwrap();
        assert_eq!(id.as_str(), "0f8fad5b-d9cb-469f-a165-70867728950e");
        assert!(SdkSessionId::parse("nope").is_err());
    }
}
