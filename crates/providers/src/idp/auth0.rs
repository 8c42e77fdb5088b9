//! Auth0: issuers on `*.auth0.com`, the `sub` claim alone by default, and lifecycle events from
//! a log stream (a custom webhook stream authenticated by the generated secret in its
//! `Authorization` header). What each log event code does is the data in [`AUTH0_EVENT_CODES`].

use super::payload::{at, event_id, json_values, object, required_str, rfc3339_at, subject, Field};
use custody_identity::claims::ClaimMappings;
use custody_identity::kinds::{IdpAdapter, SecretSource};
use custody_identity::lifecycle::{DecodedEvent, LifecycleChange, LifecycleEvent, MalformedPayload, SvixMessage};
use custody_identity::{IdpKind, IssuerUrl};
use serde_json::Value;

/// The Auth0 adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Auth0;

impl IdpAdapter for Auth0 {
    fn kind(&self) -> IdpKind {
        IdpKind::from_static("auth0")
    }

    fn label(&self) -> &'static str {
        "Auth0"
    }

    fn detects(&self, issuer_url: &IssuerUrl) -> bool {
        issuer_url.host().ends_with(".auth0.com")
    }

    fn default_claims(&self) -> ClaimMappings {
        ClaimMappings::subject_only()
    }

    fn webhook_secret(&self) -> SecretSource {
        SecretSource::Generated
    }

    fn webhook_format(&self) -> &'static str {
        "auth0"
    }

    fn decode_webhook(&self, body: &[u8], _: Option<&SvixMessage<'_>>) -> Result<Vec<DecodedEvent>, MalformedPayload> {
        decode_auth0(body)
    }
}

/// What an Auth0 log event code does to the user it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth0Effect {
    /// The user is deprovisioned: every grant revoked, every stored token deleted.
    Deprovision,
    /// The user is suspended: every request denied, grants kept.
    Suspend,
    /// The user is active again (never out of `deprovisioned`).
    Reactivate,
}

impl Auth0Effect {
    pub(crate) fn change(self) -> LifecycleChange {
        match self {
            Auth0Effect::Deprovision => LifecycleChange::Deprovision,
            Auth0Effect::Suspend => LifecycleChange::Suspend,
            Auth0Effect::Reactivate => LifecycleChange::Reactivate,
        }
    }
}

/// The Auth0 log event codes (`data.type`) Custody acts on. Every other code is acknowledged
/// and ignored. Remapping a code is a change to this table only.
pub const AUTH0_EVENT_CODES: &[(&str, Auth0Effect)] =
    &[("sdu", Auth0Effect::Deprovision), ("ublkdu", Auth0Effect::Suspend), ("ubuu", Auth0Effect::Reactivate)];

/// What an Auth0 log event code does, per [`AUTH0_EVENT_CODES`]; `None` for codes Custody
/// ignores.
pub fn auth0_effect(code: &str) -> Option<Auth0Effect> {
    AUTH0_EVENT_CODES.iter().find(|(c, _)| *c == code).map(|(_, effect)| *effect)
}

/// Decodes an Auth0 log-stream delivery: a JSON array of entries, one entry, or JSON lines.
/// Entries of codes not in [`AUTH0_EVENT_CODES`] are ignored whatever else they carry; an entry
/// of a listed code needs `log_id`, `data.user_id` and an RFC 3339 `data.date`.
pub fn decode_auth0(body: &[u8]) -> Result<Vec<DecodedEvent>, MalformedPayload> {
    json_values(body)?
        .iter()
        .enumerate()
        .map(|(i, entry)| auth0_entry(entry).map_err(|m| MalformedPayload(format!("entry {i}: {m}"))))
        .collect()
}

fn auth0_entry(entry: &Value) -> Field<DecodedEvent> {
    object(entry, "entry")?;
    let data = at(entry, &["data"]).ok_or("data: required")?;
    object(data, "data")?;
    let code = required_str(entry, &["data", "type"], 64)?;
    let Some(effect) = auth0_effect(code) else {
        return Ok(DecodedEvent::Ignored { event_type: code.to_owned() });
    };
    // Auth0 puts the id at the top level; older streams carried it in `data` only.
    let event_id = if at(entry, &["log_id"]).is_some() {
        event_id(entry, &["log_id"])?
    } else {
        event_id(entry, &["data", "log_id"]).map_err(|_| "log_id: required".to_owned())?
    };
    Ok(DecodedEvent::Act(vec![LifecycleEvent {
        event_id,
        subject: subject(entry, &["data", "user_id"])?,
        occurred_at: rfc3339_at(entry, &["data", "date"])?,
        change: effect.change(),
    }]))
}
