//! The ports sign-in needs: storage of OIDC clients ([`OidcClients`]), sign-in states
//! ([`SignInStates`]), SDK sessions ([`SdkSessions`]) and Wallet sessions ([`WalletSessions`]),
//! and an OpenID Connect client for the authorization code flow ([`OidcCodeClient`]).

use super::{OidcClient, SdkSession, SdkSessionId, SignInFailure, SignInPurpose, SignInState, WalletSession};
use super::{OidcClientId, TokenAuthMethod};
use crate::audit::AuditEntry;
use crate::cipher::SealedBox;
use crate::ports::StoreError;
use crate::{AppId, Secret, UnixTime, UserId};
use async_trait::async_trait;
use std::fmt;

/// Storing an OIDC client failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PutOidcClientError {
    /// The IdP configuration the client was made for is no longer the app's (deleted or
    /// replaced meanwhile).
    #[error("the identity provider changed concurrently")]
    IdpChanged,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How an SDK session ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkOutcome<'a> {
    /// Signed in: the user, and the ID token sealed with [`SdkSession::token_aad`].
    Complete {
        user: &'a UserId,
        token: &'a SealedBox,
    },
    Failed(SignInFailure),
}

// Persistence for sign-in is split by role. Every mutating method is one transaction together
// with the audit row it is given, if any; audit rows on their own (a failed sign-in changes
// nothing else) go through [`crate::ports::AuditLog`].

/// Each app's OIDC sign-in client (at most one, bound to the app's IdP configuration).
#[async_trait]
pub trait OidcClients: Send + Sync {
    /// Creates the app's OIDC client or replaces its settings (keeping `created_at`), if
    /// `client.idp_id` is still the app's IdP configuration.
    async fn put_oidc_client(&self, client: &OidcClient, audit: &AuditEntry) -> Result<(), PutOidcClientError>;
    async fn get_oidc_client(&self, app: &AppId) -> Result<Option<OidcClient>, StoreError>;
    /// Deletes the app's OIDC client and its pending sign-ins. `false` when there was none.
    async fn delete_oidc_client(&self, app: &AppId, audit: &AuditEntry) -> Result<bool, StoreError>;
    /// Up to `limit` sealed client secrets, by app id, after `after`: for re-sealing.
    async fn oidc_client_secrets(
        &self,
        after: Option<&AppId>,
        limit: u32,
    ) -> Result<Vec<(AppId, SealedBox)>, StoreError>;
    /// Replaces an app's sealed client secret if it still equals `old` (compare-and-set).
    async fn replace_oidc_client_secret(
        &self,
        app: &AppId,
        old: &SealedBox,
        new: &SealedBox,
    ) -> Result<bool, StoreError>;
}

/// Pending sign-ins: single-use states between the authorization request and its callback.
#[async_trait]
pub trait SignInStates: Send + Sync {
    /// Stores a pending sign-in, and the SDK session it completes when one is given, in one
    /// transaction; forgets states and SDK sessions that expired more than a day before
    /// `state.created_at`. `false` (nothing stored) when the app's OIDC client is gone.
    async fn create_sign_in(&self, state: &SignInState, session: Option<&SdkSession>) -> Result<bool, StoreError>;
    /// Deletes and returns the sign-in state with this hash and purpose: a state can be
    /// consumed once, and only at its own callback.
    async fn consume_sign_in_state(
        &self,
        state_hash: &str,
        purpose: SignInPurpose,
    ) -> Result<Option<SignInState>, StoreError>;
}

/// SDK sessions: an app's sign-in that ends by handing its ID token to the app, once.
#[async_trait]
pub trait SdkSessions: Send + Sync {
    /// The app's SDK session (another app's is `None`).
    async fn get_sdk_session(&self, app: &AppId, id: &SdkSessionId) -> Result<Option<SdkSession>, StoreError>;
    /// Completes or fails a pending session at `now`, with its audit row. `false` (nothing
    /// written) when the session is gone or no longer pending.
    async fn finish_sdk_session(
        &self,
        id: &SdkSessionId,
        outcome: SdkOutcome<'_>,
        now: UnixTime,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;
    /// Takes the sealed ID token out of the app's complete session, recording the delivery at
    /// `now`: of two concurrent callers exactly one gets it, and nobody ever gets it again.
    async fn take_sdk_token(
        &self,
        app: &AppId,
        id: &SdkSessionId,
        now: UnixTime,
    ) -> Result<Option<SealedBox>, StoreError>;
}

/// Wallet sessions: a signed-in user's browser session on the Wallet pages, by id hash.
#[async_trait]
pub trait WalletSessions: Send + Sync {
    /// Stores a new Wallet session with its audit row; forgets sessions that expired before
    /// `session.created_at`.
    async fn create_wallet_session(&self, session: &WalletSession, audit: &AuditEntry) -> Result<(), StoreError>;
    async fn get_wallet_session(&self, id_hash: &str) -> Result<Option<WalletSession>, StoreError>;
    /// Deletes a Wallet session, with an audit row when one is given. `false` when it was gone.
    async fn delete_wallet_session(&self, id_hash: &str, audit: Option<&AuditEntry>) -> Result<bool, StoreError>;
}

/// An authorization request to send the browser to (OpenID Connect Core section 3.1.2.1).
/// `Debug` leaves out the state, nonce and verifier.
#[derive(Clone)]
pub struct AuthorizationRequest<'a> {
    pub authorization_endpoint: &'a str,
    pub client_id: &'a OidcClientId,
    pub redirect_uri: &'a str,
    /// Space-separated scopes; always includes `openid`.
    pub scope: &'a str,
    pub state: &'a str,
    pub nonce: &'a str,
    /// The PKCE verifier; the request carries its S256 challenge.
    pub pkce_verifier: &'a str,
}

impl fmt::Debug for AuthorizationRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationRequest")
            .field("authorization_endpoint", &self.authorization_endpoint)
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// The IdP's token endpoint and the app's client credentials, opened for one call.
#[derive(Debug, Clone)]
pub struct OidcEndpoint<'a> {
    pub token_endpoint: &'a str,
    pub client_id: &'a OidcClientId,
    pub client_secret: &'a Secret,
    pub auth_method: TokenAuthMethod,
}

/// Why an OpenID Connect call failed. Messages carry error codes only, never a secret or an
/// IdP's free-text description (which may echo input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider's {0} is not a usable URL")]
    InvalidEndpoint(&'static str),
    /// The token endpoint answered with an OAuth error (`error` code only).
    #[error("the token endpoint answered with error `{0}`")]
    Rejected(String),
    /// Network failure, timeout, 5xx, or an answer that is not a token response.
    #[error("the token endpoint could not be reached or answered badly: {0}")]
    Transient(String),
    /// A successful token response without an `id_token`.
    #[error("the token response has no id_token")]
    NoIdToken,
}

/// An OpenID Connect relying party's calls to the IdP.
#[async_trait]
pub trait OidcCodeClient: Send + Sync {
    /// The authorization URL: `response_type=code`, `client_id`, `redirect_uri`, `scope`,
    /// `state`, `nonce`, `code_challenge` (S256 of the verifier), `code_challenge_method=S256`.
    fn authorization_url(&self, request: &AuthorizationRequest<'_>) -> Result<String, OidcError>;
    /// Exchanges an authorization code (with the PKCE verifier and the same redirect URI) and
    /// returns the ID token, unverified.
    async fn exchange_code(
        &self,
        endpoint: &OidcEndpoint<'_>,
        code: &str,
        redirect_uri: &str,
        pkce_verifier: &str,
    ) -> Result<Secret, OidcError>;
}
