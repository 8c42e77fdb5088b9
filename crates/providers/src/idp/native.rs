//! Custody's native lifecycle format, for Keycloak and any other OpenID Connect provider that
//! can send a webhook: `{"events": [{"id", "type", "subject", "group"?, "occurred_at"}]}`.

use super::payload::{at, event_id, json_document, object, required_str, rfc3339_at, subject, Field};
use custody_identity::claims::MAX_MEMBERSHIP_LEN;
use custody_identity::lifecycle::{DecodedEvent, LifecycleChange, LifecycleEvent, MalformedPayload};
use serde_json::Value;

/// Native event types and what they do.
const NATIVE_TYPES: &[&str] = &["user.deleted", "user.suspended", "user.reactivated", "group.member_removed"];

/// Decodes Custody's native format: `{"events": [...]}`, each event
/// `{"id", "type", "subject", "group"?, "occurred_at"}`. Every event needs a string `id` and
/// `type`; the known types (`user.deleted`, `user.suspended`, `user.reactivated`,
/// `group.member_removed`) also need `subject` and an RFC 3339 `occurred_at`, and
/// `group.member_removed` a `group`. Other types are ignored.
pub fn decode_native(body: &[u8]) -> Result<Vec<DecodedEvent>, MalformedPayload> {
    let document = json_document(body)?;
    object(&document, "body").map_err(MalformedPayload)?;
    let events = match at(&document, &["events"]) {
        Some(Value::Array(events)) => events,
        Some(_) => return Err(MalformedPayload("events: expected an array".into())),
        None => return Err(MalformedPayload("events: required".into())),
    };
    events
        .iter()
        .enumerate()
        .map(|(i, event)| native_event(event).map_err(|m| MalformedPayload(format!("events[{i}]: {m}"))))
        .collect()
}

fn native_event(event: &Value) -> Field<DecodedEvent> {
    object(event, "event")?;
    let event_id = event_id(event, &["id"])?;
    let event_type = required_str(event, &["type"], 128)?;
    if !NATIVE_TYPES.contains(&event_type) {
        return Ok(DecodedEvent::Ignored { event_type: event_type.to_owned() });
    }
    let change = match event_type {
        "user.deleted" => LifecycleChange::Deprovision,
        "user.suspended" => LifecycleChange::Suspend,
        "user.reactivated" => LifecycleChange::Reactivate,
        _ => LifecycleChange::RemoveGroup(required_str(event, &["group"], MAX_MEMBERSHIP_LEN)?.to_owned()),
    };
    Ok(DecodedEvent::Act(vec![LifecycleEvent {
        event_id,
        subject: subject(event, &["subject"])?,
        occurred_at: rfc3339_at(event, &["occurred_at"])?,
        change,
    }]))
}
