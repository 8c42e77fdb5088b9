//! Okta: issuers on `*.okta.com` or `*.oktapreview.com`, `groups` as the group claim by
//! default, and Okta Event Hooks: `{"eventType": "com.okta.event_hook", "data": {"events": [...]}}`, each event
//! an Okta System Log event `{"uuid", "published", "eventType", "target": [...]}`.
//!
//! What each event type does is the data in [`OKTA_EVENT_TYPES`]. The user is the event's target
//! of type `User`, by its Okta user id (`target[].id`, `00u…`): the `sub` of Okta ID tokens and
//! the `uid` claim of access tokens (docs/idp-okta.md). A membership removal names the group by
//! the `displayName` of its `UserGroup` target, as Okta's `groups` claim does.

use super::payload::{at, event_id, json_document, object, required_str, rfc3339_at, Field};
use custody_identity::claims::{ClaimMappings, ClaimPath, MAX_MEMBERSHIP_LEN, MAX_SUBJECT_LEN};
use custody_identity::kinds::{IdpAdapter, SecretSource};
use custody_identity::lifecycle::{DecodedEvent, LifecycleChange, LifecycleEvent, MalformedPayload, SvixMessage};
use custody_identity::{IdpKind, IssuerUrl};
use serde_json::Value;

/// The Okta adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Okta;

impl IdpAdapter for Okta {
    fn kind(&self) -> IdpKind {
        IdpKind::from_static("okta")
    }

    fn label(&self) -> &'static str {
        "Okta"
    }

    fn detects(&self, issuer_url: &IssuerUrl) -> bool {
        let host = issuer_url.host();
        host.ends_with(".okta.com") || host.ends_with(".oktapreview.com")
    }

    /// Okta puts the user's groups in `groups` once a groups claim is added to the
    /// authorization server (docs/idp-okta.md).
    fn default_claims(&self) -> ClaimMappings {
        ClaimMappings { user_id: ClaimPath::subject(), group: ClaimPath::parse("groups").ok(), role: None }
    }

    /// The event hook's authentication header carries the secret Custody generates.
    fn webhook_secret(&self) -> SecretSource {
        SecretSource::Generated
    }

    fn webhook_format(&self) -> &'static str {
        "okta"
    }

    fn decode_webhook(&self, body: &[u8], _: Option<&SvixMessage<'_>>) -> Result<Vec<DecodedEvent>, MalformedPayload> {
        decode_okta(body)
    }

    fn webhook_verification_header(&self) -> Option<&'static str> {
        Some(OKTA_VERIFICATION_HEADER)
    }
}

/// What an Okta event type does to the user it targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OktaEffect {
    Deprovision,
    Suspend,
    Reactivate,
    RemoveGroup,
}

/// The Okta event types Custody acts on; every other type is acknowledged and ignored.
/// Subscribe the event hook to these (docs/idp-okta.md).
pub const OKTA_EVENT_TYPES: &[(&str, OktaEffect)] = &[
    ("user.lifecycle.delete.initiated", OktaEffect::Deprovision),
    ("user.lifecycle.deactivate", OktaEffect::Deprovision),
    ("user.lifecycle.suspend", OktaEffect::Suspend),
    ("user.lifecycle.unsuspend", OktaEffect::Reactivate),
    ("group.user_membership.remove", OktaEffect::RemoveGroup),
];

/// The header Okta's one-time verification request carries; its value is echoed back as
/// `{"verification": value}`.
pub const OKTA_VERIFICATION_HEADER: &str = "x-okta-verification-challenge";

/// Decodes an Okta event hook delivery.
pub fn decode_okta(body: &[u8]) -> Result<Vec<DecodedEvent>, MalformedPayload> {
    let document = json_document(body)?;
    object(&document, "body").map_err(MalformedPayload)?;
    let events = match at(&document, &["data", "events"]) {
        Some(Value::Array(events)) => events,
        Some(_) => return Err(MalformedPayload("data.events: expected an array".into())),
        None => return Err(MalformedPayload("data.events: required".into())),
    };
    events
        .iter()
        .enumerate()
        .map(|(i, event)| okta_event(event).map_err(|m| MalformedPayload(format!("data.events[{i}]: {m}"))))
        .collect()
}

fn okta_event(event: &Value) -> Field<DecodedEvent> {
    object(event, "event")?;
    let event_type = required_str(event, &["eventType"], 128)?;
    let Some(effect) = OKTA_EVENT_TYPES.iter().find(|(t, _)| *t == event_type).map(|(_, e)| *e) else {
        return Ok(DecodedEvent::Ignored { event_type: event_type.to_owned() });
    };
    let targets = match at(event, &["target"]) {
        Some(Value::Array(targets)) => targets,
        Some(_) => return Err("target: expected an array".into()),
        None => return Err("target: required".into()),
    };
    let target_of = |kind: &str, field: &str, max: usize| -> Field<String> {
        let found = targets.iter().find(|t| t.get("type").and_then(Value::as_str) == Some(kind));
        let Some(target) = found else { return Err(format!("target: no {kind} target")) };
        required_str(target, &[field], max).map(str::to_owned).map_err(|m| format!("target[{kind}].{m}"))
    };
    let change = match effect {
        OktaEffect::Deprovision => LifecycleChange::Deprovision,
        OktaEffect::Suspend => LifecycleChange::Suspend,
        OktaEffect::Reactivate => LifecycleChange::Reactivate,
        OktaEffect::RemoveGroup => {
            LifecycleChange::RemoveGroup(target_of("UserGroup", "displayName", MAX_MEMBERSHIP_LEN)?)
        }
    };
    Ok(DecodedEvent::Act(vec![LifecycleEvent {
        event_id: event_id(event, &["uuid"])?,
        subject: target_of("User", "id", MAX_SUBJECT_LEN)?,
        occurred_at: rfc3339_at(event, &["published"])?,
        change,
    }]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    /// A delivery as Okta sends it (shape from Okta's event hook documentation).
    fn delivery(events: Vec<Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "eventType": "com.okta.event_hook",
            "eventTypeVersion": "1.0",
            "cloudEventsVersion": "0.1",
            "source": "https://dev-123456.okta.com/api/v1/eventHooks/whoql0HfiLGPWc8Jx0g3",
            "eventId": "b5a188b9-5ece-4636-b041-482ffda96311",
            "eventTime": "2026-12-06T10:00:01.237Z",
            "contentType": "application/json",
            "data": {"events": events}
        }))
        .unwrap()
    }

    fn user_event(uuid: &str, event_type: &str, user: &str) -> Value {
        json!({
            "uuid": uuid,
            "published": "2026-12-06T10:00:00.162Z",
            "eventType": event_type,
            "version": "0",
            "displayMessage": "Deactivate Okta user",
            "severity": "INFO",
            "actor": {"id": "00uadmin", "type": "User", "alternateId": "admin@acme.example"},
            "target": [{"id": user, "type": "User", "alternateId": "alice@acme.example", "displayName": "Alice"}]
        })
    }

    fn changes(decoded: &[DecodedEvent]) -> Vec<(String, LifecycleChange)> {
        decoded
            .iter()
            .flat_map(|d| match d {
                DecodedEvent::Act(events) => events.iter().map(|e| (e.subject.clone(), e.change.clone())).collect(),
                DecodedEvent::Ignored { .. } => vec![],
            })
            .collect()
    }

    #[test]
    fn lifecycle_types_map_to_changes() {
        let body = delivery(vec![
            user_event("e1", "user.lifecycle.delete.initiated", "00u1"),
            user_event("e2", "user.lifecycle.deactivate", "00u2"),
            user_event("e3", "user.lifecycle.suspend", "00u3"),
            user_event("e4", "user.lifecycle.unsuspend", "00u3"),
            user_event("e5", "user.session.start", "00u4"),
        ]);
        let decoded = decode_okta(&body).unwrap();
        assert_eq!(
            changes(&decoded),
            vec![
                ("00u1".to_string(), LifecycleChange::Deprovision),
                ("00u2".to_string(), LifecycleChange::Deprovision),
                ("00u3".to_string(), LifecycleChange::Suspend),
                ("00u3".to_string(), LifecycleChange::Reactivate),
            ]
        );
        assert_eq!(decoded[4], DecodedEvent::Ignored { event_type: "user.session.start".into() });
        let DecodedEvent::Act(first) = &decoded[0] else { panic!("acted on") };
        assert_eq!(first[0].event_id, "e1");
        assert_eq!(first[0].occurred_at.seconds(), 1_796_551_200, "2026-12-06T10:00:00Z");
    }

    #[test]
    fn membership_removal_names_the_group() {
        let mut event = user_event("e6", "group.user_membership.remove", "00u1");
        event["target"].as_array_mut().unwrap().push(json!({"id": "00g1", "type": "UserGroup", "displayName": "eng"}));
        let decoded = decode_okta(&delivery(vec![event])).unwrap();
        assert_eq!(changes(&decoded), vec![("00u1".to_string(), LifecycleChange::RemoveGroup("eng".into()))]);
    }

    #[test]
    fn malformed_shapes_are_refused_without_echoing_values() {
        for (body, expect) in [
            (b"".to_vec(), "empty"),
            (b"[]".to_vec(), "body: expected an object"),
            (serde_json::to_vec(&json!({"data": {}})).unwrap(), "data.events: required"),
            (serde_json::to_vec(&json!({"data": {"events": {}}})).unwrap(), "data.events: expected an array"),
        ] {
            let e = decode_okta(&body).unwrap_err();
            assert!(e.0.contains(expect), "{e}");
        }
        let mut no_user = user_event("e1", "user.lifecycle.deactivate", "00u1");
        no_user["target"] = json!([{"id": "00g1", "type": "UserGroup", "displayName": "secret-group"}]);
        let e = decode_okta(&delivery(vec![no_user])).unwrap_err();
        assert!(e.0.contains("data.events[0]: target: no User target"), "{e}");
        let mut bad_time = user_event("e1", "user.lifecycle.deactivate", "00u1");
        bad_time["published"] = json!("yesterday");
        assert!(decode_okta(&delivery(vec![bad_time])).unwrap_err().0.contains("published"));
        let mut no_uuid = user_event("e1", "user.lifecycle.deactivate", "00u1");
        no_uuid.as_object_mut().unwrap().remove("uuid");
        assert!(decode_okta(&delivery(vec![no_uuid])).unwrap_err().0.contains("uuid: required"));
        // An ignored type needs nothing else.
        assert!(decode_okta(&delivery(vec![json!({"eventType": "app.oauth2.as.token.grant"})])).is_ok());
    }
}
