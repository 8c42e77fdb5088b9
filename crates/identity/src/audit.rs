//! Audit entries: one per hand-out, refresh, revoke, deprovision, sign-in and configuration
//! change, written in the same transaction as the change it records.

use crate::ids::{AppId, UserId};
use crate::time::UnixTime;
use std::fmt;

/// Who performed an operator action, as written to the audit log: `operator` (the admin API) or
/// `operator:<surface>` (`operator:portal` for the Developer Portal). Validated so that an
/// audit row's actor is always one of these shapes, never free text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Actor(String);

impl Actor {
    /// The admin API.
    pub fn operator() -> Self {
        Actor("operator".to_owned())
    }

    /// The Developer Portal.
    pub fn portal() -> Self {
        Actor("operator:portal".to_owned())
    }

    /// `operator` or `operator:<name>` with a name of 1 to 32 lowercase letters, digits, `-`, `_`.
    pub fn parse(s: &str) -> Option<Self> {
        let valid = s == "operator"
            || s.strip_prefix("operator:").is_some_and(|name| {
                (1..=32).contains(&name.len())
                    && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            });
        valid.then(|| Actor(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether the audited action succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    Success,
    Denied,
    Failure,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Success => "success",
            AuditOutcome::Denied => "denied",
            AuditOutcome::Failure => "failure",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(AuditOutcome::Success),
            "denied" => Some(AuditOutcome::Denied),
            "failure" => Some(AuditOutcome::Failure),
            _ => None,
        }
    }
}

/// One audit row. `detail` is for humans and never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// A UUID string.
    pub id: String,
    pub app_id: AppId,
    pub at: UnixTime,
    /// Dotted action name, e.g. `idp.create`, `token.handout`, `grant.revoke`.
    pub action: String,
    /// `operator`, `app`, `user:<user id>`, `idp` (webhooks) or `system`.
    pub actor: String,
    pub user_id: Option<UserId>,
    pub grant_id: Option<String>,
    pub provider: Option<String>,
    pub outcome: AuditOutcome,
    pub detail: Option<String>,
}

impl AuditEntry {
    /// A successful action on `app` by `actor` at `at`, with no user, grant, provider or detail
    /// yet (callers fill in what applies).
    pub fn new(id: String, app_id: AppId, at: UnixTime, action: &str, actor: &str) -> Self {
        Self {
            id,
            app_id,
            at,
            action: action.to_owned(),
            actor: actor.to_owned(),
            user_id: None,
            grant_id: None,
            provider: None,
            outcome: AuditOutcome::Success,
            detail: None,
        }
    }
}

/// Filters for listing audit rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub user_id: Option<UserId>,
}

#[cfg(test)]
mod actor_tests {
    use super::Actor;

    #[test]
    fn actors_are_operator_shapes_only() {
        assert_eq!(Actor::operator().as_str(), "operator");
        assert_eq!(Actor::portal().as_str(), "operator:portal");
        assert_eq!(Actor::parse("operator:portal"), Some(Actor::portal()));
        for bad in ["", "operator:", "user:1", "operator:Portal", "operator:a b", "operatorx"] {
            assert_eq!(Actor::parse(bad), None, "{bad}");
        }
    }
}
