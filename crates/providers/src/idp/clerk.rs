//! Clerk: issuers on `*.clerk.accounts.dev` or a host starting `clerk.`, organisation
//! memberships as groups by default, and lifecycle events delivered by Svix, signed with the
//! `whsec_` secret Clerk issues (the operator supplies it; Custody keeps it sealed).

use super::payload::{at, json_document, object, required_str, subject, Field};
use custody_identity::claims::{ClaimMappings, ClaimPath, MAX_MEMBERSHIP_LEN};
use custody_identity::kinds::{IdpAdapter, SecretSource};
use custody_identity::lifecycle::{
    DecodedEvent, LifecycleChange, LifecycleEvent, MalformedPayload, SvixMessage, MAX_EVENT_ID_LEN,
};
use custody_identity::{IdpKind, IssuerUrl, UnixTime};
use serde_json::Value;

/// The Clerk adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clerk;

impl IdpAdapter for Clerk {
    fn kind(&self) -> IdpKind {
        IdpKind::from_static("clerk")
    }

    fn label(&self) -> &'static str {
        "Clerk"
    }

    fn detects(&self, issuer_url: &IssuerUrl) -> bool {
        let host = issuer_url.host();
        host.ends_with(".clerk.accounts.dev") || host.starts_with("clerk.")
    }

    fn default_claims(&self) -> ClaimMappings {
        ClaimMappings { user_id: ClaimPath::subject(), group: ClaimPath::parse("org_memberships").ok(), role: None }
    }

    fn webhook_secret(&self) -> SecretSource {
        SecretSource::Provided
    }

    fn webhook_format(&self) -> &'static str {
        "clerk"
    }

    fn decode_webhook(
        &self,
        body: &[u8],
        svix: Option<&SvixMessage<'_>>,
    ) -> Result<Vec<DecodedEvent>, MalformedPayload> {
        match svix {
            Some(message) => decode_clerk(body, message),
            None => Err(MalformedPayload("the svix-id and svix-timestamp headers are required".into())),
        }
    }
}

/// Clerk event types Custody acts on.
const CLERK_USER_DELETED: &str = "user.deleted";
const CLERK_USER_UPDATED: &str = "user.updated";
const CLERK_MEMBERSHIP_DELETED: &str = "organizationMembership.deleted";

/// The suffix of the event id of the ban change of a Clerk `user.updated`, which is applied
/// (and de-duplicated) apart from its profile change.
pub const CLERK_BANNED_ID_SUFFIX: &str = ":banned";

/// Decodes one Clerk event `{"type", "data", "timestamp"}` delivered as Svix message `message`:
/// - `user.deleted` deprovisions `data.id`;
/// - `user.updated` refreshes the email (the primary email address) and name (first and last
///   name) of `data.id`, and `data.banned` `true` suspends, `false` reactivates;
/// - `organizationMembership.deleted` removes `data.public_user_data.user_id` from the group
///   `data.organization.id`.
///
/// `timestamp` (milliseconds since the epoch, as Clerk sends it; plain seconds are recognised
/// too) orders the event; without one, the Svix timestamp does.
pub fn decode_clerk(body: &[u8], message: &SvixMessage<'_>) -> Result<Vec<DecodedEvent>, MalformedPayload> {
    let event = json_document(body)?;
    clerk_event(&event, message).map(|e| vec![e]).map_err(MalformedPayload)
}

fn clerk_time(event: &Value, message: &SvixMessage<'_>) -> Field<UnixTime> {
    match at(event, &["timestamp"]) {
        None => Ok(message.timestamp),
        Some(v) => {
            let n = v.as_i64().filter(|n| *n >= 0).ok_or("timestamp: expected milliseconds since the epoch")?;
            // Milliseconds since 1970 pass 10^11 in March 1973; seconds will not until the year 5138.
            Ok(UnixTime(if n >= 100_000_000_000 { n / 1000 } else { n }))
        }
    }
}

fn clerk_event(event: &Value, message: &SvixMessage<'_>) -> Field<DecodedEvent> {
    object(event, "body")?;
    let event_type = required_str(event, &["type"], 128)?;
    if ![CLERK_USER_DELETED, CLERK_USER_UPDATED, CLERK_MEMBERSHIP_DELETED].contains(&event_type) {
        return Ok(DecodedEvent::Ignored { event_type: event_type.to_owned() });
    }
    if message.id.is_empty() || message.id.len() > MAX_EVENT_ID_LEN {
        return Err(format!("svix-id: must be 1 to {MAX_EVENT_ID_LEN} bytes"));
    }
    let data = at(event, &["data"]).ok_or("data: required")?;
    object(data, "data")?;
    let occurred_at = clerk_time(event, message)?;
    let one = |subject: String, change: LifecycleChange| LifecycleEvent {
        event_id: message.id.to_owned(),
        subject,
        occurred_at,
        change,
    };
    match event_type {
        CLERK_USER_DELETED => {
            Ok(DecodedEvent::Act(vec![one(subject(event, &["data", "id"])?, LifecycleChange::Deprovision)]))
        }
        CLERK_MEMBERSHIP_DELETED => {
            let user = subject(event, &["data", "public_user_data", "user_id"])?;
            let group = required_str(event, &["data", "organization", "id"], MAX_MEMBERSHIP_LEN)?.to_owned();
            Ok(DecodedEvent::Act(vec![one(user, LifecycleChange::RemoveGroup(group))]))
        }
        _ => {
            let user = subject(event, &["data", "id"])?;
            let profile = LifecycleChange::Profile { email: clerk_primary_email(data)?, name: clerk_name(data)? };
            let mut changes = vec![one(user.clone(), profile)];
            match at(data, &["banned"]) {
                None => {}
                Some(Value::Bool(banned)) => changes.push(LifecycleEvent {
                    event_id: format!("{}{CLERK_BANNED_ID_SUFFIX}", message.id),
                    ..one(user, if *banned { LifecycleChange::Suspend } else { LifecycleChange::Reactivate })
                }),
                Some(_) => return Err("data.banned: expected true or false".into()),
            }
            Ok(DecodedEvent::Act(changes))
        }
    }
}

/// The address of `primary_email_address_id` among `email_addresses`, if any.
fn clerk_primary_email(data: &Value) -> Field<Option<String>> {
    let Some(primary) = at(data, &["primary_email_address_id"]) else { return Ok(None) };
    let primary = primary.as_str().ok_or("data.primary_email_address_id: expected a string")?;
    let addresses = match at(data, &["email_addresses"]) {
        None => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(_) => return Err("data.email_addresses: expected an array".into()),
    };
    Ok(addresses
        .iter()
        .find(|a| a.get("id").and_then(Value::as_str) == Some(primary))
        .and_then(|a| a.get("email_address"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned))
}

/// `first_name` and `last_name` joined by a space, or `None` when both are absent or empty.
fn clerk_name(data: &Value) -> Field<Option<String>> {
    let part = |key: &str| -> Field<Option<String>> {
        match at(data, &[key]) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
            Some(_) => Err(format!("data.{key}: expected a string")),
        }
    };
    let parts: Vec<String> = [part("first_name")?, part("last_name")?].into_iter().flatten().collect();
    Ok(Some(parts.join(" ")).filter(|n| !n.is_empty()))
}
