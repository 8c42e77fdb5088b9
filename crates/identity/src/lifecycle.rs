//! The vocabulary of identity-provider lifecycle events: what a webhook delivery can do to a
//! user ([`LifecycleChange`]), one such change ([`LifecycleEvent`]), and what decoding a
//! delivery yields ([`DecodedEvent`], [`MalformedPayload`]).
//!
//! Each identity-provider adapter ([`crate::kinds::IdpAdapter`]) decodes its own payload format
//! into these; the webhook use case authenticates deliveries and applies the events, and the
//! lifecycle rules (what may follow what) are enforced where the events are applied.

use crate::time::UnixTime;
use crate::user::UserStatus;

/// The longest event id accepted, in bytes.
pub const MAX_EVENT_ID_LEN: usize = 255;

/// What an identity-provider lifecycle event does to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleChange {
    /// Status `deprovisioned` (final), every grant revoked.
    Deprovision,
    /// Status `suspended`, grants kept. Never out of `deprovisioned`.
    Suspend,
    /// Status `active`. Never out of `deprovisioned`.
    Reactivate,
    /// Removes a token-sourced group and records the removal (at `occurred_at`), so a token
    /// issued before it cannot restore the group.
    RemoveGroup(String),
    /// Refreshes email and name (each only when `Some`).
    Profile { email: Option<String>, name: Option<String> },
}

/// What a lifecycle event does to a user in a given state (see [`LifecycleChange::plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecyclePlan {
    Ignore(&'static str),
    Status(UserStatus),
    RemoveGroup,
    Profile,
}

impl LifecycleChange {
    /// Decides what this change, which happened at `occurred_at`, does to a user whose status
    /// is `status` and last changed at `status_changed_at`. Nothing leaves `deprovisioned`,
    /// nothing changes a deprovisioned user, and a suspend or reactivate older than the last
    /// applied status change is ignored (a late "unblock" cannot undo a later block); an equally
    /// old one applies. A deletion always applies, however late it arrives: it cannot undo
    /// anything, and ignoring it would leave a deleted user's tokens in the vault. Every
    /// store applying lifecycle events decides with this, so the rule has one home.
    pub fn plan(&self, status: UserStatus, status_changed_at: Option<i64>, occurred_at: i64) -> LifecyclePlan {
        let target = match self {
            LifecycleChange::Deprovision => Some(UserStatus::Deprovisioned),
            LifecycleChange::Suspend => Some(UserStatus::Suspended),
            LifecycleChange::Reactivate => Some(UserStatus::Active),
            LifecycleChange::RemoveGroup(_) | LifecycleChange::Profile { .. } => None,
        };
        if status == UserStatus::Deprovisioned {
            return LifecyclePlan::Ignore(if target == Some(UserStatus::Deprovisioned) {
                "the user is already deprovisioned"
            } else {
                "the user is deprovisioned"
            });
        }
        match (target, self) {
            (Some(next), _)
                if next != UserStatus::Deprovisioned && status_changed_at.is_some_and(|last| occurred_at < last) =>
            {
                LifecyclePlan::Ignore("the change is older than the user's last status change")
            }
            (Some(next), _) if status.may_become(next) => LifecyclePlan::Status(next),
            (Some(_), _) => LifecyclePlan::Ignore("the change is not allowed from the user's status"),
            (None, LifecycleChange::RemoveGroup(_)) => LifecyclePlan::RemoveGroup,
            (None, _) => LifecyclePlan::Profile,
        }
    }
}

/// One lifecycle event from an identity provider's webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleEvent {
    /// The IdP's id for the event (`svix-id`, Auth0 `log_id`, native `id`), unique per app.
    pub event_id: String,
    /// The user's subject at the IdP.
    pub subject: String,
    /// When the IdP says the change happened.
    pub occurred_at: UnixTime,
    pub change: LifecycleChange,
}

/// One event of a delivery, as decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodedEvent {
    /// Changes to apply, in order, each with an event id of its own (one, except a Clerk
    /// `user.updated` that carries both a profile and a `banned` flag).
    Act(Vec<LifecycleEvent>),
    /// An event type Custody does not act on: acknowledged and ignored.
    Ignored {
        /// The event's type as the identity provider named it.
        event_type: String,
    },
}

/// The body is not a payload of the expected format. The message names the place at fault and
/// never repeats values from the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed payload: {0}")]
pub struct MalformedPayload(pub String);

/// The authenticated Svix headers of a Svix-signed delivery (Clerk's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvixMessage<'a> {
    /// `svix-id`: the message id, which is the event id.
    pub id: &'a str,
    /// `svix-timestamp`: when Svix sent it; used when the event carries no `timestamp`.
    pub timestamp: UnixTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_lifecycle(status: UserStatus, changed: Option<i64>, at: i64, change: &LifecycleChange) -> LifecyclePlan {
        change.plan(status, changed, at)
    }

    fn deprovision() -> LifecycleChange {
        LifecycleChange::Deprovision
    }

    #[test]
    fn status_changes_follow_the_order_of_events() {
        use LifecyclePlan::*;
        use UserStatus::*;
        assert_eq!(plan_lifecycle(Active, None, 10, &LifecycleChange::Suspend), Status(Suspended));
        assert_eq!(plan_lifecycle(Suspended, Some(10), 10, &LifecycleChange::Reactivate), Status(Active));
        assert!(matches!(plan_lifecycle(Suspended, Some(10), 9, &LifecycleChange::Reactivate), Ignore(_)));
        assert_eq!(
            plan_lifecycle(Active, Some(10), 9, &deprovision()),
            Status(Deprovisioned),
            "a late deletion still applies"
        );
        assert_eq!(plan_lifecycle(Suspended, Some(10), 11, &deprovision()), Status(Deprovisioned));
        // Group removals and profile updates are not status changes: no ordering rule.
        assert_eq!(plan_lifecycle(Active, Some(10), 1, &LifecycleChange::RemoveGroup("g".into())), RemoveGroup);
        assert_eq!(
            plan_lifecycle(Suspended, Some(10), 1, &LifecycleChange::Profile { email: None, name: None }),
            Profile
        );
    }

    #[test]
    fn nothing_changes_a_deprovisioned_user() {
        for change in [
            LifecycleChange::Reactivate,
            LifecycleChange::Suspend,
            deprovision(),
            LifecycleChange::RemoveGroup("g".into()),
            LifecycleChange::Profile { email: Some("a@example.com".into()), name: None },
        ] {
            assert!(
                matches!(plan_lifecycle(UserStatus::Deprovisioned, None, 100, &change), LifecyclePlan::Ignore(_)),
                "{change:?}"
            );
        }
    }
}
