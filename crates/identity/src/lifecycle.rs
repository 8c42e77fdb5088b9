//! The vocabulary of identity-provider lifecycle events: what a webhook delivery can do to a
//! user ([`LifecycleChange`]), one such change ([`LifecycleEvent`]), and what decoding a
//! delivery yields ([`DecodedEvent`], [`MalformedPayload`]).
//!
//! Each identity-provider adapter ([`crate::kinds::IdpAdapter`]) decodes its own payload format
//! into these; the webhook use case authenticates deliveries and applies the events, and the
//! lifecycle rules (what may follow what) are enforced where the events are applied.

use crate::time::UnixTime;

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
