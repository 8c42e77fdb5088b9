//! An app's identity-provider configuration: kind detection, claim defaults, and the lock that
//! freezes the claim mappings once the first user has been resolved through them.

use crate::claims::{ClaimMappings, ClaimPath};
use crate::ids::{AppId, IdpId};
use crate::issuer::{Issuer, IssuerUrl};
use crate::time::UnixTime;
use serde::{Deserialize, Serialize};

/// The flavour of identity provider, which decides claim defaults and the webhook scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdpKind {
    Auth0,
    Clerk,
    Okta,
    Keycloak,
    CustomOidc,
}

impl IdpKind {
    /// Detection from the issuer URL: `*.auth0.com` is Auth0; `*.clerk.accounts.dev` or a host
    /// starting `clerk.` is Clerk; `*.okta.com` or `*.oktapreview.com` is Okta; a path with a
    /// `/realms/` segment is Keycloak; anything else is a custom OIDC provider.
    pub fn detect(issuer_url: &IssuerUrl) -> IdpKind {
        let host = issuer_url.host();
        if host.ends_with(".auth0.com") {
            IdpKind::Auth0
        } else if host.ends_with(".clerk.accounts.dev") || host.starts_with("clerk.") {
            IdpKind::Clerk
        } else if host.ends_with(".okta.com") || host.ends_with(".oktapreview.com") {
            IdpKind::Okta
        } else if issuer_url.path_segments().windows(2).any(|w| w[0] == "realms") {
            IdpKind::Keycloak
        } else {
            IdpKind::CustomOidc
        }
    }

    /// The claim mappings a new configuration of this kind starts with.
    pub fn default_claims(self) -> ClaimMappings {
        match self {
            IdpKind::Clerk => ClaimMappings {
                user_id: ClaimPath::subject(),
                group: Some(ClaimPath::parse("org_memberships").unwrap_or_else(|_| ClaimPath::subject())),
                role: None,
            },
            // Okta puts the user's groups in `groups` once a groups claim is added to the
            // authorization server (docs/idp-okta.md).
            IdpKind::Okta => ClaimMappings {
                user_id: ClaimPath::subject(),
                group: Some(ClaimPath::parse("groups").unwrap_or_else(|_| ClaimPath::subject())),
                role: None,
            },
            // Keycloak's realm roles.
            IdpKind::Keycloak => ClaimMappings {
                user_id: ClaimPath::subject(),
                group: None,
                role: Some(ClaimPath::parse("realm_access.roles").unwrap_or_else(|_| ClaimPath::subject())),
            },
            IdpKind::Auth0 | IdpKind::CustomOidc => ClaimMappings::subject_only(),
        }
    }

    /// The stable text form (`auth0`, `clerk`, `okta`, `keycloak`, `custom_oidc`).
    pub fn as_str(self) -> &'static str {
        match self {
            IdpKind::Auth0 => "auth0",
            IdpKind::Clerk => "clerk",
            IdpKind::Okta => "okta",
            IdpKind::Keycloak => "keycloak",
            IdpKind::CustomOidc => "custom_oidc",
        }
    }

    /// Parses the stable text form.
    pub fn parse(s: &str) -> Option<IdpKind> {
        match s {
            "auth0" => Some(IdpKind::Auth0),
            "clerk" => Some(IdpKind::Clerk),
            "okta" => Some(IdpKind::Okta),
            "keycloak" => Some(IdpKind::Keycloak),
            "custom_oidc" => Some(IdpKind::CustomOidc),
            _ => None,
        }
    }

    /// Whether this kind's webhooks are signed with a secret the IdP provides (Clerk's Svix
    /// `whsec_...`) rather than one Custody generates.
    pub fn webhook_secret_is_provided(self) -> bool {
        self == IdpKind::Clerk
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
    use crate::issuer::IssuerUrlPolicy;

    fn kind_of(url: &str) -> IdpKind {
        IdpKind::detect(&IssuerUrl::parse(url, IssuerUrlPolicy::HttpsOnly).unwrap())
    }

    #[test]
    fn detection_table() {
        assert_eq!(kind_of("https://acme.us.auth0.com/"), IdpKind::Auth0);
        assert_eq!(kind_of("https://ACME.AUTH0.COM"), IdpKind::Auth0);
        assert_eq!(kind_of("https://auth0.com.evil.example"), IdpKind::CustomOidc);
        assert_eq!(kind_of("https://happy-cat-12.clerk.accounts.dev"), IdpKind::Clerk);
        assert_eq!(kind_of("https://clerk.acme.com"), IdpKind::Clerk);
        assert_eq!(kind_of("https://notclerk.acme.com"), IdpKind::CustomOidc);
        assert_eq!(kind_of("https://login.microsoftonline.com/tid/v2.0"), IdpKind::CustomOidc);
        assert_eq!(kind_of("https://dev-123456.okta.com/oauth2/default"), IdpKind::Okta);
        assert_eq!(kind_of("https://acme.oktapreview.com"), IdpKind::Okta);
        assert_eq!(kind_of("https://okta.com.evil.example"), IdpKind::CustomOidc);
        assert_eq!(kind_of("https://sso.acme.com/realms/acme"), IdpKind::Keycloak);
        assert_eq!(kind_of("https://sso.acme.com/auth/realms/acme/"), IdpKind::Keycloak);
        assert_eq!(kind_of("https://sso.acme.com/realms/"), IdpKind::CustomOidc);
        assert_eq!(kind_of("https://sso.acme.com/realmsx/acme"), IdpKind::CustomOidc);
    }

    #[test]
    fn defaults_per_kind() {
        assert_eq!(IdpKind::Clerk.default_claims().group.unwrap().as_str(), "org_memberships");
        assert_eq!(IdpKind::Auth0.default_claims(), ClaimMappings::subject_only());
        assert_eq!(IdpKind::CustomOidc.default_claims().user_id.as_str(), "sub");
        assert_eq!(IdpKind::Okta.default_claims().group.unwrap().as_str(), "groups");
        assert_eq!(IdpKind::Keycloak.default_claims().role.unwrap().as_str(), "realm_access.roles");
        assert_eq!(IdpKind::Keycloak.default_claims().group, None);
        for k in [IdpKind::Auth0, IdpKind::Clerk, IdpKind::Okta, IdpKind::Keycloak, IdpKind::CustomOidc] {
            assert_eq!(IdpKind::parse(k.as_str()), Some(k));
        }
    }

    fn config(locked: bool) -> IdpConfig {
        IdpConfig {
            id: IdpId::parse("00000000-0000-4000-8000-000000000001").unwrap(),
            app_id: AppId::parse("00000000-0000-4000-8000-000000000002").unwrap(),
            kind: IdpKind::CustomOidc,
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
