//! A fake OAuth provider whose refreshes can be held open, to create races on purpose.

use async_trait::async_trait;
use custody_identity::Secret;
use custody_vault::grant::{TokenKind, TokenSet};
use custody_vault::ports::{OAuthClient, OAuthEndpoint, OAuthError};
use std::sync::{Mutex, PoisonError};
use tokio::sync::watch;

/// What the next refreshes answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshAnswer {
    /// New tokens: `access-<n>` (the n-th refresh), valid for `expires_in` seconds, and a new
    /// refresh token `refresh-<n>` when `rotate`.
    Tokens { expires_in: i64, rotate: bool },
    /// The provider refuses.
    Fail(OAuthError),
}

/// An [`OAuthClient`] that answers from memory and counts its calls. While held
/// ([`FakeOAuth::hold_refreshes`]), a refresh waits after it has been counted, until
/// [`FakeOAuth::release_refreshes`]: a test can line up concurrent callers behind one attempt.
#[derive(Debug)]
pub struct FakeOAuth {
    answer: Mutex<RefreshAnswer>,
    held: watch::Sender<bool>,
    calls: watch::Sender<usize>,
    refresh_tokens_seen: Mutex<Vec<String>>,
    revoked: Mutex<Vec<(String, TokenKind)>>,
}

impl Default for FakeOAuth {
    fn default() -> Self {
        Self {
            answer: Mutex::new(RefreshAnswer::Tokens { expires_in: 3600, rotate: true }),
            held: watch::Sender::new(false),
            calls: watch::Sender::new(0),
            refresh_tokens_seen: Mutex::default(),
            revoked: Mutex::default(),
        }
    }
}

impl FakeOAuth {
    pub fn answer_refreshes_with(&self, answer: RefreshAnswer) {
        *self.answer.lock().unwrap_or_else(PoisonError::into_inner) = answer;
    }

    /// Refreshes wait (after being counted) until [`FakeOAuth::release_refreshes`].
    pub fn hold_refreshes(&self) {
        self.held.send_replace(true);
    }

    pub fn release_refreshes(&self) {
        self.held.send_replace(false);
    }

    /// How many refreshes reached the provider.
    pub fn refresh_calls(&self) -> usize {
        *self.calls.borrow()
    }

    /// Waits until at least `n` refreshes reached the provider (no timer: it wakes on the call).
    pub async fn refreshes_reached(&self, n: usize) {
        let mut calls = self.calls.subscribe();
        let _ = calls.wait_for(|c| *c >= n).await;
    }

    /// The refresh tokens presented, in order.
    pub fn refresh_tokens_seen(&self) -> Vec<String> {
        self.refresh_tokens_seen.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The tokens revoked at the provider, in order.
    pub fn revoked(&self) -> Vec<(String, TokenKind)> {
        self.revoked.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[async_trait]
impl OAuthClient for FakeOAuth {
    fn authorization_url(
        &self,
        endpoint: &OAuthEndpoint<'_>,
        redirect_uri: &str,
        _scopes: &[String],
        state: &str,
        _pkce_verifier: &str,
    ) -> Result<String, OAuthError> {
        Ok(format!(
            "{}?client_id={}&redirect_uri={redirect_uri}&state={state}",
            endpoint.authorization_url, endpoint.client_id
        ))
    }

    async fn exchange_code(
        &self,
        _endpoint: &OAuthEndpoint<'_>,
        code: &str,
        _redirect_uri: &str,
        _pkce_verifier: &str,
    ) -> Result<TokenSet, OAuthError> {
        Ok(TokenSet {
            access_token: Secret::new(format!("access-for-{code}")),
            refresh_token: Some(Secret::new(format!("refresh-for-{code}"))),
            token_type: "Bearer".into(),
            expires_in: Some(3600),
            scopes: None,
        })
    }

    async fn refresh(&self, _endpoint: &OAuthEndpoint<'_>, refresh_token: &Secret) -> Result<TokenSet, OAuthError> {
        self.refresh_tokens_seen.lock().unwrap_or_else(PoisonError::into_inner).push(refresh_token.expose().to_owned());
        let mut n = 0;
        self.calls.send_modify(|c| {
            *c += 1;
            n = *c;
        });
        let mut held = self.held.subscribe();
        let _ = held.wait_for(|held| !held).await;
        let answer = self.answer.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match answer {
            RefreshAnswer::Tokens { expires_in, rotate } => Ok(TokenSet {
                access_token: Secret::new(format!("access-{n}")),
                refresh_token: rotate.then(|| Secret::new(format!("refresh-{n}"))),
                token_type: "Bearer".into(),
                expires_in: Some(expires_in),
                scopes: None,
            }),
            RefreshAnswer::Fail(e) => Err(e),
        }
    }

    async fn revoke(
        &self,
        _revocation_url: &str,
        _client_id: &str,
        _client_secret: &Secret,
        token: &Secret,
        kind: TokenKind,
    ) -> Result<(), OAuthError> {
        self.revoked.lock().unwrap_or_else(PoisonError::into_inner).push((token.expose().to_owned(), kind));
        Ok(())
    }
}
