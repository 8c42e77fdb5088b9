//! End users of an app, keyed by (app, subject), and their lifecycle status.

use crate::claims::ExtractedIdentity;
use crate::ids::{AppId, UserId};
use crate::time::UnixTime;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Where a user stands. `Deprovisioned` is final: no token and no event brings a user back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Suspended,
    Deprovisioned,
}

impl UserStatus {
    /// The stable text form.
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Suspended => "suspended",
            UserStatus::Deprovisioned => "deprovisioned",
        }
    }

    /// Parses the stable text form.
    pub fn parse(s: &str) -> Option<UserStatus> {
        match s {
            "active" => Some(UserStatus::Active),
            "suspended" => Some(UserStatus::Suspended),
            "deprovisioned" => Some(UserStatus::Deprovisioned),
            _ => None,
        }
    }

    /// Whether a lifecycle change may move a user from this status to `next`. Reactivation never
    /// leaves `Deprovisioned`, and nothing does.
    pub fn may_become(self, next: UserStatus) -> bool {
        self != UserStatus::Deprovisioned || next == UserStatus::Deprovisioned
    }
}

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub app_id: AppId,
    /// The IdP's stable id for the user (the user-id claim's value).
    pub subject: String,
    pub status: UserStatus,
    pub email: Option<String>,
    pub name: Option<String>,
    pub groups: BTreeSet<String>,
    pub roles: BTreeSet<String>,
    pub created_at: UnixTime,
    pub last_seen_at: Option<UnixTime>,
}

/// A request for a user who may not act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UserRefused {
    #[error("the user is suspended")]
    Suspended,
    #[error("the user has been deprovisioned")]
    Deprovisioned,
}

/// How long `last_seen_at` may lag before resolving an unchanged user writes it again. Skipping
/// the write keeps the token hot path read-only.
pub const LAST_SEEN_GRANULARITY_SECS: i64 = 60;

impl User {
    /// Whether resolving this stored user for a token that carries `identity`, at `now`, has
    /// nothing to write: the user is deprovisioned (final, nothing changes), or the token says
    /// nothing new about them and they were seen recently. The read-only hot paths (the store's
    /// resolution, the one-read hand-out) answer from the stored user only when this holds.
    pub fn settled_by(&self, identity: &ExtractedIdentity, now: UnixTime) -> bool {
        self.status == UserStatus::Deprovisioned || (self.agrees_with(identity) && self.seen_recently(now))
    }

    /// Whether the token says nothing new about the user: profile fields it carries are the
    /// stored ones, and its groups and roles are the stored sets.
    pub fn agrees_with(&self, identity: &ExtractedIdentity) -> bool {
        identity.email.as_ref().is_none_or(|e| self.email.as_ref() == Some(e))
            && identity.name.as_ref().is_none_or(|n| self.name.as_ref() == Some(n))
            && identity.groups == self.groups
            && identity.roles == self.roles
    }

    /// Whether `last_seen_at` is within [`LAST_SEEN_GRANULARITY_SECS`] of `now`.
    pub fn seen_recently(&self, now: UnixTime) -> bool {
        self.last_seen_at.is_some_and(|t| now.0.saturating_sub(t.0) < LAST_SEEN_GRANULARITY_SECS)
    }

    /// `Ok` when the user may act now, else why not.
    pub fn ensure_active(&self) -> Result<(), UserRefused> {
        match self.status {
            UserStatus::Active => Ok(()),
            UserStatus::Suspended => Err(UserRefused::Suspended),
            UserStatus::Deprovisioned => Err(UserRefused::Deprovisioned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deprovisioned_is_final() {
        assert!(!UserStatus::Deprovisioned.may_become(UserStatus::Active));
        assert!(!UserStatus::Deprovisioned.may_become(UserStatus::Suspended));
        assert!(UserStatus::Suspended.may_become(UserStatus::Active));
        assert!(UserStatus::Active.may_become(UserStatus::Deprovisioned));
        for s in [UserStatus::Active, UserStatus::Suspended, UserStatus::Deprovisioned] {
            assert_eq!(UserStatus::parse(s.as_str()), Some(s));
        }
    }
}
