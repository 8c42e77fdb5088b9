//! Grants (a user's connection to a provider) and their credentials (the sealed tokens).

use crate::provider::ProviderName;
use custody_identity::cipher::SealedBox;
use custody_identity::{AppId, Secret, UnixTime, UserId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A grant's id: a canonical UUID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GrantId(String);

impl GrantId {
    pub fn parse(s: &str) -> Result<Self, custody_identity::InvalidId> {
        // Reuse the identity crate's canonical-UUID rule.
        custody_identity::UserId::parse(s).map(|u| GrantId(u.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// As [`GrantId::parse`], keeping the string's buffer.
impl TryFrom<String> for GrantId {
    type Error = custody_identity::InvalidId;
    fn try_from(s: String) -> Result<Self, custody_identity::InvalidId> {
        custody_identity::UserId::try_from(s).map(|u| GrantId(u.into()))
    }
}

impl From<GrantId> for String {
    fn from(g: GrantId) -> String {
        g.0
    }
}

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A grant's state. Only `Active` grants hand out tokens; `Expired` needs the user to connect
/// again; `Revoked` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantStatus {
    Active,
    Expired,
    Revoked,
}

impl GrantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantStatus::Active => "active",
            GrantStatus::Expired => "expired",
            GrantStatus::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(GrantStatus::Active),
            "expired" => Some(GrantStatus::Expired),
            "revoked" => Some(GrantStatus::Revoked),
            _ => None,
        }
    }
}

/// A grant as stored. Never holds a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: GrantId,
    pub app_id: AppId,
    pub user_id: UserId,
    pub provider: ProviderName,
    pub status: GrantStatus,
    pub scopes: Vec<String>,
    /// The account at the provider, when known (an email or login).
    pub account: Option<String>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
    pub last_used_at: Option<UnixTime>,
    pub revoked_at: Option<UnixTime>,
}

/// A grant's sealed tokens. Each box is bound to the grant id (see [`Credential::aad`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub grant_id: GrantId,
    pub access_token: SealedBox,
    pub refresh_token: Option<SealedBox>,
    pub token_type: String,
    pub expires_at: Option<UnixTime>,
    /// Bumped on every change, so a refresh can tell whether someone else already refreshed.
    pub version: i64,
}

/// Which token of a credential a sealed box holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

impl Credential {
    /// The associated data for a grant's token: grant id and token kind, so a box moved to
    /// another grant, or swapped between access and refresh, fails to open.
    pub fn aad(grant: &GrantId, kind: TokenKind) -> Vec<u8> {
        let kind = match kind {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        };
        format!("grant:{grant}:{kind}").into_bytes()
    }

    /// Whether the access token expires within `window_secs` of `now` (and so should be
    /// refreshed before it is handed out). A token without an expiry never needs refreshing.
    pub fn needs_refresh(&self, now: UnixTime, window_secs: i64) -> bool {
        self.expires_at.is_some_and(|exp| exp.seconds() <= now.seconds().saturating_add(window_secs))
    }
}

/// Tokens in the clear, as a provider issued them; only ever held briefly in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSet {
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    pub token_type: String,
    /// Seconds from issue, as the provider said.
    pub expires_in: Option<i64>,
    /// The granted scopes when the provider said (space-separated in OAuth).
    pub scopes: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_window() {
        let c = |exp: Option<i64>| Credential {
            grant_id: GrantId::parse("00000000-0000-4000-8000-000000000001").unwrap(),
            access_token: SealedBox(vec![]),
            refresh_token: None,
            token_type: "Bearer".into(),
            expires_at: exp.map(UnixTime),
            version: 1,
        };
        assert!(!c(None).needs_refresh(UnixTime(100), 60));
        assert!(!c(Some(161)).needs_refresh(UnixTime(100), 60));
        assert!(c(Some(160)).needs_refresh(UnixTime(100), 60));
        assert!(c(Some(50)).needs_refresh(UnixTime(100), 60));
    }

    #[test]
    fn aad_binds_grant_and_kind() {
        let a = GrantId::parse("00000000-0000-4000-8000-000000000001").unwrap();
        let b = GrantId::parse("00000000-0000-4000-8000-000000000002").unwrap();
        assert_ne!(Credential::aad(&a, TokenKind::Access), Credential::aad(&b, TokenKind::Access));
        assert_ne!(Credential::aad(&a, TokenKind::Access), Credential::aad(&a, TokenKind::Refresh));
    }
}
