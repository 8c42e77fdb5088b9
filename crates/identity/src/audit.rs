//! Audit entries: one per hand-out, refresh, revoke, deprovision, sign-in and configuration
//! change, written in the same transaction as the change it records.

use crate::ids::{AppId, UserId};
use crate::time::UnixTime;

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
