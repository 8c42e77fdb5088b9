//! The one-read hand-out: `POST /v1/token` with one database round trip.
//!
//! A hand-out applies the identity rules (the API key is live, the token verifies under the
//! app's identity provider, the user it names may act) and then the vault rules (the grant is
//! the user's and active, the policy allows it, the token is fresh). Applied one after the other
//! they read three times: the key with the IdP configuration, the user, the grant. Only the
//! first read decides how the token is verified, and what it returns changes rarely, so
//! [`HandoutService`] remembers it per key and reads everything else, the key included, in one
//! statement ([`HandoutContexts::handout_context`]) after verifying the token under the
//! remembered configuration. That read also confirms what was remembered:
//!
//! - the key must still exist with the same prefix, id and hash (the statement reads nothing
//!   unless it does), so a deleted key fails at once, on every instance (nothing is trusted from
//!   memory alone);
//! - the IdP configuration must still be at the remembered version with its claims locked, else
//!   the request starts over on the ordinary path, which reads the configuration afresh;
//! - the user is read in the same statement, so a deprovisioned or suspended user is refused on
//!   the very next request; a user the token says something new about (or who was not seen
//!   for a while, or never) is resolved on the ordinary path, which writes, and a known user's
//!   grant is then taken from the one read (it was joined on the user's id, which the write
//!   does not change).
//!
//! The audit row is written as every hand-out's is: group-committed, durable before the answer.

use crate::ports::{GrantSelector, HandoutContext, HandoutContexts, HandoutView};
use crate::service::{GrantUseError, Handout, VaultService};
use custody_identity::app::{api_key_prefix, ApiKeyRecord};
use custody_identity::idp::IdpConfig;
use custody_identity::ports::{Clock, StoreError};
use custody_identity::service::{IdentityService, ResolveError};
use custody_identity::{TokenRejection, UnixTime, User};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

/// How long a remembered key record and IdP configuration are used before they are read again
/// on admission. Correctness does not depend on it (every hand-out confirms both in its read);
/// it bounds how long a deleted key's record stays in memory.
pub const REMEMBER_SECS: i64 = 60;

/// The most keys remembered at once; past it, the memory starts over.
const REMEMBER_MAX: usize = 4096;

/// The caller of a hand-out as admitted: its API key record and the app's identity provider
/// configuration, as read at admission or remembered from an earlier one.
#[derive(Debug, Clone)]
pub struct HandoutCaller {
    pub key: ApiKeyRecord,
    pub idp: Option<IdpConfig>,
}

/// Why a hand-out failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoutError {
    /// The API key was deleted (or replaced) since it was admitted.
    #[error("the API key is not valid")]
    KeyNotValid,
    /// The user could not be resolved, or may not act.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The grant could not be used.
    #[error(transparent)]
    Use(#[from] GrantUseError),
}

impl From<StoreError> for HandoutError {
    fn from(e: StoreError) -> Self {
        HandoutError::Use(GrantUseError::from(e))
    }
}

/// The ports of the one-read hand-out.
pub struct HandoutPorts {
    pub contexts: Arc<dyn HandoutContexts>,
    pub clock: Arc<dyn Clock>,
}

impl fmt::Debug for HandoutPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandoutPorts").finish_non_exhaustive()
    }
}

/// The hand-out use case over the identity and vault use cases and the single read.
#[derive(Clone)]
pub struct HandoutService {
    identity: IdentityService,
    vault: VaultService,
    contexts: Arc<dyn HandoutContexts>,
    clock: Arc<dyn Clock>,
    remembered: Arc<RwLock<HashMap<String, Remembered>>>,
}

impl fmt::Debug for HandoutService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandoutService").finish_non_exhaustive()
    }
}

/// A remembered admission.
#[derive(Clone)]
struct Remembered {
    caller: Arc<HandoutCaller>,
    at: UnixTime,
}

impl HandoutService {
    pub fn new(identity: IdentityService, vault: VaultService, ports: HandoutPorts) -> Self {
        HandoutService { identity, vault, contexts: ports.contexts, clock: ports.clock, remembered: Arc::default() }
    }

    /// Admits a presented API key before the request body is read: against the record
    /// remembered for its prefix when the key matches it, else against the store (and remembers
    /// what it read). `None` when the key is not a live key. The hand-out confirms the key in
    /// its own read ([`Self::hand_out`]), so a key deleted meanwhile still fails.
    ///
    /// The caller is shared with the memory (an `Arc`), so admitting a remembered key copies
    /// nothing: its record and IdP configuration are a score of strings.
    pub async fn admit(&self, presented: &str) -> Result<Option<Arc<HandoutCaller>>, StoreError> {
        let Some(prefix) = api_key_prefix(presented) else { return Ok(None) };
        let now = self.clock.now();
        if let Some(remembered) = self.recall(prefix, now) {
            if self.identity.key_matches(presented, &remembered.key) {
                return Ok(Some(remembered));
            }
        }
        let Some((key, idp)) = self.identity.authenticate_api_key_with_idp(presented).await? else {
            self.forget(prefix);
            return Ok(None);
        };
        let caller = Arc::new(HandoutCaller { key, idp });
        self.remember(prefix, &caller, now);
        Ok(Some(caller))
    }

    /// Hands out the token of the grant `selector` names, for the user `token` names, to the
    /// app of `caller`: in one read when the remembered configuration still stands and the
    /// user is known and unchanged; else on the ordinary path (see the module docs).
    pub async fn hand_out(
        &self,
        caller: &HandoutCaller,
        token: &str,
        selector: &GrantSelector,
    ) -> Result<Handout, HandoutError> {
        let Some(config) = caller.idp.as_ref().filter(|c| c.claims_locked()) else {
            // No configuration, or not locked yet: the first sign-in locks it (and writes). What
            // was remembered is then out of date, so the next admission reads it again.
            self.forget(&caller.key.prefix);
            return self.ordinary(&caller.key, token, selector).await;
        };
        let verified = self.identity.verify_user_token(config, token).await?;
        let identity =
            config.claims.extract(&verified.claims).map_err(TokenRejection::from).map_err(ResolveError::from)?;
        let key = &caller.key;
        let context = self.contexts.handout_context(key, &identity.subject, selector).await?;
        let Some(HandoutContext { idp, user, view }) = context else {
            self.forget(&key.prefix);
            return Err(HandoutError::KeyNotValid);
        };
        if !idp.is_some_and(|stamp| stamp.claims_locked && stamp.version == config.version) {
            // Edited since it was remembered: verify again under the stored configuration.
            self.forget(&key.prefix);
            return self.ordinary(key, token, selector).await;
        }
        let now = self.clock.now();
        let user = match user {
            Some(user) if user.settled_by(&identity, now) => user,
            // New, changed or not seen for a while: the ordinary resolution writes.
            stored => {
                let resolved = self.identity.resolve_verified(config, &verified).await;
                let resolved = match resolved {
                    Err(ResolveError::ConfigChanged) => return self.ordinary(key, token, selector).await,
                    other => other?,
                };
                resolved.ensure_active().map_err(ResolveError::from)?;
                // The grant, policy and credential were read joined on the stored user's id, so
                // they are this user's as written (the policy is applied to the user as written
                // below). A user created by this request had nothing to join: read again.
                if stored.is_some_and(|stored| stored.id == resolved.id) {
                    return Ok(self.vault.hand_out_viewed(&resolved, view_of(&resolved, view)).await?);
                }
                return Ok(self.vault.hand_out(&resolved, selector).await?);
            }
        };
        user.ensure_active().map_err(ResolveError::from)?;
        Ok(self.vault.hand_out_viewed(&user, view_of(&user, view)).await?)
    }

    /// The hand-out as three reads: the IdP configuration, the user (written when needed), the
    /// grant.
    async fn ordinary(
        &self,
        key: &ApiKeyRecord,
        token: &str,
        selector: &GrantSelector,
    ) -> Result<Handout, HandoutError> {
        let user = self.identity.resolve_user(&key.app_id, token).await?;
        Ok(self.vault.hand_out(&user, selector).await?)
    }

    fn recall(&self, prefix: &str, now: UnixTime) -> Option<Arc<HandoutCaller>> {
        let remembered = self.remembered.read().unwrap_or_else(PoisonError::into_inner);
        remembered
            .get(prefix)
            .filter(|r| now.0.saturating_sub(r.at.0) < REMEMBER_SECS && r.at.0 <= now.0)
            .map(|r| Arc::clone(&r.caller))
    }

    fn remember(&self, prefix: &str, caller: &Arc<HandoutCaller>, now: UnixTime) {
        let mut remembered = self.remembered.write().unwrap_or_else(PoisonError::into_inner);
        if remembered.len() >= REMEMBER_MAX {
            remembered.clear();
        }
        remembered.insert(prefix.to_owned(), Remembered { caller: Arc::clone(caller), at: now });
    }

    fn forget(&self, prefix: &str) {
        self.remembered.write().unwrap_or_else(PoisonError::into_inner).remove(prefix);
    }
}

/// The grant of the read, only if it is `user`'s (the statement joins it on the user's id, so
/// it always is; checked because a hand-out must never answer with another user's token).
fn view_of(user: &User, view: Option<HandoutView>) -> Option<HandoutView> {
    view.filter(|v| v.grant.user_id == user.id && v.grant.app_id == user.app_id)
}
