//! End users of an app, keyed by (app, subject), and their lifecycle status.

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

impl User {
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
