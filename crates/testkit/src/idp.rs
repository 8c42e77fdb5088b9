//! A fake OpenID provider: discovery, ID tokens and their verification, the code exchange.

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use custody_identity::idp::IdpConfig;
use custody_identity::issuer::IssuerUrl;
use custody_identity::jwt::TokenRejection;
use custody_identity::ports::{Discovery, DiscoveryDocument, DiscoveryError, FetchedKeys, TokenVerifier};
use custody_identity::signin::ports::{AuthorizationRequest, OidcCodeClient, OidcEndpoint, OidcError};
use custody_identity::{Secret, UnixTime};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// The signature segment of the tokens [`FakeIdp::token`] mints; any other fails verification.
const SIGNATURE: &str = "fake-signature";

/// What the last authorization request carried (the values a browser would bring back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationSeen {
    pub state: String,
    pub nonce: String,
    pub redirect_uri: String,
}

/// One identity provider playing every part Custody talks to: [`Discovery`],
/// [`TokenVerifier`] (tokens are compact JWS whose signature segment is a fixed marker; the
/// payload is returned as is, for [`custody_identity::jwt::validate_claims`] to judge) and
/// [`OidcCodeClient`] (codes are registered with [`FakeIdp::issue_code`]).
#[derive(Debug)]
pub struct FakeIdp {
    issuer: String,
    codes: Mutex<HashMap<String, String>>,
    last_authorization: Mutex<Option<AuthorizationSeen>>,
}

impl FakeIdp {
    pub fn new(issuer: impl Into<String>) -> Self {
        Self { issuer: issuer.into(), codes: Mutex::default(), last_authorization: Mutex::default() }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// A token with these claims (an object), which [`TokenVerifier::verify_signature`] accepts.
    pub fn token(&self, claims: &Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"fake"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{header}.{payload}.{SIGNATURE}")
    }

    /// The code exchange will answer `code` with `id_token`, once.
    pub fn issue_code(&self, code: &str, id_token: String) {
        self.codes.lock().unwrap_or_else(PoisonError::into_inner).insert(code.to_owned(), id_token);
    }

    /// The state, nonce and redirect URI of the last authorization URL built.
    pub fn last_authorization(&self) -> Option<AuthorizationSeen> {
        self.last_authorization.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[async_trait]
impl Discovery for FakeIdp {
    async fn discover(&self, issuer_url: &IssuerUrl) -> Result<DiscoveryDocument, DiscoveryError> {
        let _ = issuer_url;
        Ok(DiscoveryDocument {
            issuer: self.issuer.clone(),
            jwks_uri: format!("{}/jwks", self.issuer),
            authorization_endpoint: Some(format!("{}/authorize", self.issuer)),
            token_endpoint: Some(format!("{}/token", self.issuer)),
            end_session_endpoint: None,
            signing_algs: vec!["RS256".into()],
        })
    }
}

#[async_trait]
impl TokenVerifier for FakeIdp {
    async fn verify_signature(
        &self,
        _config: &IdpConfig,
        token: &str,
    ) -> Result<std::sync::Arc<Map<String, Value>>, TokenRejection> {
        let mut parts = token.split('.');
        let (Some(_), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenRejection::Malformed);
        };
        if signature != SIGNATURE {
            return Err(TokenRejection::BadSignature);
        }
        let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenRejection::Malformed)?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(claims)) => Ok(std::sync::Arc::new(claims)),
            _ => Err(TokenRejection::Malformed),
        }
    }

    async fn forget(&self, _config: &IdpConfig) {}

    /// The fake has one key, `fake`, and no notion of when it was fetched.
    async fn refresh_keys(&self, _config: &IdpConfig) -> Result<FetchedKeys, TokenRejection> {
        Ok(FetchedKeys { kids: vec!["fake".into()], fetched_at: UnixTime(0) })
    }
}

#[async_trait]
impl OidcCodeClient for FakeIdp {
    fn authorization_url(&self, request: &AuthorizationRequest<'_>) -> Result<String, OidcError> {
        *self.last_authorization.lock().unwrap_or_else(PoisonError::into_inner) = Some(AuthorizationSeen {
            state: request.state.to_owned(),
            nonce: request.nonce.to_owned(),
            redirect_uri: request.redirect_uri.to_owned(),
        });
        Ok(format!(
            "{}?client_id={}&state={}",
            request.authorization_endpoint,
            request.client_id.as_str(),
            request.state
        ))
    }

    async fn exchange_code(
        &self,
        _endpoint: &OidcEndpoint<'_>,
        code: &str,
        _redirect_uri: &str,
        _pkce_verifier: &str,
    ) -> Result<Secret, OidcError> {
        let token = self.codes.lock().unwrap_or_else(PoisonError::into_inner).remove(code);
        token.map(Secret::new).ok_or_else(|| OidcError::Rejected("invalid_grant".into()))
    }
}
