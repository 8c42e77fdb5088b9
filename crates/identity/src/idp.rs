//! An app's identity-provider configuration: the kind's name, the claim mappings and the lock
//! that freezes them once the first user has been resolved through them. What a kind means
//! (detection, defaults, webhooks) is its adapter's ([`crate::kinds`]).

use crate::claims::{ClaimMappings, ClaimPath};
use crate::ids::{AppId, IdpId};
use crate::issuer::Issuer;
use crate::time::UnixTime;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// The name of a kind of identity provider (`auth0`, `clerk`, `okta`, `keycloak`,
/// `custom_oidc`, ...): what decides claim defaults and the webhook scheme, through the adapter
/// registered under this name ([`crate::kinds::IdpKinds`]). The domain knows no kind by name;
/// a name is 1 to 32 lowercase ASCII letters, digits or `_`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdpKind(Cow<'static, str>);

/// The longest kind name, in bytes.
const MAX_KIND_LEN: usize = 32;

impl IdpKind {
    /// A kind named by an adapter. The name must be valid (see the type's docs); the registry
    /// checks every adapter's name when it is built.
    pub const fn from_static(name: &'static str) -> IdpKind {
        IdpKind(Cow::Borrowed(name))
    }

    /// Parses a kind name; `None` when it is not of the allowed form. Whether an adapter is
    /// registered under it is the registry's question.
    pub fn parse(s: &str) -> Option<IdpKind> {
        Self::is_valid(s).then(|| IdpKind(Cow::Owned(s.to_owned())))
    }

    /// Whether `s` is of the allowed form.
    pub fn is_valid(s: &str) -> bool {
        let mut bytes = s.bytes();
        s.len() <= MAX_KIND_LEN
            && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
            && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    }

    /// The stable text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for IdpKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for IdpKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        IdpKind::parse(&text).ok_or_else(|| {
            serde::de::Error::custom("expected an identity provider kind: 1 to 32 lowercase letters, digits or `_`")
        })
    }
}

/// Claim names an operator asked for; omitted ones take the detected defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestedClaims {
    pub user_id: Option<ClaimPath>,
    /// `Some(None)` asks explicitly for no group claim.
    pub group: Option<Option<ClaimPath>>,
    /// `Some(None)` asks explicitly for no role claim.
    pub role: Option<Option<ClaimPath>>,
}

impl RequestedClaims {
    /// The mappings that result from applying these requests over `base`.
    pub fn over(&self, base: &ClaimMappings) -> ClaimMappings {
        ClaimMappings {
            user_id: self.user_id.clone().unwrap_or_else(|| base.user_id.clone()),
            group: self.group.clone().unwrap_or_else(|| base.group.clone()),
            role: self.role.clone().unwrap_or_else(|| base.role.clone()),
        }
    }
}

/// A stored IdP configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpConfig {
    pub id: IdpId,
    pub app_id: AppId,
    pub kind: IdpKind,
    pub issuer: Issuer,
    pub jwks_uri: String,
    pub audience: Option<String>,
    pub claims: ClaimMappings,
    /// When the first user was resolved through the mappings; `Some` means locked.
    pub claims_locked_at: Option<UnixTime>,
    /// Bumped on every change; a first-user transaction checks it so a racing change can never
    /// leave users created under mappings other than the locked ones.
    pub version: i64,
    pub created_at: UnixTime,
    /// The discovery document's endpoints, kept for sign-in.
    pub endpoints: IdpEndpoints,
}

/// Endpoints from the IdP's discovery document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdpEndpoints {
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
}

impl IdpConfig {
    /// Whether the claim mappings are frozen.
    pub fn claims_locked(&self) -> bool {
        self.claims_locked_at.is_some()
    }
}

/// A configuration to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIdpConfig {
    pub kind: IdpKind,
    pub issuer: Issuer,
    pub jwks_uri: String,
    pub audience: Option<String>,
    pub claims: ClaimMappings,
    pub endpoints: IdpEndpoints,
}

/// An operator's change to an IdP configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdpPatch {
    /// `Some(None)` clears the audience.
    pub audience: Option<Option<String>>,
    pub claims: RequestedClaims,
}

/// A patch that would change locked claim mappings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the claim mappings are locked because users have signed in; `{field}` cannot change")]
pub struct ClaimMappingsLocked {
    /// The first mapping the patch would change (`user_id`, `group` or `role`).
    pub field: &'static str,
}

impl IdpPatch {
    /// The configuration after this patch, or [`ClaimMappingsLocked`] when the mappings are
    /// locked and the patch changes one of them. Repeating the current values is no change.
    /// The version is bumped only when something actually changes.
    pub fn apply(&self, current: &IdpConfig) -> Result<IdpConfig, ClaimMappingsLocked> {
        let claims = self.claims.over(&current.claims);
        if current.claims_locked() {
            let changed = if claims.user_id != current.claims.user_id {
                Some("user_id")
            } else if claims.group != current.claims.group {
                Some("group")
            } else if claims.role != current.claims.role {
                Some("role")
            } else {
                None
            };
            if let Some(field) = changed {
                return Err(ClaimMappingsLocked { field });
            }
        }
        let audience = self.audience.clone().unwrap_or_else(|| current.audience.clone());
        let mut next = current.clone();
        if claims != current.claims || audience != current.audience {
            next.claims = claims;
            next.audience = audience;
            next.version = current.version + 1;
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names() {
        for good in ["auth0", "custom_oidc", "okta2"] {
            assert_eq!(IdpKind::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "Auth0", "2fa", "pinger-federate", "a b", &"k".repeat(33)] {
            assert_eq!(IdpKind::parse(bad), None, "{bad:?}");
        }
        let json: IdpKind = serde_json::from_str("\"okta\"").unwrap();
        assert_eq!(json, IdpKind::from_static("okta"));
        assert!(serde_json::from_str::<IdpKind>("\"OKTA\"").is_err());
    }

    fn config(locked: bool) -> IdpConfig {
        IdpConfig {
            id: IdpId::parse("00000000-0000-4000-8000-000000000001").unwrap(),
            app_id: AppId::parse("00000000-0000-4000-8000-000000000002").unwrap(),
            kind: IdpKind::from_static("custom_oidc"),
            issuer: Issuer::new("https://idp.example.com"),
            jwks_uri: "https://idp.example.com/jwks".into(),
            audience: None,
            claims: ClaimMappings {
                user_id: ClaimPath::subject(),
                group: Some(ClaimPath::parse("groups").unwrap()),
                role: None,
            },
            claims_locked_at: locked.then_some(UnixTime(5)),
            version: 3,
            created_at: UnixTime(1),
            endpoints: IdpEndpoints::default(),
        }
    }

    #[test]
    fn unlocked_patch_changes_and_bumps_version() {
        let patch = IdpPatch {
            claims: RequestedClaims { role: Some(Some(ClaimPath::parse("roles").unwrap())), ..Default::default() },
            ..Default::default()
        };
        let next = patch.apply(&config(false)).unwrap();
        assert_eq!(next.claims.role.unwrap().as_str(), "roles");
        assert_eq!(next.version, 4);
    }

    #[test]
    fn locked_patch_rules() {
        let locked = config(true);
        let change_group =
            IdpPatch { claims: RequestedClaims { group: Some(None), ..Default::default() }, ..Default::default() };
        assert_eq!(change_group.apply(&locked), Err(ClaimMappingsLocked { field: "group" }));
        let change_user = IdpPatch {
            claims: RequestedClaims { user_id: Some(ClaimPath::parse("uid").unwrap()), ..Default::default() },
            ..Default::default()
        };
        assert_eq!(change_user.apply(&locked), Err(ClaimMappingsLocked { field: "user_id" }));
        let same = IdpPatch {
            claims: RequestedClaims {
                user_id: Some(ClaimPath::subject()),
                group: Some(Some(ClaimPath::parse("groups").unwrap())),
                role: Some(None),
            },
            ..Default::default()
        };
        let next = same.apply(&locked).unwrap();
        assert_eq!(next.version, 3, "repeating the current values changes nothing");
        let audience = IdpPatch { audience: Some(Some("api".into())), ..Default::default() };
        let next = audience.apply(&locked).unwrap();
        assert_eq!(next.audience.as_deref(), Some("api"));
        assert_eq!(next.version, 4);
    }
}
