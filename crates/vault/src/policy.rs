//! Policies: which users may use a provider. No policy lets every active user; a policy lets only
//! users holding one of its groups or one of its roles. Evaluation fails closed: anything that
//! cannot be evaluated denies.

use crate::provider::ProviderName;
use custody_identity::{AppId, UnixTime, User, UserStatus};
use std::collections::BTreeSet;

/// A provider's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub app_id: AppId,
    pub provider: ProviderName,
    pub allow_groups: BTreeSet<String>,
    pub allow_roles: BTreeSet<String>,
    /// Whether the grants of this provider may be handed out or only used through the proxy.
    pub token_access: TokenAccess,
    pub updated_at: UnixTime,
}

/// How an app may use the access tokens of a provider's grants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum TokenAccess {
    /// `POST /v1/token` hands the token out; the proxy works too.
    #[default]
    Handout,
    /// Only the proxy uses the token; it never leaves Custody.
    ProxyOnly,
}

impl TokenAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenAccess::Handout => "handout",
            TokenAccess::ProxyOnly => "proxy_only",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "handout" => Some(TokenAccess::Handout),
            "proxy_only" => Some(TokenAccess::ProxyOnly),
            _ => None,
        }
    }
}

/// Whether a token of a grant under `policy` may leave Custody (be handed out). Fails closed: an
/// unreadable policy forbids it.
pub fn allows_handout(policy: &PolicyLookup) -> bool {
    match policy {
        PolicyLookup::None => true,
        PolicyLookup::Found(p) => p.token_access == TokenAccess::Handout,
        PolicyLookup::Unreadable => false,
    }
}

/// What the store found for a provider's policy. `Unreadable` covers a stored policy that could
/// not be decoded; it denies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyLookup {
    None,
    Found(Policy),
    Unreadable,
}

/// The outcome of a policy check, with the reason for a denial (safe to show).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyDecision {
    Allow,
    Deny(String),
}

impl PolicyDecision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, PolicyDecision::Allow)
    }
}

/// Decides whether `user` may use the provider under `policy`.
pub fn evaluate(policy: &PolicyLookup, user: &User) -> PolicyDecision {
    if user.status != UserStatus::Active {
        return PolicyDecision::Deny("the user is not active".into());
    }
    match policy {
        PolicyLookup::None => PolicyDecision::Allow,
        PolicyLookup::Unreadable => PolicyDecision::Deny("the provider's policy could not be evaluated".into()),
        PolicyLookup::Found(p) => {
            if p.allow_groups.iter().any(|g| user.groups.contains(g))
                || p.allow_roles.iter().any(|r| user.roles.contains(r))
            {
                PolicyDecision::Allow
            } else {
                PolicyDecision::Deny(format!("the policy for `{}` requires one of its groups or roles", p.provider))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use custody_identity::UserId;

    fn user(groups: &[&str], roles: &[&str], status: UserStatus) -> User {
        User {
            id: UserId::parse("00000000-0000-4000-8000-000000000001").unwrap(),
            app_id: AppId::parse("00000000-0000-4000-8000-000000000002").unwrap(),
            subject: "s".into(),
            status,
            email: None,
            name: None,
            groups: groups.iter().map(|s| s.to_string()).collect(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            created_at: UnixTime(0),
            last_seen_at: None,
        }
    }

    fn policy(groups: &[&str], roles: &[&str]) -> PolicyLookup {
        PolicyLookup::Found(Policy {
            app_id: AppId::parse("00000000-0000-4000-8000-000000000002").unwrap(),
            provider: ProviderName::parse("github").unwrap(),
            allow_groups: groups.iter().map(|s| s.to_string()).collect(),
            allow_roles: roles.iter().map(|s| s.to_string()).collect(),
            token_access: TokenAccess::Handout,
            updated_at: UnixTime(0),
        })
    }

    #[test]
    fn no_policy_allows_active_users_only() {
        assert!(evaluate(&PolicyLookup::None, &user(&[], &[], UserStatus::Active)).is_allowed());
        assert!(!evaluate(&PolicyLookup::None, &user(&[], &[], UserStatus::Suspended)).is_allowed());
    }

    #[test]
    fn groups_or_roles() {
        let p = policy(&["eng"], &["admin"]);
        assert!(evaluate(&p, &user(&["eng"], &[], UserStatus::Active)).is_allowed());
        assert!(evaluate(&p, &user(&[], &["admin"], UserStatus::Active)).is_allowed());
        assert!(!evaluate(&p, &user(&["sales"], &["viewer"], UserStatus::Active)).is_allowed());
        assert!(
            !evaluate(&policy(&[], &[]), &user(&["eng"], &["admin"], UserStatus::Active)).is_allowed(),
            "an empty policy allows nobody"
        );
    }

    #[test]
    fn proxy_only_forbids_handout_only() {
        assert!(allows_handout(&PolicyLookup::None));
        assert!(allows_handout(&policy(&["eng"], &[])));
        let PolicyLookup::Found(mut p) = policy(&["eng"], &[]) else { unreachable!() };
        p.token_access = TokenAccess::ProxyOnly;
        let lookup = PolicyLookup::Found(p);
        assert!(!allows_handout(&lookup));
        assert!(evaluate(&lookup, &user(&["eng"], &[], UserStatus::Active)).is_allowed(), "the proxy may still use it");
        assert!(!allows_handout(&PolicyLookup::Unreadable));
        assert_eq!(TokenAccess::parse("proxy_only"), Some(TokenAccess::ProxyOnly));
        assert_eq!(TokenAccess::parse("handout").map(TokenAccess::as_str), Some("handout"));
        assert_eq!(TokenAccess::parse("both"), None);
    }

    #[test]
    fn unreadable_denies() {
        assert!(!evaluate(&PolicyLookup::Unreadable, &user(&["eng"], &["admin"], UserStatus::Active)).is_allowed());
    }
}
